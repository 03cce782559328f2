//! A partner's path with nothing but the `izhub` binary (issue 16): in a
//! fresh directory, with the binary copied there and nothing in the
//! environment pointing at this source tree, `izhub plugin new` writes a
//! crate that tests and builds offline; `izhub plugin build` writes its
//! manifest; `keygen` and `sign` vouch for it; `izhub check` and a running
//! engine accept it where the publisher is trusted and refuse it, naming the
//! file and the reason, when it is unsigned, tampered with, signed by
//! someone else, pinned to another version or built for another WIT
//! version (hot reload included). JavaScript and Python where their
//! toolchains are present.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use izhub::plugin::manifest::{MANIFEST_SECTION, Manifest, rewrite};
use izhub::serve::{self, ServeOptions};

/// A partner's machine: a directory with `bin/izhub` and a work folder.
struct Partner {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    work: PathBuf,
    target: PathBuf,
}

impl Partner {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_izhub"), bin.join("izhub")).unwrap();
        // Plugin builds go to a target folder kept across runs (outside
        // the source tree) when there is one, so that a rerun is quick.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => PathBuf::from(t).join("partner-plugins"),
            None => dir.path().join("target"),
        };
        Partner {
            _dir: dir,
            bin,
            work,
            target,
        }
    }

    /// A command run in the work folder, with the copied binary first on
    /// PATH and no variable that names the source tree or cargo's view of it.
    fn command(&self, program: &str) -> Command {
        let root = std::fs::canonicalize(root()).unwrap();
        let root = root.to_string_lossy().into_owned();
        let mut cmd = Command::new(program);
        cmd.env_clear().current_dir(&self.work);
        for (k, v) in std::env::vars() {
            let from_cargo = k.starts_with("CARGO") && k != "CARGO_HOME";
            if from_cargo || k.starts_with("IZHUB") || v.contains(&root) || k == "PATH" {
                continue;
            }
            cmd.env(k, v);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.bin.display()))
            .env("CARGO_TARGET_DIR", &self.target)
            // Offline: the registry cache is all a partner's machine has.
            .env("CARGO_NET_OFFLINE", "true");
        cmd
    }

    fn izhub(&self, args: &[&str]) -> Output {
        self.command("izhub").args(args).output().unwrap()
    }

    /// Runs izhub and asserts success; returns stdout and stderr together.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.izhub(args);
        let text = text(&out);
        assert!(out.status.success(), "izhub {args:?} failed:\n{text}");
        text
    }

    /// Runs izhub and asserts failure; returns stdout and stderr together.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.izhub(args);
        let text = text(&out);
        assert!(!out.status.success(), "izhub {args:?} succeeded:\n{text}");
        text
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last line `izhub plugin build` printed on standard output: the component.
fn built(p: &Partner, dir: &str) -> PathBuf {
    let out = p.izhub(&["plugin", "build", dir]);
    assert!(out.status.success(), "build failed:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or("").trim())
}

fn config(wasm: &Path, extra_plugin: &str, trusted: &str, sim: &str) -> String {
    format!(
        "trusted_publishers = [{trusted}]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"{sim}\"\n\n[store]\npath = \"journal.db\"\n\n[[routes]]\nname = \"vxu\"\nack_mode = \"commit\"\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n{extra_plugin}\n",
        wasm.display()
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_builds_signs_and_deploys_a_plugin_with_only_the_binary() {
    let p = Partner::new();
    let krate = a_new_crate_naming_nothing_outside_itself(&p);
    its_tests_pass_offline(&p, &krate);
    let wasm = built_with_its_manifest(&p, &krate);
    let (key, deployed, signed) = keys_and_a_signed_copy(&p, &wasm);
    let m = the_manifest_round_trips(&p, &key, &signed);
    // The IIS simulator, started here: this test needs none of the plugins
    // `./dev.sh` builds, which the common harness waits for.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = listener.local_addr().unwrap().to_string();
    let stop_sim = tokio_util::sync::CancellationToken::new();
    tokio::spawn(izhub::sim::run(
        listener,
        sim_named("MIIIS"),
        Default::default(),
        stop_sim.clone(),
    ));
    let config_path = check_accepts_it(&p, &deployed, &key, &sim_addr);
    let tampered = check_refuses_what_it_must(&p, &deployed, &signed, &wasm, &m);
    runs_and_keeps_running_through_a_tampered_reload(
        &p,
        &config_path,
        &deployed,
        &signed,
        &tampered,
    )
    .await;
    stop_sim.cancel();
}

fn a_new_crate_naming_nothing_outside_itself(p: &Partner) -> PathBuf {
    // 1. A new crate, naming nothing outside itself.
    p.ok(&["plugin", "new", "check-lots"]);
    let krate = p.work.join("check-lots");
    let cargo_toml = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains("path = \"vendor/izhub-plugin\", version = \"0.1.0\""),
        "{cargo_toml}"
    );
    let root = std::fs::canonicalize(root()).unwrap();
    assert!(
        !cargo_toml.contains(&*root.to_string_lossy()),
        "{cargo_toml}"
    );
    assert!(krate.join("wit/plugin.wit").is_file());
    krate
}

fn its_tests_pass_offline(p: &Partner, krate: &Path) {
    // 2. Its tests pass, offline.
    let out = p
        .command("cargo")
        .args(["test", "--offline", "--quiet"])
        .current_dir(krate)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 passed"), "{}", text(&out));
}

fn built_with_its_manifest(p: &Partner, krate: &Path) -> PathBuf {
    // 3. The manifest's source: a publisher and the grants it asks for.
    let manifest_toml = krate.join("izhub-plugin.toml");
    let edited = std::fs::read_to_string(&manifest_toml)
        .unwrap()
        .replace("\"Your organization\"", "\"Example HIE\"")
        .replace("config = []", "config = [\"organization\"]");
    std::fs::write(&manifest_toml, edited).unwrap();
    let wasm = built(p, "check-lots");
    assert!(wasm.is_file(), "{}", wasm.display());
    wasm
}

/// The partner's keys, and a copy signed by its key where the engine will
/// find it: the key, the copy's path and its bytes.
fn keys_and_a_signed_copy(p: &Partner, wasm: &Path) -> (String, PathBuf, Vec<u8>) {
    // 4. Keys, and a signed copy where the engine will find it.
    p.ok(&["plugin", "keygen", "--out", "keys/example-hie"]);
    p.ok(&["plugin", "keygen", "--out", "keys/someone-else"]);
    let key = std::fs::read_to_string(p.work.join("keys/example-hie.pub")).unwrap();
    let key = key.trim().to_string();
    let secret = std::fs::read_to_string(p.work.join("keys/example-hie.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.work.join("keys/example-hie.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret key is readable by others");
    }
    std::fs::create_dir_all(p.work.join("plugins")).unwrap();
    let wasm_arg = wasm.display().to_string();
    let out = p.ok(&[
        "plugin",
        "sign",
        "--key",
        "keys/example-hie.key",
        &wasm_arg,
        "--out",
        "plugins/check_lots.wasm",
    ]);
    assert!(out.contains(&key), "{out}");
    assert!(!out.contains(secret.trim()), "the secret key was printed");
    let deployed = p.work.join("plugins/check_lots.wasm");
    let signed = std::fs::read(&deployed).unwrap();
    (key, deployed, signed)
}

fn the_manifest_round_trips(p: &Partner, key: &str, signed: &[u8]) -> Manifest {
    // 5. The manifest round-trips: what build wrote is what inspect reads.
    let json = p.ok(&["plugin", "inspect", "--json", "plugins/check_lots.wasm"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["manifest"]["name"], "check-lots", "{json}");
    assert_eq!(v["manifest"]["version"], "0.1.0", "{json}");
    assert_eq!(v["manifest"]["publisher"], "Example HIE", "{json}");
    assert_eq!(v["manifest"]["wit"], izhub::plugin::manifest::WIT_VERSION);
    assert_eq!(v["manifest"]["grants"]["config"][0], "organization");
    assert_eq!(v["signature"], "valid", "{json}");
    assert_eq!(v["signer"], key, "{json}");
    let m = Manifest::of(signed).unwrap().unwrap();
    assert_eq!(m.label(), "check-lots@0.1.0");
    m
}

fn check_accepts_it(p: &Partner, deployed: &Path, key: &str, sim_addr: &str) -> PathBuf {
    // 6. `izhub check` accepts it where its publisher is trusted and shows
    // what it asks for against what the route grants.
    let trusted = format!("\"{key}\"");
    let pinned = "pin = \"check-lots@0.1.0\"\n[routes.plugins.config]\norganization = \"HIE\"\norgnization = \"typo\"";
    let config_path = p.work.join("izhub.toml");
    std::fs::write(&config_path, config(deployed, pinned, &trusted, sim_addr)).unwrap();
    let out = p.ok(&["check", "--config", "izhub.toml"]);
    assert!(out.contains("check-lots@0.1.0 by \"Example HIE\""), "{out}");
    assert!(out.contains(&format!("signed by {key}")), "{out}");
    assert!(out.contains("asks for: config [organization]"), "{out}");
    assert!(
        out.contains("warning: the route sets config orgnization that the plugin does not read"),
        "{out}"
    );
    assert!(out.contains("warning: the route grants log"), "{out}");
    config_path
}

/// What `izhub check` refuses; the tampered copy.
fn check_refuses_what_it_must(
    p: &Partner,
    deployed: &Path,
    signed: &[u8],
    wasm: &Path,
    m: &Manifest,
) -> Vec<u8> {
    let wasm_arg = wasm.display().to_string();
    // 7. Refusals, each naming the file and the reason.
    let check_refuses = |bytes: &[u8], why: &str| {
        write_atomically(deployed, bytes);
        let out = p.fails(&["check", "--config", "izhub.toml"]);
        assert!(out.contains("plugins/check_lots.wasm"), "{out}");
        assert!(out.contains(why), "expected '{why}':\n{out}");
    };
    // A changed byte in the code.
    let mut tampered = signed.to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    check_refuses(&tampered, "changed after it was signed");
    // Unsigned.
    check_refuses(&std::fs::read(wasm).unwrap(), "is not signed");
    // Signed by a key that is not trusted.
    p.ok(&[
        "plugin",
        "sign",
        "--key",
        "keys/someone-else.key",
        &wasm_arg,
        "--out",
        "other.wasm",
    ]);
    check_refuses(
        &std::fs::read(p.work.join("other.wasm")).unwrap(),
        "not among the trusted publishers",
    );
    // Another version than the route pins.
    let mut newer = m.clone();
    newer.version = "0.2.0".into();
    let newer_bytes = newer.write_into(&std::fs::read(wasm).unwrap()).unwrap();
    std::fs::write(p.work.join("newer.wasm"), &newer_bytes).unwrap();
    p.ok(&[
        "plugin",
        "sign",
        "--key",
        "keys/example-hie.key",
        "newer.wasm",
    ]);
    check_refuses(
        &std::fs::read(p.work.join("newer.wasm")).unwrap(),
        "pins check-lots@0.1.0, and this component is check-lots@0.2.0",
    );
    // A manifest for a WIT version this engine does not implement, signed.
    let mut future = m.clone();
    future.wit = "0.2.0".into();
    let future_bytes = future.write_into(&std::fs::read(wasm).unwrap()).unwrap();
    std::fs::write(p.work.join("future.wasm"), &future_bytes).unwrap();
    p.ok(&[
        "plugin",
        "sign",
        "--key",
        "keys/example-hie.key",
        "future.wasm",
    ]);
    let out = p.fails(&["plugin", "inspect", "future.wasm"]);
    assert!(out.contains("REFUSED"), "{out}");
    check_refuses(
        &std::fs::read(p.work.join("future.wasm")).unwrap(),
        "built for the izhub:plugin WIT 0.2.0",
    );
    tampered
}

async fn runs_and_keeps_running_through_a_tampered_reload(
    p: &Partner,
    config_path: &Path,
    deployed: &Path,
    signed: &[u8],
    tampered: &[u8],
) {
    // 8. Running: the signed build handles a message; the journal and
    // /metrics say which version did; a tampered file on hot reload is
    // refused and the running one stays.
    write_atomically(deployed, signed);
    let cfg = izhub::config::load(config_path).unwrap();
    let opts = ServeOptions {
        watch: Some(Duration::from_millis(50)),
        ..ServeOptions::default()
    };
    let engine = serve::start_with(&cfg, opts).await.unwrap();
    let admin = engine.admin.unwrap();
    let mut client = connect(&engine, "ehr").await;
    let answer = client
        .exchange(&sample("messages/vxu/vxu-valid-testgood-01.hl7"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA", "{:?}", segments(&answer));
    let metrics = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains(
            "izhub_plugin_messages_total{route=\"vxu\",plugin=\"check_lots\",version=\"0.1.0\"} 1"
        ),
        "{metrics}"
    );
    write_atomically(deployed, tampered);
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let h = http_get(admin, "/healthz").await;
        if h.contains("changed after it was signed") {
            break h;
        }
        assert!(Instant::now() < deadline, "no refusal on reload: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(health.contains("check_lots.wasm"), "{health}");
    let answer = client
        .exchange(
            &with_msh(
                &sample_text("messages/vxu/vxu-valid-testgood-01.hl7"),
                10,
                "K-2",
            )
            .into_bytes(),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA", "{:?}", segments(&answer));
    engine.stop().await;
    let journal = izhub::store::open(&p.work.join("journal.db")).unwrap();
    let stages = journal.stages_of("K-2").await.unwrap().unwrap_or_default();
    assert!(stages.starts_with("check_lots@0.1.0\t"), "{stages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_another_wit_version_is_refused() {
    // The contract's version changed in the partner's copy: the component
    // then imports izhub:plugin/host@0.2.0, and even without a manifest
    // saying so the engine refuses it by name rather than failing to link.
    let p = Partner::new();
    p.ok(&["plugin", "new", "old-contract"]);
    let krate = p.work.join("old-contract");
    let wit = krate.join("wit/plugin.wit");
    let text = std::fs::read_to_string(&wit).unwrap();
    let package = format!(
        "package izhub:plugin@{};",
        izhub::plugin::manifest::WIT_VERSION
    );
    assert!(text.contains(&package));
    std::fs::write(&wit, text.replace(&package, "package izhub:plugin@0.2.0;")).unwrap();
    let wasm = built(&p, "old-contract");
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(Manifest::of(&bytes).unwrap().unwrap().wit, "0.2.0");
    let message = root().join("samples/messages/vxu/vxu-valid-testgood-01.hl7");
    let message = message.display().to_string();
    let wasm_arg = wasm.display().to_string();
    let out = p.fails(&["plugin", "test", &wasm_arg, "--message", &message]);
    assert!(
        out.contains("built for the izhub:plugin WIT 0.2.0"),
        "{out}"
    );
    assert!(out.contains("old_contract.wasm"), "{out}");
    let bare = p.work.join("bare.wasm");
    std::fs::write(&bare, rewrite(&bytes, &[MANIFEST_SECTION], &[]).unwrap()).unwrap();
    let bare_arg = bare.display().to_string();
    let out = p.fails(&["plugin", "test", &bare_arg, "--message", &message]);
    assert!(
        out.contains("built for the izhub:plugin WIT 0.2.0"),
        "{out}"
    );
    assert!(out.contains("bare.wasm"), "{out}");
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// New, build, inspect and run a plugin in another language.
fn guest_language(lang: &str, name: &str, grants: &[&str]) {
    let p = Partner::new();
    p.ok(&["plugin", "new", name, "--lang", lang]);
    let wasm = built(&p, name);
    let inspected = p.ok(&["plugin", "inspect", &wasm.display().to_string()]);
    assert!(
        inspected.contains(&format!("name:        {name}")),
        "{inspected}"
    );
    assert!(inspected.contains("version:     0.1.0"), "{inspected}");
    let rejected = root().join("samples/messages/rejected/vxu-missing-birth-date-testerror-36.hl7");
    let mut args = vec![
        "plugin".to_string(),
        "test".to_string(),
        wasm.display().to_string(),
        "--message".to_string(),
        rejected.display().to_string(),
    ];
    for g in grants {
        args.push("--grant".into());
        args.push(g.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.ok(&args);
    assert!(
        out.contains("verdict: reject") && out.contains("issue: E 101 PID-7"),
        "{out}"
    );
}

#[test]
fn a_python_plugin_from_the_binary_alone() {
    if !on_path("componentize-py") {
        println!("skipped: componentize-py is not installed (pip install componentize-py==0.25.1)");
        return;
    }
    guest_language(
        "python",
        "py-check",
        &[
            "link:wasi:filesystem",
            "link:wasi:sockets",
            "link:wasi:clocks",
        ],
    );
}

#[test]
fn a_javascript_plugin_from_the_binary_alone() {
    if !on_path("node") || !on_path("npm") {
        println!("skipped: Node.js and npm are not installed");
        return;
    }
    guest_language("js", "js-check", &[]);
}
