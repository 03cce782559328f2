//! izhub's core: HL7 v2 messages arrive over MLLP (or SOAP), run through a
//! route of sandboxed WebAssembly plugins, are delivered to the right state
//! IIS, and the IIS's answer goes back to the sender.
//!
//! Layers, from the wire inwards: [`mllp`] frames bytes, [`listener`] and
//! [`soap`] serve connections, [`pipeline`] routes and answers, [`plugin`]
//! runs plugins, [`delivery`] talks to the IIS, [`store`] keeps the journal,
//! and [`engine`] assembles them, the one way every command does.
//! Nothing below calls up, and nothing here knows its wings (the console,
//! bulk queries, the cluster's peers, the command line): they live in other
//! crates and hear from the core through the traits it defines
//! ([`pipeline::observe::Observer`], [`delivery::QueueWatch`]).

pub mod admission;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod hl7;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod mllp;
pub mod pipeline;
pub mod plugin;
pub mod report;
pub mod soap;
pub mod store;
pub mod tls;
pub mod topology;

/// The core's modules from the leaves up: a module may use only modules of
/// a lower rank, so there is no cycle and nothing calls up. The test below
/// holds every `crate::` path in the sources to it (the crate graph keeps
/// the wings out).
#[cfg(test)]
const LAYERS: &[(&str, u8)] = &[
    ("hl7", 0),
    ("metrics", 0),
    ("admission", 0),
    ("identity", 0),
    ("tls", 1),
    ("mllp", 2),
    ("soap", 3),
    ("config", 4),
    ("store", 5),
    ("plugin", 5),
    ("delivery", 6),
    ("topology", 7),
    ("pipeline", 8),
    ("listener", 9),
    ("report", 9),
    ("engine", 10),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::LAYERS;
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn modules_use_only_the_layers_below_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rank = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, r)| *r);
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for file in &files {
            let rel = file.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs");
            if module == "lib" {
                continue;
            }
            let own = rank(module).unwrap_or_else(|| panic!("{module} is not in LAYERS"));
            let text = std::fs::read_to_string(file).unwrap();
            // Only the code, not its tests.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let used: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used == module {
                    continue;
                }
                match rank(&used) {
                    Some(r) if r < own => {}
                    _ => wrong.push(format!("{} uses crate::{used}", rel.display())),
                }
            }
        }
        wrong.sort();
        wrong.dedup();
        assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
    }
}
