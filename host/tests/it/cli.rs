//! The `izhub` binary itself: `check`, `send`, and a third-party MLLP client.

use std::process::Command;

use crate::common::*;

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
    for sub in [
        "serve", "check", "validate", "sim-iis", "send", "bench", "user",
    ] {
        let out = izhub().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: izhub"),
            "{sub}"
        );
    }
}

/// Runs `izhub ARGS` with `input` on standard input.
fn izhub_with_input(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = izhub()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    // A command that refuses its arguments exits without reading its input:
    // what it answered is what the caller asserts on.
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn user_hash_and_token_print_what_the_configuration_takes() {
    let out = izhub_with_input(&["user", "hash", "--password-stdin"], "a long password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap();
    let phc = phc.trim();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    izhub::config::check_password_hash(phc).unwrap();
    assert!(izhub::admin::auth::verify_password(phc, "a long password"));

    let short = izhub_with_input(&["user", "hash", "--password-stdin"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("shorter than 8 characters"));
    // Without --password-stdin a terminal is needed.
    let no_tty = izhub_with_input(&["user", "hash"], "a long password\n");
    assert!(!no_tty.status.success());
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("--password-stdin"));

    let out = izhub().args(["user", "token"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token:  "))
        .unwrap();
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap();
    assert_eq!(token.len(), 64);
    let expected = izhub::config::parse_sha256_hex(digest).unwrap();
    use sha2::Digest;
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(token.as_bytes())),
        expected
    );
}

#[test]
fn user_add_appends_checked_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    let config = path.to_str().unwrap();
    let add = |args: &[&str]| {
        let mut all = vec!["user", "add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--password-stdin", "--config", config]);
        izhub_with_input(&all, "a long password\n")
    };
    // A missing file is created, readable by its owner only.
    let out = add(&["ana", "--role", "operator", "--token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut text = std::fs::read_to_string(&path).unwrap();
    text += "\n[destinations.wa]\nmllp = \"127.0.0.1:9\"\n\n[[routes]]\nname = \"vxu\"\ndestinations = [\"wa\"]\n";
    std::fs::write(&path, &text).unwrap();
    let out = add(&[
        "vic",
        "--role",
        "viewer",
        "--routes",
        "vxu",
        "--destinations",
        "wa",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refused: a duplicate, an unknown route, an unknown role, a bad name.
    let dup = add(&["ana", "--role", "viewer"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already has a user 'ana'"));
    let unknown = add(&["bo", "--role", "viewer", "--routes", "nowhere"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("admin.users[2].routes: unknown route 'nowhere' (defined: vxu)"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    assert!(!add(&["bo", "--role", "root"]).status.success());
    assert!(!add(&["bad name", "--role", "viewer"]).status.success());
    assert_eq!(
        std::fs::read_to_string(&path)
            .unwrap()
            .matches("[[admin.users]]")
            .count(),
        2
    );

    let cfg = izhub::config::load(&path).unwrap();
    let users = &cfg.admin_access.users;
    assert_eq!(users.len(), 2);
    assert_eq!(
        (users[0].name.as_str(), users[0].role),
        ("ana", izhub::config::Role::Operator)
    );
    use sha2::Digest;
    assert_eq!(
        users[0].token_sha256,
        Some(sha2::Sha256::digest(token.as_bytes()).into())
    );
    assert_eq!(users[1].routes, Some(vec!["vxu".to_string()]));
    assert_eq!(users[1].destinations, Some(vec!["wa".to_string()]));
    assert!(izhub::admin::auth::verify_password(
        &users[1].password_hash,
        "a long password"
    ));
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

    // At a set rate: 100 messages at 200 a second cannot finish before
    // their schedule (half a second), however fast the engine answers.
    let started = std::time::Instant::now();
    let stdout = izhub_ok([
        "bench",
        "--to",
        &addr,
        "--connections",
        "4",
        "--messages",
        "100",
        "--warmup",
        "0",
        "--rate",
        "200",
        "--file",
        &path,
    ])
    .await;
    assert!(stdout.contains("offered   200 msgs/s"), "{stdout}");
    assert!(stdout.contains("AA=100"), "{stdout}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(490),
        "{stdout}"
    );
    assert_eq!(h.sim("MA").received(), 501);
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_izhub"))
        .args(["bench", "--to", &addr, "--rate", "0", "--file", &path])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("'0' is not a rate"), "{stderr}");
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

/// A configuration whose one VXU route is validate-iz under `profile`,
/// delivering to an IIS that a dry run never contacts.
fn validate_config(dir: &std::path::Path, profile: &str) -> std::path::PathBuf {
    let path = dir.join(format!("validate-{profile}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[listeners.ehr]
listen = "127.0.0.1:0"

[destinations.iis]
mllp = "127.0.0.1:9"

[codesets]
dir = "{codesets}"

[[routes]]
name = "vxu"
message_types = ["VXU^V04"]
destinations = ["iis"]

[[routes.plugins]]
wasm = "{wasm}"
grants = ["log", "config", "codesets"]
[routes.plugins.config]
profile = "{profile}"
"#,
            codesets = root().join("samples/codesets").display(),
            wasm = plugin("validate_iz"),
        ),
    )
    .unwrap();
    path
}

/// `N messages: a delivered clean, b delivered with warnings, c would be blocked`
fn summary(report: &str) -> (usize, usize, usize, usize) {
    let line = report
        .lines()
        .find(|l| l.contains(" would be blocked"))
        .unwrap();
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

#[test]
fn validate_reports_a_batch_per_detection_and_lists_what_would_be_blocked() {
    plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = validate_config(dir.path(), "iis-practice");
    let inputs = [
        root().join("samples/messages/vxu"),
        root().join("samples/messages/rejected"),
        root().join("samples/corpus/certification"),
    ];
    let out = izhub()
        .arg("validate")
        .args(&inputs)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some would be blocked: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (messages, clean, warned, blocked) = summary(&text);
    assert_eq!(messages, clean + warned + blocked, "{text}");
    assert!(messages >= 77, "{text}");
    println!("default profile: {blocked} of {messages} blocked");
    // The MCIR sample is delivered (with warnings); the rejected samples are not.
    assert!(
        !text.contains("vxu-mcir-dtap-hepb-ipv.hl7:1  MSH-10"),
        "{text}"
    );
    assert!(
        text.contains("vxu-missing-birth-date-testerror-36.hl7:1  MSH-10"),
        "{text}"
    );
    assert!(text.contains("[patient-birth-date-missing]"), "{text}");
    // Per detection: messages, share, count, level and an example location.
    let row = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("vaccination-sub-id-counter-invalid ")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("warning") && row.contains("vxu-mcir-dtap-hepb-ipv.hl7:1 RXA[1]-2"),
        "{row}"
    );
    // The public certification messages the default profile blocks: each for
    // a reason a registry would give.
    let certification_blocked = text
        .lines()
        .filter(|l| l.contains("certification/") && l.contains("  MSH-10 "))
        .count();
    println!("certification messages blocked: {certification_blocked} of 33");
    assert!(certification_blocked <= 3, "{text}");
    for why in ["[vaccination-missing]", "[patient-id-type-missing]"] {
        assert!(text.contains(why), "{why}: {text}");
    }
    // A vaccine code the registry does not know concerns that one dose: the
    // registry rejects the dose and keeps the rest, so it warns.
    let unknown_cvx = text
        .lines()
        .find(|l| l.trim_start().starts_with("vaccination-cvx-unrecognized "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(unknown_cvx.contains(" warning "), "{unknown_cvx}");

    strict_ig_and_other_formats(dir.path(), &config);
    refusals_exit_2(dir.path(), &config);
}

/// strict-ig blocks the MCIR sample; CSV and HTML carry the same report.
fn strict_ig_and_other_formats(dir: &std::path::Path, config: &std::path::Path) {
    let strict = validate_config(dir, "strict-ig");
    let csv_path = dir.join("report.csv");
    let out = izhub()
        .arg("validate")
        .arg(root().join("samples/messages/vxu/vxu-mcir-dtap-hepb-ipv.hl7"))
        .args(["--format", "csv", "--out"])
        .arg(&csv_path)
        .arg("--config")
        .arg(&strict)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(csv.starts_with("section,id,level,messages,share_percent,count,example,source,control_id,sender,answer,sentence\r\n"), "{csv}");
    assert!(
        csv.contains("\r\nblocked,vaccination-sub-id-counter-invalid,error,"),
        "{csv}"
    );
    assert!(csv.contains(",270690,1255-60-20,AE,"), "{csv}");
    let out = izhub()
        .arg("validate")
        .arg(root().join("samples/messages/rejected"))
        .args(["--format", "html", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with("<!doctype html>") && page.contains("Would be blocked"),
        "{page}"
    );
    assert!(
        page.contains("segment 5 (&#39;WHOOPS"),
        "the engine's own refusal, escaped: {page}"
    );
    assert!(!page.contains("<script"), "{page}");
}

/// A route that does not exist, or nothing to read: exit 2, saying why.
fn refusals_exit_2(dir: &std::path::Path, config: &std::path::Path) {
    let out = izhub()
        .arg("validate")
        .arg(root().join("samples/messages/vxu"))
        .args(["--route", "nope", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named 'nope' (routes: vxu)"));
    let out = izhub()
        .arg("validate")
        .arg(dir.join("missing.hl7"))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.hl7"));
}
