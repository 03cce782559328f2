//! validate-iz's integration tests, in one binary: the corpus, every
//! detection, the profiles, and (ignored by default) the timing run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that panics has failed

mod common;

mod corpus;
mod detections;
mod profiles;
mod speed;
