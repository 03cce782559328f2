//! Planning: a checked [`Config`] (plain specs) becomes what can run. Here,
//! and only here, configured files are read: certificates and keys (the
//! listeners' and the admin address's) become rustls configurations, code sets are loaded into lookup tables, SOAP
//! passwords are taken from the environment, plugin files are checked. Every
//! problem is reported at once, with the key and line it was written at.
//! `izhub check` plans without starting anything; a reload plans the new
//! configuration before anything changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{
    Config, ConfigError, ConfigErrors, DestinationSpec, Grant, Origin, RouteSpec, Secret, Transport,
};
use crate::delivery::Target;
use crate::soap::client::SoapTarget;
use crate::tls::{DestinationTls, ListenerTls};

/// Lookup tables by name: key → value.
pub type Tables = BTreeMap<String, HashMap<String, String>>;

/// A configuration with everything it names loaded, ready to start.
#[derive(Debug)]
pub struct Plan {
    /// The specs it was planned from.
    pub config: Config,
    /// The routes, with the `codesets` grant spelt out as the code sets loaded.
    pub routes: Vec<RouteSpec>,
    /// `[tables]` and the loaded code sets.
    pub tables: Arc<Tables>,
    /// Each loaded code set: name, sources, newest date, count.
    pub codesets: Vec<CodeSetStatus>,
    /// Each TLS listener's rustls configuration and identities, by name.
    pub listener_tls: BTreeMap<String, ListenerTls>,
    /// Each destination as delivery reaches it.
    pub targets: Vec<Target>,
    /// The admin address's HTTPS certificate and key, when `[admin.tls]` is set.
    pub admin_tls: Option<ListenerTls>,
}

impl Plan {
    /// The TLS of listener `name`, if it has any.
    pub fn tls_of(&self, name: &str) -> Option<&ListenerTls> {
        self.listener_tls.get(name)
    }
}

/// A loaded code set, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodeSetStatus {
    pub name: String,
    pub sources: Vec<String>,
    /// The newest date in its data, `YYYY-MM-DD`.
    pub date: String,
    pub count: usize,
}

/// Collects problems found while planning.
struct Problems<'a> {
    config: &'a Config,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn push(&mut self, at: &Origin, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.config.path.clone(),
            line: at.line,
            key: at.key.clone(),
            message: message.into(),
        });
    }
}

/// Reads what `config` names and builds the plan, or reports every problem.
pub fn plan(config: &Config) -> Result<Plan, ConfigErrors> {
    let mut problems = Problems {
        config,
        list: Vec::new(),
    };
    let mut tables: Tables = config.tables.clone();
    let mut codeset_tables = BTreeSet::new();
    let mut codesets = Vec::new();
    if let Some(cs) = &config.codesets {
        match izhub_codesets::load_dir(&cs.dir) {
            Ok(sets) => {
                for (name, table) in sets.tables {
                    codeset_tables.insert(name.clone());
                    codesets.push(CodeSetStatus {
                        name: name.clone(),
                        sources: table.sources.clone(),
                        date: table.date.clone(),
                        count: table.entries.len(),
                    });
                    tables.insert(name, table.entries);
                }
            }
            Err(e) => problems.push(&cs.at, e),
        }
    }
    let mut routes = config.routes.clone();
    for (i, route) in routes.iter_mut().enumerate() {
        for (j, plugin) in route.plugins.iter_mut().enumerate() {
            if !plugin.wasm.is_file() {
                problems.push(
                    &plugin.at,
                    format!("plugin file not found: {}", plugin.wasm.display()),
                );
            }
            if plugin.grants.remove(&Grant::CodeSets) {
                plugin
                    .grants
                    .extend(codeset_tables.iter().cloned().map(Grant::Lookup));
            }
            for grant in &plugin.grants {
                if let Grant::Lookup(t) = grant
                    && !tables.contains_key(t)
                {
                    let at = Origin {
                        key: format!("routes[{i}].plugins[{j}].grants"),
                        line: plugin.at.line,
                    };
                    problems.push(
                        &at,
                        format!("lookup:{t}: the code-set directory has no '{t}' files"),
                    );
                }
            }
        }
    }
    let mut listener_tls = BTreeMap::new();
    for l in &config.listeners {
        let Some(t) = &l.tls else { continue };
        match ListenerTls::load(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
            t.identities.clone(),
        ) {
            Ok(tls) => {
                listener_tls.insert(l.name.clone(), tls);
            }
            Err(e) => problems.push(&t.at, e),
        }
    }
    let admin_tls = config.admin_access.tls.as_ref().and_then(|t| {
        ListenerTls::load(&t.cert, &t.key, t.client_ca.as_deref(), Default::default())
            .map_err(|e| problems.push(&t.at, e))
            .ok()
    });
    let targets = config
        .destinations
        .iter()
        .filter_map(|d| target(&mut problems, d))
        .collect();
    if problems.list.is_empty() {
        Ok(Plan {
            config: config.clone(),
            routes,
            tables: Arc::new(tables),
            codesets,
            listener_tls,
            targets,
            admin_tls,
        })
    } else {
        Err(ConfigErrors(problems.list))
    }
}

/// A destination with its TLS loaded and its password resolved.
fn target(problems: &mut Problems<'_>, d: &DestinationSpec) -> Option<Target> {
    let tls = match &d.tls {
        None => None,
        Some(t) => {
            let client = t.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            match DestinationTls::load(&t.ca, &t.server_name, client) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    problems.push(&t.at, e);
                    return None;
                }
            }
        }
    };
    let (addr, soap) = match &d.transport {
        Transport::Mllp { addr } => (addr.clone(), None),
        Transport::Soap {
            url,
            username,
            password,
            facility_id,
        } => {
            let password_text = match password {
                Secret::None => String::new(),
                Secret::Inline(p) => p.clone(),
                Secret::Env { var, at } => match std::env::var(var) {
                    Ok(p) => p,
                    Err(_) => {
                        problems.push(at, format!("environment variable {var} is not set"));
                        return None;
                    }
                },
            };
            let soap = SoapTarget {
                url: url.clone(),
                username: username.clone(),
                password: password_text,
                password_inline: matches!(password, Secret::Inline(_)),
                facility_id: facility_id.clone(),
                tls: tls.clone(),
            };
            (String::new(), Some(soap))
        }
    };
    Some(Target {
        name: d.name.clone(),
        addr,
        soap,
        tls,
        delivery: d.delivery.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn what_the_configuration_names_is_read_when_planned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("izhub.toml");
        let src = r#"
[listeners.a]
listen = "127.0.0.1:0"
[listeners.a.tls]
cert = "missing.pem"
key = "missing.key"

[admin]
listen = "127.0.0.1:0"
[admin.tls]
cert = "admin.pem"
key = "admin.key"

[destinations.ma]
soap = "http://127.0.0.1:1/"
password_env = "IZHUB_PLAN_TEST_UNSET_VARIABLE"

[codesets]
dir = "no-such-dir"

[[routes]]
name = "r"
destinations = ["ma"]

[[routes.plugins]]
wasm = "missing.wasm"
"#;
        // Checking touches none of these files.
        let config = crate::config::load_str(src, &path).unwrap();
        let text = plan(&config).unwrap_err().to_string();
        assert!(text.contains("5 errors"), "{text}");
        for expected in [
            ":4:1: listeners.a.tls: ",
            ":10:1: admin.tls: ",
            ":16:16: destinations.ma.password_env: environment variable IZHUB_PLAN_TEST_UNSET_VARIABLE is not set",
            ":19:7: codesets.dir: ",
            ":26:8: routes[0].plugins[0].wasm: plugin file not found",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        assert!(!Path::new(&dir.path().join("no-such-dir")).exists());
    }
}
