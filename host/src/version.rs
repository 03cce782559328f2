//! What `izhub --version` says: the release and the commit it was built
//! from (see `CHANGELOG.md`).

/// `0.2.0 (commit 0123456789ab)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("IZHUB_COMMIT"),
    ")"
);

/// [`LONG`], as a function for callers that want one.
pub fn long() -> &'static str {
    LONG
}
