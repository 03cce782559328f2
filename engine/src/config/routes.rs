//! `[[routes]]`: which messages a route takes, its plugins with their
//! limits, grants and settings, and where it may deliver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::compile::{Errors, list};
use super::file::{FileConfig, PluginFile, RouteFile};
use super::plugin_id::{PublicKey, check_name, check_version};
use super::spec::{AckMode, Grant, PluginSpec, RouteSpec};
use toml::Spanned;

/// Checks every route of `file`; `tables` are those under `[tables]` and
/// `codesets` says whether a code-set directory is configured.
pub(super) fn compile(
    errs: &mut Errors<'_>,
    base: &Path,
    file: &FileConfig,
    tables: &BTreeMap<String, HashMap<String, String>>,
    codesets: bool,
) -> Vec<RouteSpec> {
    let listener_names: BTreeSet<&str> = file.listeners.keys().map(String::as_str).collect();
    let dest_names: BTreeSet<&str> = file.destinations.keys().map(String::as_str).collect();
    let mut route_names = BTreeSet::new();
    let mut routes = Vec::new();
    let engine_trusted = file
        .trusted_publishers
        .as_ref()
        .map(|list| publishers(errs, list, "trusted_publishers"));
    for (i, r) in file.routes.iter().enumerate() {
        let span = r.span();
        let r = r.get_ref();
        let prefix = format!("routes[{i}]");
        let trusted = route_publishers(errs, engine_trusted.as_deref(), r, &prefix, &span);
        if !route_names.insert(r.name.clone()) {
            errs.push(
                Some(span.clone()),
                format!("{prefix}.name"),
                format!("route name '{}' is used twice", r.name),
            );
        }
        let listeners_key = format!("{prefix}.listeners");
        known(
            errs,
            &r.listeners,
            &listener_names,
            &listeners_key,
            "listener",
        );
        let destinations_key = format!("{prefix}.destinations");
        known(
            errs,
            &r.destinations,
            &dest_names,
            &destinations_key,
            "destination",
        );
        let ack_mode = match r
            .ack_mode
            .as_ref()
            .map(|m| (m.get_ref().as_str(), m.span()))
        {
            None | Some(("relay", _)) => AckMode::Relay,
            Some(("commit", _)) => AckMode::Commit,
            Some((other, span)) => {
                errs.push(
                    Some(span),
                    format!("{prefix}.ack_mode"),
                    format!("unknown ACK mode '{other}' (supported: relay, commit)"),
                );
                AckMode::Relay
            }
        };
        let message_types = message_types(errs, &r.message_types, &prefix, &span);
        let mut plugins = Vec::new();
        let mut plugin_names = BTreeSet::new();
        for (j, p) in r.plugins.iter().enumerate() {
            let pkey = format!("{prefix}.plugins[{j}]");
            if let Some(mut spec) = compile_plugin(errs, base, p.get_ref(), &pkey, tables, codesets)
            {
                spec.trusted = trusted.clone();
                if !plugin_names.insert(spec.name.clone()) {
                    errs.push(
                        Some(p.span()),
                        format!("{pkey}.name"),
                        format!(
                            "plugin name '{}' is used twice in this route; give one a `name`",
                            spec.name
                        ),
                    );
                }
                plugins.push(spec);
            }
        }
        let route_to = route_to(errs, r, &plugins, &dest_names, &prefix);
        routes.push(RouteSpec {
            name: r.name.clone(),
            route_to,
            listeners: r.listeners.iter().map(|l| l.get_ref().clone()).collect(),
            message_types,
            senders: r.senders.iter().cloned().collect(),
            receivers: r.receivers.iter().cloned().collect(),
            destinations: r.destinations.iter().map(|d| d.get_ref().clone()).collect(),
            ack_mode,
            plugins,
        });
    }
    routes
}

/// The trusted publishers of route `r`: the engine's list, narrowed by the
/// route's own (which may not name a key the engine's does not).
fn route_publishers(
    errs: &mut Errors<'_>,
    engine: Option<&[PublicKey]>,
    r: &RouteFile,
    prefix: &str,
    span: &std::ops::Range<usize>,
) -> Option<Vec<PublicKey>> {
    let key = format!("{prefix}.trusted_publishers");
    match (engine, &r.trusted_publishers) {
        (None, None) => None,
        (Some(engine), None) => Some(engine.to_vec()),
        (None, Some(list)) => Some(publishers(errs, list, &key)),
        (Some(engine), Some(list)) => {
            let own = publishers(errs, list, &key);
            let within: Vec<PublicKey> =
                own.iter().filter(|k| engine.contains(k)).copied().collect();
            if within.len() < own.len() {
                errs.push(
                    list.first().map(|k| k.span()).or(Some(span.clone())),
                    key.clone(),
                    "names a key that is not in the engine-wide trusted_publishers: a route may narrow that list, not widen it",
                );
            }
            Some(within)
        }
    }
}

/// A route's `message_types` as (message code, trigger event or any).
fn message_types(
    errs: &mut Errors<'_>,
    types: &[String],
    prefix: &str,
    span: &std::ops::Range<usize>,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for t in types {
        let mut parts = t.split('^');
        let code = parts.next().unwrap_or("").trim().to_string();
        let trigger = parts
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "*");
        if code.is_empty() {
            errs.push(
                Some(span.clone()),
                format!("{prefix}.message_types"),
                format!("'{t}' is not a message type like VXU^V04"),
            );
        }
        out.push((code, trigger));
    }
    out
}

/// Reports every name in `names` that is not one of `defined` (a `what`).
pub(super) fn known(
    errs: &mut Errors<'_>,
    names: &[Spanned<String>],
    defined: &BTreeSet<&str>,
    key: &str,
    what: &str,
) {
    for n in names {
        if !defined.contains(n.get_ref().as_str()) {
            errs.push(
                Some(n.span()),
                key,
                format!(
                    "unknown {what} '{}' (defined: {})",
                    n.get_ref(),
                    list(defined)
                ),
            );
        }
    }
}

/// The destinations route `r`'s plugins may send to: its `route_to` when
/// given (checked against its destinations and its plugins' settings), else
/// its destinations and every destination its plugins' settings name.
fn route_to(
    errs: &mut Errors<'_>,
    r: &RouteFile,
    plugins: &[PluginSpec],
    dest_names: &BTreeSet<&str>,
    prefix: &str,
) -> BTreeSet<String> {
    match &r.route_to {
        Some(granted) => {
            known(
                errs,
                granted,
                dest_names,
                &format!("{prefix}.route_to"),
                "destination",
            );
            let granted: BTreeSet<String> = granted.iter().map(|d| d.get_ref().clone()).collect();
            // A plugin set up to choose a destination the route does not
            // grant would fail every such message: say so now.
            for (j, p) in plugins.iter().enumerate() {
                for (key, value) in &p.config {
                    for d in value.split(',').map(str::trim) {
                        if dest_names.contains(d) && !granted.contains(d) {
                            errs.push(
                            r.plugins.get(j).map(|p| p.span()),
                            format!("{prefix}.plugins[{j}].config.{key}"),
                            format!(
                                "names destination '{d}', which this route's route_to does not grant (route_to: {})",
                                granted.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
                            ),
                        );
                        }
                    }
                }
            }
            for d in &r.destinations {
                if !granted.contains(d.get_ref()) {
                    errs.push(
                        Some(d.span()),
                        format!("{prefix}.destinations"),
                        format!("'{}' is not in this route's route_to", d.get_ref()),
                    );
                }
            }
            granted
        }
        None => r
            .destinations
            .iter()
            .map(|d| d.get_ref().clone())
            .chain(plugins.iter().flat_map(|p| {
                p.config
                    .values()
                    .flat_map(|v| v.split(',').map(|d| d.trim().to_string()))
                    .filter(|d| dest_names.contains(d.as_str()))
                    .collect::<Vec<_>>()
            }))
            .collect(),
    }
}

fn compile_plugin(
    errs: &mut Errors<'_>,
    base: &Path,
    p: &PluginFile,
    key: &str,
    tables: &BTreeMap<String, HashMap<String, String>>,
    codesets: bool,
) -> Option<PluginSpec> {
    let wasm = base.join(p.wasm.get_ref());
    let at = errs.origin(p.wasm.span(), format!("{key}.wasm"));
    let name = p.name.clone().unwrap_or_else(|| {
        wasm.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut grants = BTreeSet::new();
    match &p.grants {
        None => {
            grants.insert(Grant::Log);
            grants.insert(Grant::Config);
        }
        Some(list) => {
            for g in list {
                if g.get_ref() == "codesets" {
                    if !codesets {
                        errs.push(
                            Some(g.span()),
                            format!("{key}.grants"),
                            "'codesets' needs a [codesets] dir",
                        );
                    }
                    grants.insert(Grant::CodeSets);
                    continue;
                }
                let table_exists = |t: &str| {
                    tables.contains_key(t)
                        || (codesets && izhub_codesets::table_names().contains(&t))
                };
                match parse_grant(g.get_ref(), table_exists) {
                    Ok(grant) => {
                        grants.insert(grant);
                    }
                    Err(why) => errs.push(Some(g.span()), format!("{key}.grants"), why),
                }
            }
        }
    }
    let time_ms = p.time_limit_ms.unwrap_or(200);
    let mem_mib = p.memory_limit_mib.unwrap_or(32);
    if time_ms == 0 || time_ms > 60_000 {
        errs.push(
            Some(p.wasm.span()),
            format!("{key}.time_limit_ms"),
            "must be between 1 and 60000",
        );
    }
    if mem_mib == 0 || mem_mib > 4096 {
        errs.push(
            Some(p.wasm.span()),
            format!("{key}.memory_limit_mib"),
            "must be between 1 and 4096",
        );
    }
    let mut config = BTreeMap::new();
    flatten("", &p.config, &mut config);
    let pin = p.pin.as_ref().and_then(|pin| {
        let parsed = pin
            .get_ref()
            .split_once('@')
            .filter(|(n, v)| check_name(n).is_ok() && check_version(v).is_ok());
        if parsed.is_none() {
            errs.push(
                Some(pin.span()),
                format!("{key}.pin"),
                format!(
                    "'{}' is not name@version, like check-lots@1.2.0",
                    pin.get_ref().escape_debug()
                ),
            );
        }
        parsed.map(|(n, v)| (n.to_string(), v.to_string()))
    });
    Some(PluginSpec {
        name,
        wasm,
        at,
        time_limit: Duration::from_millis(time_ms),
        memory_limit: (mem_mib as usize) << 20,
        max_output: p.max_output_bytes.unwrap_or(4 << 20),
        max_input: p.max_input_bytes.unwrap_or(2 << 20),
        grants,
        config,
        pin,
        trusted: None,
    })
}

/// Reads a `trusted_publishers` list: each key must parse, and the list
/// must not be empty (that would refuse every plugin).
fn publishers(errs: &mut Errors<'_>, list: &[Spanned<String>], key: &str) -> Vec<PublicKey> {
    if list.is_empty() {
        errs.push(
            None,
            key.to_string(),
            "is empty, which would refuse every plugin: list at least one key, or leave it out",
        );
    }
    let mut keys = Vec::new();
    for k in list {
        match k.get_ref().parse::<PublicKey>() {
            Ok(pk) => keys.push(pk),
            Err(why) => errs.push(Some(k.span()), key.to_string(), why),
        }
    }
    keys
}

/// Reads one grant: `log`, `config`, `lookup:TABLE` (the table must exist),
/// or `link:wasi:filesystem|sockets|clocks`.
pub fn parse_grant(text: &str, table_exists: impl Fn(&str) -> bool) -> Result<Grant, String> {
    match text {
        "log" => Ok(Grant::Log),
        "config" => Ok(Grant::Config),
        other => {
            if let Some(family) = other.strip_prefix("link:wasi:") {
                return if ["filesystem", "sockets", "clocks"].contains(&family) {
                    Ok(Grant::Link(family.to_string()))
                } else {
                    Err(format!(
                        "'{other}' cannot be linked (linkable: link:wasi:filesystem, link:wasi:sockets, link:wasi:clocks)"
                    ))
                };
            }
            match other.strip_prefix("lookup:") {
                Some(t) if table_exists(t) => Ok(Grant::Lookup(t.to_string())),
                Some(t) => Err(format!(
                    "no table named '{t}' (define it under [tables.{t}])"
                )),
                None => Err(format!(
                    "unknown grant '{other}' (known: log, config, lookup:TABLE, codesets, link:wasi:filesystem, link:wasi:sockets, link:wasi:clocks)"
                )),
            }
        }
    }
}

/// Flattens nested tables into dotted keys; scalars become their text.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(scalar_text).collect();
                out.insert(key, parts.join(","));
            }
            other => {
                out.insert(key, scalar_text(other));
            }
        }
    }
}

fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => items.iter().map(scalar_text).collect::<Vec<_>>().join(","),
        toml::Value::Table(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_plugin_config() {
        let t: toml::Table =
            toml::from_str("a = 1\n[states]\nWA = \"wa-iis\"\nlist = [\"x\", \"y\"]\n").unwrap();
        let mut out = BTreeMap::new();
        flatten("", &t, &mut out);
        assert_eq!(out.get("a").map(String::as_str), Some("1"));
        assert_eq!(out.get("states.WA").map(String::as_str), Some("wa-iis"));
        assert_eq!(out.get("states.list").map(String::as_str), Some("x,y"));
    }
}
