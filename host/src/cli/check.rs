//! `izhub check`: the configuration checked, every plugin compiled and
//! linked, nothing opened or started.

use std::path::Path;
use std::process::ExitCode;

use super::args::CacheArgs;
use crate::config::{self, Grant, PluginSpec};
use crate::pipeline::Pipeline;
use crate::plugin::manifest::Asks;
use crate::topology::Plan;
use izhub_engine::engine::{Engine, EngineOptions, Mode, Wings};

/// Checks the configuration at `config`; exit code 2 when it is refused.
pub(super) async fn run(config: &Path, cache: &CacheArgs) -> anyhow::Result<ExitCode> {
    // Every problem at once: those of the file, and those of what it names
    // (planned even when the file has problems, so nothing is left to find
    // on the next run).
    let (cfg, mut errors) = match config::load_all(config) {
        Ok(loaded) => loaded,
        Err(errs) => {
            eprint!("{errs}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = match crate::topology::plan(&cfg) {
        Ok(plan) => Some(plan),
        Err(errs) => {
            errors.extend(errs.0);
            None
        }
    };
    let Some(plan) = plan.filter(|_| errors.is_empty()) else {
        eprint!("{}", config::ConfigErrors(errors));
        return Ok(ExitCode::from(2));
    };
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    // Compile every plugin too: a component that does not fit the
    // contract is a configuration error the operator must see now. With no
    // journal and no destinations: checking opens nothing and starts nothing.
    let started = std::time::Instant::now();
    let opts = EngineOptions {
        runtime: cache.runtime_options(),
        ..EngineOptions::default()
    };
    match Engine::build(&plan, Mode::DryRun, opts, |_| Ok(Wings::default())).await {
        Ok((engine, pipeline)) => {
            let (compiled, from_disk, _) = engine.runtime.cache().counts();
            println!(
                "{}: OK ({} listeners, {} destinations, {} routes, {} plugins; {compiled} compiled, {from_disk} from cache, {} ms)",
                config.display(),
                cfg.listeners.len(),
                cfg.destinations.len(),
                cfg.routes.len(),
                cfg.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
                started.elapsed().as_millis()
            );
            print!("{}", plugin_report(&plan, &pipeline));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e:#}", config.display());
            Ok(ExitCode::from(2))
        }
    }
}

/// Per route, each plugin: who made it, who signed it, what it asks for
/// against what the route grants, and a warning for each mismatch.
fn plugin_report(plan: &Plan, pipeline: &Pipeline) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (route, loaded) in pipeline.loaded_plugins() {
        if loaded.is_empty() {
            continue;
        }
        let _ = writeln!(out, "route '{}':", route.name);
        let specs = plan
            .routes
            .iter()
            .find(|r| r.name == route.name)
            .map(|r| r.plugins.as_slice())
            .unwrap_or_default();
        for (plugin, spec) in loaded.iter().zip(specs) {
            let p = plugin.provenance();
            let signed = match &p.signer {
                Some(k) => format!("signed by {k}"),
                None => "unsigned".to_string(),
            };
            let Some(m) = &p.manifest else {
                let _ = writeln!(
                    out,
                    "  {}: no manifest, {signed}\n    granted:  {}",
                    plugin.name(),
                    granted_text(spec)
                );
                continue;
            };
            let by = if m.publisher.is_empty() {
                String::new()
            } else {
                format!(" by {:?}", m.publisher)
            };
            let _ = writeln!(
                out,
                "  {}: {}{by} (WIT {}), {signed}\n    asks for: {}\n    granted:  {}",
                plugin.name(),
                m.label(),
                m.wit,
                crate::tools::plugin_kit::asks_text(&m.grants),
                granted_text(spec)
            );
            for w in grant_warnings(&m.grants, spec) {
                let _ = writeln!(out, "    warning: {w}");
            }
        }
    }
    out
}

/// What a route grants one plugin, in the configuration's words.
fn granted_text(spec: &PluginSpec) -> String {
    let mut parts = Vec::new();
    let mut tables = Vec::new();
    for g in &spec.grants {
        match g {
            Grant::Log => parts.push("log".to_string()),
            Grant::Config => parts.push(format!(
                "config [{}]",
                spec.config.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Grant::Lookup(t) => tables.push(t.as_str()),
            Grant::CodeSets => parts.push("codesets".to_string()),
            Grant::Link(f) => parts.push(format!("link:wasi:{f}")),
        }
    }
    if !tables.is_empty() {
        parts.push(format!("lookup:{}", shortened(&tables)));
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

/// A list of names, the first few of them when there are many.
fn shortened(names: &[&str]) -> String {
    const SHOWN: usize = 8;
    let head = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(SHOWN) {
        0 => head,
        more => format!("{head} and {more} more"),
    }
}

/// Whether a config key is one the plugin reads (`states.*` covers `states.MI`).
fn reads(asked: &[String], key: &str) -> bool {
    asked.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => a == key,
    })
}

/// Grants given but not asked for (more reach than the plugin needs), and
/// grants asked for but not given (the plugin is denied them).
fn grant_warnings(asks: &Asks, spec: &PluginSpec) -> Vec<String> {
    let mut out = Vec::new();
    let granted = |g: &Grant| spec.grants.contains(g);
    if granted(&Grant::Log) && !asks.log {
        out.push("the route grants log, which the plugin does not ask for".to_string());
    }
    if !granted(&Grant::Log) && asks.log {
        out.push(
            "the plugin asks for log, which the route does not grant: its log lines are dropped"
                .to_string(),
        );
    }
    if granted(&Grant::Config) {
        if asks.config.is_empty() {
            out.push("the route grants config, which the plugin does not ask for".to_string());
        } else {
            let unread: Vec<&str> = spec
                .config
                .keys()
                .map(String::as_str)
                .filter(|k| !reads(&asks.config, k))
                .collect();
            if !unread.is_empty() {
                out.push(format!(
                    "the route sets config {} that the plugin does not read (it reads {})",
                    shortened(&unread),
                    asks.config.join(", ")
                ));
            }
        }
    } else if !asks.config.is_empty() {
        out.push(format!(
            "the plugin asks for config ({}), which the route does not grant",
            asks.config.join(", ")
        ));
    }
    let unasked: Vec<&str> = spec
        .grants
        .iter()
        .filter_map(|g| match g {
            Grant::Lookup(t) if !asks.lookup.contains(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    if !unasked.is_empty() {
        out.push(format!(
            "the route grants lookup tables the plugin does not ask for: {}",
            shortened(&unasked)
        ));
    }
    for t in &asks.lookup {
        if !granted(&Grant::Lookup(t.clone())) {
            out.push(format!(
                "the plugin asks for lookup:{t}, which the route does not grant"
            ));
        }
    }
    for g in &spec.grants {
        if let Grant::Link(f) = g
            && !asks.link.contains(f)
        {
            out.push(format!(
                "the route grants link:wasi:{f}, which the plugin does not ask for"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec(grants: &[Grant], config: &[&str]) -> PluginSpec {
        PluginSpec {
            name: "p".into(),
            wasm: "p.wasm".into(),
            at: Default::default(),
            time_limit: std::time::Duration::from_millis(200),
            memory_limit: 32 << 20,
            max_output: 1 << 20,
            max_input: 1 << 20,
            grants: grants.iter().cloned().collect(),
            config: config.iter().map(|k| (k.to_string(), "v".into())).collect(),
            pin: None,
            trusted: None,
        }
    }

    #[test]
    fn grants_given_but_not_asked_for_are_warned_about() {
        let asks = Asks {
            log: false,
            config: vec!["organization".into(), "states.*".into()],
            lookup: vec!["facility-state".into()],
            route_to: false,
            link: vec![],
        };
        let exact = spec(
            &[Grant::Config, Grant::Lookup("facility-state".into())],
            &["organization", "states.MI"],
        );
        assert_eq!(grant_warnings(&asks, &exact), Vec::<String>::new());
        let wide = spec(
            &[
                Grant::Log,
                Grant::Config,
                Grant::Lookup("cvx".into()),
                Grant::Link("clocks".into()),
            ],
            &["organization", "orgnization"],
        );
        let w = grant_warnings(&asks, &wide).join("\n");
        assert!(w.contains("grants log"), "{w}");
        assert!(
            w.contains("config orgnization that the plugin does not read"),
            "{w}"
        );
        assert!(w.contains("does not ask for: cvx"), "{w}");
        assert!(
            w.contains("lookup:facility-state, which the route does not grant"),
            "{w}"
        );
        assert!(w.contains("link:wasi:clocks"), "{w}");
    }
}
