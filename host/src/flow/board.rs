//! The dashboard's numbers, kept as messages flow: per route and per
//! destination, counts since start, unresolved errors, what is queued, the
//! breaker, and the rate and p95 latency over the last five minutes. Never a
//! count over the message log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Outcome;
use super::history::{History, Traffic, is_rejection};

/// Seconds the rate and p95 look back over.
const WINDOW_SECS: usize = 300;
/// Upper bounds (ms) of the latency buckets the p95 is read from.
const BOUNDS_MS: [u32; 16] = [
    1, 2, 3, 5, 8, 12, 20, 35, 50, 80, 120, 200, 350, 500, 1000, 5000,
];

/// One second of traffic: how many messages and their latencies.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    at: u64,
    count: u32,
    buckets: [u32; BOUNDS_MS.len() + 1],
}

/// A five-minute window of per-second buckets.
#[derive(Debug, Clone)]
struct Window {
    seconds: Vec<Second>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            seconds: vec![Second::default(); WINDOW_SECS],
        }
    }
}

impl Window {
    fn add(&mut self, now_sec: u64, latency_ms: u32) {
        let len = self.seconds.len().max(1);
        let Some(slot) = self.seconds.get_mut((now_sec as usize) % len) else {
            return;
        };
        if slot.at != now_sec {
            *slot = Second {
                at: now_sec,
                ..Second::default()
            };
        }
        slot.count = slot.count.saturating_add(1);
        let b = BOUNDS_MS
            .iter()
            .position(|&bound| latency_ms <= bound)
            .unwrap_or(BOUNDS_MS.len());
        if let Some(n) = slot.buckets.get_mut(b) {
            *n = n.saturating_add(1);
        }
    }

    /// Messages per minute and p95 latency (ms) over the window.
    fn read(&self, now_sec: u64) -> (f64, Option<u32>) {
        let recent = self
            .seconds
            .iter()
            .filter(|s| s.count > 0 && now_sec.saturating_sub(s.at) < WINDOW_SECS as u64);
        let mut total: u64 = 0;
        let mut buckets = [0u64; BOUNDS_MS.len() + 1];
        for s in recent {
            total += u64::from(s.count);
            for (sum, n) in buckets.iter_mut().zip(s.buckets) {
                *sum += u64::from(n);
            }
        }
        let rate = total as f64 * 60.0 / WINDOW_SECS as f64;
        if total == 0 {
            return (rate, None);
        }
        let want = (total * 95).div_ceil(100);
        let mut seen = 0;
        for (i, n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (rate, Some(BOUNDS_MS.get(i).copied().unwrap_or(10_000)));
            }
        }
        (rate, None)
    }
}

/// Counts for one route or destination.
#[derive(Debug, Clone, Default)]
struct Tally {
    received: u64,
    accepted: u64,
    accepted_with_warnings: u64,
    rejected_by_izhub: u64,
    rejected_by_iis: u64,
    errored: u64,
    unresolved_errors: u64,
    window: Window,
    history: History,
}

impl Tally {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::AcceptedWithWarnings => self.accepted_with_warnings += 1,
            Outcome::RejectedByIzhub => {
                self.rejected_by_izhub += 1;
                self.unresolved_errors += 1;
            }
            Outcome::RejectedByIis => {
                self.rejected_by_iis += 1;
                self.unresolved_errors += 1;
            }
            Outcome::Errored => {
                self.errored += 1;
                self.unresolved_errors += 1;
            }
            Outcome::Queued => {}
        }
    }
}

/// What the dashboard shows for a destination beyond its counts.
#[derive(Debug, Clone, Default)]
struct Queue {
    queued: i64,
    oldest_queued_ms: Option<i64>,
    breaker: &'static str,
    paused: bool,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<String, Tally>,
    destinations: BTreeMap<String, (Tally, Queue)>,
}

/// Most routes or destinations the board keeps apart (names come from the
/// configuration, so this only bounds a misconfiguration).
pub(super) const MAX_NAMES: usize = 10_000;

/// The live numbers.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<Inner>,
    /// Bumped at every change, so watchers can tell whether to send.
    version: AtomicU64,
}

/// One row of the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub name: String,
    pub received: u64,
    pub accepted: u64,
    pub accepted_with_warnings: u64,
    pub rejected_by_izhub: u64,
    pub rejected_by_iis: u64,
    pub errored: u64,
    pub unresolved_errors: u64,
    pub rate_per_min: f64,
    pub p95_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dashboard {
    pub generated_at: String,
    pub routes: Vec<Row>,
    pub destinations: Vec<Row>,
    /// In a cluster: how many nodes' counts are added up here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// In a cluster: nodes that could not be asked this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<Vec<String>>,
}

/// Most rows taken from another node's dashboard.
const MAX_MERGED_ROWS: usize = MAX_NAMES;

/// How bad a breaker state is, to show the worst of several nodes'.
fn breaker_rank(state: Option<&str>) -> u8 {
    match state {
        Some("open") => 3,
        Some("half-open") => 2,
        Some(_) => 1,
        None => 0,
    }
}

impl Dashboard {
    /// Adds another node's dashboard to this one: counts and rates add up,
    /// the p95 is the highest of the nodes' (an upper bound of the cluster's),
    /// a breaker shows its worst state and a destination is paused when any
    /// node holds it paused. What is queued keeps the larger figure and the
    /// oldest age (the console then reads it from the shared queue).
    pub fn add(&mut self, other: Dashboard) {
        fn merge(into: &mut Vec<Row>, rows: Vec<Row>) {
            let mut at: std::collections::HashMap<String, usize> = into
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name.clone(), i))
                .collect();
            for r in rows.into_iter().take(MAX_MERGED_ROWS) {
                let Some(mine) = at.get(&r.name).and_then(|&i| into.get_mut(i)) else {
                    if into.len() < MAX_MERGED_ROWS {
                        at.insert(r.name.clone(), into.len());
                        into.push(r);
                    }
                    continue;
                };
                mine.received = mine.received.saturating_add(r.received);
                mine.accepted = mine.accepted.saturating_add(r.accepted);
                mine.accepted_with_warnings = mine
                    .accepted_with_warnings
                    .saturating_add(r.accepted_with_warnings);
                mine.rejected_by_izhub = mine.rejected_by_izhub.saturating_add(r.rejected_by_izhub);
                mine.rejected_by_iis = mine.rejected_by_iis.saturating_add(r.rejected_by_iis);
                mine.errored = mine.errored.saturating_add(r.errored);
                mine.unresolved_errors = mine.unresolved_errors.saturating_add(r.unresolved_errors);
                mine.rate_per_min = ((mine.rate_per_min + r.rate_per_min) * 10.0).round() / 10.0;
                mine.p95_ms = mine.p95_ms.max(r.p95_ms);
                mine.queued = mine.queued.max(r.queued);
                mine.oldest_queued_secs = mine.oldest_queued_secs.max(r.oldest_queued_secs);
                if breaker_rank(r.breaker.as_deref()) > breaker_rank(mine.breaker.as_deref()) {
                    mine.breaker = r.breaker;
                }
                if r.paused == Some(true) {
                    mine.paused = Some(true);
                }
            }
            into.sort_by(|a, b| a.name.cmp(&b.name));
        }
        merge(&mut self.routes, other.routes);
        merge(&mut self.destinations, other.destinations);
    }
}

fn row(name: &str, t: &Tally, now_sec: u64) -> Row {
    let (rate_per_min, p95_ms) = t.window.read(now_sec);
    Row {
        name: name.to_string(),
        received: t.received,
        accepted: t.accepted,
        accepted_with_warnings: t.accepted_with_warnings,
        rejected_by_izhub: t.rejected_by_izhub,
        rejected_by_iis: t.rejected_by_iis,
        errored: t.errored,
        unresolved_errors: t.unresolved_errors,
        rate_per_min: (rate_per_min * 10.0).round() / 10.0,
        p95_ms,
        queued: None,
        oldest_queued_secs: None,
        breaker: None,
        paused: None,
    }
}

impl Board {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut inner);
        self.version.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Changes so far; a watcher sends when it moved.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Names the routes and destinations of the configuration, so they show
    /// before their first message.
    pub fn know(&self, routes: &[String], destinations: &[String]) {
        self.with(|i| {
            for r in routes {
                if i.routes.len() < MAX_NAMES {
                    i.routes.entry(r.clone()).or_default();
                }
            }
            for d in destinations {
                if i.destinations.len() < MAX_NAMES {
                    i.destinations.entry(d.clone()).or_insert_with(|| {
                        (
                            Tally::default(),
                            Queue {
                                breaker: "closed",
                                ..Queue::default()
                            },
                        )
                    });
                }
            }
        });
    }

    /// A message answered: counted for its route and, when it went to one,
    /// its destination.
    pub fn answered(
        &self,
        route: Option<&str>,
        destination: Option<&str>,
        outcome: Outcome,
        latency_ms: u32,
        now_sec: u64,
        queued: usize,
    ) {
        self.with(|i| {
            let known = i.routes.len() < MAX_NAMES;
            let route = route.unwrap_or("none");
            let rejected = u32::from(is_rejection(outcome));
            if let Some(t) = i.routes.get_mut(route) {
                t.received += 1;
                t.count(outcome);
                t.window.add(now_sec, latency_ms);
                t.history.add(now_sec, 1, rejected);
            } else if known {
                let mut t = Tally {
                    received: 1,
                    ..Tally::default()
                };
                t.count(outcome);
                t.window.add(now_sec, latency_ms);
                t.history.add(now_sec, 1, rejected);
                i.routes.insert(route.to_string(), t);
            }
            // A message for several destinations counts for each.
            for d in destination.into_iter().flat_map(|d| d.split(',')) {
                if let Some((t, q)) = i.destinations.get_mut(d) {
                    t.received += 1;
                    t.count(outcome);
                    t.window.add(now_sec, latency_ms);
                    t.history.add(now_sec, 1, rejected);
                    if queued > 0 {
                        q.queued += 1;
                    }
                }
            }
        });
    }

    /// A queued delivery finished (delivered, rejected or dead).
    pub fn delivered(&self, destination: &str, outcome: Outcome, route: Option<&str>) {
        let now_sec = (crate::store::now_ms() / 1000).max(0) as u64;
        let rejected = u32::from(is_rejection(outcome));
        self.with(|i| {
            if let Some((t, q)) = i.destinations.get_mut(destination) {
                q.queued = (q.queued - 1).max(0);
                t.count(outcome);
                t.history.add(now_sec, 0, rejected);
            }
            if let Some(t) = route.and_then(|r| i.routes.get_mut(r)) {
                t.count(outcome);
                t.history.add(now_sec, 0, rejected);
            }
        });
    }

    /// Fills the charts from the message log at start: `received` messages
    /// and `rejected` rejections of a route and its destinations at `sec`
    /// (oldest first, so newer buckets win).
    pub fn seed_history(
        &self,
        route: &str,
        destinations: &str,
        sec: u64,
        received: u32,
        rejected: u32,
    ) {
        self.with(|i| {
            if let Some(t) = i.routes.get_mut(route) {
                t.history.add(sec, received, rejected);
            }
            for d in destinations.split(',') {
                if let Some((t, _)) = i.destinations.get_mut(d) {
                    t.history.add(sec, received, rejected);
                }
            }
        });
    }

    /// The charts' counts now; routes and destinations limited to what
    /// `visible` lets through.
    pub fn traffic(
        &self,
        now_ms: i64,
        route_visible: &dyn Fn(&str) -> bool,
        destination_visible: &dyn Fn(&str) -> bool,
    ) -> Traffic {
        let now_sec = (now_ms / 1000).max(0) as u64;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Traffic::empty(now_sec);
        for (name, t) in inner.routes.iter().filter(|(n, _)| route_visible(n)) {
            out.push(true, name, &t.history, now_sec);
        }
        for (name, (t, _)) in inner
            .destinations
            .iter()
            .filter(|(n, _)| destination_visible(n))
        {
            out.push(false, name, &t.history, now_sec);
        }
        out
    }

    /// What is waiting for a destination, read from its queue.
    pub fn queue_state(
        &self,
        destination: &str,
        queued: Option<i64>,
        oldest_ms: Option<i64>,
        breaker: &'static str,
        paused: bool,
    ) {
        self.with(|i| {
            if i.destinations.len() < MAX_NAMES && !i.destinations.contains_key(destination) {
                i.destinations.insert(
                    destination.to_string(),
                    (Tally::default(), Queue::default()),
                );
            }
            if let Some((_, q)) = i.destinations.get_mut(destination) {
                if let Some(n) = queued {
                    q.queued = n;
                }
                q.oldest_queued_ms = oldest_ms;
                q.breaker = breaker;
                q.paused = paused;
            }
        });
    }

    /// Clears unresolved errors of a route or destination (all when both
    /// are `None`) by `n` (all when `None`).
    pub fn resolve(&self, route: Option<&str>, destination: Option<&str>, n: Option<u64>) {
        self.with(|i| {
            let clear = |t: &mut Tally| {
                t.unresolved_errors = match n {
                    Some(n) => t.unresolved_errors.saturating_sub(n),
                    None => 0,
                }
            };
            match (route, destination) {
                (Some(r), _) => {
                    if let Some(t) = i.routes.get_mut(r) {
                        clear(t);
                    }
                }
                (None, Some(d)) => {
                    if let Some((t, _)) = i.destinations.get_mut(d) {
                        clear(t);
                    }
                }
                (None, None) => {
                    i.routes.values_mut().for_each(clear);
                    i.destinations.values_mut().for_each(|(t, _)| clear(t));
                }
            }
        });
    }

    /// The dashboard now; rows limited to what `visible` lets through.
    pub fn dashboard(
        &self,
        now_ms: i64,
        route_visible: &dyn Fn(&str) -> bool,
        destination_visible: &dyn Fn(&str) -> bool,
    ) -> Dashboard {
        let now_sec = (now_ms / 1000).max(0) as u64;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let routes = inner
            .routes
            .iter()
            .filter(|(n, _)| route_visible(n))
            .map(|(n, t)| row(n, t, now_sec))
            .collect();
        let destinations = inner
            .destinations
            .iter()
            .filter(|(n, _)| destination_visible(n))
            .map(|(n, (t, q))| Row {
                queued: Some(q.queued),
                oldest_queued_secs: q.oldest_queued_ms.map(|o| ((now_ms - o) / 1000).max(0)),
                breaker: Some(q.breaker.to_string()),
                paused: Some(q.paused),
                ..row(n, t, now_sec)
            })
            .collect();
        Dashboard {
            generated_at: crate::hl7::rfc3339_now(),
            routes,
            destinations,
            nodes: None,
            unreachable: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn counts_rates_and_p95() {
        let b = Board::default();
        b.know(&["vxu".into()], &["mi".into()]);
        for n in 0..100u32 {
            let outcome = if n < 90 {
                Outcome::Accepted
            } else {
                Outcome::RejectedByIzhub
            };
            let dest = (n < 90).then_some("mi");
            b.answered(
                Some("vxu"),
                dest,
                outcome,
                if n < 94 { 3 } else { 400 },
                1000,
                0,
            );
        }
        let d = b.dashboard(1_000_000, &all, &all);
        let r = &d.routes[0];
        assert_eq!((r.received, r.accepted, r.rejected_by_izhub), (100, 90, 10));
        assert_eq!(r.unresolved_errors, 10);
        assert_eq!(r.rate_per_min, 20.0);
        assert_eq!(r.p95_ms, Some(500), "the 95th is in the (350, 500] bucket");
        assert_eq!(d.destinations[0].received, 90);
        b.resolve(Some("vxu"), None, None);
        assert_eq!(
            b.dashboard(1_000_000, &all, &all).routes[0].unresolved_errors,
            0
        );
        assert_eq!(
            b.dashboard(1_000_000, &all, &all).routes[0].rejected_by_izhub,
            10
        );
        // Five minutes on, the window is empty; totals stay.
        let later = b.dashboard(1_000_000 + 301_000, &all, &all);
        assert_eq!(
            (later.routes[0].rate_per_min, later.routes[0].p95_ms),
            (0.0, None)
        );
        assert_eq!(later.routes[0].received, 100);
    }

    #[test]
    fn queue_and_visibility() {
        let b = Board::default();
        b.know(&["vxu".into(), "qbp".into()], &["mi".into(), "pa".into()]);
        b.answered(Some("vxu"), Some("mi"), Outcome::Queued, 2, 5, 1);
        b.queue_state("mi", None, Some(1_000), "open", true);
        let d = b.dashboard(61_000, &|r| r == "vxu", &|d| d == "mi");
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.destinations.len(), 1);
        let mi = &d.destinations[0];
        assert_eq!(
            (
                mi.queued,
                mi.oldest_queued_secs,
                mi.breaker.as_deref(),
                mi.paused
            ),
            (Some(1), Some(60), Some("open"), Some(true))
        );
        b.delivered("mi", Outcome::RejectedByIis, Some("vxu"));
        let d = b.dashboard(61_000, &all, &all);
        assert_eq!(
            d.destinations
                .iter()
                .find(|r| r.name == "mi")
                .unwrap()
                .queued,
            Some(0)
        );
        assert_eq!(
            d.routes
                .iter()
                .find(|r| r.name == "vxu")
                .unwrap()
                .rejected_by_iis,
            1
        );
    }

    #[test]
    fn nodes_dashboards_add_up() {
        let a = Board::default();
        let b = Board::default();
        a.know(&["vxu".into()], &["mi".into()]);
        b.know(&["vxu".into(), "qbp".into()], &["mi".into()]);
        for _ in 0..3 {
            a.answered(Some("vxu"), Some("mi"), Outcome::Accepted, 2, 5, 0);
        }
        b.answered(Some("vxu"), Some("mi"), Outcome::RejectedByIis, 400, 5, 0);
        b.answered(Some("qbp"), None, Outcome::Accepted, 2, 5, 0);
        a.queue_state("mi", Some(7), Some(50_000), "closed", false);
        b.queue_state("mi", Some(7), Some(40_000), "open", false);
        let mut d = a.dashboard(61_000, &all, &all);
        d.add(b.dashboard(61_000, &all, &all));
        let vxu = d.routes.iter().find(|r| r.name == "vxu").unwrap();
        assert_eq!((vxu.received, vxu.accepted, vxu.rejected_by_iis), (4, 3, 1));
        assert_eq!(vxu.unresolved_errors, 1);
        assert_eq!(vxu.rate_per_min, 0.8);
        assert_eq!(vxu.p95_ms, Some(500), "the highest node's p95");
        assert!(d.routes.iter().any(|r| r.name == "qbp" && r.received == 1));
        let mi = &d.destinations[0];
        assert_eq!(mi.queued, Some(7), "the shared queue, not counted twice");
        assert_eq!(mi.oldest_queued_secs, Some(21));
        assert_eq!(mi.breaker.as_deref(), Some("open"), "the worst node's");
        // A dashboard survives its trip between nodes.
        let text = serde_json::to_string(&d).unwrap();
        let back: Dashboard = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
    }
}
