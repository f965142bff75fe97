//! Contract for the batched operations of the scheduler's reminder batches, on both stores: each
//! answers, item by item and in order, what the one-item operation answers.

use whatsapp_cloud::wire::{Content, Text};

use super::clinical::Contact;
use super::contract_tenancy::redis_store;
use super::tenancy::{LimitDecision, Reservation};
use super::{Accepted, Backend, StoreError};
use crate::clock::now_ms;
use crate::domain::appointment::{
    Appointment, AppointmentId, AppointmentStatus, Patient, ReminderRecord,
};
use crate::domain::{Lane, MessageId, Money, NewMessage, PhoneNumberId, TenantId, E164};

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn phone(s: &str) -> E164 {
    E164::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn appointment(t: &TenantId, patient: &str, start_ms: i64) -> Appointment {
    Appointment {
        id: AppointmentId::generate(),
        tenant: t.clone(),
        external_id: None,
        patient: Patient {
            phone: phone(patient),
            name: "Asha".into(),
            language: None,
        },
        doctor: None,
        location: None,
        start_ms,
        end_ms: None,
        status: AppointmentStatus::Booked,
        response: None,
        version: 1,
        reminders: Vec::new(),
        created_ms: 1,
        updated_ms: 1,
    }
}

fn message(t: &str, number: &str, to: &str) -> NewMessage {
    NewMessage {
        id: MessageId::generate(),
        tenant: tenant(t),
        number: PhoneNumberId::parse(number).unwrap_or_else(|e| panic!("{e}")),
        to: phone(to),
        lane: Lane::Reminders,
        content: Content::Text {
            text: Text {
                body: "See you tomorrow".into(),
                preview_url: false,
            },
        },
        deadline_ms: None,
        created_ms: 1_700_000_000_000,
        broadcast: None,
        touchpoint: Some("reminder".into()),
        retain_days: None,
    }
}

async fn appointments_and_contacts_read_as_a_batch(s: &(impl Backend + ?Sized)) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    let first = appointment(&a, "+919800000001", 5_000);
    let second = appointment(&a, "+919800000002", 6_000);
    let other = appointment(&b, "+919800000003", 7_000);
    for apt in [&first, &second, &other] {
        s.put_appointment(apt)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let ids = [
        first.id.clone(),
        AppointmentId::generate(),
        other.id.clone(),
        second.id.clone(),
    ];
    let got = s
        .appointments_by_id(&a, &ids)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got,
        vec![Some(first.clone()), None, None, Some(second.clone())],
        "in order; unknown ids and another clinic's appointments are absent"
    );
    assert!(s
        .appointments_by_id(&a, &[])
        .await
        .is_ok_and(|v| v.is_empty()));

    s.set_opted_out(&a, "+919800000001", true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let now = now_ms();
    s.touch_window(&a, "919800000002", now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let patients = ["+919800000001", "919800000002", "+919800000003"];
    let contacts = s
        .contacts(&a, &patients)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut one_by_one = Vec::new();
    for p in patients {
        one_by_one.push(Contact {
            opted_out: s.opted_out(&a, p).await.unwrap_or_else(|e| panic!("{e}")),
            window_until: s
                .window_until(&a, p)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        });
    }
    assert_eq!(contacts, one_by_one);
    assert!(contacts[0].opted_out && contacts[0].window_until.is_none());
    assert!(!contacts[1].opted_out && contacts[1].window_until.is_some_and(|u| u > now));
    assert_eq!(contacts[2], Contact::default());
    assert_eq!(
        s.contacts(&b, &patients[..1])
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        vec![Contact::default()],
        "per clinic"
    );
}

async fn reminded_appointments_and_pending_questions_are_written_together(
    s: &(impl Backend + ?Sized),
) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    let mut first = appointment(&a, "+919800000001", 5_000);
    let mut second = appointment(&a, "+919800000002", 6_000);
    first.external_id = Some("EMR-1".into());
    for apt in [&mut first, &mut second] {
        apt.reminders.push(ReminderRecord {
            offset_minutes: 1_440,
            message: MessageId::generate(),
            sent_ms: 2_000,
        });
    }
    let pending = [("+919800000001", &first.id), ("919800000002", &second.id)];
    s.put_reminded(&a, &pending, 60_000, &[first.clone(), second.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for apt in [&first, &second] {
        assert_eq!(
            s.appointment(&a, &apt.id).await.ok().flatten().as_ref(),
            Some(apt)
        );
        assert_eq!(
            s.pending(&a, apt.patient.phone.digits())
                .await
                .ok()
                .flatten(),
            Some(apt.id.clone())
        );
    }
    assert_eq!(
        s.appointment_by_external(&a, "EMR-1").await.ok().flatten(),
        Some(first.id.clone()),
        "indexed as put_appointment does"
    );
    assert_eq!(
        s.appointments(&a, 0, i64::MAX, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .len(),
        2
    );

    // Another clinic's appointment in the batch: refused, nothing written.
    let foreign = appointment(&b, "+919800000003", 7_000);
    let r = s
        .put_reminded(
            &a,
            &[("+919800000003", &foreign.id)],
            60_000,
            std::slice::from_ref(&foreign),
        )
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert!(s
        .appointment(&b, &foreign.id)
        .await
        .is_ok_and(|v| v.is_none()));
    assert!(s
        .pending(&a, "+919800000003")
        .await
        .is_ok_and(|v| v.is_none()));
    s.put_reminded(&a, &[], 1, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn accept_many_answers_as_accept_does(s: &(impl Backend + ?Sized)) {
    let first = message("clinic_a", "1001", "+919800000001");
    let second = message("clinic_a", "1001", "+919800000002");
    let third = message("clinic_a", "1001", "+919800000003");
    let elsewhere = message("clinic_b", "2002", "+919800000001");
    let results = s
        .accept_many(&[&first, &second, &first, &elsewhere, &third], 2)
        .await;
    assert!(matches!(results[0], Ok(Accepted::Created)), "{results:?}");
    assert!(matches!(results[1], Ok(Accepted::Created)), "{results:?}");
    assert!(
        matches!(results[2], Ok(Accepted::AlreadyExists)),
        "the same id twice in one batch is accepted once: {results:?}"
    );
    assert!(matches!(results[3], Ok(Accepted::Created)), "{results:?}");
    assert!(
        matches!(&results[4], Err(StoreError::QueueFull(n)) if n.as_str() == "1001"),
        "the lane holds 2 ready entries: {results:?}"
    );
    for (t, m, present) in [
        ("clinic_a", &first, true),
        ("clinic_a", &second, true),
        ("clinic_b", &elsewhere, true),
        ("clinic_a", &third, false),
    ] {
        let rec = s
            .message(&tenant(t), &m.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.is_some(), present, "{}", m.id);
        if let Some(rec) = rec {
            assert_eq!(&rec.message, m);
        }
    }
    assert_eq!(
        s.accept(&first, 2).await.ok(),
        Some(Accepted::AlreadyExists),
        "the one-message accept sees the batch's records"
    );
    assert!(s.accept_many(&[], 2).await.is_empty());
}

async fn reservations_and_limits_run_in_order(s: &(impl Backend + ?Sized)) {
    let a = tenant("clinic_a");
    s.credit(&a, Money(100), "top-up", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (m1, m2, m3) = (
        MessageId::generate(),
        MessageId::generate(),
        MessageId::generate(),
    );
    let held = s
        .reserve_many(
            &a,
            &[
                (&m1, Money(60)),
                (&m2, Money(60)),
                (&m1, Money(60)),
                (&m3, Money(40)),
            ],
            2,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        held,
        vec![
            Reservation::Held {
                available: Money(40)
            },
            Reservation::Insufficient {
                available: Money(40)
            },
            Reservation::Held {
                available: Money(40)
            },
            Reservation::Held {
                available: Money(0)
            },
        ],
        "a later reservation sees the earlier holds; one per message"
    );
    assert_eq!(
        s.wallet(&a).await.ok().map(|w| w.reserved),
        Some(Money(100))
    );
    assert!(s.reserve_many(&a, &[], 3).await.is_ok_and(|v| v.is_empty()));

    use LimitDecision::*;
    let t0 = 1_700_000_000_000;
    let decisions = s
        .reach_patients("pf_1", &["+911", "+912", "911", "+913"], 2, t0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        decisions,
        vec![
            Allowed { used: 1 },
            Allowed { used: 2 },
            Allowed { used: 2 },
            Reached {
                limit: 2,
                frees_at_ms: t0 + crate::store::memory_tenancy::WINDOW_MS
            },
        ]
    );
    assert_eq!(
        s.reach_patient("pf_1", "+913", 2, t0 + 1).await.ok(),
        Some(Reached {
            limit: 2,
            frees_at_ms: t0 + crate::store::memory_tenancy::WINDOW_MS
        }),
        "the batch counted as the one-patient calls do"
    );
}

contract!(
    appointments_and_contacts_read_as_a_batch,
    reminded_appointments_and_pending_questions_are_written_together,
    accept_many_answers_as_accept_does,
    reservations_and_limits_run_in_order,
);
