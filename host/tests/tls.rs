//! MLLP over TLS: a listener with mutual TLS whose client certificates name
//! the sender, and a destination that verifies the IIS; certificates are
//! generated for the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

mod common;

use std::path::Path;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA that issues server and client certificates into `dir`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A CA in `dir/ca.pem` that has issued `engine` (for localhost) and
    /// `iis` (for iis.test) certificates there.
    fn with_engine_and_iis(dir: &Path) -> Ca {
        let ca = Ca::new("izhub test CA");
        ca.write(dir, "ca.pem");
        ca.issue(dir, "engine", "engine", &["localhost"]);
        ca.issue(dir, "iis", "iis", &["iis.test"]);
        ca
    }

    fn write(&self, dir: &Path, file: &str) {
        std::fs::write(dir.join(file), self.issuer.pem()).unwrap();
    }

    /// Writes `NAME.pem` and `NAME.key`: a certificate with CN `cn` for `sans`.
    fn issue(&self, dir: &Path, name: &str, cn: &str, sans: &[&str]) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_in_and_tls_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::with_engine_and_iis(d);
    ca.issue(d, "clinic", "CLINIC-A", &[]);
    let stranger = Ca::new("someone else");
    stranger.issue(d, "stranger", "CLINIC-A", &[]);

    // The IIS speaks MLLP over TLS.
    let iis_tls = izhub::tls::server_config(&d.join("iis.pem"), &d.join("iis.key"), None).unwrap();
    let sim = start_sim(izhub::sim::SimOptions {
        tls: Some(iis_tls),
        ..sim_named("MAIIS")
    })
    .await;

    let path = d.join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            r#"[listeners.ehr]
listen = "127.0.0.1:0"
[listeners.ehr.tls]
cert = "engine.pem"
key = "engine.key"
client_ca = "ca.pem"

[destinations.ma]
mllp = "{}"
[destinations.ma.tls]
ca = "ca.pem"
server_name = "iis.test"

[[routes]]
name = "r"
destinations = ["ma"]
"#,
            sim.addr
        ),
    )
    .unwrap();
    let engine = start_engine(&path).await;
    let addr = engine.listeners["ehr"].to_string();
    let client_tls = |cert: Option<&str>| {
        let client = cert.map(|n| (d.join(format!("{n}.pem")), d.join(format!("{n}.key"))));
        izhub::tls::DestinationTls::load(
            &d.join("ca.pem"),
            "localhost",
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap()
    };
    let nist = |id: &str, sender: &str| {
        with_msh(
            &with_msh(
                &sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7"),
                10,
                id,
            ),
            4,
            sender,
        )
    };

    // The clinic's certificate: accepted, delivered to the IIS over TLS.
    let mut c =
        izhub::mllp::MllpClient::connect_tls(&addr, TIMEOUT, 1 << 20, &client_tls(Some("clinic")))
            .await
            .unwrap();
    let answer = c
        .exchange(nist("TLS-1", "CLINIC-A").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        msa(&answer),
        ("AA".into(), "TLS-1".into()),
        "{:?}",
        segments(&answer)
    );
    assert_eq!(sim.state.count("TLS-1"), 1);
    // The same certificate cannot speak for another facility.
    let answer = c
        .exchange(nist("TLS-2", "OTHER-CLINIC").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.contains("is not one the client certificate 'CLINIC-A' may send for")),
        "{segs:?}"
    );
    assert_eq!(sim.state.count("TLS-2"), 0);

    // No client certificate, or one from another CA: refused.
    for cert in [None, Some("stranger")] {
        let refused =
            match izhub::mllp::MllpClient::connect_tls(&addr, TIMEOUT, 1 << 20, &client_tls(cert))
                .await
            {
                Err(_) => true,
                // TLS 1.3 may finish the client side before the server refuses.
                Ok(mut c) => c
                    .exchange(nist("TLS-X", "CLINIC-A").as_bytes(), TIMEOUT)
                    .await
                    .is_err(),
            };
        assert!(refused, "client certificate {cert:?} must be refused");
    }
    // Plain TCP to a TLS listener gets nothing.
    let mut plain = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    assert!(
        plain
            .exchange(
                nist("TLS-P", "CLINIC-A").as_bytes(),
                std::time::Duration::from_secs(2)
            )
            .await
            .is_err()
    );
    assert_eq!(sim.state.count("TLS-X") + sim.state.count("TLS-P"), 0);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_over_https_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Ca::with_engine_and_iis(d);
    // The IIS answers SOAP over HTTPS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let iis_addr = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(izhub::sim::SimState::default());
    let token = tokio_util::sync::CancellationToken::new();
    let iis_tls = izhub::tls::server_config(&d.join("iis.pem"), &d.join("iis.key"), None).unwrap();
    let opts = izhub::sim::SimOptions {
        tls: Some(iis_tls),
        ..sim_named("MAIIS")
    };
    tokio::spawn(izhub::sim::run_soap(
        listener,
        opts,
        Default::default(),
        state.clone(),
        token.clone(),
    ));

    let path = d.join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            "[listeners.soap]\nlisten = \"127.0.0.1:0\"\nprotocol = \"soap\"\n[listeners.soap.tls]\ncert = \"engine.pem\"\nkey = \"engine.key\"\n\n[destinations.ma]\nsoap = \"https://{iis_addr}/\"\nusername = \"izhub\"\npassword_env = \"IZHUB_TEST_SOAP_PASSWORD\"\n[destinations.ma.tls]\nca = \"ca.pem\"\nserver_name = \"iis.test\"\n\n[[routes]]\nname = \"r\"\ndestinations = [\"ma\"]\n"
        ),
    )
    .unwrap();
    // SAFETY: set before any thread of this test reads the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("IZHUB_TEST_SOAP_PASSWORD", "secret")
    };
    let engine = start_engine(&path).await;
    let tls = izhub::tls::DestinationTls::load(&d.join("ca.pem"), "localhost", None).unwrap();
    let target = izhub::soap::client::SoapTarget {
        url: format!("https://{}/", engine.listeners["soap"]),
        username: "clinic".into(),
        password: "any".into(),
        password_inline: false,
        facility_id: "CLINIC-A".into(),
        tls: Some(tls),
    };
    let msg = with_msh(
        &sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7"),
        10,
        "HTTPS-1",
    );
    let answer = izhub::soap::client::submit(&target, &msg, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        msa(answer.as_bytes()),
        ("AA".into(), "HTTPS-1".into()),
        "{answer}"
    );
    assert_eq!(state.count("HTTPS-1"), 1, "delivered to the IIS over HTTPS");
    // Plain HTTP to the HTTPS endpoint gets no SOAP answer.
    let plain = izhub::soap::client::SoapTarget {
        url: target.url.replace("https://", "http://"),
        tls: None,
        ..target
    };
    assert!(
        izhub::soap::client::submit(&plain, &msg, std::time::Duration::from_secs(3))
            .await
            .is_err()
    );
    token.cancel();
    engine.stop().await;
}
