//! `izhub check`: the configuration checked, every plugin compiled and
//! linked, nothing opened or started.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::args::CacheArgs;
use crate::config;
use crate::plugin::Runtime;

/// Checks the configuration at `config`; exit code 2 when it is refused.
pub(super) async fn run(config: &Path, cache: &CacheArgs) -> anyhow::Result<ExitCode> {
    // Every problem at once: those of the file, and those of what it names
    // (planned even when the file has problems, so nothing is left to find
    // on the next run).
    let (cfg, mut errors) = match config::load_all(config) {
        Ok(loaded) => loaded,
        Err(errs) => {
            eprint!("{errs}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = match crate::topology::plan(&cfg) {
        Ok(plan) => Some(plan),
        Err(errs) => {
            errors.extend(errs.0);
            None
        }
    };
    let Some(plan) = plan.filter(|_| errors.is_empty()) else {
        eprint!("{}", config::ConfigErrors(errors));
        return Ok(ExitCode::from(2));
    };
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    // Compile every plugin too: a component that does not fit the
    // contract is a configuration error the operator must see now. With no
    // journal and no destinations: checking opens nothing and starts nothing.
    let started = std::time::Instant::now();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let runtime = Arc::new(Runtime::new(cache.runtime_options())?);
    match crate::pipeline::Pipeline::build(&plan, &runtime, &metrics, None, Default::default()) {
        Ok(_) => {
            let (compiled, from_disk, _) = runtime.cache().counts();
            println!(
                "{}: OK ({} listeners, {} destinations, {} routes, {} plugins; {compiled} compiled, {from_disk} from cache, {} ms)",
                config.display(),
                cfg.listeners.len(),
                cfg.destinations.len(),
                cfg.routes.len(),
                cfg.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
                started.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e:#}", config.display());
            Ok(ExitCode::from(2))
        }
    }
}
