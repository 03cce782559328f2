//! The `izhub` binary: parse the command line and hand over to the library.

/// mimalloc instead of the system allocator: every message makes many small,
/// short-lived allocations (plugin stores, envelopes, answers), which glibc's
/// malloc served at about a tenth of the engine's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    izhub::cli::main()
}
