//! The plugin contract's version, read from `wit/plugin.wit`: every
//! component's manifest is checked against it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let wit = manifest.join("../wit/plugin.wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    if let Err(e) = write_version(&wit) {
        eprintln!("cannot read the plugin contract's version: {e}");
        std::process::exit(1);
    }
}

fn write_version(wit: &std::path::Path) -> Result<(), String> {
    let contract = std::fs::read_to_string(wit).map_err(|e| format!("{}: {e}", wit.display()))?;
    let version = contract
        .lines()
        .find_map(|l| l.trim().strip_prefix("package izhub:plugin@"))
        .and_then(|v| v.strip_suffix(';'))
        .ok_or("wit/plugin.wit: no `package izhub:plugin@VERSION;` line")?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let dest = out_dir.join("wit_version.rs");
    std::fs::write(&dest, format!("{version:?}")).map_err(|e| format!("{}: {e}", dest.display()))
}
