//! `izhub codes status` and `izhub codes update`: what code sets are loaded,
//! and installing newer CDC/AIRA files without ever leaving a broken set.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Prints each table's sources, date and count.
pub fn status(dir: &Path) -> anyhow::Result<()> {
    let sets = izhub_codesets::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{:<22} {:>7}  {:<11} source", "table", "codes", "date");
    for (name, table) in &sets.tables {
        println!(
            "{name:<22} {:>7}  {:<11} {}",
            table.entries.len(),
            table.date,
            table.sources.join(", ")
        );
    }
    Ok(())
}

/// The files `update` knows how to install, by subdirectory.
fn known_files() -> Vec<(&'static str, String)> {
    let mut files: Vec<(&str, String)> = [
        "cvx.xml",
        "mvx.xml",
        "NDC_Unit_sale.txt",
        "NDC_Unit_use.txt",
    ]
    .into_iter()
    .map(|f| ("cdc", f.to_string()))
    .collect();
    files.extend(
        izhub_codesets::AIRA_SETS
            .iter()
            .map(|(f, _)| ("aira", format!("{f}.xml"))),
    );
    files.extend(
        [
            "Vaccination_NDC_Code_Unit-of-Sale.xml",
            "Vaccination_NDC_Code_Unit-of-Use.xml",
        ]
        .map(|f| ("aira", f.to_string())),
    );
    files
}

/// Finds a known file in `from` (flat, or under `cdc/`/`aira/`).
fn find(from: &Path, sub: &str, name: &str) -> Option<PathBuf> {
    [from.join(sub).join(name), from.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Installs newer code-set files from `from` into `dir`. Every new file is
/// checked by loading the whole result in a staging copy first; only then are
/// files renamed into place, so a running engine reloading them never sees a
/// broken set. Returns the number of files installed.
pub fn update(from: &Path, dir: &Path) -> anyhow::Result<usize> {
    let staging = dir.with_file_name(format!(
        ".{}.staging-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    for sub in ["cdc", "aira"] {
        std::fs::create_dir_all(staging.join(sub))?;
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for e in entries.flatten() {
                std::fs::copy(e.path(), staging.join(sub).join(e.file_name()))?;
            }
        }
    }
    let mut installed = Vec::new();
    for (sub, name) in known_files() {
        if let Some(src) = find(from, sub, &name) {
            std::fs::copy(&src, staging.join(sub).join(&name))
                .with_context(|| format!("copying {}", src.display()))?;
            installed.push((sub, name));
        }
    }
    if installed.is_empty() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "{}: no code-set files found (cvx.xml, mvx.xml, NDC_Unit_*.txt, AIRA *.xml)",
            from.display()
        );
    }
    let before = izhub_codesets::load_dir(dir).ok();
    let after = match izhub_codesets::load_dir(&staging) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            bail!("the new files do not load, nothing was installed: {e}");
        }
    };
    for (sub, name) in &installed {
        std::fs::create_dir_all(dir.join(sub))?;
        let tmp = dir.join(sub).join(format!(".{name}.new"));
        std::fs::copy(staging.join(sub).join(name), &tmp)?;
        std::fs::rename(&tmp, dir.join(sub).join(name))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    for (table, t) in &after.tables {
        let old = before
            .as_ref()
            .and_then(|b| b.tables.get(table))
            .map_or(0, |t| t.entries.len());
        if old != t.entries.len() {
            println!("{table}: {old} → {} codes", t.entries.len());
        }
    }
    Ok(installed.len())
}
