//! The CDC WSDL SOAP transport, end to end: an EHR submitting by SOAP, the
//! engine delivering by SOAP, MLLP in and SOAP out, and the WSDL's faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use izhub::soap::client::{SoapError, SoapTarget, connectivity_test, submit};
use izhub::soap::{Fault, connectivity_request, submit_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct SoapSim {
    addr: std::net::SocketAddr,
    state: Arc<izhub::sim::SimState>,
    _token: CancellationToken,
}

async fn soap_sim(users: &[(&str, &str)]) -> SoapSim {
    soap_sim_with(users, sim_named("MAIIS")).await
}

async fn soap_sim_with(users: &[(&str, &str)], opts: izhub::sim::SimOptions) -> SoapSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(izhub::sim::SimState::default());
    let token = CancellationToken::new();
    let users: BTreeMap<String, String> = users
        .iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect();
    tokio::spawn(izhub::sim::run_soap(
        listener,
        opts,
        users,
        state.clone(),
        token.clone(),
    ));
    SoapSim {
        addr,
        state,
        _token: token,
    }
}

fn target(addr: &str, path: &str, user: &str, password: &str) -> SoapTarget {
    SoapTarget {
        url: format!("http://{addr}{path}"),
        username: user.into(),
        password: password.into(),
        password_inline: false,
        facility_id: "CLINIC-A".into(),
        tls: None,
    }
}

async fn engine(sim: &SoapSim, sim_password: &str) -> (izhub::serve::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            r#"[listeners.mllp]
listen = "127.0.0.1:0"

[listeners.soap]
listen = "127.0.0.1:0"
protocol = "soap"
soap_path = "/iis"
max_frame_bytes = 8192
[listeners.soap.soap_users]
clinic = "clinic-secret"

[destinations.ma-soap]
soap = "http://{}/"
username = "izhub"
password = "{sim_password}"
facility_id = "HIE01"
answer_timeout_ms = 2000

[[routes]]
name = "vxu"
destinations = ["ma-soap"]
"#,
            sim.addr
        ),
    )
    .unwrap();
    // It holds passwords: readable by its owner only, or it is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = izhub::config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("holds passwords but other users can read it (mode 644)"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let engine = start_engine(&path).await;
    (engine, dir)
}

fn nist(id: &str) -> String {
    with_msh(
        &sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7"),
        10,
        id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_in_soap_out_and_mllp_in_soap_out() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    let (engine, _dir) = engine(&sim, "sim-secret").await;
    let soap_addr = engine.listeners["soap"].to_string();
    let ehr = target(&soap_addr, "/iis", "clinic", "clinic-secret");
    // connectivityTest is answered by the engine's endpoint.
    assert_eq!(
        connectivity_test(&ehr, "hello", Duration::from_secs(5))
            .await
            .unwrap(),
        "hello"
    );
    // EHR → SOAP → engine → SOAP → IIS.
    let answer = submit(&ehr, &nist("SOAP-1"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        msa(answer.as_bytes()),
        ("AA".into(), "SOAP-1".into()),
        "{answer}"
    );
    assert!(
        answer.contains("|MAIIS|MAIIS|"),
        "the IIS's own answer comes back: {answer}"
    );
    // The HL7 crossed two XML hops with its carriage returns intact.
    let delivered = sim.state.message("SOAP-1").unwrap();
    assert_eq!(delivered, izhub::hl7::normalize_segments(&nist("SOAP-1")));
    // MLLP → engine → SOAP → IIS.
    let mut client =
        izhub::mllp::MllpClient::connect(&engine.listeners["mllp"].to_string(), TIMEOUT, 1 << 20)
            .await
            .unwrap();
    let answer = client
        .exchange(nist("MLLP-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer), ("AA".into(), "MLLP-1".into()));
    assert_eq!(sim.state.count("MLLP-1"), 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soap_response_naming_another_message_is_refused() {
    // The IIS answers every second request with the answer to the one before.
    let sim = soap_sim_with(
        &[("izhub", "sim-secret")],
        izhub::sim::SimOptions {
            wire: izhub::sim::Wire {
                wrong_id_every: 2,
                ..Default::default()
            },
            ..sim_named("MAIIS")
        },
    )
    .await;
    let (engine, _dir) = engine(&sim, "sim-secret").await;
    let mut client =
        izhub::mllp::MllpClient::connect(&engine.listeners["mllp"].to_string(), TIMEOUT, 1 << 20)
            .await
            .unwrap();
    let first = client
        .exchange(nist("S-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&first), ("AA".into(), "S-1".into()));
    let second = client
        .exchange(nist("S-2").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&second);
    assert_eq!(msa(&second), ("AE".into(), "S-2".into()), "{text}");
    assert!(text.contains("answered another message"), "{text}");
    assert!(
        !text.contains("|MAIIS|"),
        "S-1's answer must not come back: {text}"
    );
    assert_eq!(sim.state.count("S-2"), 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wsdl_faults() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    // The engine holds the wrong password for the IIS.
    let (engine, _dir) = engine(&sim, "wrong").await;
    let soap_addr = engine.listeners["soap"].to_string();
    // A clinic with the wrong password: SecurityFault, and the message goes nowhere.
    let bad_user = target(&soap_addr, "/iis", "clinic", "guess");
    match submit(&bad_user, &nist("F-1"), Duration::from_secs(5)).await {
        Err(SoapError::Fault(Fault::Security(_))) => {}
        other => panic!("expected SecurityFault, got {other:?}"),
    }
    assert_eq!(sim.state.received(), 0);
    // Too large for the listener: MessageTooLargeFault.
    let ehr = target(&soap_addr, "/iis", "clinic", "clinic-secret");
    let big = format!("{}\rNTE|1||{}", nist("F-2").trim_end(), "x".repeat(20_000));
    match submit(&ehr, &big, Duration::from_secs(5)).await {
        Err(SoapError::Fault(Fault::MessageTooLarge { max, .. })) => assert!(max > 0),
        other => panic!("expected MessageTooLargeFault, got {other:?}"),
    }
    // The IIS refuses the engine's credentials: the EHR gets AE 207 saying so.
    let answer = submit(&ehr, &nist("F-3"), Duration::from_secs(5))
        .await
        .unwrap();
    let segs = segments(answer.as_bytes());
    assert_eq!(msa(answer.as_bytes()).0, "AE", "{segs:?}");
    assert!(segs.iter().any(|s| s.contains("SecurityFault")), "{segs:?}");
    // An operation the WSDL does not have, and a body that is not XML.
    let http = |body: String| {
        let addr = soap_addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let req = format!(
                "POST /iis HTTP/1.1\r\nHost: x\r\ncontent-type: application/soap+xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let unsupported = submit_request("clinic", "clinic-secret", "X", "MSH|")
        .replace("submitSingleMessage", "deleteAllRecords");
    let out = http(unsupported).await;
    assert!(out.contains("UnsupportedOperationFault"), "{out}");
    let out = http("this is not XML".into()).await;
    assert!(
        out.starts_with("HTTP/1.1 500") && out.contains("UnknownFault"),
        "{out}"
    );
    engine.stop().await;
}

/// An engine with an admin endpoint and one SOAP listener (`soap`, path
/// `/iis`) delivering to `sim`: `listener_extra` adds keys to the listener,
/// `users` lines to its `soap_users`.
async fn limited_engine(
    sim: &SoapSim,
    listener_extra: &str,
    users: &str,
) -> (izhub::serve::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            r#"[admin]
listen = "127.0.0.1:0"

[listeners.soap]
listen = "127.0.0.1:0"
protocol = "soap"
soap_path = "/iis"
{listener_extra}
[listeners.soap.soap_users]
{users}

[destinations.ma-soap]
soap = "http://{}/"
username = "izhub"
password = "sim-secret"
facility_id = "HIE01"

[[routes]]
name = "vxu"
destinations = ["ma-soap"]
"#,
            sim.addr
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let engine = start_engine(&path).await;
    (engine, dir)
}

/// Sends one SOAP request on an open connection and keeps it open.
async fn send_request(s: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let req = format!(
        "POST /iis HTTP/1.1\r\nHost: x\r\ncontent-type: application/soap+xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await
}

/// Reads one HTTP response (head and a content-length body).
async fn read_response(s: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned());
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A connectivity test on an open connection, answered within `within`.
async fn ping(s: &mut TcpStream, within: Duration) -> std::io::Result<String> {
    tokio::time::timeout(within, async {
        send_request(s, &connectivity_request("ping")).await?;
        read_response(s).await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Reads until the server closes the connection; what it sent meanwhile, or
/// `None` if it is still open after `limit`.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&all).into_owned())
}

async fn connect_to(engine: &izhub::serve::Running) -> TcpStream {
    TcpStream::connect(engine.listeners["soap"]).await.unwrap()
}

/// The value of one sample in the engine's /metrics.
async fn metric(engine: &izhub::serve::Running, sample: &str) -> Option<f64> {
    let text = http_get(engine.admin.unwrap(), "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for_metric(engine: &izhub::serve::Running, sample: &str, value: f64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = metric(engine, sample).await;
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {now:?}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const OPEN_USER: &str = "clinic = \"clinic-secret\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_hold_back_the_next_one_while_the_others_work() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    let (engine, _dir) = limited_engine(&sim, "max_connections = 2", OPEN_USER).await;
    let mut a = connect_to(&engine).await;
    let mut b = connect_to(&engine).await;
    for s in [&mut a, &mut b] {
        let out = ping(s, TIMEOUT).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    wait_for_metric(&engine, "izhub_connections{listener=\"soap\"}", 2.0).await;
    // A third connection is not taken while two are open.
    let mut c = connect_to(&engine).await;
    send_request(&mut c, &connectivity_request("third"))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), read_response(&mut c))
            .await
            .is_err(),
        "the third connection was served beyond max_connections"
    );
    // The two open ones keep working.
    let out = ping(&mut a, TIMEOUT).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Once one closes, the waiting one is served.
    drop(b);
    let out = tokio::time::timeout(TIMEOUT, read_response(&mut c))
        .await
        .expect("the waiting connection is served once a place is free")
        .unwrap();
    assert!(out.contains("third"), "{out}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    let (engine, _dir) = limited_engine(&sim, "max_connections_per_peer = 2", OPEN_USER).await;
    let mut a = connect_to(&engine).await;
    let mut b = connect_to(&engine).await;
    for s in [&mut a, &mut b] {
        ping(s, TIMEOUT).await.unwrap();
    }
    // A third from the same address is closed without an answer, and counted.
    let mut c = connect_to(&engine).await;
    assert!(ping(&mut c, TIMEOUT).await.is_err());
    wait_for_metric(
        &engine,
        "izhub_refused_connections_total{listener=\"soap\"}",
        1.0,
    )
    .await;
    // The first two still work.
    ping(&mut b, TIMEOUT).await.unwrap();
    // Once one closes, a new one is served.
    drop(a);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut d = connect_to(&engine).await;
        if ping(&mut d, TIMEOUT).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    let (engine, _dir) = limited_engine(
        &sim,
        "idle_timeout_secs = 1\nrequest_timeout_secs = 30",
        OPEN_USER,
    )
    .await;
    // Idle after a request, on a kept-alive connection.
    let mut used = connect_to(&engine).await;
    ping(&mut used, TIMEOUT).await.unwrap();
    let since = Instant::now();
    // Idle from the start.
    let mut silent = connect_to(&engine).await;
    let out = until_closed(&mut used, TIMEOUT).await;
    assert_eq!(out.as_deref(), Some(""), "the idle connection stays open");
    assert!(since.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        until_closed(&mut silent, TIMEOUT).await.as_deref(),
        Some("")
    );
    wait_for_metric(&engine, "izhub_connections{listener=\"soap\"}", 0.0).await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_cut_after_request_timeout() {
    // The IIS takes 3 s to answer.
    let sim = soap_sim_with(
        &[("izhub", "sim-secret")],
        izhub::sim::SimOptions {
            delay: Duration::from_secs(3),
            ..sim_named("MAIIS")
        },
    )
    .await;
    let (engine, _dir) = limited_engine(
        &sim,
        "idle_timeout_secs = 600\nrequest_timeout_secs = 1",
        OPEN_USER,
    )
    .await;
    // Headers sent, the body never finished: a fault, then the connection closes.
    let mut s = connect_to(&engine).await;
    let started = Instant::now();
    s.write_all(b"POST /iis HTTP/1.1\r\nHost: x\r\ncontent-type: application/soap+xml\r\ncontent-length: 500\r\n\r\n<soap:Envelope")
        .await
        .unwrap();
    let out = until_closed(&mut s, TIMEOUT)
        .await
        .expect("the unfinished request is cut");
    assert!(
        out.starts_with("HTTP/1.1 500") && out.contains("UnknownFault"),
        "{out}"
    );
    assert!(out.contains("within 1 s"), "{out}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Headers never finished: closed.
    let mut s = connect_to(&engine).await;
    s.write_all(b"POST /iis HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut s, TIMEOUT).await.as_deref(), Some(""));
    // An answer not ready in time: UnknownFault (the message is still
    // handled to the end).
    let ehr = target(
        &engine.listeners["soap"].to_string(),
        "/iis",
        "clinic",
        "clinic-secret",
    );
    let started = Instant::now();
    match submit(&ehr, &nist("SLOW-1"), TIMEOUT).await {
        Err(SoapError::Fault(Fault::Unknown(why))) => assert!(why.contains("within 1 s"), "{why}"),
        other => panic!("expected UnknownFault, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let deadline = Instant::now() + TIMEOUT;
    while sim.state.count("SLOW-1") != 1 {
        assert!(
            Instant::now() < deadline,
            "the message never reached the IIS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_bound_to_facilities_sends_only_for_them() {
    let sim = soap_sim(&[("izhub", "sim-secret")]).await;
    let (engine, _dir) = limited_engine(
        &sim,
        "",
        "ehr1 = { password = \"ehr1-secret\", facilities = [\"CLINIC-A\"] }",
    )
    .await;
    let ehr = target(
        &engine.listeners["soap"].to_string(),
        "/iis",
        "ehr1",
        "ehr1-secret",
    );
    // For another facility: SecurityFault, and nothing reaches the IIS.
    let other = with_msh(&nist("B-1"), 4, "CLINIC-B");
    match submit(&ehr, &other, TIMEOUT).await {
        Err(SoapError::Fault(Fault::Security(why))) => {
            assert!(why.contains("SOAP user 'ehr1'"), "{why}");
            assert!(why.contains("'CLINIC-B'"), "{why}");
        }
        other => panic!("expected SecurityFault, got {other:?}"),
    }
    assert_eq!(sim.state.received(), 0);
    // For its own facility: delivered and answered.
    let own = with_msh(&nist("A-1"), 4, "CLINIC-A");
    let answer = submit(&ehr, &own, TIMEOUT).await.unwrap();
    assert_eq!(
        msa(answer.as_bytes()),
        ("AA".into(), "A-1".into()),
        "{answer}"
    );
    assert_eq!(sim.state.count("A-1"), 1);
    assert_eq!(sim.state.received(), 1);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_users_not_bound_to_facilities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    let config = |users: &str| {
        format!(
            "[listeners.soap]\nlisten = \"127.0.0.1:0\"\nprotocol = \"soap\"\n[listeners.soap.soap_users]\n{users}\n\n[destinations.mi]\nmllp = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"all\"\ndestinations = [\"mi\"]\n"
        )
    };
    let check = |text: String| {
        let path = path.clone();
        async move {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
                .arg("check")
                .arg("--config")
                .arg(&path)
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, err) = check(config(
        "ehr1 = \"one\"\nehr2 = { password = \"two\", facilities = [\"CLINIC-A\"] }",
    ))
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("SOAP user 'ehr1' is not bound to facilities"),
        "{err}"
    );
    assert!(!err.contains("'ehr2'"), "{err}");
    // An empty list is an error naming the key.
    let (code, err) = check(config("ehr2 = { password = \"two\", facilities = [] }")).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("listeners.soap.soap_users.ehr2.facilities: is empty"),
        "{err}"
    );
}
