//! The epoch ticker: the thread that advances wasmtime's epoch while plugin
//! calls run, so that each call's deadline is checked and long calls yield.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while plugin calls run. A runaway plugin is
/// stopped within one tick of its deadline, and a long call yields to other
/// tasks at every tick: the tick is the slice a CPU-bound plugin holds a
/// worker thread for, so it stays short (a 10 ms tick let eight spinning
/// plugins hold a good message back for over a second on two workers).
/// With no call running the ticker sleeps.
const TICK: Duration = Duration::from_millis(1);

/// The epoch ticker thread and the count of calls it ticks for: it parks
/// while the count is zero, so an idle engine uses no CPU.
pub(super) struct Ticker {
    thread: std::thread::Thread,
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts the thread for `engine`; it ends with the engine or when the
    /// ticker is dropped.
    pub(super) fn start(engine: &Engine) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (weak, stopped, calls) = (engine.weak(), stop.clone(), active.clone());
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
                    std::thread::sleep(TICK);
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
        })
    }
}

/// The thread ends with its ticker (with the runtime that owns it).
impl Drop for Ticker {
    fn drop(&mut self) {
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
