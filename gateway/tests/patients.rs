//! The patient directory end to end on real Redis: upsert/get/delete over HTTP, clinics never see
//! each other's patients, CSV and NDJSON imports with a per-row error report, the filtered list,
//! consent from WhatsApp, and indexes on two nodes kept current by the change feed.

mod common;

use std::sync::Arc;

use clinic_gateway::domain::{TenantId, E164};
use clinic_gateway::patients::{PatientDirectory, PatientFilter, PatientRecord, Purpose};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    api_answer(resp).await
}

async fn put_patient(app: &TestApp, key: &str, id: &str, body: Value) -> (u16, Value) {
    send(
        app,
        Method::PUT,
        &format!("/v1/patients/{id}"),
        key,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

async fn import(app: &TestApp, content_type: &str, body: &str) -> (u16, Value) {
    send(
        app,
        Method::POST,
        "/v1/patients/import",
        KEY_A,
        content_type,
        body.as_bytes().to_vec(),
    )
    .await
}

fn ids(v: &Value) -> Vec<String> {
    v["patients"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["external_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[actix_rt::test]
async fn upsert_get_delete_and_clinics_never_see_each_other() {
    let app = spawn_app("patients_crud", Options::default()).await;
    let body = json!({"phone": "98765 43210", "name": "Asha", "language": "hi",
        "birth_date": "1970-04-02", "sex": "female", "tags": ["Diabetic", "antenatal"],
        "conditions": ["e11.9"], "last_visit": "2026-01-15T10:00:00+05:30",
        "consent": {"promotional": true}});
    let (status, created) = put_patient(&app, KEY_A, "EMR-1", body.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["phone"], "+919876543210",
        "completed with the clinic's country code"
    );
    assert_eq!(created["tags"], json!(["antenatal", "diabetic"]));
    assert_eq!(created["conditions"], json!(["E11.9"]));
    assert_eq!(created["sex"], "female");
    assert_eq!(created["consent"]["promotional"]["granted"], true);
    assert_eq!(created["consent"]["promotional"]["source"], "api");
    assert_eq!(created["consent"]["care"]["source"], "default");
    let (status, replaced) = put_patient(
        &app,
        KEY_A,
        "EMR-1",
        json!({"phone": "+919876543210", "name": "Asha R"}),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["name"], "Asha R");
    assert_eq!(
        replaced["consent"]["promotional"]["granted"], true,
        "consent not stated again is kept"
    );
    let (status, got) = app
        .call(Method::GET, "/v1/patients/EMR-1", KEY_A, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, replaced);

    // Clinic B cannot read, list or erase clinic A's patient; its own EMR-1 is another patient.
    let (status, _) = app
        .call(Method::GET, "/v1/patients/EMR-1", KEY_B, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(Method::DELETE, "/v1/patients/EMR-1", KEY_B, None)
        .await;
    assert_eq!(status, 404);
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_B, None).await;
    assert_eq!(listed["total"], 0, "{listed}");
    let (status, _) = put_patient(&app, KEY_B, "EMR-1", json!({"phone": "+919800000077"})).await;
    assert_eq!(status, 201, "a new patient for clinic B");
    let (_, still) = app
        .call(Method::GET, "/v1/patients/EMR-1", KEY_A, None)
        .await;
    assert_eq!(still["phone"], "+919876543210");

    // Ids with characters that need escaping in a URL.
    let (status, odd) = put_patient(
        &app,
        KEY_A,
        "MRN%2F2024%20%C3%BC",
        json!({"phone": "9876543211"}),
    )
    .await;
    assert_eq!(status, 201, "{odd}");
    assert_eq!(odd["external_id"], "MRN/2024 ü");

    // Erasure.
    let (status, _) = app
        .call(Method::DELETE, "/v1/patients/EMR-1", KEY_A, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(Method::GET, "/v1/patients/EMR-1", KEY_A, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(Method::DELETE, "/v1/patients/EMR-1", KEY_A, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(Method::GET, "/v1/patients/EMR-1", KEY_B, None)
        .await;
    assert_eq!(status, 200, "clinic B's patient stays");

    // Validation names the field; no key is 401.
    for (body, field) in [
        (json!({"phone": "12345"}), "phone"),
        (json!({"phone": "9876543210", "sex": "robot"}), "sex"),
        (
            json!({"phone": "9876543210", "birth_date": "02/04/1970"}),
            "birth_date",
        ),
        (
            json!({"phone": "9876543210", "tags": ["ok", "not ok"]}),
            "tags[1]",
        ),
        (json!({"phone": "9876543210", "colour": "blue"}), "colour"),
        (json!({"name": "no phone"}), "phone"),
    ] {
        let (status, p) = put_patient(&app, KEY_A, "EMR-2", body).await;
        assert_eq!(status, 422, "{p}");
        assert_eq!(p["type"], "/problems/invalid-field");
        assert!(
            p["field"].as_str().is_some_and(|f| f.contains(field)),
            "{field}: {p}"
        );
    }
    let (status, _) = put_patient(&app, "wrong-key", "EMR-2", json!({"phone": "9876543210"})).await;
    assert_eq!(status, 401);
    let (status, p) = put_patient(
        &app,
        KEY_A,
        "wa:919876543210",
        json!({"phone": "9876543210"}),
    )
    .await;
    assert_eq!((status, p["field"].as_str()), (422, Some("external_id")));
}

#[actix_rt::test]
async fn csv_import_lands_valid_rows_and_reports_the_others() {
    let app = spawn_app("patients_csv", Options::default()).await;
    let csv = "external_id,phone,name,language,birth_date,sex,tags,conditions,last_visit,consent_care,consent_promotional\n\
P1,9876500001,Asha,hi,1970-04-02,F,diabetic;senior,E11.9,2026-01-10,yes,yes\n\
P2,12,Bad Phone,en,1980-01-01,m,,,,,\n\
P3,9876500003,\"Rao, K.\",ta,1985-02-30,m,,,,,\n\
P4,9876500004,Meena,te,1990-05-05,robot,,,,,\n\
P5,+919876500005,\"Multi\nLine\",en,,,antenatal,O09,,,no\n\
P6,9876500006,Ravi,,,,diabetic,I10,,,maybe\n";
    let (status, report) = import(&app, "text/csv", csv).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["created"], 2);
    assert_eq!(report["failed"], 4);
    let errors: Vec<(u64, String, String)> = report["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["row"].as_u64().unwrap_or(0),
                        e["field"].as_str().unwrap_or("").to_owned(),
                        e["external_id"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        errors,
        vec![
            (3, "phone".into(), "P2".into()),
            (4, "birth_date".into(), "P3".into()),
            (5, "sex".into(), "P4".into()),
            (8, "consent_promotional".into(), "P6".into()),
        ],
        "rows are lines of the file (header = 1; P5's name spans two lines)"
    );
    let (_, p1) = app.call(Method::GET, "/v1/patients/P1", KEY_A, None).await;
    assert_eq!(p1["phone"], "+919876500001");
    assert_eq!(p1["tags"], json!(["diabetic", "senior"]));
    assert_eq!(p1["consent"]["promotional"]["source"], "import");
    assert_eq!(p1["sex"], "female");
    let (_, p5) = app.call(Method::GET, "/v1/patients/P5", KEY_A, None).await;
    assert_eq!(
        p5["name"], "Multi Line",
        "line breaks in a name become a space"
    );
    assert_eq!(p5["consent"]["promotional"]["granted"], false);
    let (status, _) = app.call(Method::GET, "/v1/patients/P2", KEY_A, None).await;
    assert_eq!(status, 404);

    // Importing again updates, never duplicates.
    let (_, again) = import(
        &app,
        "text/csv; charset=utf-8",
        "phone,external_id\n9876500001,P1\n",
    )
    .await;
    assert_eq!(
        (again["imported"].as_u64(), again["updated"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_A, None).await;
    assert_eq!(listed["total"], 2);

    // A bad header is refused whole; an unknown media type too.
    let (status, p) = import(&app, "text/csv", "external_id,mobile\nP9,9876500009\n").await;
    assert_eq!((status, p["field"].as_str()), (422, Some("header")));
    let (status, _) = import(&app, "application/json", "[]").await;
    assert_eq!(status, 415);
}

#[actix_rt::test]
async fn ndjson_import_reports_rows_by_line() {
    let app = spawn_app("patients_ndjson", Options::default()).await;
    let ndjson = [
        r#"{"external_id": "N1", "phone": "9876500011", "tags": ["diabetic"], "birth_date": "1960-01-01"}"#,
        r#"{"external_id": "N2", "phone": "not a phone"}"#,
        "",
        r#"{"external_id": "N3", "phone": "9876500013", "birth_date": "1960-02-31"}"#,
        r#"{"external_id": "N4", "phone": "9876500014", "sex": "x"}"#,
        r#"{"external_id": "N5", "name": "no phone"}"#,
        r#"{"external_id": "N6", "phone": "9876500016", "consent": {"promotional": true}}"#,
        "not json",
        r#"{"external_id": "N7", "phone": "9876500017", "tags": "diabetic"}"#,
        r#"{"external_id": "N6", "phone": "9876500016", "name": "second N6 row wins"}"#,
    ]
    .join("\n");
    let (status, report) = import(&app, "application/x-ndjson", &ndjson).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["imported"], 3, "{report}");
    assert_eq!(report["failed"], 6);
    let fields: Vec<(u64, String)> = report["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["row"].as_u64().unwrap_or(0),
                        e["field"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        fields,
        vec![
            (2, "phone".into()),
            (4, "birth_date".into()),
            (5, "sex".into()),
            (6, "phone".into()),
            (8, "json".into()),
            (9, "tags".into()),
        ]
    );
    let (_, n6) = app.call(Method::GET, "/v1/patients/N6", KEY_A, None).await;
    assert_eq!(n6["name"], "second N6 row wins");
    assert_eq!(
        n6["consent"]["promotional"]["granted"], true,
        "the later row without consent keeps the earlier row's"
    );
}

#[actix_rt::test]
async fn the_list_filters_pages_and_stays_per_clinic() {
    let app = spawn_app("patients_list", Options::default()).await;
    let mut lines = vec![
        "external_id,phone,language,birth_date,tags,conditions,last_visit,consent_promotional"
            .to_owned(),
    ];
    // 40 patients: even ones diabetic, every third Hindi, ages spread 30..70, odd ones E11.x.
    for i in 0..40 {
        let year = 1956 + i; // aged ~30 to ~70 in 2026
        lines.push(format!(
            "P{i:02},98765{i:05},{},{year}-01-01,{},{},2026-01-{:02},{}",
            if i % 3 == 0 { "hi" } else { "en" },
            if i % 2 == 0 { "diabetic" } else { "" },
            if i % 2 == 1 {
                format!("E11.{}", i % 10)
            } else {
                "I10".to_owned()
            },
            1 + i % 28,
            if i % 4 == 0 { "yes" } else { "" },
        ));
    }
    let (_, report) = import(&app, "text/csv", &(lines.join("\n") + "\n")).await;
    assert_eq!(report["imported"], 40, "{report}");
    let list = |q: &'static str| {
        let app = &app;
        async move {
            let (status, v) = app
                .call(Method::GET, &format!("/v1/patients{q}"), KEY_A, None)
                .await;
            assert_eq!(status, 200, "{q}: {v}");
            v
        }
    };
    let diabetic = list("?tag=diabetic&limit=1000").await;
    assert_eq!(diabetic["total"], 20);
    assert!(ids(&diabetic)
        .iter()
        .all(|id| id[1..].parse::<u32>().is_ok_and(|n| n % 2 == 0)));
    let e11 = list("?condition=E11").await;
    assert_eq!(e11["total"], 20);
    let hindi = list("?language=hi").await;
    assert_eq!(hindi["total"], 14);
    let promo = list("?consent=promotional&tag=diabetic").await;
    assert_eq!(
        ids(&promo),
        (0..40)
            .step_by(4)
            .map(|i| format!("P{i:02}"))
            .collect::<Vec<_>>()
    );
    // Born 1956..=1995 on 1 Jan; today is after 1 Jan 2026, so ages are 70..=31.
    let aged = list("?age_min=40&age_max=50").await;
    assert_eq!(aged["total"], 11, "{aged}");
    let visited = list("?last_visit_from=2026-01-05&last_visit_to=2026-01-10").await;
    // Days 5..=9 of January: i % 28 in 4..=8, i.e. 4..=8 and 32..=36.
    assert_eq!(visited["total"], 10, "{visited}");
    let nobody = list("?tag=unknown-tag").await;
    assert_eq!(nobody["total"], 0);
    // Paging: stable id order.
    let first = list("?limit=15").await;
    assert_eq!(first["total"], 40);
    assert_eq!(ids(&first).len(), 15);
    assert_eq!(first["next_after"], "P14");
    let second = list("?limit=15&after=P14").await;
    assert_eq!(ids(&second).first().map(String::as_str), Some("P15"));
    let last = list("?limit=15&after=P29").await;
    assert_eq!(ids(&last).len(), 10);
    assert_eq!(last["next_after"], Value::Null);
    // Bad queries name the parameter.
    let (status, p) = app
        .call(Method::GET, "/v1/patients?consent=marketing", KEY_A, None)
        .await;
    assert_eq!((status, p["field"].as_str()), (422, Some("consent")));
    let (status, _) = app
        .call(Method::GET, "/v1/patients?age_min=old", KEY_A, None)
        .await;
    assert_eq!(status, 422);
    // Clinic B sees none of them.
    let (_, b) = app
        .call(Method::GET, "/v1/patients?tag=diabetic", KEY_B, None)
        .await;
    assert_eq!(b["total"], 0);
}

#[actix_rt::test]
async fn two_nodes_see_each_others_writes_and_consent_follows_the_phone() {
    let app = spawn_app("patients_nodes", Options::default()).await;
    let a = tenant("clinic_a");
    // Two more "nodes" on the same Redis, besides the app itself.
    let node1 = PatientDirectory::new(Arc::clone(&app.store));
    let node2 = PatientDirectory::new(Arc::clone(&app.store));
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap_or_default();
    let diabetic = PatientFilter {
        tags_all: vec!["diabetic".into()],
        ..Default::default()
    };
    let phone = |d: &str| E164::parse(d).unwrap_or_else(|e| panic!("{e}"));
    let patient = |id: &str, p: &str, tags: &[&str]| {
        let mut r = PatientRecord::new(id, phone(p));
        r.tags = tags.iter().map(|t| t.to_string()).collect();
        r
    };
    let selected = |dir: &PatientDirectory, f: &PatientFilter| {
        let (dir, f, a) = (dir.clone(), f.clone(), a.clone());
        async move {
            dir.select(&a, &f, today)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|p| p.external_id)
                .collect::<Vec<_>>()
        }
    };
    assert!(
        selected(&node1, &diabetic).await.is_empty(),
        "loads an empty index"
    );
    node2
        .upsert(&a, patient("P1", "+919800000001", &["diabetic"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, _) = put_patient(
        &app,
        KEY_A,
        "P2",
        json!({"phone": "+919800000002", "tags": ["diabetic"]}),
    )
    .await;
    assert_eq!(
        selected(&node1, &diabetic).await,
        vec!["P1", "P2"],
        "writes of other nodes"
    );
    node2
        .upsert(&a, patient("P1", "+919800000001", &["senior"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(node2.delete(&a, "P2").await.unwrap_or(false));
    assert!(
        selected(&node1, &diabetic).await.is_empty(),
        "changes and erasures too"
    );
    assert_eq!(node1.count(&a).await.ok(), Some(1));

    // STOP from a phone the clinic has two patients on: both withdraw.
    for (id, p) in [("mother", "+919800000010"), ("child", "+919800000010")] {
        node1
            .upsert(&a, patient(id, p, &[]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let care = PatientFilter {
        consent: Some(Purpose::Care),
        ..Default::default()
    };
    assert_eq!(selected(&node1, &care).await, vec!["P1", "child", "mother"]);
    node2
        .set_consent(
            &a,
            &phone("+919800000010"),
            Purpose::Care,
            false,
            "patient:STOP",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(selected(&node1, &care).await, vec!["P1"]);
    let first = node1
        .by_phone(&a, &phone("+919800000010"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("found by phone"));
    assert_eq!(
        first.external_id, "child",
        "the lowest id of a shared phone"
    );
    assert_eq!(first.consent.care.source, "patient:STOP");

    // STOP from an unknown phone keeps a placeholder; the clinic's record for that phone later
    // takes its consent over, and a re-import without consent does not undo it.
    let stranger = phone("+919800000020");
    node1
        .set_consent(&a, &stranger, Purpose::Care, false, "patient:STOP")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let placeholder = node1
        .get(&a, "wa:919800000020")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(placeholder.is_some_and(|p| !p.consents_to(Purpose::Care)));
    let (status, known) = put_patient(&app, KEY_A, "P20", json!({"phone": "+919800000020"})).await;
    assert_eq!(status, 201);
    assert_eq!(known["consent"]["care"]["granted"], false, "{known}");
    assert_eq!(known["consent"]["care"]["source"], "patient:STOP");
    let (status, _) = app
        .call(Method::GET, "/v1/patients/wa:919800000020", KEY_A, None)
        .await;
    assert_eq!(status, 404, "the placeholder is absorbed");
    let (_, report) = import(&app, "text/csv", "external_id,phone\nP20,9800000020\n").await;
    assert_eq!(report["imported"], 1);
    let (_, again) = app.call(Method::GET, "/v1/patients/P20", KEY_A, None).await;
    assert_eq!(again["consent"]["care"]["granted"], false);
    // Other clinics are untouched by this clinic's STOPs.
    assert!(node1
        .by_phone(&tenant("clinic_b"), &stranger)
        .await
        .is_ok_and(|p| p.is_none()));
}
