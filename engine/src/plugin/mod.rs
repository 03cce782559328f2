//! The plugin runtime: the one module that owns wasmtime. Components are
//! compiled once and pre-linked; every call gets a fresh store and instance
//! from the pooling allocator, an epoch deadline and a memory cap, and WASI
//! with nothing in it (no files, environment, network or inherited stdio).

mod cache;
mod call;
mod host;
pub mod manifest;
pub mod signature;
mod ticker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use cache::ComponentCache;
use ticker::{Ticker, Ticking};

use crate::config::{Grant, PluginSpec};
use crate::hl7::{Issue, Severity};

/// Generated bindings for the `izhub:plugin` world.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

use bindings::izhub::plugin::types as wit;
use bindings::{Plugin, PluginIndices, PluginPre};

/// Plugin instances alive at once; calls beyond this wait for a slot.
const MAX_INSTANCES: u32 = 128;
/// Resources (streams, handles) one call may hold in the host's table.
const MAX_RESOURCES: usize = 256;
/// Most issues and attributes one call may return.
const MAX_ITEMS: usize = 1000;

/// Interfaces every plugin may import. Anything else (files, sockets, clocks,
/// HTTP) is refused when the plugin is loaded: the sandbox gives none of it.
const ALWAYS_ALLOWED: [&str; 4] = ["izhub:plugin/", "wasi:io/", "wasi:cli/", "wasi:random/"];

/// What a plugin decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on, with replaced HL7 text when given.
    Continue(Option<String>),
    /// Stop and answer the sender with these issues.
    Reject(Vec<Issue>),
    /// Deliver to these destinations instead of the route's defaults.
    RouteTo(Vec<String>),
}

/// A plugin's answer for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub issues: Vec<Issue>,
    pub attributes: Vec<(String, String)>,
}

/// The input to one call.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub id: &'a str,
    pub route: &'a str,
    pub source: &'a str,
    pub received_at: &'a str,
    pub hl7: &'a str,
    pub attributes: &'a [(String, String)],
    /// [`crate::hl7::layout`] of `hl7`, for plugins that export
    /// `process-split`; empty when there is none.
    pub layout: &'a [u32],
}

/// Why a call failed. Each names the plugin and what it broke.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '{plugin}' exceeded its time limit of {limit:?}")]
    TimeLimit { plugin: String, limit: Duration },
    #[error("plugin '{plugin}' exceeded its memory limit of {limit_mib} MiB")]
    MemoryLimit { plugin: String, limit_mib: usize },
    #[error("plugin '{plugin}' exhausted its stack (runaway recursion)")]
    StackOverflow { plugin: String },
    #[error("plugin '{plugin}' crashed: {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin '{plugin}' failed: {message}")]
    Returned { plugin: String, message: String },
    #[error("plugin '{plugin}' returned more output than its limit of {limit} bytes")]
    OutputTooLarge { plugin: String, limit: usize },
    #[error("the message is {size} bytes; plugin '{plugin}' accepts at most {limit} bytes")]
    InputTooLarge {
        plugin: String,
        size: usize,
        limit: usize,
    },
    #[error("plugin '{plugin}' could not be started: {detail}")]
    Instantiate { plugin: String, detail: String },
}

impl PluginError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::TimeLimit { .. } => "time_limit",
            PluginError::MemoryLimit { .. } => "memory_limit",
            PluginError::StackOverflow { .. } => "stack_overflow",
            PluginError::Trap { .. } => "trap",
            PluginError::Returned { .. } => "error",
            PluginError::OutputTooLarge { .. } => "output_limit",
            PluginError::InputTooLarge { .. } => "input_limit",
            PluginError::Instantiate { .. } => "instantiate",
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{plugin}' ({path}): {detail}")]
pub struct LoadError {
    pub plugin: String,
    pub path: PathBuf,
    pub detail: String,
}

/// Marker error raised from the epoch callback when a call runs out of time.
#[derive(Debug)]
struct OutOfTime;
impl std::fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("time limit exceeded")
    }
}
impl std::error::Error for OutOfTime {}

/// Marker error raised by the limiter when a memory would outgrow its cap.
#[derive(Debug)]
struct OutOfMemory;
impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory limit exceeded")
    }
}
impl std::error::Error for OutOfMemory {}

/// What a plugin may reach through `host`, fixed when the route is loaded.
#[derive(Debug)]
pub(crate) struct Grants {
    pub(crate) plugin: String,
    pub(crate) log: bool,
    pub(crate) config: Option<BTreeMap<String, String>>,
    pub(crate) tables: BTreeSet<String>,
    pub(crate) all_tables: Arc<BTreeMap<String, HashMap<String, String>>>,
}

/// Caps one instance's memory and tables, and remembers the peak.
struct Limiter {
    memory: Option<usize>,
    peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.memory.is_some_and(|cap| desired > cap) {
            // An error (not `false`) traps the guest at once, with a cause we can name.
            return Err(wasmtime::Error::new(OutOfMemory));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.memory.is_none() || desired <= 1 << 20)
    }
}

/// Per-call store data.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    pub(crate) grants: Arc<Grants>,
    pub(crate) log_lines: u32,
    deadline: Instant,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// How the runtime is built.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled components are kept between runs (none: compile every start).
    pub cache_dir: Option<PathBuf>,
    /// Turn the time, memory, input and output limits off (for measuring
    /// their cost only; never in production).
    pub unlimited: bool,
    /// Write `/tmp/perf-PID.map` naming the compiled plugin functions, so
    /// that `perf` shows where a plugin spends its time (for profiling; a
    /// plugin built without its name section shows as numbered functions).
    pub perf_map: bool,
}

/// The wasmtime engine, linker and epoch ticker shared by all plugins, for
/// the life of the process (across configuration reloads).
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    slots: Arc<Semaphore>,
    ticker: Ticker,
    cache: ComponentCache,
    unlimited: bool,
}

/// What a component says about itself and who signed it, checked before it
/// is compiled.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Its manifest, when `izhub plugin build` wrote one.
    pub manifest: Option<manifest::Manifest>,
    /// The publisher key whose signature was verified, when it is signed.
    pub signer: Option<signature::PublicKey>,
}

impl Provenance {
    /// The version, or `unknown` for a component without a manifest.
    pub fn version(&self) -> &str {
        self.manifest
            .as_ref()
            .map_or("unknown", |m| m.version.as_str())
    }
}

/// Reads a plugin's component (bounded) and checks what it says about
/// itself against its spec before anything compiles it: a well-formed
/// component, a manifest for a compatible WIT version, the pinned
/// `name@version`, and a signature by a trusted publisher where the route or
/// the engine requires one (a signature that is there must hold in any
/// case). Returns the bytes that were checked, for compiling.
pub fn admit(spec: &PluginSpec) -> Result<(Vec<u8>, Provenance), LoadError> {
    use std::io::Read as _;
    let err = |detail: String| LoadError {
        plugin: spec.name.clone(),
        path: spec.wasm.clone(),
        detail,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&spec.wasm)
        .and_then(|f| {
            f.take(manifest::MAX_COMPONENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| err(format!("cannot read the file: {e}")))?;
    let sections =
        manifest::sections(&bytes).map_err(|e| err(format!("cannot compile: the file {e}")))?;
    let manifest = manifest::custom_section(&sections, manifest::MANIFEST_SECTION)
        .and_then(|d| d.map(manifest::Manifest::parse).transpose())
        .map_err(|e| err(format!("the file {e}")))?;
    if let Some(m) = &manifest {
        manifest::wit_compatible(&m.wit).map_err(|why| err(format!("refused: {why}")))?;
    }
    if let Some((name, version)) = &spec.pin {
        match &manifest {
            Some(m) if &m.name == name && &m.version == version => {}
            Some(m) => {
                return Err(err(format!(
                    "refused: the route pins {name}@{version}, and this component is {}",
                    m.label()
                )));
            }
            None => {
                return Err(err(format!(
                    "refused: the route pins {name}@{version}, and this component has no manifest (build it with `izhub plugin build`)"
                )));
            }
        }
    }
    let checked = match &spec.trusted {
        Some(trusted) => signature::verify(&bytes, trusted).map(Some),
        None => match signature::signer(&bytes) {
            Err(signature::SignatureError::Unsigned) => Ok(None),
            other => other.map(Some),
        },
    };
    let signer = checked.map_err(|e| err(format!("refused: the file {e}")))?;
    Ok((bytes, Provenance { manifest, signer }))
}

/// One loaded plugin, ready to be instantiated per message.
pub struct LoadedPlugin {
    name: String,
    /// `name@version` when the component has a manifest, else `name`.
    label: String,
    provenance: Provenance,
    pre: PluginPre<CallState>,
    /// Its `process-split` export (the SDK's plugins have one): called with
    /// the message's layout instead of `process`.
    split: Option<ComponentExportIndex>,
    /// Where `process` is, found once.
    indices: PluginIndices,
    grants: Arc<Grants>,
    time_limit: Duration,
    memory_limit: usize,
    max_output: usize,
    max_input: usize,
}

impl LoadedPlugin {
    /// The plugin's name in this route.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name@version` (the version from its manifest), or the name alone
    /// for a component without one: what the console records.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its manifest and signer.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Whether it takes the message's layout (exports `process-split`).
    pub fn takes_layout(&self) -> bool {
        self.split.is_some()
    }
}

/// Measurements of one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Wall time of the whole call: the phases below together.
    pub elapsed: Duration,
    /// Largest linear memory the instance reached, in bytes.
    pub peak_memory: usize,
    /// Making the store: WASI context, limits, the input copied.
    pub setup: Duration,
    /// Instantiating the component in the store.
    pub instantiate: Duration,
    /// The plugin's own run, with its input lowered and its answer lifted
    /// and checked.
    pub run: Duration,
    /// Dropping the store: the instance's memory and tables reset for the
    /// next call.
    pub teardown: Duration,
}

fn err_text(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(opts: RuntimeOptions) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 8)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 4)
            .total_stacks(MAX_INSTANCES)
            // Reset reused slots by zeroing what was touched instead of
            // returning it to the kernel: the next instance then starts
            // without page faults, which dominate a short call otherwise.
            // Where the kernel offers PAGEMAP_SCAN (Linux 6.7+), only the
            // pages a call really wrote are reset, not the whole initial
            // memory.
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(1 << 20)
            .async_stack_keep_resident(256 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(!opts.unlimited)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(512 << 10);
        if opts.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(err_text)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err_text)?;
        Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s).map_err(err_text)?;

        let ticker = Ticker::start(&engine)?;
        let cache = ComponentCache::new(&engine, opts.cache_dir);
        Ok(Runtime {
            engine,
            linker,
            slots: Arc::new(Semaphore::new(MAX_INSTANCES as usize)),
            ticker,
            cache,
            unlimited: opts.unlimited,
        })
    }

    /// Compiles a component file, or takes it from the cache.
    pub fn compile(&self, path: &Path) -> Result<Component, String> {
        self.cache.get_or_compile(&self.engine, path)
    }

    /// Compiles a component already read (and checked), or takes it from
    /// the cache.
    pub fn compile_bytes(&self, bytes: &[u8]) -> Result<Component, String> {
        self.cache.get_or_compile_bytes(&self.engine, bytes)
    }

    /// The compiled-component cache.
    pub fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    /// Links a compiled component for one plugin spec, refusing imports the
    /// sandbox does not offer.
    pub fn load(
        &self,
        spec: &PluginSpec,
        component: &Component,
        provenance: Provenance,
        tables: &Arc<BTreeMap<String, HashMap<String, String>>>,
    ) -> Result<LoadedPlugin, LoadError> {
        let err = |detail: String| LoadError {
            plugin: spec.name.clone(),
            path: spec.wasm.clone(),
            detail,
        };
        // The contract version the component was really built against, from
        // its imports (`izhub:plugin/host@0.1.0`): said plainly rather than
        // as a linker error.
        for (name, _) in component.component_type().imports(&self.engine) {
            if let Some(version) = name
                .strip_prefix("izhub:plugin/")
                .and_then(|n| n.split_once('@'))
                .map(|(_, v)| v)
            {
                manifest::wit_compatible(version).map_err(|why| err(format!("refused: {why}")))?;
            }
        }
        let linked: Vec<String> = spec
            .grants
            .iter()
            .filter_map(|g| match g {
                Grant::Link(family) => Some(format!("wasi:{family}/")),
                _ => None,
            })
            .collect();
        let refused: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| {
                !ALWAYS_ALLOWED.iter().any(|p| name.starts_with(p))
                    && !linked.iter().any(|p| name.starts_with(p.as_str()))
            })
            .collect();
        if !refused.is_empty() {
            return Err(err(format!(
                "imports {}, which plugins are not granted: the sandbox offers no files, network, \
                 clocks or HTTP (use the envelope's received-at for the time; a language runtime \
                 that merely links these can be granted link:wasi:filesystem, link:wasi:sockets, \
                 link:wasi:clocks, which still give no access)",
                refused.join(", ")
            )));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| err(format!("{e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            err(format!(
                "it does not export the izhub:plugin world's `process` function: {e:#}"
            ))
        })?;
        let indices = PluginIndices::new(pre.instance_pre())
            .map_err(|e| err(format!("its `process` export cannot be found: {e:#}")))?;
        let grants = Grants {
            plugin: spec.name.clone(),
            log: spec.grants.contains(&Grant::Log),
            config: spec
                .grants
                .contains(&Grant::Config)
                .then(|| spec.config.clone()),
            tables: spec
                .grants
                .iter()
                .filter_map(|g| match g {
                    Grant::Lookup(t) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
            all_tables: tables.clone(),
        };
        let label = match &provenance.manifest {
            Some(m) => format!("{}@{}", spec.name, m.version),
            None => spec.name.clone(),
        };
        Ok(LoadedPlugin {
            name: spec.name.clone(),
            label,
            provenance,
            pre,
            split: component.get_export_index(None, "process-split"),
            indices,
            grants: Arc::new(grants),
            time_limit: spec.time_limit,
            memory_limit: spec.memory_limit,
            max_output: spec.max_output,
            max_input: spec.max_input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Context switches of this process's thread named `name` (Linux).
    fn switches_of(name: &str) -> Option<u64> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            return Some(
                status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                    .sum(),
            );
        }
        None
    }

    /// With no plugin call running, the epoch ticker sleeps: an idle engine
    /// uses no CPU (a 1 ms ticker woke up a thousand times a second).
    #[test]
    fn the_epoch_ticker_sleeps_while_no_plugin_runs() {
        let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let before = switches_of("izhub-epoch").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let after = switches_of("izhub-epoch").unwrap();
        assert!(
            after - before <= 5,
            "the ticker woke {} times in 500 ms",
            after - before
        );
        drop(runtime);
    }
}
