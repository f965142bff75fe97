//! `scripts/fuzz patients_import`: any bytes as the body of `POST /v1/patients/import`, both as
//! NDJSON (a patient per line) and as CSV (a header row naming the columns, then a patient per
//! row), read the way the importer reads them, each row checked into a directory record.
//!
//! Properties: nothing panics; a row is a record or an error naming its field; a record keeps
//! the checks' promises and reads back from JSON unchanged (the directory stores JSON).
#![no_main]

use clinic_gateway::domain::E164;
use clinic_gateway::patients::input::{CsvLayout, FieldError, InputContext, PatientInput};
use clinic_gateway::patients::PatientRecord;
use clinic_gateway_fuzz::{round_trip, NOW_MS};
use libfuzzer_sys::fuzz_target;

fn context() -> InputContext {
    InputContext {
        default_country_code: "91".into(),
        time_zone: chrono_tz::Asia::Kolkata,
        now_ms: NOW_MS,
        source: "import".into(),
    }
}

fn row(input: PatientInput, ctx: &InputContext) {
    match input.into_record(None, ctx) {
        Ok(record) => {
            assert!(!record.external_id.is_empty(), "{record:?}");
            assert_eq!(
                E164::parse(record.phone.as_str()).ok().as_ref(),
                Some(&record.phone)
            );
            let back: PatientRecord = round_trip(&record);
            assert_eq!(back, record);
        }
        Err(e) => field_error(&e),
    }
}

fn field_error(e: &FieldError) {
    assert!(!e.field.is_empty(), "an error without its field: {e:?}");
}

fuzz_target!(|data: &[u8]| {
    let ctx = context();

    for line in data.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let parsed: Result<PatientInput, _> =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(line));
        if let Ok(input) = parsed {
            row(input, &ctx);
        }
    }

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut layout = None;
    for record in reader.records() {
        let Ok(record) = record else { continue };
        let Some(layout) = &layout else {
            match CsvLayout::from_header(record.iter()) {
                Ok(l) => layout = Some(l),
                Err(e) => {
                    field_error(&e);
                    return;
                }
            }
            continue;
        };
        let _ = layout.external_id(&record);
        match layout.input(&record) {
            Ok(input) => row(input, &ctx),
            Err(e) => field_error(&e),
        }
    }
});
