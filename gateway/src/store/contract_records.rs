//! Contract for clinical records, consent, markers and unscheduling, on both stores.

use super::clinical::JobStore;
use super::contract_tenancy::redis_store;
use super::records::{RecordKind, RecordPut, RecordStore};
use crate::domain::appointment::AppointmentId;
use crate::domain::TenantId;
use crate::workflows::Job;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

async fn put(s: &impl RecordStore, t: &TenantId, id: &str, at_ms: i64, ext: Option<&str>) {
    let json = format!("{{\"id\":\"{id}\"}}");
    s.put_record(RecordPut {
        tenant: t,
        kind: RecordKind::Document,
        id,
        at_ms,
        json: &json,
        external: ext,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn records_put_get_list_by_time_and_external_id(s: &impl RecordStore) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    put(s, &a, "doc_2", 2_000, Some("LAB-2")).await;
    put(s, &a, "doc_1", 1_000, Some("LAB-1")).await;
    put(s, &a, "doc_3", 3_000, None).await;
    put(s, &b, "doc_9", 1_500, Some("LAB-1")).await;
    let get = |t: TenantId, id: &'static str| async move {
        s.record(&t, RecordKind::Document, id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        get(a.clone(), "doc_1").await.as_deref(),
        Some("{\"id\":\"doc_1\"}")
    );
    assert_eq!(
        get(b.clone(), "doc_1").await,
        None,
        "another clinic's record"
    );
    assert_eq!(
        s.record(&a, RecordKind::Visit, "doc_1")
            .await
            .ok()
            .flatten(),
        None,
        "another kind"
    );
    let by_ext = |t: TenantId| async move {
        s.record_by_external(&t, RecordKind::Document, "LAB-1")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(by_ext(a.clone()).await.as_deref(), Some("doc_1"));
    assert_eq!(by_ext(b.clone()).await.as_deref(), Some("doc_9"));
    let listed = s
        .records(&a, RecordKind::Document, 1_000, 3_000, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        listed,
        vec!["{\"id\":\"doc_1\"}", "{\"id\":\"doc_2\"}"],
        "[from, to)"
    );
    let first = s
        .records(&a, RecordKind::Document, 0, i64::MAX, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.len(), 1);
    // Replacing keeps one entry, listed at its new time.
    put(s, &a, "doc_1", 4_000, Some("LAB-1")).await;
    let all = s
        .records(&a, RecordKind::Document, 0, i64::MAX, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], "{\"id\":\"doc_1\"}");
    assert!(s
        .records(&a, RecordKind::Inbox, 0, i64::MAX, 10)
        .await
        .is_ok_and(|v| v.is_empty()));
}

async fn records_delete_with_their_index_and_external_id(s: &impl RecordStore) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    put(s, &a, "doc_1", 1_000, Some("LAB-1")).await;
    put(s, &a, "doc_2", 2_000, Some("LAB-2")).await;
    put(s, &b, "doc_1", 1_000, Some("LAB-1")).await;
    let entries = s
        .record_entries(&a, RecordKind::Document, 0, i64::MAX, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.id.as_str(), e.at_ms, e.json.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            ("doc_1", 1_000, Some("{\"id\":\"doc_1\"}")),
            ("doc_2", 2_000, Some("{\"id\":\"doc_2\"}")),
        ]
    );
    let deleted = s
        .delete_record(&a, RecordKind::Document, "doc_1", Some("LAB-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(deleted);
    // An external id that now names another record is left alone.
    let kept = s
        .delete_record(&a, RecordKind::Document, "doc_2", Some("LAB-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(kept, "doc_2 existed");
    let again = s
        .delete_record(&a, RecordKind::Document, "doc_1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!again, "already gone");
    let doc = |t: TenantId, id: &'static str| async move {
        s.record(&t, RecordKind::Document, id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(doc(a.clone(), "doc_1").await, None);
    assert_eq!(doc(a.clone(), "doc_2").await, None);
    assert!(doc(b.clone(), "doc_1").await.is_some(), "another clinic's");
    assert!(s
        .records(&a, RecordKind::Document, 0, i64::MAX, 10)
        .await
        .is_ok_and(|v| v.is_empty()));
    assert!(s
        .record_by_external(&a, RecordKind::Document, "LAB-1")
        .await
        .is_ok_and(|v| v.is_none()));
    assert!(s
        .record_by_external(&b, RecordKind::Document, "LAB-1")
        .await
        .is_ok_and(|v| v.as_deref() == Some("doc_1")));
}

async fn appointments_delete_with_their_indexes(s: &impl super::clinical::AppointmentStore) {
    let a = tenant("clinic_a");
    let apt = crate::domain::appointment::Appointment {
        external_id: Some("EMR-9".into()),
        ..super::contract_batch::appointment(&a, "+919800000001", 5_000)
    };
    s.put_appointment(&apt)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.set_pending(&a, "+919800000001", &apt.id, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(s
        .delete_appointment(&a, &apt.id)
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    assert!(!s
        .delete_appointment(&a, &apt.id)
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    assert!(s.appointment(&a, &apt.id).await.is_ok_and(|v| v.is_none()));
    assert!(s
        .appointment_by_external(&a, "EMR-9")
        .await
        .is_ok_and(|v| v.is_none()));
    assert!(s
        .appointments(&a, 0, i64::MAX, 10)
        .await
        .is_ok_and(|v| v.is_empty()));
    s.clear_pending(&a, "919800000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(s
        .pending(&a, "+919800000001")
        .await
        .is_ok_and(|v| v.is_none()));
}

async fn consent_switches_per_clinic_and_patient(s: &impl RecordStore) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    let out = |t: TenantId, p: &'static str| async move {
        s.opted_out(&t, p).await.unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(!out(a.clone(), "+919800000001").await);
    s.set_opted_out(&a, "+919800000001", true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out(a.clone(), "919800000001").await, "with or without +");
    assert!(!out(b.clone(), "919800000001").await, "per clinic");
    s.set_opted_out(&a, "919800000001", false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out(a.clone(), "+919800000001").await);
}

async fn markers_expire_and_clear(s: &impl RecordStore) {
    let a = tenant("clinic_a");
    let get = |slot: &'static str| {
        let a = a.clone();
        async move {
            s.marker(&a, "+919800000001", slot)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    s.set_marker(&a, "+919800000001", "comment", Some("vis_1"), 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.set_marker(&a, "919800000001", "short", Some("x"), 30)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get("comment").await.as_deref(), Some("vis_1"));
    assert_eq!(get("other").await, None);
    // Several patients at once, in order, with or without `+`.
    let many = s
        .markers(
            &a,
            &["919800000002", "+919800000001", "919800000001"],
            "comment",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        many,
        vec![None, Some("vis_1".to_owned()), Some("vis_1".to_owned())]
    );
    assert_eq!(
        s.markers(&a, &[], "comment")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Vec::<Option<String>>::new()
    );
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(get("short").await, None, "expired");
    s.set_marker(&a, "919800000001", "comment", None, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get("comment").await, None, "cleared");
}

async fn unscheduled_jobs_never_come_due(s: &impl JobStore) {
    let a = tenant("clinic_a");
    let appointment = AppointmentId::generate();
    let job = |offset_minutes| Job::Reminder {
        appointment: appointment.clone(),
        version: 1,
        offset_minutes,
    };
    for offset in [60, 120, 180] {
        s.schedule(&a, &job(offset), 1_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.unschedule(&a, &[job(60), job(120), job(999)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.unschedule(&a, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let due = s
        .claim_due(2_000, 10, 1_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        due.iter().map(|c| c.job.clone()).collect::<Vec<_>>(),
        vec![job(180)]
    );
}

async fn an_emr_id_is_claimed_by_one_appointment(s: &impl super::clinical::AppointmentStore) {
    let a = tenant("clinic_a");
    let ids: Vec<AppointmentId> = (0..8).map(|_| AppointmentId::generate()).collect();
    let claims =
        futures::future::join_all(ids.iter().map(|id| s.claim_external(&a, "EMR-1", id))).await;
    let winners: Vec<&AppointmentId> = ids
        .iter()
        .zip(&claims)
        .filter(|(_, c)| matches!(c, Ok(None)))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    for c in &claims {
        if let Ok(Some(holder)) = c {
            assert_eq!(holder, winners[0]);
        }
    }
    // The winner claiming again is fine; another clinic has its own ids.
    assert!(matches!(
        s.claim_external(&a, "EMR-1", winners[0]).await,
        Ok(None)
    ));
    assert!(matches!(
        s.claim_external(&tenant("clinic_b"), "EMR-1", &ids[0])
            .await,
        Ok(None)
    ));
}

contract!(
    an_emr_id_is_claimed_by_one_appointment,
    records_put_get_list_by_time_and_external_id,
    records_delete_with_their_index_and_external_id,
    appointments_delete_with_their_indexes,
    consent_switches_per_clinic_and_patient,
    markers_expire_and_clear,
    unscheduled_jobs_never_come_due,
);
