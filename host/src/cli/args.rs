//! What the command line accepts: every command, its arguments and `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::plugin::RuntimeOptions;

/// izhub: an immunization interface engine (HL7 v2 over MLLP, sandboxed WebAssembly plugins).
#[derive(Debug, Parser)]
#[command(name = "izhub", version = crate::version::LONG, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing syntax, e.g. `info` or `izhub=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Where compiled plugins are cached between runs.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Directory for compiled plugins [default: $IZHUB_CACHE_DIR, else ~/.cache/izhub/components].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin at start instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The runtime options these arguments ask for.
    pub fn runtime_options(&self) -> RuntimeOptions {
        let dir = if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(|| std::env::var_os("IZHUB_CACHE_DIR").map(PathBuf::from))
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/izhub/components"))
                })
        };
        RuntimeOptions {
            cache_dir: dir,
            ..RuntimeOptions::default()
        }
    }
}

/// How `izhub validate` writes its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Plain text for a terminal.
    Text,
    /// One row per detection and per blocked message's sentence.
    Csv,
    /// One printable page.
    Html,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: listeners, routes, plugins and the admin endpoint.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// Do not watch the configuration and plugin files for changes.
        #[arg(long)]
        no_reload: bool,
        /// How often to look for changed files, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        reload_poll_ms: u64,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Check a configuration file and report every error at once, without starting anything.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Dry-run a batch of a clinic's messages through a route: per detection,
    /// how often and where it fired, and every message that would be blocked
    /// with the sentence the clinic would read. Nothing is delivered or
    /// journaled. Exit code: 0 nothing would be blocked, 1 some would, 2 the
    /// configuration or an input could not be read.
    Validate(ValidateArgs),
    /// Run a simulated state IIS that answers VXU and QBP^Q11 over MLLP.
    SimIis(SimArgs),
    /// Send HL7 files over MLLP and print each answer.
    Send {
        /// Message files (one message each; LF or CR line ends).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Address to send to, host:port.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print only one line per answer.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run journaled messages through their route again (commit mode): by id,
    /// sender, status or time. The running engine delivers the result.
    Reprocess {
        /// Configuration file.
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// Journal ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<i64>,
        /// Only messages from this sending facility (MSH-4.1).
        #[arg(long)]
        sender: Option<String>,
        /// Only messages in this state: queued, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// Only messages received in the last N minutes.
        #[arg(long)]
        since_minutes: Option<i64>,
        /// List what would be reprocessed, do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Bulk queries: a cohort of patients in, their immunization histories out as FHIR
    /// R4 NDJSON (Bulk Data), one QBP^Q11 per patient through the routes.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// The operator console's message log: seed it for benchmarks.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Console users: add one to the configuration, hash a password, make a bearer token.
    #[command(subcommand)]
    User(UserCommand),
    /// Code sets (CVX, MVX, NDC, HL7 tables): status and update.
    #[command(subcommand)]
    Codes(CodesCommand),
    /// Ask a running engine's /healthz: exit 0 when it answers 200, 1 otherwise (for container health checks).
    Health(super::health::HealthArgs),
    /// Copy the SQLite journal and message log while the engine runs.
    Backup(super::backup::BackupArgs),
    /// Put back what `izhub backup` copied (the engine stopped).
    Restore(super::backup::RestoreArgs),
    /// Plugin author tools: new, build, test, bench.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Load-test an MLLP endpoint: msgs/s and latency percentiles, with every ACK checked.
    Bench(BenchArgs),
}

/// A `--rate`: a positive number of messages a second.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(r),
        _ => Err(format!(
            "'{text}' is not a rate from 0 to 1,000,000 messages a second"
        )),
    }
}

/// `izhub bulk …`
#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Query the IIS for every patient of a cohort and write FHIR NDJSON into a directory
    /// (Patient.ndjson, Immunization.ndjson, …, OperationOutcome.ndjson for errors).
    Run {
        /// Configuration file (its routes, plugins and destinations carry the queries).
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// The cohort: CSV with a header row (docs/bulk.md lists the columns) or FHIR
        /// Patient NDJSON.
        #[arg(long)]
        cohort: PathBuf,
        /// Output directory (new, or empty); the job's state is kept in it.
        #[arg(long)]
        out: PathBuf,
        /// Ask for the evaluated history and forecast (Z44) instead of the history (Z34).
        #[arg(long)]
        forecast: bool,
        /// Only immunizations given on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only these resource types (repeatable): Patient, Immunization,
        /// ImmunizationRecommendation, ImmunizationEvaluation.
        #[arg(long = "type")]
        types: Vec<String>,
        /// Compare with the EHR's history (Immunization NDJSON): doses one side has and the
        /// other lacks, in reconciliation.ndjson and reconciliation.csv.
        #[arg(long)]
        ehr_history: Option<PathBuf>,
        /// Days two doses of one vaccine group may differ and still match.
        #[arg(long, default_value_t = 7)]
        tolerance_days: u32,
    },
    /// Where a job stands.
    Status {
        /// The job's output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Stop a job (a running `izhub bulk run` stops within a second).
    Cancel {
        /// The job's output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Finish a job that stopped (killed, or the machine went down): the patients already
    /// done are not queried again and no line is written twice.
    Resume {
        /// Configuration file.
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// The job's output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `izhub console …`
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Fill the message log of a configuration with synthetic messages
    /// (200 senders and routes, 30 days, a sample message as the body), to
    /// measure the console at scale. Run it while the engine is stopped.
    Seed {
        /// Configuration file (its `[console]` log is filled).
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// How many messages to write.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// The message used as every body.
        #[arg(long, default_value = "samples/bench/vxu-nist-3kb.hl7")]
        sample: PathBuf,
    },
}

/// `izhub user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a console user to the configuration file as an [[admin.users]]
    /// entry. The password is asked twice on the terminal without echo (or
    /// read from the first line of standard input with --password-stdin) and
    /// only its argon2id hash is written. The file is created (owner-only)
    /// when missing; a user already there is refused. A running engine lets
    /// the user log in after its next reload.
    Add {
        /// Login name: 1 to 64 letters, digits, '.', '_', '-' or '@'.
        name: String,
        /// viewer: dashboard, live flow, search and detail with PHI masked;
        /// operator: also unmasking (audited) and every action; admin: also
        /// users and reload.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// Configuration file.
        #[arg(long, short, default_value = "izhub.toml")]
        config: PathBuf,
        /// Limit the user to these routes' messages (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        routes: Vec<String>,
        /// Limit the user to messages for these destinations (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        destinations: Vec<String>,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// Also make a bearer token for systems acting as this user: printed
        /// once, only its SHA-256 is written (token_sha256).
        #[arg(long)]
        token: bool,
    },
    /// Print the argon2id PHC string of a password, for an [[admin.users]]
    /// password_hash (asked on the terminal, or read with --password-stdin).
    Hash {
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print a new random bearer token and its SHA-256, for token_sha256 or
    /// [admin] metrics_token_sha256 (the configuration keeps only the digest).
    Token,
}

/// `izhub codes …`
#[derive(Debug, Subcommand)]
pub enum CodesCommand {
    /// Show each code set's source, date and number of codes.
    Status {
        /// Code-set directory (with cdc/ and aira/).
        #[arg(long, default_value = "samples/codesets")]
        dir: PathBuf,
    },
    /// Install newer CDC/AIRA files (checked before anything is replaced); a
    /// running engine picks them up like any configuration change.
    Update {
        /// Where the new files are (flat, or with cdc/ and aira/).
        #[arg(long)]
        from: PathBuf,
        /// Code-set directory to update.
        #[arg(long, default_value = "samples/codesets")]
        dir: PathBuf,
    },
}

/// `izhub plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a new plugin project in a new directory, with the SDK and the
    /// WIT contract from this binary beside it (no izhub source tree needed).
    New {
        /// Plugin name, e.g. `check-lot-numbers`.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::tools::plugin_kit::Lang,
        /// Use this izhub-plugin SDK checkout instead of the copy in the binary.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print a component's manifest and signature.
    Inspect {
        /// The plugin component (.wasm).
        wasm: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a publisher key pair: OUT.key (secret, 0600) and OUT.pub (for trusted_publishers).
    Keygen {
        /// Path of the files without extension, e.g. `keys/example-hie`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component with a publisher key (in place unless --out).
    Sign {
        /// The secret key (PKCS#8 PEM, from `izhub plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The plugin component (.wasm).
        wasm: PathBuf,
        /// Write the signed component here instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build a plugin project (Rust, JavaScript or Python) into a component,
    /// write its manifest (izhub-plugin.toml) into it, and print its path.
    Build {
        /// The plugin project's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin on message files with production limits: verdict, issues,
    /// changes, time and peak memory; optionally against golden files.
    Test {
        /// The plugin component (.wasm).
        wasm: PathBuf,
        /// Message files.
        #[arg(long = "message", short, required = true, num_args = 1..)]
        messages: Vec<PathBuf>,
        /// A config value for the plugin, `key=value` (repeatable).
        #[arg(long = "config", short, value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// A lookup table, `name=FILE` with `key=value` lines (repeatable; granted).
        #[arg(long = "table", value_parser = parse_table)]
        tables: Vec<(String, PathBuf)>,
        /// An extra grant, e.g. `link:wasi:filesystem` (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Load and grant the code sets in this directory (e.g. samples/codesets).
        #[arg(long)]
        codesets: Option<PathBuf>,
        /// Compare each result with DIR/<message name>.expected; exit 1 on a difference.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// With --expect: write the golden files instead of comparing.
        #[arg(long, requires = "expect")]
        bless: bool,
    },
    /// Measure a plugin's per-call cost (fresh instance per call) and its phases, limits on vs off.
    Bench {
        /// The plugin component (.wasm).
        wasm: PathBuf,
        /// The message to process.
        #[arg(long, short)]
        message: PathBuf,
        /// Calls per measurement.
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        /// An extra grant, e.g. `link:wasi:filesystem` (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Load and grant the code sets in this directory (e.g. samples/codesets).
        #[arg(long)]
        codesets: Option<PathBuf>,
        /// A config value for the plugin, `key=value` (repeatable).
        #[arg(long = "config", short, value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Write /tmp/perf-PID.map naming the plugin's functions, for
        /// `perf record`/`perf report` (build the plugin unstripped to see names).
        #[arg(long)]
        perf_map: bool,
    },
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

pub(crate) fn parse_table(s: &str) -> Result<(String, PathBuf), String> {
    parse_key_value(s).map(|(k, v)| (k, PathBuf::from(v)))
}

/// `izhub sim-iis`: what the simulated IIS does.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2601")]
    pub listen: String,
    /// The IIS's name in its answers (MSH-3/MSH-4).
    #[arg(long, default_value = "SIMIIS")]
    pub name: String,
    /// Wait this many milliseconds before each answer.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Answer every message AR, as an IIS that refuses submissions.
    #[arg(long)]
    pub refuse: bool,
    /// Drop the connection instead of answering every Nth message (0: never).
    #[arg(long, default_value_t = 0)]
    pub drop_every: u64,
    /// Send every Nth answer twice, as an IIS that replays a frame (0: never).
    #[arg(long, default_value_t = 0)]
    pub stray_every: u64,
    /// Answer every Nth message with the answer to another message (another
    /// MSA-2 and patient) and never with its own (0: never).
    #[arg(long, default_value_t = 0)]
    pub wrong_id_every: u64,
    /// Send answers this many milliseconds late, answering later messages on
    /// the same connection meanwhile (0: never).
    #[arg(long, default_value_t = 0)]
    pub late_ms: u64,
    /// With --late-ms: only every Nth answer is late.
    #[arg(long, default_value_t = 1)]
    pub late_every: u64,
    /// Also answer CDC WSDL SOAP (submitSingleMessage, connectivityTest) on this address.
    #[arg(long)]
    pub soap: Option<String>,
    /// A SOAP user the simulator accepts, `user:password` (repeatable; none: any).
    #[arg(long = "soap-user")]
    pub soap_users: Vec<String>,
    /// Find every queried patient, making up a history for those it has no VXU for
    /// (for load tests of bulk queries).
    #[arg(long)]
    pub synthetic: bool,
    /// Answer this share of queries (0-100) "not found", chosen by a hash of the patient.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub not_found_percent: u8,
    /// Answer queries for this family name with a candidate list (Z31) (repeatable).
    #[arg(long = "ambiguous")]
    pub ambiguous: Vec<String>,
    /// Family names whose queries are refused AE with a data error (ERR-3
    /// 102), as an IIS refuses a query it will not run; may be repeated.
    #[arg(long = "invalid")]
    pub invalid: Vec<String>,
    /// Answer forecasts as some state registries do: vaccine groups in OBX
    /// 30979-9 and 38890-0, and a status-only row for each complete series.
    #[arg(long)]
    pub registry_codes: bool,
    /// Messages handled at once at most; more are answered AE, as a busy IIS does (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_in_flight: usize,
    /// Messages a second at most; more are answered AE (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_per_second: u32,
}

/// `izhub bench`: what to load and how.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Address to test, host:port.
    #[arg(long)]
    pub to: String,
    /// A second address measured in the same run as the baseline (e.g. the IIS simulator).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Concurrent connections; a comma-separated list runs each in turn.
    #[arg(long, default_value = "8", value_delimiter = ',')]
    pub connections: Vec<usize>,
    /// Messages per run.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// The message to send; its MSH-10 is made unique per message.
    #[arg(long)]
    pub file: PathBuf,
    /// Warm-up messages sent before each measured run.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Spread the messages over this many patients (PID-3.1 gets a suffix), as real
    /// traffic is; 1 sends the file's patient every time.
    #[arg(long, default_value_t = 1)]
    pub patients: usize,
    /// The target engine's admin address (host:port): after each run, wait until its IIS
    /// answered every acknowledged message (commit mode delivers after the AA) and report
    /// that end-to-end rate too.
    #[arg(long)]
    pub delivered_from: Option<String>,
    /// The target engine's admin address, to report the engine's CPU time per message
    /// (from its izhub_process_cpu_seconds; default: --delivered-from). CPU per message
    /// compares across machines better than msgs/s.
    #[arg(long)]
    pub cpu_from: Option<String>,
    /// The baseline's admin address, when the baseline is an engine too (e.g. the same
    /// route with a feature switched off): its CPU per message is reported as well.
    #[arg(long)]
    pub baseline_cpu_from: Option<String>,
    /// Measure each target this many times, alternating between target and baseline,
    /// and compare the medians (msgs/s and p99): a noisy moment then falls on both.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Offer this many messages a second in all, spread over the connections, instead of
    /// sending each as soon as the last answer came: latency at a given load rather than at
    /// saturation. Latencies are timed from when each message was due.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
}

/// What `izhub validate` is asked.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Message files or directories (searched for *.hl7 and *.txt). A file
    /// may hold one message or many (each starts with MSH; FHS/BHS batch
    /// headers are skipped).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Configuration file whose routes and plugins are used.
    #[arg(long, short, default_value = "izhub.toml")]
    pub config: PathBuf,
    /// The route to run (default: the route each message would take by its
    /// type, sender and receiver).
    #[arg(long)]
    pub route: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Keep the values quoted from messages (`Value sent: '…'`) in the
    /// report; left out by default, as reports are mailed and printed.
    #[arg(long)]
    pub show_values: bool,
    /// Blocked messages listed in text and HTML reports (CSV lists all).
    #[arg(long, default_value_t = 200)]
    pub max_listed: usize,
    #[command(flatten)]
    pub cache: CacheArgs,
}
