//! `cargo fuzz run parse_resource` (from adapters/fhir/): any bytes must parse or fail, never
//! panic, and the helpers on a parsed resource must not panic either.
#![no_main]

use fhir_r4::{parse_resource, AbdmDocument, Notification, Resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = parse_resource(data) else {
        return;
    };
    let _ = resource.to_json();
    match &resource {
        Resource::Bundle(b) => {
            if let Ok(n) = Notification::from_bundle(b) {
                let _ = n.gap(0);
            }
            let _ = AbdmDocument::from_bundle(b);
        }
        Resource::Patient(p) => {
            let _ = (p.mobile(), p.preferred_language());
        }
        Resource::Appointment(a) => {
            let _ = (a.patient_ref(), a.practitioner_refs(), a.location_ref());
        }
        Resource::DiagnosticReport(d) => {
            let _ = d.pdfs();
        }
        Resource::DocumentReference(d) => {
            let _ = d.pdfs();
        }
        _ => {}
    }
});
