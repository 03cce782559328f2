//! `izhub validate`: a clinic's messages through a route, nothing delivered,
//! and a report of what would happen to them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{ReportFormat, ValidateArgs as Options};
use crate::report::Report;
use crate::tools::batch;
use izhub_engine::engine::{Engine, EngineOptions, Mode, Wings};

/// Runs the dry run and writes the report. Exit code 0 when no message
/// would be blocked, 1 when some would, 2 when the configuration or an
/// input cannot be read.
pub(super) async fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_config(&opts.config) else {
        return Ok(ExitCode::from(2));
    };
    let plan = match crate::topology::plan(&cfg) {
        Ok(p) => p,
        Err(errs) => {
            eprint!("{errs}");
            return Ok(ExitCode::from(2));
        }
    };
    // The route's plugins, with no journal and no destinations: a dry run
    // opens nothing and sends nothing.
    let engine_opts = EngineOptions {
        runtime: opts.cache.runtime_options(),
        ..EngineOptions::default()
    };
    let (_engine, pipeline) =
        Engine::build(&plan, Mode::DryRun, engine_opts, |_| Ok(Wings::default())).await?;
    if let Some(name) = &opts.route
        && !pipeline.route_names().any(|r| r == name)
    {
        let names: Vec<&str> = pipeline.route_names().collect();
        eprintln!(
            "{}: no route named '{name}' (routes: {})",
            opts.config.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        return Ok(ExitCode::from(2));
    }
    let files = match batch::collect_files(&opts.inputs) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if files.is_empty() {
        eprintln!("error: no *.hl7 or *.txt files in what was named");
        return Ok(ExitCode::from(2));
    }
    let title = format!(
        "{} · route {}",
        opts.config.display(),
        opts.route.as_deref().unwrap_or("chosen per message")
    );
    let mut report = Report::new(title, opts.show_values);
    let mut progress = Progress::new(files.len());
    let mut unreadable = 0;
    for (n, file) in files.iter().enumerate() {
        let pieces = match batch::read_pieces(file) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e:#}");
                unreadable += 1;
                continue;
            }
        };
        for piece in pieces {
            let source = format!("{}:{}", file.display(), piece.line);
            let run = pipeline.dry_run(&piece.text, opts.route.as_deref()).await;
            report.add(&source, &run);
            progress.tick(n, report.messages);
        }
    }
    progress.done(report.messages);
    write_report(&opts, &report)?;
    Ok(if unreadable > 0 {
        ExitCode::from(2)
    } else if report.blocked.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes the report in the format asked for, to its file or to stdout.
fn write_report(opts: &Options, report: &Report) -> anyhow::Result<()> {
    let text = match opts.format {
        ReportFormat::Text => report.to_text(opts.max_listed),
        ReportFormat::Csv => report.to_csv(),
        ReportFormat::Html => report.to_html(opts.max_listed),
    };
    match &opts.out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| anyhow::anyhow!("{}: cannot write the report: {e}", path.display()))?;
            eprintln!(
                "{} messages, {} would be blocked; report written to {}",
                report.messages,
                report.blocked.len(),
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// Progress on standard error for batches that take a while: a line that
/// rewrites itself on a terminal, a line every few seconds otherwise.
struct Progress {
    files: usize,
    started: Instant,
    last: Instant,
    terminal: bool,
    shown: bool,
}

impl Progress {
    fn new(files: usize) -> Self {
        let now = Instant::now();
        Progress {
            files,
            started: now,
            last: now,
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn every(&self) -> Duration {
        if self.terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        }
    }

    fn tick(&mut self, file: usize, messages: usize) {
        // Small batches finish before the first tick: nothing is printed.
        if self.last.elapsed() < self.every() {
            return;
        }
        self.last = Instant::now();
        let rate = messages as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "validating: file {}/{}, {messages} messages, {rate:.0}/s",
            file + 1,
            self.files
        );
        if self.terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    fn done(&self, messages: usize) {
        if self.shown {
            let secs = self.started.elapsed().as_secs_f64();
            if self.terminal {
                eprintln!();
            }
            eprintln!("validated {messages} messages in {secs:.1} s");
        }
    }
}
