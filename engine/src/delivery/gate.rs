//! What each IIS allows of bulk queries: how many at once, how many a
//! second, the hours of the day, how many a day. A bulk query waits at its
//! destination's gate just before it is sent; clinics' own queries never
//! pass a gate, and a bulk job never takes a destination's last connection,
//! so they are not starved by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{BulkLimits, DestinationSpec};

/// Why a bulk query may not go now, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotNow {
    #[error("outside the destination's bulk window; it opens in {} min", .0.as_secs() / 60)]
    Window(Duration),
    #[error("the destination's daily bulk cap of {cap} queries is reached; it resets in {} min", .resets_in.as_secs() / 60)]
    Cap { cap: u64, resets_in: Duration },
}

impl NotNow {
    /// How long to wait before trying again.
    pub fn wait(&self) -> Duration {
        match self {
            NotNow::Window(d) => *d,
            NotNow::Cap { resets_in, .. } => *resets_in,
        }
    }
}

/// One destination's gate.
struct Gate {
    limits: BulkLimits,
    slots: Arc<Semaphore>,
    /// When the next query may start, for the per-second pace.
    next: tokio::sync::Mutex<Instant>,
    /// (UTC day number, queries sent that day).
    today: Mutex<(i64, u64)>,
}

/// A bulk query's place at its destination, held until it is answered.
pub struct Pass {
    _slot: OwnedSemaphorePermit,
}

/// The gates of every destination.
#[derive(Clone, Default)]
pub struct Gates {
    gates: Arc<HashMap<String, Arc<Gate>>>,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.gates.keys()).finish()
    }
}

/// Seconds since the epoch now (UTC).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long until minute-of-day `at` (UTC), from `secs` since the epoch.
fn until_minute(secs: u64, at: u16) -> Duration {
    let of_day = secs % 86_400;
    let target = u64::from(at) * 60;
    let wait = if target > of_day {
        target - of_day
    } else {
        86_400 - of_day + target
    };
    Duration::from_secs(wait)
}

/// Whether minute-of-day `m` is inside `[start, end)`, which may wrap midnight.
fn inside(m: u16, (start, end): (u16, u16)) -> bool {
    if start <= end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    }
}

impl Gates {
    /// Gates for these destinations. The number at once is kept below the
    /// destination's connections, so a clinic's query always finds one.
    pub fn new(destinations: &[DestinationSpec]) -> Self {
        let gates = destinations
            .iter()
            .map(|d| {
                let connections = d.delivery.connections.max(1);
                let at_once = d
                    .bulk
                    .max_in_flight
                    .clamp(1, connections.saturating_sub(1).max(1));
                (
                    d.name.clone(),
                    Arc::new(Gate {
                        limits: d.bulk.clone(),
                        slots: Arc::new(Semaphore::new(at_once)),
                        next: tokio::sync::Mutex::new(Instant::now()),
                        today: Mutex::new((0, 0)),
                    }),
                )
            })
            .collect();
        Gates {
            gates: Arc::new(gates),
        }
    }

    /// How many bulk queries may be in flight at `destination` at once.
    pub fn at_once(&self, destination: &str) -> usize {
        self.gates
            .get(destination)
            .map_or(1, |g| g.slots.available_permits())
    }

    /// Waits for a place at `destination`'s gate (a slot, then the pace),
    /// or says why not today or not at this hour. A destination without a
    /// gate (not configured) gets one query at a time.
    pub async fn pass(&self, destination: &str) -> Result<Pass, NotNow> {
        let Some(gate) = self.gates.get(destination) else {
            // Not planned as a destination: the delivery itself will fail.
            static ONE: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
            let one = ONE.get_or_init(|| Arc::new(Semaphore::new(1))).clone();
            return match one.acquire_owned().await {
                Ok(slot) => Ok(Pass { _slot: slot }),
                Err(_) => Err(NotNow::Window(Duration::from_secs(1))),
            };
        };
        let secs = now_secs();
        if let Some(window) = gate.limits.window {
            let minute = ((secs % 86_400) / 60) as u16;
            if !inside(minute, window) {
                return Err(NotNow::Window(until_minute(secs, window.0)));
            }
        }
        let slot = gate
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NotNow::Window(Duration::from_secs(1)))?;
        if let Some(cap) = gate.limits.daily_cap {
            let day = (secs / 86_400) as i64;
            let mut today = gate.today.lock().map_err(|_| NotNow::Cap {
                cap,
                resets_in: Duration::from_secs(60),
            })?;
            if today.0 != day {
                *today = (day, 0);
            }
            if today.1 >= cap {
                return Err(NotNow::Cap {
                    cap,
                    resets_in: until_minute(secs, 0),
                });
            }
            today.1 += 1;
        }
        if let Some(per_second) = gate.limits.per_second.filter(|n| *n > 0) {
            let gap = Duration::from_secs(1) / per_second;
            let start = {
                let mut next = gate.next.lock().await;
                let now = Instant::now();
                let start = (*next).max(now);
                *next = start + gap;
                start
            };
            tokio::time::sleep_until(start).await;
        }
        Ok(Pass { _slot: slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gates of one destination `iis` with 4 connections and these
    /// `bulk_*` settings.
    fn gates(bulk: &str) -> Gates {
        let text = format!("[destinations.iis]\nmllp = \"127.0.0.1:1\"\nconnections = 4\n{bulk}\n");
        let config = crate::config::load_str(&text, std::path::Path::new("gate.toml")).unwrap();
        Gates::new(&config.destinations)
    }

    /// Bulk queries are paced: at 5 a second, the sixth passes one second
    /// after the first (on tokio's paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn queries_are_paced_per_second() {
        let gates = gates("bulk_queries_per_second = 5\nbulk_max_in_flight = 3");
        let started = Instant::now();
        let mut at = Vec::new();
        for _ in 0..6 {
            let pass = gates.pass("iis").await.unwrap();
            at.push(started.elapsed());
            drop(pass);
        }
        let ms: Vec<u128> = at.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 200, 400, 600, 800, 1000]);
    }

    /// No more than `max_in_flight` at once (and fewer than the
    /// destination's connections): the next waits until one ends.
    #[tokio::test(start_paused = true)]
    async fn queries_in_flight_are_capped() {
        let gates = gates("bulk_max_in_flight = 8");
        assert_eq!(gates.at_once("iis"), 3, "kept below 4 connections");
        let held: Vec<Pass> = [(); 3]
            .iter()
            .map(|_| gates.pass("iis"))
            .collect::<futures::future::JoinAll<_>>()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let gates2 = gates.clone();
        let fourth = tokio::spawn(async move { gates2.pass("iis").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !fourth.is_finished(),
            "a fourth passed while three were in flight"
        );
        drop(held);
        fourth.await.unwrap().unwrap();
    }

    #[test]
    fn windows_wrap_midnight() {
        assert!(inside(60, (0, 120)));
        assert!(!inside(120, (0, 120)));
        assert!(inside(23 * 60, (22 * 60, 6 * 60)));
        assert!(inside(60, (22 * 60, 6 * 60)));
        assert!(!inside(12 * 60, (22 * 60, 6 * 60)));
        assert_eq!(until_minute(0, 60), Duration::from_secs(3600));
        assert_eq!(until_minute(3600, 0), Duration::from_secs(86_400 - 3600));
    }
}
