//! Reminders falling due at the same moment run as one batch per clinic: each still gets the
//! rules of a reminder run alone (STOP, the free form inside an open window, stale versions,
//! derived ids), on real Redis + the sandbox.

mod common;

use std::time::Duration;

use clinic_gateway::domain::appointment::AppointmentId;
use clinic_gateway::domain::TenantId;
use clinic_gateway::workflows::Job;
use common::*;
use reqwest::Method;
use serde_json::json;
use whatsapp_cloud::wire::Content;

fn reminders_to(app: &TestApp, to: &str) -> usize {
    app.sim
        .sent()
        .iter()
        .filter(|r| {
            r.to == digits(to)
                && (template_name(r) == Some("visit_reminder")
                    || matches!(&r.message.content, Content::Interactive { .. }))
        })
        .count()
}

/// Waits until the schedule is empty: every job ran and was completed.
async fn all_jobs_done(app: &TestApp) -> bool {
    let store = app.store.clone();
    eventually_async(Duration::from_secs(15), async || {
        store.scheduled().await.unwrap_or(1) == 0
    })
    .await
}

#[actix_rt::test]
async fn reminders_due_together_keep_each_ones_rules() {
    let app = spawn_app(
        "rem_batch",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let tenant = TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let [plain, stopped, writing, twice, stale] = [70, 71, 72, 73, 74].map(patient);

    // One patient sent STOP, another just wrote (their window is open).
    app.sim
        .inject_inbound_text(NUMBER_A, digits(&stopped), "STOP");
    app.sim.inject_inbound_text(
        NUMBER_A,
        digits(&writing),
        "hello, is the clinic open on Sunday?",
    );
    let store = app.store.clone();
    let t = tenant.clone();
    let w = writing.clone();
    assert!(
        eventually_async(Duration::from_secs(10), async || {
            store.opted_out(&t, digits(&stopped)).await.unwrap_or(false)
                && store
                    .window_until(&t, digits(&w))
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        })
        .await,
        "STOP and the inbound message applied"
    );

    // Every appointment starts at the same moment, so the 24 h reminders fall due together.
    let start_ms = clinic_gateway::clock::now_ms() + DAY_MS + 3_000;
    let start = chrono::DateTime::from_timestamp_millis(start_ms)
        .unwrap_or_default()
        .to_rfc3339();
    let mut ids = Vec::new();
    for p in [&plain, &stopped, &writing, &twice, &stale] {
        let (s, a) = app
            .call(
                Method::POST,
                "/v1/appointments",
                KEY_A,
                Some(json!({"patient": {"phone": p, "name": "Meera"}, "start": start})),
            )
            .await;
        assert_eq!(s, 201, "{a}");
        ids.push(
            AppointmentId::parse(a["id"].as_str().unwrap_or_default())
                .unwrap_or_else(|| panic!("{a}")),
        );
    }
    let due_ms = start_ms - DAY_MS;
    // A second reminder of one appointment due at the same moment (e.g. both offsets came due
    // while the node was down), and a job of a version the appointment no longer has.
    for job in [
        Job::Reminder {
            appointment: ids[3].clone(),
            version: 1,
            offset_minutes: 1_441,
        },
        Job::Reminder {
            appointment: ids[4].clone(),
            version: 0,
            offset_minutes: 1_440,
        },
    ] {
        app.store
            .schedule(&tenant, &job, due_ms)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    app.store
        .unschedule(
            &tenant,
            &[Job::Reminder {
                appointment: ids[4].clone(),
                version: 1,
                offset_minutes: 1_440,
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert!(all_jobs_done(&app).await, "every job ran and completed");
    assert!(
        eventually(Duration::from_secs(10), || reminders_to(&app, &plain) == 1
            && reminders_to(&app, &writing) == 1
            && reminders_to(&app, &twice) == 2)
        .await,
        "sent: {:?}",
        app.sim
            .sent()
            .iter()
            .map(|r| (r.to.clone(), template_name(r).map(str::to_owned)))
            .collect::<Vec<_>>()
    );
    assert_eq!(templates_to(&app, &plain, "visit_reminder").len(), 1);
    assert_eq!(
        templates_to(&app, &writing, "visit_reminder").len(),
        0,
        "inside the window the reminder goes as free buttons"
    );
    assert_eq!(reminders_to(&app, &stopped), 0, "STOP respected");
    assert_eq!(
        reminders_to(&app, &stale),
        0,
        "a stale version sends nothing"
    );

    // What the batch wrote: each sent reminder's record (both of the appointment reminded
    // twice) and the patient's pending question.
    let offsets = |i: usize| {
        let store = app.store.clone();
        let (t, id) = (tenant.clone(), ids[i].clone());
        async move {
            let a = store
                .appointment(&t, &id)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("appointment {id}"));
            let mut o: Vec<u32> = a.reminders.iter().map(|r| r.offset_minutes).collect();
            o.sort_unstable();
            o
        }
    };
    assert_eq!(offsets(0).await, vec![1_440]);
    assert_eq!(offsets(1).await, Vec::<u32>::new());
    assert_eq!(offsets(2).await, vec![1_440]);
    assert_eq!(offsets(3).await, vec![1_440, 1_441]);
    assert_eq!(offsets(4).await, Vec::<u32>::new());
    for (i, p) in [(0, &plain), (2, &writing), (3, &twice)] {
        assert_eq!(
            app.store.pending(&tenant, digits(p)).await.ok().flatten(),
            Some(ids[i].clone()),
            "pending question of {p}"
        );
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            "clinic_gateway_touchpoints_total{result=\"accepted\",touchpoint=\"reminder\"} 4"
        ) && metrics.contains(
            "clinic_gateway_touchpoints_total{result=\"refused\",touchpoint=\"reminder\"} 1"
        ),
        "{metrics}"
    );

    // The same job again (its node died before completing it): nothing is sent twice and the
    // record is not duplicated.
    app.store
        .schedule(
            &tenant,
            &Job::Reminder {
                appointment: ids[0].clone(),
                version: 1,
                offset_minutes: 1_440,
            },
            due_ms,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(all_jobs_done(&app).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reminders_to(&app, &plain), 1, "sent once");
    assert_eq!(offsets(0).await, vec![1_440]);
}
