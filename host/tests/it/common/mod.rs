//! Test harness: real simulators and a real engine on loopback, with the real
//! plugins built for wasm32-wasip2 (by `./dev.sh test` into `build/plugins`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use izhub::config;
use izhub::mllp::MllpClient;
use izhub::serve::{self, Running};
use izhub::sim::{self, SimOptions, SimState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the `izhub` binary with these arguments, asserts that it succeeded
/// and returns what it printed on standard output.
pub async fn izhub_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The workspace root. Read at run time: a build reused from a checkout at
/// another path must not point the tests there.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("..")
}

/// The components `./dev.sh test` builds before the tests run.
pub const BUILT: [&str; 11] = [
    "validate_iz",
    "ndc_to_cvx",
    "race_ethnicity",
    "route_by_jurisdiction",
    "stamp_hie",
    "require_core_fields",
    "test_misbehave",
    "test_forbidden_net",
    "test_forbidden_fs",
    "python_stamp",
    "js_stamp",
];

/// Where the built plugin components are. A plain `cargo test` without them
/// stops the whole test binary at once with one line saying what to run.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("IZHUB_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("build/plugins"));
    if let Some(missing) = BUILT
        .iter()
        .find(|p| !dir.join(format!("{p}.wasm")).is_file())
    {
        // Written to the stream itself: the test harness captures eprintln!.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "the plugins are not built ({missing}.wasm is missing in {}): run the tests with ./dev.sh test, which builds them first",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

pub fn plugin(name: &str) -> String {
    plugin_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// A sample message file, with CR segment separators.
pub fn sample(rel: &str) -> Vec<u8> {
    izhub::tools::read_message_file(&root().join("samples").join(rel)).expect("sample file")
}

pub fn sample_text(rel: &str) -> String {
    String::from_utf8(sample(rel)).expect("UTF-8 sample")
}

/// A running simulator.
pub struct Sim {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    token: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn start_sim(opts: SimOptions) -> Sim {
    start_sim_at(0, opts).await
}

/// A simulator on a given loopback port (0: any), e.g. an IIS coming back.
pub async fn start_sim_at(port: u16, opts: SimOptions) -> Sim {
    // Every end-to-end test starts here: without the plugins, stop at once.
    plugin_dir();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(SimState::default());
    let token = CancellationToken::new();
    tokio::spawn(sim::run(listener, opts, state.clone(), token.clone()));
    Sim { addr, state, token }
}

pub fn sim_named(name: &str) -> SimOptions {
    SimOptions {
        name: name.to_string(),
        ..SimOptions::default()
    }
}

/// A port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running engine and the simulators behind it.
pub struct Harness {
    pub engine: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub sims: BTreeMap<String, Sim>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn sim(&self, state: &str) -> &Arc<SimState> {
        &self.sims[state].state
    }

    pub async fn client(&self) -> MllpClient {
        MllpClient::connect(&self.addr.to_string(), TIMEOUT, 1 << 20)
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(e) = self.engine.take() {
            e.stop().await;
        }
    }
}

/// States with a simulated IIS in the standard harness.
pub const STATES: [&str; 4] = ["MI", "PA", "WI", "MA"];

/// Starts simulators for [`STATES`] plus a slow one, and an engine with the
/// demo route (stamp-hie, require-core-fields, route-by-jurisdiction), a QBP
/// route, and routes that misbehave on purpose, selected by MSH-4.
pub async fn harness(extra_config: &str) -> Harness {
    let mut sims = BTreeMap::new();
    for st in STATES {
        sims.insert(
            st.to_string(),
            start_sim(sim_named(&format!("{st}IIS"))).await,
        );
    }
    sims.insert(
        "SLOW".into(),
        start_sim(SimOptions {
            delay: Duration::from_secs(3),
            ..sim_named("SLOWIIS")
        })
        .await,
    );
    let cfg = harness_config(&sims, extra_config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, &cfg).unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{cfg}"));
    let engine = serve::start(&config).await.unwrap();
    let addr = engine.listeners["ehr"];
    let admin = engine.admin.unwrap();
    Harness {
        engine: Some(engine),
        addr,
        admin,
        sims,
        _dir: dir,
    }
}

/// The harness's configuration: a destination per simulator (and one that
/// is down), a misbehaving route per sender, `extra_config`, then the demo
/// route and a QBP route.
fn harness_config(sims: &BTreeMap<String, Sim>, extra_config: &str) -> String {
    let mut cfg = String::from(
        r#"
[admin]
listen = "127.0.0.1:0"

[listeners.ehr]
listen = "127.0.0.1:0"
max_frame_bytes = 65536
"#,
    );
    for (name, sim) in sims {
        cfg += &format!(
            "\n[destinations.{}-iis]\nmllp = \"{}\"\nanswer_timeout_ms = 1000\nconnect_timeout_ms = 1000\n",
            name.to_lowercase(),
            sim.addr
        );
    }
    cfg += &format!(
        "\n[destinations.down-iis]\nmllp = \"127.0.0.1:{}\"\nconnect_timeout_ms = 500\n",
        closed_port()
    );
    for (sender, mode, dest) in [
        ("TRAP", "trap", "mi-iis"),
        ("LOOP", "loop", "mi-iis"),
        ("MEMORY", "memory", "mi-iis"),
        ("RECURSE", "recurse", "mi-iis"),
        ("DEEPFRAMES", "recurse-big", "mi-iis"),
        ("BIGOUT", "big-output", "mi-iis"),
        ("ERROR", "error", "mi-iis"),
        ("SLOW", "ok", "slow-iis"),
        ("DOWN", "ok", "down-iis"),
        ("INJECT", "inject-frame", "mi-iis"),
        ("CTRL", "control-issue", "mi-iis"),
        ("RENUMBER", "renumber", "mi-iis"),
        ("ELSEWHERE", "route-to:pa-iis", "mi-iis"),
    ] {
        cfg += &format!(
            r#"
[[routes]]
name = "{mode}-{sender}"
senders = ["{sender}"]
destinations = ["{dest}"]

[[routes.plugins]]
wasm = "{wasm}"
time_limit_ms = 200
memory_limit_mib = 16
max_output_bytes = 1048576
[routes.plugins.config]
mode = "{mode}"
"#,
            sender = sender,
            mode = mode,
            dest = dest,
            wasm = plugin("test_misbehave"),
        );
    }
    let states: String = STATES
        .iter()
        .map(|s| format!("{s} = \"{}-iis\"\n", s.to_lowercase()))
        .collect();
    cfg += extra_config;
    cfg += &format!(
        r#"
[[routes]]
name = "vxu"
message_types = ["VXU^V04"]

[[routes.plugins]]
wasm = "{stamp}"
[routes.plugins.config]
organization = "Test HIE^^^^^^^^^HIE01"

[[routes.plugins]]
wasm = "{require}"

[[routes.plugins]]
wasm = "{route}"
[routes.plugins.config.states]
{states}
[[routes]]
name = "qbp"
message_types = ["QBP^Q11"]

[[routes.plugins]]
wasm = "{route}"
[routes.plugins.config.states]
{states}
"#,
        stamp = plugin("stamp_hie"),
        require = plugin("require_core_fields"),
        route = plugin("route_by_jurisdiction"),
    );
    cfg
}

/// Splits an answer into segments.
pub fn segments(answer: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(answer)
        .split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// MSA-1 and MSA-2 of an answer.
pub fn msa(answer: &[u8]) -> (String, String) {
    izhub::hl7::read_msa(&String::from_utf8_lossy(answer)).expect("answer has an MSA segment")
}

/// Sets MSH-n of a message.
pub fn with_msh(message: &str, n: usize, value: &str) -> String {
    let mut msg = izhub_plugin::Message::parse(message).expect("a parsable message");
    msg.set(&format!("MSH-{n}"), value)
        .expect("MSH field can be set");
    msg.to_string()
}

/// A plain HTTP GET on loopback; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    izhub::tools::http_get(&addr.to_string(), path)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An MLLP client connected to a listener of a running engine.
pub async fn connect(engine: &Running, listener: &str) -> MllpClient {
    MllpClient::connect(&engine.listeners[listener].to_string(), TIMEOUT, 1 << 20)
        .await
        .unwrap()
}

/// Writes `config` to a fresh directory and starts an engine on it.
pub async fn engine_from(config: &str) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, config).unwrap();
    (start_engine(&path).await, dir)
}

/// Starts an engine on the configuration file at `path`.
pub async fn start_engine(path: &std::path::Path) -> Running {
    let cfg = izhub::config::load(path).unwrap_or_else(|e| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        panic!("{e}\n{text}")
    });
    serve::start(&cfg).await.unwrap()
}

/// A one-listener (`ehr`), one-destination (`mi`) configuration with no
/// plugins; `listener_extra` adds lines to the listener.
pub fn simple_config(iis: std::net::SocketAddr, listener_extra: &str) -> String {
    format!(
        "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n{listener_extra}\n\n[destinations.mi]\nmllp = \"{iis}\"\n\n[[routes]]\nname = \"all\"\ndestinations = [\"mi\"]\n"
    )
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// `izhub_session=...` from Set-Cookie, ready for a Cookie header.
    pub fn session_cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_string()
    }
}

/// A request written on `stream` with `Connection: close`; the answer read to its end.
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
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
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    Answer {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

/// A TLS connector trusting only `cert` (DER), as a client of a server with
/// a generated certificate.
pub fn tls_connector_trusting(
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size:?}: {e}"));
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = after[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, method, path, headers, body).await
}

/// A virtual environment with the pinned `fhir.resources`, under the target
/// directory, made again when the requirements change. `None` when there is
/// no python3 at all.
pub fn validator_python() -> Option<PathBuf> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED FHIR validation: python3 is not installed");
        return None;
    }
    let requirements = root().join("host/tests/requirements-fhir.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    // target/<profile>/deps/bulk_fhir-… → target/fhir-venv
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let venv = target.join("fhir-venv");
    let stamp = venv.join("izhub-requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) || !python.exists()
    {
        let _ = std::fs::remove_dir_all(&venv);
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let out = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "-r",
            ])
            .arg(&requirements)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install -r {} failed:\n{}{}",
            requirements.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, &wanted).unwrap();
    }
    Some(python)
}

/// Every line of these NDJSON files parses as the FHIR R4 resource it
/// names, with the PyPI `fhir.resources` models (skipped, loudly, only
/// when there is no python3).
pub fn assert_valid_fhir(paths: &[PathBuf]) {
    let Some(python) = validator_python() else {
        return;
    };
    let out = std::process::Command::new(&python)
        .arg(root().join("host/tests/fhir_validate.py"))
        .args(paths)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "invalid FHIR:\n{report}");
    assert!(report.contains("valid FHIR R4 (4.0.1)"), "{report}");
}

/// Waits (polling a real process or socket) until `done`, failing the
/// test after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
