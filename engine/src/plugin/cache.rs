//! Compiled components, kept in memory for reloads and on disk between runs,
//! keyed by the wasm's SHA-256 and the engine's compatibility hash.
//!
//! A compiled component is native code the engine runs: the disk cache is
//! used only from a directory owned by the engine's user that nobody else can
//! write, and every entry carries an HMAC-SHA256 tag under a key kept beside
//! the directory (`<dir>.key`, 0600), checked before it is deserialized.
//! This is the one module with `unsafe` code: deserializing a component.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes of the HMAC-SHA256 tag in front of each cached entry.
const TAG: usize = 32;

/// Compiled components by content.
pub struct ComponentCache {
    /// The trusted disk cache and its key, when there is one.
    dir: Option<(PathBuf, ring::hmac::Key)>,
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
        let dir = dir.and_then(|d| match trust(&d) {
            Ok(key) => Some((d, key)),
            Err(why) => {
                tracing::warn!(dir = %d.display(), reason = %why, "not using the compiled-plugin cache; plugins are compiled at every start");
                None
            }
        });
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
        self.get_or_compile_bytes(engine, &bytes)
    }

    /// The compiled component for a wasm file's bytes.
    pub fn get_or_compile_bytes(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
        let key = format!("{:x}-{}", Sha256::digest(bytes), self.engine_key);
        if let Ok(mut u) = self.used.lock() {
            u.insert(key.clone());
        }
        if let Some(c) = self.memory.lock().ok().and_then(|m| m.get(&key).cloned()) {
            self.from_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        let file = self
            .dir
            .as_ref()
            .map(|(d, tag_key)| (d.join(format!("{key}.cwasm")), tag_key));
        let from_disk = file.as_ref().and_then(|(f, tag_key)| {
            let stored = std::fs::read(f).ok()?;
            let (tag, body) = (stored.get(..TAG)?, stored.get(TAG..)?);
            if ring::hmac::verify(tag_key, body, tag).is_err() {
                tracing::warn!(path = %f.display(), "a cached compiled plugin failed its checksum; compiling it again");
                return None;
            }
            // SAFETY: deserializing runs native code from the bytes. They were
            // written by `Component::serialize` of an engine with this same
            // configuration (the file name includes the engine's compatibility
            // hash) into a directory only the engine's user can write, and
            // their HMAC tag under the engine's private key was just verified,
            // so they are this engine's own output, unmodified. Wasmtime also
            // checks the header and refuses other engines' output.
            unsafe { Component::deserialize(engine, body) }.ok()
        });
        let component = match from_disk {
            Some(c) => {
                self.from_disk.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                let c = Component::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some((file, tag_key)) = &file
                    && let Err(e) = write_atomically(file, tag_key, &c)
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

fn write_atomically(
    file: &Path,
    tag_key: &ring::hmac::Key,
    component: &Component,
) -> Result<(), String> {
    let body = component.serialize().map_err(|e| format!("{e:#}"))?;
    let tag = ring::hmac::sign(tag_key, &body);
    let dir = file.parent().ok_or("no parent directory")?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut out = private_file(&tmp).map_err(|e| e.to_string())?;
    out.write_all(tag.as_ref())
        .and_then(|()| out.write_all(&body))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, file).map_err(|e| e.to_string())
}

/// Creates a new file only the engine's user can read and write.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The key file of a cache directory: beside it, not in it, so that whoever
/// could write entries could still not sign them.
fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// Checks that `dir` may hold native code the engine will run (creating it
/// 0700 if missing) and returns the key its entries are tagged with.
#[cfg(unix)]
fn trust(dir: &Path) -> Result<ring::hmac::Key, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let owned = |path: &Path, what: &str, forbidden: u32| -> Result<std::fs::Metadata, String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{what}: {e}"))?;
        if meta.file_type().is_symlink() {
            return Err(format!("{what} is a symbolic link"));
        }
        if meta.uid() != euid {
            return Err(format!(
                "{what} belongs to user {}, not to the engine's user {euid}",
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & forbidden != 0 {
            return Err(format!("{what} is open to other users (mode {mode:o})"));
        }
        Ok(meta)
    };
    let meta = owned(dir, "the directory", 0o022)?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    let key_file = key_path(dir);
    let bytes = if key_file.exists() {
        owned(&key_file, "its key file", 0o077)?;
        std::fs::read(&key_file).map_err(|e| format!("its key file: {e}"))?
    } else {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| "no random bytes for its key".to_string())?;
        let mut out = private_file(&key_file).map_err(|e| format!("its key file: {e}"))?;
        out.write_all(&key)
            .map_err(|e| format!("its key file: {e}"))?;
        key.to_vec()
    };
    if bytes.len() != 32 {
        return Err("its key file is not a 32-byte key".into());
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

#[cfg(not(unix))]
fn trust(_dir: &Path) -> Result<ring::hmac::Key, String> {
    Err("the compiled-plugin cache needs Unix file ownership checks".into())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The smallest component: its preamble only.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn setup() -> (tempfile::TempDir, PathBuf, Engine) {
        let tmp = tempfile::tempdir().unwrap();
        let wasm = tmp.path().join("empty.wasm");
        std::fs::write(&wasm, EMPTY).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        (tmp, wasm, Engine::new(&config).unwrap())
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_private_cache_is_used_and_a_tampered_entry_is_not() {
        let (tmp, wasm, engine) = setup();
        let dir = tmp.path().join("components");
        ComponentCache::new(&engine, Some(dir.clone()))
            .get_or_compile(&engine, &wasm)
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key_path(&dir)), 0o600);
        let cached = entries(&dir);
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert_eq!(mode(&cached[0]), 0o600);

        let cache = ComponentCache::new(&engine, Some(dir.clone()));
        cache.get_or_compile(&engine, &wasm).unwrap();
        assert_eq!(cache.counts(), (0, 1, 0), "a good entry loads from disk");

        let mut bytes = std::fs::read(&cached[0]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&cached[0], &bytes).unwrap();
        let cache = ComponentCache::new(&engine, Some(dir.clone()));
        cache.get_or_compile(&engine, &wasm).unwrap();
        assert_eq!(
            cache.counts(),
            (1, 0, 0),
            "a tampered entry is compiled again"
        );
    }

    #[test]
    fn a_cache_others_can_write_is_not_used() {
        let (tmp, wasm, engine) = setup();
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = ComponentCache::new(&engine, Some(dir.clone()));
        cache.get_or_compile(&engine, &wasm).unwrap();
        assert!(entries(&dir).is_empty(), "nothing is written there");
        assert!(!key_path(&dir).exists());
        let cache = ComponentCache::new(&engine, Some(dir.clone()));
        cache.get_or_compile(&engine, &wasm).unwrap();
        assert_eq!(cache.counts(), (1, 0, 0));

        // A key file others can read is not trusted either.
        let other = tmp.path().join("other");
        ComponentCache::new(&engine, Some(other.clone()));
        std::fs::set_permissions(key_path(&other), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(trust(&other).unwrap_err().contains("open to other users"));
    }
}
