//! The command line: `serve`, `check`, `sim-iis`, `send`, `bench`, and the
//! plugin, code-set, journal and console-user tools. [`args`] says what
//! each accepts; each larger command has its own file.

mod args;
mod backup;
mod bench;
mod bulk;
mod check;
mod health;
mod plugin;
mod reprocess;
mod user;
mod validate;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use args::{
    BulkCommand, CacheArgs, Cli, CodesCommand, Command, ConsoleCommand, LogFormat, PluginCommand,
    ReportFormat, UserCommand,
};
use bench::{Load, bench};
use plugin::plugin_command;
use reprocess::reprocess;

use crate::config;
use crate::sim::{self, SimOptions, SimState};
use crate::tools;

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
            eprintln!("error: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each after a colon, leaving out a cause its
/// parent's text already quotes (journal and log errors end with theirs).
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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

/// The configuration at `path`, or `None` after printing every error in it
/// (the caller exits 2).
fn load_config(path: &std::path::Path) -> Option<config::Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errs) => {
            eprint!("{errs}");
            None
        }
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
            let Some(cfg) = load_config(&config) else {
                return Ok(ExitCode::from(2));
            };
            let opts = crate::serve::ServeOptions {
                runtime: cache.runtime_options(),
                watch: (!no_reload).then(|| Duration::from_millis(reload_poll_ms.max(50))),
            };
            crate::serve::run(&cfg, opts, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, cache } => check::run(&config, &cache).await,
        Command::Health(args) => health::run(args).await,
        Command::Validate(args) => validate::run(args).await,
        Command::SimIis(args) => sim_iis(args).await,
        Command::Plugin(cmd) => plugin_command(cmd).await,
        Command::User(cmd) => user::user_command(cmd),
        Command::Reprocess {
            config,
            ids,
            sender,
            status,
            since_minutes,
            dry_run,
        } => reprocess(config, ids, sender, status, since_minutes, dry_run).await,
        Command::Bulk(cmd) => bulk::bulk_command(cmd).await,
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Console(ConsoleCommand::Seed {
            config,
            messages,
            sample,
        }) => seed(&config, messages, &sample),
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
        Command::Bench(args) => bench_command(args).await,
    }
}

/// `izhub sim-iis`: a simulated state IIS on MLLP (and SOAP), until Ctrl-C.
async fn sim_iis(args: args::SimArgs) -> anyhow::Result<ExitCode> {
    let args::SimArgs {
        listen,
        name,
        delay_ms,
        refuse,
        drop_every,
        stray_every,
        wrong_id_every,
        late_ms,
        late_every,
        soap,
        soap_users,
        synthetic,
        not_found_percent,
        ambiguous,
        invalid,
        registry_codes,
        max_in_flight,
        max_per_second,
    } = args;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, name = %name, "simulated IIS listening for MLLP");
    let opts = SimOptions {
        name,
        delay: Duration::from_millis(delay_ms),
        refuse,
        drop_every,
        wire: crate::sim::Wire {
            stray_every,
            wrong_id_every,
            late: Duration::from_millis(late_ms),
            late_every,
        },
        query: crate::sim::query::QueryOptions {
            synthetic,
            not_found_percent,
            ambiguous,
            invalid,
            registry_codes,
            max_in_flight,
            max_per_second,
        },
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
                    .ok_or_else(|| anyhow::anyhow!("--soap-user '{u}' is not user:password"))
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

/// `izhub bench`: loads the message file and measures.
async fn bench_command(args: args::BenchArgs) -> anyhow::Result<ExitCode> {
    let args::BenchArgs {
        to,
        baseline,
        connections,
        messages,
        file,
        warmup,
        timeout,
        patients,
        delivered_from,
        cpu_from,
        baseline_cpu_from,
        rounds,
        rate,
    } = args;
    let raw = tools::read_message_file(&file)?;
    let message =
        String::from_utf8(raw).map_err(|_| anyhow::anyhow!("{}: not UTF-8", file.display()))?;
    let load = Load {
        connections,
        messages,
        message,
        warmup,
        timeout: Duration::from_secs(timeout),
        patients,
        cpu_from: cpu_from.or_else(|| delivered_from.clone()),
        baseline_cpu_from,
        rounds,
        rate,
    };
    bench(to, baseline, load, delivered_from).await
}

/// `izhub console seed`: synthetic messages into the configured message log.
fn seed(
    config: &std::path::Path,
    messages: u64,
    sample: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let Some(cfg) = load_config(config) else {
        return Ok(ExitCode::from(2));
    };
    let Some(console) = &cfg.console else {
        eprintln!(
            "{}: no message log: the console needs [admin], and [console] record must not be false",
            config.display()
        );
        return Ok(ExitCode::from(2));
    };
    let body = tools::read_message_file(sample)?;
    let log = crate::flow::log::MessageLog::open(
        &console.log,
        console.keep,
        console.keep_messages.max(messages),
        None,
    )?;
    let started = std::time::Instant::now();
    let last = std::cell::Cell::new(std::time::Instant::now());
    log.seed(messages, &body, &|done| {
        if last.get().elapsed() >= Duration::from_secs(2) || done == messages {
            last.set(std::time::Instant::now());
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!("seeded {done}/{messages} ({rate:.0}/s)");
        }
    })?;
    println!(
        "{}: {messages} messages written in {:.1} s",
        console.log.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::chain_text;
    use crate::store::{Cause, StoreError};

    #[test]
    fn a_cause_its_parent_quotes_is_printed_once() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(StoreError::Write(Cause::new(io))).context("cannot start");
        assert_eq!(
            chain_text(&e),
            "cannot start: journal write failed: disk full"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&plain), "outer: inner");
    }
}
