//! Who may use the console and its API on the admin address.
//!
//! Users are configured under `[[admin.users]]` with an argon2id password
//! hash, a [`Role`] and optionally the routes and destinations they may see.
//! A browser logs in with `POST /api/login` and gets an `izhub_session`
//! cookie (HttpOnly, SameSite=Strict, Secure under HTTPS) and a CSRF token
//! that every state-changing request made with the cookie must carry in
//! `X-CSRF-Token`. Systems send `Authorization: Bearer <token>` instead (the
//! configuration holds the token's SHA-256; no CSRF token is needed).
//!
//! Handlers take a [`CurrentUser`] argument: the request is refused with
//! `401 {"error"}` before the handler runs when nobody is logged in, and with
//! `403` when the CSRF token is missing or wrong. Sessions live in memory
//! (an engine restart logs everyone out); a reload that removes a user or
//! changes its password ends its sessions.

mod jwt;
mod limit;
mod oidc;
mod password;
mod routes;
mod sessions;
mod settings;
mod sso;
mod user;

pub(crate) use routes::ErrorBody;
pub use routes::{probe_guard, router};

use password::{decoy_hash, hex, sha256};
pub use password::{hash_password, new_token, verify_password};
pub use user::{Admin, ClientAddr, ClientIp, CurrentUser, OnBehalf, Operator, Viewer};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::Role;
use crate::config::{AdminAccessSpec, AdminUserSpec};
use limit::LoginLimiter;
use sessions::{Session, Sessions};
use settings::Settings;
pub use settings::Users;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "izhub_session";
/// The header state-changing requests made with a session cookie carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Sessions kept at most; when full, the oldest is dropped.
const MAX_SESSIONS: usize = 10_000;
/// Password checks run at once (each takes the hash's memory, 19 MiB by default).
const MAX_VERIFYING: usize = 4;
/// Longest password looked at; a longer one is wrong.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Largest login request body.
const MAX_LOGIN_BODY: usize = 16 << 10;

/// Why a request is refused: an HTTP status and a sentence, answered as
/// `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
}

impl Refusal {
    /// Any status with a sentence saying why.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401: nobody (valid) is logged in.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the user may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(retry_after: Duration) -> Self {
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many failed logins from this address; try again later".into(),
            retry_after: Some(retry_after),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Shortest secret nodes may share.
pub const MIN_PEER_TOKEN: usize = 16;

/// The secret the cluster's nodes share, from the variable
/// `[admin] peer_token_env` names; `None` when unset, missing or too short
/// (`izhub serve` refuses to start then).
pub fn peer_token(access: &AdminAccessSpec) -> Option<String> {
    let var = access.peer_token_env.as_ref()?;
    std::env::var(var)
        .ok()
        .filter(|t| t.len() >= MIN_PEER_TOKEN)
}

/// The header another node sends its shared secret in.
pub const PEER_HEADER: &str = "x-izhub-peer";
/// The header naming the user another node asks for.
pub const ON_BEHALF_HEADER: &str = "x-izhub-on-behalf-of";
/// For a single sign-on user: the header with their groups (a JSON list),
/// which the asked node maps to a role with its own configuration.
pub const ON_BEHALF_GROUPS_HEADER: &str = "x-izhub-on-behalf-groups";
/// Longest groups header taken from another node.
const MAX_GROUPS_HEADER: usize = 64 << 10;

/// Console authentication: users, sessions and the login rate limit. A
/// cheap handle (clones share everything); put one in the admin state and
/// let `Auth: FromRef<YourState>` hand it to the extractor and handlers.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    settings: RwLock<Arc<Settings>>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<LoginLimiter>,
    /// The admin address serves HTTPS: cookies are marked Secure.
    https: bool,
    verifying: tokio::sync::Semaphore,
    rng: SystemRandom,
}

/// How a request proved who it is.
#[derive(Clone)]
enum Via {
    Session {
        key: [u8; 32],
        csrf: String,
        /// Opened through the OpenID provider: the user's groups.
        sso: Option<Vec<String>>,
    },
    Token,
    /// Another node of the cluster, for a user of its console.
    Peer,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub role: Role,
    /// The session's CSRF token.
    pub csrf: String,
    /// The `Set-Cookie` value carrying the session id.
    pub cookie: String,
}

impl Auth {
    /// Authentication for the admin address as `access` configures it;
    /// `https` marks session cookies Secure.
    pub fn new(access: &AdminAccessSpec, https: bool) -> Auth {
        Auth(Arc::new(Inner {
            settings: RwLock::new(Arc::new(Settings::from_spec(access, None))),
            sessions: Mutex::new(Sessions::new(MAX_SESSIONS)),
            limiter: Mutex::new(LoginLimiter::new()),
            https,
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
            rng: SystemRandom::new(),
        }))
    }

    /// Puts a reloaded configuration's users, tokens and session length in
    /// force. Sessions of users removed, or whose password changed, end.
    pub fn reload(&self, access: &AdminAccessSpec) {
        let settings = Arc::new(Settings::from_spec(access, Some(&self.settings())));
        self.sessions().retain(|s| settings.account(s).is_some());
        *self.0.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Whether session cookies are marked Secure (the admin address serves HTTPS).
    pub fn is_https(&self) -> bool {
        self.0.https
    }

    /// The configured users' names and roles.
    pub fn users(&self) -> Vec<(String, Role)> {
        self.settings()
            .users
            .by_name
            .values()
            .map(|u| (u.name.clone(), u.role))
            .collect()
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn settings(&self) -> Arc<Settings> {
        self.0
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.0.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, LoginLimiter> {
        self.0.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn random_hex(&self) -> Result<String, Refusal> {
        let mut bytes = [0u8; 32];
        self.0.rng.fill(&mut bytes).map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no random bytes for a session",
            )
        })?;
        Ok(hex(&bytes))
    }

    /// Checks a user name and password from `client` and opens a session.
    /// Refuses with 429 after too many failures from the client's address.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Login, Refusal> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let key = limit::client_key(client);
        if let Err(wait) = self.limiter().begin(key, Instant::now()) {
            tracing::info!(%client, "console login refused: too many failed attempts from this address");
            return Err(Refusal::too_many(wait));
        }
        let settings = self.settings();
        let account = settings.users.get(user).cloned();
        let phc = account.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_string();
        let matched = match self.0.verifying.acquire().await {
            Ok(_permit) => tokio::task::spawn_blocking(move || {
                let phc = phc.as_deref().unwrap_or_else(|| decoy_hash());
                verify_password(phc, &password)
            })
            .await
            .unwrap_or(false),
            Err(_) => false,
        };
        let account = account.filter(|_| matched);
        self.limiter().end(key, account.is_none(), Instant::now());
        let Some(account) = account else {
            tracing::info!(%client, "console login failed");
            tracing::debug!(%client, user, "console login failed for this user name");
            return Err(Refusal::unauthorized("wrong user name or password"));
        };
        let login = self.open_session(
            &account.name,
            account.role,
            sha256(account.password_hash.as_bytes()),
            None,
        )?;
        tracing::info!(user = %account.name, role = %account.role, %client, "console login");
        Ok(login)
    }

    /// Opens a session for `user`: its id goes in the cookie, only its
    /// SHA-256 is kept.
    fn open_session(
        &self,
        user: &str,
        role: Role,
        credential: [u8; 32],
        sso: Option<Vec<String>>,
    ) -> Result<Login, Refusal> {
        let session = self.settings().session;
        let id = self.random_hex()?;
        let csrf = self.random_hex()?;
        let now = Instant::now();
        self.sessions().insert(
            sha256(id.as_bytes()),
            Session {
                user: user.to_string(),
                credential,
                csrf: csrf.clone(),
                sso,
                created: now,
                expires: now + session,
            },
            now,
        );
        Ok(Login {
            user: user.to_string(),
            role,
            csrf,
            cookie: self.cookie(&id, session),
        })
    }

    fn cookie(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            max_age.as_secs(),
            if self.0.https { "; Secure" } else { "" }
        )
    }

    /// The user a request with this method and these headers is made by:
    /// a bearer token, else the session cookie (whose CSRF token must come
    /// with every method but GET, HEAD and OPTIONS).
    pub fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<CurrentUser, Refusal> {
        let settings = self.settings();
        if let Some(given) = headers.get(PEER_HEADER) {
            let expected = settings.peer.ok_or_else(|| {
                Refusal::unauthorized("this node takes no requests from other nodes")
            })?;
            if !bool::from(sha256(given.as_bytes()).ct_eq(&expected)) {
                return Err(Refusal::unauthorized("wrong node secret"));
            }
            let name = headers
                .get(ON_BEHALF_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Refusal::unauthorized("no such user on this node"))?;
            return match headers.get(ON_BEHALF_GROUPS_HEADER) {
                None => settings
                    .users
                    .get(name)
                    .map(|user| CurrentUser::new(user, Via::Peer))
                    .ok_or_else(|| Refusal::unauthorized("no such user on this node")),
                Some(groups) => {
                    let groups: Vec<String> = Some(groups.as_bytes())
                        .filter(|g| g.len() <= MAX_GROUPS_HEADER)
                        .and_then(|g| serde_json::from_slice(g).ok())
                        .ok_or_else(|| {
                            Refusal::bad_request("the groups header is not a JSON list")
                        })?;
                    let user = settings
                        .sso_user(name, &groups)
                        .filter(|_| crate::config::check_user_name(name).is_ok())
                        .ok_or_else(|| {
                            Refusal::unauthorized(
                                "this node maps none of the user's groups to a role",
                            )
                        })?;
                    Ok(CurrentUser {
                        via: Via::Peer,
                        ..user
                    })
                }
            };
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = bearer(value).ok_or_else(|| {
                Refusal::unauthorized("the Authorization header is not a bearer token")
            })?;
            let user = settings
                .users
                .by_token(&sha256(token.as_bytes()))
                .ok_or_else(|| Refusal::unauthorized("unknown bearer token"))?;
            return Ok(CurrentUser::new(user, Via::Token));
        }
        let id = session_cookie(headers).ok_or_else(|| Refusal::unauthorized("not logged in"))?;
        let key = sha256(id.as_bytes());
        let session = self
            .sessions()
            .get(&key, Instant::now())
            .ok_or_else(|| Refusal::unauthorized("the session has ended; log in again"))?;
        let Some(user) = settings.account(&session) else {
            self.sessions().remove(&key);
            return Err(Refusal::unauthorized("the session has ended; log in again"));
        };
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let given = headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(given.ct_eq(session.csrf.as_bytes())) {
                return Err(Refusal::forbidden(
                    "missing or wrong X-CSRF-Token header (GET /api/me gives the token)",
                ));
            }
        }
        Ok(CurrentUser {
            via: Via::Session {
                key,
                csrf: session.csrf,
                sso: session.sso,
            },
            ..user
        })
    }

    /// Ends the user's session (nothing to end for a bearer token).
    pub fn logout(&self, user: &CurrentUser) {
        if let Via::Session { key, .. } = &user.via {
            self.sessions().remove(key);
            tracing::info!(user = %user.name, "console logout");
        }
    }

    /// Whether a request to `/metrics` or `/healthz` may be answered: always
    /// when no metrics token is configured, else with that bearer token.
    pub fn probe_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = self.settings().metrics_token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(bearer)
            .is_some_and(|t| bool::from(sha256(t.as_bytes()).ct_eq(&expected)))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `izhub_session` cookie's value, from any `Cookie` header.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// A cookie's value, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, wanted: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == wanted && !value.is_empty())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(users: &[(&str, Role, &str, Option<&str>)]) -> AdminAccessSpec {
        AdminAccessSpec {
            users: users
                .iter()
                .map(|(name, role, password, token)| AdminUserSpec {
                    name: name.to_string(),
                    role: *role,
                    password_hash: hash_password(password).unwrap(),
                    routes: None,
                    destinations: None,
                    token_sha256: token.map(|t| sha256(t.as_bytes())),
                })
                .collect(),
            ..AdminAccessSpec::default()
        }
    }

    fn with_cookie(cookie: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let id = cookie.split(';').next().unwrap();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {id}")).unwrap(),
        );
        if let Some(c) = csrf {
            h.insert(CSRF_HEADER, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let phc = hash_password("s3cret passphrase").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        crate::config::check_password_hash(&phc).unwrap();
        assert!(verify_password(&phc, "s3cret passphrase"));
        assert!(!verify_password(&phc, "s3cret passphrasE"));
        assert!(!verify_password("not a hash", "x"));
        // Two hashes of one password differ by their salt.
        assert_ne!(phc, hash_password("s3cret passphrase").unwrap());
    }

    #[tokio::test]
    async fn sessions_csrf_tokens_and_reload() {
        let access = spec(&[
            ("ana", Role::Operator, "pw-ana-123", None),
            ("bo", Role::Viewer, "pw-bo-1234", Some("bo-token")),
        ]);
        let auth = Auth::new(&access, true);
        let login = auth.login("ana", "pw-ana-123", None).await.unwrap();
        assert!(login.cookie.ends_with("; Secure"), "{}", login.cookie);
        assert!(login.cookie.contains("HttpOnly; SameSite=Strict; Path=/"));
        let me = auth
            .authenticate(&Method::GET, &with_cookie(&login.cookie, None))
            .unwrap();
        assert_eq!(me.name, "ana");
        assert_eq!(me.csrf(), Some(login.csrf.as_str()));
        me.require(Role::Operator).unwrap();
        assert_eq!(
            me.require(Role::Admin).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        // State changes need the CSRF token.
        let refused = auth
            .authenticate(&Method::POST, &with_cookie(&login.cookie, None))
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let refused = auth
            .authenticate(&Method::DELETE, &with_cookie(&login.cookie, Some("0000")))
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        auth.authenticate(
            &Method::POST,
            &with_cookie(&login.cookie, Some(&login.csrf)),
        )
        .unwrap();
        // A bearer token needs none.
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bo-token"),
        );
        let bo = auth.authenticate(&Method::POST, &h).unwrap();
        assert_eq!((bo.name.as_str(), bo.by_token()), ("bo", true));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bo-tokeN"),
        );
        assert_eq!(
            auth.authenticate(&Method::GET, &h).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        // Wrong passwords and unknown users are refused alike.
        let wrong = auth.login("ana", "nope", None).await.unwrap_err();
        let unknown = auth.login("zed", "pw-ana-123", None).await.unwrap_err();
        assert_eq!(wrong, unknown);
        // Reloaded without ana: her session ends; bo's role change applies.
        let mut reloaded = spec(&[]);
        reloaded.users = access.users[1..].to_vec();
        reloaded.users[0].role = Role::Admin;
        auth.reload(&reloaded);
        assert_eq!(auth.session_count(), 0);
        assert_eq!(
            auth.authenticate(&Method::GET, &with_cookie(&login.cookie, None))
                .unwrap_err()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer bo-token"),
        );
        assert_eq!(
            auth.authenticate(&Method::GET, &h).unwrap().role,
            Role::Admin
        );
        // Logging out ends the session.
        let login = auth.login("bo", "pw-bo-1234", None).await.unwrap();
        let headers = with_cookie(&login.cookie, Some(&login.csrf));
        let me = auth.authenticate(&Method::POST, &headers).unwrap();
        auth.logout(&me);
        assert!(auth.authenticate(&Method::GET, &headers).is_err());
    }

    fn oidc(roles: &[(&str, Role)]) -> crate::config::OidcSpec {
        crate::config::OidcSpec {
            issuer: "https://idp.example.org".into(),
            client_id: "izhub".into(),
            client_secret_env: None,
            redirect_url: "https://izhub.example.org/api/oidc/callback".into(),
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            name_claim: "preferred_username".into(),
            label: "SSO".into(),
            ca: None,
            roles: roles
                .iter()
                .map(|(group, role)| crate::config::OidcRoleSpec {
                    group: group.to_string(),
                    role: *role,
                    routes: None,
                    destinations: None,
                })
                .collect(),
        }
    }

    #[test]
    fn single_sign_on_sessions_follow_the_group_mapping_in_force() {
        let mut access = spec(&[]);
        access.oidc = Some(oidc(&[("ops", Role::Operator)]));
        let auth = Auth::new(&access, false);
        let fingerprint = oidc::fingerprint(access.oidc.as_ref().unwrap());
        let login = auth
            .open_session(
                "olga",
                Role::Operator,
                fingerprint,
                Some(vec!["ops".into(), "staff".into()]),
            )
            .unwrap();
        let headers = with_cookie(&login.cookie, Some(&login.csrf));
        let me = auth.authenticate(&Method::POST, &headers).unwrap();
        assert_eq!((me.name.as_str(), me.role), ("olga", Role::Operator));
        let behalf = me.on_behalf();
        assert_eq!(
            behalf.groups,
            Some(vec!["ops".to_string(), "staff".to_string()])
        );
        // The mapping is read at each request: a reload that makes the group admin applies.
        access.oidc = Some(oidc(&[("ops", Role::Admin)]));
        auth.reload(&access);
        assert_eq!(
            auth.authenticate(&Method::GET, &headers).unwrap().role,
            Role::Admin
        );
        // A reload that maps none of her groups ends the session.
        access.oidc = Some(oidc(&[("admins", Role::Admin)]));
        auth.reload(&access);
        assert_eq!(auth.session_count(), 0);
        assert!(auth.authenticate(&Method::GET, &headers).is_err());
        // So does a change of provider.
        access.oidc = Some(oidc(&[("ops", Role::Viewer)]));
        auth.reload(&access);
        let login = auth
            .open_session("olga", Role::Viewer, fingerprint, Some(vec!["ops".into()]))
            .unwrap();
        let headers = with_cookie(&login.cookie, None);
        assert!(auth.authenticate(&Method::GET, &headers).is_ok());
        let mut other = oidc(&[("ops", Role::Viewer)]);
        other.issuer = "https://other-idp.example.org".into();
        access.oidc = Some(other);
        auth.reload(&access);
        assert!(auth.authenticate(&Method::GET, &headers).is_err());
    }

    #[test]
    fn limits_to_routes_and_destinations() {
        let user = CurrentUser {
            name: "v".into(),
            role: Role::Viewer,
            routes: Some(vec!["vxu".into()]),
            destinations: None,
            via: Via::Token,
        };
        assert!(user.may_see_route("vxu"));
        assert!(!user.may_see_route("qbp"));
        assert!(user.may_see_destination("anything"));
        assert!(user.may_see_message(Some("vxu"), None));
        assert!(!user.may_see_message(None, Some("wa")));
        assert!(user.require(Role::Viewer).is_ok());
        assert!(user.require(Role::Operator).is_err());
    }

    #[test]
    fn reads_bearer_and_cookie_headers() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("BEARER  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, v("a=1"));
        h.append(header::COOKIE, v("b=2; izhub_session=xyz; c=3"));
        assert_eq!(session_cookie(&h), Some("xyz"));
    }
}
