//! Turns a [`FileConfig`] into a checked [`Config`], reporting every problem
//! at once with the file, line and key. Nothing here reads a file besides
//! the configuration itself: certificates, code sets, plugins and
//! environment variables are named here and read when the topology plans
//! the configuration.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::file::FileConfig;
use super::spec::*;

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, errors) = load_all(path)?;
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads and checks a configuration file, returning what it says together
/// with every problem found (for `izhub check`, which plans it anyway to
/// report the files it names too). Fails alone only when the file cannot be
/// read or is not TOML of the right shape.
pub fn load_all(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let error = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return Err(ConfigErrors(vec![error(format!(
                "cannot read the file: {e}"
            ))]));
        }
    };
    let (config, mut errors) = compile_str(&text, path)?;
    // A file that holds passwords must be readable by its owner only.
    let holds_secrets = config.destinations.iter().any(|d| {
        matches!(
            &d.transport,
            Transport::Soap {
                password: Secret::Inline(_),
                ..
            }
        )
    }) || config
        .listeners
        .iter()
        .any(|l| l.soap.as_ref().is_some_and(|s| !s.users.is_empty()));
    #[cfg(unix)]
    if holds_secrets {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                errors.push(error(format!(
                    "the file holds passwords but other users can read it (mode {mode:o}): chmod 600 it, or take \
                     destination passwords from the environment with password_env"
                )));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = holds_secrets;
    Ok((config, errors))
}

/// `[store] url`: a shared PostgreSQL journal. The password never sits in
/// the file: a URL carrying one is refused (it would end up in logs and
/// backups), and `password_env` names the variable that holds it.
fn compile_postgres(
    errs: &mut Errors<'_>,
    base: &Path,
    store: Option<&super::file::StoreFile>,
    admin: Option<SocketAddr>,
    admin_tls: bool,
) -> Option<super::spec::PostgresSpec> {
    let store = store?;
    let url = store.url.clone()?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        errs.push(None, "store.url", "must start with postgres://".to_string());
        return None;
    }
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    if authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
        || url.contains("password=")
    {
        errs.push(
            None,
            "store.url",
            "holds a password: take it from the environment with password_env".to_string(),
        );
        return None;
    }
    if store.path.is_some() {
        errs.push(
            None,
            "store.path",
            "a journal is either a file (path) or PostgreSQL (url), not both".to_string(),
        );
    }
    let lease = store.lease_seconds.unwrap_or(10);
    if !(2..=300).contains(&lease) {
        errs.push(
            None,
            "store.lease_seconds",
            "must be between 2 and 300".to_string(),
        );
    }
    if let Some(node) = &store.node
        && (node.is_empty()
            || node.len() > 64
            || !node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        errs.push(
            None,
            "store.node",
            "must be 1 to 64 letters, digits, '-', '_' or '.'".to_string(),
        );
    }
    let console_url = match &store.console_url {
        Some(u) => {
            let (scheme, rest) = match u.split_once("://") {
                Some(("http", r)) => ("http", Some(r)),
                Some(("https", r)) => ("https", Some(r)),
                _ => ("http", None),
            };
            let host = rest.map(|r| r.trim_end_matches('/'));
            if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', '@', ' '])) {
                errs.push(
                    None,
                    "store.console_url",
                    "must be http://host:port or https://host:port (the admin API as the other nodes reach it)".to_string(),
                );
            }
            host.map(|h| format!("{scheme}://{h}"))
        }
        None => admin.filter(|a| !a.ip().is_unspecified()).map(|a| {
            let scheme = if admin_tls { "https" } else { "http" };
            format!("{scheme}://{a}")
        }),
    };
    let console_ca = store.console_ca.as_ref().map(|c| base.join(c));
    if console_ca.is_none()
        && console_url
            .as_ref()
            .is_some_and(|u| u.starts_with("https://"))
    {
        errs.push(
            None,
            "store.console_ca",
            "is needed when the admin API is HTTPS: the CA (PEM) the other nodes' admin certificates chain to, so that this node can reach them".to_string(),
        );
    }
    Some(super::spec::PostgresSpec {
        url,
        password_env: store.password_env.clone(),
        ca: store.ca.as_ref().map(|c| base.join(c)),
        node: store.node.clone(),
        lease: Duration::from_secs(lease.clamp(2, 300)),
        console_url,
        console_ca,
    })
}

/// Collects errors with their positions in one source text.
pub(super) struct Errors<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    /// How many problems were found so far.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// Where `span` is, to report a problem found later.
    pub(super) fn origin(&self, span: Range<usize>, key: impl Into<String>) -> Origin {
        Origin {
            key: key.into(),
            line: self.line_col(Some(span)),
        }
    }

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

    pub(super) fn push(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
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
    let (config, errors) = compile_str(source, path)?;
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// [`load_str`], returning the configuration with its problems; fails alone
/// only when the text is not TOML of the right shape.
fn compile_str(source: &str, path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
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

    let listeners = super::listeners::compile(&mut errs, &base, &file, &mut bound);

    let destinations = super::destinations::compile(&mut errs, &base, &file);

    let tables: BTreeMap<String, HashMap<String, String>> = file
        .tables
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            )
        })
        .collect();
    let codesets = file.codesets.as_ref().map(|cs| {
        for name in izhub_codesets::table_names() {
            if tables.contains_key(name) {
                errs.push(
                    Some(cs.dir.span()),
                    "codesets.dir",
                    format!("code set '{name}' has the same name as a table under [tables]"),
                );
            }
        }
        CodeSetsSpec {
            dir: base.join(cs.dir.get_ref()),
            at: errs.origin(cs.dir.span(), "codesets.dir"),
        }
    });

    let routes = super::routes::compile(&mut errs, &base, &file, &tables, codesets.is_some());
    let admin_access = super::admin::compile(&mut errs, &base, &file);
    let postgres = compile_postgres(
        &mut errs,
        &base,
        file.store.as_ref(),
        admin,
        admin_access.tls.is_some(),
    );
    let commit = routes.iter().any(|r| r.ack_mode == AckMode::Commit);
    let store = file.store.as_ref();
    let config = Config {
        path: path.to_path_buf(),
        admin,
        admin_access,
        max_sender_labels: file
            .admin
            .as_ref()
            .and_then(|a| a.max_sender_labels)
            .unwrap_or(500),
        listeners,
        destinations,
        tables,
        codesets,
        journal: (commit && postgres.is_none()).then(|| {
            base.join(
                store
                    .and_then(|s| s.path.clone())
                    .unwrap_or_else(|| "data/izhub.db".into()),
            )
        }),
        postgres: postgres.filter(|_| commit),
        max_finished: store.and_then(|s| s.max_finished),
        retention: Duration::from_secs(
            store.and_then(|s| s.retention_days).unwrap_or(30).max(1) * 86_400,
        ),
        routes,
        console: compile_console(&base, &file, admin.is_some()),
        codeset_max_age_days: file
            .console
            .as_ref()
            .and_then(|c| c.codeset_max_age_days)
            .unwrap_or(90),
        bulk: compile_bulk(&mut errs, &base, file.bulk.as_ref()),
    };
    Ok((config, errs.list))
}

/// `[console]`: the message log's file and how long it keeps messages;
/// `None` without an admin listener or with `record = false`.
fn compile_console(
    base: &Path,
    file: &FileConfig,
    admin: bool,
) -> Option<super::spec::ConsoleSpec> {
    let c = file.console.as_ref();
    (admin && c.and_then(|c| c.record).unwrap_or(true)).then(|| super::spec::ConsoleSpec {
        // Nodes sharing a directory keep a log each.
        log: base.join(c.and_then(|c| c.log.clone()).unwrap_or_else(|| {
            match file
                .store
                .as_ref()
                .and_then(|s| s.url.as_ref().and(s.node.as_ref()))
            {
                Some(node) => format!("data/messages-{node}.db"),
                None => "data/messages.db".into(),
            }
        })),
        keep: Duration::from_secs(c.and_then(|c| c.keep_days).unwrap_or(30).max(1) * 86_400),
        keep_messages: c.and_then(|c| c.keep_messages).unwrap_or(1_000_000).max(1),
    })
}

/// `[bulk]`: where jobs live, how their queries name themselves, and their
/// limits.
fn compile_bulk(errs: &mut Errors<'_>, base: &Path, b: Option<&super::file::BulkFile>) -> BulkSpec {
    let mut name = |v: Option<&String>, default: &str, key: &str| -> String {
        match v {
            Some(v)
                if !v.is_empty()
                    && v.len() <= 64
                    && !crate::hl7::has_control(v)
                    && !v.contains(['|', '^', '~', '\\', '&']) =>
            {
                v.clone()
            }
            Some(v) => {
                errs.push(
                    None,
                    format!("bulk.{key}"),
                    format!(
                        "'{}' must be 1 to 64 characters without HL7 delimiters",
                        v.escape_debug()
                    ),
                );
                default.to_string()
            }
            None => default.to_string(),
        }
    };
    BulkSpec {
        dir: base.join(
            b.and_then(|b| b.dir.clone())
                .unwrap_or_else(|| "data/bulk".into()),
        ),
        sending_application: name(
            b.and_then(|b| b.sending_application.as_ref()),
            "IZHUB",
            "sending_application",
        ),
        sending_facility: name(
            b.and_then(|b| b.sending_facility.as_ref()),
            "IZHUB-BULK",
            "sending_facility",
        ),
        listener: b
            .and_then(|b| b.listener.clone())
            .unwrap_or_else(|| "bulk".into()),
        max_attempts: b.and_then(|b| b.max_attempts).unwrap_or(5).clamp(1, 100),
        max_records: b.and_then(|b| b.max_records).unwrap_or(10).clamp(1, 1000),
    }
}

pub(super) fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

pub(super) fn parse_addr(
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

pub(super) fn check_port(
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
        // The plugin file is read when the configuration is planned, not here.
        assert_eq!(errs.len(), 6, "{joined}");
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
            joined.contains(":20:11: routes[0].plugins[0].grants: no table named 'nope'"),
            "{joined}"
        );
    }

    #[test]
    fn nodes_reach_an_https_admin_api_only_with_a_ca() {
        let base = "[admin]\nlisten = \"127.0.0.1:9480\"\n\n[admin.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\n\
                    [destinations.d]\nmllp = \"127.0.0.1:1\"\n\n\
                    [[routes]]\nname = \"r\"\nack_mode = \"commit\"\ndestinations = [\"d\"]\n\n\
                    [store]\nurl = \"postgres://izhub@db/izhub\"\n";
        let errs = load_str(base, Path::new("x.toml")).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("store.console_ca: is needed")),
            "{text:?}"
        );
        let config = load_str(
            &format!("{base}console_ca = \"ca.pem\"\n"),
            Path::new("/etc/izhub/x.toml"),
        )
        .unwrap();
        let pg = config.postgres.unwrap();
        // With [admin.tls], the URL the other nodes use is https.
        assert_eq!(pg.console_url.as_deref(), Some("https://127.0.0.1:9480"));
        assert_eq!(
            pg.console_ca,
            Some(std::path::PathBuf::from("/etc/izhub/ca.pem"))
        );
        let explicit = load_str(
            "[store]\nurl = \"postgres://izhub@db/izhub\"\nconsole_url = \"ftp://a:1\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .0;
        assert!(
            explicit.iter().any(|e| e
                .to_string()
                .contains("must be http://host:port or https://host:port")),
            "{explicit:?}"
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
        // The certificate files are read when planned, not here.
        assert_eq!(errs.len(), expect.len(), "{joined}");
    }
}
