//! Who is sending: the identity a transport proved for a connection (a
//! client certificate, a SOAP user) and the sending facilities (MSH-4.1) it
//! may send for. The pipeline refuses a message whose MSH-4.1 is not among
//! them; a connection without a proven identity is bound by the listener's
//! `allowed_senders` only.

use std::collections::BTreeSet;

/// A proven sender identity and what it may send for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// How the peer was identified, for logs and ACK text: `certificate
    /// 'CN=CLINIC-A'`, `SOAP user 'ehr1'`. Never holds PHI.
    pub name: String,
    /// Sending facilities (MSH-4.1) this peer may send for.
    pub facilities: BTreeSet<String>,
}

impl Peer {
    /// A peer that may send for exactly one facility.
    pub fn single(name: impl Into<String>, facility: impl Into<String>) -> Self {
        Peer {
            name: name.into(),
            facilities: BTreeSet::from([facility.into()]),
        }
    }

    /// Whether this peer may send for `facility` (MSH-4.1).
    pub fn may_send_for(&self, facility: &str) -> bool {
        self.facilities.contains(facility)
    }
}
