//! Hot reload: routes, destinations and plugins change under a running
//! sender; good changes take effect, bad ones are refused and the old
//! configuration stays; every message gets its ACK on the same connection.
//! Also the compiled-component cache across restarts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use izhub::serve::{self, ServeOptions};

fn write_config(path: &Path, wasm: &Path, sim: &str, organization: &str) {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"{sim}\"\n\n[[routes]]\nname = \"vxu\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n[routes.plugins.config]\norganization = \"{organization}\"\n",
        wasm.display()
    );
    // Write then rename, as deployment tools do, so the watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(admin: std::net::SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = http_get(admin, "/healthz").await;
        if check(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_ack_and_drop_no_connection() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("stamp.wasm");
    std::fs::copy(plugin_dir().join("stamp_hie.wasm"), &wasm).unwrap();
    let config_path = dir.path().join("izhub.toml");
    write_config(&config_path, &wasm, &sim.addr.to_string(), "ORG-A");
    let config = izhub::config::load(&config_path).unwrap();
    let opts = ServeOptions {
        watch: Some(Duration::from_millis(50)),
        ..ServeOptions::default()
    };
    let engine = serve::start_with(&config, opts).await.unwrap();
    let addr = engine.listeners["ehr"].to_string();
    let admin = engine.admin.unwrap();

    // Four senders, each on one connection for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // MSH-22 empty, so the stamp plugin fills it with the configured organization.
    let base = with_msh(
        &sample_text("messages/vxu/vxu-valid-testgood-01.hl7"),
        22,
        "",
    );
    let mut senders = Vec::new();
    for c in 0..4 {
        let (stop, answered, base, addr) =
            (stop.clone(), answered.clone(), base.clone(), addr.clone());
        senders.push(tokio::spawn(send_until_stopped(
            c, addr, base, stop, answered,
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(latest_org(&sim).as_deref(), Some("ORG-A"));

    // 1. A good change: the new organization is stamped from now on.
    write_config(&config_path, &wasm, &sim.addr.to_string(), "ORG-BB");
    wait_for(admin, "reload 1", |h| {
        h.contains("\"generation\":1") && h.contains("\"last_error\":null")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(latest_org(&sim).as_deref(), Some("ORG-BB"));

    // 2. A broken file: refused, the old configuration stays in force.
    std::fs::write(&config_path, "[listeners.ehr\nlisten = ").unwrap();
    let h = wait_for(admin, "refusal", |h| h.contains("\"last_error\":\"")).await;
    assert!(
        h.contains("\"status\":\"degraded\"") && h.contains("\"generation\":1"),
        "{h}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(latest_org(&sim).as_deref(), Some("ORG-BB"));

    // 2b. An empty file, as a file is between truncation and writing: an
    // empty configuration is valid (no listeners), so reading it would drop
    // every connection. Refused.
    std::fs::write(&config_path, "").unwrap();
    let h = wait_for(admin, "empty refusal", |h| h.contains("is empty")).await;
    assert!(h.contains("\"generation\":1"), "{h}");

    // 3. A good config whose plugin file is garbage: refused too.
    write_config(&config_path, &wasm, &sim.addr.to_string(), "ORG-CCC");
    wait_for(admin, "reload 2", |h| h.contains("\"generation\":2")).await;
    std::fs::write(&wasm, b"\0asm garbage").unwrap();
    let h = wait_for(admin, "plugin refusal", |h| h.contains("cannot compile")).await;
    assert!(h.contains("\"generation\":2"), "{h}");

    // 4. The plugin is fixed: applied.
    std::fs::copy(plugin_dir().join("stamp_hie.wasm"), &wasm).unwrap();
    wait_for(admin, "reload 3", |h| {
        h.contains("\"generation\":3") && h.contains("\"last_error\":null")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(latest_org(&sim).as_deref(), Some("ORG-CCC"));

    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for s in senders {
        sent += s
            .await
            .expect("a sender saw a lost ACK or a dropped connection");
    }
    assert_eq!(sent, answered.load(Ordering::Relaxed));
    assert!(sent > 100, "only {sent} messages went through");
    let metrics = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("izhub_config_reloads_total{result=\"applied\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("izhub_config_reloads_total{result=\"refused\"} 3"),
        "{metrics}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_cached_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let sim = start_sim(sim_named("MIIIS")).await;
    let mut cfg = format!(
        "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"{}\"\n",
        sim.addr
    );
    for (i, p) in [
        "stamp_hie",
        "require_core_fields",
        "route_by_jurisdiction",
        "test_misbehave",
    ]
    .iter()
    .enumerate()
    {
        cfg += &format!(
            "\n[[routes]]\nname = \"r{i}\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n",
            plugin(p)
        );
    }
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, cfg).unwrap();
    let config = izhub::config::load(&path).unwrap();
    let opts = ServeOptions {
        runtime: izhub::plugin::RuntimeOptions {
            cache_dir: Some(cache.clone()),
            ..Default::default()
        },
        watch: None,
    };
    let cold = serve::start_with(&config, opts.clone()).await.unwrap();
    let cold_time = cold.startup;
    cold.stop().await;
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        4,
        "one compiled file per plugin"
    );
    let warm = serve::start_with(&config, opts).await.unwrap();
    let warm_time = warm.startup;
    // Still a working engine.
    let mut client =
        izhub::mllp::MllpClient::connect(&warm.listeners["ehr"].to_string(), TIMEOUT, 1 << 20)
            .await
            .unwrap();
    let answer = client
        .exchange(&sample("messages/vxu/vxu-valid-testgood-01.hl7"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    warm.stop().await;
    assert!(
        warm_time < cold_time,
        "warm start {warm_time:?} should beat cold start {cold_time:?}"
    );
}

/// Sender `c`: one connection for the whole test, each message answered AA
/// with its own MSH-10, until `stop`; how many it sent.
async fn send_until_stopped(
    c: usize,
    addr: String,
    base: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> u64 {
    let mut client = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("R{c}-{n}");
        let answer = client
            .exchange(with_msh(&base, 10, &id).as_bytes(), TIMEOUT)
            .await;
        let answer = answer.unwrap_or_else(|e| panic!("{id}: connection failed: {e}"));
        assert_eq!(
            msa(&answer),
            ("AA".to_string(), id.clone()),
            "{:?}",
            segments(&answer)
        );
        answered.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    n
}

/// The organization (MSH-22) of the newest message of sender 0 that the
/// IIS has seen.
fn latest_org(sim: &Sim) -> Option<String> {
    (0..100_000u64)
        .rev()
        .find_map(|n| sim.state.header(&format!("R0-{n}")))
        .and_then(|h| h.split('|').nth(21).map(str::to_string))
}
