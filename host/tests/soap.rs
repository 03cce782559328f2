//! The CDC WSDL SOAP transport, end to end: an EHR submitting by SOAP, the
//! engine delivering by SOAP, MLLP in and SOAP out, and the WSDL's faults.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use izhub::soap::client::{SoapError, SoapTarget, connectivity_test, submit};
use izhub::soap::{Fault, submit_request};
use tokio_util::sync::CancellationToken;

struct SoapSim {
    addr: std::net::SocketAddr,
    state: Arc<izhub::sim::SimState>,
    _token: CancellationToken,
}

async fn soap_sim(users: &[(&str, &str)]) -> SoapSim {
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
        sim_named("MAIIS"),
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
