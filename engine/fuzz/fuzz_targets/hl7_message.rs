//! Any bytes as a received message: charset decoding, MSH reading, the
//! structure check, ACK writing and merging never panic, and an ACK is
//! produced for every message whose MSH can be read.
#![no_main]

use izhub_engine::hl7::{self, AckCode, Issue, Msh};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = match hl7::decode(data) {
        Ok((t, _)) => t,
        Err(_) => String::from_utf8_lossy(data).into_owned(),
    };
    let text = hl7::normalize_segments(&text).into_owned();
    let _ = hl7::check_structure(&text);
    let _ = hl7::first_value(&text, "PID", 3);
    if let Ok(msh) = Msh::read(&text) {
        let issue = Issue::error("101").text(text.chars().take(50).collect::<String>()).at(&text.chars().take(12).collect::<String>());
        let ack = hl7::build_ack(&msh, AckCode::AE, &[issue.clone()], "X");
        assert!(ack.starts_with("MSH|^~\\&|"));
        assert!(hl7::read_msa(&ack).is_some());
        let _ = hl7::merge_issues_into_answer(&text, &[issue]);
    }
});
