//! MLLP: the framing HL7 v2 uses over TCP (`<VT> message <FS><CR>`), and a
//! small client for sending a message and reading its answer.

mod client;
mod codec;

pub use client::{Io, MllpClient, MllpClientError};
pub use codec::{DEFAULT_MAX_FRAME, MllpCodec, MllpFrame};
