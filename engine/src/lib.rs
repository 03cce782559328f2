//! izhub's core: HL7 v2 messages arrive over MLLP (or SOAP), run through a
//! route of sandboxed WebAssembly plugins, are delivered to the right state
//! IIS, and the IIS's answer goes back to the sender.
//!
//! Layers, from the wire inwards: [`mllp`] frames bytes, [`listener`] and
//! [`soap`] serve connections, [`pipeline`] routes and answers, [`plugin`]
//! runs plugins, [`delivery`] talks to the IIS, [`store`] keeps the journal.
//! Nothing below calls up, and nothing here knows its wings (the console,
//! bulk queries, the cluster's peers, the command line): they live in other
//! crates and hear from the core through the traits it defines
//! ([`pipeline::observe::Observer`], [`delivery::QueueWatch`]).

pub mod admission;
pub mod config;
pub mod delivery;
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
