//! Prometheus metrics: what operators watch. Labels never carry PHI, only
//! names from the configuration and codes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs .. ~5 s
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// Every metric the engine exports.
pub struct Metrics {
    registry: Registry,
    /// Frames received, by listener.
    pub messages_in: Family<Labels, Counter>,
    /// Answers sent to senders, by route and MSA-1 code.
    pub answers_out: Family<Labels, Counter>,
    /// Plugin call latency in seconds, by plugin.
    pub plugin_seconds: HistogramFamily,
    /// Plugin verdicts, by plugin and verdict (continue, reject, route_to).
    pub plugin_verdicts: Family<Labels, Counter>,
    /// Plugin failures, by plugin and kind (trap, time_limit, ...).
    pub plugin_errors: Family<Labels, Counter>,
    /// Messages each plugin handled, by route, plugin and the version its
    /// manifest names (`unknown` without one): which build saw what.
    pub plugin_messages: Family<Labels, Counter>,
    /// Deliveries to destinations, by destination and result.
    pub deliveries: Family<Labels, Counter>,
    /// Time from frame in to answer out, by route.
    pub message_seconds: HistogramFamily,
    /// Bytes skipped outside MLLP frames, by listener.
    pub junk_bytes: Family<Labels, Counter>,
    /// Frames over the size limit, by listener.
    pub oversized_frames: Family<Labels, Counter>,
    /// Connections closed because nothing in the frame could be answered.
    pub unanswerable: Family<Labels, Counter>,
    /// Open connections, by listener.
    pub connections: Family<Labels, Gauge>,
    /// Configuration reloads, by result (applied, refused).
    pub reloads: Family<Labels, Counter>,
    /// IIS answers by destination, sending facility and class (accepted, …).
    pub iis_answers: Family<Labels, Counter>,
    /// IIS answers discarded because they named another message (MSA-2,
    /// QAK-1), by destination.
    pub iis_answers_mismatched: Family<Labels, Counter>,
    /// Data completeness reported by plugins (race, ethnicity…), by sender.
    pub completeness: Family<Labels, Counter>,
    /// 1 while a destination's circuit breaker is open.
    pub breaker_open: Family<Labels, Gauge>,
    /// Circuit breaker openings and closings, by destination and state.
    pub breaker_transitions: Family<Labels, Counter>,
    /// Messages journaled in commit mode, by route.
    pub journaled: Family<Labels, Counter>,
    /// Connections closed at once because their address had too many open.
    pub refused_connections: Family<Labels, Counter>,
    /// CPU time the engine process has used (user + system), read at render.
    pub process_cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Records the console's message log dropped since start because its
    /// writer could not keep up (set at render).
    pub message_log_dropped: Gauge,
    /// Journal operations that failed, by operation (insert: a message
    /// answered AE; claim: the queue could not be read; record: an outcome
    /// was not written).
    pub journal_errors: Family<Labels, Counter>,
    /// When the oldest message waiting for a destination was received
    /// (Unix seconds; 0 when none waits), by destination.
    pub queue_oldest: Family<Labels, Gauge>,
    /// The date of each code set's own data (Unix seconds; 0 when its files
    /// state none), by set (set at render).
    pub codeset_updated: Family<Labels, Gauge>,
    /// Seconds since each cluster node's last heartbeat, by the database's
    /// clock, by node (set at render; absent without a shared journal).
    pub cluster_heartbeat_age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The sending facilities that may be a `sender` label, as the pipeline
    /// in force names them; any other is `other`, so senders cannot grow
    /// the series without bound.
    senders: std::sync::RwLock<std::sync::Arc<std::collections::HashSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("izhub");
        let m = Metrics {
            messages_in: Family::default(),
            answers_out: Family::default(),
            plugin_seconds: Family::new_with_constructor(latency_histogram),
            plugin_verdicts: Family::default(),
            plugin_errors: Family::default(),
            plugin_messages: Family::default(),
            deliveries: Family::default(),
            message_seconds: Family::new_with_constructor(latency_histogram),
            junk_bytes: Family::default(),
            oversized_frames: Family::default(),
            unanswerable: Family::default(),
            connections: Family::default(),
            reloads: Family::default(),
            iis_answers: Family::default(),
            iis_answers_mismatched: Family::default(),
            completeness: Family::default(),
            breaker_open: Family::default(),
            breaker_transitions: Family::default(),
            journaled: Family::default(),
            refused_connections: Family::default(),
            process_cpu_seconds: Gauge::default(),
            message_log_dropped: Gauge::default(),
            journal_errors: Family::default(),
            queue_oldest: Family::default(),
            codeset_updated: Family::default(),
            cluster_heartbeat_age: Family::default(),
            senders: std::sync::RwLock::default(),
            registry: Registry::default(),
        };
        // Series an alert divides or takes the rate of exist from the
        // start, at zero, so that a first failure is an increase.
        for op in ["insert", "claim", "record"] {
            let _ = m.journal_errors.get_or_create(&vec![l("op", op)]);
        }
        for result in ["applied", "refused"] {
            let _ = m.reloads.get_or_create(&vec![l("result", result)]);
        }
        m.register_messages(&mut registry);
        m.register_deliveries(&mut registry);
        Metrics { registry, ..m }
    }

    /// Messages, plugins and frames.
    fn register_messages(&self, registry: &mut Registry) {
        registry.register(
            "messages_in",
            "Frames received by listener",
            self.messages_in.clone(),
        );
        registry.register(
            "answers_out",
            "Answers sent by route and MSA-1 code",
            self.answers_out.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Plugin call latency",
            self.plugin_seconds.clone(),
        );
        registry.register(
            "plugin_verdicts",
            "Plugin verdicts",
            self.plugin_verdicts.clone(),
        );
        registry.register(
            "plugin_errors",
            "Plugin failures by kind",
            self.plugin_errors.clone(),
        );
        registry.register(
            "plugin_messages",
            "Messages each plugin handled, by route, plugin and version",
            self.plugin_messages.clone(),
        );
    }

    /// Deliveries, IIS answers, breakers, the journal, connections and the
    /// process.
    fn register_deliveries(&self, registry: &mut Registry) {
        registry.register(
            "deliveries",
            "Deliveries by destination and result",
            self.deliveries.clone(),
        );
        registry.register(
            "message_seconds",
            "Time from frame in to answer out",
            self.message_seconds.clone(),
        );
        registry.register(
            "mllp_junk_bytes",
            "Bytes skipped outside MLLP frames",
            self.junk_bytes.clone(),
        );
        registry.register(
            "mllp_oversized_frames",
            "Frames over the size limit",
            self.oversized_frames.clone(),
        );
        registry.register(
            "unanswerable_frames",
            "Frames closed without an answer",
            self.unanswerable.clone(),
        );
        registry.register("connections", "Open connections", self.connections.clone());
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            self.reloads.clone(),
        );
        registry.register(
            "iis_answers",
            "IIS answers by destination, sender and class",
            self.iis_answers.clone(),
        );
        registry.register(
            "iis_answers_mismatched",
            "IIS answers discarded because they named another message, by destination",
            self.iis_answers_mismatched.clone(),
        );
        registry.register(
            "completeness",
            "Data completeness by sender, field and status",
            self.completeness.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while the circuit breaker is open",
            self.breaker_open.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker openings and closings",
            self.breaker_transitions.clone(),
        );
        registry.register(
            "journaled",
            "Messages journaled in commit mode",
            self.journaled.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections refused by the per-address limit",
            self.refused_connections.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time used by the engine process (user and system)",
            self.process_cpu_seconds.clone(),
        );
        registry.register(
            "message_log_dropped",
            "Records the message log dropped since start because its writer could not keep up",
            self.message_log_dropped.clone(),
        );
        registry.register(
            "journal_errors",
            "Journal operations that failed, by operation",
            self.journal_errors.clone(),
        );
        registry.register(
            "queue_oldest_received_timestamp_seconds",
            "When the oldest message waiting for a destination was received (0: none waits)",
            self.queue_oldest.clone(),
        );
        registry.register(
            "codeset_updated_timestamp_seconds",
            "The date of each code set's own data (0: its files state none)",
            self.codeset_updated.clone(),
        );
        registry.register(
            "cluster_node_heartbeat_age_seconds",
            "Seconds since each cluster node's last heartbeat, by the database's clock",
            self.cluster_heartbeat_age.clone(),
        );
    }

    /// Names the senders that may be a `sender` label (the pipeline put in
    /// force does).
    pub fn set_senders(&self, senders: std::sync::Arc<std::collections::HashSet<String>>) {
        match self.senders.write() {
            Ok(mut s) => *s = senders,
            Err(poisoned) => *poisoned.into_inner() = senders,
        }
    }

    /// `sender` as a label value: itself when named, else `other`.
    pub fn sender_label(&self, sender: &str) -> String {
        let named = match self.senders.read() {
            Ok(s) => s.contains(sender),
            Err(poisoned) => poisoned.into_inner().contains(sender),
        };
        if named { sender } else { "other" }.to_string()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(cpu) = process_cpu_seconds() {
            self.process_cpu_seconds.set(cpu);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The CPU time this process has used, from `/proc/self/stat` (Linux; its
/// utime and stime are in USER_HZ, 100 a second on every Linux ABI).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// One label.
pub fn l(key: &'static str, value: &str) -> (&'static str, String) {
    (key, value.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_cpu_time_is_read_and_grows() {
        let before = super::process_cpu_seconds().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = super::process_cpu_seconds().unwrap();
        assert!(after >= before + 0.1, "{before} -> {after}");
    }
}
