//! The sandbox as a security boundary: hostile plugins are contained, each
//! with its own error, an AE for its message, a metric, and no harm to the
//! next message; plugins that import what the sandbox does not offer are
//! refused at load; lookups follow grants.

use std::time::{Duration, Instant};

use crate::common::*;

async fn expect_contained(h: &Harness, sender: &str, needle: &str) {
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    let msg = with_msh(&with_msh(&base, 4, sender), 10, &format!("BAD-{sender}"));
    let mut client = h.client().await;
    let started = Instant::now();
    let answer = client.exchange(msg.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(
        msa(&answer),
        ("AE".to_string(), format!("BAD-{sender}")),
        "{segs:?}"
    );
    let err = segs.iter().find(|s| s.starts_with("ERR|")).expect("ERR");
    assert!(
        err.contains("|207^Application internal error^HL70357|E|"),
        "{err}"
    );
    assert!(
        err.contains("plugin 'test_misbehave'") && err.contains(needle),
        "{sender}: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{sender}: answered after {:?}",
        started.elapsed()
    );
    // The same connection serves the next message with normal latency.
    let good = with_msh(&base, 10, &format!("AFTER-{sender}"));
    let t = Instant::now();
    let answer = client.exchange(good.as_bytes(), TIMEOUT).await.unwrap();
    assert_eq!(msa(&answer), ("AA".to_string(), format!("AFTER-{sender}")));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "next message took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_each_with_its_own_error() {
    let h = harness("").await;
    let cases = [
        ("LOOP", "exceeded its time limit of 200ms", "time_limit"),
        (
            "MEMORY",
            "exceeded its memory limit of 16 MiB",
            "memory_limit",
        ),
        (
            "RECURSE",
            "exhausted its stack (runaway recursion)",
            "stack_overflow",
        ),
        (
            "DEEPFRAMES",
            "out of bounds memory access (a bug, or a stack overflow",
            "trap",
        ),
        (
            "TRAP",
            "crashed: wasm trap: wasm `unreachable` instruction executed",
            "trap",
        ),
        (
            "BIGOUT",
            "returned more output than its limit of 1048576 bytes",
            "output_limit",
        ),
        ("ERROR", "failed: refusing on purpose", "error"),
    ];
    for (sender, needle, _) in cases {
        expect_contained(&h, sender, needle).await;
    }
    assert_eq!(
        h.sim("MI").received(),
        cases.len() as u64,
        "only the good messages reach the IIS"
    );
    let metrics = http_get(h.admin, "/metrics").await;
    for (_, _, kind) in cases {
        let n = cases.iter().filter(|c| c.2 == kind).count();
        let line =
            format!("izhub_plugin_errors_total{{plugin=\"test_misbehave\",kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_does_not_stall_other_connections() {
    // Runaway plugins with a 2 s limit: a good message must not wait for them.
    let extra = format!(
        "\n[[routes]]\nname = \"spin\"\nsenders = [\"SPIN\"]\ndestinations = [\"mi-iis\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\ntime_limit_ms = 2000\n[routes.plugins.config]\nmode = \"loop\"\n",
        plugin("test_misbehave")
    );
    let h = harness(&extra).await;
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    // Eight of them at once, on a two-thread runtime.
    let mut spinners = Vec::new();
    for i in 0..8 {
        let msg = with_msh(&with_msh(&base, 4, "SPIN"), 10, &format!("SPIN-{i}"));
        let mut c = h.client().await;
        spinners.push(tokio::spawn(async move {
            c.exchange(msg.as_bytes(), TIMEOUT).await.map(|a| msa(&a).0)
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut client = h.client().await;
    let t = Instant::now();
    let answer = client
        .exchange(with_msh(&base, 10, "MEANWHILE").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a good message waited {:?} behind runaway plugins",
        t.elapsed()
    );
    for s in spinners {
        assert_eq!(s.await.unwrap().unwrap(), "AE");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_before_the_call() {
    let extra = format!(
        "\n[[routes]]\nname = \"tiny\"\nsenders = [\"TINY\"]\ndestinations = [\"mi-iis\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\nmax_input_bytes = 100\n",
        plugin("stamp_hie")
    );
    let h = harness(&extra).await;
    let msg = with_msh(
        &sample_text("messages/vxu/vxu-valid-testgood-01.hl7"),
        4,
        "TINY",
    );
    let answer = h
        .client()
        .await
        .exchange(msg.as_bytes(), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AE", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.contains("plugin 'stamp_hie' accepts at most 100 bytes")),
        "{segs:?}"
    );
    h.stop().await;
}

fn config_with_plugin(dir: &std::path::Path, wasm: &str, grants: &str) -> std::path::PathBuf {
    let path = dir.join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"127.0.0.1:{}\"\n\n[tables.facility-state]\nkey = \"MI\"\n\n[[routes]]\nname = \"r\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n{grants}\n",
            closed_port(),
            plugin(wasm)
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_importing_sockets_or_files_are_refused_at_load() {
    for (wasm, import) in [
        ("test_forbidden_net", "wasi:sockets/"),
        ("test_forbidden_fs", "wasi:filesystem/"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = config_with_plugin(dir.path(), wasm, "");
        let config = izhub::config::load(&path).unwrap();
        let err = match izhub::serve::start(&config).await {
            Ok(_) => panic!("{wasm} must be refused"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&format!("plugin '{wasm}'")), "{err}");
        assert!(err.contains(": imports ") && err.contains(import), "{err}");
        assert!(err.contains("which plugins are not granted"), "{err}");
        // `izhub check` says the same and fails.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(import));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_follow_grants() {
    let sim = start_sim(sim_named("MIIIS")).await;
    for (grants, expected) in [
        (
            "grants = [\"config\", \"lookup:facility-state\"]",
            "lookup ok: Some(\"MI\")",
        ),
        ("grants = [\"config\"]", "lookup access-denied"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = config_with_plugin(
            dir.path(),
            "test_misbehave",
            &format!(
                "{grants}\n[routes.plugins.config]\nmode = \"lookup\"\ntable = \"facility-state\""
            ),
        );
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&format!("127.0.0.1:{}", "0\""), "127.0.0.1:0\"");
        let text = text.replace(
            &text[text.find("mllp = ").unwrap()..text.find("\n\n[tables").unwrap()],
            &format!("mllp = \"{}\"", sim.addr),
        );
        std::fs::write(&path, text).unwrap();
        let engine = start_engine(&path).await;
        let mut client = connect(&engine, "ehr").await;
        let answer = client
            .exchange(&sample("messages/vxu/vxu-valid-testgood-01.hl7"), TIMEOUT)
            .await
            .unwrap();
        let segs = segments(&answer);
        assert_eq!(msa(&answer).0, "AA", "{segs:?}");
        // The plugin's note is merged into the IIS's answer as an ERR with severity I.
        let note = segs
            .iter()
            .find(|s| s.starts_with("ERR|||0^Message accepted^HL70357|I|"))
            .expect("the plugin's note");
        assert!(
            note.ends_with(expected),
            "{note} should end with {expected}"
        );
        engine.stop().await;
    }
}
