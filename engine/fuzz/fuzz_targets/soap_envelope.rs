//! Any bytes as a SOAP request or answer: parsing never panics, and a
//! submission survives a round trip through our own envelope.
#![no_main]

use izhub_engine::soap::{Call, parse_request, parse_response, submit_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let _ = parse_response(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // XML 1.0 cannot carry most control characters; the HL7 we send has none but CR.
        if text.chars().all(|c| c == '\r' || !c.is_control()) {
            let req = submit_request("u", "p", "f", text);
            match parse_request(req.as_bytes()) {
                Ok(Call::Submit { hl7, .. }) => assert_eq!(hl7, text),
                other => panic!("round trip failed: {other:?}"),
            }
        }
    }
});
