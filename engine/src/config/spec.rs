//! What a checked configuration says: plain specs, with no I/O and no
//! runtime objects (files are named, not read; secrets say where they come
//! from). The topology's plan step turns them into running parts.

use super::oidc::OidcSpec;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A checked configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub admin: Option<SocketAddr>,
    /// Who may use the admin address and how it is served: console users,
    /// the metrics token, sessions, HTTPS.
    pub admin_access: AdminAccessSpec,
    /// Most sending facilities kept as metric labels.
    pub max_sender_labels: usize,
    pub listeners: Vec<ListenerSpec>,
    pub destinations: Vec<DestinationSpec>,
    /// Lookup tables under `[tables]` (the code sets join them when the
    /// configuration is planned).
    pub tables: BTreeMap<String, HashMap<String, String>>,
    /// Where the code sets are read from, if configured.
    pub codesets: Option<CodeSetsSpec>,
    /// The journal file, when any route uses `commit` mode.
    pub journal: Option<PathBuf>,
    /// A shared PostgreSQL journal (`[store] url`), used instead of `journal`.
    pub postgres: Option<PostgresSpec>,
    /// How long finished messages stay in the journal.
    pub retention: Duration,
    /// How many finished messages the journal keeps at most.
    pub max_finished: Option<u64>,
    pub routes: Vec<RouteSpec>,
    /// The console's message log, when messages are recorded.
    pub console: Option<ConsoleSpec>,
    /// CVX and NDC code sets older than this are flagged on the console.
    pub codeset_max_age_days: u64,
    /// Bulk queries.
    pub bulk: BulkSpec,
}

/// A shared PostgreSQL journal (`[store] url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// `postgres://user@host:port/db?…`, without a password.
    pub url: String,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// CA the database's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This node's name; `None` picks host name and process id.
    pub node: Option<String>,
    /// How long a claim on a delivery lasts without renewal.
    pub lease: Duration,
    /// Where the other nodes reach this node's admin API.
    pub console_url: Option<String>,
    /// The CA the other nodes' admin certificates chain to (HTTPS between
    /// nodes).
    pub console_ca: Option<PathBuf>,
}

/// How bulk queries are made (`[bulk]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSpec {
    /// Groups and export jobs of the admin API.
    pub dir: PathBuf,
    pub sending_application: String,
    pub sending_facility: String,
    /// The listener queries are taken as arriving on.
    pub listener: String,
    pub max_attempts: u32,
    pub max_records: u32,
}

/// Where and how long the console's message log keeps messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSpec {
    pub log: PathBuf,
    pub keep: Duration,
    pub keep_messages: u64,
}

impl Config {
    /// What works but deserves the operator's attention, each line naming
    /// its key: SOAP users not bound to facilities, console logins in clear
    /// text.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(addr) = self.admin
            && !self.admin_access.users.is_empty()
            && self.admin_access.tls.is_none()
            && !addr.ip().is_loopback()
        {
            out.push(format!(
                "admin: console users log in over plain HTTP on {addr}, which is not a loopback address: passwords and session cookies cross the network in clear text; add [admin.tls]"
            ));
        }
        for d in &self.destinations {
            let relaxed = match d.delivery.answer_match {
                crate::hl7::AnswerMatch::Strict => continue,
                crate::hl7::AnswerMatch::ControlId => {
                    "an answer without MSA-2 is taken as the answer to the message in flight, so a stray answer without MSA-2 could reach the wrong sender"
                }
                crate::hl7::AnswerMatch::Off => {
                    "any frame the IIS sends is taken as the answer to the message in flight, so a stray, duplicated or late answer reaches the wrong sender"
                }
            };
            out.push(format!(
                "destinations.{}.answer_match: answers are matched '{}': {relaxed}; use \"strict\" unless this IIS cannot echo MSH-10 in MSA-2",
                d.name,
                d.delivery.answer_match.as_str()
            ));
        }
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

/// `[admin]` access: console users, the `/metrics` token, sessions and HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccessSpec {
    pub users: Vec<AdminUserSpec>,
    /// Sign-in through an OpenID Connect provider.
    pub oidc: Option<OidcSpec>,
    /// SHA-256 of the bearer token `/metrics` and `/healthz` require.
    pub metrics_token_sha256: Option<[u8; 32]>,
    /// How long a console session lasts after login.
    pub session: Duration,
    /// HTTPS: the files, read when planned (identities are not used).
    pub tls: Option<ListenerTlsSpec>,
    /// The environment variable holding the nodes' shared secret.
    pub peer_token_env: Option<String>,
}

impl Default for AdminAccessSpec {
    fn default() -> Self {
        AdminAccessSpec {
            users: Vec::new(),
            oidc: None,
            metrics_token_sha256: None,
            session: Duration::from_secs(480 * 60),
            tls: None,
            peer_token_env: None,
        }
    }
}

/// What a console user may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Dashboard, live flow, search and detail with PHI masked.
    Viewer,
    /// Also unmasking (audited) and every action.
    Operator,
    /// Also users and reload.
    Admin,
}

impl Role {
    /// Every role, from least to most allowed.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name as written in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (viewer, operator, admin)"))
    }
}

/// One console user. The password hash is an argon2id PHC string, checked
/// to parse; the text of neither it nor the token digest is ever shown.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminUserSpec {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    /// Routes whose messages the user sees and acts on; `None`: all.
    pub routes: Option<Vec<String>>,
    /// Destinations whose messages the user sees and acts on; `None`: all.
    pub destinations: Option<Vec<String>>,
    /// SHA-256 of a bearer token a system may use as this user.
    pub token_sha256: Option<[u8; 32]>,
}

impl fmt::Debug for AdminUserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminUserSpec")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("routes", &self.routes)
            .field("destinations", &self.destinations)
            .field("token", &self.token_sha256.is_some())
            .finish_non_exhaustive()
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
    /// MLLP (or SOAP) over TLS: the files, read when planned.
    pub tls: Option<ListenerTlsSpec>,
}

/// Where a setting was written, so that a problem found when the
/// configuration is planned (a certificate that does not load, an
/// environment variable that is not set) names its key and line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Dotted key, e.g. `listeners.ehr.tls`.
    pub key: String,
    /// 1-based line and column.
    pub line: Option<(usize, usize)>,
}

/// A listener's TLS files and certificate identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Certificates that may send for other facilities than their CN.
    pub identities: crate::identity::certificate::CertIdentities,
    pub at: Origin,
}

/// The code-set directory (`cdc/`, `aira/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSetsSpec {
    pub dir: PathBuf,
    pub at: Origin,
}

/// A listener speaking the CDC WSDL SOAP transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapListener {
    pub path: String,
    /// Users by name, with their passwords and facilities; empty allows any.
    pub users: BTreeMap<String, crate::soap::server::SoapUser>,
}

/// How a destination is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// MLLP to `host:port`.
    Mllp { addr: String },
    /// The CDC WSDL SOAP endpoint `http(s)://host:port/path`.
    Soap {
        url: String,
        username: String,
        password: Secret,
        facility_id: String,
    },
}

/// Where a password comes from. Its text is never shown.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    None,
    /// Written in the configuration file (which must then be private).
    Inline(String),
    /// Read from this environment variable when planned.
    Env {
        var: String,
        at: Origin,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::None => f.write_str("None"),
            Secret::Inline(_) => f.write_str("Inline(***)"),
            Secret::Env { var, .. } => write!(f, "Env({var})"),
        }
    }
}

/// A destination's TLS files and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationTlsSpec {
    pub ca: PathBuf,
    pub server_name: String,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    pub at: Origin,
}

/// One IIS destination, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    pub transport: Transport,
    /// Over TLS: the files, read when planned.
    pub tls: Option<DestinationTlsSpec>,
    /// Timeouts, connections, retries and the breaker.
    pub delivery: DeliverySettings,
    /// What the IIS allows of bulk queries.
    pub bulk: BulkLimits,
}

/// What an IIS allows of bulk queries (`bulk_*` keys of a destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkLimits {
    /// Bulk queries in flight at once (default 1).
    pub max_in_flight: usize,
    /// Bulk queries a second at most.
    pub per_second: Option<u32>,
    /// The hours bulk queries may run, as minutes of the UTC day
    /// `[start, end)`; it may wrap midnight.
    pub window: Option<(u16, u16)>,
    /// Bulk queries a UTC day at most.
    pub daily_cap: Option<u64>,
}

impl Default for BulkLimits {
    fn default() -> Self {
        BulkLimits {
            max_in_flight: 1,
            per_second: None,
            window: None,
            daily_cap: None,
        }
    }
}

/// How a destination is delivered to, the same before and after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    pub connections: usize,
    pub max_frame: usize,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// How an answer must name the message it answers.
    pub answer_match: crate::hl7::AnswerMatch,
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
    /// name order, at most `max_sender_labels` of them. (Certificate and SOAP
    /// user facilities count too.)
    pub fn sender_labels(&self) -> std::collections::HashSet<String> {
        let soap_facilities = self
            .listeners
            .iter()
            .filter_map(|l| l.soap.as_ref())
            .flat_map(|s| s.users.values())
            .filter_map(|u| u.facilities.as_ref())
            .flatten();
        let certificate_facilities = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.identities.values())
            .flatten();
        let named: BTreeSet<&String> = self
            .listeners
            .iter()
            .flat_map(|l| l.allowed_senders.iter())
            .chain(self.routes.iter().flat_map(|r| r.senders.iter()))
            .chain(soap_facilities)
            .chain(certificate_facilities)
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
    /// Every code set loaded from `[codesets] dir` (`codesets`).
    CodeSets,
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
    /// Where `wasm` was written (the file is read when planned).
    pub at: Origin,
    pub time_limit: Duration,
    pub memory_limit: usize,
    pub max_output: usize,
    pub max_input: usize,
    pub grants: BTreeSet<Grant>,
    pub config: BTreeMap<String, String>,
    /// `(name, version)` the component's manifest must say (`pin`).
    pub pin: Option<(String, String)>,
    /// Publisher keys one of which must have signed the component; `None`
    /// accepts an unsigned one.
    pub trusted: Option<Vec<super::plugin_id::PublicKey>>,
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
