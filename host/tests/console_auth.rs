//! The console's authentication on a real engine's admin address, over
//! loopback: logins, sessions and their CSRF tokens, bearer tokens, the
//! login rate limit, the metrics token, HTTPS with a generated certificate,
//! users changing on reload, and a user added with `izhub user add`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use izhub::admin::auth::{self, Auth, ClientAddr, CurrentUser, Refusal, Role};
use izhub::serve::{self, Running, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery";

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// `izhub_session=...` from Set-Cookie, ready for a Cookie header.
    fn session_cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_string()
    }
}

/// A request written on `stream` with `Connection: close`; the answer read to its end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    if let Some(body) = body {
        request += &format!("Content-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    request += body.unwrap_or("");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, method, path, headers, body).await
}

async fn login(addr: SocketAddr, user: &str, password: &str) -> Answer {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    http(
        addr,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .await
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `[admin]` with three users: ana (operator), vic (viewer of route vxu
/// only) and bot (viewer with a bearer token), and one route.
fn config_text(admin_extra: &str, hash: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
{admin_extra}

[[admin.users]]
name = "ana"
role = "operator"
password_hash = "{hash}"

[[admin.users]]
name = "vic"
role = "viewer"
password_hash = "{hash}"
routes = ["vxu"]

[[admin.users]]
name = "bot"
role = "viewer"
password_hash = "{hash}"
token_sha256 = "{token}"

[destinations.wa]
mllp = "127.0.0.1:9"

[[routes]]
name = "vxu"
destinations = ["wa"]
"#,
        token = sha256_hex("bot-token-0123456789")
    )
}

fn hash() -> String {
    auth::hash_password(PASSWORD).unwrap()
}

/// An engine started from `text` written in `dir`.
async fn engine(dir: &Path, text: &str, watch: bool) -> Running {
    let path = dir.join("izhub.toml");
    std::fs::write(&path, text).unwrap();
    let config = izhub::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let opts = ServeOptions {
        watch: watch.then(|| Duration::from_millis(50)),
        ..ServeOptions::default()
    };
    serve::start_with(&config, opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_csrf_and_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let running = engine(dir.path(), &config_text("", &hash()), false).await;
    let admin = running.admin.unwrap();

    let anonymous = http(admin, "GET", "/api/me", &[], None).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.json()["error"].is_string(), "{anonymous:?}");

    let wrong = login(admin, "ana", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "wrong user name or password");
    assert!(wrong.header("set-cookie").is_none());
    // An unknown user gets the same answer.
    let unknown = login(admin, "nobody", PASSWORD).await;
    assert_eq!((unknown.status, unknown.body), (401, wrong.body));

    let ok = login(admin, "ana", PASSWORD).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let set = ok.header("set-cookie").unwrap();
    assert!(set.starts_with("izhub_session="), "{set}");
    assert!(set.contains("; HttpOnly; SameSite=Strict; Path=/"), "{set}");
    assert!(set.contains("Max-Age=28800"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let body = ok.json();
    assert_eq!(body["user"], "ana");
    assert_eq!(body["role"], "operator");
    let csrf = body["csrf"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    let cookie = ok.session_cookie();

    let me = http(admin, "GET", "/api/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.header("cache-control"), Some("no-store"));
    let me = me.json();
    assert_eq!(me["user"], "ana");
    assert_eq!(me["csrf"], csrf.as_str());
    assert!(
        me["routes"].is_null() && me["destinations"].is_null(),
        "{me}"
    );

    // A user limited to routes sees the limit.
    let vic = login(admin, "vic", PASSWORD).await;
    let vic_me = http(
        admin,
        "GET",
        "/api/me",
        &[("Cookie", &vic.session_cookie())],
        None,
    )
    .await;
    assert_eq!(vic_me.json()["role"], "viewer");
    assert_eq!(vic_me.json()["routes"], serde_json::json!(["vxu"]));

    // Logging out changes state: it needs the session's CSRF token.
    let no_csrf = http(admin, "POST", "/api/logout", &[("Cookie", &cookie)], None).await;
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    assert!(
        no_csrf.json()["error"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );
    let other_csrf = vic.json()["csrf"].as_str().unwrap().to_string();
    let wrong_csrf = http(
        admin,
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &other_csrf)],
        None,
    )
    .await;
    assert_eq!(wrong_csrf.status, 403);
    let out = http(
        admin,
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = http(admin, "GET", "/api/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(after.status, 401);
    // A made-up session is no session.
    let forged = format!("izhub_session={}", "ab".repeat(32));
    assert_eq!(
        http(admin, "GET", "/api/me", &[("Cookie", &forged)], None)
            .await
            .status,
        401
    );

    // A bearer token needs no CSRF token, and has none.
    let bearer = [("Authorization", "Bearer bot-token-0123456789")];
    let bot = http(admin, "GET", "/api/me", &bearer, None).await;
    assert_eq!(bot.status, 200, "{bot:?}");
    assert_eq!(bot.json()["user"], "bot");
    assert!(bot.json()["csrf"].is_null());
    let bot_out = http(admin, "POST", "/api/logout", &bearer, None).await;
    assert_eq!(bot_out.status, 200, "{bot_out:?}");
    let bad = http(
        admin,
        "GET",
        "/api/me",
        &[("Authorization", "Bearer bot-token-0123456788")],
        None,
    )
    .await;
    assert_eq!(bad.status, 401);

    // A login must be JSON (a cross-site form cannot send it).
    let form = http(
        admin,
        "POST",
        "/api/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&format!("user=ana&password={PASSWORD}")),
    )
    .await;
    assert_eq!(form.status, 415, "{form:?}");
    assert!(form.json()["error"].is_string());

    // Probes stay open without a metrics token.
    assert_eq!(http(admin, "GET", "/metrics", &[], None).await.status, 200);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failed_logins_a_minute_then_429() {
    let dir = tempfile::tempdir().unwrap();
    let running = engine(dir.path(), &config_text("", &hash()), false).await;
    let admin = running.admin.unwrap();
    for i in 0..10 {
        let a = login(admin, "ana", &format!("guess {i}")).await;
        assert_eq!(a.status, 401, "attempt {i}: {a:?}");
    }
    // The right password too is refused now, saying when to come back.
    let limited = login(admin, "ana", PASSWORD).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(limited.json()["error"].is_string());
    // Sessions opened before go on.
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_guards_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("metrics_token_sha256 = \"{}\"", sha256_hex("scrape-me"));
    let running = engine(dir.path(), &config_text(&extra, &hash()), false).await;
    let admin = running.admin.unwrap();
    for path in ["/metrics", "/healthz"] {
        let open = http(admin, "GET", path, &[], None).await;
        assert_eq!(open.status, 401, "{path}: {open:?}");
        assert_eq!(open.header("www-authenticate"), Some("Bearer"));
        let wrong = http(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer scrape-you")],
            None,
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");
        // A user's token is not the metrics token.
        let user = http(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer bot-token-0123456789")],
            None,
        )
        .await;
        assert_eq!(user.status, 401, "{path}");
        let ok = http(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer scrape-me")],
            None,
        )
        .await;
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
    }
    let metrics = http(
        admin,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer scrape-me")],
        None,
    )
    .await;
    assert!(metrics.body.contains("# EOF"), "{}", metrics.body);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_the_admin_address() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("admin.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("admin.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let extra = "[admin.tls]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n";
    // [admin.tls] is a table: the users' entries follow it.
    let running = engine(dir.path(), &config_text(extra, &hash()), false).await;
    let admin = running.admin.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let https = |method: &'static str,
                 path: &'static str,
                 headers: Vec<(&'static str, String)>,
                 body: Option<String>| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            exchange(tls, method, path, &headers, body.as_deref()).await
        }
    };
    let body = serde_json::json!({ "user": "ana", "password": PASSWORD }).to_string();
    let ok = https(
        "POST",
        "/api/login",
        vec![("Content-Type", "application/json".into())],
        Some(body),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let set = ok.header("set-cookie").unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let me = https(
        "GET",
        "/api/me",
        vec![("Cookie", ok.session_cookie())],
        None,
    )
    .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"], "ana");
    let health = https("GET", "/healthz", vec![], None).await;
    assert_eq!(health.status, 200);

    // Plain HTTP on the HTTPS address gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(admin).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_change_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let hash = hash();
    let running = engine(dir.path(), &config_text("", &hash), true).await;
    let admin = running.admin.unwrap();
    let ana = login(admin, "ana", PASSWORD).await.session_cookie();
    let vic = login(admin, "vic", PASSWORD).await.session_cookie();
    // Ana is removed and vic becomes an admin of every route.
    let text = config_text("", &hash)
        .replace("name = \"ana\"", "name = \"ann\"")
        .replace(
            "name = \"vic\"\nrole = \"viewer\"",
            "name = \"vic\"\nrole = \"admin\"",
        )
        .replace("routes = [\"vxu\"]\n", "");
    let path = dir.path().join("izhub.toml");
    let tmp = dir.path().join("izhub.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let me = http(admin, "GET", "/api/me", &[("Cookie", &ana)], None).await;
        if me.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ana's session outlived her removal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let me = http(admin, "GET", "/api/me", &[("Cookie", &vic)], None).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["role"], "admin");
    assert!(me.json()["routes"].is_null());
    assert_eq!(login(admin, "ann", PASSWORD).await.status, 200);
    running.stop().await;
}

/// What a console handler looks like: it takes a `CurrentUser` and
/// requires a role.
async fn act(user: CurrentUser) -> Result<String, Refusal> {
    user.require(Role::Operator)?;
    Ok(format!("done by {}", user.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_take_the_current_user_and_require_roles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, config_text("", &hash())).unwrap();
    let config = izhub::config::load(&path).unwrap();
    let auth = Auth::new(&config.admin_access, false);
    let app: Router = Router::new()
        .route("/api/act", post(act))
        .merge(auth::router())
        .with_state(auth);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            socket,
            app.into_make_service_with_connect_info::<ClientAddr>(),
        )
        .await
    });

    let session = |answer: Answer| {
        let csrf = answer.json()["csrf"].as_str().unwrap().to_string();
        (answer.session_cookie(), csrf)
    };
    let (ana, ana_csrf) = session(login(addr, "ana", PASSWORD).await);
    let (vic, vic_csrf) = session(login(addr, "vic", PASSWORD).await);
    let done = http(
        addr,
        "POST",
        "/api/act",
        &[("Cookie", &ana), ("X-CSRF-Token", &ana_csrf)],
        None,
    )
    .await;
    assert_eq!((done.status, done.body.as_str()), (200, "done by ana"));
    let viewer = http(
        addr,
        "POST",
        "/api/act",
        &[("Cookie", &vic), ("X-CSRF-Token", &vic_csrf)],
        None,
    )
    .await;
    assert_eq!(viewer.status, 403, "{viewer:?}");
    assert_eq!(
        viewer.json()["error"],
        "this needs the operator role; vic is viewer"
    );
    let no_csrf = http(addr, "POST", "/api/act", &[("Cookie", &ana)], None).await;
    assert_eq!(no_csrf.status, 403);
    let nobody = http(addr, "POST", "/api/act", &[], None).await;
    assert_eq!(nobody.status, 401);
    let bot = http(
        addr,
        "POST",
        "/api/act",
        &[("Authorization", "Bearer bot-token-0123456789")],
        None,
    )
    .await;
    assert_eq!(bot.status, 403, "bot is a viewer: {bot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_on_the_command_line_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        "# the operator's file\n[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .unwrap();
    let add = |name: &str, password: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
            .args([
                "user",
                "add",
                name,
                "--role",
                "admin",
                "--password-stdin",
                "--config",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add("root.admin", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = add("root.admin", "another password");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a user 'root.admin'"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# the operator's file\n"), "{text}");
    assert!(!text.contains(PASSWORD));

    let running = engine(dir.path(), &text, false).await;
    let admin = running.admin.unwrap();
    let ok = login(admin, "root.admin", PASSWORD).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["role"], "admin");
    running.stop().await;
}
