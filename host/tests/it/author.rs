//! A plugin author's path from plugins/README.md, end to end: `izhub plugin
//! new`, the generated crate's own tests, `izhub plugin build`, `izhub plugin
//! test` with golden files, and the plugin running in a route.

use std::process::Command;

use crate::common::*;

fn izhub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_izhub"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_goes_from_nothing_to_a_route() {
    let dir = tempfile::tempdir().unwrap();
    // 1. Create it.
    let out = run(izhub()
        .current_dir(root())
        .args(["plugin", "new", "check-lots", "--dir"])
        .arg(dir.path()));
    assert!(out.contains("created"), "{out}");
    let crate_dir = dir.path().join("check-lots");
    let cargo_config = std::fs::read_to_string(crate_dir.join(".cargo/config.toml")).unwrap();
    assert!(cargo_config.contains("stack-size=65536"), "{cargo_config}");
    // 2. Its own unit tests pass natively.
    let out = run(Command::new("cargo")
        .args(["test", "--quiet", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml")));
    assert!(out.contains("2 passed"), "{out}");
    // 3. Build the component.
    let out = izhub_ok([
        std::ffi::OsStr::new("plugin"),
        std::ffi::OsStr::new("build"),
        crate_dir.as_os_str(),
    ])
    .await;
    let wasm = std::path::PathBuf::from(out.lines().last().unwrap_or("").trim());
    assert!(
        wasm.is_file() && wasm.extension().is_some_and(|e| e == "wasm"),
        "{out}"
    );
    // 4. Try it on sample messages, write golden files, then check against them.
    let golden = dir.path().join("expected");
    let samples = [
        root().join("samples/messages/vxu/vxu-valid-testgood-01.hl7"),
        root().join("samples/messages/rejected/vxu-missing-birth-date-testerror-36.hl7"),
    ];
    let out = run(izhub()
        .arg("plugin")
        .arg("test")
        .arg(&wasm)
        .arg("--message")
        .args(&samples)
        .arg("--expect")
        .arg(&golden)
        .arg("--bless"));
    assert!(out.contains("issue: W 101 RXA[1]-15"), "{out}");
    assert!(
        out.contains("verdict: reject") && out.contains("issue: E 101 PID-7"),
        "{out}"
    );
    let out = run(izhub()
        .arg("plugin")
        .arg("test")
        .arg(&wasm)
        .arg("--message")
        .args(&samples)
        .arg("--expect")
        .arg(&golden));
    assert_eq!(out.matches("matches ").count(), 2, "{out}");
    // A golden file that no longer matches fails the check.
    let first = golden.join("vxu-valid-testgood-01.expected");
    std::fs::write(&first, "verdict: reject\n").unwrap();
    let status = izhub()
        .arg("plugin")
        .arg("test")
        .arg(&wasm)
        .arg("--message")
        .args(&samples)
        .arg("--expect")
        .arg(&golden)
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("MISMATCH"));
    // 5. Run it in a route: the warning comes back merged into the IIS's ACK.
    let sim = start_sim(sim_named("MIIIS")).await;
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"{}\"\n\n[[routes]]\nname = \"vxu\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n",
            sim.addr,
            wasm.display()
        ),
    )
    .unwrap();
    let engine = start_engine(&path).await;
    let mut client = connect(&engine, "ehr").await;
    let answer = client
        .exchange(&sample("messages/vxu/vxu-valid-testgood-01.hl7"), TIMEOUT)
        .await
        .unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AA", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||RXA^1^15|101^Required field missing^HL70357|W|")),
        "{segs:?}"
    );
    engine.stop().await;
}
