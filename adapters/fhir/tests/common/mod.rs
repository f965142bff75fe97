#![allow(dead_code)]

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/fhir-official/"
);

pub const ALL: &[&str] = &[
    "appointment-example.json",
    "appointment-example2doctors.json",
    "bundle-transaction.json",
    "communication-example.json",
    "diagnosticreport-example-gingival-mass.json",
    "diagnosticreport-example-pgx.json",
    "documentreference-example.json",
    "encounter-example.json",
    "medicationrequest0301.json",
    "patient-example.json",
    "r5-notification-empty.json",
    "r5-notification-full-resource.json",
    "r5-notification-handshake.json",
    "r5-notification-heartbeat.json",
    "r5-notification-id-only.json",
];

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}
