//! `izhub bench`: load against an engine and a baseline in one run.

use std::process::ExitCode;
use std::time::Duration;

use crate::tools::{self, BenchOptions};

/// What `izhub bench` sends.
pub(super) struct Load {
    pub(super) connections: Vec<usize>,
    pub(super) messages: usize,
    pub(super) message: String,
    pub(super) warmup: usize,
    pub(super) timeout: Duration,
    pub(super) patients: usize,
    /// The target engine's admin address, to read its CPU time from.
    pub(super) cpu_from: Option<String>,
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

pub(super) async fn bench(
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
        cpu_from,
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
            let cpu = cpu_from.as_deref().filter(|_| *role == "target");
            // An engine that does not report its CPU time is still measured.
            let cpu_before = match cpu {
                Some(admin) => tools::engine_cpu_seconds(admin).await.ok(),
                None => None,
            };
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
            if let (Some(admin), Some(before)) = (cpu, cpu_before) {
                let used = tools::engine_cpu_seconds(admin).await? - before;
                println!(
                    "cpu       engine at {conns} connections: {:.3} ms CPU per message ({used:.2} s for {} messages{})",
                    used * 1e3 / (r.answered.max(1) as f64),
                    r.answered,
                    if drain.is_some() {
                        ", until delivered"
                    } else {
                        ""
                    }
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
