//! `izhub bench`: N connections each send their share of M messages one after
//! another (as an EHR does), as fast as answers come or at a set rate, every
//! answer checked for MSA-2 = MSH-10.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hl7;
use crate::mllp::{DEFAULT_MAX_FRAME, MllpClient};

/// One load run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub to: String,
    pub connections: usize,
    pub messages: usize,
    /// The message to send; its MSH-10 is replaced per message.
    pub message: String,
    pub timeout: Duration,
    /// Prefix for generated control ids, so runs don't collide.
    pub run_id: String,
    /// Spread the messages over this many patients (PID-3.1 gets a suffix);
    /// 0 or 1 sends the file's patient every time.
    pub patients: usize,
    /// Messages a second offered in all, spread evenly over the connections
    /// (`None`: each connection sends as soon as its last answer came). A
    /// latency is timed from when its message was due, so an answer that
    /// holds the next message back counts against that one too.
    pub rate: Option<f64>,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub sent: usize,
    pub answered: usize,
    /// Answers whose MSA-2 did not match the MSH-10 sent.
    pub mismatched: usize,
    /// Answers by MSA-1 code.
    pub codes: std::collections::BTreeMap<String, usize>,
    pub errors: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Every answered message's latency, shortest first.
    pub latencies: Vec<Duration>,
}

impl BenchResult {
    /// Answered messages per second.
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The message after its MSH-10: as is, or around a patient id to vary.
enum Rest {
    Fixed(String),
    Patients(String, String),
}

/// Runs one load test.
pub async fn run_bench(opts: &BenchOptions) -> anyhow::Result<BenchResult> {
    let no_control_id = || anyhow::anyhow!("the bench message has no MSH-10 to rewrite");
    let (prefix, rest) = if opts.patients > 1 {
        // MSH-10 comes before PID-3: split there first, then at MSH-10.
        let (before, id, after) = super::split_at_patient_id(&opts.message)
            .ok_or_else(|| anyhow::anyhow!("the bench message has no PID-3.1 to vary"))?;
        let (prefix, middle) = super::split_at_control_id(before).ok_or_else(no_control_id)?;
        (
            prefix,
            Rest::Patients(format!("{middle}{id}-"), after.to_string()),
        )
    } else {
        let (prefix, suffix) =
            super::split_at_control_id(&opts.message).ok_or_else(no_control_id)?;
        (prefix, Rest::Fixed(suffix.to_string()))
    };
    let (prefix, rest) = (Arc::new(prefix.to_string()), Arc::new(rest));
    let conns = opts.connections.max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let share = opts.messages / conns + usize::from(c < opts.messages % conns);
        let (prefix, rest, opts) = (prefix.clone(), rest.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            one_connection(c, share, &prefix, &rest, &opts, started).await
        }));
    }
    let mut all = Vec::with_capacity(opts.messages);
    let (mut mismatched, mut errors) = (0, 0);
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        let (lat, m, e, c) = t.await?;
        all.extend(lat);
        mismatched += m;
        errors += e;
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| percentile(&all, p);
    Ok(BenchResult {
        sent: opts.messages,
        answered: all.len(),
        mismatched,
        codes,
        errors,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
        latencies: all,
    })
}

/// What one connection measured: latencies, answers naming another
/// message, errors, and answers by MSA-1.
type Measured = (
    Vec<Duration>,
    usize,
    usize,
    std::collections::BTreeMap<String, usize>,
);

/// Connection `c`'s share of a bench run: each message with its own MSH-10
/// (and patient), sent when due, its answer checked and timed.
async fn one_connection(
    c: usize,
    share: usize,
    prefix: &str,
    rest: &Rest,
    opts: &BenchOptions,
    started: Instant,
) -> Measured {
    let conns = opts.connections.max(1);
    let mut lat = Vec::with_capacity(share);
    let (mut mismatched, mut errors) = (0usize, 0usize);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut client = None;
    for i in 0..share {
        let id = format!("{}-{c}-{i}", opts.run_id);
        let msg = match rest {
            Rest::Fixed(suffix) => format!("{prefix}{id}{suffix}"),
            Rest::Patients(before, after) => {
                let patient = (c + i * conns) % opts.patients;
                format!("{prefix}{id}{before}{patient}{after}")
            }
        };
        if client.is_none() {
            match MllpClient::connect(&opts.to, opts.timeout, DEFAULT_MAX_FRAME).await {
                Ok(cl) => client = Some(cl),
                Err(_) => {
                    errors += 1;
                    continue;
                }
            }
        }
        let Some(cl) = client.as_mut() else { continue };
        let due = match opts.rate.filter(|r| r.is_finite() && *r > 0.0) {
            Some(rate) => {
                let at = started + Duration::from_secs_f64((i * conns + c) as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let t = due.min(Instant::now());
        match cl.exchange(msg.as_bytes(), opts.timeout).await {
            Ok(answer) => {
                lat.push(t.elapsed());
                let (code, acked) =
                    hl7::read_msa(&String::from_utf8_lossy(&answer)).unwrap_or_default();
                if acked != id {
                    mismatched += 1;
                }
                *codes.entry(code).or_default() += 1;
            }
            Err(_) => {
                errors += 1;
                client = None;
            }
        }
    }
    (lat, mismatched, errors, codes)
}

/// The `p` quantile (0–1, nearest rank) of latencies sorted shortest
/// first; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    let idx = ((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(last);
    sorted.get(idx).copied().unwrap_or_default()
}

/// The number of deliveries an engine's IIS answered so far: the sum of
/// `izhub_deliveries_total{…result="answered"}` on its admin `/metrics`.
pub async fn answered_deliveries(admin: &str) -> anyhow::Result<u64> {
    let text = super::http_get(admin, "/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("izhub_deliveries_total{") && l.contains("result=\"answered\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The CPU seconds the server at `admin` has used so far: the engine's
/// `izhub_process_cpu_seconds`, or Prometheus's usual
/// `process_cpu_seconds_total` (the ACK-only baseline server reports that).
pub async fn engine_cpu_seconds(admin: &str) -> anyhow::Result<f64> {
    let text = super::http_get(admin, "/metrics").await?;
    text.lines()
        .find(|l| {
            l.starts_with("izhub_process_cpu_seconds ") || l.starts_with("process_cpu_seconds_total ")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{admin}/metrics has neither izhub_process_cpu_seconds nor process_cpu_seconds_total"
            )
        })
}
