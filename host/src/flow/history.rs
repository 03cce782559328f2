//! Traffic over time for the dashboard's charts: per route and destination,
//! messages received and rejected (by izhub or by the IIS) in one-minute
//! buckets over the last hour and one-hour buckets over the last seven days.
//! Kept in memory as messages flow, like the rest of the board; at start it
//! is filled from the message log, so a restart keeps the days.

use serde::{Deserialize, Serialize};

use super::Outcome;

/// One-minute buckets: the last hour.
const MINUTES: usize = 60;
/// One-hour buckets: the last seven days.
const HOURS: usize = 7 * 24;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Bucket number (time / span) this slot holds.
    at: u64,
    received: u32,
    rejected: u32,
}

/// Buckets of `span` seconds in a ring.
#[derive(Debug, Clone)]
struct Ring {
    span: u64,
    slots: Vec<Slot>,
}

impl Ring {
    fn new(span: u64, len: usize) -> Ring {
        Ring {
            span,
            slots: vec![Slot::default(); len],
        }
    }

    fn slot(&mut self, sec: u64) -> Option<&mut Slot> {
        let at = sec / self.span;
        let len = self.slots.len().max(1) as u64;
        let slot = self
            .slots
            .get_mut((at % len) as usize)
            .filter(|s| s.at <= at)?;
        if slot.at != at {
            *slot = Slot {
                at,
                ..Slot::default()
            };
        }
        Some(slot)
    }

    /// Counts, oldest first, of the buckets that end with the one `now_sec`
    /// is in.
    fn read(&self, now_sec: u64) -> (Vec<u32>, Vec<u32>) {
        let last = now_sec / self.span;
        let len = self.slots.len() as u64;
        let first = (last + 1).saturating_sub(len);
        let (mut received, mut rejected) = (Vec::new(), Vec::new());
        for at in first..=last {
            let slot = self
                .slots
                .get((at % len.max(1)) as usize)
                .filter(|s| s.at == at);
            received.push(slot.map_or(0, |s| s.received));
            rejected.push(slot.map_or(0, |s| s.rejected));
        }
        (received, rejected)
    }
}

/// The history of one route or destination.
#[derive(Debug, Clone)]
pub(super) struct History {
    minutes: Ring,
    hours: Ring,
}

impl Default for History {
    fn default() -> Self {
        History {
            minutes: Ring::new(60, MINUTES),
            hours: Ring::new(3600, HOURS),
        }
    }
}

/// Whether an outcome counts as a rejection on the charts.
pub(super) fn is_rejection(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::RejectedByIzhub | Outcome::RejectedByIis)
}

impl History {
    /// `received` messages and `rejected` rejections at `sec`.
    pub(super) fn add(&mut self, sec: u64, received: u32, rejected: u32) {
        for ring in [&mut self.minutes, &mut self.hours] {
            if let Some(s) = ring.slot(sec) {
                s.received = s.received.saturating_add(received);
                s.rejected = s.rejected.saturating_add(rejected);
            }
        }
    }
}

/// One chart's data: counts per bucket, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub name: String,
    pub received: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Every route's and destination's counts over one period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Period {
    /// Seconds each bucket covers.
    pub step_secs: u64,
    /// Start of the first bucket, ms since the epoch.
    pub start_ms: i64,
    pub routes: Vec<Series>,
    pub destinations: Vec<Series>,
}

/// `GET /api/dashboard/history`: the last hour by minute and the last seven
/// days by hour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub last_hour: Period,
    pub last_days: Period,
}

impl Period {
    pub(super) fn new(step_secs: u64, now_sec: u64, len: usize) -> Period {
        let last = now_sec / step_secs;
        let first = (last + 1).saturating_sub(len as u64);
        Period {
            step_secs,
            start_ms: (first * step_secs * 1000).min(i64::MAX as u64) as i64,
            routes: Vec::new(),
            destinations: Vec::new(),
        }
    }

    /// Adds another node's period: buckets are matched by their time, so
    /// clocks a bucket apart still line up.
    fn add(&mut self, other: Period) {
        if other.step_secs != self.step_secs || self.step_secs == 0 {
            return;
        }
        let step_ms = (self.step_secs * 1000) as i64;
        let shift = (other.start_ms - self.start_ms).div_euclid(step_ms);
        let merge = |into: &mut Vec<Series>, from: Vec<Series>| {
            for s in from.into_iter().take(super::board::MAX_NAMES) {
                let at = match into.iter().position(|m| m.name == s.name) {
                    Some(at) => at,
                    None if into.len() < super::board::MAX_NAMES => {
                        let len = into.first().map_or(s.received.len(), |f| f.received.len());
                        into.push(Series {
                            name: s.name.clone(),
                            received: vec![0; len],
                            rejected: vec![0; len],
                        });
                        into.len() - 1
                    }
                    None => continue,
                };
                let Some(mine) = into.get_mut(at) else {
                    continue;
                };
                for (i, (r, j)) in s.received.iter().zip(&s.rejected).enumerate() {
                    let Ok(k) = usize::try_from(i as i64 + shift) else {
                        continue;
                    };
                    if let Some(v) = mine.received.get_mut(k) {
                        *v = v.saturating_add(*r);
                    }
                    if let Some(v) = mine.rejected.get_mut(k) {
                        *v = v.saturating_add(*j);
                    }
                }
            }
            into.sort_by(|a, b| a.name.cmp(&b.name));
        };
        merge(&mut self.routes, other.routes);
        merge(&mut self.destinations, other.destinations);
    }
}

impl Traffic {
    /// Adds another node's traffic to this one.
    pub fn add(&mut self, other: Traffic) {
        self.last_hour.add(other.last_hour);
        self.last_days.add(other.last_days);
    }

    /// An empty history ending at `now_sec`.
    pub(super) fn empty(now_sec: u64) -> Traffic {
        Traffic {
            last_hour: Period::new(60, now_sec, MINUTES),
            last_days: Period::new(3600, now_sec, HOURS),
        }
    }

    /// Adds one route's or destination's history.
    pub(super) fn push(&mut self, route: bool, name: &str, h: &History, now_sec: u64) {
        for (period, ring) in [
            (&mut self.last_hour, &h.minutes),
            (&mut self.last_days, &h.hours),
        ] {
            let (received, rejected) = ring.read(now_sec);
            let s = Series {
                name: name.to_string(),
                received,
                rejected,
            };
            if route {
                period.routes.push(s);
            } else {
                period.destinations.push(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_over_and_nodes_add_up() {
        let mut h = History::default();
        let t0 = 1_000_000_020;
        h.add(t0, 1, 0);
        h.add(t0 + 1, 1, 1);
        h.add(t0 + 120, 1, 0);
        let mut traffic = Traffic::empty(t0 + 120);
        traffic.push(true, "vxu", &h, t0 + 120);
        let hour = &traffic.last_hour.routes[0];
        assert_eq!(hour.received.len(), MINUTES);
        assert_eq!(hour.received[MINUTES - 1], 1);
        assert_eq!(hour.received[MINUTES - 3], 2);
        assert_eq!(hour.rejected[MINUTES - 3], 1);
        assert_eq!(traffic.last_days.routes[0].received.iter().sum::<u32>(), 3);
        // Over an hour later the minutes are gone; the hours are not.
        let later = t0 + 3 * 3600;
        let mut traffic = Traffic::empty(later);
        traffic.push(true, "vxu", &h, later);
        assert_eq!(traffic.last_hour.routes[0].received.iter().sum::<u32>(), 0);
        assert_eq!(traffic.last_days.routes[0].received.iter().sum::<u32>(), 3);
        // Another node, its clock a minute ahead, adds up bucket by bucket.
        let mut other = Traffic::empty(t0 + 180);
        let mut h2 = History::default();
        h2.add(t0 + 1, 5, 2);
        other.push(true, "vxu", &h2, t0 + 180);
        other.push(false, "mi-iis", &h2, t0 + 180);
        let mut mine = Traffic::empty(t0 + 120);
        mine.push(true, "vxu", &h, t0 + 120);
        mine.add(other);
        let hour = &mine.last_hour.routes[0];
        assert_eq!(hour.received[MINUTES - 3], 7);
        assert_eq!(hour.rejected[MINUTES - 3], 3);
        assert_eq!(mine.last_hour.destinations[0].received[MINUTES - 3], 5);
        assert_eq!(mine.last_hour.destinations[0].received.len(), MINUTES);
    }
}
