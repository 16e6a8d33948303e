// Loopback OpenID Provider for the mado-server OIDC integration tests.
//
//   node provider.mjs <redirect_uri> [client_id] [client_secret]
//
// Listens on 127.0.0.1 on a free port and prints exactly one line:
//   oidc-provider listening http://127.0.0.1:PORT
// Dev interactions are on: any login/password is accepted; the login and
// consent forms are plain HTML forms the test posts with HTTP.
import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUri = process.argv[2];
const clientId = process.argv[3] || 'mado';
const clientSecret = process.argv[4] || 'mado-test-client-secret-0123456789';
if (!redirectUri) {
  console.error('usage: node provider.mjs <redirect_uri> [client_id] [client_secret]');
  process.exit(2);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        // API client (client credentials → JWT access token for urn:mado:api).
        client_id: `${clientId}-api`,
        client_secret: clientSecret,
        redirect_uris: [],
        response_types: [],
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'mado.read other.scope',
      },
    ],
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'mado.read', 'other.scope'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'mado_role'],
      email: ['email'],
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resource) => ({
          scope: 'mado.read other.scope',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
        }),
      },
    },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: id, mado_role: id.startsWith('rad') ? 'radiologist' : undefined };
        },
      };
    },
    conformIdTokenClaims: false,
    ttl: { IdToken: 600, AccessToken: 600, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 600 },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(`oidc-provider listening ${issuer}\n`);
});
