//! What a component says about itself: the manifest `izhub plugin build`
//! writes into it as a custom section at the top level of the component
//! (name, version, publisher, the WIT version it was built for, the grants
//! it asks for), and the walk over a component's top-level sections that
//! finds it and the signature.
//!
//! A component is input from a partner: its size, its sections and every
//! manifest field are bounded and checked before anything is believed.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use wasm_encoder::ComponentSection as _;

use crate::config::plugin_id::parse_core;
pub use crate::config::plugin_id::{check_name, check_version};

/// The custom section holding the manifest (JSON).
pub const MANIFEST_SECTION: &str = "izhub-manifest";
/// The custom section holding the signature (JSON); always the last section.
pub const SIGNATURE_SECTION: &str = "izhub-signature";
/// The version of the `izhub:plugin` WIT package this engine implements.
pub const WIT_VERSION: &str = include!(concat!(env!("OUT_DIR"), "/wit_version.rs"));
/// Largest component file read (the Python runtime is ~18 MB).
pub const MAX_COMPONENT_BYTES: usize = 256 << 20;
/// Largest manifest section.
const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// The manifest format this engine writes and reads.
const FORMAT: u32 = 1;
/// Most entries in one list of asked grants.
const MAX_LIST: usize = 256;

/// Why a component's sections or manifest cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("is {size} bytes, more than the {MAX_COMPONENT_BYTES} a component may have")]
    TooLarge { size: usize },
    #[error("is not a WebAssembly component{0}")]
    NotComponent(&'static str),
    #[error("is not a well-formed component: {0}")]
    Malformed(String),
    #[error("has {count} '{section}' sections; a component carries at most one")]
    Repeated { section: &'static str, count: usize },
    #[error("has a signature that is not its last section: bytes were added after it was signed")]
    SignatureNotLast,
    #[error("has an unreadable manifest: {0}")]
    Manifest(String),
}

/// One top-level section of a component.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    /// The whole section, header included.
    pub range: Range<usize>,
    /// For a custom section: its name and its data.
    pub custom: Option<(&'a str, &'a [u8])>,
}

/// The top-level sections of a component, in order (nested modules and
/// components are skipped whole: a manifest inside them is not ours).
pub fn sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, ComponentError> {
    use wasmparser::{Chunk, Encoding, Parser, Payload};
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(ComponentError::TooLarge { size: bytes.len() });
    }
    let malformed = |e: wasmparser::BinaryReaderError| ComponentError::Malformed(e.to_string());
    let cut = || ComponentError::Malformed("a section runs past the end of the file".into());
    let mut parser = Parser::new(0);
    let mut data = bytes;
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let start = bytes.len() - data.len();
        let (consumed, payload) = match parser.parse(data, true).map_err(malformed)? {
            Chunk::Parsed { consumed, payload } => (consumed, payload),
            Chunk::NeedMoreData(_) => return Err(cut()),
        };
        data = data.get(consumed..).ok_or_else(cut)?;
        if first {
            first = false;
            match payload {
                Payload::Version {
                    encoding: Encoding::Component,
                    ..
                } => continue,
                Payload::Version { .. } => {
                    return Err(ComponentError::NotComponent(
                        " (it is a core module: build it for wasm32-wasip2, or make it a component)",
                    ));
                }
                _ => return Err(ComponentError::NotComponent("")),
            }
        }
        let mut custom = None;
        match payload {
            Payload::End(_) => break,
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                data = data.get(unchecked_range.len()..).ok_or_else(cut)?;
            }
            Payload::CustomSection(c) => custom = Some((c.name(), c.data())),
            _ => {}
        }
        out.push(Section {
            range: start..bytes.len() - data.len(),
            custom,
        });
    }
    Ok(out)
}

/// The data of the one custom section named `name`, if any.
pub fn custom_section<'a>(
    sections: &[Section<'a>],
    name: &'static str,
) -> Result<Option<&'a [u8]>, ComponentError> {
    let mut found = sections
        .iter()
        .filter_map(|s| s.custom.filter(|(n, _)| *n == name).map(|(_, d)| d));
    let first = found.next();
    let more = found.count();
    if more > 0 {
        return Err(ComponentError::Repeated {
            section: name,
            count: more + 1,
        });
    }
    Ok(first)
}

/// `bytes` without the custom sections named in `drop`, then `append` (name,
/// data) as custom sections at the end.
pub fn rewrite(
    bytes: &[u8],
    drop: &[&str],
    append: &[(&str, &[u8])],
) -> Result<Vec<u8>, ComponentError> {
    let sections = sections(bytes)?;
    let header = sections.first().map_or(bytes.len(), |s| s.range.start);
    let mut out = Vec::with_capacity(bytes.len() + 1024);
    out.extend_from_slice(bytes.get(..header).unwrap_or_default());
    for s in &sections {
        if s.custom.is_some_and(|(n, _)| drop.contains(&n)) {
            continue;
        }
        out.extend_from_slice(bytes.get(s.range.clone()).unwrap_or_default());
    }
    for (name, data) in append {
        wasm_encoder::CustomSection {
            name: (*name).into(),
            data: (*data).into(),
        }
        .append_to_component(&mut out);
    }
    Ok(out)
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format (1).
    pub format: u32,
    /// The plugin's name: lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// Its version, `MAJOR.MINOR.PATCH` with an optional `-pre` or `+build`.
    pub version: String,
    /// Who made it (free text; the signature says who vouches for it).
    #[serde(default)]
    pub publisher: String,
    /// What it does, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// The `izhub:plugin` WIT version it was built against.
    pub wit: String,
    /// The grants it asks its route for.
    #[serde(default)]
    pub grants: Asks,
}

/// The grants a plugin asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asks {
    /// It logs through the host.
    #[serde(default)]
    pub log: bool,
    /// The config keys it reads; a key may end in `*` (`states.*`).
    #[serde(default)]
    pub config: Vec<String>,
    /// The lookup tables it reads.
    #[serde(default)]
    pub lookup: Vec<String>,
    /// It chooses destinations with `route-to`.
    #[serde(default)]
    pub route_to: bool,
    /// WASI interface families its language runtime links (`filesystem`,
    /// `sockets`, `clocks`).
    #[serde(default)]
    pub link: Vec<String>,
}

impl Manifest {
    /// A manifest for the current WIT version.
    pub fn new(name: &str, version: &str) -> Self {
        Manifest {
            format: FORMAT,
            name: name.to_string(),
            version: version.to_string(),
            publisher: String::new(),
            description: String::new(),
            wit: WIT_VERSION.to_string(),
            grants: Asks::default(),
        }
    }

    /// Reads and checks a manifest section's JSON.
    pub fn parse(data: &[u8]) -> Result<Self, ComponentError> {
        if data.len() > MAX_MANIFEST_BYTES {
            return Err(ComponentError::Manifest(format!(
                "{} bytes, more than {MAX_MANIFEST_BYTES}",
                data.len()
            )));
        }
        let m: Manifest =
            serde_json::from_slice(data).map_err(|e| ComponentError::Manifest(e.to_string()))?;
        m.validate().map_err(ComponentError::Manifest)?;
        Ok(m)
    }

    /// The manifest as written into the component.
    pub fn to_json(&self) -> Result<Vec<u8>, ComponentError> {
        self.validate().map_err(ComponentError::Manifest)?;
        serde_json::to_vec(self).map_err(|e| ComponentError::Manifest(e.to_string()))
    }

    /// The component's manifest, if it has one.
    pub fn of(bytes: &[u8]) -> Result<Option<Self>, ComponentError> {
        let sections = sections(bytes)?;
        custom_section(&sections, MANIFEST_SECTION)?
            .map(Manifest::parse)
            .transpose()
    }

    /// `bytes` with this manifest in place of any earlier one. A signature
    /// no longer holds for the changed bytes, so it is dropped too.
    pub fn write_into(&self, bytes: &[u8]) -> Result<Vec<u8>, ComponentError> {
        let json = self.to_json()?;
        rewrite(
            bytes,
            &[MANIFEST_SECTION, SIGNATURE_SECTION],
            &[(MANIFEST_SECTION, &json)],
        )
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not known to this engine (it reads {FORMAT})",
                self.format
            ));
        }
        check_name(&self.name).map_err(|e| format!("name: {e}"))?;
        check_version(&self.version).map_err(|e| format!("version: {e}"))?;
        check_version(&self.wit).map_err(|e| format!("wit: {e}"))?;
        check_text(&self.publisher, 128).map_err(|e| format!("publisher: {e}"))?;
        check_text(&self.description, 1024).map_err(|e| format!("description: {e}"))?;
        let g = &self.grants;
        for (field, list) in [("config", &g.config), ("lookup", &g.lookup)] {
            if list.len() > MAX_LIST {
                return Err(format!("grants.{field}: more than {MAX_LIST} entries"));
            }
            for item in list {
                let key_char =
                    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*');
                if item.is_empty() || item.len() > 128 || !item.chars().all(key_char) {
                    return Err(format!(
                        "grants.{field}: '{}' is not a key (letters, digits, '.', '-', '_', '*'; at most 128)",
                        item.escape_debug()
                    ));
                }
            }
        }
        for family in &g.link {
            if !["filesystem", "sockets", "clocks"].contains(&family.as_str()) {
                return Err(format!(
                    "grants.link: '{}' cannot be linked (filesystem, sockets, clocks)",
                    family.escape_debug()
                ));
            }
        }
        Ok(())
    }
}

/// Free text: no control characters, at most `max` characters.
fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.chars().count() > max {
        return Err(format!("longer than {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("has control characters".into());
    }
    Ok(())
}

/// Whether a component built for WIT version `built` runs on this engine
/// (`WIT_VERSION`): the same major version (for 0.x, the same minor) and not
/// newer than the engine's, as a newer contract may use what this engine
/// lacks. `Err` says why not, for the operator.
pub fn wit_compatible(built: &str) -> Result<(), String> {
    wit_compatible_with(built, WIT_VERSION)
}

fn wit_compatible_with(built: &str, engine: &str) -> Result<(), String> {
    let strip = |v: &str| v.split(['-', '+']).next().and_then(parse_core);
    let (Some(b), Some(e)) = (strip(built), strip(engine)) else {
        return Err(format!(
            "its WIT version '{}' cannot be read",
            built.escape_debug()
        ));
    };
    let track = |v: (u64, u64, u64)| if v.0 == 0 { (0, v.1) } else { (v.0, 0) };
    if track(b) != track(e) || b > e {
        return Err(format!(
            "it was built for the izhub:plugin WIT {built}, and this engine implements {engine}; rebuild it with the SDK of this engine (`izhub plugin new` writes it) or run an engine that implements {built}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The smallest component: the header only.
    const EMPTY: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn a_manifest_round_trips_through_a_component() {
        let mut m = Manifest::new("check-lots", "1.2.0");
        m.publisher = "Example HIE".into();
        m.grants.config = vec!["states.*".into()];
        m.grants.lookup = vec!["facility-state".into()];
        let with = m.write_into(&EMPTY).unwrap();
        assert_eq!(Manifest::of(&with).unwrap(), Some(m.clone()));
        // Writing again replaces it rather than adding a second one.
        let mut m2 = m.clone();
        m2.version = "1.3.0".into();
        let again = m2.write_into(&with).unwrap();
        assert_eq!(Manifest::of(&again).unwrap(), Some(m2));
        assert_eq!(
            sections(&again)
                .unwrap()
                .iter()
                .filter(|s| s.custom.is_some())
                .count(),
            1
        );
    }

    #[test]
    fn bad_components_and_manifests_are_refused() {
        assert!(matches!(
            sections(b"not wasm"),
            Err(ComponentError::Malformed(_))
        ));
        let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert!(matches!(
            sections(&core),
            Err(ComponentError::NotComponent(_))
        ));
        let mut cut = Manifest::new("a", "1.0.0").write_into(&EMPTY).unwrap();
        cut.pop();
        assert!(sections(&cut).is_err());
        for bad in [
            r#"{"format":1,"name":"A","version":"1.0.0","wit":"0.1.0"}"#,
            r#"{"format":1,"name":"a","version":"1.0","wit":"0.1.0"}"#,
            r#"{"format":2,"name":"a","version":"1.0.0","wit":"0.1.0"}"#,
            r#"{"format":1,"name":"a","version":"1.0.0","wit":"0.1.0","extra":1}"#,
            r#"{"format":1,"name":"a","version":"1.0.0","wit":"0.1.0","grants":{"link":["network"]}}"#,
            r#"{"format":1,"name":"a","version":"1.0.0","wit":"0.1.0","grants":{"config":["a b"]}}"#,
            r#"{"format":1,"name":"a","version":"1.0.0","wit":"0.1.0","publisher":"x\u0007"}"#,
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let twice = rewrite(
            &EMPTY,
            &[],
            &[(MANIFEST_SECTION, b"{}"), (MANIFEST_SECTION, b"{}")],
        )
        .unwrap();
        assert!(matches!(
            Manifest::of(&twice),
            Err(ComponentError::Repeated { count: 2, .. })
        ));
    }

    #[test]
    fn wit_versions_are_compatible_within_a_track() {
        assert!(wit_compatible_with("0.1.0", "0.1.0").is_ok());
        assert!(wit_compatible_with("0.1.0", "0.1.3").is_ok());
        assert!(wit_compatible_with("0.1.4", "0.1.3").is_err());
        assert!(wit_compatible_with("0.2.0", "0.1.0").is_err());
        assert!(wit_compatible_with("1.0.0", "0.1.0").is_err());
        assert!(wit_compatible_with("1.0.0", "1.4.0").is_ok());
        assert!(wit_compatible_with("2.0.0", "1.4.0").is_err());
        let e = wit_compatible_with("0.2.0", "0.1.0").unwrap_err();
        assert!(e.contains("0.2.0") && e.contains("0.1.0"), "{e}");
        assert!(wit_compatible(WIT_VERSION).is_ok());
    }
}
