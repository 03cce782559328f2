//! The console's authentication on a real engine's admin address, over
//! loopback: logins, sessions and their CSRF tokens, bearer tokens, the
//! login rate limit, the metrics token, HTTPS with a generated certificate,
//! users changing on reload, and a user added with `izhub user add`. Then
//! the console's API on an engine delivering to simulated IIS: the message
//! log, masking and unmasking, route limits, pause and resume, resend,
//! resolve, bulk reprocess, the per-sender report and the audit trail.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Answer, exchange, http, tls_connector_trusting};
use axum::Router;
use axum::routing::post;
use izhub::admin::auth::{self, Auth, ClientAddr, CurrentUser, Refusal, Role};
use izhub::serve::{self, Running, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery";

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

    let other_csrf = vic.json()["csrf"].as_str().unwrap().to_string();
    logging_out_needs_the_sessions_csrf_token(admin, &cookie, &csrf, &other_csrf).await;
    bearer_tokens_and_json_logins(admin).await;
    // Probes stay open without a metrics token.
    assert_eq!(http(admin, "GET", "/metrics", &[], None).await.status, 200);
    running.stop().await;
}

/// Logging out changes state: it needs the session's CSRF token, not
/// another session's; a made-up session is no session.
async fn logging_out_needs_the_sessions_csrf_token(
    admin: SocketAddr,
    cookie: &str,
    csrf: &str,
    other_csrf: &str,
) {
    let no_csrf = http(admin, "POST", "/api/logout", &[("Cookie", cookie)], None).await;
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    assert!(
        no_csrf.json()["error"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );
    let wrong_csrf = http(
        admin,
        "POST",
        "/api/logout",
        &[("Cookie", cookie), ("X-CSRF-Token", other_csrf)],
        None,
    )
    .await;
    assert_eq!(wrong_csrf.status, 403);
    let out = http(
        admin,
        "POST",
        "/api/logout",
        &[("Cookie", cookie), ("X-CSRF-Token", csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = http(admin, "GET", "/api/me", &[("Cookie", cookie)], None).await;
    assert_eq!(after.status, 401);
    // A made-up session is no session.
    let forged = format!("izhub_session={}", "ab".repeat(32));
    assert_eq!(
        http(admin, "GET", "/api/me", &[("Cookie", &forged)], None)
            .await
            .status,
        401
    );
}

/// A bearer token needs no CSRF token, and has none; a login must be JSON
/// (a cross-site form cannot send it).
async fn bearer_tokens_and_json_logins(admin: SocketAddr) {
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

    let connector = tls_connector_trusting(cert.cert.der());
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

// ---- the console's API ----

const OPS_TOKEN: &str = "ops-token-0123456789abcdef";

/// Waits until `f` holds for the JSON at `path` (ana's token), for 10 s.
async fn until(addr: SocketAddr, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let auth = format!("Bearer {OPS_TOKEN}");
    let started = Instant::now();
    loop {
        let a = http(addr, "GET", path, &[("Authorization", &auth)], None).await;
        if a.status == 200 {
            let v = a.json();
            if f(&v) {
                return v;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Answer {
    let auth = format!("Bearer {OPS_TOKEN}");
    http(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_over_a_delivering_engine() {
    let good = crate::common::start_sim(crate::common::sim_named("MIIIS")).await;
    let refusing = crate::common::start_sim(izhub::sim::SimOptions {
        refuse: true,
        ..crate::common::sim_named("ARIIS")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = delivering_config(good.addr, refusing.addr);
    let running = engine(dir.path(), &text, false).await;
    let admin = running.admin.unwrap();
    let mut client = crate::common::connect(&running, "ehr").await;
    for (sender, id) in [
        ("CLINIC-A", "A-1"),
        ("CLINIC-A", "A-2"),
        ("CLINIC-B", "B-1"),
    ] {
        let answer = client
            .exchange(sent(sender, id).as_bytes(), crate::common::TIMEOUT)
            .await
            .unwrap();
        assert_eq!(crate::common::msa(&answer).0, "AA", "{id}");
    }
    let id = masked_until_unmasked(admin).await;
    a_limited_viewer_sees_only_its_route(admin, id).await;
    pause_holds_and_resume_delivers(admin, &mut client, &good.state, id).await;
    relay_mode_offers_no_pause_or_retry(admin, &mut client).await;
    resend_and_resolve(admin, &refusing.state).await;
    bulk_reprocess_links_both_ways(admin, &good.state, id).await;
    reports_quality_and_code_sets(admin).await;
    running.stop().await;
    // The audit entries are in the log for an admin to read.
    let log = izhub::flow::log::MessageLog::open(
        &dir.path().join("data/messages.db"),
        Duration::from_secs(86_400),
        1000,
        None,
    )
    .unwrap();
    let actions: Vec<String> = log
        .audit_entries(None, 100)
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.user, a.action))
        .collect();
    for want in [
        "ana unmask",
        "ana pause",
        "ana resume",
        "ana resend",
        "ana resolve",
        "ana reprocess-filtered",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want}: {actions:?}");
    }
}

/// Two routes in commit mode: `vxu` (CLINIC-A) to an IIS that accepts,
/// `bad` (CLINIC-B) to one that refuses; an operator and a viewer limited
/// to `bad`.
fn delivering_config(good: SocketAddr, refusing: SocketAddr) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[[admin.users]]
name = "ana"
role = "operator"
password_hash = "{hash}"
token_sha256 = "{token}"

[[admin.users]]
name = "vic"
role = "viewer"
password_hash = "{hash}"
routes = ["bad"]

[listeners.ehr]
listen = "127.0.0.1:0"

[store]
path = "journal.db"

[destinations.mi]
mllp = "{good}"
retry_initial_ms = 50

[destinations.ar]
mllp = "{refusing}"

[[routes]]
name = "vxu"
senders = ["CLINIC-A"]
destinations = ["mi"]
ack_mode = "commit"

[[routes]]
name = "bad"
senders = ["CLINIC-B"]
destinations = ["ar"]
ack_mode = "commit"

[destinations.live]
mllp = "{good}"

[[routes]]
name = "direct"
senders = ["CLINIC-C"]
destinations = ["live"]
"#,
        hash = hash(),
        token = sha256_hex(OPS_TOKEN),
    )
}

/// The NIST sample from `sender` with MSH-10 `id`.
fn sent(sender: &str, id: &str) -> String {
    let base = crate::common::sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7");
    crate::common::with_msh(&crate::common::with_msh(&base, 4, sender), 10, id)
}

/// Logged, delivered, searchable by MSH-10; PHI masked until unmasked.
/// A-1's log id.
async fn masked_until_unmasked(admin: SocketAddr) -> i64 {
    let found = until(
        admin,
        "/api/messages?control_id=A-1",
        "A-1 delivered",
        |v| {
            v["items"][0]["status"] == "accepted_with_warnings"
                || v["items"][0]["status"] == "accepted"
        },
    )
    .await;
    let id = found["items"][0]["id"].as_i64().unwrap();
    assert_eq!(found["items"][0]["route"], "vxu");
    assert_ne!(
        found["items"][0]["patient_id"], "D26376273",
        "patient id masked in lists"
    );
    let detail = call(admin, "GET", &format!("/api/messages/{id}"), None)
        .await
        .json();
    assert_eq!(detail["masked"], true);
    assert_eq!(detail["journaled"], true, "commit mode: {detail}");
    assert!(
        !detail["received"].as_str().unwrap().contains("20070706"),
        "birth date masked"
    );
    assert!(
        detail["received"].as_str().unwrap().contains("NIST-IZ")
            || detail["received"].as_str().unwrap().contains("A-1")
    );
    assert!(
        !detail["attempts"].as_array().unwrap().is_empty(),
        "the delivery attempt is logged"
    );
    let open = call(
        admin,
        "GET",
        &format!("/api/messages/{id}?unmask=true"),
        None,
    )
    .await;
    // PHI shown in full is never kept by a browser or a proxy.
    assert_eq!(open.header("Cache-Control"), Some("no-store"));
    let open = open.json();
    assert!(open["received"].as_str().unwrap().contains("20070706"));
    let masked = call(admin, "GET", &format!("/api/messages/{id}"), None).await;
    assert_eq!(masked.header("Cache-Control"), None);
    // The admin address's root leads to the console.
    let root = http(admin, "GET", "/", &[], None).await;
    assert_eq!(root.status, 303, "{root:?}");
    assert_eq!(root.header("Location"), Some("/console/"));
    id
}

/// A viewer limited to route `bad` sees neither vxu's messages nor its row.
async fn a_limited_viewer_sees_only_its_route(admin: SocketAddr, id: i64) {
    let vic = login(admin, "vic", PASSWORD).await;
    let cookie = vic.session_cookie();
    let csrf = vic.json()["csrf"].as_str().unwrap().to_string();
    let as_vic = |method: &'static str, path: String, body: Option<&'static str>| {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        async move {
            http(
                admin,
                method,
                &path,
                &[
                    ("Cookie", &cookie),
                    ("X-CSRF-Token", &csrf),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
            .await
        }
    };
    let a = as_vic("GET", "/api/messages?control_id=A-1".into(), None).await;
    assert_eq!(a.json()["items"].as_array().unwrap().len(), 0, "{}", a.body);
    assert_eq!(
        as_vic("GET", format!("/api/messages/{id}"), None)
            .await
            .status,
        404
    );
    let board = as_vic("GET", "/api/dashboard".into(), None).await.json();
    assert!(
        board["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] == "bad"),
        "{board}"
    );
    let refused = as_vic("POST", format!("/api/messages/{id}/reprocess"), None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        as_vic("GET", "/api/messages?control_id=B-1".into(), None)
            .await
            .json()["items"][0]["id"]
            .is_i64()
    );
}

/// Pause: a new message waits, counted as queued; resume delivers it.
async fn pause_holds_and_resume_delivers(
    admin: SocketAddr,
    client: &mut izhub::mllp::MllpClient,
    good: &izhub::sim::SimState,
    id: i64,
) {
    assert_eq!(
        call(admin, "POST", "/api/destinations/mi/pause", None)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = client
        .exchange(sent("CLINIC-A", "A-3").as_bytes(), crate::common::TIMEOUT)
        .await
        .unwrap();
    assert_eq!(crate::common::msa(&answer).0, "AA");
    until(admin, "/api/dashboard", "A-3 queued while paused", |v| {
        v["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "mi" && d["queued"] == 1 && d["paused"] == true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(good.count("A-3"), 0, "nothing goes out while paused");
    assert_eq!(
        call(admin, "POST", "/api/destinations/mi/resume", None)
            .await
            .status,
        200
    );
    until(admin, "/api/dashboard", "A-3 delivered after resume", |v| {
        v["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "mi" && d["queued"] == 0)
    })
    .await;
    assert_eq!(good.count("A-3"), 1);
    // Retry now on a delivered message: nothing queued to retry.
    assert_eq!(
        call(admin, "POST", &format!("/api/messages/{id}/retry"), None)
            .await
            .status,
        409
    );
}

/// A relay-mode destination has no queue: pausing it, or retrying one of
/// its messages, is refused with 409 and the reason, never answered "ok";
/// its message's detail says it was not journaled.
async fn relay_mode_offers_no_pause_or_retry(
    admin: SocketAddr,
    client: &mut izhub::mllp::MllpClient,
) {
    let answer = client
        .exchange(sent("CLINIC-C", "C-1").as_bytes(), crate::common::TIMEOUT)
        .await
        .unwrap();
    assert_eq!(crate::common::msa(&answer).0, "AA");
    for action in ["pause", "resume", "reset-breaker"] {
        let refused = call(
            admin,
            "POST",
            &format!("/api/destinations/live/{action}"),
            None,
        )
        .await;
        assert_eq!(refused.status, 409, "{action}: {}", refused.body);
        assert!(refused.body.contains("relay-mode"), "{}", refused.body);
    }
    let c = until(admin, "/api/messages?control_id=C-1", "C-1 logged", |v| {
        v["items"][0]["id"].is_i64()
    })
    .await;
    let c_id = c["items"][0]["id"].as_i64().unwrap();
    let detail = call(admin, "GET", &format!("/api/messages/{c_id}"), None)
        .await
        .json();
    assert_eq!(detail["journaled"], false, "{detail}");
    let retry = call(admin, "POST", &format!("/api/messages/{c_id}/retry"), None).await;
    assert_eq!(retry.status, 409, "{}", retry.body);
}

/// The refusing IIS dead-letters B-1 (AR); resend queues it again.
/// Unresolved errors are counted apart and cleared by resolving.
async fn resend_and_resolve(admin: SocketAddr, refusing: &izhub::sim::SimState) {
    let b = until(admin, "/api/messages?control_id=B-1", "B-1 rejected", |v| {
        v["items"][0]["status"] == "rejected_by_iis"
    })
    .await;
    let b_id = b["items"][0]["id"].as_i64().unwrap();
    let before = refusing.count("B-1");
    let resent = call(admin, "POST", &format!("/api/messages/{b_id}/resend"), None).await;
    assert_eq!(resent.status, 200, "{}", resent.body);
    let started = Instant::now();
    while refusing.count("B-1") == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "resend never reached the IIS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unresolved errors: counted apart, cleared by resolving.
    until(admin, "/api/dashboard", "bad has unresolved errors", |v| {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "bad" && r["unresolved_errors"].as_u64() >= Some(1))
    })
    .await;
    let resolved = call(
        admin,
        "POST",
        "/api/errors/resolve",
        Some(r#"{"route":"bad"}"#),
    )
    .await;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    let board = call(admin, "GET", "/api/dashboard", None).await.json();
    let bad = board["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bad")
        .unwrap()
        .clone();
    assert_eq!(bad["unresolved_errors"], 0, "{bad}");
    assert!(
        bad["rejected_by_iis"].as_u64() >= Some(1),
        "totals stay: {bad}"
    );
}

/// Bulk reprocess: a count first, then the real thing; the original and
/// its reprocessing link to each other.
async fn bulk_reprocess_links_both_ways(admin: SocketAddr, good: &izhub::sim::SimState, id: i64) {
    let dry = call(
        admin,
        "POST",
        "/api/reprocess",
        Some(r#"{"filter":{"sender":"CLINIC-A"},"confirm":false}"#),
    )
    .await
    .json();
    assert_eq!(dry["count"], 3, "{dry}");
    let before = good.count("A-1");
    let done = call(
        admin,
        "POST",
        "/api/reprocess",
        Some(r#"{"filter":{"sender":"CLINIC-A"},"confirm":true}"#),
    )
    .await
    .json();
    assert_eq!(done["reprocessed"], 3, "{done}");
    let started = Instant::now();
    while good.count("A-1") == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reprocessed A-1 never reached the IIS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The original and its reprocessing link to each other.
    let linked = until(
        admin,
        &format!("/api/messages/{id}"),
        "A-1 links to its reprocessing",
        |v| {
            v["reprocessed_as"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
    let again = linked["reprocessed_as"][0].as_i64().unwrap();
    assert!(again > id, "{linked}");
    let copy = call(admin, "GET", &format!("/api/messages/{again}"), None)
        .await
        .json();
    assert_eq!(copy["reprocess_of"], id, "{copy}");
    assert_eq!(copy["meta"]["control_id"], "A-1", "{copy}");
}

/// The per-sender report, data quality, the audit trail refused to an
/// operator, and the code sets.
async fn reports_quality_and_code_sets(admin: SocketAddr) {
    let report = call(
        admin,
        "GET",
        "/api/quality/report?sender=CLINIC-B&format=csv",
        None,
    )
    .await;
    assert_eq!(report.status, 200);
    assert!(
        report.body.starts_with("section,id,level,"),
        "{}",
        report.body
    );
    assert!(
        report.body.contains("\r\nblocked,"),
        "B-1 is listed as rejected: {}",
        report.body
    );
    let html = call(admin, "GET", "/api/quality/report?sender=CLINIC-B", None).await;
    assert!(html.body.contains("<h1>Validation report</h1>") && html.body.contains("CLINIC-B"));
    let quality = call(admin, "GET", "/api/quality", None).await.json();
    assert!(
        quality["senders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sender"] == "CLINIC-A" && s["messages"].as_i64() >= Some(3)),
        "{quality}"
    );
    assert_eq!(
        call(admin, "GET", "/api/audit", None).await.status,
        403,
        "the audit trail is for admins"
    );
    let audit = until(admin, "/api/codesets", "codesets", |_| true).await;
    assert!(
        audit.as_array().unwrap().is_empty(),
        "no code sets configured"
    );
}
