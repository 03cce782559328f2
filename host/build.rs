//! Embeds the operator console (`console/dist`, built by `./dev.sh build`
//! with npm from its lockfile) into the binary. Without a build, a page
//! saying how to make one is embedded instead, so `cargo build` alone works.
//!
//! Also embeds the plugin kit: the SDK's sources (its manifest with the
//! workspace's settings written out), the WIT contract and the lockfile, so
//! that `izhub plugin new` needs nothing but the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The commit `izhub --version` names: `IZHUB_COMMIT` when the build sets
/// it (an image build from an exported tree), else git's, else `unknown`.
fn commit(manifest: &Path) -> String {
    println!("cargo:rerun-if-env-changed=IZHUB_COMMIT");
    if let Some(c) = std::env::var("IZHUB_COMMIT").ok().filter(|c| !c.is_empty()) {
        return c;
    }
    let git = manifest.join("../.git");
    for watched in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={}", git.join(watched).display());
    }
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed={}", git.join(reference).display());
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rustc-env=IZHUB_COMMIT={}", commit(&manifest));
    let dist = manifest.join("../console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    for (_, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let mut out = String::from(
        "/// The console's files: path under /console/, content type, bytes.\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
    if files.iter().any(|(name, _)| name == "index.html") {
        for (name, path) in &files {
            let _ = writeln!(
                out,
                "    ({name:?}, {:?}, include_bytes!({:?})),",
                content_type(name),
                path.display().to_string()
            );
        }
    } else {
        out.push_str("    (\"index.html\", \"text/html; charset=utf-8\", b\"<!doctype html><title>izhub console</title><p>The console is not built into this binary: run <code>./dev.sh build</code> (it builds <code>console/</code> with npm from its lockfile) and build the engine again.</p>\"),\n");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("console_assets.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
    }
    if let Err(e) = embed_kit(&manifest) {
        eprintln!("cannot embed the plugin kit: {e}");
        std::process::exit(1);
    }
}

/// Writes `plugin_kit.rs`: the SDK's files, its resolved manifest, the WIT
/// files and the workspace lockfile.
fn embed_kit(manifest: &Path) -> Result<(), String> {
    let root = manifest.join("..");
    let sdk = root.join("plugins/sdk");
    let hl7 = root.join("hl7");
    let wit = root.join("wit");
    let mut sdk_files = Vec::new();
    collect(&sdk.join("src"), &sdk.join("src"), &mut sdk_files);
    let mut hl7_files = Vec::new();
    collect(&hl7.join("src"), &hl7.join("src"), &mut hl7_files);
    hl7_files.retain(|(name, _)| name.ends_with(".rs"));
    hl7_files.sort();
    let mut wit_files = Vec::new();
    collect(&wit, &wit, &mut wit_files);
    sdk_files.retain(|(name, _)| name.ends_with(".rs"));
    wit_files.retain(|(name, _)| name.ends_with(".wit"));
    sdk_files.sort();
    wit_files.sort();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let workspace = read(&root.join("Cargo.toml"))?;
    let sdk_manifest =
        resolve_manifest("plugins/sdk", &read(&sdk.join("Cargo.toml"))?, &workspace)?;
    let hl7_manifest = resolve_manifest("hl7", &read(&hl7.join("Cargo.toml"))?, &workspace)?;
    for p in [
        sdk.join("Cargo.toml"),
        hl7.join("Cargo.toml"),
        hl7.join("src"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        sdk.join("src"),
        wit.clone(),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut out = String::from(
        "/// The SDK's source files: path under the crate, text.\npub static SDK_FILES: &[(&str, &str)] = &[\n",
    );
    include_all(&mut out, "src/", &sdk_files);
    out.push_str("];\n/// The shared HL7 crate's source files (the SDK depends on it).\npub static HL7_FILES: &[(&str, &str)] = &[\n");
    include_all(&mut out, "src/", &hl7_files);
    out.push_str("];\n/// The WIT files: path under `wit/`, text.\npub static WIT_FILES: &[(&str, &str)] = &[\n");
    include_all(&mut out, "", &wit_files);
    let lock = root
        .join("Cargo.lock")
        .canonicalize()
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    let _ = writeln!(
        out,
        "];\n/// The SDK's `Cargo.toml`, standing alone.\npub static SDK_MANIFEST: &str = {sdk_manifest:?};\n/// The shared HL7 crate's `Cargo.toml`, standing alone.\npub static HL7_MANIFEST: &str = {hl7_manifest:?};\n/// The workspace's lockfile: the dependency versions the SDK was tested with.\npub static LOCKFILE: &str = include_str!({:?});",
        lock.display().to_string()
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let dest = out_dir.join("plugin_kit.rs");
    std::fs::write(&dest, out).map_err(|e| format!("{}: {e}", dest.display()))
}

/// One `(name, text)` entry per file, its name under `prefix`, its text
/// included at compile time (and watched for changes).
fn include_all(out: &mut String, prefix: &str, files: &[(String, PathBuf)]) {
    for (name, path) in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            format!("{prefix}{name}"),
            path.display().to_string()
        );
    }
}

/// A vendored crate's manifest (`crate_dir` in the workspace) with every
/// `workspace = true` replaced by the workspace's value, and the workspace
/// lints left out, so that it builds outside the workspace. A dependency on
/// another of the workspace's crates points at its vendored copy beside it
/// (`../NAME`).
fn resolve_manifest(crate_dir: &str, sdk: &str, workspace: &str) -> Result<String, String> {
    // `[workspace.package]` and `[workspace.dependencies]` entries, one per line.
    let mut inherited = std::collections::HashMap::new();
    let mut section = "";
    for line in workspace.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
            continue;
        }
        if (section == "[workspace.package]" || section == "[workspace.dependencies]")
            && let Some((k, v)) = t.split_once('=')
        {
            inherited.insert(
                (section == "[workspace.package]", k.trim().to_string()),
                v.trim().to_string(),
            );
        }
    }
    let mut out = String::new();
    let mut section = String::new();
    for line in sdk.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        if section == "[lints]" {
            continue;
        }
        if let Some(key) = t.strip_suffix(".workspace = true") {
            let package = section == "[package]";
            let value = inherited.get(&(package, key.to_string())).ok_or_else(|| {
                format!("{crate_dir}/Cargo.toml: `{key}` is not set in the workspace")
            })?;
            if !package && value.contains("path =") {
                let _ = writeln!(out, "{key} = {{ path = \"../{key}\" }}");
            } else {
                let _ = writeln!(out, "{key} = {value}");
            }
            continue;
        }
        if t.contains("workspace") {
            return Err(format!("{crate_dir}/Cargo.toml: cannot write out `{t}`"));
        }
        let _ = writeln!(out, "{line}");
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel.to_string_lossy().replace('\\', "/");
            if let Ok(abs) = path.canonicalize() {
                out.push((name, abs));
            }
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "text/plain; charset=utf-8",
    }
}
