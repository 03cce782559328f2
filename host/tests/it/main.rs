//! Every integration test of izhub, in one binary: real simulators, a real
//! engine on loopback, real plugins, real PostgreSQL and third-party
//! clients. One binary links the engine once; the modules share
//! [`common`]'s harness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

mod common;

mod author;
mod bulk;
mod bulk_fhir;
mod cli;
mod commit;
mod console_auth;
mod deploy;
mod engine;
mod framing;
mod guests;
mod immunization;
mod journal_contract;
mod kit;
mod layout;
mod pg_cluster;
mod reload;
mod sandbox;
mod soap;
mod tls;
mod untrusted;
mod upgrade;
