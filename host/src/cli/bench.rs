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
    /// The baseline's admin address, when it is an engine too.
    pub(super) baseline_cpu_from: Option<String>,
    /// Runs per target, alternating between them.
    pub(super) rounds: usize,
    /// Messages a second offered (`None`: as fast as answers come).
    pub(super) rate: Option<f64>,
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

/// One target of a bench run: its role, its address and where to read its
/// CPU time.
struct Target {
    role: &'static str,
    addr: String,
    cpu: Option<String>,
}

/// What one round against one target measured.
struct Round {
    rate: f64,
    p99_ms: f64,
    cpu_ms: Option<f64>,
    latencies: Vec<Duration>,
    bad: bool,
}

pub(super) async fn bench(
    to: String,
    baseline: Option<String>,
    load: Load,
    delivered_from: Option<String>,
) -> anyhow::Result<ExitCode> {
    if let Some(r) = load.rate {
        println!("offered   {r:.0} msgs/s in all; latencies timed from when each message was due");
    }
    let rounds = load.rounds.max(1);
    let mut targets = Vec::new();
    if let Some(b) = baseline {
        targets.push(Target {
            role: "baseline",
            addr: b,
            cpu: load.baseline_cpu_from.clone(),
        });
    }
    targets.push(Target {
        role: "target",
        addr: to,
        cpu: load.cpu_from.clone(),
    });
    println!(
        "{:<9} {:<22} {:>5} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}  answers",
        "", "address", "conns", "messages", "msgs/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let mut bad = false;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for &conns in &load.connections {
        // Per target: (msgs/s, p99 ms, CPU ms per message) of each round.
        let mut results: Vec<Vec<(f64, f64, Option<f64>)>> = vec![Vec::new(); targets.len()];
        // Per target: every round's latencies together.
        let mut pooled: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
        // Rounds alternate between the targets, so that a noisy moment of a
        // shared machine falls on both rather than on one.
        for round in 0..rounds {
            for (i, target) in targets.iter().enumerate() {
                let drain = delivered_from
                    .as_deref()
                    .filter(|_| target.role == "target");
                let tag = format!("{stamp}{}{conns}r{round}", target.role);
                let r = one_round(&load, target, conns, &tag, drain).await?;
                bad |= r.bad;
                if let Some(slot) = results.get_mut(i) {
                    slot.push((r.rate, r.p99_ms, r.cpu_ms));
                }
                if rounds > 1
                    && let Some(slot) = pooled.get_mut(i)
                {
                    slot.extend_from_slice(&r.latencies);
                }
            }
        }
        summarize(&targets, conns, rounds, &results, &mut pooled);
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One round against one target: the warm-up, the measured run, and (when
/// asked) the wait until the engine has delivered all of it; prints the
/// round's lines.
async fn one_round(
    load: &Load,
    target: &Target,
    conns: usize,
    tag: &str,
    drain: Option<&str>,
) -> anyhow::Result<Round> {
    let Target { role, addr, cpu } = target;
    let mut opts = BenchOptions {
        to: addr.clone(),
        connections: conns,
        messages: load.warmup,
        message: load.message.clone(),
        timeout: load.timeout,
        run_id: format!("W{tag}"),
        patients: load.patients,
        rate: load.rate,
    };
    let before = match drain {
        Some(admin) => tools::answered_deliveries(admin).await?,
        None => 0,
    };
    let mut warmed = 0;
    if load.warmup > 0 {
        let w = tools::run_bench(&opts).await?;
        warmed = w.codes.get("AA").copied().unwrap_or(0);
    }
    opts.messages = load.messages;
    opts.run_id = format!("B{tag}");
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
    let mut cpu_ms = None;
    if let (Some(admin), Some(before)) = (cpu, cpu_before) {
        let used = tools::engine_cpu_seconds(admin).await? - before;
        let per = used * 1e3 / (r.answered.max(1) as f64);
        cpu_ms = Some(per);
        println!(
            "cpu       {role} at {conns} connections: {per:.3} ms CPU per message ({used:.2} s for {} messages{})",
            r.answered,
            if drain.is_some() {
                ", until delivered"
            } else {
                ""
            }
        );
    }
    Ok(Round {
        rate: r.rate(),
        p99_ms: r.p99.as_secs_f64() * 1e3,
        cpu_ms,
        bad: r.errors > 0 || r.mismatched > 0,
        latencies: r.latencies,
    })
}

/// Prints the medians over the rounds and the target/baseline ratios for
/// one connection count.
fn summarize(
    targets: &[Target],
    conns: usize,
    rounds: usize,
    results: &[Vec<(f64, f64, Option<f64>)>],
    pooled: &mut [Vec<Duration>],
) {
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|runs| {
            (
                median(runs.iter().map(|r| r.0)),
                median(runs.iter().map(|r| r.1)),
            )
        })
        .collect();
    // The p99 of all rounds' messages together: a round's p99 rests on
    // its hundredth-slowest answers, so a single stall of a shared
    // machine moves it; over every round it rests on many more.
    let pooled_p99: Vec<f64> = pooled
        .iter_mut()
        .map(|all| {
            all.sort_unstable();
            tools::percentile(all, 0.99).as_secs_f64() * 1e3
        })
        .collect();
    if rounds > 1 {
        for ((t, (rate, p99)), (all_p99, all)) in targets
            .iter()
            .zip(&medians)
            .zip(pooled_p99.iter().zip(pooled.iter()))
        {
            println!(
                "median    {} {} at {conns} connections over {rounds} rounds: {rate:.0} msgs/s, p99 {p99:.3} ms; p99 of all {} messages {all_p99:.3} ms",
                t.role,
                t.addr,
                all.len()
            );
        }
    }
    if let [base, target] = medians.as_slice() {
        println!(
            "ratio     target/baseline at {conns} connections: {:.2}{}",
            target.0 / base.0.max(1e-9),
            if rounds > 1 {
                format!(
                    " (p99 {:.2}; medians of {rounds} rounds)",
                    target.1 / base.1.max(1e-9)
                )
            } else {
                String::new()
            }
        );
    }
    if let ([base_all, target_all], [base_runs, target_runs]) = (pooled_p99.as_slice(), results)
        && rounds > 1
    {
        // Each round's target p99 against the baseline round run just
        // before it.
        let paired: Vec<f64> = base_runs
            .iter()
            .zip(target_runs)
            .map(|(b, t)| t.1 / b.1.max(1e-9))
            .collect();
        let lo = paired.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = paired.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "ratio     p99 target/baseline at {conns} connections, all {rounds} rounds' messages together: {:.2} (round by round: median {:.2}, {lo:.2} to {hi:.2})",
            target_all / base_all.max(1e-9),
            median(paired.iter().copied()),
        );
    }
}

/// The median of some values (0 when there are none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => {
            let a = v.get(n / 2 - 1).copied().unwrap_or(0.0);
            let b = v.get(n / 2).copied().unwrap_or(0.0);
            (a + b) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median([].into_iter()), 0.0);
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median([f64::NAN, 5.0].into_iter()), 5.0);
    }
}
