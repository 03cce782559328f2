//! The command line: `serve`, `check`, `sim-iis`, `send`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::plugin::{Runtime, RuntimeOptions};
use crate::sim::{self, SimOptions, SimState};
use crate::tools::{self, BenchOptions};

/// izhub: an immunization interface engine (HL7 v2 over MLLP, sandboxed WebAssembly plugins).
#[derive(Debug, Parser)]
#[command(name = "izhub", version, about, long_about = None)]
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
            unlimited: false,
        }
    }
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
    /// Run a simulated state IIS that answers VXU and QBP^Q11 over MLLP.
    SimIis {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2601")]
        listen: String,
        /// The IIS's name in its answers (MSH-3/MSH-4).
        #[arg(long, default_value = "SIMIIS")]
        name: String,
        /// Wait this many milliseconds before each answer.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Answer every message AR, as an IIS that refuses submissions.
        #[arg(long)]
        refuse: bool,
        /// Drop the connection instead of answering every Nth message (0: never).
        #[arg(long, default_value_t = 0)]
        drop_every: u64,
        /// Also answer CDC WSDL SOAP (submitSingleMessage, connectivityTest) on this address.
        #[arg(long)]
        soap: Option<String>,
        /// A SOAP user the simulator accepts, `user:password` (repeatable; none: any).
        #[arg(long = "soap-user")]
        soap_users: Vec<String>,
    },
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
    /// Code sets (CVX, MVX, NDC, HL7 tables): status and update.
    #[command(subcommand)]
    Codes(CodesCommand),
    /// Plugin author tools: new, build, test, bench.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Load-test an MLLP endpoint: msgs/s and latency percentiles, with every ACK checked.
    Bench {
        /// Address to test, host:port.
        #[arg(long)]
        to: String,
        /// A second address measured in the same run as the baseline (e.g. the IIS simulator).
        #[arg(long)]
        baseline: Option<String>,
        /// Concurrent connections; a comma-separated list runs each in turn.
        #[arg(long, default_value = "8", value_delimiter = ',')]
        connections: Vec<usize>,
        /// Messages per run.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// The message to send; its MSH-10 is made unique per message.
        #[arg(long)]
        file: PathBuf,
        /// Warm-up messages sent before each measured run.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Spread the messages over this many patients (PID-3.1 gets a suffix), as real
        /// traffic is; 1 sends the file's patient every time.
        #[arg(long, default_value_t = 1)]
        patients: usize,
        /// The target engine's admin address (host:port): after each run, wait until its IIS
        /// answered every acknowledged message (commit mode delivers after the AA) and report
        /// that end-to-end rate too.
        #[arg(long)]
        delivered_from: Option<String>,
    },
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
    /// Create a new plugin crate (with a passing test) in a new directory.
    New {
        /// Crate name, e.g. `check-lot-numbers`.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of the izhub-plugin SDK crate.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32-wasip2 and print the component's path.
    Build {
        /// The plugin crate's directory.
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
    /// Measure a plugin's per-call cost (fresh instance per call), limits on vs off.
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
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

fn parse_table(s: &str) -> Result<(String, PathBuf), String> {
    parse_key_value(s).map(|(k, v)| (k, PathBuf::from(v)))
}

async fn plugin_command(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    use crate::tools::plugin_dev::{self, TestSetup};
    match cmd {
        PluginCommand::New { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(plugin_dev::default_sdk_path);
            let created = plugin_dev::new_plugin(&name, &dir, &sdk)?;
            println!("created {}", created.display());
            println!(
                "next: cd {} && cargo test && izhub plugin build",
                created.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let wasm = plugin_dev::build_plugin(&dir)?;
            println!("{}", wasm.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test {
            wasm,
            messages,
            config,
            tables,
            grants,
            codesets,
            expect,
            bless,
        } => {
            let setup = TestSetup {
                config,
                tables,
                grants,
                codesets,
            };
            let mismatches =
                plugin_dev::test_plugin(&wasm, &messages, &setup, expect.as_deref(), bless).await?;
            Ok(if mismatches == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCommand::Bench {
            wasm,
            message,
            iterations,
            config,
            grants,
            codesets,
        } => {
            let setup = TestSetup {
                config,
                tables: Vec::new(),
                grants,
                codesets,
            };
            plugin_dev::bench_plugin(&wasm, &message, &setup, iterations.max(1)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn reprocess(
    config: PathBuf,
    ids: Vec<i64>,
    sender: Option<String>,
    status: Option<String>,
    since_minutes: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&config) {
        Ok(c) => c,
        Err(errs) => {
            eprint!("{errs}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(path) = &cfg.journal else {
        anyhow::bail!("no route uses ack_mode = \"commit\", so nothing is journaled");
    };
    if let Some(s) = &status
        && !["queued", "delivered", "dead"].contains(&s.as_str())
    {
        anyhow::bail!("--status must be queued, delivered or dead");
    }
    let journal = crate::store::open(path)?;
    let filter = crate::store::Filter {
        ids,
        sender,
        status,
        since_ms: since_minutes.map(|m| crate::store::now_ms() - m * 60_000),
    };
    let rows = journal.select(&filter).await?;
    if dry_run || rows.is_empty() {
        for crate::store::Journaled {
            id,
            listener,
            control_id,
            ..
        } in &rows
        {
            println!("{id}\t{listener}\t{control_id}");
        }
        println!(
            "{} message(s) {}",
            rows.len(),
            if dry_run {
                "would be reprocessed"
            } else {
                "match"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = Arc::new(Runtime::new(RuntimeOptions::default())?);
    let services = crate::pipeline::Services {
        runtime,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        journal: Some(journal),
        shutdown: CancellationToken::new(),
        tasks: tokio_util::task::TaskTracker::new(),
        // The running engine delivers what this journals.
        deliver: false,
    };
    let pipeline = crate::pipeline::Pipeline::build(&cfg, &services, None)?;
    let mut failed = 0;
    for crate::store::Journaled {
        id,
        listener,
        raw,
        control_id,
    } in rows
    {
        let Some(spec) = cfg.listeners.iter().find(|l| l.name == listener) else {
            println!("{id}\t{control_id}\tskipped: listener '{listener}' is no longer configured");
            failed += 1;
            continue;
        };
        let code = match pipeline.handle(spec, &raw).await {
            crate::pipeline::Answer::Reply(bytes) => {
                crate::hl7::read_msa(&String::from_utf8_lossy(&bytes))
                    .map(|(c, _)| c)
                    .unwrap_or_default()
            }
            crate::pipeline::Answer::Close(why) => format!("closed: {why}"),
        };
        if code != "AA" {
            failed += 1;
        }
        println!("{id}\t{control_id}\t{code}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            no_reload,
            reload_poll_ms,
            cache,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(errs) => {
                    eprint!("{errs}");
                    return Ok(ExitCode::from(2));
                }
            };
            let opts = crate::serve::ServeOptions {
                runtime: cache.runtime_options(),
                watch: (!no_reload).then(|| Duration::from_millis(reload_poll_ms.max(50))),
            };
            crate::serve::run(&cfg, opts, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, cache } => match config::load(&config) {
            Ok(cfg) => {
                for warning in cfg.warnings() {
                    tracing::warn!("{warning}");
                }
                // Compile every plugin too: a component that does not fit the
                // contract is a configuration error the operator must see now.
                let started = std::time::Instant::now();
                let metrics = Arc::new(crate::metrics::Metrics::new());
                let runtime = Arc::new(Runtime::new(cache.runtime_options())?);
                // A journal in memory: checking must not create files.
                let journal = match &cfg.journal {
                    Some(_) => Some(crate::store::open(std::path::Path::new(":memory:"))?),
                    None => None,
                };
                let services = crate::pipeline::Services {
                    runtime: runtime.clone(),
                    metrics,
                    journal,
                    shutdown: CancellationToken::new(),
                    tasks: tokio_util::task::TaskTracker::new(),
                    deliver: false,
                };
                match crate::pipeline::Pipeline::build(&cfg, &services, None) {
                    Ok(_) => {
                        let (compiled, from_disk, _) = runtime.cache().counts();
                        println!(
                            "{}: OK ({} listeners, {} destinations, {} routes, {} plugins; {compiled} compiled, {from_disk} from cache, {} ms)",
                            config.display(),
                            cfg.listeners.len(),
                            cfg.destinations.len(),
                            cfg.routes.len(),
                            cfg.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
                            started.elapsed().as_millis()
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("{}: {e:#}", config.display());
                        Ok(ExitCode::from(2))
                    }
                }
            }
            Err(errs) => {
                eprint!("{errs}");
                Ok(ExitCode::from(2))
            }
        },
        Command::SimIis {
            listen,
            name,
            delay_ms,
            refuse,
            drop_every,
            soap,
            soap_users,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, name = %name, "simulated IIS listening for MLLP");
            let opts = SimOptions {
                name,
                delay: Duration::from_millis(delay_ms),
                refuse,
                drop_every,
                ..SimOptions::default()
            };
            let token = CancellationToken::new();
            let state = Arc::new(SimState::default());
            if let Some(addr) = soap {
                let users = soap_users
                    .iter()
                    .map(|u| {
                        u.split_once(':')
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .ok_or_else(|| {
                                anyhow::anyhow!("--soap-user '{u}' is not user:password")
                            })
                    })
                    .collect::<anyhow::Result<_>>()?;
                let soap_listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                tracing::info!(addr = %soap_listener.local_addr()?, "simulated IIS answering CDC WSDL SOAP");
                tokio::spawn(sim::run_soap(
                    soap_listener,
                    opts.clone(),
                    users,
                    state.clone(),
                    token.clone(),
                ));
            }
            let server = tokio::spawn(sim::run(listener, opts, state, token.clone()));
            shutdown_signal().await;
            token.cancel();
            let _ = server.await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(cmd) => plugin_command(cmd).await,
        Command::Reprocess {
            config,
            ids,
            sender,
            status,
            since_minutes,
            dry_run,
        } => reprocess(config, ids, sender, status, since_minutes, dry_run).await,
        Command::Codes(CodesCommand::Status { dir }) => {
            tools::codes::status(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Codes(CodesCommand::Update { from, dir }) => {
            let n = tools::codes::update(&from, &dir)?;
            println!("installed {n} files into {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            files,
            to,
            timeout,
            quiet,
        } => {
            let failed =
                tools::send_files(&files, &to, Duration::from_secs(timeout), quiet).await?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            to,
            baseline,
            connections,
            messages,
            file,
            warmup,
            timeout,
            patients,
            delivered_from,
        } => {
            let raw = tools::read_message_file(&file)?;
            let message = String::from_utf8(raw)
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8", file.display()))?;
            let load = Load {
                connections,
                messages,
                message,
                warmup,
                timeout: Duration::from_secs(timeout),
                patients,
            };
            bench(to, baseline, load, delivered_from).await
        }
    }
}

/// What `izhub bench` sends.
struct Load {
    connections: Vec<usize>,
    messages: usize,
    message: String,
    warmup: usize,
    timeout: Duration,
    patients: usize,
}

/// Waits until the engine at `admin` has had `expected` more deliveries
/// answered than `before`; gives up when nothing moves for 30 s.
async fn wait_delivered(admin: &str, before: u64, expected: u64) -> anyhow::Result<u64> {
    let mut last = (before, std::time::Instant::now());
    loop {
        let now = tools::answered_deliveries(admin).await?;
        if now >= before.saturating_add(expected) {
            return Ok(now - before);
        }
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            anyhow::bail!(
                "{admin}: deliveries stalled at {} of {expected}",
                now.saturating_sub(before)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench(
    to: String,
    baseline: Option<String>,
    load: Load,
    delivered_from: Option<String>,
) -> anyhow::Result<ExitCode> {
    let Load {
        connections,
        messages,
        message,
        warmup,
        timeout,
        patients,
    } = load;
    let mut targets = Vec::new();
    if let Some(b) = baseline {
        targets.push(("baseline", b));
    }
    targets.push(("target", to));
    println!(
        "{:<9} {:<22} {:>5} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}  answers",
        "", "address", "conns", "messages", "msgs/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let mut bad = false;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for &conns in &connections {
        let mut rates = Vec::new();
        for (role, addr) in &targets {
            let mut opts = BenchOptions {
                to: addr.clone(),
                connections: conns,
                messages: warmup,
                message: message.clone(),
                timeout,
                run_id: format!("W{stamp}{role}{conns}"),
                patients,
            };
            let drain = delivered_from.as_deref().filter(|_| *role == "target");
            let before = match drain {
                Some(admin) => tools::answered_deliveries(admin).await?,
                None => 0,
            };
            let mut warmed = 0;
            if warmup > 0 {
                let w = tools::run_bench(&opts).await?;
                warmed = w.codes.get("AA").copied().unwrap_or(0);
            }
            opts.messages = messages;
            opts.run_id = format!("B{stamp}{role}{conns}");
            let started = std::time::Instant::now();
            let r = tools::run_bench(&opts).await?;
            let codes: Vec<String> = r.codes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:<9} {:<22} {:>5} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7}  {}{}",
                role,
                addr,
                conns,
                r.answered,
                r.rate(),
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.max.as_secs_f64() * 1e3,
                r.errors,
                codes.join(" "),
                if r.mismatched > 0 {
                    format!(" MSA-2 MISMATCHES={}", r.mismatched)
                } else {
                    String::new()
                }
            );
            bad |= r.errors > 0 || r.mismatched > 0;
            rates.push(r.rate());
            if let Some(admin) = drain {
                let acked = r.codes.get("AA").copied().unwrap_or(0);
                let n = wait_delivered(admin, before, (warmed + acked) as u64).await?;
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "delivered {conns} connections: the IIS answered {} of the run's messages {secs:.2} s after it began: {:.0} msgs/s end to end",
                    n.saturating_sub(warmed as u64),
                    acked as f64 / secs.max(1e-9)
                );
            }
        }
        if let [base, target] = rates.as_slice() {
            println!(
                "ratio     target/baseline at {conns} connections: {:.2}",
                target / base.max(1e-9)
            );
        }
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
