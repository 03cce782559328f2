//! Turns a [`FileConfig`] into a checked [`Config`], reporting every problem
//! at once with the file, line and key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::file::{FileConfig, ListenerTlsFile, PluginFile, SoapUserFile};
use crate::mllp::DEFAULT_MAX_FRAME;

/// A checked configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub admin: Option<SocketAddr>,
    /// Most sending facilities kept as metric labels.
    pub max_sender_labels: usize,
    pub listeners: Vec<ListenerSpec>,
    pub destinations: Vec<DestinationSpec>,
    /// Lookup tables: those under `[tables]` and the loaded code sets.
    pub tables: Arc<BTreeMap<String, HashMap<String, String>>>,
    /// Where the code sets were loaded from, if configured.
    pub codesets_dir: Option<PathBuf>,
    /// The journal file, when any route uses `commit` mode.
    pub journal: Option<PathBuf>,
    /// How long finished messages stay in the journal.
    pub retention: Duration,
    /// How many finished messages the journal keeps at most.
    pub max_finished: Option<u64>,
    pub routes: Vec<RouteSpec>,
}

impl Config {
    /// What works but deserves the operator's attention, each line naming
    /// its key: SOAP users not bound to facilities.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.listeners {
            let Some(soap) = &l.soap else { continue };
            for (user, u) in &soap.users {
                if u.facilities.is_none() {
                    out.push(format!(
                        "listeners.{}.soap_users.{user}: SOAP user '{user}' is not bound to facilities and may send for any sending facility (MSH-4.1); give it {{ password = \"...\", facilities = [...] }}",
                        l.name
                    ));
                }
            }
        }
        out
    }
}

/// One MLLP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub allowed_senders: BTreeSet<String>,
    pub max_frame: usize,
    pub lenient_framing: bool,
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub idle_timeout: Duration,
    /// SOAP: how long a request may take from its first byte to its answer.
    pub request_timeout: Duration,
    /// Set for a SOAP listener: its URL path and allowed users.
    pub soap: Option<SoapListener>,
    /// MLLP over TLS.
    pub tls: Option<crate::tls::ListenerTls>,
}

/// A listener speaking the CDC WSDL SOAP transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapListener {
    pub path: String,
    /// Users by name, with their passwords and facilities; empty allows any.
    pub users: BTreeMap<String, crate::soap::server::SoapUser>,
}

/// One IIS reached over MLLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    /// MLLP `host:port` (empty for SOAP).
    pub addr: String,
    /// The SOAP endpoint and credentials, for a SOAP destination.
    pub soap: Option<crate::soap::client::SoapTarget>,
    /// MLLP over TLS.
    pub tls: Option<crate::tls::DestinationTls>,
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    pub connections: usize,
    pub max_frame: usize,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
}

/// How a route answers the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The sender gets the IIS's own answer, with plugin warnings merged in.
    Relay,
    /// The sender gets AA once the message is durably journaled; delivery
    /// follows from the queue, with retries.
    Commit,
}

/// One route: which messages it takes, the plugins they go through, where they go.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    /// Listener names; empty matches all.
    pub listeners: BTreeSet<String>,
    /// (code, trigger) pairs; a `None` trigger matches any.
    pub message_types: Vec<(String, Option<String>)>,
    pub senders: BTreeSet<String>,
    pub receivers: BTreeSet<String>,
    pub destinations: Vec<String>,
    /// Destinations the route's plugins may choose with `route-to`.
    pub route_to: BTreeSet<String>,
    pub ack_mode: AckMode,
    pub plugins: Vec<PluginSpec>,
}

impl Config {
    /// The sending facilities (MSH-4.1) that may appear as metric labels:
    /// those the configuration names (allowed senders, route senders), in
    /// name order, at most `max_sender_labels` of them.
    pub fn sender_labels(&self) -> std::collections::HashSet<String> {
        let named: BTreeSet<&String> = self
            .listeners
            .iter()
            .flat_map(|l| l.allowed_senders.iter())
            .chain(self.routes.iter().flat_map(|r| r.senders.iter()))
            .filter(|s| s.as_str() != "other")
            .collect();
        named
            .into_iter()
            .take(self.max_sender_labels)
            .cloned()
            .collect()
    }
}

/// A capability a plugin is granted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    Log,
    Config,
    Lookup(String),
    /// Lets a component that imports this WASI interface family load
    /// (`filesystem`, `sockets`, `clocks`): language runtimes such as Python
    /// and JavaScript import them. They still give no access: nothing is
    /// preopened and every network address is refused.
    Link(String),
}

/// One plugin in a route.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub wasm: PathBuf,
    pub time_limit: Duration,
    pub memory_limit: usize,
    pub max_output: usize,
    pub max_input: usize,
    pub grants: BTreeSet<Grant>,
    pub config: BTreeMap<String, String>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub line: Option<(usize, usize)>,
    /// Dotted key, e.g. `routes[0].plugins[1].wasm`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} error{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let error = |message: String| {
        Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message,
        }]))
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return error(format!("cannot read the file: {e}")),
    };
    let config = load_str(&text, path)?;
    // A file that holds passwords must be readable by its owner only.
    let holds_secrets = config
        .destinations
        .iter()
        .any(|d| d.soap.as_ref().is_some_and(|s| s.password_inline))
        || config
            .listeners
            .iter()
            .any(|l| l.soap.as_ref().is_some_and(|s| !s.users.is_empty()));
    #[cfg(unix)]
    if holds_secrets {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return error(format!(
                    "the file holds passwords but other users can read it (mode {mode:o}): chmod 600 it, or take \
                     destination passwords from the environment with password_env"
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = holds_secrets;
    Ok(config)
}

/// Collects errors with their positions in one source text.
struct Errors<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn line_col(&self, span: Option<Range<usize>>) -> Option<(usize, usize)> {
        let start = span?.start.min(self.source.len());
        let before = self.source.get(..start)?;
        let line = before.matches('\n').count() + 1;
        let col = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        Some((line, col))
    }

    fn push(&mut self, span: Option<Range<usize>>, key: impl Into<String>, msg: impl Into<String>) {
        let line = self.line_col(span);
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: msg.into(),
        });
    }
}

/// Checks configuration text; `path` names it in errors and anchors relative paths.
pub fn load_str(source: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Errors {
        file: path,
        source,
        list: Vec::new(),
    };
    let file: FileConfig = match toml::from_str(source) {
        Ok(f) => f,
        Err(e) => {
            errs.push(e.span(), "", e.message().to_string());
            return Err(ConfigErrors(errs.list));
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut bound: Vec<(SocketAddr, String)> = Vec::new();

    let admin = file.admin.as_ref().and_then(|a| {
        let addr = parse_addr(&mut errs, &a.listen, "admin.listen")?;
        check_port(&mut errs, &mut bound, addr, a.listen.span(), "admin.listen");
        Some(addr)
    });

    let mut listeners = Vec::new();
    for (name, l) in &file.listeners {
        let key = format!("listeners.{name}.listen");
        let Some(addr) = parse_addr(&mut errs, &l.get_ref().listen, &key) else {
            continue;
        };
        check_port(&mut errs, &mut bound, addr, l.get_ref().listen.span(), &key);
        let l = l.get_ref();
        let tls = l.tls.as_ref().and_then(|t| {
            let span = t.span();
            let t = t.get_ref();
            let ca = t.client_ca.as_ref().map(|c| base.join(c));
            let identities = compile_identities(&mut errs, name, t, span.clone());
            match crate::tls::ListenerTls::load(
                &base.join(&t.cert),
                &base.join(&t.key),
                ca.as_deref(),
                identities,
            ) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    errs.push(Some(span), format!("listeners.{name}.tls"), e);
                    None
                }
            }
        });
        let max_frame = l.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME);
        if max_frame < 64 {
            errs.push(
                Some(l.listen.span()),
                format!("listeners.{name}.max_frame_bytes"),
                "must be at least 64",
            );
        }
        let soap = match l
            .protocol
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("mllp", _)) => None,
            Some(("soap", _)) => Some(SoapListener {
                path: l.soap_path.clone().unwrap_or_else(|| "/".into()),
                users: soap_users(&mut errs, name, &l.soap_users),
            }),
            Some((other, span)) => {
                errs.push(
                    Some(span),
                    format!("listeners.{name}.protocol"),
                    format!("unknown protocol '{other}' (mllp, soap)"),
                );
                None
            }
        };
        let request_timeout = match &l.request_timeout_secs {
            None => Duration::from_secs(60),
            Some(secs) => {
                let key = format!("listeners.{name}.request_timeout_secs");
                if soap.is_none() {
                    errs.push(
                        Some(secs.span()),
                        key,
                        "applies to SOAP listeners only (protocol = \"soap\")",
                    );
                } else if *secs.get_ref() == 0 {
                    errs.push(Some(secs.span()), key, "must be at least 1");
                }
                Duration::from_secs((*secs.get_ref()).max(1))
            }
        };
        listeners.push(ListenerSpec {
            name: name.clone(),
            addr,
            allowed_senders: l.allowed_senders.iter().cloned().collect(),
            max_frame,
            lenient_framing: l.lenient_framing,
            max_connections: l.max_connections.unwrap_or(1024).max(1),
            max_per_peer: l.max_connections_per_peer.unwrap_or(64).max(1),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs.unwrap_or(600).max(1)),
            request_timeout,
            tls,
            soap,
        });
    }

    let mut destinations = Vec::new();
    for (name, d) in &file.destinations {
        let span = d.span();
        let d = d.get_ref();
        let host_port_ok = |addr: &str| {
            addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        };
        let mut addr = String::new();
        let mut soap = None;
        match (&d.mllp, &d.soap) {
            (Some(m), None) => {
                addr = m.get_ref().trim().to_string();
                if !host_port_ok(&addr) {
                    errs.push(
                        Some(m.span()),
                        format!("destinations.{name}.mllp"),
                        format!("'{addr}' is not a host:port address"),
                    );
                }
            }
            (None, Some(url)) => {
                let u = url.get_ref().trim();
                let authority = u
                    .strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"))
                    .map(|r| r.split('/').next().unwrap_or(""));
                if !authority.is_some_and(host_port_ok) {
                    errs.push(
                        Some(url.span()),
                        format!("destinations.{name}.soap"),
                        format!("'{u}' is not an http://host:port/path URL"),
                    );
                }
                let password = match (&d.password, &d.password_env) {
                    (_, Some(var)) => match std::env::var(var.get_ref()) {
                        Ok(p) => p,
                        Err(_) => {
                            errs.push(
                                Some(var.span()),
                                format!("destinations.{name}.password_env"),
                                format!("environment variable {} is not set", var.get_ref()),
                            );
                            String::new()
                        }
                    },
                    (Some(p), None) => p.clone(),
                    (None, None) => String::new(),
                };
                soap = Some(crate::soap::client::SoapTarget {
                    url: u.to_string(),
                    username: d.username.clone().unwrap_or_default(),
                    password,
                    password_inline: d.password.is_some() && d.password_env.is_none(),
                    facility_id: d.facility_id.clone().unwrap_or_default(),
                    tls: None,
                });
            }
            _ => errs.push(
                Some(span),
                format!("destinations.{name}"),
                "give exactly one of mllp = \"host:port\" or soap = \"http://host:port/path\"",
            ),
        }
        let tls = d.tls.as_ref().and_then(|t| {
            let span = t.span();
            let t = t.get_ref();
            let authority = soap
                .as_ref()
                .and_then(|s| s.url.split("://").nth(1))
                .and_then(|r| r.split('/').next())
                .unwrap_or(&addr);
            let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
            let name_for_cert = t.server_name.clone().unwrap_or_else(|| host.to_string());
            let client = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
                (None, None) => None,
                _ => {
                    errs.push(
                        Some(span.clone()),
                        format!("destinations.{name}.tls"),
                        "give both cert and key, or neither",
                    );
                    None
                }
            };
            let loaded = crate::tls::DestinationTls::load(
                &base.join(&t.ca),
                &name_for_cert,
                client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            );
            match loaded {
                Ok(tls) => Some(tls),
                Err(e) => {
                    errs.push(Some(span), format!("destinations.{name}.tls"), e);
                    None
                }
            }
        });
        if let Some(target) = soap.as_mut() {
            target.tls = tls.clone();
        }
        destinations.push(DestinationSpec {
            name: name.clone(),
            addr,
            soap,
            tls,
            connect_timeout: Duration::from_millis(d.connect_timeout_ms.unwrap_or(3000).max(1)),
            answer_timeout: Duration::from_millis(d.answer_timeout_ms.unwrap_or(30_000).max(1)),
            connections: d.connections.unwrap_or(4).clamp(1, 256),
            max_frame: d.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME).max(64),
            max_attempts: d.max_attempts.unwrap_or(10).max(1),
            retry_initial: Duration::from_millis(d.retry_initial_ms.unwrap_or(500).max(1)),
            retry_max: Duration::from_millis(d.retry_max_ms.unwrap_or(60_000).max(1)),
            breaker_failures: d.breaker_failures.unwrap_or(5).max(1),
            breaker_open: Duration::from_millis(d.breaker_open_ms.unwrap_or(5000).max(1)),
        });
    }

    let mut tables: BTreeMap<String, HashMap<String, String>> = file
        .tables
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            )
        })
        .collect();
    let mut codesets_dir = None;
    let mut codeset_names = BTreeSet::new();
    if let Some(cs) = &file.codesets {
        let dir = base.join(cs.dir.get_ref());
        match izhub_codesets::load_dir(&dir) {
            Ok(sets) => {
                for (name, table) in sets.tables {
                    if tables.contains_key(&name) {
                        errs.push(
                            Some(cs.dir.span()),
                            "codesets.dir",
                            format!(
                                "code set '{name}' has the same name as a table under [tables]"
                            ),
                        );
                    }
                    codeset_names.insert(name.clone());
                    tables.insert(name, table.entries);
                }
                codesets_dir = Some(dir);
            }
            Err(e) => errs.push(Some(cs.dir.span()), "codesets.dir", e),
        }
    }

    let listener_names: BTreeSet<&str> = file.listeners.keys().map(String::as_str).collect();
    let dest_names: BTreeSet<&str> = file.destinations.keys().map(String::as_str).collect();
    let mut route_names = BTreeSet::new();
    let mut routes = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let span = r.span();
        let r = r.get_ref();
        let prefix = format!("routes[{i}]");
        if !route_names.insert(r.name.clone()) {
            errs.push(
                Some(span.clone()),
                format!("{prefix}.name"),
                format!("route name '{}' is used twice", r.name),
            );
        }
        for l in &r.listeners {
            if !listener_names.contains(l.get_ref().as_str()) {
                errs.push(
                    Some(l.span()),
                    format!("{prefix}.listeners"),
                    format!(
                        "unknown listener '{}' (defined: {})",
                        l.get_ref(),
                        list(&listener_names)
                    ),
                );
            }
        }
        for d in &r.destinations {
            if !dest_names.contains(d.get_ref().as_str()) {
                errs.push(
                    Some(d.span()),
                    format!("{prefix}.destinations"),
                    format!(
                        "unknown destination '{}' (defined: {})",
                        d.get_ref(),
                        list(&dest_names)
                    ),
                );
            }
        }
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
        let mut message_types = Vec::new();
        for t in &r.message_types {
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
            message_types.push((code, trigger));
        }
        let mut plugins = Vec::new();
        let mut plugin_names = BTreeSet::new();
        for (j, p) in r.plugins.iter().enumerate() {
            let pkey = format!("{prefix}.plugins[{j}]");
            if let Some(spec) = compile_plugin(
                &mut errs,
                &base,
                p.get_ref(),
                &pkey,
                &tables,
                &codeset_names,
            ) {
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
        let route_to = match &r.route_to {
            Some(granted) => {
                for d in granted {
                    if !dest_names.contains(d.get_ref().as_str()) {
                        errs.push(
                            Some(d.span()),
                            format!("{prefix}.route_to"),
                            format!(
                                "unknown destination '{}' (defined: {})",
                                d.get_ref(),
                                list(&dest_names)
                            ),
                        );
                    }
                }
                let granted: BTreeSet<String> =
                    granted.iter().map(|d| d.get_ref().clone()).collect();
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
        };
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
    if errs.list.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            admin,
            max_sender_labels: file
                .admin
                .as_ref()
                .and_then(|a| a.max_sender_labels)
                .unwrap_or(500),
            listeners,
            destinations,
            tables: Arc::new(tables),
            codesets_dir,
            journal: routes
                .iter()
                .any(|r| r.ack_mode == AckMode::Commit)
                .then(|| {
                    base.join(
                        file.store
                            .as_ref()
                            .and_then(|s| s.path.clone())
                            .unwrap_or_else(|| "data/izhub.db".into()),
                    )
                }),
            max_finished: file.store.as_ref().and_then(|s| s.max_finished),
            retention: Duration::from_secs(
                file.store
                    .as_ref()
                    .and_then(|s| s.retention_days)
                    .unwrap_or(30)
                    .max(1)
                    * 86_400,
            ),
            routes,
        })
    } else {
        Err(ConfigErrors(errs.list))
    }
}

/// A SOAP listener's users: a password alone allows any facility; a table
/// binds the user to a non-empty list of facilities.
fn soap_users(
    errs: &mut Errors<'_>,
    listener: &str,
    users: &BTreeMap<String, toml::Spanned<SoapUserFile>>,
) -> BTreeMap<String, crate::soap::server::SoapUser> {
    let mut out = BTreeMap::new();
    for (user, entry) in users {
        let key = format!("listeners.{listener}.soap_users.{user}");
        let facilities = match entry.get_ref() {
            SoapUserFile::Password(_) => None,
            SoapUserFile::Bound(t) => {
                if t.facilities.is_empty() {
                    errs.push(
                        Some(entry.span()),
                        format!("{key}.facilities"),
                        "is empty: list the sending facilities (MSH-4.1) this user may send for",
                    );
                }
                if t.facilities.iter().any(|f| f.trim().is_empty()) {
                    errs.push(
                        Some(entry.span()),
                        format!("{key}.facilities"),
                        "holds a blank facility name",
                    );
                }
                Some(t.facilities.iter().cloned().collect())
            }
        };
        let password = match entry.get_ref() {
            SoapUserFile::Password(p) => p.clone(),
            SoapUserFile::Bound(t) => t.password.clone(),
        };
        out.insert(
            user.clone(),
            crate::soap::server::SoapUser {
                password,
                facilities,
            },
        );
    }
    out
}

fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

fn parse_addr(
    errs: &mut Errors<'_>,
    value: &toml::Spanned<String>,
    key: &str,
) -> Option<SocketAddr> {
    match value.get_ref().trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                Some(value.span()),
                key,
                format!(
                    "'{}' is not an IP:port address (e.g. 127.0.0.1:2575)",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

fn check_port(
    errs: &mut Errors<'_>,
    bound: &mut Vec<(SocketAddr, String)>,
    addr: SocketAddr,
    span: Range<usize>,
    key: &str,
) {
    if addr.port() != 0 {
        let clash = bound.iter().find(|(b, _)| {
            b.port() == addr.port()
                && (b.ip() == addr.ip() || b.ip().is_unspecified() || addr.ip().is_unspecified())
        });
        if let Some((_, other)) = clash {
            errs.push(
                Some(span),
                key,
                format!("port {} is already used by {other}", addr.port()),
            );
        }
    }
    bound.push((addr, key.to_string()));
}

/// Checks `[listeners.NAME.tls.identities]`: every key names a certificate
/// once, every list holds facilities, and client certificates are required.
fn compile_identities(
    errs: &mut Errors<'_>,
    listener: &str,
    tls: &ListenerTlsFile,
    span: Range<usize>,
) -> crate::identity::certificate::CertIdentities {
    let key = format!("listeners.{listener}.tls.identities");
    if !tls.identities.is_empty() && tls.client_ca.is_none() {
        errs.push(
            Some(span),
            key.clone(),
            "identities need client_ca: without mutual TLS no client certificate is presented",
        );
    }
    let mut out = crate::identity::certificate::CertIdentities::new();
    let mut written: BTreeMap<crate::identity::certificate::CertKey, &str> = BTreeMap::new();
    for (cert, facilities) in &tls.identities {
        let entry_key = format!("{key}.\"{}\"", cert.get_ref());
        let parsed = match crate::identity::certificate::CertKey::parse(cert.get_ref()) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                errs.push(Some(cert.span()), entry_key.clone(), why);
                None
            }
        };
        let list = facilities.get_ref();
        if list.is_empty() {
            errs.push(
                Some(facilities.span()),
                entry_key.clone(),
                "the list of facilities is empty: name the sending facilities (MSH-4.1) this certificate may send for, or remove the entry",
            );
        }
        if let Some(blank) = list
            .iter()
            .find(|f| f.trim().is_empty() || f.trim() != f.as_str())
        {
            errs.push(
                Some(facilities.span()),
                entry_key.clone(),
                format!("'{blank}' is not a sending facility (MSH-4.1): no empty values or surrounding spaces"),
            );
        }
        if let Some(parsed) = parsed {
            if let Some(other) = written.get(&parsed) {
                errs.push(
                    Some(cert.span()),
                    entry_key,
                    format!("names the same certificate as \"{other}\"; keep one entry"),
                );
            } else {
                written.insert(parsed.clone(), cert.get_ref());
                out.insert(parsed, list.iter().cloned().collect());
            }
        }
    }
    out
}

fn compile_plugin(
    errs: &mut Errors<'_>,
    base: &Path,
    p: &PluginFile,
    key: &str,
    tables: &BTreeMap<String, HashMap<String, String>>,
    codeset_names: &BTreeSet<String>,
) -> Option<PluginSpec> {
    let wasm = base.join(p.wasm.get_ref());
    if !wasm.is_file() {
        errs.push(
            Some(p.wasm.span()),
            format!("{key}.wasm"),
            format!("plugin file not found: {}", wasm.display()),
        );
    }
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
                    if codeset_names.is_empty() {
                        errs.push(
                            Some(g.span()),
                            format!("{key}.grants"),
                            "'codesets' needs a [codesets] dir",
                        );
                    }
                    grants.extend(codeset_names.iter().map(|t| Grant::Lookup(t.clone())));
                    continue;
                }
                match parse_grant(g.get_ref(), |t| tables.contains_key(t)) {
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
    Some(PluginSpec {
        name,
        wasm,
        time_limit: Duration::from_millis(time_ms),
        memory_limit: (mem_mib as usize) << 20,
        max_output: p.max_output_bytes.unwrap_or(4 << 20),
        max_input: p.max_input_bytes.unwrap_or(2 << 20),
        grants,
        config,
    })
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
    fn reports_every_error_with_lines() {
        let src = r#"
[listeners.a]
listen = "127.0.0.1:2575"

[listeners.b]
listen = "127.0.0.1:2575"

[listeners.c]
listen = "not-an-address"

[destinations.wa]
mllp = "localhost"

[[routes]]
name = "r"
destinations = ["nowhere"]

[[routes.plugins]]
wasm = "missing.wasm"
grants = ["lookup:nope", "fly"]
"#;
        let errs = load_str(src, Path::new("/tmp/izhub-test.toml"))
            .unwrap_err()
            .0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let joined = text.join("\n");
        assert_eq!(errs.len(), 7, "{joined}");
        assert!(joined.contains("unknown grant 'fly'"), "{joined}");
        assert!(joined.contains("izhub-test.toml:6:10: listeners.b.listen: port 2575 is already used by listeners.a.listen"), "{joined}");
        assert!(
            joined.contains(":9:10: listeners.c.listen: 'not-an-address' is not an IP:port"),
            "{joined}"
        );
        assert!(
            joined.contains(":12:8: destinations.wa.mllp: 'localhost' is not a host:port"),
            "{joined}"
        );
        assert!(
            joined.contains(
                ":16:17: routes[0].destinations: unknown destination 'nowhere' (defined: wa)"
            ),
            "{joined}"
        );
        assert!(
            joined.contains(":19:8: routes[0].plugins[0].wasm: plugin file not found"),
            "{joined}"
        );
        assert!(
            joined.contains(":20:11: routes[0].plugins[0].grants: no table named 'nope'"),
            "{joined}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_line() {
        let src = "[listeners.a]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n";
        let errs = load_str(src, Path::new("x.toml")).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line.map(|l| l.0), Some(3));
        assert!(
            errs[0].message.contains("unknown field `listen_port`"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn soap_users_bound_to_facilities_and_request_timeouts() {
        let src = r#"
[listeners.soap]
listen = "127.0.0.1:0"
protocol = "soap"
request_timeout_secs = 5
[listeners.soap.soap_users]
open = "pw1"
ehr1 = { password = "pw2", facilities = ["CLINIC-A", "CLINIC-B"] }
"#;
        let cfg = load_str(src, Path::new("x.toml")).unwrap();
        let l = &cfg.listeners[0];
        assert_eq!(l.request_timeout, Duration::from_secs(5));
        let users = &l.soap.as_ref().unwrap().users;
        assert_eq!(users["open"].password, "pw1");
        assert_eq!(users["open"].facilities, None);
        assert_eq!(users["ehr1"].password, "pw2");
        assert_eq!(
            users["ehr1"].facilities,
            Some(BTreeSet::from(["CLINIC-A".into(), "CLINIC-B".into()]))
        );
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .starts_with("listeners.soap.soap_users.open: SOAP user 'open' is not bound"),
            "{warnings:?}"
        );

        let src = r#"
[listeners.mllp]
listen = "127.0.0.1:0"
request_timeout_secs = 5

[listeners.soap]
listen = "127.0.0.1:0"
protocol = "soap"
request_timeout_secs = 0
[listeners.soap.soap_users]
ehr1 = { password = "pw", facilities = [] }
ehr2 = { password = "pw", facilities = [""] }
ehr3 = { password = "pw", facility = ["X"] }
ehr4 = 7
"#;
        let errs = load_str(src, Path::new("x.toml")).unwrap_err();
        let text = errs.to_string();
        // Untagged tables fail as a whole: the first bad value is reported.
        assert!(
            text.contains("a password, or a table { password = \"...\", facilities"),
            "{text}"
        );
        let src = src
            .replace("ehr3 = { password = \"pw\", facility = [\"X\"] }\n", "")
            .replace("ehr4 = 7\n", "");
        let text = load_str(&src, Path::new("x.toml")).unwrap_err().to_string();
        assert!(text.contains("4 errors"), "{text}");
        assert!(
            text.contains(
                ":4:24: listeners.mllp.request_timeout_secs: applies to SOAP listeners only"
            ),
            "{text}"
        );
        assert!(
            text.contains(":9:24: listeners.soap.request_timeout_secs: must be at least 1"),
            "{text}"
        );
        assert!(
            text.contains(":11:8: listeners.soap.soap_users.ehr1.facilities: is empty"),
            "{text}"
        );
        assert!(
            text.contains("listeners.soap.soap_users.ehr2.facilities: holds a blank facility name"),
            "{text}"
        );
    }

    #[test]
    fn checks_certificate_identities() {
        let hex = "0f".repeat(32);
        let src = format!(
            r#"[listeners.a]
listen = "127.0.0.1:0"
[listeners.a.tls]
cert = "a.pem"
key = "a.key"
client_ca = "ca.pem"
[listeners.a.tls.identities]
"CN=HIE-MEMBER-1" = ["CLINIC-A", "CLINIC-B"]
"HIE-MEMBER-2" = ["CLINIC-C"]
"sha256:12zz" = ["CLINIC-D"]
"CN=HIE-MEMBER-3" = []
"sha256:{hex}" = ["CLINIC-E"]
"sha256:{upper}" = ["CLINIC-F"]
"CN=HIE-MEMBER-4" = [" CLINIC-G"]

[listeners.b]
listen = "127.0.0.1:0"
[listeners.b.tls]
cert = "b.pem"
key = "b.key"
[listeners.b.tls.identities]
"CN=HIE-MEMBER-1" = ["CLINIC-A"]
"#,
            upper = hex.to_uppercase()
        );
        let errs = load_str(&src, Path::new("x.toml")).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let joined = text.join("\n");
        let upper = hex.to_uppercase();
        let expect = [
            ":9:1: listeners.a.tls.identities.\"HIE-MEMBER-2\": 'HIE-MEMBER-2' names no certificate: write \"CN=",
            ":10:1: listeners.a.tls.identities.\"sha256:12zz\": 'sha256:12zz' is not a SHA-256 fingerprint",
            ":11:21: listeners.a.tls.identities.\"CN=HIE-MEMBER-3\": the list of facilities is empty",
            &format!(
                ":12:1: listeners.a.tls.identities.\"sha256:{hex}\": names the same certificate as \"sha256:{upper}\""
            ),
            ":14:21: listeners.a.tls.identities.\"CN=HIE-MEMBER-4\": ' CLINIC-G' is not a sending facility",
            "listeners.b.tls.identities: identities need client_ca",
        ];
        for e in expect {
            assert!(joined.contains(e), "missing {e:?} in:\n{joined}");
        }
        // The rest are the two listeners' missing certificate files.
        assert_eq!(errs.len(), expect.len() + 2, "{joined}");
    }

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
