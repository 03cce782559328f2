//! izhub: an immunization interface engine. HL7 v2 messages arrive over MLLP,
//! run through a route of sandboxed WebAssembly plugins, are delivered to the
//! right state IIS, and the IIS's answer goes back to the sender.
//!
//! The core (listeners, pipeline, plugins, delivery, journal) is the
//! `izhub-engine` crate, re-exported here under its own module names. This
//! crate holds its wings: the console and admin API ([`admin`], [`flow`]),
//! bulk queries ([`bulk`]), the command line ([`cli`], [`serve`], [`tools`])
//! and the IIS simulator ([`sim`]). Wings call the core; the core calls them
//! only through the traits it defines.

pub use izhub_engine::{
    admission, config, delivery, hl7, identity, listener, metrics, mllp, pipeline, plugin, report,
    soap, store, tls, topology,
};

pub mod admin;
pub mod bulk;
pub mod cli;
pub mod flow;
pub mod http;
pub mod serve;
pub mod sim;
pub mod tools;
pub mod version;
