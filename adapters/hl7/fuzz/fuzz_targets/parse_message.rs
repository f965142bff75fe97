//! `scripts/fuzz parse_message`: any bytes as an HL7 v2 message. Nothing panics; a parsed
//! message re-encodes to bytes that parse to the same message; the views the gateway builds from
//! messages (appointment, lab report, document, ADT) never panic.
#![no_main]

use hl7_v2::views::{AdtMessage, Appointment, LabReport, MedicalDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = hl7_v2::parse(data) {
        // Re-encoding a parsed message must parse and be stable.
        let again = hl7_v2::parse(&msg.to_bytes()).expect("re-encoded message parses");
        assert_eq!(again.encode(), msg.encode());
        let zone = chrono_tz::Asia::Kolkata;
        let _ = Appointment::from_message(&msg, zone);
        let _ = LabReport::from_message(&msg, zone);
        let _ = MedicalDocument::from_message(&msg, zone);
        let _ = AdtMessage::from_message(&msg, zone);
    }
});
