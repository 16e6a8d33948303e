//! OpenID Connect sign-in (authorization code flow with PKCE S256, state
//! and nonce) through the `openidconnect` crate, which validates the ID
//! token fully: signature against the provider's JWKS, issuer, audience,
//! expiry and nonce.
//!
//! The state, nonce and PKCE verifier of a started sign-in stay on the
//! server (in memory, ten minutes); the browser only holds the state in a
//! cookie, which must match the `state` query parameter of the callback.
//! Users are mapped to local accounts named `oidc:<subject>` (created on
//! first sign-in with the configured default role and organisation).

use crate::config::OidcSettings;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::JsonWebKey;
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cookie holding the state of a started sign-in.
pub const OIDC_STATE_COOKIE: &str = "mado_oidc_state";
const PENDING_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    #[error("configuration: {0}")]
    Config(String),
    /// Unknown, expired or mismatched state.
    #[error("unknown or expired sign-in state")]
    State,
    #[error("code exchange failed: {0}")]
    Exchange(String),
    /// The ID token failed validation; the first field names the check
    /// (safe for the audit trail), the second is the crate's message
    /// (never the token itself).
    #[error("ID token rejected ({0}): {1}")]
    IdToken(&'static str, String),
    #[error("access token rejected: {0}")]
    AccessToken(&'static str),
}

impl OidcError {
    /// A short, token-free description for the audit trail.
    pub fn audit_detail(&self) -> &'static str {
        match self {
            OidcError::Discovery(_) | OidcError::Config(_) => "provider unavailable",
            OidcError::State => "unknown or expired state",
            OidcError::Exchange(_) => "code exchange failed",
            OidcError::IdToken(check, _) => check,
            OidcError::AccessToken(_) => "access token rejected",
        }
    }
}

/// Which ID-token check failed, for the audit trail.
fn id_token_check(e: &openidconnect::ClaimsVerificationError) -> &'static str {
    use openidconnect::ClaimsVerificationError as E;
    match e {
        E::Expired(_) => "id token: expired",
        E::InvalidAudience(_) => "id token: audience",
        E::InvalidIssuer(_) => "id token: issuer",
        E::InvalidNonce(_) => "id token: nonce",
        E::SignatureVerification(_) => "id token: signature",
        _ => "id token: invalid",
    }
}

/// A verified API access token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub client_id: String,
    pub scopes: Vec<String>,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

struct Pending {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    created: Instant,
}

/// The identity asserted by a verified ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub preferred_username: Option<String>,
    /// Value of the configured role claim, if present.
    pub role: Option<String>,
    pub amr: Vec<String>,
    pub acr: Option<String>,
}

impl Identity {
    /// Whether the provider reports a second factor (`amr` contains `mfa`,
    /// `otp`, `hwk`, `swk`, `sms`, `fido` … or an `acr` naming MFA).
    pub fn has_second_factor(&self) -> bool {
        self.amr.iter().any(|m| {
            matches!(
                m.as_str(),
                "mfa" | "otp" | "hwk" | "swk" | "sms" | "fido" | "sc" | "face" | "fpt" | "iris"
            )
        }) || self
            .acr
            .as_deref()
            .is_some_and(|a| a.contains("mfa") || a.contains("2fa"))
    }
}

pub struct Oidc {
    settings: OidcSettings,
    http: openidconnect::reqwest::Client,
    metadata: tokio::sync::RwLock<Option<CoreProviderMetadata>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer_url)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // No redirects: SSRF protection recommended by the crate.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Self {
            settings,
            http,
            metadata: tokio::sync::RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    async fn provider(&self) -> Result<CoreProviderMetadata, OidcError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
            .map_err(|e| OidcError::Config(format!("issuer_url: {e}")))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        *self.metadata.write().await = Some(m.clone());
        Ok(m)
    }

    /// Start a sign-in: the provider URL to redirect to and the state to
    /// put in the browser's cookie.
    pub async fn begin(&self) -> Result<(String, String), OidcError> {
        let metadata = self.provider().await?;
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect_url: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.settings.scopes {
            if s != "openid" {
                req = req.add_scope(Scope::new(s.clone()));
            }
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let now = Instant::now();
        if let Ok(mut map) = self.pending.lock() {
            map.retain(|_, p| now.duration_since(p.created) < PENDING_TTL);
            if map.len() >= MAX_PENDING {
                return Err(OidcError::State);
            }
            map.insert(
                state.secret().clone(),
                Pending {
                    nonce,
                    verifier,
                    created: now,
                },
            );
        }
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finish a sign-in: `state` must be one we issued (single use) and
    /// equal to the browser's cookie (checked by the caller); the code is
    /// exchanged with the PKCE verifier and the ID token verified.
    pub async fn finish(&self, state: &str, code: &str) -> Result<Identity, OidcError> {
        let pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut m| m.remove(state))
            .filter(|p| p.created.elapsed() < PENDING_TTL)
            .ok_or(OidcError::State)?;
        let metadata = self.provider().await?;
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect_url: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        let id_token = token.id_token().ok_or_else(|| {
            OidcError::IdToken("id token: missing", "no ID token in the response".into())
        })?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &pending.nonce)
            .map_err(|e| OidcError::IdToken(id_token_check(&e), e.to_string()))?;
        let amr = claims
            .auth_method_refs()
            .map(|v| v.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default();
        let acr = claims.auth_context_ref().map(|a| a.to_string());
        // Extra claims (the role) from the already verified payload.
        let role = self.settings.role_claim.as_deref().and_then(|name| {
            let jwt = id_token.to_string();
            let payload = jwt.split('.').nth(1)?;
            use base64::Engine;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            v.get(name)?.as_str().map(str::to_owned)
        });
        Ok(Identity {
            subject: claims.subject().to_string(),
            preferred_username: claims.preferred_username().map(|u| u.to_string()),
            role,
            amr,
            acr,
        })
    }

    /// Verify a JWT access token (RFC 9068) from the provider: signature
    /// with the provider's JWKS (asymmetric algorithms only), issuer,
    /// audience (`api_audience`), expiry / not-before and the required
    /// scope. The signature check is the crate's.
    pub async fn verify_access_token(&self, jwt: &str) -> Result<ApiToken, OidcError> {
        use OidcError::AccessToken as Bad;
        let audience = self
            .settings
            .api_audience
            .as_deref()
            .ok_or(Bad("API tokens are not enabled"))?;
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Bad("not a JWS"));
        };
        let header: serde_json::Value =
            serde_json::from_slice(&b64(h).ok_or(Bad("header"))?).map_err(|_| Bad("header"))?;
        let alg_name = header
            .get("alg")
            .and_then(|a| a.as_str())
            .ok_or(Bad("alg"))?;
        if ![
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ]
        .contains(&alg_name)
        {
            return Err(Bad("algorithm not allowed"));
        }
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(serde_json::Value::String(alg_name.to_owned()))
                .map_err(|_| Bad("alg"))?;
        let kid = header.get("kid").and_then(|k| k.as_str());
        let metadata = self.provider().await?;
        let signature = b64(sig).ok_or(Bad("signature"))?;
        let message = format!("{h}.{p}");
        let verified = metadata
            .jwks()
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.key_id().map(|i| i.as_str()) == kid)
            .any(|k| {
                k.verify_signature(&alg, message.as_bytes(), &signature)
                    .is_ok()
            });
        if !verified {
            return Err(Bad("signature"));
        }
        let claims: serde_json::Value =
            serde_json::from_slice(&b64(p).ok_or(Bad("payload"))?).map_err(|_| Bad("payload"))?;
        if claims.get("iss").and_then(|v| v.as_str()) != Some(metadata.issuer().as_str()) {
            return Err(Bad("issuer"));
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(Bad("audience"));
        }
        let now = chrono::Utc::now().timestamp();
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64())
            .ok_or(Bad("exp"))?;
        if exp <= now {
            return Err(Bad("expired"));
        }
        if claims
            .get("nbf")
            .and_then(|v| v.as_i64())
            .is_some_and(|nbf| nbf > now)
        {
            return Err(Bad("not yet valid"));
        }
        let scopes: Vec<String> = claims
            .get("scope")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !scopes.contains(&self.settings.api_scope) {
            return Err(Bad("scope"));
        }
        let client_id = claims
            .get("client_id")
            .or_else(|| claims.get("sub"))
            .and_then(|v| v.as_str())
            .ok_or(Bad("client_id"))?
            .chars()
            .take(128)
            .collect();
        Ok(ApiToken { client_id, scopes })
    }
}
