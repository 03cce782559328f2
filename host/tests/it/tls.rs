//! MLLP over TLS: a listener with mutual TLS whose client certificates name
//! the sender, and a destination that verifies the IIS; certificates are
//! generated for the test.

use std::path::Path;

use crate::common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, DnValue, IsCa, KeyPair,
};

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
        self.issue_params(dir, name, params);
    }

    /// Writes `NAME.pem` and `NAME.key`: a certificate for `params`; returns
    /// its DER.
    fn issue_params(&self, dir: &Path, name: &str, params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
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
    std::fs::write(&path, mutual_tls_config(sim.addr)).unwrap();
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

/// Client certificate parameters whose subject is exactly `attributes`, in
/// order (a repeated type given as `CustomDnType`).
fn client_params(attributes: Vec<(DnType, DnValue)>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    for (ty, value) in attributes {
        params.distinguished_name.push(ty, value);
    }
    params
}

/// One DER element with a short-form length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = u8::try_from(content.len()).unwrap();
    assert!(len < 0x80, "short-form lengths only");
    let mut out = vec![tag, len];
    out.extend_from_slice(content);
    out
}

/// A subjectAltName extension holding one directoryName `CN=cn`:
/// GeneralNames ::= SEQUENCE { [4] Name }, Name being a SEQUENCE of one
/// RDN (a SET) of one AttributeTypeAndValue (id-at-commonName, UTF8String).
fn directory_name_san(cn: &str) -> CustomExtension {
    let attribute = der(
        0x30,
        &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, cn.as_bytes())].concat(),
    );
    let name = der(0x30, &der(0x31, &attribute));
    let general_names = der(0x30, &der(0xa4, &name));
    CustomExtension::from_oid_content(&[2, 5, 29, 17], general_names)
}

/// An engine whose `ehr` listener requires client certificates from the
/// test CA, with a simulated IIS behind it over plain MLLP.
struct Rig {
    dir: tempfile::TempDir,
    sim: Sim,
    engine: izhub::serve::Running,
}

impl Rig {
    /// A directory with the CA (`ca.pem`) and the engine's certificate;
    /// issue the clients' certificates there before [`Rig::start`].
    fn prepare() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::with_engine_and_iis(dir.path());
        (dir, ca)
    }

    /// Starts the engine; `tls_extra` is added to `[listeners.ehr.tls]`.
    async fn start(dir: tempfile::TempDir, tls_extra: &str) -> Rig {
        let sim = start_sim(sim_named("MAIIS")).await;
        let path = dir.path().join("izhub.toml");
        std::fs::write(
            &path,
            format!(
                "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n[listeners.ehr.tls]\ncert = \"engine.pem\"\nkey = \"engine.key\"\nclient_ca = \"ca.pem\"\n{tls_extra}\n\n[destinations.ma]\nmllp = \"{}\"\n\n[[routes]]\nname = \"r\"\ndestinations = [\"ma\"]\n",
                sim.addr
            ),
        )
        .unwrap();
        let engine = start_engine(&path).await;
        Rig { dir, sim, engine }
    }

    /// A connection presenting the client certificate `NAME.pem`.
    async fn client(&self, cert: &str) -> izhub::mllp::MllpClient {
        let d = self.dir.path();
        let (pem, key) = (d.join(format!("{cert}.pem")), d.join(format!("{cert}.key")));
        let tls = izhub::tls::DestinationTls::load(
            &d.join("ca.pem"),
            "localhost",
            Some((pem.as_path(), key.as_path())),
        )
        .unwrap();
        izhub::mllp::MllpClient::connect_tls(
            &self.engine.listeners["ehr"].to_string(),
            TIMEOUT,
            1 << 20,
            &tls,
        )
        .await
        .unwrap()
    }

    /// Sends a VXU with MSH-10 `id` and MSH-4.1 `sender` on `client`;
    /// returns the answer's MSA-1 and segments.
    async fn send(
        client: &mut izhub::mllp::MllpClient,
        id: &str,
        sender: &str,
    ) -> (String, Vec<String>) {
        let message = with_msh(
            &with_msh(
                &sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7"),
                10,
                id,
            ),
            4,
            sender,
        );
        let answer = client.exchange(message.as_bytes(), TIMEOUT).await.unwrap();
        let (code, control) = msa(&answer);
        assert_eq!(control, id, "{:?}", segments(&answer));
        (code, segments(&answer))
    }

    /// Asserts that every message sent with certificate `cert`, on one
    /// connection, is answered AR naming `reason` and never delivered.
    async fn assert_refused(&self, cert: &str, senders: &[&str], reason: &str) {
        let mut client = self.client(cert).await;
        for (i, sender) in senders.iter().enumerate() {
            let id = format!("{cert}-{i}");
            let (code, segs) = Rig::send(&mut client, &id, sender).await;
            assert_eq!(code, "AR", "{segs:?}");
            let expected = format!("the client certificate cannot identify a sender: {reason}");
            assert!(
                segs.iter()
                    .any(|s| s.starts_with("ERR") && s.contains(&expected)),
                "expected ERR naming {expected:?}: {segs:?}"
            );
            assert_eq!(self.sim.state.count(&id), 0, "{id} must not be delivered");
        }
    }

    async fn stop(self) {
        self.engine.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_name_in_subject_alt_name_does_not_name_the_sender() {
    let (dir, ca) = Rig::prepare();
    let mut params = client_params(vec![(DnType::CommonName, "CLINIC-A".into())]);
    params
        .custom_extensions
        .push(directory_name_san("CLINIC-B"));
    ca.issue_params(dir.path(), "clinic", params);
    let rig = Rig::start(dir, "").await;
    let mut client = rig.client("clinic").await;

    let (code, segs) = Rig::send(&mut client, "SAN-B", "CLINIC-B").await;
    assert_eq!(code, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s
                .contains("'CLINIC-B' is not one the client certificate 'CLINIC-A' may send for")),
        "{segs:?}"
    );
    assert_eq!(rig.sim.state.count("SAN-B"), 0);

    let (code, segs) = Rig::send(&mut client, "SAN-A", "CLINIC-A").await;
    assert_eq!(code, "AA", "{segs:?}");
    assert_eq!(rig.sim.state.count("SAN-A"), 1);
    rig.stop().await;
}

/// Starts a rig whose one client certificate, `client`, has the subject
/// `attributes`, and asserts that each message it sends as one of
/// `senders` is answered AR naming `reason`.
async fn assert_subject_refused(
    attributes: Vec<(DnType, DnValue)>,
    senders: &[&str],
    reason: &str,
) {
    let (dir, ca) = Rig::prepare();
    ca.issue_params(dir.path(), "client", client_params(attributes));
    let rig = Rig::start(dir, "").await;
    rig.assert_refused("client", senders, reason).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_a_subject_cn_gets_ar_even_if_its_issuer_has_one() {
    assert_subject_refused(
        vec![(DnType::OrganizationName, "Clinic A".into())],
        &["CLINIC-A", "izhub test CA"],
        "its subject has no common name (CN)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_two_subject_cns_gets_ar() {
    assert_subject_refused(
        vec![
            (DnType::CommonName, "CLINIC-A".into()),
            (DnType::CustomDnType(vec![2, 5, 4, 3]), "CLINIC-B".into()),
        ],
        &["CLINIC-A", "CLINIC-B"],
        "its subject has 2 common names (CN) where exactly one is needed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_cn_is_a_bmpstring_gets_ar() {
    assert_subject_refused(
        vec![(
            DnType::CommonName,
            DnValue::BmpString("CLINIC-A".try_into().unwrap()),
        )],
        &["CLINIC-A"],
        "its subject common name is a BMPString (UCS-2), which is not accepted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_map_a_certificate_to_the_facilities_it_sends_for() {
    let (dir, ca) = Rig::prepare();
    let d = dir.path();
    ca.issue(d, "hie", "HIE-MEMBER-1", &[]);
    ca.issue(d, "clinic", "CLINIC-D", &[]);
    // Pinned by fingerprint: needs no subject CN.
    let pinned = ca.issue_params(
        d,
        "pinned",
        client_params(vec![(DnType::OrganizationName, "Clinic C".into())]),
    );
    let fingerprint: String = izhub::identity::certificate::fingerprint(&pinned)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let rig = Rig::start(
        dir,
        &format!(
            "[listeners.ehr.tls.identities]\n\"CN=HIE-MEMBER-1\" = [\"CLINIC-A\", \"CLINIC-B\"]\n\"sha256:{fingerprint}\" = [\"CLINIC-C\"]\n"
        ),
    )
    .await;

    let sends = [
        // One certificate sends for two facilities, and only those.
        ("hie", "ID-1", "CLINIC-A", "AA"),
        ("hie", "ID-2", "CLINIC-B", "AA"),
        ("hie", "ID-3", "HIE-MEMBER-1", "AR"),
        ("hie", "ID-4", "CLINIC-C", "AR"),
        // The pinned certificate sends for its facility.
        ("pinned", "ID-5", "CLINIC-C", "AA"),
        ("pinned", "ID-6", "CLINIC-A", "AR"),
        // A certificate not named still sends for its subject CN.
        ("clinic", "ID-7", "CLINIC-D", "AA"),
        ("clinic", "ID-8", "CLINIC-A", "AR"),
    ];
    for (cert, id, sender, expected) in sends {
        let mut client = rig.client(cert).await;
        let (code, segs) = Rig::send(&mut client, id, sender).await;
        assert_eq!(code, expected, "{cert} sending as {sender}: {segs:?}");
        assert_eq!(
            rig.sim.state.count(id),
            u64::from(expected == "AA"),
            "{cert} sending as {sender}"
        );
    }
    let mut client = rig.client("pinned").await;
    let (_, segs) = Rig::send(&mut client, "ID-9", "CLINIC-D").await;
    assert!(
        segs.iter().any(|s| s.contains(&format!(
            "is not one the client certificate sha256:{fingerprint} may send for"
        ))),
        "{segs:?}"
    );
    rig.stop().await;
}

/// Mutual TLS on the clinics' listener (certificates of the test CA) and
/// TLS to the IIS, checked as `iis.test`.
fn mutual_tls_config(iis: std::net::SocketAddr) -> String {
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
        iis
    )
}

/// The NIST sample with MSH-10 `id`, from `sender` (MSH-4).
fn nist(id: &str, sender: &str) -> String {
    let text = sample_text("messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7");
    with_msh(&with_msh(&text, 10, id), 4, sender)
}
