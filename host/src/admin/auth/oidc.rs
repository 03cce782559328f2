//! Console sign-in through an OpenID Connect provider: the authorization
//! code flow with PKCE (S256), a `state` bound to the browser by a cookie
//! and used once, a `nonce` checked in the ID token, and the token's
//! signature checked against the provider's published keys.
//!
//! The provider's discovery document and keys are fetched when first
//! needed and kept; the keys are fetched again when a token names a key
//! they lack (a rotation), at most every [`JWKS_REFETCH`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::Value;

use super::jwt::{self, ClaimError, Jwks, TokenError};
use super::password::sha256;
use crate::config::{OidcSpec, SsoGrant, check_user_name};

/// How long a started sign-in may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Sign-ins in progress kept at most.
const MAX_PENDING: usize = 10_000;
/// How long one request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the provider.
const MAX_PROVIDER_ANSWER: usize = 1 << 20;
/// How long the discovery document is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Shortest time between two fetches of the key set.
const JWKS_REFETCH: Duration = Duration::from_secs(30);
/// Most groups taken from the claim; longest group and name.
const MAX_GROUPS: usize = 512;
const MAX_GROUP_LEN: usize = 256;

/// Why a sign-in failed. [`SsoError::code`] is what the console is sent
/// back with (a fixed word, never text from the provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoError {
    /// Unknown, reused or foreign `state`, or a callback in another browser.
    State,
    /// The sign-in took longer than [`LOGIN_TTL`].
    LoginExpired,
    /// The provider answered the sign-in with an error (the user declined, ...).
    Denied,
    /// The ID token's nonce is not this sign-in's.
    Nonce,
    /// The ID token has expired (or is dated in the future).
    TokenExpired,
    /// None of the user's groups is mapped to a role.
    NoRole,
    /// The provider could not be reached or answered wrongly; the reason.
    Provider(String),
}

impl SsoError {
    pub fn code(&self) -> &'static str {
        match self {
            SsoError::State => "state",
            SsoError::LoginExpired => "login_expired",
            SsoError::Denied => "denied",
            SsoError::Nonce => "nonce",
            SsoError::TokenExpired => "token_expired",
            SsoError::NoRole => "no_role",
            SsoError::Provider(_) => "provider",
        }
    }
}

impl std::fmt::Display for SsoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The provider's own words (an issuer, an error) go into logs:
            // bounded, without control characters.
            SsoError::Provider(why) => write!(f, "provider: {}", crate::hl7::printable(why, 500)),
            other => f.write_str(other.code()),
        }
    }
}

/// A sign-in begun: where to send the browser, and the cookie binding it.
pub struct Started {
    pub url: String,
    pub binding: String,
}

/// A user the provider vouched for.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    pub grant: SsoGrant,
}

struct Pending {
    binding: [u8; 32],
    nonce: String,
    verifier: String,
    started: Instant,
}

#[derive(Deserialize, Clone)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    end_session_endpoint: Option<String>,
}

struct Provider {
    discovery: Discovery,
    fetched: Instant,
    jwks: Arc<Jwks>,
    jwks_fetched: Instant,
}

/// One configured provider, with its sign-ins in progress.
pub struct Oidc {
    pub spec: OidcSpec,
    secret: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    provider: tokio::sync::Mutex<Option<Provider>>,
    pending: Mutex<HashMap<[u8; 32], Pending>>,
    /// The provider's end-session endpoint, once discovered.
    end_session: Mutex<Option<String>>,
    rng: SystemRandom,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `application/x-www-form-urlencoded` of one value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Whether an endpoint the provider names may be used: HTTPS, or HTTP when
/// the configured issuer itself is HTTP (on this machine).
fn endpoint_ok(issuer: &str, url: &str) -> bool {
    url.starts_with("https://") || (issuer.starts_with("http://") && url.starts_with("http://"))
}

impl Oidc {
    /// The provider `spec` names; the client secret is read from its
    /// variable now.
    pub fn new(spec: &OidcSpec) -> Result<Oidc, String> {
        let secret = match &spec.client_secret_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("admin.oidc.client_secret_env: the variable {var} is not set")
            })?),
            None => None,
        };
        let tls = izhub_engine::tls::client_config_or_system(spec.ca.as_deref().map(Path::new))?;
        Ok(Oidc {
            spec: spec.clone(),
            secret,
            tls,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            end_session: Mutex::new(None),
            rng: SystemRandom::new(),
        })
    }

    fn random(&self) -> Result<String, SsoError> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| SsoError::Provider("no random bytes".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a sign-in: the provider's authorization URL (with state,
    /// nonce and PKCE challenge) and the value of the cookie that binds the
    /// sign-in to this browser.
    pub async fn begin(&self) -> Result<Started, SsoError> {
        let discovery = self.discovery().await?;
        let (state, nonce, verifier, binding) = (
            self.random()?,
            self.random()?,
            self.random()?,
            self.random()?,
        );
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        let now = Instant::now();
        {
            let mut pending = self.pending();
            pending.retain(|_, p| now.duration_since(p.started) < LOGIN_TTL);
            while pending.len() >= MAX_PENDING {
                let oldest = pending
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => pending.remove(&k),
                    None => break,
                };
            }
            pending.insert(
                sha256(state.as_bytes()),
                Pending {
                    binding: sha256(binding.as_bytes()),
                    nonce: nonce.clone(),
                    verifier,
                    started: now,
                },
            );
        }
        let scope = self.spec.scopes.join(" ");
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &self.spec.client_id),
            ("redirect_uri", &self.spec.redirect_url),
            ("scope", &scope),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        Ok(Started {
            url: with_query(&discovery.authorization_endpoint, &query),
            binding,
        })
    }

    /// Finishes a sign-in from the callback's `state` and `code` (or the
    /// provider's `error`), in the browser holding `binding`.
    pub async fn finish(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
        binding: Option<&str>,
    ) -> Result<Identity, SsoError> {
        let pending = self
            .pending()
            .remove(&sha256(state.as_bytes()))
            .ok_or(SsoError::State)?;
        let bound = binding.is_some_and(|b| {
            use subtle::ConstantTimeEq;
            bool::from(sha256(b.as_bytes()).ct_eq(&pending.binding))
        });
        if !bound {
            return Err(SsoError::State);
        }
        if pending.started.elapsed() >= LOGIN_TTL {
            return Err(SsoError::LoginExpired);
        }
        if error.is_some() {
            return Err(SsoError::Denied);
        }
        let code = code.ok_or(SsoError::State)?;
        let id_token = self.exchange(code, &pending.verifier).await?;
        let claims = self.verified(&id_token).await?;
        jwt::check_claims(
            &claims,
            &jwt::Expected {
                issuer: &self.spec.issuer,
                client_id: &self.spec.client_id,
                nonce: &pending.nonce,
                now: now_secs(),
            },
        )
        .map_err(|e| match e {
            ClaimError::Expired => SsoError::TokenExpired,
            ClaimError::Nonce => SsoError::Nonce,
            ClaimError::Other(why) => SsoError::Provider(why),
        })?;
        let name = claims
            .get(&self.spec.name_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SsoError::Provider(format!(
                    "the ID token has no {} claim",
                    self.spec.name_claim
                ))
            })?;
        check_user_name(name).map_err(SsoError::Provider)?;
        let groups: Vec<String> = match claims.get(&self.spec.groups_claim) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .filter(|g| g.len() <= MAX_GROUP_LEN)
                .take(MAX_GROUPS)
                .map(String::from)
                .collect(),
            Some(Value::String(one)) if one.len() <= MAX_GROUP_LEN => vec![one.clone()],
            _ => Vec::new(),
        };
        let grant = self.spec.grant(&groups).ok_or(SsoError::NoRole)?;
        Ok(Identity {
            name: name.to_string(),
            groups,
            grant,
        })
    }

    /// Where the browser ends its session at the provider, returning to the
    /// console; `None` when the provider has no end-session endpoint.
    /// (Only what is known already is used: a provider that is down does
    /// not hold up a logout.)
    pub fn logout_url(&self) -> Option<String> {
        let end = self
            .end_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let back = self.console_url();
        Some(with_query(
            &end,
            &form(&[
                ("client_id", &self.spec.client_id),
                ("post_logout_redirect_uri", &back),
            ]),
        ))
    }

    /// The console's URL on the address the provider sends browsers back to.
    pub fn console_url(&self) -> String {
        let origin = self
            .spec
            .redirect_url
            .strip_suffix(crate::config::OIDC_CALLBACK_PATH)
            .unwrap_or(&self.spec.redirect_url);
        format!("{origin}/console/")
    }

    async fn discovery(&self) -> Result<Discovery, SsoError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref()
            && p.fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(p.discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.spec.issuer);
        let body = self.get(&url).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| SsoError::Provider(format!("{url}: not a discovery document: {e}")))?;
        if discovery.issuer.trim_end_matches('/') != self.spec.issuer {
            return Err(SsoError::Provider(format!(
                "{url} names issuer '{}', not the configured one",
                discovery.issuer
            )));
        }
        let endpoints = [
            Some(&discovery.authorization_endpoint),
            Some(&discovery.token_endpoint),
            Some(&discovery.jwks_uri),
            discovery.end_session_endpoint.as_ref(),
        ];
        if endpoints
            .into_iter()
            .flatten()
            .any(|e| !endpoint_ok(&self.spec.issuer, e) || e.len() > 2000)
        {
            return Err(SsoError::Provider(format!(
                "{url}: an endpoint is not https://"
            )));
        }
        let jwks = Arc::new(self.fetch_jwks(&discovery.jwks_uri).await?);
        *self.end_session.lock().unwrap_or_else(|p| p.into_inner()) =
            discovery.end_session_endpoint.clone();
        let now = Instant::now();
        *cached = Some(Provider {
            discovery: discovery.clone(),
            fetched: now,
            jwks,
            jwks_fetched: now,
        });
        Ok(discovery)
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Jwks, SsoError> {
        let body = self.get(url).await?;
        let jwks = Jwks::parse(&body).map_err(|e| SsoError::Provider(format!("{url}: {e}")))?;
        if jwks.len() == 0 {
            return Err(SsoError::Provider(format!("{url}: no signature key")));
        }
        Ok(jwks)
    }

    /// The claims of a well-signed `id_token`; the key set is fetched again
    /// once when the token names a key it lacks.
    async fn verified(&self, id_token: &str) -> Result<serde_json::Map<String, Value>, SsoError> {
        self.discovery().await?;
        let jwks = {
            let cached = self.provider.lock().await;
            cached.as_ref().map(|p| p.jwks.clone()).unwrap_or_default()
        };
        match jwt::verify(id_token, &jwks) {
            Ok(claims) => return Ok(claims),
            Err(TokenError::Invalid(why)) => return Err(SsoError::Provider(why)),
            Err(TokenError::UnknownKey) => {}
        }
        let mut cached = self.provider.lock().await;
        let Some(p) = cached.as_mut() else {
            return Err(SsoError::Provider("the provider's keys are unknown".into()));
        };
        if p.jwks_fetched.elapsed() < JWKS_REFETCH {
            return Err(SsoError::Provider(
                "the ID token's key is not in the provider's key set".into(),
            ));
        }
        let url = p.discovery.jwks_uri.clone();
        p.jwks_fetched = Instant::now();
        p.jwks = Arc::new(self.fetch_jwks(&url).await?);
        jwt::verify(id_token, &p.jwks).map_err(|e| match e {
            TokenError::UnknownKey => {
                SsoError::Provider("the ID token's key is not in the provider's key set".into())
            }
            TokenError::Invalid(why) => SsoError::Provider(why),
        })
    }

    /// Trades the code for tokens; the ID token.
    async fn exchange(&self, code: &str, verifier: &str) -> Result<String, SsoError> {
        let endpoint = self.discovery().await?.token_endpoint;
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.spec.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        let basic = self.secret.as_ref().map(|secret| {
            let pair = format!("{}:{}", encode(&self.spec.client_id), encode(secret));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        if basic.is_none() {
            pairs.push(("client_id", self.spec.client_id.as_str()));
        }
        let (status, body) = self.request(&endpoint, Some((form(&pairs), basic))).await?;
        #[derive(Deserialize)]
        struct Tokens {
            id_token: Option<String>,
            error: Option<String>,
        }
        let tokens: Tokens = serde_json::from_slice(&body).map_err(|_| {
            SsoError::Provider(format!("the token endpoint answered {status} without JSON"))
        })?;
        match (tokens.id_token, tokens.error) {
            (Some(t), _) if status == 200 => Ok(t),
            (_, Some(e)) => Err(SsoError::Provider(format!(
                "the token endpoint refused the code ({})",
                e.chars()
                    .filter(char::is_ascii_graphic)
                    .take(64)
                    .collect::<String>()
            ))),
            _ => Err(SsoError::Provider(format!(
                "the token endpoint answered {status} without an ID token"
            ))),
        }
    }

    async fn get(&self, url: &str) -> Result<Bytes, SsoError> {
        match self.request(url, None).await? {
            (200, body) => Ok(body),
            (status, _) => Err(SsoError::Provider(format!("{url} answered {status}"))),
        }
    }

    /// One request to the provider: GET, or POST of a form with an optional
    /// `Authorization` header. Its status and body.
    async fn request(
        &self,
        url: &str,
        post: Option<(String, Option<String>)>,
    ) -> Result<(u16, Bytes), SsoError> {
        let (form, authorization) = match post {
            Some((form, auth)) => (Some(form), auth),
            None => (None, None),
        };
        let call = crate::http::Call {
            url,
            authorization: authorization.as_deref(),
            form,
        };
        crate::http::call(Some(&self.tls), call, MAX_PROVIDER_ANSWER, PROVIDER_TIMEOUT)
            .await
            .map_err(SsoError::Provider)
    }
}

/// A fingerprint of the provider settings a session was opened under: a
/// reload that changes the provider ends SSO sessions.
pub fn fingerprint(spec: &OidcSpec) -> [u8; 32] {
    sha256(format!("{}\n{}", spec.issuer, spec.client_id).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(encode("a b+c/é"), "a%20b%2Bc%2F%C3%A9");
        assert_eq!(
            form(&[("x", "1"), ("scope", "openid profile")]),
            "x=1&scope=openid%20profile"
        );
        assert_eq!(
            with_query("https://idp/auth?p=1", "q=2"),
            "https://idp/auth?p=1&q=2"
        );
        assert!(endpoint_ok("https://idp", "https://idp/token"));
        assert!(!endpoint_ok("https://idp", "http://idp/token"));
        assert!(endpoint_ok(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1/token"
        ));
    }
}
