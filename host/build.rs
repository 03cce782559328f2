//! Embeds the operator console (`console/dist`, built by `./dev.sh build`
//! with npm from its lockfile) into the binary. Without a build, a page
//! saying how to make one is embedded instead, so `cargo build` alone works.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
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
