//! Any bytes as an IIS's answer: classification never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = izhub_engine::hl7::classify_answer(&text);
    let _ = izhub_engine::hl7::read_msa(&text);
});
