//! The plugin kit inside the binary, for partners who have only `izhub`:
//! `izhub plugin new` writes a Rust, JavaScript or Python plugin project
//! with the SDK and the WIT contract beside it; `izhub plugin build` builds
//! it and writes its manifest into the component; `inspect`, `keygen` and
//! `sign` show, and vouch for, what was built.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::plugin::manifest::{self, Asks, Manifest};
use crate::plugin::signature::{self, SigningKey};

/// Files compiled into the binary by `build.rs`.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/plugin_kit.rs"));
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the izhub-plugin SDK (tests run natively with `cargo test`).
    Rust,
    /// JavaScript, built with componentize-js (needs Node.js and npm).
    Js,
    /// Python, built with componentize-py.
    Python,
}

/// `izhub-plugin.toml`: the manifest's source in a plugin project.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    /// Default: the package's (Cargo.toml, package.json).
    name: Option<String>,
    /// Default: the package's.
    version: Option<String>,
    #[serde(default)]
    publisher: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    grants: Asks,
}

/// The manifest file's name in a plugin project.
const MANIFEST_FILE: &str = "izhub-plugin.toml";

fn struct_name(crate_name: &str) -> String {
    crate_name
        .split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes `text` to `dir/rel`, making the folders it needs.
fn put(dir: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The SDK version embedded in this binary.
pub fn sdk_version() -> String {
    toml::from_str::<toml::Table>(embedded::SDK_MANIFEST)
        .ok()
        .and_then(|t| {
            t.get("package")?
                .get("version")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Creates a new plugin project `parent/name` that builds with nothing but
/// its language's toolchain and this binary. `sdk` points a Rust plugin at
/// an SDK checkout instead of the copy written beside it.
pub fn new_plugin(
    name: &str,
    parent: &Path,
    lang: Lang,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    manifest::check_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@TYPE@", &struct_name(name))
    };
    for (rel, text) in embedded::WIT_FILES {
        put(&dir, &format!("wit/{rel}"), text)?;
    }
    match lang {
        Lang::Rust => {
            let dependency = match sdk {
                Some(path) => {
                    let path = std::fs::canonicalize(path)
                        .with_context(|| format!("the SDK is not at {}", path.display()))?;
                    format!("{{ path = {:?} }}", path.display().to_string())
                }
                None => {
                    for (rel, text) in embedded::SDK_FILES {
                        put(&dir, &format!("vendor/izhub-plugin/{rel}"), text)?;
                    }
                    put(
                        &dir,
                        "vendor/izhub-plugin/Cargo.toml",
                        embedded::SDK_MANIFEST,
                    )?;
                    for (rel, text) in embedded::HL7_FILES {
                        put(&dir, &format!("vendor/izhub-hl7/{rel}"), text)?;
                    }
                    put(&dir, "vendor/izhub-hl7/Cargo.toml", embedded::HL7_MANIFEST)?;
                    // The versions izhub was tested with; cargo drops what the
                    // plugin does not use.
                    put(&dir, "Cargo.lock", embedded::LOCKFILE)?;
                    format!(
                        "{{ path = \"vendor/izhub-plugin\", version = \"{}\" }}",
                        sdk_version()
                    )
                }
            };
            put(
                &dir,
                "Cargo.toml",
                &fill(include_str!("kit/rust/Cargo.toml.txt")).replace("@SDK@", &dependency),
            )?;
            put(
                &dir,
                "src/lib.rs",
                &fill(include_str!("kit/rust/lib.rs.txt")),
            )?;
            put(
                &dir,
                MANIFEST_FILE,
                include_str!("kit/rust/izhub-plugin.toml"),
            )?;
            put(
                &dir,
                ".cargo/config.toml",
                include_str!("kit/rust/config.toml"),
            )?;
            put(&dir, ".gitignore", "/target\n")?;
        }
        Lang::Js => {
            put(
                &dir,
                "package.json",
                &fill(include_str!("kit/js/package.json")),
            )?;
            put(&dir, "build.mjs", include_str!("kit/js/build.mjs"))?;
            put(&dir, "plugin.js", &fill(include_str!("kit/js/plugin.js")))?;
            put(
                &dir,
                MANIFEST_FILE,
                include_str!("kit/js/izhub-plugin.toml"),
            )?;
            put(&dir, ".gitignore", "/node_modules\n/*.wasm\n")?;
        }
        Lang::Python => {
            put(&dir, "app.py", &fill(include_str!("kit/python/app.py")))?;
            put(
                &dir,
                MANIFEST_FILE,
                &fill(include_str!("kit/python/izhub-plugin.toml")),
            )?;
            put(&dir, ".gitignore", "/*.wasm\n/wit_world\n")?;
        }
    }
    Ok(dir)
}

/// Runs a build step in `dir`; its output goes to the terminal.
fn run(dir: &Path, program: &str, args: &[&str], missing: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {program} ({e}): {missing}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Reads a small text file of the project, naming it on failure.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 1 << 20 {
        bail!("{} is larger than 1 MiB", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Builds the plugin project in `dir` into a component, writes its manifest
/// into it, and returns (the component's path, the manifest).
pub fn build_plugin(dir: &Path) -> anyhow::Result<(PathBuf, Manifest)> {
    let dir = &std::fs::canonicalize(dir)
        .with_context(|| format!("no plugin project at {}", dir.display()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let file: ManifestFile = if manifest_path.is_file() {
        toml::from_str(&read_text(&manifest_path)?)
            .map_err(|e| anyhow::anyhow!("{}: {}", manifest_path.display(), e.message()))?
    } else {
        eprintln!(
            "note: no {MANIFEST_FILE} in {}: the manifest says nothing about the publisher or the grants the plugin asks for",
            dir.display()
        );
        ManifestFile::default()
    };
    let (wasm, name, version) = if dir.join("Cargo.toml").is_file() {
        build_rust(dir)?
    } else if dir.join("package.json").is_file() {
        build_js(dir)?
    } else if dir.join("app.py").is_file() {
        let name = file.name.clone().unwrap_or_default();
        let out = format!("{}.wasm", name.replace('-', "_"));
        if name.is_empty() {
            bail!(
                "{}: `name` is required for a Python plugin",
                manifest_path.display()
            );
        }
        run(
            dir,
            "componentize-py",
            &[
                "-d",
                "wit",
                "-w",
                "plugin",
                "componentize",
                "app",
                "-o",
                &out,
            ],
            "install it with `pip install componentize-py==0.25.1`",
        )?;
        (dir.join(out), name, String::new())
    } else {
        bail!(
            "{}: no Cargo.toml, package.json or app.py: not a plugin project (create one with `izhub plugin new`)",
            dir.display()
        );
    };
    let mut m = Manifest::new(
        file.name.as_deref().unwrap_or(&name),
        file.version.as_deref().unwrap_or(&version),
    );
    // The contract the project was really built against: its own copy.
    let contract = dir.join("wit/plugin.wit");
    if contract.is_file() {
        m.wit = read_text(&contract)?
            .lines()
            .find_map(|l| l.trim().strip_prefix("package izhub:plugin@"))
            .and_then(|v| v.strip_suffix(';'))
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no `package izhub:plugin@VERSION;` line",
                    contract.display()
                )
            })?;
    }
    m.publisher = file.publisher;
    m.description = file.description;
    m.grants = file.grants;
    m.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let bytes = read_component(&wasm)?;
    let with = m
        .write_into(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    write_atomically(&wasm, &with)?;
    Ok((wasm, m))
}

/// `cargo build --release --target wasm32-wasip2`: (component, name, version).
fn build_rust(dir: &Path) -> anyhow::Result<(PathBuf, String, String)> {
    let cargo_toml = dir.join("Cargo.toml");
    let table: toml::Table = toml::from_str(&read_text(&cargo_toml)?)
        .map_err(|e| anyhow::anyhow!("{}: {}", cargo_toml.display(), e.message()))?;
    let field = |key: &str| {
        table
            .get("package")
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("{}: no package.{key}", cargo_toml.display()))
    };
    let (name, version) = (field("name")?, field("version")?);
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&cargo_toml)
        // Cargo reads `.cargo/config.toml` from where it runs: the crate's own.
        .current_dir(dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("the build did not produce {}", wasm.display());
    }
    Ok((wasm, name, version))
}

/// `npm install` (once) and `node build.mjs`: (component, name, version).
fn build_js(dir: &Path) -> anyhow::Result<(PathBuf, String, String)> {
    let package = dir.join("package.json");
    let json: serde_json::Value = serde_json::from_str(&read_text(&package)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", package.display()))?;
    let field = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (name, version) = (field("name"), field("version"));
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        let install: &[&str] = if dir.join("package-lock.json").is_file() {
            &["ci", "--prefer-offline", "--no-audit", "--no-fund"]
        } else {
            &["install", "--prefer-offline", "--no-audit", "--no-fund"]
        };
        run(dir, "npm", install, "install Node.js and npm")?;
    }
    let out = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let out_text = out.display().to_string();
    run(dir, "node", &["build.mjs", &out_text], "install Node.js")?;
    Ok((out, name, version))
}

/// Reads a component file, at most [`manifest::MAX_COMPONENT_BYTES`].
pub fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(manifest::MAX_COMPONENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > manifest::MAX_COMPONENT_BYTES {
        bail!(
            "{}: larger than {} bytes",
            path.display(),
            manifest::MAX_COMPONENT_BYTES
        );
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes` at once: a running engine polling the file
/// never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// What `izhub plugin inspect` found.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub file: String,
    pub size: usize,
    pub sha256: String,
    pub manifest: Option<Manifest>,
    /// Why this engine would refuse its WIT version, if it would.
    pub wit_problem: Option<String>,
    /// `valid`, `unsigned` or `invalid`.
    pub signature: &'static str,
    /// The key that signed it (when valid).
    pub signer: Option<String>,
    /// Why the signature does not hold (when invalid).
    pub signature_problem: Option<String>,
}

impl Inspection {
    /// Whether an engine would refuse it whatever its configuration.
    pub fn refused(&self) -> bool {
        self.wit_problem.is_some() || self.signature == "invalid"
    }
}

/// Reads a component's manifest and signature.
pub fn inspect(path: &Path) -> anyhow::Result<Inspection> {
    use sha2::Digest as _;
    let bytes = read_component(path)?;
    let manifest =
        Manifest::of(&bytes).map_err(|e| anyhow::anyhow!("{}: the file {e}", path.display()))?;
    let wit_problem = manifest
        .as_ref()
        .and_then(|m| manifest::wit_compatible(&m.wit).err());
    let (signature, signer, signature_problem) = match signature::signer(&bytes) {
        Ok(key) => ("valid", Some(key.to_string()), None),
        Err(signature::SignatureError::Unsigned) => ("unsigned", None, None),
        Err(e) => ("invalid", None, Some(e.to_string())),
    };
    Ok(Inspection {
        file: path.display().to_string(),
        size: bytes.len(),
        sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
        manifest,
        wit_problem,
        signature,
        signer,
        signature_problem,
    })
}

/// The grants a manifest asks for, in the configuration's words.
pub fn asks_text(a: &Asks) -> String {
    let mut parts = Vec::new();
    if a.log {
        parts.push("log".to_string());
    }
    if !a.config.is_empty() {
        parts.push(format!("config [{}]", a.config.join(", ")));
    }
    parts.extend(a.lookup.iter().map(|t| format!("lookup:{t}")));
    if a.route_to {
        parts.push("route-to".to_string());
    }
    parts.extend(a.link.iter().map(|f| format!("link:wasi:{f}")));
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "file:        {}", self.file)?;
        writeln!(f, "size:        {} bytes", self.size)?;
        writeln!(f, "sha256:      {}", self.sha256)?;
        match &self.manifest {
            None => writeln!(f, "manifest:    none (not built with `izhub plugin build`)")?,
            Some(m) => {
                writeln!(f, "name:        {}", m.name)?;
                writeln!(f, "version:     {}", m.version)?;
                writeln!(f, "publisher:   {}", m.publisher)?;
                writeln!(f, "description: {}", m.description)?;
                match &self.wit_problem {
                    None => writeln!(
                        f,
                        "wit:         {} (this engine implements {}: compatible)",
                        m.wit,
                        manifest::WIT_VERSION
                    )?,
                    Some(why) => writeln!(f, "wit:         {} (REFUSED: {why})", m.wit)?,
                }
                writeln!(f, "asks for:    {}", asks_text(&m.grants))?;
            }
        }
        match (self.signature, &self.signer, &self.signature_problem) {
            ("valid", Some(key), _) => writeln!(f, "signature:   valid, by {key}"),
            ("unsigned", _, _) => writeln!(f, "signature:   none"),
            (_, _, problem) => writeln!(
                f,
                "signature:   INVALID: the file {}",
                problem.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Writes a new key pair: `OUT.key` (PKCS#8 PEM, readable by its owner
/// only) and `OUT.pub` (`ed25519:<hex>`). Refuses to overwrite either.
pub fn keygen(out: &Path) -> anyhow::Result<(PathBuf, PathBuf, signature::PublicKey)> {
    use std::io::Write as _;
    let key_path = PathBuf::from(format!("{}.key", out.display()));
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} already exists; not overwriting a key", p.display());
        }
    }
    if let Some(parent) = key_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let (pem, key) = SigningKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&key_path)
        .with_context(|| format!("cannot create {}", key_path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&pub_path, format!("{}\n", key.public()))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok((key_path, pub_path, key.public()))
}

/// Reads a signing key file (bounded); warns when others may read it.
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > signature::MAX_KEY_FILE {
        bail!("{}: larger than a key file can be", path.display());
    }
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        eprintln!(
            "warning: {} can be read by other users; `chmod 600` it",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pem(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Signs the component at `wasm` with the key at `key`, writing `out`
/// (default: in place).
pub fn sign(
    key: &Path,
    wasm: &Path,
    out: Option<&Path>,
) -> anyhow::Result<(PathBuf, signature::PublicKey)> {
    let key = read_key(key)?;
    let bytes = read_component(wasm)?;
    let signed = signature::sign(&bytes, &key)
        .map_err(|e| anyhow::anyhow!("{}: the file {e}", wasm.display()))?;
    let out = out.unwrap_or(wasm).to_path_buf();
    write_atomically(&out, &signed)?;
    Ok((out, key.public()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_embedded_sdk_stands_alone() {
        assert!(embedded::SDK_FILES.iter().any(|(p, _)| *p == "src/lib.rs"));
        assert!(embedded::WIT_FILES.iter().any(|(p, _)| *p == "plugin.wit"));
        assert!(!embedded::SDK_MANIFEST.contains("workspace"));
        assert!(!embedded::HL7_MANIFEST.contains("workspace"));
        assert!(embedded::HL7_FILES.iter().any(|(p, _)| *p == "src/lib.rs"));
        assert!(
            embedded::SDK_MANIFEST.contains("izhub-hl7 = { path = \"../izhub-hl7\" }"),
            "{}",
            embedded::SDK_MANIFEST
        );
        assert_eq!(sdk_version(), env!("CARGO_PKG_VERSION"));
        // The SDK finds the WIT at ../../wit: vendor/izhub-plugin → wit/.
        let lib = embedded::SDK_FILES
            .iter()
            .find(|(p, _)| *p == "src/lib.rs")
            .unwrap()
            .1;
        assert!(lib.contains("path: \"../../wit\""));
    }

    #[test]
    fn new_projects_name_nothing_outside_themselves() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let name = format!("p-{lang:?}").to_lowercase();
            let made = new_plugin(&name, dir.path(), lang, None).unwrap();
            assert!(made.join("wit/plugin.wit").is_file());
            assert!(made.join(MANIFEST_FILE).is_file());
            let file: ManifestFile =
                toml::from_str(&std::fs::read_to_string(made.join(MANIFEST_FILE)).unwrap())
                    .unwrap();
            assert_eq!(file.name.is_some(), lang == Lang::Python);
        }
        let cargo = std::fs::read_to_string(dir.path().join("p-rust/Cargo.toml")).unwrap();
        assert!(cargo.contains("path = \"vendor/izhub-plugin\""), "{cargo}");
        assert!(!cargo.contains(env!("CARGO_MANIFEST_DIR")), "{cargo}");
        assert!(new_plugin("p-rust", dir.path(), Lang::Rust, None).is_err());
        assert!(new_plugin("Bad Name", dir.path(), Lang::Rust, None).is_err());
    }
}
