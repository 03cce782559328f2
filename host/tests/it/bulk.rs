//! Bulk queries end to end, over real sockets to simulated IIS: the FHIR
//! Bulk Data API (kick-off, status, manifest, files, cancel, parameters
//! refused as the spec says), the per-destination throttle measured at the
//! simulator, clinics' queries answered while a bulk job runs, and a job
//! killed with SIGKILL that resumes without querying finished patients
//! again or writing a line twice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Answer, http};
use izhub::sim::SimOptions;
use izhub::sim::query::QueryOptions;
use serde_json::Value;

const TOKEN: &str = "bulk-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cohort of `n` patients, every third one in PA, the rest in MA.
fn cohort(n: usize) -> String {
    let mut csv = String::from("member_id,family,given,birth_date,sex,city,state,zip\n");
    for i in 1..=n {
        let state = if i % 3 == 0 { "PA" } else { "MA" };
        csv.push_str(&format!(
            "M{i},Family{i},Given{i},20{:02}-0{}-1{},F,Springfield,{state},01101\n",
            10 + i % 10,
            1 + i % 9,
            i % 9
        ));
    }
    csv
}

fn synthetic(name: &str) -> SimOptions {
    SimOptions {
        query: QueryOptions {
            synthetic: true,
            ambiguous: vec!["Ambig".into()],
            ..QueryOptions::default()
        },
        ..crate::common::sim_named(name)
    }
}

/// An engine whose query route picks the state's IIS, with an operator
/// (token) and a viewer.
fn config(ma: SocketAddr, pa: SocketAddr, extra_dest: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[[admin.users]]
name = "ops"
role = "operator"
password_hash = "{hash}"
token_sha256 = "{ops}"

[[admin.users]]
name = "view"
role = "viewer"
password_hash = "{hash}"
token_sha256 = "{view}"

[listeners.ehr]
listen = "127.0.0.1:0"

{}"#,
        routes(ma, pa, extra_dest),
        ops = sha256_hex(TOKEN),
        view = sha256_hex(VIEWER_TOKEN),
        hash = izhub::admin::auth::hash_password("unused password 123").unwrap(),
    )
}

/// The destinations and the query route alone (for `izhub bulk run`).
fn routes(ma: SocketAddr, pa: SocketAddr, extra_dest: &str) -> String {
    format!(
        r#"[destinations.ma-iis]
mllp = "{ma}"
{extra_dest}

[destinations.pa-iis]
mllp = "{pa}"
{extra_dest}

[[routes]]
name = "qbp"
message_types = ["QBP^Q11"]

[[routes.plugins]]
wasm = "{router}"
[routes.plugins.config.states]
MA = "ma-iis"
PA = "pa-iis"
"#,
        router = crate::common::plugin("route_by_jurisdiction"),
    )
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    http(addr, method, path, &headers, body).await
}

/// The path of an absolute URL the engine gave.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_string())
}

fn issue_code(a: &Answer) -> String {
    let v = a.json();
    assert_eq!(v["resourceType"], "OperationOutcome", "{}", a.body);
    v["issue"][0]["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_api_kick_off_status_manifest_files_cancel() {
    let ma = crate::common::start_sim(synthetic("MAIIS")).await;
    let pa = crate::common::start_sim(synthetic("PAIIS")).await;
    let (running, dir) = crate::common::engine_from(&config(
        ma.addr,
        pa.addr,
        "connections = 4\nbulk_max_in_flight = 3",
    ))
    .await;
    let admin = running.admin.unwrap();
    let id = a_group_from_a_cohort(admin).await;
    // The cohort is PHI: its directory is the engine user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let groups = dir.path().join("data/bulk/groups");
        for d in [groups.clone(), groups.join(&id)] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
        }
    }
    let export = format!("/fhir/Group/{id}/$export");
    export_refusals(admin, &export).await;
    let (status_path, manifest) = kick_off_and_poll(admin, &export).await;
    files_are_valid_fhir(admin, &manifest).await;
    // A path that is not one of the job's files.
    let probe = call(
        admin,
        "GET",
        &format!("{}/job.db", status_path.replace("bulkstatus", "bulkfiles")),
        TOKEN,
        &[],
        None,
    )
    .await;
    assert_eq!(probe.status, 404);

    // DELETE cancels and removes the job.
    let del = call(admin, "DELETE", &status_path, TOKEN, &[], None).await;
    assert_eq!(del.status, 202);
    assert_eq!(
        call(admin, "GET", &status_path, TOKEN, &[], None)
            .await
            .status,
        404
    );
    running.stop().await;
}

/// A Group from a cohort: one unreadable row is counted, not fatal. Its id.
async fn a_group_from_a_cohort(admin: SocketAddr) -> String {
    let mut csv = cohort(30);
    csv.push_str("M31,Ambig,Amy,2015-01-01,F,Springfield,MA,01101\n");
    csv.push_str("M32,,NoFamily,2015-01-01,F,Springfield,MA,01101\n");
    let made = call(
        admin,
        "POST",
        "/fhir/Group",
        TOKEN,
        &[("Content-Type", "text/csv")],
        Some(&csv),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let group = made.json();
    assert_eq!(group["resourceType"], "Group");
    assert_eq!(group["quantity"], 31, "{group}");
    let group_path = path_of(made.header("location").unwrap());
    let id = group["id"].as_str().unwrap().to_string();
    assert_eq!(group_path, format!("/fhir/Group/{id}"));
    assert_eq!(
        call(admin, "GET", &group_path, TOKEN, &[], None)
            .await
            .status,
        200
    );
    id
}

/// Viewers may not export PHI; what the spec says to refuse, with 400 and
/// an OperationOutcome. A cohort that cannot be read is refused naming
/// what is wrong, but no path of the server's.
async fn export_refusals(admin: SocketAddr, export: &str) {
    let bad = call(
        admin,
        "POST",
        "/fhir/Group",
        TOKEN,
        &[("Content-Type", "text/csv")],
        Some("no,columns,we,know\n1,2,3,4\n"),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("cohort.csv"), "{}", bad.body);
    assert!(
        !bad.body.contains("/data/bulk"),
        "a server path: {}",
        bad.body
    );
    let async_ = [("Prefer", "respond-async")];
    let viewer = call(admin, "GET", export, VIEWER_TOKEN, &async_, None).await;
    assert_eq!(viewer.status, 403, "{}", viewer.body);
    // What the spec says to refuse with 400 and an OperationOutcome.
    let no_prefer = call(admin, "GET", export, TOKEN, &[], None).await;
    assert_eq!(no_prefer.status, 400);
    assert_eq!(issue_code(&no_prefer), "invalid");
    for bad in [
        "_outputFormat=text/csv",
        "_type=Observation",
        "_since=yesterday",
        "_typeFilter=Immunization%3Fstatus=completed",
    ] {
        let a = call(
            admin,
            "GET",
            &format!("{export}?{bad}"),
            TOKEN,
            &async_,
            None,
        )
        .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        issue_code(&a);
    }
}

/// Kick-off, then poll: 202 with X-Progress until the manifest, checked.
/// The status path and the manifest.
async fn kick_off_and_poll(admin: SocketAddr, export: &str) -> (String, Value) {
    let async_ = [("Prefer", "respond-async")];
    let kick = call(
        admin,
        "GET",
        &format!("{export}?_outputFormat=application/fhir%2Bndjson&_type=Patient,Immunization,ImmunizationRecommendation"),
        TOKEN,
        &async_,
        None,
    )
    .await;
    assert_eq!(kick.status, 202, "{}", kick.body);
    let status_path = path_of(kick.header("content-location").expect("Content-Location"));
    let started = Instant::now();
    let mut saw_progress = false;
    let manifest = loop {
        let a = call(admin, "GET", &status_path, TOKEN, &[], None).await;
        match a.status {
            202 => {
                let p = a.header("x-progress").expect("X-Progress while running");
                assert!(p.ends_with("/31 patients"), "{p}");
                saw_progress = true;
            }
            200 => break a,
            other => panic!("status {other}: {}", a.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "export never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(saw_progress || started.elapsed() < Duration::from_millis(50));
    assert!(
        manifest
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let m = manifest.json();
    assert!(m["transactionTime"].as_str().unwrap().ends_with('Z'), "{m}");
    assert!(m["request"].as_str().unwrap().contains(export), "{m}");
    assert_eq!(m["requiresAccessToken"], true);
    let output = m["output"].as_array().unwrap();
    let types: HashSet<&str> = output.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert!(
        types.contains("Patient") && types.contains("Immunization"),
        "{m}"
    );
    assert!(
        types.contains("ImmunizationRecommendation"),
        "a recommendation type asks for the forecast (Z44): {m}"
    );
    assert!(
        !types.contains("ImmunizationEvaluation"),
        "not asked for: {m}"
    );
    let errors = m["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{m}");
    // Every query sent is counted, also once the job is read back finished.
    let queries = m["extension"]["izhub"]["queries"].as_u64().unwrap_or(0);
    assert!(queries >= 31, "{m}");
    (status_path, m)
}

/// Files: fhir+ndjson, every line a resource of its type, ids unique, and
/// every line valid FHIR R4 (checked by a FHIR model library).
async fn files_are_valid_fhir(admin: SocketAddr, m: &Value) {
    let output = m["output"].as_array().unwrap();
    let errors = m["error"].as_array().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let mut saved = Vec::new();
    for o in output {
        let kind = o["type"].as_str().unwrap();
        let f = call(
            admin,
            "GET",
            &path_of(o["url"].as_str().unwrap()),
            TOKEN,
            &[],
            None,
        )
        .await;
        assert_eq!(f.status, 200);
        assert_eq!(f.header("content-type"), Some("application/fhir+ndjson"));
        let lines: Vec<&str> = f.body.lines().collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap());
        let mut ids = HashSet::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], kind);
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_string()),
                "duplicate {line}"
            );
        }
        if kind == "Patient" {
            assert_eq!(ids.len(), 30, "every patient but the ambiguous one");
        }
        let path = downloads.path().join(format!("{kind}.ndjson"));
        std::fs::write(&path, &f.body).unwrap();
        saved.push(path);
    }
    let e = call(
        admin,
        "GET",
        &path_of(errors[0]["url"].as_str().unwrap()),
        TOKEN,
        &[],
        None,
    )
    .await;
    assert!(
        e.body.contains("multiple-matches"),
        "the ambiguous patient: {}",
        e.body
    );
    assert!(
        e.body.contains("NoFamily") || e.body.contains("family"),
        "the bad row: {}",
        e.body
    );
    let errors_path = downloads.path().join("OperationOutcome.ndjson");
    std::fs::write(&errors_path, &e.body).unwrap();
    saved.push(errors_path);
    crate::common::assert_valid_fhir(&saved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_and_clinics_are_answered_during_a_bulk_job() {
    let slow = |name: &str| SimOptions {
        delay: Duration::from_millis(40),
        ..synthetic(name)
    };
    let ma = crate::common::start_sim(slow("MAIIS")).await;
    let pa = crate::common::start_sim(slow("PAIIS")).await;
    // Asked for 6 at once, but 4 connections keep one for clinics: 3.
    let (running, _dir) = crate::common::engine_from(&config(
        ma.addr,
        pa.addr,
        "connections = 4\nbulk_max_in_flight = 6",
    ))
    .await;
    let admin = running.admin.unwrap();
    let made = call(
        admin,
        "POST",
        "/fhir/Group",
        TOKEN,
        &[("Content-Type", "text/csv")],
        Some(&cohort(150)),
    )
    .await;
    let id = made.json()["id"].as_str().unwrap().to_string();
    let kick = call(
        admin,
        "GET",
        &format!("/fhir/Group/{id}/$export"),
        TOKEN,
        &[("Prefer", "respond-async")],
        None,
    )
    .await;
    assert_eq!(kick.status, 202, "{}", kick.body);
    let status_path = path_of(kick.header("content-location").unwrap());

    // Meanwhile a clinic queries: answered in about the IIS's own time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let query = crate::common::sample_text("messages/qbp/qbp-q11-z34-01.hl7");
    let query = crate::common::with_msh(&query, 10, "CLINIC-Q1")
        .replace("^Myfaircity^GA^", "^Myfaircity^MA^");
    let mut client = crate::common::connect(&running, "ehr").await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let answer = client
            .exchange(query.as_bytes(), crate::common::TIMEOUT)
            .await
            .unwrap();
        worst = worst.max(t.elapsed());
        assert!(String::from_utf8_lossy(&answer).contains("RSP^K11"));
    }
    assert!(
        worst < Duration::from_millis(400),
        "a clinic's query waited {worst:?} behind the bulk job"
    );
    let started = Instant::now();
    loop {
        let a = call(admin, "GET", &status_path, TOKEN, &[], None).await;
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 202, "{}", a.body);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At the simulators: never more than 3 bulk queries plus the clinic's one
    // at once, and the limit was reached (the job did run in parallel).
    for sim in [&ma, &pa] {
        let peak = sim.state.load().peak();
        assert!(peak <= 4, "{peak} messages at once at the IIS");
        assert!(peak >= 3, "the job never used its 3 places: peak {peak}");
        assert_eq!(sim.state.load().over_limit(), 0);
    }
    running.stop().await;
}

/// The `izhub` binary with arguments, as a child process.
fn izhub(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_izhub"));
    c.args(args)
        .args(["--log", "warn"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// `izhub bulk run` with these arguments after `run`; asserts it succeeded.
fn bulk_run(cfg: &Path, cohort: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "bulk",
        "run",
        "-c",
        cfg.to_str().unwrap(),
        "--cohort",
        cohort.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = izhub(&args).output().unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// `izhub bulk run` of a cohort of `n` through the query route to these
/// two IIS; its output directory lives as long as the returned directory.
fn run_cohort(
    ma: SocketAddr,
    pa: SocketAddr,
    n: usize,
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("izhub.toml");
    std::fs::write(&cfg, routes(ma, pa, "")).unwrap();
    let cohort_path = dir.path().join("cohort.csv");
    std::fs::write(&cohort_path, cohort(n)).unwrap();
    let out = dir.path().join("out");
    bulk_run(&cfg, &cohort_path, &out, extra);
    (dir, out)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_with_sigkill_resumes_exactly_once() {
    let slow = |name: &str| SimOptions {
        delay: Duration::from_millis(3),
        ..synthetic(name)
    };
    let ma = crate::common::start_sim(slow("MAIIS")).await;
    let pa = crate::common::start_sim(slow("PAIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("izhub.toml");
    let text = routes(ma.addr, pa.addr, "connections = 5\nbulk_max_in_flight = 4");
    std::fs::write(&cfg, text).unwrap();
    let n = 10_000;
    let cohort_path = dir.path().join("cohort.csv");
    std::fs::write(&cohort_path, cohort(n)).unwrap();
    let out = dir.path().join("out");
    let (cfg_s, cohort_s, out_s) = (
        cfg.to_str().unwrap(),
        cohort_path.to_str().unwrap(),
        out.to_str().unwrap(),
    );

    let mut child = izhub(&[
        "bulk", "run", "-c", cfg_s, "--cohort", cohort_s, "--out", out_s,
    ])
    .spawn()
    .unwrap();
    // Kill it a third of the way through.
    let started = Instant::now();
    while lines(&out.join("Patient.ndjson")).len() < n / 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("finished before it could be killed: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What the job had committed when it died.
    let done_before: Vec<i64> = {
        let conn = rusqlite::Connection::open(out.join("job.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT idx FROM patients WHERE done = 1")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        !done_before.is_empty() && done_before.len() < n,
        "{}",
        done_before.len()
    );

    let status = izhub(&["bulk", "status", "--out", out_s]).output().unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("Running"));
    let resumed = izhub(&["bulk", "resume", "-c", cfg_s, "--out", out_s])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr)
    );

    // Every patient once in the output, no line twice.
    let patients = lines(&out.join("Patient.ndjson"));
    assert_eq!(patients.len(), n, "one Patient per cohort row");
    let mut ids = HashSet::new();
    for line in &patients {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            ids.insert(v["id"].as_str().unwrap().to_string()),
            "twice: {line}"
        );
    }
    let imms = lines(&out.join("Immunization.ndjson"));
    let unique: HashSet<&String> = imms.iter().collect();
    assert_eq!(
        unique.len(),
        imms.len(),
        "an Immunization line written twice"
    );
    // Finished patients were not queried again.
    for idx in &done_before {
        let tag = format!("p{idx}");
        let asked = ma.state.queries_for(&tag) + pa.state.queries_for(&tag);
        assert_eq!(
            asked, 1,
            "{tag} was done before the kill but asked {asked} times"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_lists_what_each_side_lacks() {
    let ma = crate::common::start_sim(synthetic("MAIIS")).await;
    let pa = crate::common::start_sim(synthetic("PAIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("izhub.toml");
    std::fs::write(&cfg, routes(ma.addr, pa.addr, "")).unwrap();
    let cohort_path = dir.path().join("cohort.csv");
    std::fs::write(&cohort_path, cohort(2)).unwrap();
    // The EHR has a flu shot the IIS does not, and none of the IIS's doses.
    let ehr = dir.path().join("ehr.ndjson");
    std::fs::write(
        &ehr,
        r#"{"resourceType":"Immunization","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"88"}]},"patient":{"identifier":{"value":"M1"}},"occurrenceDateTime":"2021-10-01"}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    bulk_run(
        &cfg,
        &cohort_path,
        &out,
        &["--ehr-history", ehr.to_str().unwrap()],
    );
    let found = lines(&out.join("reconciliation.ndjson"));
    let text = found.join("\n");
    assert!(
        text.contains("only-in-ehr") && text.contains("\"88\""),
        "{text}"
    );
    assert!(
        text.contains("only-in-iis"),
        "the IIS's doses the EHR lacks: {text}"
    );
    let csv = lines(&out.join("reconciliation.csv"));
    assert_eq!(csv.len(), found.len() + 1, "a header and one row per line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_answers_never_put_another_patient_into_an_export() {
    // Each IIS sends every tenth answer twice on its persistent connection.
    let stray = |name: &str| SimOptions {
        wire: izhub::sim::Wire {
            stray_every: 10,
            ..Default::default()
        },
        ..synthetic(name)
    };
    let ma = crate::common::start_sim(stray("MAIIS")).await;
    let pa = crate::common::start_sim(stray("PAIIS")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("izhub.toml");
    let text = routes(ma.addr, pa.addr, "connections = 2\nbulk_max_in_flight = 2");
    std::fs::write(&cfg, text).unwrap();
    let n = 147;
    let cohort_path = dir.path().join("cohort.csv");
    std::fs::write(&cohort_path, cohort(n)).unwrap();
    let out = dir.path().join("out");
    bulk_run(&cfg, &cohort_path, &out, &[]);
    // The strays happened: each IIS answered more than once in ten twice.
    assert!(ma.state.received() >= 10 && pa.state.received() >= 10);
    let patients = lines(&out.join("Patient.ndjson"));
    assert_eq!(patients.len(), n, "every cohort row found once");
    for line in &patients {
        let v: Value = serde_json::from_str(line).unwrap();
        let member = v["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == "urn:izhub:cohort:member-id")
            .and_then(|i| i["value"].as_str())
            .unwrap_or_else(|| panic!("no member id: {line}"));
        let row = member.trim_start_matches('M');
        assert_eq!(
            v["name"][0]["family"].as_str(),
            Some(format!("Family{row}").as_str()),
            "member {member} was exported with another person's answer: {line}"
        );
    }
    let status = izhub(&["bulk", "status", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("Completed"));
}

/// An IIS's considered refusal of a query (AE with a data error) is not
/// asked again: each patient is queried once, and the refusal is in the
/// errors file with the IIS's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_the_iis_refuses_is_not_asked_again() {
    let mut ma = synthetic("MAIIS");
    ma.query.invalid = vec!["Family1".into()];
    let ma = crate::common::start_sim(ma).await;
    let pa = crate::common::start_sim(synthetic("PAIIS")).await;
    let (_dir, out) = run_cohort(ma.addr, pa.addr, 3, &[]);
    assert_eq!(
        ma.state.received() + pa.state.received(),
        3,
        "one query per patient"
    );
    let errors = lines(&out.join("OperationOutcome.ndjson")).join("\n");
    assert!(
        errors.contains("The patient name is not valid for a query"),
        "{errors}"
    );
    assert_eq!(lines(&out.join("Patient.ndjson")).len(), 2);
}

/// `izhub bulk run` leaves a Bulk Data manifest beside its files, and an
/// identifier the IIS assigned is named for the destination that answered
/// (`ma-iis`), not for whatever the answer's MSH-4 says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_run_writes_a_manifest_and_names_identifiers_for_the_destination() {
    let ma = crate::common::start_sim(synthetic("MAIIS")).await;
    let pa = crate::common::start_sim(synthetic("PAIIS")).await;
    let (_dir, out) = run_cohort(ma.addr, pa.addr, 3, &[]);
    let mut systems: Vec<String> = lines(&out.join("Patient.ndjson"))
        .iter()
        .flat_map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            v["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["system"].as_str())
                .filter(|s| s.starts_with("urn:izhub:iis:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    systems.sort();
    assert_eq!(
        systems,
        [
            "urn:izhub:iis:ma-iis:MAIIS",
            "urn:izhub:iis:ma-iis:MAIIS",
            "urn:izhub:iis:pa-iis:PAIIS"
        ]
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let output = manifest["output"].as_array().unwrap();
    let patients = output.iter().find(|o| o["type"] == "Patient").unwrap();
    assert_eq!(patients["count"], 3);
    assert_eq!(patients["url"], "Patient.ndjson");
    assert!(manifest["transactionTime"].as_str().is_some());
    assert_eq!(manifest["extension"]["izhub"]["queries"], 3);
}

/// A registry that names the forecast's vaccine in OBX 30979-9, the
/// evaluation's in 38890-0, and answers a complete series with a status
/// alone: every recommendation and evaluation names its vaccine group, and
/// the complete series are exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_in_registry_codes_keep_their_vaccines_and_complete_series() {
    let registry = |name: &str| {
        let mut o = synthetic(name);
        o.query.registry_codes = true;
        o
    };
    let ma = crate::common::start_sim(registry("MAIIS")).await;
    let pa = crate::common::start_sim(registry("PAIIS")).await;
    let (_dir, out) = run_cohort(ma.addr, pa.addr, 6, &["--forecast"]);
    let read = |kind: &str| -> Vec<Value> {
        lines(&out.join(format!("{kind}.ndjson")))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let recs: Vec<Value> = read("ImmunizationRecommendation")
        .iter()
        .flat_map(|r| r["recommendation"].as_array().unwrap().clone())
        .collect();
    assert!(!recs.is_empty());
    for rec in &recs {
        assert_eq!(
            rec["vaccineCode"][0]["coding"][0]["system"], "http://hl7.org/fhir/sid/cvx",
            "{rec}"
        );
    }
    assert!(
        recs.iter()
            .any(|r| r["forecastStatus"]["coding"][0]["code"] == "C"
                && r.get("dateCriterion").is_none()),
        "no complete series among {recs:#?}"
    );
    let evals = read("ImmunizationEvaluation");
    assert!(!evals.is_empty());
    for e in &evals {
        assert_eq!(
            e["targetDisease"]["coding"][0]["system"], "http://hl7.org/fhir/sid/cvx",
            "{e}"
        );
    }
}
