//! The configuration file as written. Every table rejects unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole `izhub.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Admin HTTP endpoint (`/healthz`, `/metrics`, the console and its API).
    pub admin: Option<AdminFile>,
    /// MLLP listeners by name.
    #[serde(default)]
    pub listeners: BTreeMap<String, Spanned<ListenerFile>>,
    /// IIS destinations by name.
    #[serde(default)]
    pub destinations: BTreeMap<String, Spanned<DestinationFile>>,
    /// The journal used by routes in `commit` ACK mode.
    pub store: Option<StoreFile>,
    /// Immunization code sets (CVX, MVX, NDC, HL7 and CDCREC tables).
    pub codesets: Option<CodeSetsFile>,
    /// Lookup tables plugins may be granted, by name: key → value.
    #[serde(default)]
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
    /// Publisher keys (`ed25519:<hex>`, from `izhub plugin keygen`): when
    /// set, every plugin must be signed by one of them.
    pub trusted_publishers: Option<Vec<Spanned<String>>>,
    /// Routes, tried in order; the first that matches a message takes it.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
    /// The operator console and its message log (on the admin address).
    pub console: Option<ConsoleFile>,
    /// Bulk queries (cohort in, FHIR Bulk Data out).
    pub bulk: Option<BulkFile>,
}

/// `[bulk]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFile {
    /// Where the admin API keeps groups and export jobs, relative to this
    /// file (default `data/bulk`).
    pub dir: Option<String>,
    /// MSH-3 of the queries (default `IZHUB`).
    pub sending_application: Option<String>,
    /// MSH-4 of the queries, which routes see as the sender (default `IZHUB-BULK`).
    pub sending_facility: Option<String>,
    /// The listener the queries are taken as arriving on, for routes limited
    /// to listeners (default: `bulk`, which no route limited to listeners takes).
    pub listener: Option<String>,
    /// Attempts per patient when the IIS answers AE or does not answer (default 5).
    pub max_attempts: Option<u32>,
    /// RCP-2: most records the IIS returns per query (default 10).
    pub max_records: Option<u32>,
}

/// `[console]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    /// Keep every message (relay mode too) in the message log for the
    /// console (default true when `[admin]` is set).
    pub record: Option<bool>,
    /// The message log file, relative to this file (default `data/messages.db`).
    pub log: Option<String>,
    /// Messages older than this many days are pruned (default 30).
    pub keep_days: Option<u64>,
    /// At most this many messages are kept (default 1,000,000).
    pub keep_messages: Option<u64>,
    /// CVX and NDC code sets older than this many days are flagged (default 90).
    pub codeset_max_age_days: Option<u64>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address for the admin HTTP endpoint, e.g. `127.0.0.1:9480`.
    pub listen: Spanned<String>,
    /// Most sending facilities (MSH-4.1) kept as metric labels (default
    /// 500); only facilities named in the configuration are, the rest count
    /// as `other`.
    pub max_sender_labels: Option<usize>,
    /// Console users: who may log in, with which role, seeing what.
    #[serde(default)]
    pub users: Vec<Spanned<AdminUserFile>>,
    /// Console sign-in through an OpenID Connect provider.
    pub oidc: Option<Spanned<super::oidc::OidcFile>>,
    /// Hex SHA-256 of the bearer token `/metrics` and `/healthz` require
    /// (unset: they stay open).
    pub metrics_token_sha256: Option<Spanned<String>>,
    /// How long a console session lasts after login, in minutes (default 480).
    pub session_minutes: Option<Spanned<u64>>,
    /// HTTPS on the admin address: its certificate and key.
    pub tls: Option<Spanned<AdminTlsFile>>,
    /// Cluster: the environment variable holding the secret nodes share to
    /// ask each other for console data (unset: each node's console shows
    /// its own messages only).
    pub peer_token_env: Option<String>,
}

/// `[[admin.users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserFile {
    /// The login name.
    pub name: Spanned<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: Spanned<String>,
    /// The password's argon2id PHC string (`izhub user hash`).
    pub password_hash: Spanned<String>,
    /// Routes whose messages this user sees and acts on (default: all).
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destinations whose messages this user sees and acts on (default: all).
    pub destinations: Option<Spanned<Vec<Spanned<String>>>>,
    /// Hex SHA-256 of a bearer token a system may use as this user.
    pub token_sha256: Option<Spanned<String>>,
}

/// `[admin.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsFile {
    /// PEM certificate chain, relative to this file.
    pub cert: String,
    /// PEM private key (keep its permissions tight).
    pub key: String,
    /// PEM CA that client certificates must chain to; requires them (on top
    /// of logging in).
    pub client_ca: Option<String>,
}

/// `[codesets]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeSetsFile {
    /// Directory with `cdc/` and `aira/` code-set files, relative to this file.
    pub dir: Spanned<String>,
}

/// `[listeners.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Address to bind, e.g. `0.0.0.0:2575`.
    pub listen: Spanned<String>,
    /// Sending facilities (MSH-4.1) allowed on this listener; empty allows any.
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    /// Largest frame accepted, in bytes (default 1 MiB).
    pub max_frame_bytes: Option<usize>,
    /// Accept `<FS>` without the trailing `<CR>`.
    #[serde(default)]
    pub lenient_framing: bool,
    /// Most connections open at once (default 1024).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one IP address (default 64).
    pub max_connections_per_peer: Option<usize>,
    /// Close a connection idle this long, in seconds (default 600).
    pub idle_timeout_secs: Option<u64>,
    /// MLLP over TLS: this listener's certificate and key, and with
    /// `client_ca` mutual TLS (the client certificate's subject CN must be
    /// MSH-4.1, unless `identities` maps the certificate to facilities).
    pub tls: Option<Spanned<ListenerTlsFile>>,
    /// `mllp` (default) or `soap` (the CDC WSDL over HTTP).
    pub protocol: Option<Spanned<String>>,
    /// SOAP: the URL path of the endpoint (default `/`).
    pub soap_path: Option<String>,
    /// SOAP: how long a request may take, from its first byte until its
    /// answer is ready, in seconds (default 60).
    pub request_timeout_secs: Option<Spanned<u64>>,
    /// SOAP: users allowed to submit, each with a password and, preferably,
    /// the sending facilities (MSH-4.1) it may send for; empty allows any.
    #[serde(default)]
    pub soap_users: BTreeMap<String, Spanned<SoapUserFile>>,
}

/// `[listeners.NAME.soap_users]`: `user = "password"` (any facility), or
/// `user = { password = "...", facilities = ["CLINIC-A"] }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a password, or a table { password = \"...\", facilities = [\"FACILITY\", ...] }"
)]
pub enum SoapUserFile {
    /// A password only: the user may send for any facility.
    Password(String),
    /// A password and the facilities the user may send for.
    Bound(SoapUserTable),
}

/// A SOAP user bound to facilities.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapUserTable {
    /// The user's password (never logged).
    pub password: String,
    /// Sending facilities (MSH-4.1) this user may send for; not empty.
    pub facilities: Vec<String>,
}

/// `[destinations.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFile {
    /// MLLP address of the IIS, `host:port`.
    pub mllp: Option<Spanned<String>>,
    /// CDC WSDL SOAP endpoint of the IIS, `http://host:port/path` (instead of `mllp`).
    pub soap: Option<Spanned<String>>,
    /// SOAP: the username the HIE submits as.
    pub username: Option<String>,
    /// SOAP: the password (prefer `password_env`; never logged).
    pub password: Option<String>,
    /// SOAP: the environment variable holding the password.
    pub password_env: Option<Spanned<String>>,
    /// SOAP: the facility id sent with each message.
    pub facility_id: Option<String>,
    /// MLLP over TLS to the IIS.
    pub tls: Option<Spanned<DestinationTlsFile>>,
    /// Connect timeout in milliseconds (default 3000).
    pub connect_timeout_ms: Option<u64>,
    /// How long to wait for the IIS's answer, in milliseconds (default 30000).
    pub answer_timeout_ms: Option<u64>,
    /// Persistent connections kept open to the IIS (default 4).
    pub connections: Option<usize>,
    /// Largest answer accepted, in bytes (default 1 MiB).
    pub max_frame_bytes: Option<usize>,
    /// How an answer must name the message it answers: "strict" (default:
    /// MSA-2 = MSH-10 sent, QAK-1 = QPD-2), "control-id" (an answer without
    /// MSA-2 is taken too) or "off" (any frame is the answer).
    pub answer_match: Option<Spanned<String>>,
    /// Commit mode: attempts before a message is dead-lettered (default 10).
    pub max_attempts: Option<u32>,
    /// Commit mode: first retry delay in milliseconds, doubled each time (default 500).
    pub retry_initial_ms: Option<u64>,
    /// Commit mode: longest retry delay in milliseconds (default 60000).
    pub retry_max_ms: Option<u64>,
    /// Consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before a trial, in milliseconds (default 5000).
    pub breaker_open_ms: Option<u64>,
    /// Bulk queries in flight at once (default 1; kept below `connections`).
    pub bulk_max_in_flight: Option<usize>,
    /// Bulk queries a second at most.
    pub bulk_queries_per_second: Option<u32>,
    /// The hours bulk queries may run, `HH:MM-HH:MM` UTC (may wrap midnight).
    pub bulk_window: Option<Spanned<String>>,
    /// Bulk queries a UTC day at most.
    pub bulk_daily_cap: Option<u64>,
}

/// `[listeners.NAME.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// PEM certificate chain, relative to this file.
    pub cert: String,
    /// PEM private key (keep its permissions tight).
    pub key: String,
    /// PEM CA that client certificates must chain to; requires them.
    pub client_ca: Option<String>,
    /// With `client_ca`: the sending facilities (MSH-4.1) a client
    /// certificate may send for, by `"CN=<subject common name>"` or
    /// `"sha256:<hex SHA-256 of its DER>"` (a fingerprint is looked up
    /// first). A certificate not named here sends for its subject CN only.
    #[serde(default)]
    pub identities: BTreeMap<Spanned<String>, Spanned<Vec<String>>>,
}

/// `[destinations.NAME.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationTlsFile {
    /// PEM CA the IIS's certificate must chain to.
    pub ca: String,
    /// The name the IIS's certificate must carry (default: the host of `mllp`).
    pub server_name: Option<String>,
    /// Client certificate for mutual TLS (with `key`).
    pub cert: Option<String>,
    /// Client private key.
    pub key: Option<String>,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// SQLite journal file, relative to this file (default `data/izhub.db`).
    pub path: Option<String>,
    /// Finished messages are deleted after this many days (default 30).
    pub retention_days: Option<u64>,
    /// At most this many finished messages are kept (oldest deleted first).
    pub max_finished: Option<u64>,
    /// A shared PostgreSQL journal instead of the SQLite file, for several
    /// engine nodes over one queue: `postgres://user@host:port/db`
    /// (`?sslmode=require` for TLS). Never with a password in it.
    pub url: Option<String>,
    /// The environment variable holding the database password.
    pub password_env: Option<String>,
    /// CA certificate (PEM) the database's TLS certificate must chain to
    /// (default: the system's roots).
    pub ca: Option<String>,
    /// This node's name in the cluster (default: host name and process id).
    pub node: Option<String>,
    /// How long a node's claim on a delivery lasts without renewal
    /// (seconds, default 10): a dead node's deliveries resume after it.
    pub lease_seconds: Option<u64>,
    /// Where the other nodes reach this node's admin API, for a console that
    /// shows every node's messages: `http://host:port` or `https://host:port`
    /// (default: the admin address, when it names a host rather than 0.0.0.0
    /// or [::]; https when `[admin.tls]` is set).
    pub console_url: Option<String>,
    /// CA certificate (PEM) the other nodes' admin certificates chain to,
    /// for a `console_url` that is https (required then).
    pub console_ca: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name used in logs, metrics and plugin envelopes.
    pub name: String,
    /// Listeners this route takes messages from; empty means all.
    #[serde(default)]
    pub listeners: Vec<Spanned<String>>,
    /// Message types, `VXU^V04`, `QBP^Q11` or just `VXU`; empty means all.
    #[serde(default)]
    pub message_types: Vec<String>,
    /// Sending facilities (MSH-4.1); empty means any.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Receiving facilities (MSH-6.1); empty means any.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// Where messages go unless a plugin routes them elsewhere.
    #[serde(default)]
    pub destinations: Vec<Spanned<String>>,
    /// The destinations this route's plugins may choose with `route-to`
    /// (default: `destinations` and the destinations its plugins' settings
    /// name, such as route-by-jurisdiction's state table).
    pub route_to: Option<Vec<Spanned<String>>>,
    /// How the sender is answered: `relay` (the IIS's own answer) or `commit`
    /// (AA once the message is durably journaled; delivered from the queue).
    pub ack_mode: Option<Spanned<String>>,
    /// Plugins run in order.
    #[serde(default)]
    pub plugins: Vec<Spanned<PluginFile>>,
    /// Publisher keys one of which must have signed each of this route's
    /// plugins (within the engine-wide `trusted_publishers`, when set).
    pub trusted_publishers: Option<Vec<Spanned<String>>>,
}

/// `[[routes.plugins]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// Name used in errors and metrics (default: the file name without `.wasm`).
    pub name: Option<String>,
    /// Path of the component, relative to the config file.
    pub wasm: Spanned<String>,
    /// `name@version` the component's manifest must carry: a different
    /// build is refused, at start and on reload.
    pub pin: Option<Spanned<String>>,
    /// Time limit for one call, in milliseconds (default 200).
    pub time_limit_ms: Option<u64>,
    /// Memory limit for one instance, in MiB (default 32).
    pub memory_limit_mib: Option<u64>,
    /// Largest HL7 text the plugin may return, in bytes (default 4 MiB).
    pub max_output_bytes: Option<usize>,
    /// Largest message handed to the plugin, in bytes (default 2 MiB).
    pub max_input_bytes: Option<usize>,
    /// What the plugin may use: `log`, `config`, `lookup:TABLE` (default log, config).
    pub grants: Option<Vec<Spanned<String>>>,
    /// The plugin's own settings, read with `config(key)`.
    #[serde(default)]
    pub config: toml::Table,
}
