//! izhub: an immunization interface engine. HL7 v2 messages arrive over MLLP,
//! run through a route of sandboxed WebAssembly plugins, are delivered to the
//! right state IIS, and the IIS's answer goes back to the sender.
//!
//! Layers, from the wire inwards: [`mllp`] frames bytes, [`listener`] serves
//! connections, [`pipeline`] routes and answers, [`plugin`] runs plugins,
//! [`delivery`] talks to the IIS. Nothing below calls up.

pub mod admin;
pub mod admission;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod flow;
pub mod hl7;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod mllp;
pub mod pipeline;
pub mod plugin;
pub mod report;
pub mod serve;
pub mod sim;
pub mod soap;
pub mod store;
pub mod tls;
pub mod tools;
pub mod topology;
