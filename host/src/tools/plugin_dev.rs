//! Tools for plugin authors: `izhub plugin test` and `bench` (`new` and
//! `build` are the kit's, in [`super::plugin_kit`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::{Grant, PluginSpec};
use crate::hl7::Severity;
use crate::plugin::{
    CallStats, Envelope, LoadedPlugin, Outcome, PluginError, Runtime, RuntimeOptions, Verdict,
};

/// Settings for `izhub plugin test` and `bench`.
#[derive(Debug, Clone, Default)]
pub struct TestSetup {
    pub config: Vec<(String, String)>,
    pub tables: Vec<(String, PathBuf)>,
    /// Extra grants, e.g. `link:wasi:filesystem` for a Python plugin.
    pub grants: Vec<String>,
    /// A code-set directory whose tables are loaded and granted.
    pub codesets: Option<PathBuf>,
}

/// Loads one plugin with production limits, outside any route.
pub fn load_for_test(
    runtime: &Runtime,
    wasm: &Path,
    setup: &TestSetup,
) -> anyhow::Result<LoadedPlugin> {
    let mut grants: BTreeSet<Grant> = [Grant::Log, Grant::Config].into_iter().collect();
    for g in &setup.grants {
        grants.insert(
            crate::config::parse_grant(g, |_| false)
                .map_err(|e| anyhow::anyhow!("--grant {g}: {e}"))?,
        );
    }
    let mut tables = BTreeMap::new();
    if let Some(dir) = &setup.codesets {
        let sets = izhub_codesets::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, table) in sets.tables {
            grants.insert(Grant::Lookup(name.clone()));
            tables.insert(name, table.entries);
        }
    }
    for (name, path) in &setup.tables {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("table {name}: cannot read {}", path.display()))?;
        let table: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once(['=', ',', '\t']))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        tables.insert(name.clone(), table);
        grants.insert(Grant::Lookup(name.clone()));
    }
    let spec = PluginSpec {
        name: wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        wasm: wasm.to_path_buf(),
        at: Default::default(),
        time_limit: Duration::from_millis(200),
        memory_limit: 32 << 20,
        max_output: 4 << 20,
        max_input: 2 << 20,
        grants,
        config: setup.config.iter().cloned().collect(),
        pin: None,
        trusted: None,
    };
    // The same checks as in a route (a signature present must hold, the WIT
    // version must fit), with no publisher required.
    let (bytes, provenance) = crate::plugin::admit(&spec)?;
    let component = runtime
        .compile_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    Ok(runtime.load(&spec, &component, provenance, &Arc::new(tables))?)
}

fn envelope<'a>(
    hl7: &'a str,
    layout: &'a [u32],
    attributes: &'a [(String, String)],
) -> Envelope<'a> {
    Envelope {
        id: "test-1",
        route: "test",
        source: "test",
        received_at: "2026-01-01T00:00:00.000Z",
        hl7,
        attributes,
        layout,
    }
}

/// A stable rendering of one result, for golden files.
pub fn render(input: &str, result: &Result<Outcome, PluginError>) -> String {
    let mut out = String::new();
    match result {
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
        Ok(o) => {
            let verdict = match &o.verdict {
                Verdict::Continue(None) => "continue".to_string(),
                Verdict::Continue(Some(_)) => "continue (message changed)".to_string(),
                Verdict::Reject(_) => "reject".to_string(),
                Verdict::RouteTo(d) => format!("route-to {}", d.join(", ")),
            };
            let _ = writeln!(out, "verdict: {verdict}");
            let issues: Vec<_> = match &o.verdict {
                Verdict::Reject(found) => found.iter().chain(o.issues.iter()).collect(),
                _ => o.issues.iter().collect(),
            };
            for i in issues {
                let sev = match i.severity {
                    Severity::Error => "E",
                    Severity::Warning => "W",
                    Severity::Info => "I",
                };
                let _ = writeln!(
                    out,
                    "issue: {sev} {} {} {} {}",
                    i.code, i.location, i.app_code, i.text
                );
            }
            for (k, v) in &o.attributes {
                let _ = writeln!(out, "attribute: {k}={v}");
            }
            if let Verdict::Continue(Some(text)) = &o.verdict {
                let before: Vec<&str> = input.split('\r').filter(|s| !s.is_empty()).collect();
                let after: Vec<&str> = text.split('\r').filter(|s| !s.is_empty()).collect();
                for i in 0..before.len().max(after.len()) {
                    match (before.get(i), after.get(i)) {
                        (Some(b), Some(a)) if a == b => {}
                        (b, a) => {
                            if let Some(b) = b {
                                let _ = writeln!(out, "- {b}");
                            }
                            if let Some(a) = a {
                                let _ = writeln!(out, "+ {a}");
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs a plugin on message files and prints what it did; with `expect`,
/// compares each result with `DIR/<file stem>.expected` (or writes it when
/// `bless`). Returns the number of mismatches.
pub async fn test_plugin(
    wasm: &Path,
    messages: &[PathBuf],
    setup: &TestSetup,
    expect: Option<&Path>,
    bless: bool,
) -> anyhow::Result<usize> {
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let plugin = load_for_test(&runtime, wasm, setup)?;
    let mut mismatches = 0;
    for file in messages {
        let raw = super::read_message_file(file)?;
        let (text, _) =
            crate::hl7::decode(&raw).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let layout = crate::hl7::layout(&text).unwrap_or_default();
        let (result, stats): (_, CallStats) = runtime
            .call_with_stats(&plugin, &envelope(&text, &layout, &[]))
            .await;
        let rendered = render(&text, &result);
        println!("== {}", file.display());
        print!("{rendered}");
        println!(
            "time: {:.3} ms, peak memory: {:.1} MiB",
            stats.elapsed.as_secs_f64() * 1e3,
            stats.peak_memory as f64 / (1 << 20) as f64
        );
        if let Some(dir) = expect {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let golden = dir.join(format!("{stem}.expected"));
            if bless {
                std::fs::create_dir_all(dir)?;
                std::fs::write(&golden, &rendered)?;
                println!("wrote {}", golden.display());
            } else {
                match std::fs::read_to_string(&golden) {
                    Ok(want) if want == rendered => println!("matches {}", golden.display()),
                    Ok(want) => {
                        mismatches += 1;
                        println!("MISMATCH with {}:", golden.display());
                        for line in want.lines().filter(|l| !rendered.lines().any(|r| r == *l)) {
                            println!("  expected: {line}");
                        }
                        for line in rendered.lines().filter(|l| !want.lines().any(|w| w == *l)) {
                            println!("  got:      {line}");
                        }
                    }
                    Err(_) => {
                        mismatches += 1;
                        println!(
                            "MISSING {} (run with --bless to write it)",
                            golden.display()
                        );
                    }
                }
            }
        }
    }
    Ok(mismatches)
}

/// Per-call cost of a plugin, fresh instance each call, with and without the
/// sandbox limits, measured in one run.
pub async fn bench_plugin(
    wasm: &Path,
    message: &Path,
    setup: &TestSetup,
    iterations: usize,
    perf_map: bool,
) -> anyhow::Result<()> {
    let raw = super::read_message_file(message)?;
    let (text, _) =
        crate::hl7::decode(&raw).map_err(|e| anyhow::anyhow!("{}: {e}", message.display()))?;
    let layout = crate::hl7::layout(&text).unwrap_or_default();
    println!(
        "plugin {} on {} ({} bytes), {iterations} calls each",
        wasm.display(),
        message.display(),
        text.len()
    );
    let mut means = Vec::new();
    for (label, unlimited) in [
        ("limits on", false),
        ("limits off", true),
        ("limits on", false),
    ] {
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: None,
            unlimited,
            perf_map,
        })?;
        let plugin = load_for_test(&runtime, wasm, setup)?;
        let env = envelope(&text, &layout, &[]);
        for _ in 0..iterations.min(200) {
            let _ = runtime.call(&plugin, &env).await;
        }
        let mut times = Vec::with_capacity(iterations);
        // Where the time went: setup, instantiation, the run, teardown.
        let mut phases = [Duration::ZERO; 4];
        for _ in 0..iterations {
            let (result, stats) = runtime.call_with_stats(&plugin, &env).await;
            if let Err(e) = result {
                bail!("{e}");
            }
            times.push(stats.elapsed);
            for (total, phase) in
                phases
                    .iter_mut()
                    .zip([stats.setup, stats.instantiate, stats.run, stats.teardown])
            {
                *total += phase;
            }
        }
        times.sort_unstable();
        let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "{label:<11} mean {:>8.1} µs   p50 {:>8.1} µs   p99 {:>8.1} µs",
            mean.as_secs_f64() * 1e6,
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6
        );
        let [setup, instantiate, run, teardown] =
            phases.map(|total| total.as_secs_f64() * 1e6 / times.len().max(1) as f64);
        println!(
            "{:<11} setup {setup:.1} µs, instantiate {instantiate:.1} µs, run {run:.1} µs, teardown {teardown:.1} µs (means)",
            ""
        );
        means.push((label, mean));
    }
    if let [(_, on1), (_, off), (_, on2)] = means.as_slice() {
        let on = (*on1 + *on2) / 2;
        println!(
            "cost of the limits: {:.2}x (on/off, mean of both 'on' runs)",
            on.as_secs_f64() / off.as_secs_f64().max(1e-12)
        );
    }
    Ok(())
}
