//! Compiled components, kept in memory for reloads and on disk between runs,
//! keyed by the wasm's SHA-256 and the engine's compatibility hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components by content.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
    memory: Mutex<HashMap<String, Component>>,
    used: Mutex<std::collections::HashSet<String>>,
    compiled: AtomicU64,
    from_disk: AtomicU64,
    from_memory: AtomicU64,
}

impl ComponentCache {
    /// A cache for `engine`, persisting to `dir` when given.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        // The std hasher with its default keys is stable for one build of the
        // engine, which is all the key has to tell apart.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        ComponentCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
            memory: Mutex::new(HashMap::new()),
            used: Mutex::new(Default::default()),
            compiled: AtomicU64::new(0),
            from_disk: AtomicU64::new(0),
            from_memory: AtomicU64::new(0),
        }
    }

    /// (compiled, loaded from disk, reused from memory) since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.from_disk.load(Ordering::Relaxed),
            self.from_memory.load(Ordering::Relaxed),
        )
    }

    /// The compiled component for a wasm file.
    pub fn get_or_compile(&self, engine: &Engine, path: &Path) -> Result<Component, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = format!("{:x}-{}", Sha256::digest(&bytes), self.engine_key);
        if let Ok(mut u) = self.used.lock() {
            u.insert(key.clone());
        }
        if let Some(c) = self.memory.lock().ok().and_then(|m| m.get(&key).cloned()) {
            self.from_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        let file = self.dir.as_ref().map(|d| d.join(format!("{key}.cwasm")));
        let from_disk = file.as_ref().filter(|f| f.is_file()).and_then(|f| {
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (the key includes the engine's
            // compatibility hash) into the engine's own cache directory, and
            // is named by the SHA-256 of the wasm it was compiled from.
            // Deserialization also checks the header and refuses other engines.
            unsafe { Component::deserialize_file(engine, f) }.ok()
        });
        let component = match from_disk {
            Some(c) => {
                self.from_disk.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                let c = Component::new(engine, &bytes).map_err(|e| format!("{e:#}"))?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some(file) = &file
                    && let Err(e) = write_atomically(file, &c)
                {
                    tracing::warn!(path = %file.display(), error = %e, "could not cache the compiled plugin");
                }
                c
            }
        };
        if let Ok(mut m) = self.memory.lock() {
            m.insert(key, component.clone());
        }
        Ok(component)
    }

    /// Starts tracking which components a configuration build uses.
    pub fn begin_build(&self) {
        if let Ok(mut u) = self.used.lock() {
            u.clear();
        }
    }

    /// After a successful build: frees components no longer used.
    pub fn end_build(&self) {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        if let Ok(mut m) = self.memory.lock() {
            m.retain(|k, _| used.contains(k));
        }
    }
}

fn write_atomically(file: &Path, component: &Component) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
    let dir = file.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, file).map_err(|e| e.to_string())
}
