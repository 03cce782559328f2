//! Single sign-on on the admin address: `GET /api/login/options` tells the
//! login page whether a provider is configured, `GET /api/oidc/login`
//! sends the browser to it, and `GET /api/oidc/callback` takes it back,
//! opens a session and returns to the console (with `?sso_error=<word>`
//! when the sign-in is refused; the words are [`oidc::SsoError::code`]).

use axum::extract::Query;

use super::*;

/// The cookie binding a sign-in to the browser that began it.
const SSO_COOKIE: &str = "izhub_oidc";
/// Where it is sent: the callback only.
const SSO_COOKIE_PATH: &str = "/api/oidc";
/// Longest `state` or `code` looked at.
const MAX_CALLBACK_VALUE: usize = 4096;

pub(super) fn router<S>() -> Router<S>
where
    Auth: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/login/options", get(options))
        .route("/api/oidc/login", get(begin))
        .route("/api/oidc/callback", get(callback))
}

#[derive(Debug, serde::Serialize)]
struct Options<'a> {
    /// The single sign-on button, when a provider is configured.
    sso: Option<SsoButton<'a>>,
}

#[derive(Debug, serde::Serialize)]
struct SsoButton<'a> {
    label: &'a str,
    url: &'static str,
}

async fn options(State(auth): State<Auth>) -> Response {
    let settings = auth.settings();
    let sso = settings.oidc.as_ref().map(|o| SsoButton {
        label: &o.spec.label,
        url: "/api/oidc/login",
    });
    (routes::no_store(), Json(Options { sso })).into_response()
}

impl Auth {
    fn oidc(&self) -> Result<Arc<oidc::Oidc>, Refusal> {
        self.settings()
            .oidc
            .clone()
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "single sign-on is not configured"))
    }

    fn sso_cookie(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{SSO_COOKIE}={value}; HttpOnly; SameSite=Lax; Path={SSO_COOKIE_PATH}; Max-Age={}{}",
            max_age.as_secs(),
            if self.0.https { "; Secure" } else { "" }
        )
    }

    /// Whether the user's session was opened through the provider.
    fn sso_logout_pending(user: &CurrentUser) -> bool {
        matches!(user.via, Via::Session { sso: Some(_), .. })
    }

    /// After a single sign-on user logs out: where the browser ends its
    /// session at the provider too.
    pub(super) fn sso_logout_url(&self, user: &CurrentUser) -> Option<String> {
        if !Self::sso_logout_pending(user) {
            return None;
        }
        self.settings().oidc.clone()?.logout_url()
    }
}

/// A redirect (303) with cookies.
fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refused(error: &oidc::SsoError) -> String {
    format!("/console/?sso_error={}", error.code())
}

async fn begin(State(auth): State<Auth>, ClientIp(client): ClientIp) -> Result<Response, Refusal> {
    let oidc = auth.oidc()?;
    match oidc.begin().await {
        Ok(started) => {
            let cookie = auth.sso_cookie(&started.binding, Duration::from_secs(600));
            Ok(redirect(&started.url, &[cookie]))
        }
        Err(e) => {
            tracing::warn!(error = %e, client = ?client, "single sign-on could not begin");
            Ok(redirect(&refused(&e), &[]))
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(auth): State<Auth>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Refusal> {
    let oidc = auth.oidc()?;
    let clear = auth.sso_cookie("", Duration::ZERO);
    let query = query.ok().map(|Query(q)| q);
    let fits = |v: &Option<String>| v.as_ref().is_none_or(|v| v.len() <= MAX_CALLBACK_VALUE);
    let finished = match query {
        Some(q) if fits(&q.state) && fits(&q.code) => match &q.state {
            Some(state) => {
                oidc.finish(
                    state,
                    q.code.as_deref(),
                    q.error.as_deref(),
                    cookie(&headers, SSO_COOKIE),
                )
                .await
            }
            None => Err(oidc::SsoError::State),
        },
        _ => Err(oidc::SsoError::State),
    };
    let identity = match finished {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(reason = %e, client = ?client, "console single sign-on refused");
            return Ok(redirect(&refused(&e), &[clear]));
        }
    };
    let login = auth.open_session(
        &identity.name,
        identity.grant.role,
        oidc::fingerprint(&oidc.spec),
        Some(identity.groups),
    )?;
    tracing::info!(user = %login.user, role = %login.role, client = ?client, "console login through single sign-on");
    Ok(redirect("/console/", &[login.cookie, clear]))
}
