//! `scripts/fuzz api_json`: any bytes as the JSON body of every clinic API route that takes one
//! (`POST /v1/messages`, `/v1/appointments`, `PATCH /v1/appointments/{id}`, `/v1/visits`,
//! `/v1/lab-reports` and the other documents, `/v1/broadcasts`, `/v1/templates`, `PUT
//! /v1/patients/{id}`, `PATCH /admin/v1/clinics/{id}`), through what the handler does before
//! the store: deserialise, then the checks that make a domain value.
//!
//! Properties: nothing panics; a refusal is a 4xx problem (a 422 names its field); what is
//! accepted keeps the checks' promises and reads back from JSON unchanged (it is stored as JSON).
#![no_main]

use clinic_gateway::api::fuzzing;
use clinic_gateway::domain::E164;
use clinic_gateway::patients::input::{InputContext, PatientInput};
use clinic_gateway::patients::PatientRecord;
use clinic_gateway_fuzz::{check_problem, round_trip, CLINIC, DAY_MS, NOW_MS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX_PDF: usize = 64 * 1024;

fn patient_ok(p: &clinic_gateway::domain::appointment::Patient) {
    assert_eq!(E164::parse(p.phone.as_str()).ok().as_ref(), Some(&p.phone));
    assert!(p.name.chars().count() <= 100, "{p:?}");
    assert_eq!(&round_trip(p), p);
}

fuzz_target!(|data: &[u8]| {
    let clinic = &*CLINIC;

    match fuzzing::message(data, clinic, DAY_MS, NOW_MS) {
        Ok(m) => {
            assert_eq!(E164::parse(m.to.as_str()).ok().as_ref(), Some(&m.to));
            assert!(clinic.number(&m.number).is_some(), "{m:?}");
            assert!(m.deadline_ms.is_some_and(|d| d > NOW_MS), "{m:?}");
            assert!(
                whatsapp_cloud::validate::validate_content(&m.content).is_ok(),
                "{m:?}"
            );
            round_trip(&m);
        }
        Err(p) => check_problem(&p),
    }

    match fuzzing::appointment(data, clinic) {
        Ok(p) => patient_ok(&p),
        Err(p) => check_problem(&p),
    }
    if let Err(p) = fuzzing::appointment_change(data) {
        check_problem(&p);
    }
    match fuzzing::visit(data, clinic) {
        Ok(p) => patient_ok(&p),
        Err(p) => check_problem(&p),
    }

    match fuzzing::document(data, clinic, MAX_PDF) {
        Ok((p, pdf, filename)) => {
            patient_ok(&p);
            assert!(!pdf.is_empty() && pdf.len() <= MAX_PDF);
            assert!(
                filename.to_ascii_lowercase().ends_with(".pdf")
                    && !filename.contains(['/', '\\'])
                    && !filename.chars().any(char::is_control)
                    && filename.chars().count() <= 104,
                "{filename:?}"
            );
        }
        Err(p) => check_problem(&p),
    }

    match fuzzing::broadcast(data, clinic) {
        Ok(b) => {
            assert!(b.deadline_ms > b.scheduled_ms, "{b:?}");
            assert!(!b.template.trim().is_empty(), "{b:?}");
            assert!(clinic.number(&b.number).is_some(), "{b:?}");
            assert_eq!(round_trip(&b), b);
        }
        Err(p) => check_problem(&p),
    }

    match fuzzing::template(data) {
        Ok(t) => assert_eq!(round_trip(&t), t),
        Err(p) => check_problem(&p),
    }

    // PUT /v1/patients/{id}: the body, with the id from the path.
    if let Ok(input) = serde_json::from_slice::<PatientInput>(data) {
        let ctx = InputContext {
            default_country_code: clinic.default_country_code.clone(),
            time_zone: chrono_tz::Asia::Kolkata,
            now_ms: NOW_MS,
            source: "api".into(),
        };
        if let Ok(record) = input.into_record(Some("P-1"), &ctx) {
            assert_eq!(record.external_id, "P-1");
            let back: PatientRecord = round_trip(&record);
            assert_eq!(back, record);
        }
    }

    match fuzzing::clinic_patch(clinic, data) {
        Ok(c) => {
            assert!(c.validate().is_ok(), "{c:?}");
            // Stored, then read back (and patched with nothing): the same clinic.
            let again = fuzzing::clinic_patch(&c, b"{}")
                .unwrap_or_else(|p| panic!("the stored clinic no longer validates: {p:?}"));
            assert_eq!(again, c);
            let view = fuzzing::clinic_view(&c);
            let o = view.as_object().unwrap_or_else(|| panic!("{view}"));
            assert!(!o.contains_key("app_secret") && !o.contains_key("access_token"));
            assert!(o
                .get("callback")
                .is_none_or(|cb| cb.get("secret").is_none()));
            assert!(view
                .pointer("/emr/fhir")
                .is_none_or(|f| f.get("auth_token").is_none()));
            assert!(matches!(o.get("app_secret_set"), Some(Value::Bool(_))));
        }
        Err(p) => check_problem(&p),
    }
});
