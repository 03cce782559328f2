//! Several engine nodes over one PostgreSQL: the shared store's contract
//! (claims per order key, leases, fencing, resends), migrations raced by
//! nodes starting together, and real `izhub serve` processes killed,
//! stopped and cut off from their database under load.
//!
//! Each test runs against a real PostgreSQL that this binary starts itself:
//! Debian's binaries (`IZHUB_PG_BIN`, else /usr/lib/postgresql/*/bin, else
//! the PATH), `initdb` into a temporary directory, run as an unprivileged
//! user when the tests run as root. A watcher process stops the server
//! and removes its directory when the test binary exits. Without the
//! binaries the tests say so loudly and pass, unless `IZHUB_PG_REQUIRED` is
//! set (as `./dev.sh test` does once it has installed them).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;
use izhub::config::PostgresSpec;
use izhub::store::postgres::{MIGRATIONS, PgStore};
use izhub::store::{Attempted, Cluster, NewDelivery, Status, Store, StoreError};

/// The unprivileged user PostgreSQL runs as when the tests run as root.
const PG_USER: &str = "izhub-pg";

/// A PostgreSQL server started for these tests.
pub(crate) struct PgServer {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("IZHUB_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some(b) = versions.pop() {
        return Some(b);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Runs one of PostgreSQL's programs, as the unprivileged user when root.
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        run_as(self.as_root, &self.bin.join(program), args)
    }

    /// Starts a new server in a fresh directory.
    #[allow(clippy::zombie_processes)] // the watcher outlives this binary on purpose
    fn start() -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let msg = "\n\n!!!!! PostgreSQL binaries not found (initdb, pg_ctl): the cluster tests \
                       did NOT run. Install postgresql (./dev.sh test does) or set IZHUB_PG_BIN. !!!!!\n";
            if std::env::var_os("IZHUB_PG_REQUIRED").is_some() {
                panic!("{msg}");
            }
            eprintln!("{msg}");
            return None;
        };
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("izhub-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if as_root {
            let exists = Command::new("id")
                .arg(PG_USER)
                .output()
                .unwrap()
                .status
                .success();
            if !exists {
                let made = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        PG_USER,
                    ])
                    .status()
                    .unwrap();
                assert!(made.success(), "useradd {PG_USER} failed");
            }
            let owned = Command::new("chown")
                .args(["-R", PG_USER])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(owned.success());
        }
        let data = dir.join("data");
        let server = PgServer {
            port: free_port(),
            bin,
            data: data.clone(),
            as_root,
        };
        let data_s = data.display().to_string();
        let out = server.run(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "izhub",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_server();
        // Stop the server and remove its directory when this binary exits,
        // however it exits.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runas}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            runas = if as_root {
                format!("runuser -u {PG_USER} -- ")
            } else {
                String::new()
            },
            pg_ctl = server.bin.join("pg_ctl").display(),
            data = data_s,
            dir = dir.display(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &stop])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Some(server)
    }

    fn start_server(&self) {
        let data = self.data.display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log").display().to_string();
        let out = self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop_server(&self, mode: &str) {
        let data = self.data.display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh, empty database on this server; its URL.
    pub(crate) async fn database(&self, name: &str) -> String {
        let admin = format!("postgres://izhub@127.0.0.1:{}/postgres", self.port);
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&sql).await.unwrap();
        }
        format!("postgres://izhub@127.0.0.1:{}/{name}", self.port)
    }
}

fn run_as(as_root: bool, program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir("/").output().unwrap()
}

/// The server shared by the tests of this binary, started once.
pub(crate) fn shared() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER.get_or_init(PgServer::start).as_ref()
}

/// A free port below the ephemeral range, so that no outgoing connection
/// (to the database, to the IIS) takes it between now and the bind.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 25;
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn spec(url: &str, node: &str, lease: Duration) -> PostgresSpec {
    PostgresSpec {
        url: url.to_string(),
        password_env: None,
        ca: None,
        node: Some(node.to_string()),
        lease,
        console_url: None,
        console_ca: None,
    }
}

fn delivery(id: &str, patient: &str) -> NewDelivery {
    NewDelivery {
        listener: "ehr".into(),
        route: "vxu".into(),
        sender: "CLINIC".into(),
        control_id: id.into(),
        message_type: "VXU^V04".into(),
        order_key: format!("CLINIC|{patient}"),
        destination: "mi".into(),
        raw: format!("MSH|{id}").into_bytes(),
        payload: format!("MSH|{id}").into_bytes(),
        stages: String::new(),
        dedupe: true,
    }
}

fn delivered() -> Attempted {
    Attempted {
        status: Status::Delivered,
        attempts: 1,
        next_attempt_at: 0,
        error: None,
        answer: Some((b"MSA|AA".to_vec(), "accepted".into())),
    }
}

fn ids_of(p: &[izhub::store::Pending]) -> Vec<String> {
    p.iter().map(|p| p.control_id.clone()).collect()
}

/// Only the head of each order key is claimable, and by one node at a time;
/// recording it makes the next one of that key claimable, by any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_the_head_of_each_key_one_node_at_a_time() {
    let Some(pg) = shared() else { return };
    let url = pg.database("claims").await;
    let a = PgStore::open(&spec(&url, "a", Duration::from_secs(10)))
        .await
        .unwrap();
    let b = PgStore::open(&spec(&url, "b", Duration::from_secs(10)))
        .await
        .unwrap();
    a.insert(vec![
        delivery("A1", "P1"),
        delivery("A2", "P1"),
        delivery("A3", "P1"),
    ])
    .await
    .unwrap();
    b.insert(vec![delivery("B1", "P2"), delivery("B2", "P2")])
        .await
        .unwrap();
    let got = a.claim("mi", 100).await.unwrap();
    assert_eq!(ids_of(&got), ["A1", "B1"]);
    assert_eq!(got[0].payload, b"MSH|A1");
    assert!(
        b.claim("mi", 100).await.unwrap().is_empty(),
        "leased heads are not claimable"
    );
    assert!(a.hold(got[0].id).await.unwrap());
    a.record(got[0].id, delivered()).await.unwrap();
    // The next of P1 goes to whoever asks; P2's head is still a's.
    assert_eq!(ids_of(&b.claim("mi", 100).await.unwrap()), ["A2"]);
    assert!(a.claim("pa", 100).await.unwrap().is_empty());
    assert_eq!(a.count(Status::Delivered).await.unwrap(), 1);
    assert_eq!(a.count(Status::Queued).await.unwrap(), 4);
    assert_eq!(
        b.status_of("A1").await.unwrap().as_deref(),
        Some("delivered")
    );
    // A delivery recorded for a retry later is not claimable before then.
    let b1 = got[1].id;
    let later = Attempted {
        status: Status::Queued,
        attempts: 1,
        next_attempt_at: izhub::store::now_ms() + 60_000,
        error: Some("refused".into()),
        answer: None,
    };
    a.record(b1, later).await.unwrap();
    assert!(a.claim("mi", 100).await.unwrap().is_empty());
    assert_eq!(b.retry_now(b1).await.unwrap().as_deref(), Some("mi"));
    assert_eq!(ids_of(&a.claim("mi", 100).await.unwrap()), ["B1"]);
    // The whole journal is visible from every node.
    let all = b.select(&izhub::store::Filter::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    let queued = a.queued_by_destination().await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1, 4);
}

/// A lease that lapsed is taken over; the old holder can neither send
/// (`hold`) nor record: the fencing token changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_is_taken_over_and_the_old_holder_is_fenced() {
    let Some(pg) = shared() else { return };
    let url = pg.database("fencing").await;
    let lease = Duration::from_millis(800);
    let a = PgStore::open(&spec(&url, "a", lease)).await.unwrap();
    let b = PgStore::open(&spec(&url, "b", lease)).await.unwrap();
    a.insert(vec![delivery("F1", "P1"), delivery("F2", "P2")])
        .await
        .unwrap();
    let mine = a.claim("mi", 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    // F2 is being sent: renewed while in flight. F1 was claimed, not sent.
    assert!(a.hold(mine[1].id).await.unwrap());
    tokio::time::sleep(lease * 3).await;
    let theirs = b.claim("mi", 10).await.unwrap();
    assert_eq!(
        ids_of(&theirs),
        ["F1"],
        "only the lapsed lease is taken over"
    );
    assert!(
        !a.hold(mine[0].id).await.unwrap(),
        "the old holder must not send it"
    );
    b.record(theirs[0].id, delivered()).await.unwrap();
    let refused = a.record(mine[0].id, delivered()).await;
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    // The renewed one is still a's to record.
    a.record(mine[1].id, delivered()).await.unwrap();
    assert_eq!(a.count(Status::Delivered).await.unwrap(), 2);
    let cluster = b.cluster().await.unwrap().unwrap();
    assert_eq!(cluster.nodes.len(), 2, "{cluster:?}");
    assert_eq!(a.cluster().await.unwrap().unwrap().fenced, 1);
}

/// A node that dies holding claims stops renewing them; another node takes
/// them over once the lease runs out, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claims_resume_after_the_lease() {
    let Some(pg) = shared() else { return };
    let url = pg.database("dead_node").await;
    let lease = Duration::from_secs(2);
    let b = PgStore::open(&spec(&url, "b", lease)).await.unwrap();
    {
        let a = PgStore::open(&spec(&url, "a", lease)).await.unwrap();
        a.insert(vec![delivery("D1", "P1")]).await.unwrap();
        let got = a.claim("mi", 10).await.unwrap();
        assert!(a.hold(got[0].id).await.unwrap());
    }
    let started = Instant::now();
    let got = loop {
        let got = b.claim("mi", 10).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ids_of(&got), ["D1"]);
    assert!(
        started.elapsed() > Duration::from_millis(1000),
        "taken over before the lease ran out"
    );
    b.record(got[0].id, delivered()).await.unwrap();
}

/// The same sender's MSH-10 sent again (its AA was lost with a node) is
/// answered from the journal: same ids, no second delivery; a message
/// reprocessed on purpose is journaled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_recognised_by_sender_and_msh10() {
    let Some(pg) = shared() else { return };
    let url = pg.database("resend").await;
    let a = PgStore::open(&spec(&url, "a", Duration::from_secs(10)))
        .await
        .unwrap();
    let b = PgStore::open(&spec(&url, "b", Duration::from_secs(10)))
        .await
        .unwrap();
    let first = a.insert(vec![delivery("R1", "P1")]).await.unwrap();
    let again = b.insert(vec![delivery("R1", "P1")]).await.unwrap();
    assert_eq!(first, again);
    let other_sender = NewDelivery {
        sender: "OTHER".into(),
        ..delivery("R1", "P1")
    };
    let other = b.insert(vec![other_sender]).await.unwrap();
    assert_ne!(other, first);
    let reprocessed = NewDelivery {
        dedupe: false,
        ..delivery("R1", "P1")
    };
    assert_ne!(a.insert(vec![reprocessed]).await.unwrap(), first);
    assert_eq!(a.count(Status::Queued).await.unwrap(), 3);
}

/// (d) Nodes starting together on an empty database: the schema is
/// migrated once, and every node opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(pg) = shared() else { return };
    let url = pg.database("migrate").await;
    let mut opening = Vec::new();
    for n in 0..4 {
        let url = url.clone();
        opening.push(tokio::spawn(async move {
            PgStore::open(&spec(&url, &format!("n{n}"), Duration::from_secs(10))).await
        }));
    }
    for o in opening {
        o.await.unwrap().unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT version, applied_by FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), MIGRATIONS.len());
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=MIGRATIONS.len() as i32).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Engine processes over one database.

fn vxu(id: &str, patient: &str) -> String {
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let mut m = izhub_plugin::Message::parse(&with_msh(&base, 10, id)).unwrap();
    m.set("PID-3.1", patient).unwrap();
    m.to_string()
}

/// One `izhub serve` node: its MLLP and admin ports and its process.
struct Node {
    port: u16,
    admin: u16,
    config: PathBuf,
    child: Option<std::process::Child>,
}

impl Node {
    fn new(dir: &Path, name: &str, url: &str, iis: &str, lease_s: u64) -> Node {
        Node::with_admin(dir, name, url, iis, lease_s, "", "")
    }

    /// A node whose `[admin]` section has `admin_extra` added, and the
    /// configuration `extra` (tables after the VXU route).
    fn with_admin(
        dir: &Path,
        name: &str,
        url: &str,
        iis: &str,
        lease_s: u64,
        admin_extra: &str,
        extra: &str,
    ) -> Node {
        Node::configured(dir, name, url, iis, lease_s, admin_extra, "", extra)
    }

    /// As `with_admin`, with `store_extra` added to `[store]`.
    #[allow(clippy::too_many_arguments)]
    fn configured(
        dir: &Path,
        name: &str,
        url: &str,
        iis: &str,
        lease_s: u64,
        admin_extra: &str,
        store_extra: &str,
        extra: &str,
    ) -> Node {
        let (port, admin) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n{admin_extra}\n[listeners.ehr]\nlisten = \"127.0.0.1:{port}\"\n\n\
                 [store]\nurl = \"{url}\"\nnode = \"{name}\"\nlease_seconds = {lease_s}\n{store_extra}\n\n\
                 [destinations.mi]\nmllp = \"{iis}\"\nconnect_timeout_ms = 200\nanswer_timeout_ms = 2000\n\
                 retry_initial_ms = 50\nretry_max_ms = 400\nbreaker_failures = 3\nbreaker_open_ms = 300\n\n\
                 [[routes]]\nname = \"vxu\"\nmessage_types = [\"VXU\"]\nack_mode = \"commit\"\ndestinations = [\"mi\"]\n\n\
                 [[routes.plugins]]\nwasm = \"{}\"\n\n{extra}",
                plugin("require_core_fields")
            ),
        )
        .unwrap();
        let mut node = Node {
            port,
            admin,
            config,
            child: None,
        };
        node.start();
        node
    }

    fn start(&mut self) {
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_izhub"))
                .env("IZHUB_TEST_PEER_TOKEN", PEER_TOKEN)
                .args(["serve", "--no-reload", "--log", "warn", "--config"])
                .arg(&self.config)
                .spawn()
                .unwrap(),
        );
    }

    fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }

    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.pid()])
                .status()
                .unwrap()
                .success()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    async fn get(&self, path: &str) -> String {
        let addr = format!("127.0.0.1:{}", self.admin).parse().unwrap();
        http_get(addr, path).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Console users with bearer tokens (`olga-token` operator, `vic-token`
/// viewer, `ada-token` admin) and the nodes' shared secret, for `[admin]`.
fn console_users() -> String {
    let hash = izhub::admin::auth::hash_password("unused-password").unwrap();
    let digest = |t: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        "peer_token_env = \"IZHUB_TEST_PEER_TOKEN\"\n\n\
         [[admin.users]]\nname = \"olga\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\ntoken_sha256 = \"{}\"\n\n\
         [[admin.users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\ntoken_sha256 = \"{}\"\n\n\
         [[admin.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\ntoken_sha256 = \"{}\"\n\n\
         [admin.oidc]\nissuer = \"https://idp.example.org\"\nclient_id = \"izhub\"\n\
         redirect_url = \"https://izhub.example.org/api/oidc/callback\"\n\n\
         [[admin.oidc.roles]]\ngroup = \"iis-ops\"\nrole = \"operator\"\n",
        digest("olga-token"),
        digest("vic-token"),
        digest("ada-token")
    )
}

/// Asks a console search until its answer lists an item (10 s at most; the
/// message log is written off the answer path): the first item. Every
/// answer is a 200 and passes `check`.
async fn first_found<F, Fut>(
    mut search: F,
    check: impl Fn(&serde_json::Value),
) -> Option<serde_json::Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    for _ in 0..100 {
        let answer = search().await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        check(&v);
        if let Some(item) = v["items"].as_array().and_then(|i| i.first()) {
            return Some(item.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// 4 (b) A bulk export runs on one node at a time and resumes on another:
/// started through node a, whose `[bulk] dir` node b shares, and node a
/// killed (SIGKILL) part way; node b takes the job's lease over once it
/// lapses, finishes it, and serves its status and files. Every cohort
/// patient is in the Patient file exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_export_resumes_on_another_node() {
    let Some(pg) = shared() else { return };
    let url = pg.database("bulkjobs").await;
    let sim = start_sim(izhub::sim::SimOptions {
        delay: Duration::from_millis(4),
        query: izhub::sim::query::QueryOptions {
            synthetic: true,
            ..Default::default()
        },
        ..sim_named("MIIIS")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let shared_dir = dir.path().join("bulk-shared");
    let extra = format!(
        "[bulk]\ndir = \"{}\"\n\n[[routes]]\nname = \"qbp\"\nmessage_types = [\"QBP^Q11\"]\ndestinations = [\"mi\"]\n",
        shared_dir.display()
    );
    let admin = console_users();
    let mut a = Node::with_admin(dir.path(), "ja", &url, &iis, 2, &admin, &extra);
    let b = Node::with_admin(dir.path(), "jb", &url, &iis, 2, &admin, &extra);
    let admin_a: std::net::SocketAddr = format!("127.0.0.1:{}", a.admin).parse().unwrap();
    let admin_b: std::net::SocketAddr = format!("127.0.0.1:{}", b.admin).parse().unwrap();
    let n = 1500;
    let csv = cohort_csv(n);
    let olga = ("authorization", "Bearer olga-token");
    for addr in [admin_a, admin_b] {
        listening(addr).await;
    }
    let made = http(
        admin_a,
        "POST",
        "/fhir/Group",
        &[olga, ("content-type", "text/csv")],
        Some(&csv),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let group = made.json()["id"].as_str().unwrap().to_string();
    let kick = http(
        admin_a,
        "GET",
        &format!("/fhir/Group/{group}/$export"),
        &[olga, ("prefer", "respond-async")],
        None,
    )
    .await;
    assert_eq!(kick.status, 202, "{}", kick.body);
    let location = kick.header("content-location").unwrap().to_string();
    let status_path = location[location.find("/fhir/").unwrap()..].to_string();
    // Kill node a a part of the way in.
    wait_until("node a querying", 20, || sim.state.received() >= 200).await;
    a.kill();
    let at_kill = sim.state.received();
    assert!(
        at_kill < n as u64,
        "the job finished before the kill ({at_kill})"
    );
    // Node b serves the status (the job's files are shared) and, once the
    // lease has lapsed, finishes the job.
    let started = Instant::now();
    let manifest = loop {
        let answer = http(admin_b, "GET", &status_path, &[olga], None).await;
        match answer.status {
            202 => {}
            200 => break answer.json(),
            other => panic!("status {other}: {}", answer.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export never finished on node b"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids = patient_identifiers(admin_b, &manifest, &[olga]).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), n, "one Patient line per cohort row");
    assert_eq!(unique.len(), n, "no patient twice");
    // Patients done before the kill were not asked again: at most the
    // uncommitted batch in flight was.
    let asked = sim.state.received();
    assert!(asked < (n as u64) + 600, "{asked} queries for {n} patients");
    println!(
        "bulk job over two nodes: {n} patients, {at_kill} queried before the kill, {asked} queries in all"
    );
    drop(b);
}

/// The identifiers of every line of an export's Patient file, read from
/// `admin`.
async fn patient_identifiers(
    admin: std::net::SocketAddr,
    manifest: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let patients = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "Patient")
        .expect("a Patient file")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let path = &patients[patients.find("/fhir/").unwrap()..];
    let file = http(admin, "GET", path, headers, None).await;
    assert_eq!(file.status, 200);
    let ids: Vec<String> = file
        .body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|p| p["identifier"].to_string())
        .collect();
    ids
}

/// A cohort of `n` distinct patients, as CSV.
fn cohort_csv(n: usize) -> String {
    let mut csv = String::from("member_id,family,given,birth_date,sex,city,state,zip\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "M{i},Family{i},Given{i},2015-0{}-1{},F,Springfield,MA,01101\n",
            1 + i % 9,
            i % 9
        ));
    }
    csv
}

/// Waits (20 s at most) until something listens on `addr`.
async fn listening(addr: std::net::SocketAddr) {
    let up = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "node never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An MLLP connection to a node's listener, once the node has started.
async fn connect_when_up(port: u16) -> izhub::mllp::MllpClient {
    loop {
        if let Ok(c) = izhub::mllp::MllpClient::connect(
            &format!("127.0.0.1:{port}"),
            Duration::from_millis(200),
            1 << 20,
        )
        .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The secret the nodes of the console test share.
const PEER_TOKEN: &str = "a-secret-the-nodes-share";

/// 4 (f) Any node's console shows every node's messages: a message
/// answered by node b is found by a search on node a, its detail read and
/// unmasked through node a (audited on b), and an operator's reprocess
/// through node a sends it to the IIS again. A viewer's reprocess is
/// refused whichever node it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_nodes_console_shows_every_nodes_messages() {
    let Some(pg) = shared() else { return };
    let url = pg.database("consoles").await;
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let admin = console_users();
    let a = Node::with_admin(dir.path(), "ca", &url, &iis, 10, &admin, "");
    let b = Node::with_admin(dir.path(), "cb", &url, &iis, 10, &admin, "");
    send_vxu_to(a.port, "ON-A-1", "PA").await;
    send_vxu_to(b.port, "ON-B-1", "PB").await;
    wait_until("both delivered", 20, || {
        sim.state.count("ON-A-1") == 1 && sim.state.count("ON-B-1") == 1
    })
    .await;
    let admin_a: std::net::SocketAddr = format!("127.0.0.1:{}", a.admin).parse().unwrap();
    let admin_b: std::net::SocketAddr = format!("127.0.0.1:{}", b.admin).parse().unwrap();
    let id = one_search_over_both_nodes(admin_a).await;
    detail_and_reprocess_through_another_node(admin_a, admin_b, &sim.state, id).await;
    a_filtered_reprocess_covers_both_logs(admin_a, &sim.state).await;
    live_view_shows_another_nodes_message(admin_a, b.port).await;
    dashboards_add_up(admin_a, admin_b).await;
    pausing_through_one_node_pauses_every_node(admin_a, admin_b).await;
    cluster_view_and_a_forged_peer(admin_a, admin_b, id).await;
    drop((a, b));
}

/// The operator `olga`, by her token.
const OLGA: [(&str, &str); 2] = [
    ("authorization", "Bearer olga-token"),
    ("content-type", "application/json"),
];

/// Another node asking for `olga`.
const OWN: [(&str, &str); 2] = [
    ("x-izhub-peer", PEER_TOKEN),
    ("x-izhub-on-behalf-of", "olga"),
];

/// Sends a VXU to the node listening on `port`; it must be acknowledged.
async fn send_vxu_to(port: u16, id: &str, patient: &str) {
    let mut client = connect_when_up(port).await;
    let answer = client
        .exchange(vxu(id, patient).as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
}

/// Search on a for b's message (the log is written off the answer path),
/// then both nodes' messages in one search, newest first, paged by a
/// cursor. ON-B-1's log id.
async fn one_search_over_both_nodes(admin_a: std::net::SocketAddr) -> i64 {
    let search = || {
        http(
            admin_a,
            "POST",
            "/api/messages/search",
            &OLGA,
            Some(r#"{"control_id":"ON-B-1"}"#),
        )
    };
    let item = first_found(search, |_| {})
        .await
        .expect("node a's search finds the message node b answered");
    assert_eq!(item["node"], "cb", "{item}");
    assert_eq!(item["control_id"], "ON-B-1");
    assert_ne!(item["patient_id"], "PB", "masked in the list: {item}");
    let id = item["id"].as_i64().unwrap();
    // Both nodes' messages in one search, newest first, paged by a cursor.
    let answer = http(
        admin_a,
        "POST",
        "/api/messages/search",
        &OLGA,
        Some(r#"{"limit":1}"#),
    )
    .await;
    let first: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    let cursor = first["next"]
        .as_str()
        .expect("a cluster cursor")
        .to_string();
    let body = serde_json::json!({ "limit": 10, "before": cursor }).to_string();
    let answer = http(admin_a, "POST", "/api/messages/search", &OLGA, Some(&body)).await;
    let rest: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let mut seen: Vec<String> = [&first, &rest]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().iter())
        .map(|i| i["control_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, ["ON-A-1", "ON-B-1"], "{first} {rest}");
    assert!(rest["next"].is_null(), "{rest}");
    id
}

/// The detail read through node a, unmasked for the operator; a viewer may
/// not reprocess; the operator's reprocess through node a reaches the IIS;
/// node b audited the unmasking and the reprocess.
async fn detail_and_reprocess_through_another_node(
    admin_a: std::net::SocketAddr,
    admin_b: std::net::SocketAddr,
    sim: &izhub::sim::SimState,
    id: i64,
) {
    let answer = http(
        admin_a,
        "GET",
        &format!("/api/messages/{id}?unmask=true"),
        &OLGA,
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("ON-B-1"), "{}", answer.body);
    assert!(answer.body.contains("PB"), "unmasked: {}", answer.body);
    // A viewer may not reprocess, asked on either node.
    let vic = [
        ("authorization", "Bearer vic-token"),
        ("content-type", "application/json"),
    ];
    let answer = http(
        admin_a,
        "POST",
        &format!("/api/messages/{id}/reprocess"),
        &vic,
        None,
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // The operator's reprocess through node a: the IIS gets it again.
    let answer = http(
        admin_a,
        "POST",
        &format!("/api/messages/{id}/reprocess"),
        &OLGA,
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until("the reprocessed message delivered", 20, || {
        sim.count("ON-B-1") == 2
    })
    .await;
    // Node b audited the unmasking and the reprocess for olga.
    let mut audit = String::new();
    for _ in 0..50 {
        audit = http(
            admin_b,
            "GET",
            "/api/audit",
            &[("authorization", "Bearer ada-token")],
            None,
        )
        .await
        .body;
        if audit.contains("unmask") && audit.contains("reprocess") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        audit.contains("\"olga\"") && audit.contains("unmask") && audit.contains("reprocess"),
        "{audit}"
    );
}

/// A filtered reprocess asked on node a covers both nodes' logs: counted
/// first, then done.
async fn a_filtered_reprocess_covers_both_logs(
    admin_a: std::net::SocketAddr,
    sim: &izhub::sim::SimState,
) {
    // first, then done.
    let filter = r#"{"filter":{"control_id":"ON-A-1"},"confirm":false}"#;
    let count = http(admin_a, "POST", "/api/reprocess", &OLGA, Some(filter)).await;
    assert_eq!(count.status, 200, "{}", count.body);
    assert!(count.body.contains("\"count\":1"), "{}", count.body);
    let all = r#"{"filter":{"type":"VXU^V04"},"confirm":false}"#;
    let count = http(admin_a, "POST", "/api/reprocess", &OLGA, Some(all)).await;
    let c: serde_json::Value = serde_json::from_str(&count.body).unwrap();
    // ON-A-1 on a; ON-B-1 and its reprocessed copy on b.
    assert_eq!(c["count"], 3, "{c}");
    let go = r#"{"filter":{"control_id":"ON-A-1"},"confirm":true}"#;
    let done = http(admin_a, "POST", "/api/reprocess", &OLGA, Some(go)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    wait_until("ON-A-1 reprocessed", 20, || sim.count("ON-A-1") == 2).await;
}

/// Node a's live view shows a message node b answers, within a second or
/// so of its answer (metadata only).
async fn live_view_shows_another_nodes_message(admin_a: std::net::SocketAddr, b_port: u16) {
    // or so of its answer (metadata only).
    let mut live = tokio::net::TcpStream::connect(admin_a).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut live,
        b"GET /api/events HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer olga-token\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    // The stream is open (its headers came) before the message is sent.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = tokio::io::AsyncReadExt::read(&mut live, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "the live view closed");
        seen.extend_from_slice(&chunk[..n]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_vxu_to(b_port, "ON-B-LIVE", "PL").await;
    let answered = Instant::now();
    let shown = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut live, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "the live view closed");
            seen.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&seen).contains("ON-B-LIVE") {
                break;
            }
        }
    })
    .await;
    assert!(
        shown.is_ok(),
        "node b's message never showed in node a's live view"
    );
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(
        !text.contains("\"PL\""),
        "no patient id in the live view: {text}"
    );
    println!(
        "node b's message in node a's live view {:?} after its answer",
        answered.elapsed()
    );
    drop(live);
}

/// The dashboard on node a adds both nodes' counts up; each node's own is
/// what it gives another node.
async fn dashboards_add_up(admin_a: std::net::SocketAddr, admin_b: std::net::SocketAddr) {
    // is what it gives another node.
    let received = |d: &serde_json::Value| -> u64 {
        d["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "vxu")
            .map_or(0, |r| r["received"].as_u64().unwrap())
    };
    let mut boards = Vec::new();
    for _ in 0..50 {
        let mut read = Vec::new();
        for (addr, headers) in [
            (admin_a, &OWN[..]),
            (admin_b, &OWN[..]),
            (admin_a, &OLGA[..]),
        ] {
            let answer = http(addr, "GET", "/api/dashboard", headers, None).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            read.push(serde_json::from_str::<serde_json::Value>(&answer.body).unwrap());
        }
        // Every message answered and delivered.
        let settled = received(&read[2]) == received(&read[0]) + received(&read[1])
            && read[2]["destinations"][0]["queued"] == 0;
        boards = read;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (on_a, on_b, cluster) = (&boards[0], &boards[1], &boards[2]);
    assert!(received(on_a) >= 1 && received(on_b) >= 2, "{on_a} {on_b}");
    assert_eq!(
        received(cluster),
        received(on_a) + received(on_b),
        "{cluster}"
    );
    assert_eq!(cluster["nodes"], 2, "{cluster}");
    assert_eq!(cluster["unreachable"], serde_json::json!([]), "{cluster}");
    assert!(on_a["nodes"].is_null(), "a node's own board: {on_a}");
    let mi = &cluster["destinations"][0];
    assert_eq!(
        (&mi["name"], &mi["queued"]),
        (&"mi".into(), &0.into()),
        "{cluster}"
    );
}

/// Pausing a destination through node a pauses it on every node; the
/// board shows it once the destination's worker has seen it.
async fn pausing_through_one_node_pauses_every_node(
    admin_a: std::net::SocketAddr,
    admin_b: std::net::SocketAddr,
) {
    let paused = http(admin_a, "POST", "/api/destinations/mi/pause", &OLGA, None).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert!(paused.body.contains("\"ok\":true"), "{}", paused.body);
    let shows = |paused: &'static str| async move {
        let mut body = String::new();
        for _ in 0..50 {
            body = http(admin_b, "GET", "/api/dashboard", &OWN, None)
                .await
                .body;
            if body.contains(paused) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node b's board never showed {paused}: {body}");
    };
    shows("\"paused\":true").await;
    let resumed = http(admin_a, "POST", "/api/destinations/mi/resume", &OLGA, None).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    shows("\"paused\":false").await;
}

/// The console's view of the cluster: both nodes, their heartbeats and
/// leases; a request that says it comes from a node but has the wrong
/// secret is refused.
async fn cluster_view_and_a_forged_peer(
    admin_a: std::net::SocketAddr,
    admin_b: std::net::SocketAddr,
    id: i64,
) {
    let answer = http(admin_a, "GET", "/api/cluster", &OLGA, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let c: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let nodes = c["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{c}");
    assert!(
        nodes
            .iter()
            .all(|n| n["leases"].is_i64() && n["heartbeat_age_ms"].is_i64()),
        "{c}"
    );
    assert!(
        c["cluster"]["node"].as_str().unwrap().starts_with("ca-"),
        "{c}"
    );
    // A request that says it comes from a node but has the wrong secret.
    let forged = [
        ("x-izhub-peer", "not-the-secret-at-all"),
        ("x-izhub-on-behalf-of", "olga"),
    ];
    let answer = http(
        admin_b,
        "GET",
        &format!("/api/messages/{id}"),
        &forged,
        None,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    // A single sign-on user of node a: node b maps their groups with its own
    // [admin.oidc]; groups it does not map are refused.
    for (groups, status) in [(r#"["staff","iis-ops"]"#, 200), (r#"["staff"]"#, 401)] {
        let sso = [
            ("x-izhub-peer", PEER_TOKEN),
            ("x-izhub-on-behalf-of", "sso.user@hie.example.org"),
            ("x-izhub-on-behalf-groups", groups),
        ];
        let answer = http(admin_b, "GET", &format!("/api/messages/{id}"), &sso, None).await;
        assert_eq!(answer.status, status, "{groups}: {}", answer.body);
    }
}

/// 4 (c) With HTTPS on the admin address, nodes reach each other over
/// HTTPS, checking each other's certificate against `[store] console_ca`:
/// a message node b answered is found and read unmasked through node a. A
/// node whose `console_ca` the others' certificate does not chain to
/// reaches neither, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_each_other_over_https() {
    let Some(pg) = shared() else { return };
    let url = pg.database("https_nodes").await;
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names.clone()).unwrap();
    std::fs::write(dir.path().join("admin.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("admin.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let other = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.path().join("other.pem"), other.cert.pem()).unwrap();
    // The users' entries come before [admin.tls], a table of its own.
    let admin = format!(
        "{}\n[admin.tls]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n",
        console_users()
    );
    let node = |name: &str, ca: &str| {
        Node::configured(
            dir.path(),
            name,
            &url,
            &iis,
            10,
            &admin,
            &format!("console_ca = \"{ca}\""),
            "",
        )
    };
    let a = node("ha", "admin.pem");
    let b = node("hb", "admin.pem");
    let mut client = connect_when_up(b.port).await;
    let answer = client
        .exchange(vxu("TLS-B-1", "PTLS").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    let connector = tls_connector_trusting(cert.cert.der());
    let https = |admin: u16, method: &'static str, path: String, body: Option<&'static str>| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", admin))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let headers = [
                ("authorization", "Bearer olga-token"),
                ("content-type", "application/json"),
            ];
            exchange(tls, method, &path, &headers, body).await
        }
    };
    // A node's admin address listens once it has started.
    listening(([127, 0, 0, 1], a.admin).into()).await;
    let search = r#"{"control_id":"TLS-B-1"}"#;
    let item = first_found(
        || https(a.admin, "POST", "/api/messages/search".into(), Some(search)),
        |v| assert_eq!(v["unreachable"], serde_json::json!([]), "{v}"),
    )
    .await
    .expect("node a finds node b's message over HTTPS");
    assert_eq!(item["node"], "hb", "{item}");
    let id = item["id"].as_i64().unwrap();
    let detail = https(
        a.admin,
        "GET",
        format!("/api/messages/{id}?unmask=true"),
        None,
    )
    .await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains("PTLS"), "unmasked: {}", detail.body);
    // A node trusting another CA cannot reach the others.
    let c = node("hc", "other.pem");
    listening(([127, 0, 0, 1], c.admin).into()).await;
    let answer = https(c.admin, "POST", "/api/messages/search".into(), Some(search)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(v["items"], serde_json::json!([]), "{v}");
    let unreachable = v["unreachable"].clone();
    let mut names: Vec<&str> = unreachable
        .as_array()
        .expect("a search answered by node c")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["ha", "hb"], "{unreachable}");
    drop((a, b, c));
}

/// EHR connections sending messages in order per patient, each to the
/// nodes in turn (as a TCP load balancer would), and sending a message again
/// when its AA did not come. Returns what was acknowledged.
struct Load {
    acked: Arc<Mutex<HashSet<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

fn load(ports: Vec<u16>, connections: usize) -> Load {
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for c in 0..connections {
        let (acked, stop, ports) = (acked.clone(), stop.clone(), ports.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            let mut turn = c;
            let mut client = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.is_none() {
                    turn += 1;
                    let port = ports[turn % ports.len()];
                    client = izhub::mllp::MllpClient::connect(
                        &format!("127.0.0.1:{port}"),
                        Duration::from_millis(200),
                        1 << 20,
                    )
                    .await
                    .ok();
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let id = format!("K{c}-{n}");
                let Some(cl) = client.as_mut() else { continue };
                match cl
                    .exchange(
                        vxu(&id, &format!("P{c}")).as_bytes(),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(a) if msa(&a) == ("AA".to_string(), id.clone()) => {
                        acked.lock().unwrap().insert(id);
                        n += 1;
                    }
                    // No AA: like an EHR, send the same message again, here
                    // to the next node.
                    _ => client = None,
                }
            }
        }));
    }
    Load {
        acked,
        stop,
        senders,
    }
}

impl Load {
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in self.senders {
            s.await.unwrap();
        }
        self.acked.lock().unwrap().iter().cloned().collect()
    }
}

/// Per patient, the messages reached the IIS in the order they were sent
/// (a message delivered twice may repeat, never come after a later one).
fn assert_order_per_patient(arrivals: &[String]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for id in arrivals {
        let Some((patient, n)) = id.split_once('-') else {
            continue;
        };
        let n: u64 = n.parse().unwrap();
        if let Some(prev) = last.get(patient) {
            assert!(n >= *prev, "{id} arrived after {patient}-{prev}");
        }
        last.insert(patient.to_string(), n);
    }
}

/// (a) Two nodes under load, one killed with SIGKILL and started again,
/// twice: every acknowledged message reaches the IIS, per patient in order,
/// duplicates no more than were in flight; the survivor resumes the dead
/// node's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_node_loses_nothing_acknowledged() {
    let Some(pg) = shared() else { return };
    let url = pg.database("kill9").await;
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let mut a = Node::new(dir.path(), "a", &url, &iis, 2);
    let b = Node::new(dir.path(), "b", &url, &iis, 2);
    let traffic = load(vec![a.port, b.port], 6);
    let kills = 2;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.start();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let health = b.get("/healthz").await;
    let acked = traffic.finish().await;
    assert!(
        acked.len() > 100,
        "only {} messages acknowledged",
        acked.len()
    );
    wait_until("every acknowledged message at the IIS", 30, || {
        acked.iter().all(|id| sim.state.count(id) >= 1)
    })
    .await;
    assert_order_per_patient(&sim.state.arrivals());
    let duplicates = acked.iter().filter(|id| sim.state.count(id) > 1).count();
    println!(
        "two nodes, {kills} kills: {} acknowledged, 0 lost, {duplicates} delivered twice",
        acked.len()
    );
    // In flight at each kill: at most one per delivery connection (4).
    assert!(duplicates <= kills * 4, "{duplicates} duplicates");
    assert!(health.contains("\"cluster\":{\"node\":\"b-"), "{health}");
    assert!(health.matches("\"leases\":").count() >= 2, "{health}");
}

/// (c) A node stopped (SIGSTOP) past its lease while it holds deliveries:
/// the other node takes them over; once it runs again (SIGCONT) it sends
/// none of them again and its outcomes are refused by fencing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_fenced_when_it_resumes() {
    let Some(pg) = shared() else { return };
    let url = pg.database("stalled").await;
    let sim = start_sim(izhub::sim::SimOptions {
        delay: Duration::from_millis(150),
        ..sim_named("MIIIS")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let a = Node::new(dir.path(), "a", &url, &iis, 2);
    // Messages for 30 patients, all acknowledged by node a.
    let ids: Vec<String> = (0..30).map(|i| format!("S{i}-0")).collect();
    let mut client = connect_when_up(a.port).await;
    for (i, id) in ids.iter().enumerate() {
        let answer = client
            .exchange(vxu(id, &format!("Q{i}")).as_bytes(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(msa(&answer).0, "AA");
    }
    // Node a is delivering them one at a time (the IIS is slow): stop it
    // while it holds the rest.
    wait_until("node a delivering", 10, || sim.state.received() >= 2).await;
    a.signal("-STOP");
    let at_stop = sim.state.received();
    let b = Node::new(dir.path(), "b", &url, &iis, 2);
    wait_until("node b delivering what node a held", 30, || {
        ids.iter().all(|id| sim.state.count(id) >= 1)
    })
    .await;
    let health = b.get("/healthz").await;
    let before: Vec<u64> = ids.iter().map(|id| sim.state.count(id)).collect();
    a.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<u64> = ids.iter().map(|id| sim.state.count(id)).collect();
    // What node a holds when it resumes is checked against the database
    // before it is sent, and a delivery that passed that check is not
    // written once its lease could have ended: none of it goes out again.
    let resent = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    assert_eq!(
        resent, 0,
        "the stalled node sent again {resent} of what node b took over"
    );
    // Only what a had on the wire when it stopped (one per delivery
    // connection, 4) can arrive twice: b cannot know the IIS saw it.
    let twice = after.iter().filter(|c| **c > 1).count();
    assert!(
        twice <= 4,
        "{twice} delivered twice (received {at_stop} before the stop)"
    );
    let metrics = a.get("/metrics").await;
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("izhub_deliveries_total")
                && (l.contains("result=\"fenced\"") || l.contains("result=\"lost_claim\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        refused >= 1.0,
        "the stalled node's claims were not refused:\n{metrics}"
    );
    assert!(health.contains("\"id\":\"a-"), "{health}");
    drop(b);
}

/// (b) PostgreSQL restarted under load: no AA for what was not committed
/// (every acknowledged message reaches the IIS), and the nodes resume by
/// themselves. Its own server: restarting the shared one would disturb the
/// other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_acknowledged() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.database("restart").await;
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let iis = sim.addr.to_string();
    let a = Node::new(dir.path(), "a", &url, &iis, 2);
    let b = Node::new(dir.path(), "b", &url, &iis, 2);
    let traffic = load(vec![a.port, b.port], 6);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.stop_server("fast");
    // While the database is away the node says so, at once: a load
    // balancer takes it out of rotation.
    let admin_a: std::net::SocketAddr = ([127, 0, 0, 1], a.admin).into();
    let asked = Instant::now();
    let down = http(admin_a, "GET", "/healthz", &[], None).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("\"unavailable\""), "{}", down.body);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.start_server();
    // The nodes must take messages again by themselves.
    let resumed_from = traffic.acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let acked = traffic.finish().await;
    assert!(
        acked.len() > resumed_from + 20,
        "the nodes did not resume after the restart ({resumed_from} → {})",
        acked.len()
    );
    wait_until("every acknowledged message at the IIS", 30, || {
        acked.iter().all(|id| sim.state.count(id) >= 1)
    })
    .await;
    assert_order_per_patient(&sim.state.arrivals());
    let up = http(admin_a, "GET", "/healthz", &[], None).await;
    assert_eq!(up.status, 200, "healthy again: {}", up.body);
    println!("database restart: {} acknowledged, 0 lost", acked.len());
    drop((a, b));
}

/// Claim latency with 10,000 deliveries queued (2,000 patients, 5 each):
/// `./dev.sh bench-cluster` runs it. Each claim takes up to 512 heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: ./dev.sh bench-cluster runs it"]
async fn claim_latency() {
    let Some(pg) = shared() else { return };
    let url = pg.database("claim_latency").await;
    let store = PgStore::open(&spec(&url, "bench", Duration::from_secs(10)))
        .await
        .unwrap();
    for chunk in 0..100 {
        let batch = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                delivery(&format!("L{n}"), &format!("P{}", n % 2000))
            })
            .collect();
        store.insert(batch).await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let got = store.claim("mi", 512).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(got.len(), 512);
        // Give them back: recorded as a retry due now, so the next claim
        // sees the same 10,000 queued.
        for p in &got {
            let again = Attempted {
                status: Status::Queued,
                attempts: 1,
                next_attempt_at: 0,
                error: None,
                answer: None,
            };
            store.record(p.id, again).await.unwrap();
        }
    }
    times.sort();
    println!(
        "claim of 512 heads with 10,000 queued: median {:?}, worst {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// A node frozen between its journal INSERT and COMMIT keeps the lock on
/// that message's key. Resends of the message to another node do not wait
/// on it for ever, nor use up that node's connections: each is answered
/// (AE, not journaled) within seconds, the node goes on taking other
/// messages, and once the lock is gone the resend is journaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_stalls_no_other_node() {
    let Some(pg) = shared() else { return };
    let url = pg.database("held_lock").await;
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Node::new(dir.path(), "la", &url, &sim.addr.to_string(), 10);
    // From a named facility: a resend is known by sender and MSH-10.
    let from_clinic = |id: &str| with_msh(&vxu(id, "PL"), 4, "CLINIC-L");
    let a_port = a.port;
    let send = |id: String| async move {
        let mut c = connect_when_up(a_port).await;
        let answer = c.exchange(id.as_bytes(), TIMEOUT).await.unwrap();
        msa(&answer).0
    };
    assert_eq!(send(from_clinic("LOCK-0")).await, "AA");
    // The key a resend of LOCK-1 takes, held by an open transaction, as a
    // frozen node's would be.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let key: String = client
        .query_one(
            "SELECT dedupe_key FROM deliveries WHERE control_id = 'LOCK-0'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let held = key.replace("LOCK-0", "LOCK-1");
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "INSERT INTO deliveries (received_at, listener, route, sender, control_id, message_type,
             order_key, destination, status, updated_at, dedupe_key)
             VALUES (0, 'x', 'x', 'x', 'LOCK-1', 'x', 'x', 'x', 'queued', 0, $1)",
            &[&held],
        )
        .await
        .unwrap();
    // More resends at once than the node has pooled connections.
    let started = Instant::now();
    let sends: Vec<_> = (0..18)
        .map(|_| {
            let (port, message) = (a.port, from_clinic("LOCK-1"));
            tokio::spawn(async move {
                let mut c = connect_when_up(port).await;
                c.exchange(message.as_bytes(), Duration::from_secs(40))
                    .await
                    .map(|answer| msa(&answer).0)
            })
        })
        .collect();
    for send in sends {
        let code = send.await.unwrap().expect("every resend is answered");
        assert_eq!(code, "AE", "not journaled while the key is held");
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(25), "{waited:?}");
    let other = Instant::now();
    assert_eq!(send(from_clinic("LOCK-2")).await, "AA");
    assert!(
        other.elapsed() < Duration::from_secs(3),
        "{:?}",
        other.elapsed()
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(send(from_clinic("LOCK-1")).await, "AA");
    wait_until("LOCK-1 delivered", 20, || sim.state.count("LOCK-1") == 1).await;
    println!("18 resends behind a held key answered in {waited:?}");
    drop(a);
}
