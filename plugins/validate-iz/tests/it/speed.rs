//! Native timing of the plugin on the 3 KB NIST benchmark message. Ignored by
//! default; run with
//! `cargo test --release -p validate-iz --test it speed -- --ignored --nocapture`.

use std::time::Instant;

use crate::common::{NOW_NIST, host, read, run};
use izhub_plugin::Severity;

const BENCH: &str = "../../samples/bench/vxu-nist-3kb.hl7";
const CALLS: u32 = 20_000;

#[test]
#[ignore = "timing run; prints µs per call"]
fn native_time_per_call() {
    let h = host(&[]);
    let hl7 = read(BENCH);
    let (rejected, seen) = run(&h, &hl7, NOW_NIST);
    assert!(!rejected, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.severity != Severity::Error),
        "{seen:?}"
    );
    for _ in 0..1_000 {
        std::hint::black_box(run(&h, std::hint::black_box(&hl7), NOW_NIST));
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(run(&h, std::hint::black_box(&hl7), NOW_NIST));
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!(
        "validate-iz, native: {per_call:.2} µs per call ({CALLS} calls, {} bytes, {} issues)",
        hl7.len(),
        seen.len()
    );
}
