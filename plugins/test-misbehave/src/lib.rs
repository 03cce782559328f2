//! `test-misbehave`: a plugin that breaks on purpose, for the engine's tests.
//! The config key `mode` says how: `trap` (panics), `loop` (never returns),
//! `memory` (allocates without end), `recurse` (recurses without end), `recurse-big` (recurses with
//! large frames),
//! `big-output` (returns a 3 MiB message), `error` (returns an error),
//! `lookup` (looks up the table named by `table`, reporting the result),
//! `inject-frame` (returns a message with MLLP framing bytes and a second
//! MSH inside), `control-issue` (reports an issue whose codes and text hold
//! MLLP framing bytes), `renumber` (changes MSH-10), `route-to:DEST`
//! (routes to DEST), `ok`.

use izhub_plugin::{Context, Issue, LookupError, Message, Plugin, Verdict};

/// The plugin.
pub struct Misbehave;

/// Recursion that keeps its frames on the wasm stack (no address-taken
/// locals), so it exhausts the engine's stack limit.
/// Counts calls so the recursion below has work after each call (no tail
/// call to turn into a loop) without keeping anything in linear memory.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Recurses without end, every frame in wasm locals: it exhausts the
/// engine's call stack.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let r = recurse(depth.wrapping_add(1));
    CALLS.fetch_add(r, Relaxed);
    depth ^ r
}

/// Recurses with a 4 KiB buffer per call: it overflows the plugin's own
/// stack in linear memory first.
#[allow(unconditional_recursion)]
fn recurse_big(depth: u64) -> u64 {
    let mut buf = [0u8; 4096];
    buf[(depth % 4096) as usize] = 1;
    std::hint::black_box(&mut buf);
    let next: fn(u64) -> u64 = std::hint::black_box(recurse_big);
    u64::from(buf[0]) ^ next(depth.wrapping_add(1))
}

impl Plugin for Misbehave {
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
        match ctx.config("mode").as_deref().unwrap_or("ok") {
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
            "recurse" => Err(format!("unreachable {}", recurse(0))),
            "recurse-big" => Err(format!("unreachable {}", recurse_big(0))),
            "big-output" => {
                let filler = "x".repeat(3 << 20);
                msg.set("MSH-22", &filler)?;
                Ok(Verdict::Continue)
            }
            "error" => Err("refusing on purpose".to_string()),
            "lookup" => {
                let table = ctx.config("table").unwrap_or_default();
                let text = match ctx.lookup(&table, "key") {
                    Ok(v) => format!("lookup ok: {v:?}"),
                    Err(LookupError::AccessDenied) => "lookup access-denied".to_string(),
                    Err(LookupError::NoSuchTable) => "lookup no-such-table".to_string(),
                };
                ctx.report(Issue::info("0").text(text));
                Ok(Verdict::Continue)
            }
            "inject-frame" => {
                msg.set(
                    "MSH-22",
                    "HIE\u{1c}\r\u{0b}MSH|^~\\&|INJECTED|X|||20240101||VXU^V04^VXU_V04|INJECTED-1|P|2.5.1",
                )?;
                Ok(Verdict::Continue)
            }
            "control-issue" => {
                ctx.report(
                    Issue::warning("103\u{0b}")
                        .app_code("5\u{1c}\u{0b}")
                        .at("PID-3[2].5")
                        .text("framing \u{1c}\r\u{0b} inside"),
                );
                Ok(Verdict::Continue)
            }
            "renumber" => {
                let id = format!("RENUMBERED-{}", msg.get("MSH-10"));
                msg.set("MSH-10", &id)?;
                Ok(Verdict::Continue)
            }
            mode if mode.starts_with("route-to:") => Ok(Verdict::route_to(
                mode.trim_start_matches("route-to:").to_string(),
            )),
            _ => Ok(Verdict::Continue),
        }
    }
}

izhub_plugin::plugin!(Misbehave);
