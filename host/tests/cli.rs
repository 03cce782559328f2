//! The `izhub` binary itself: `check`, `send`, and a third-party MLLP client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

mod common;

use std::process::Command;

use common::*;

fn izhub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_izhub"))
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[listeners.a]\nlisten = \"127.0.0.1:2575\"\n\n[listeners.b]\nlisten = \"127.0.0.1:2575\"\n\n[[routes]]\nname = \"r\"\ndestinations = [\"nowhere\"]\n\n[[routes.plugins]]\nwasm = \"missing.wasm\"\n",
    )
    .unwrap();
    let out = izhub()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors in the configuration"), "{err}");
    assert!(
        err.contains("bad.toml:5:10: listeners.b.listen: port 2575 is already used"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:9:17: routes[0].destinations: unknown destination 'nowhere'"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:12:8: routes[0].plugins[0].wasm: plugin file not found"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_demo_config_and_compiles_its_plugins() {
    plugin_dir();
    let out = izhub()
        .args(["check", "--config"])
        .arg(root().join("samples/demo/izhub.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK (1 listeners, 2 destinations, 2 routes, 5 plugins;"),
        "{stdout}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "check", "sim-iis", "send", "bench"] {
        let out = izhub().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: izhub"),
            "{sub}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_answers_and_bench_checks_acks() {
    let h = harness("").await;
    let addr = h.addr.to_string();
    let file = root().join("samples/messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7");
    let path = file.display().to_string();
    let stdout = izhub_ok(["send", "--to", &addr, &path]).await;
    assert!(stdout.contains(": AA (MSA-2 matches)"), "{stdout}");
    assert!(stdout.contains("MSA|AA|"), "{stdout}");
    assert_eq!(h.sim("MA").received(), 1);

    let stdout = izhub_ok([
        "bench",
        "--to",
        &addr,
        "--connections",
        "1,4",
        "--messages",
        "200",
        "--warmup",
        "0",
        "--file",
        &path,
    ])
    .await;
    assert_eq!(stdout.matches("AA=200").count(), 2, "{stdout}");
    assert_eq!(h.sim("MA").received(), 401);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_mllp_client_gets_aa() {
    let h = harness("").await;
    let file = root().join("samples/messages/vxu/vxu-valid-testgood-05.hl7");
    // mllp_send from the PyPI package `hl7`, installed by ./dev.sh test.
    let out = tokio::process::Command::new("mllp_send")
        .args(["--loose", "--port", &h.addr.port().to_string(), "--file"])
        .arg(&file)
        .arg("127.0.0.1")
        .output()
        .await
        .expect("mllp_send (pip install hl7) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let control_id = izhub::hl7::Msh::read(&sample_text("messages/vxu/vxu-valid-testgood-05.hl7"))
        .unwrap()
        .control_id()
        .to_string();
    assert!(stdout.contains(&format!("MSA|AA|{control_id}")), "{stdout}");
    assert_eq!(h.sim("MI").count(&control_id), 1);
    h.stop().await;
}
