//! `test-misbehave`: a plugin that breaks on purpose, for the engine's tests.
//! The config key `mode` says how: `trap` (panics), `loop` (never returns),
//! `memory` (allocates without end), `error` (returns an error), `ok`.

/// Generated bindings for the `izhub:plugin` world.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });
}

use bindings::izhub::plugin::host;
use bindings::izhub::plugin::types::Verdict;

struct Plugin;

impl bindings::Guest for Plugin {
    fn process(_msg: bindings::Envelope) -> Result<bindings::Outcome, String> {
        match host::config("mode").as_deref().unwrap_or("ok") {
            "trap" => panic!("misbehaving on purpose"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "error" => Err("refusing on purpose".to_string()),
            _ => Ok(bindings::Outcome {
                verdict: Verdict::Continue(None),
                issues: Vec::new(),
                attributes: Vec::new(),
            }),
        }
    }
}

bindings::export!(Plugin with_types_in bindings);
