//! The epoch ticker: the thread that advances wasmtime's epoch while plugin
//! calls run, so that each call's deadline is checked and long calls yield.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while plugin calls run: a twentieth of the
/// shortest time limit loaded, between these bounds. A runaway plugin is
/// stopped within one tick of its deadline, and a long call yields to other
/// tasks at every tick; at the default 200 ms limit the ticker wakes 100
/// times a second under load, not 1,000. With no call running it sleeps.
const TICK_MIN: Duration = Duration::from_millis(1);
const TICK_MAX: Duration = Duration::from_millis(10);

/// The epoch ticker thread and the count of calls it ticks for: it parks
/// while the count is zero, so an idle engine uses no CPU.
pub(super) struct Ticker {
    thread: std::thread::Thread,
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The tick in microseconds: lowered as plugins with shorter time
    /// limits are loaded, never raised.
    tick_us: Arc<AtomicU64>,
}

impl Ticker {
    /// Starts the thread for `engine`; it ends with the engine or at
    /// [`Ticker::stop`].
    pub(super) fn start(engine: &Engine) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let tick_us = Arc::new(AtomicU64::new(TICK_MAX.as_micros() as u64));
        let (weak, stopped, calls, tick) =
            (engine.weak(), stop.clone(), active.clone(), tick_us.clone());
        let thread = std::thread::Builder::new()
            .name("izhub-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    if calls.load(Ordering::SeqCst) == 0 {
                        // A call starting unparks this thread; the timeout
                        // only re-checks `stop`.
                        std::thread::park_timeout(Duration::from_secs(1));
                        continue;
                    }
                    std::thread::sleep(Duration::from_micros(tick.load(Ordering::Relaxed)));
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?
            .thread()
            .clone();
        Ok(Ticker {
            thread,
            active,
            stop,
            tick_us,
        })
    }

    /// Makes the tick short enough for a plugin limited to `time_limit`.
    pub(super) fn fit(&self, time_limit: Duration) {
        let tick = (time_limit / 20).clamp(TICK_MIN, TICK_MAX);
        self.tick_us
            .fetch_min(tick.as_micros() as u64, Ordering::Relaxed);
    }

    /// The tick in force.
    #[cfg(test)]
    pub(super) fn tick(&self) -> Duration {
        Duration::from_micros(self.tick_us.load(Ordering::Relaxed))
    }

    /// Ends the thread.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// Counts one running call for the ticker while it lives.
pub(super) struct Ticking<'a>(&'a Ticker);

impl<'a> Ticking<'a> {
    pub(super) fn start(ticker: &'a Ticker) -> Self {
        if ticker.active.fetch_add(1, Ordering::SeqCst) == 0 {
            ticker.thread.unpark();
        }
        Ticking(ticker)
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tick follows the shortest time limit loaded, within its bounds,
    /// and never grows back.
    #[test]
    fn the_tick_fits_the_shortest_time_limit() {
        let engine = Engine::default();
        let ticker = Ticker::start(&engine).unwrap();
        assert_eq!(ticker.tick(), TICK_MAX);
        ticker.fit(Duration::from_millis(200));
        assert_eq!(ticker.tick(), Duration::from_millis(10));
        ticker.fit(Duration::from_millis(100));
        assert_eq!(ticker.tick(), Duration::from_millis(5));
        ticker.fit(Duration::from_millis(2000));
        assert_eq!(ticker.tick(), Duration::from_millis(5));
        ticker.fit(Duration::from_millis(3));
        assert_eq!(ticker.tick(), TICK_MIN);
        ticker.stop();
    }
}
