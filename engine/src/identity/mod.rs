//! Who is sending: the identity a transport proved for a connection (a
//! client certificate, a SOAP user) and the sending facilities (MSH-4.1) it
//! may send for. The pipeline refuses a message whose MSH-4.1 is not among
//! them, and every message on a connection whose transport required an
//! identity it could not establish; a connection that needs no proven
//! identity is bound by the listener's `allowed_senders` only.

pub mod certificate;

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

/// What a transport established about who sends on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A proven sender: MSH-4.1 must be one of its facilities.
    Proven(Peer),
    /// The transport requires proof of the sender and what it was shown
    /// cannot identify one: every message on the connection is answered AR
    /// naming this reason.
    Refused(Refusal),
}

/// Why a transport that requires a proven sender could not establish one.
/// The text is for the sender's staff and never holds PHI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Mutual TLS without a client certificate (the handshake should
    /// already have failed).
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The client certificate names no sender.
    #[error("the client certificate cannot identify a sender: {0}")]
    Certificate(#[from] certificate::IdentityError),
}
