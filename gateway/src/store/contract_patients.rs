//! Contract for the patient directory's storage (records, phone index, change feed), on both
//! stores.

use super::contract_tenancy::redis_store;
use super::patients::{Expect, PatientStore, PatientWrite, PutOutcome};
use crate::domain::TenantId;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn json(id: &str, phone: &str, extra: &str) -> String {
    format!(r#"{{"external_id":"{id}","phone":"+{phone}","name":"{extra}"}}"#)
}

/// The index entry stored beside `json(id, phone, extra)` (opaque to the store).
fn entry(id: &str, extra: &str) -> String {
    format!("[{id:?},{extra:?}]")
}

async fn put(
    s: &impl PatientStore,
    t: &TenantId,
    id: &str,
    phone: &str,
    body: &str,
    expect: Expect<'_>,
) -> PutOutcome {
    let j = json(id, phone, body);
    let e = entry(id, body);
    let mut out = s
        .put_patients(
            t,
            &[PatientWrite {
                external_id: id,
                phone,
                json: &j,
                index: &e,
                expect,
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    out.pop().unwrap_or_else(|| panic!("no outcome"))
}

async fn get(s: &impl PatientStore, t: &TenantId, id: &str) -> Option<String> {
    s.patient_jsons(t, &[id])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .pop()
        .flatten()
}

async fn patients_put_get_replace_delete_per_clinic(s: &impl PatientStore) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    assert_eq!(
        put(s, &a, "P1", "919800000001", "one", Expect::Absent).await,
        PutOutcome::Written {
            version: 1,
            created: true
        }
    );
    assert_eq!(
        put(s, &a, "P1", "919800000001", "again", Expect::Absent).await,
        PutOutcome::Conflict,
        "absent expected"
    );
    let odd = "odd id: {t:x} ü/|";
    put(s, &a, odd, "919800000002", "odd", Expect::Any).await;
    put(s, &b, "P1", "919800000009", "b", Expect::Any).await;
    assert_eq!(
        get(s, &a, "P1").await,
        Some(json("P1", "919800000001", "one"))
    );
    assert_eq!(
        get(s, &b, "P1").await,
        Some(json("P1", "919800000009", "b"))
    );
    assert_eq!(
        get(s, &a, odd).await,
        Some(json(odd, "919800000002", "odd"))
    );
    assert_eq!(get(s, &a, "nobody").await, None);
    let many = s
        .patient_jsons(&a, &["nobody", "P1", odd])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, true, true]
    );
    // Compare-and-set on the exact stored JSON.
    let stored = json("P1", "919800000001", "one");
    assert_eq!(
        put(s, &a, "P1", "919800000001", "two", Expect::Json("stale")).await,
        PutOutcome::Conflict
    );
    assert!(matches!(
        put(s, &a, "P1", "919800000001", "two", Expect::Json(&stored)).await,
        PutOutcome::Written { created: false, .. }
    ));
    assert_eq!(s.patient_count(&a).await.ok(), Some(2));
    assert_eq!(s.patient_count(&tenant("clinic_c")).await.ok(), Some(0));
    assert!(s.delete_patient(&a, "P1").await.ok().flatten().is_some());
    assert_eq!(s.delete_patient(&a, "P1").await.ok(), Some(None));
    assert_eq!(get(s, &a, "P1").await, None);
    assert!(
        get(s, &b, "P1").await.is_some(),
        "the other clinic keeps its P1"
    );
    assert_eq!(s.patient_count(&a).await.ok(), Some(1));
}

async fn phone_index_follows_changes_and_shared_phones(s: &impl PatientStore) {
    let a = tenant("clinic_a");
    let ids = |phone: &'static str| {
        let a = a.clone();
        async move {
            s.patient_ids_by_phone(&a, phone)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    put(s, &a, "mother", "919800000001", "", Expect::Any).await;
    put(s, &a, "child", "919800000001", "", Expect::Any).await;
    put(s, &a, "other", "9198000000012", "", Expect::Any).await;
    assert_eq!(ids("919800000001").await, vec!["child", "mother"]);
    assert_eq!(
        ids("91980000000").await,
        Vec::<String>::new(),
        "no prefix matches"
    );
    // The child gets their own phone: the old entry goes.
    put(s, &a, "child", "919800000002", "", Expect::Any).await;
    assert_eq!(ids("919800000001").await, vec!["mother"]);
    assert_eq!(ids("919800000002").await, vec!["child"]);
    s.delete_patient(&a, "mother")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ids("919800000001").await.is_empty());
    assert!(s
        .patient_ids_by_phone(&tenant("clinic_b"), "919800000002")
        .await
        .is_ok_and(|v| v.is_empty()));
}

async fn scans_page_through_every_patient(s: &impl PatientStore) {
    let a = tenant("clinic_a");
    let writes: Vec<(String, String, String)> = (0..450)
        .map(|i| {
            let id = format!("P{i:04}");
            (id.clone(), json(&id, "919800000001", "x"), entry(&id, "x"))
        })
        .collect();
    let batch: Vec<PatientWrite<'_>> = writes
        .iter()
        .map(|(id, j, e)| PatientWrite {
            external_id: id,
            phone: "919800000001",
            json: j,
            index: e,
            expect: Expect::Any,
        })
        .collect();
    let out = s
        .put_patients(&a, &batch)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), 450);
    assert_eq!(
        out.last(),
        Some(&PutOutcome::Written {
            version: 450,
            created: true
        }),
        "one version per write, in order"
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = s
            .scan_patients(&a, cursor.as_deref(), 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for (id, j) in page.items {
            assert_eq!(j, json(&id, "919800000001", "x"));
            seen.insert(id);
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 450);
    // The index entries, the same way.
    let mut entries = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = s
            .scan_patient_index(&a, cursor.as_deref(), 1_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for (id, e) in page.items {
            assert_eq!(e, entry(&id, "x"));
            entries.insert(id);
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(entries, seen);
    assert_eq!(s.patient_version(&a).await.ok(), Some(450));
}

async fn the_feed_lists_changes_since_a_version(s: &impl PatientStore) {
    let a = tenant("clinic_a");
    let none = s
        .patient_changes(&a, 0, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((none.version, none.upto, none.gap), (0, 0, false));
    assert!(none.changed.is_empty());
    put(s, &a, "P1", "919800000001", "v1", Expect::Any).await; // 1
    put(s, &a, "P2", "919800000002", "v1", Expect::Any).await; // 2
    put(s, &a, "P1", "919800000001", "v2", Expect::Any).await; // 3
    s.delete_patient(&a, "P2")
        .await
        .unwrap_or_else(|e| panic!("{e}")); // 4
    let all = s
        .patient_changes(&a, 0, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((all.version, all.upto, all.gap), (4, 4, false));
    assert_eq!(
        all.changed,
        vec![
            ("P1".to_owned(), Some(entry("P1", "v2"))),
            ("P2".to_owned(), None),
        ],
        "each id once, with its index entry as it is now"
    );
    let tail = s
        .patient_changes(&a, 3, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tail.changed, vec![("P2".to_owned(), None)]);
    let part = s
        .patient_changes(&a, 0, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((part.version, part.upto), (4, 2), "at most max entries");
    assert_eq!(part.changed.len(), 2);
    let current = s
        .patient_changes(&a, 4, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((current.version, current.upto), (4, 4));
    assert!(current.changed.is_empty() && !current.gap);
    // A conflicting write is not a change.
    put(s, &a, "P1", "919800000001", "v3", Expect::Absent).await;
    assert_eq!(s.patient_version(&a).await.ok(), Some(4));
}

contract!(
    patients_put_get_replace_delete_per_clinic,
    phone_index_follows_changes_and_shared_phones,
    scans_page_through_every_patient,
    the_feed_lists_changes_since_a_version,
);
