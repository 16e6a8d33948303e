// Loopback OpenID Provider for the mado-server OIDC integration tests.
//
//   node provider.mjs <redirect_uri> [client_id] [client_secret]
//
// Listens on 127.0.0.1 on a free port and prints exactly one line:
//   oidc-provider listening http://127.0.0.1:PORT
// Dev interactions are on: any login/password is accepted; the login and
// consent forms are plain HTML forms the test posts with HTTP.
//
// Misbehaviour on demand (negative tests): `GET /__test/id-token?mode=M`
// arms a one-shot rewrite of the ID token in the next successful token
// response. The provider signs with its own RSA key (generated here), so a
// rewritten token is re-signed with the very key the JWKS publishes: only
// the claim named by the mode is wrong.
//   wrong_nonce  nonce replaced          expired    exp/iat an hour ago
//   wrong_aud    aud = another client    wrong_iss  iss = another issuer
//   bad_sig      one signature byte flipped (claims untouched)
//   mfa          amr = ["pwd","otp"], acr = "urn:mado:mfa" (a valid token
//                reporting a second factor)
// `GET /__test/last-id-token` answers the last ID token issued (so a test
// can check it never reaches the relying party's logs).
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const MODES = ['wrong_nonce', 'expired', 'wrong_aud', 'wrong_iss', 'bad_sig', 'mfa'];
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'mado-test-rs256', use: 'sig', alg: 'RS256' };
let armed = null;
let lastIdToken = '';

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function rewrite(jwt, mode) {
  const [h, p, sig] = jwt.split('.');
  if (mode === 'bad_sig') {
    const bytes = Buffer.from(sig, 'base64url');
    bytes[bytes.length >> 1] ^= 0x01;
    return `${h}.${p}.${b64u(bytes)}`;
  }
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'wrong_nonce': claims.nonce = 'not-the-nonce-of-this-sign-in'; break;
    case 'expired': claims.iat = now - 7200; claims.auth_time = now - 7200; claims.exp = now - 3600; break;
    case 'wrong_aud': claims.aud = 'some-other-client'; break;
    case 'wrong_iss': claims.iss = 'http://127.0.0.1:9/not-the-issuer'; break;
    case 'mfa': claims.amr = ['pwd', 'otp']; claims.acr = 'urn:mado:mfa'; break;
    default: break;
  }
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  if (header.alg !== 'RS256') throw new Error(`unexpected alg ${header.alg}`);
  const body = `${h}.${b64u(JSON.stringify(claims))}`;
  const signature = crypto.sign('sha256', Buffer.from(body), privateKey);
  return `${body}.${b64u(signature)}`;
}

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
    jwks: { keys: [signingJwk] },
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
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method !== 'POST' || ctx.path !== '/token' || ctx.status !== 200) return;
    const body = ctx.body;
    if (!body || typeof body !== 'object' || typeof body.id_token !== 'string') return;
    if (armed) {
      body.id_token = rewrite(body.id_token, armed);
      armed = null;
    }
    lastIdToken = body.id_token;
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname === '/__test/id-token') {
      const mode = url.searchParams.get('mode');
      if (!MODES.includes(mode)) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(`mode must be one of ${MODES.join(', ')}\n`);
        return;
      }
      armed = mode;
      res.writeHead(204).end();
      return;
    }
    if (url.pathname === '/__test/last-id-token') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(lastIdToken);
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`oidc-provider listening ${issuer}\n`);
});
