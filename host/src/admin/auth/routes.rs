//! The sign-in API: log in, log out, who am I; and the guard in front of
//! `/metrics` and `/healthz`.

use super::*;

/// `/api/login`, `/api/logout` and `/api/me`, for any state `Auth` can be
/// taken from. Merge it into the admin router.
pub fn router<S>() -> Router<S>
where
    Auth: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/api/login",
            post(login).layer(DefaultBodyLimit::max(MAX_LOGIN_BODY)),
        )
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .merge(super::sso::router())
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

pub(super) fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

async fn login(
    State(auth): State<Auth>,
    ClientIp(client): ClientIp,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, Refusal> {
    let Json(body) = body.map_err(|e| {
        Refusal::new(
            e.status(),
            "send {\"user\": \"...\", \"password\": \"...\"} as application/json",
        )
    })?;
    let login = auth.login(&body.user, &body.password, client).await?;
    Ok((
        [
            (header::SET_COOKIE, login.cookie),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Json(Signed {
            user: &login.user,
            role: login.role.as_str(),
            csrf: Some(&login.csrf),
        }),
    )
        .into_response())
}

/// Every refusal's body: `{"error": "..."}`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

/// Who is signed in: the answer to a login.
#[derive(Debug, serde::Serialize)]
struct Signed<'a> {
    user: &'a str,
    role: &'static str,
    /// The session's CSRF token (none for a bearer token).
    csrf: Option<&'a str>,
}

/// `GET /api/me`: who is signed in and what they may see (`null`: all).
#[derive(Debug, serde::Serialize)]
struct Me<'a> {
    #[serde(flatten)]
    signed: Signed<'a>,
    routes: Option<&'a [String]>,
    destinations: Option<&'a [String]>,
}

/// A logout's answer.
#[derive(Debug, serde::Serialize)]
struct LoggedOut {
    ok: bool,
    /// For a single sign-on session: where the browser ends its session at
    /// the provider too.
    #[serde(skip_serializing_if = "Option::is_none")]
    sso_logout: Option<String>,
}

async fn logout(State(auth): State<Auth>, user: CurrentUser) -> Response {
    auth.logout(&user);
    let sso_logout = auth.sso_logout_url(&user);
    let expired = auth.cookie("", Duration::ZERO);
    (
        [
            (header::SET_COOKIE, expired),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Json(LoggedOut {
            ok: true,
            sso_logout,
        }),
    )
        .into_response()
}

async fn me(user: CurrentUser) -> Response {
    (
        no_store(),
        Json(Me {
            signed: Signed {
                user: &user.name,
                role: user.role.as_str(),
                csrf: user.csrf(),
            },
            routes: user.routes.as_deref(),
            destinations: user.destinations.as_deref(),
        }),
    )
        .into_response()
}

/// Middleware for `/metrics` and `/healthz`: with `metrics_token_sha256`
/// configured, requests need `Authorization: Bearer <token>`.
pub async fn probe_guard(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if auth.probe_allowed(request.headers()) {
        return next.run(request).await;
    }
    let mut refused =
        Refusal::unauthorized("this endpoint needs Authorization: Bearer <metrics token>")
            .into_response();
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refused
}
