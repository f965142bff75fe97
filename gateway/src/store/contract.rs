//! The store contract: one suite, run against `MemoryStore` and against `RedisStore` on a real
//! Redis (see `crate::testing`), each Redis case under its own key prefix. A case passing on both
//! is what proves the Redis scripts and the memory store agree.

use std::time::Duration;

use whatsapp_cloud::wire::{Content, Text};

use super::inbox::InboxStore;
use super::leases::{Fence, LeaseStore, Leased};
use super::rate::RateStore;
use super::{
    Accepted, AttemptOutcome, IdempotencyClaim, Promoted, QueueDepth, QueueEntry, StatusOutcome,
    Store, StoreError,
};
use crate::domain::message::{MessageRecord, TimelineEvent};
use crate::domain::{
    Lane, MessageError, MessageId, MessageState, NewMessage, PhoneNumberId, StatusUpdate, TenantId,
    E164,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn number(s: &str) -> PhoneNumberId {
    PhoneNumberId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn msg_on(t: &str, n: &str, lane: Lane, created_ms: i64) -> NewMessage {
    NewMessage {
        id: MessageId::generate(),
        tenant: tenant(t),
        number: number(n),
        to: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
        lane,
        content: Content::Text {
            text: Text {
                body: "Your report is ready / आपकी रिपोर्ट".into(),
                preview_url: false,
            },
        },
        deadline_ms: Some(created_ms + 3_600_000),
        created_ms,
        broadcast: None,
        touchpoint: None,
        retain_days: None,
    }
}

fn msg(lane: Lane) -> NewMessage {
    msg_on("clinic_a", "1001", lane, 1_700_000_000_000)
}

fn err(code: i64, detail: &str) -> MessageError {
    MessageError {
        code,
        title: "title".into(),
        detail: detail.into(),
    }
}

fn status(wamid: &str, state: MessageState, at_ms: i64, id: Option<&MessageId>) -> StatusUpdate {
    StatusUpdate {
        wamid: wamid.into(),
        state,
        at_ms,
        message: id.cloned(),
        error: None,
    }
}

async fn accept_ok(s: &dyn Store, m: &NewMessage) {
    match s.accept(m, 100).await {
        Ok(Accepted::Created) => {}
        other => panic!("accept: {other:?}"),
    }
}

async fn claim_ids(
    s: &dyn Store,
    n: &PhoneNumberId,
    lane: Lane,
    consumer: &str,
    max: usize,
) -> Vec<MessageId> {
    s.claim(n, lane, consumer, max)
        .await
        .unwrap_or_else(|e| panic!("claim: {e}"))
        .into_iter()
        .map(|e| e.message)
        .collect()
}

async fn record(s: &dyn Store, m: &NewMessage) -> MessageRecord {
    s.load(&m.number, &m.id)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"))
        .unwrap_or_else(|| panic!("record {} missing", m.id))
}

async fn depth(s: &dyn Store, n: &PhoneNumberId) -> QueueDepth {
    s.depth(n).await.unwrap_or_else(|e| panic!("depth: {e}"))
}

/// Accepted by Meta with `wamid` after one attempt.
async fn accepted(s: &dyn Store, m: &NewMessage, wamid: &str) {
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 10).await.ok(),
        Some(Some(1))
    );
    let r = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Accepted {
                wamid: wamid.into(),
            },
            20,
        )
        .await;
    assert_eq!(r.ok(), Some(Some(MessageState::Accepted)));
}

async fn apply(s: &dyn Store, m: &NewMessage, u: &StatusUpdate) -> StatusOutcome {
    s.apply_status(&m.number, u)
        .await
        .unwrap_or_else(|e| panic!("apply_status: {e}"))
}

fn applied(m: &NewMessage, state: MessageState) -> StatusOutcome {
    StatusOutcome::Applied {
        tenant: m.tenant.clone(),
        id: m.id.clone(),
        state,
        touchpoint: m.touchpoint.clone(),
    }
}

fn events(r: &MessageRecord) -> Vec<(String, Option<String>)> {
    r.timeline
        .iter()
        .map(|e| (e.event.clone(), e.detail.clone()))
        .collect()
}

fn ev(event: &str, detail: Option<&str>) -> (String, Option<String>) {
    (event.to_owned(), detail.map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn accept_then_claim(s: &dyn Store) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    assert_eq!(
        record(s, &m).await,
        MessageRecord::new(m.clone()),
        "the stored record round-trips"
    );
    let got = s
        .claim(&m.number, Lane::Care, "c1", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, m.id);
    assert_eq!(got[0].lane, Lane::Care);
    assert_eq!(got[0].number, m.number);
    assert!(!got[0].entry_id.is_empty());
    assert!(
        claim_ids(s, &m.number, Lane::Care, "c1", 10)
            .await
            .is_empty(),
        "an entry is delivered once"
    );
    assert!(
        claim_ids(s, &number("4242"), Lane::Care, "c1", 10)
            .await
            .is_empty(),
        "an unused number has nothing"
    );
    assert!(claim_ids(s, &m.number, Lane::Care, "c1", 0)
        .await
        .is_empty());
}

async fn accept_is_idempotent(s: &dyn Store) {
    let m = msg(Lane::Reminders);
    accept_ok(s, &m).await;
    // Even with a different body, the id decides: nothing is overwritten or queued again.
    let mut again = m.clone();
    again.created_ms += 5;
    assert!(matches!(
        s.accept(&again, 100).await,
        Ok(Accepted::AlreadyExists)
    ));
    assert_eq!(record(s, &m).await.message, m);
    assert_eq!(depth(s, &m.number).await.ready, [0, 1, 0]);
    assert_eq!(
        claim_ids(s, &m.number, Lane::Reminders, "c", 10).await,
        vec![m.id.clone()]
    );
    assert!(
        matches!(s.accept(&m, 100).await, Ok(Accepted::AlreadyExists)),
        "also while in flight"
    );
    assert!(claim_ids(s, &m.number, Lane::Reminders, "c", 10)
        .await
        .is_empty());
}

async fn queue_full_is_bounded_per_lane(s: &dyn Store) {
    let a = msg(Lane::Bulk);
    let b = msg(Lane::Bulk);
    let c = msg(Lane::Bulk);
    assert!(matches!(s.accept(&a, 2).await, Ok(Accepted::Created)));
    assert!(matches!(s.accept(&b, 2).await, Ok(Accepted::Created)));
    match s.accept(&c, 2).await {
        Err(StoreError::QueueFull(n)) => assert_eq!(n, c.number),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert!(
        s.load(&c.number, &c.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "nothing written"
    );
    assert!(
        matches!(s.accept(&a, 2).await, Ok(Accepted::AlreadyExists)),
        "a known id is not refused"
    );
    let care = msg(Lane::Care);
    assert!(
        matches!(s.accept(&care, 2).await, Ok(Accepted::Created)),
        "other lanes have their own bound"
    );
    // The bound counts entries waiting, not entries in flight.
    assert_eq!(
        claim_ids(s, &a.number, Lane::Bulk, "c", 1).await,
        vec![a.id.clone()]
    );
    assert!(matches!(s.accept(&c, 2).await, Ok(Accepted::Created)));
    assert!(matches!(
        s.accept(&msg(Lane::Bulk), 0).await,
        Err(StoreError::QueueFull(_))
    ));
    assert_eq!(
        depth(s, &a.number).await,
        QueueDepth {
            ready: [1, 0, 2],
            in_flight: 1,
            delayed: 0
        }
    );
}

async fn claim_keeps_order_and_lanes(s: &dyn Store) {
    let care: Vec<NewMessage> = (0..3).map(|_| msg(Lane::Care)).collect();
    let bulk: Vec<NewMessage> = (0..2).map(|_| msg(Lane::Bulk)).collect();
    for (i, m) in care.iter().enumerate() {
        accept_ok(s, m).await;
        if let Some(b) = bulk.get(i) {
            accept_ok(s, b).await;
        }
    }
    let n = &care[0].number;
    assert!(claim_ids(s, n, Lane::Reminders, "c", 10).await.is_empty());
    assert_eq!(
        claim_ids(s, n, Lane::Care, "c", 2).await,
        vec![care[0].id.clone(), care[1].id.clone()]
    );
    assert_eq!(
        claim_ids(s, n, Lane::Care, "other", 10).await,
        vec![care[2].id.clone()]
    );
    assert_eq!(
        claim_ids(s, n, Lane::Bulk, "c", 10).await,
        vec![bulk[0].id.clone(), bulk[1].id.clone()]
    );
    // Another number's lanes are separate.
    let elsewhere = msg_on("clinic_a", "2002", Lane::Care, 1);
    accept_ok(s, &elsewhere).await;
    assert!(claim_ids(s, n, Lane::Care, "c", 10).await.is_empty());
    assert_eq!(
        claim_ids(s, &elsewhere.number, Lane::Care, "c", 10).await,
        vec![elsewhere.id.clone()]
    );
}

async fn ack_removes_the_entry(s: &dyn Store) {
    let m = msg(Lane::Care);
    let k = msg(Lane::Care);
    accept_ok(s, &m).await;
    accept_ok(s, &k).await;
    let got = s
        .claim(&m.number, Lane::Care, "c", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        depth(s, &m.number).await,
        QueueDepth {
            ready: [0, 0, 0],
            in_flight: 2,
            delayed: 0
        }
    );
    s.ack(&got[0]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(s, &m.number).await.in_flight, 1);
    s.ack(&got[0])
        .await
        .unwrap_or_else(|e| panic!("ack twice: {e}"));
    let back = s
        .reclaim(&m.number, Lane::Care, "d", 0, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec![k.id.clone()],
        "acked entries never come back"
    );
    s.ack(&back[0]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(s, &m.number).await, QueueDepth::default());
    assert!(s
        .reclaim(&m.number, Lane::Care, "d", 0, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
}

async fn reclaim_takes_over_idle_entries(s: &dyn Store) {
    let a = msg(Lane::Reminders);
    let b = msg(Lane::Reminders);
    let other_lane = msg(Lane::Care);
    for m in [&a, &b, &other_lane] {
        accept_ok(s, m).await;
    }
    let n = &a.number;
    // Consumer "crashed" claims everything, then dies without acknowledging.
    assert_eq!(
        claim_ids(s, n, Lane::Reminders, "crashed", 10).await.len(),
        2
    );
    assert_eq!(claim_ids(s, n, Lane::Care, "crashed", 10).await.len(), 1);
    let none = s
        .reclaim(n, Lane::Reminders, "rescuer", 60_000, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "not idle long enough: {none:?}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let one = s
        .reclaim(n, Lane::Reminders, "rescuer", 100, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        one.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec![a.id.clone()],
        "bounded by max, oldest first"
    );
    assert_eq!(one[0].lane, Lane::Reminders);
    let rest = s
        .reclaim(n, Lane::Reminders, "rescuer", 100, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rest.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec![b.id.clone()],
        "only this lane's entries"
    );
    // Taking over resets the idle time.
    assert!(s
        .reclaim(n, Lane::Reminders, "third", 100, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    s.ack(&one[0]).await.unwrap_or_else(|e| panic!("{e}"));
    s.ack(&rest[0]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        depth(s, n).await,
        QueueDepth {
            ready: [0, 0, 0],
            in_flight: 1,
            delayed: 0
        }
    );
    let care = s
        .reclaim(n, Lane::Care, "rescuer", 100, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        care.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec![other_lane.id.clone()]
    );
}

fn moved(p: Result<Promoted, StoreError>) -> Option<usize> {
    p.ok().map(|p| p.moved)
}

/// When the number's earliest scheduled message is due: a promotion that moves nothing says.
async fn next_due(s: &dyn Store, n: &PhoneNumberId) -> Option<Option<i64>> {
    s.promote_due(n, 0, 0).await.ok().map(|p| p.next_due)
}

async fn defer_and_promote_due(s: &dyn Store) {
    let early = msg(Lane::Care);
    let late = msg(Lane::Bulk);
    accept_ok(s, &early).await;
    accept_ok(s, &late).await;
    let n = early.number.clone();
    let care = s
        .claim(&n, Lane::Care, "c", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bulk = s
        .claim(&n, Lane::Bulk, "c", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_due(s, &n).await, Some(None));
    s.defer(&care[0], 1_700_000_001_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.defer(&bulk[0], 1_700_000_005_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Deferring an entry that is no longer in flight changes nothing.
    s.defer(&bulk[0], 1_700_000_000_500)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [0, 0, 0],
            in_flight: 0,
            delayed: 2
        }
    );
    assert_eq!(next_due(s, &n).await, Some(Some(1_700_000_001_000)));
    assert_eq!(
        s.promote_due(&n, 1_700_000_000_999, 10).await.ok(),
        Some(Promoted {
            moved: 0,
            next_due: Some(1_700_000_001_000)
        })
    );
    assert_eq!(
        s.promote_due(&n, 1_700_000_001_000, 10).await.ok(),
        Some(Promoted {
            moved: 1,
            next_due: Some(1_700_000_005_000)
        }),
        "moved the due one, and says when the other is due"
    );
    assert!(
        claim_ids(s, &n, Lane::Bulk, "c", 10).await.is_empty(),
        "not due yet"
    );
    assert_eq!(
        claim_ids(s, &n, Lane::Care, "c", 10).await,
        vec![early.id.clone()],
        "back in its own lane"
    );
    assert_eq!(next_due(s, &n).await, Some(Some(1_700_000_005_000)));
    assert_eq!(
        s.promote_due(&n, 1_800_000_000_000, 10).await.ok(),
        Some(Promoted {
            moved: 1,
            next_due: None
        })
    );
    assert_eq!(
        claim_ids(s, &n, Lane::Bulk, "c", 10).await,
        vec![late.id.clone()]
    );
    assert_eq!(next_due(s, &n).await, Some(None));
    assert_eq!(
        moved(s.promote_due(&n, 1_800_000_000_000, 10).await),
        Some(0)
    );
    assert_eq!(
        s.promote_due(&number("9999"), 1_800_000_000_000, 10)
            .await
            .ok(),
        Some(Promoted::default())
    );
}

async fn promote_due_is_bounded_and_ordered(s: &dyn Store) {
    let ms: Vec<NewMessage> = (0..3).map(|_| msg(Lane::Reminders)).collect();
    for m in &ms {
        accept_ok(s, m).await;
    }
    let n = ms[0].number.clone();
    let entries = s
        .claim(&n, Lane::Reminders, "c", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Scheduled in reverse: the last message is due first.
    for (i, e) in entries.iter().enumerate() {
        s.defer(e, 1_000 - i as i64 * 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(next_due(s, &n).await, Some(Some(800)));
    assert_eq!(moved(s.promote_due(&n, 5_000, 2).await), Some(2));
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [0, 2, 0],
            in_flight: 0,
            delayed: 1
        }
    );
    assert_eq!(
        claim_ids(s, &n, Lane::Reminders, "c", 10).await,
        vec![ms[2].id.clone(), ms[1].id.clone()]
    );
    assert_eq!(
        s.promote_due(&n, 5_000, 0).await.ok(),
        Some(Promoted {
            moved: 0,
            next_due: Some(1_000)
        }),
        "nothing moved, the next due time still told"
    );
    assert_eq!(moved(s.promote_due(&n, 5_000, 2).await), Some(1));
    assert_eq!(
        claim_ids(s, &n, Lane::Reminders, "c", 10).await,
        vec![ms[0].id.clone()]
    );
}

async fn depth_counts_every_place(s: &dyn Store) {
    let n = number("1001");
    assert_eq!(depth(s, &n).await, QueueDepth::default());
    let ms = [
        msg(Lane::Care),
        msg(Lane::Care),
        msg(Lane::Reminders),
        msg(Lane::Bulk),
        msg(Lane::Bulk),
        msg(Lane::Bulk),
    ];
    for m in &ms {
        accept_ok(s, m).await;
    }
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [2, 1, 3],
            in_flight: 0,
            delayed: 0
        }
    );
    let c = s
        .claim(&n, Lane::Care, "c", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = s
        .claim(&n, Lane::Bulk, "c", 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [1, 1, 1],
            in_flight: 3,
            delayed: 0
        }
    );
    s.defer(&b[0], 50).await.unwrap_or_else(|e| panic!("{e}"));
    s.ack(&c[0]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [1, 1, 1],
            in_flight: 1,
            delayed: 1
        }
    );
    assert_eq!(moved(s.promote_due(&n, 50, 10).await), Some(1));
    assert_eq!(
        depth(s, &n).await,
        QueueDepth {
            ready: [1, 1, 2],
            in_flight: 1,
            delayed: 0
        }
    );
}

async fn begin_attempt_counts_and_stops_once_meta_has_it(s: &dyn Store) {
    let m = msg(Lane::Care);
    let unknown = MessageId::generate();
    assert_eq!(
        s.begin_attempt(&m.number, &unknown, 1).await.ok(),
        Some(None)
    );
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 100).await.ok(),
        Some(Some(1))
    );
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.attempts, r.send_started_ms),
        (MessageState::Sending, 1, Some(100))
    );
    // `sending` without a wamid (a crash, a reconciliation): may be tried again.
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 200).await.ok(),
        Some(Some(2))
    );
    assert_eq!(record(s, &m).await.send_started_ms, Some(200));
    // A status arrived for it: Meta has it, never send again.
    let kept = apply(
        s,
        &m,
        &status("wamid.B1", MessageState::Sent, 250, Some(&m.id)),
    )
    .await;
    assert_eq!(kept, StatusOutcome::KeptEarly { id: m.id.clone() });
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 300).await.ok(),
        Some(None)
    );
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.attempts, r.wamid.as_deref()),
        (MessageState::Sending, 2, Some("wamid.B1"))
    );

    let other = msg(Lane::Care);
    accept_ok(s, &other).await;
    accepted(s, &other, "wamid.B2").await;
    assert_eq!(
        s.begin_attempt(&other.number, &other.id, 400).await.ok(),
        Some(None)
    );
    assert_eq!(record(s, &other).await.attempts, 1);
}

async fn finish_attempt_accepted(s: &dyn Store) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 10).await.ok(),
        Some(Some(1))
    );
    let r = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Accepted {
                wamid: "wamid.A".into(),
            },
            20,
        )
        .await;
    assert_eq!(r.ok(), Some(Some(MessageState::Accepted)));
    let rec = record(s, &m).await;
    assert_eq!(
        (rec.state, rec.wamid.as_deref()),
        (MessageState::Accepted, Some("wamid.A"))
    );
    // It left the gateway: later conclusions change nothing.
    let again = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Retry { error: err(1, "x") },
            30,
        )
        .await;
    assert_eq!(again.ok(), Some(None));
    assert_eq!(record(s, &m).await, rec);
    // The wamid is indexed: a status without our id finds it.
    let by_wamid = apply(s, &m, &status("wamid.A", MessageState::Sent, 40, None)).await;
    assert_eq!(by_wamid, applied(&m, MessageState::Sent));
    let unknown = s
        .finish_attempt(
            &m.number,
            &MessageId::generate(),
            &AttemptOutcome::Accepted { wamid: "w".into() },
            1,
        )
        .await;
    assert_eq!(unknown.ok(), Some(None));
}

async fn finish_attempt_retry_and_unknown(s: &dyn Store) {
    let m = msg(Lane::Reminders);
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 10).await.ok(),
        Some(Some(1))
    );
    let retry = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Retry {
                error: err(130429, "rate limit"),
            },
            20,
        )
        .await;
    assert_eq!(retry.ok(), Some(Some(MessageState::Queued)));
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.attempts, r.error.clone()),
        (MessageState::Queued, 1, Some(err(130429, "rate limit")))
    );
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 30).await.ok(),
        Some(Some(2))
    );
    let unknown = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Unknown {
                error: err(-1, "timeout"),
            },
            40,
        )
        .await;
    assert_eq!(unknown.ok(), Some(Some(MessageState::Sending)));
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.send_started_ms, r.error.clone()),
        (MessageState::Sending, Some(30), Some(err(-1, "timeout")))
    );
    assert_eq!(
        events(&r),
        vec![
            ev("queued", None),
            ev("sending", Some("attempt 1")),
            ev("retry", Some("(130429) rate limit")),
            ev("sending", Some("attempt 2")),
            ev(
                "outcome-unknown",
                Some("(-1) timeout: waiting for a status")
            ),
        ]
    );
    assert_eq!(
        r.timeline.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![m.created_ms, 10, 20, 30, 40]
    );
}

async fn finish_attempt_ended(s: &dyn Store) {
    let failed = msg(Lane::Care);
    accept_ok(s, &failed).await;
    assert_eq!(
        s.begin_attempt(&failed.number, &failed.id, 10).await.ok(),
        Some(Some(1))
    );
    let end = AttemptOutcome::Ended {
        state: MessageState::Failed,
        error: Some(err(131026, "undeliverable")),
    };
    assert_eq!(
        s.finish_attempt(&failed.number, &failed.id, &end, 20)
            .await
            .ok(),
        Some(Some(MessageState::Failed))
    );
    let r = record(s, &failed).await;
    assert_eq!(
        (r.state, r.error.clone()),
        (MessageState::Failed, Some(err(131026, "undeliverable")))
    );
    assert_eq!(
        r.timeline
            .last()
            .map(|e| (e.event.as_str(), e.detail.as_deref())),
        Some(("failed", Some("(131026) undeliverable")))
    );
    assert_eq!(
        s.begin_attempt(&failed.number, &failed.id, 30).await.ok(),
        Some(None),
        "a failed message is never sent"
    );
    let dup = apply(
        s,
        &failed,
        &status("wamid.F", MessageState::Read, 40, Some(&failed.id)),
    )
    .await;
    assert_eq!(dup, StatusOutcome::Duplicate);

    // Expired before any attempt, keeping an earlier retry's error.
    let expired = msg(Lane::Reminders);
    accept_ok(s, &expired).await;
    assert_eq!(
        s.begin_attempt(&expired.number, &expired.id, 10).await.ok(),
        Some(Some(1))
    );
    let retry = AttemptOutcome::Retry {
        error: err(131000, "boom"),
    };
    assert_eq!(
        s.finish_attempt(&expired.number, &expired.id, &retry, 20)
            .await
            .ok(),
        Some(Some(MessageState::Queued))
    );
    let end = AttemptOutcome::Ended {
        state: MessageState::Expired,
        error: None,
    };
    assert_eq!(
        s.finish_attempt(&expired.number, &expired.id, &end, 30)
            .await
            .ok(),
        Some(Some(MessageState::Expired))
    );
    let r = record(s, &expired).await;
    assert_eq!(
        (r.state, r.error.clone()),
        (MessageState::Expired, Some(err(131000, "boom")))
    );
    assert_eq!(
        r.timeline
            .last()
            .map(|e| (e.event.as_str(), e.detail.clone(), e.at_ms)),
        Some(("expired", None, 30))
    );
    assert_eq!(
        s.finish_attempt(&expired.number, &expired.id, &end, 40)
            .await
            .ok(),
        Some(None)
    );
}

async fn statuses_are_monotonic(s: &dyn Store) {
    use MessageState::*;
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    accepted(s, &m, "wamid.M").await;
    let id = Some(&m.id);
    assert_eq!(
        apply(s, &m, &status("wamid.M", Delivered, 100, id)).await,
        applied(&m, Delivered)
    );
    assert_eq!(
        apply(s, &m, &status("wamid.M", Sent, 90, id)).await,
        StatusOutcome::Duplicate,
        "late sent"
    );
    assert_eq!(
        apply(s, &m, &status("wamid.M", Delivered, 100, id)).await,
        StatusOutcome::Duplicate
    );
    let mut failed = status("wamid.M", Failed, 110, id);
    failed.error = Some(err(131047, "window"));
    assert_eq!(
        apply(s, &m, &failed).await,
        StatusOutcome::Duplicate,
        "delivered is not failed later"
    );
    assert_eq!(
        apply(s, &m, &status("wamid.M", Read, 120, id)).await,
        applied(&m, Read)
    );
    assert_eq!(
        apply(s, &m, &status("wamid.M", Read, 121, id)).await,
        StatusOutcome::Duplicate
    );
    assert_eq!(
        apply(s, &m, &status("wamid.M", Queued, 122, id)).await,
        StatusOutcome::Duplicate,
        "not a status"
    );
    let r = record(s, &m).await;
    assert_eq!((r.state, r.error.clone()), (Read, None));
    assert_eq!(
        events(&r),
        vec![
            ev("queued", None),
            ev("sending", Some("attempt 1")),
            ev("accepted", Some("wamid.M")),
            ev("delivered", None),
            ev("read", None),
        ]
    );

    let f = msg(Lane::Care);
    accept_ok(s, &f).await;
    accepted(s, &f, "wamid.F").await;
    assert_eq!(
        apply(s, &f, &status("wamid.F", Sent, 100, None)).await,
        applied(&f, Sent)
    );
    let mut failed = status("wamid.F", Failed, 110, None);
    failed.error = Some(err(131049, "ecosystem"));
    assert_eq!(
        apply(s, &f, &failed).await,
        applied(&f, Failed),
        "failed after sent is applied"
    );
    assert_eq!(
        apply(s, &f, &status("wamid.F", Read, 120, None)).await,
        StatusOutcome::Duplicate,
        "read after failed"
    );
    let r = record(s, &f).await;
    assert_eq!(
        (r.state, r.error.clone()),
        (Failed, Some(err(131049, "ecosystem")))
    );
    assert_eq!(
        r.timeline
            .last()
            .map(|e| (e.event.as_str(), e.detail.as_deref(), e.at_ms)),
        Some(("failed", Some("(131049) ecosystem"), 110))
    );
}

async fn early_sent_is_folded_in_on_accept(s: &dyn Store) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 10).await.ok(),
        Some(Some(1))
    );
    // The webhook beats the send call's response.
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.E", MessageState::Sent, 15, Some(&m.id))
        )
        .await,
        StatusOutcome::KeptEarly { id: m.id.clone() }
    );
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.E", MessageState::Sent, 15, Some(&m.id))
        )
        .await,
        StatusOutcome::Duplicate
    );
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.early, r.wamid.as_deref()),
        (
            MessageState::Sending,
            Some(MessageState::Sent),
            Some("wamid.E")
        )
    );
    let fin = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Accepted {
                wamid: "wamid.E".into(),
            },
            20,
        )
        .await;
    assert_eq!(fin.ok(), Some(Some(MessageState::Sent)));
    let r = record(s, &m).await;
    assert_eq!(r.state, MessageState::Sent);
    assert_eq!(
        events(&r),
        vec![
            ev("queued", None),
            ev("sending", Some("attempt 1")),
            ev("early-sent", None),
            ev("accepted", Some("wamid.E")),
            ev("sent", Some("status received while sending")),
        ]
    );
    assert_eq!(
        apply(s, &m, &status("wamid.E", MessageState::Delivered, 30, None)).await,
        applied(&m, MessageState::Delivered)
    );
}

async fn early_failed_is_folded_in_on_accept(s: &dyn Store) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 10).await.ok(),
        Some(Some(1))
    );
    let mut failed = status("wamid.X", MessageState::Failed, 12, Some(&m.id));
    failed.error = Some(err(131026, "not on WhatsApp"));
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.X", MessageState::Sent, 11, Some(&m.id))
        )
        .await,
        StatusOutcome::KeptEarly { id: m.id.clone() }
    );
    assert_eq!(
        apply(s, &m, &failed).await,
        StatusOutcome::KeptEarly { id: m.id.clone() }
    );
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.X", MessageState::Read, 13, Some(&m.id))
        )
        .await,
        StatusOutcome::Duplicate
    );
    let fin = s
        .finish_attempt(
            &m.number,
            &m.id,
            &AttemptOutcome::Accepted {
                wamid: "wamid.X".into(),
            },
            20,
        )
        .await;
    assert_eq!(fin.ok(), Some(Some(MessageState::Failed)));
    let r = record(s, &m).await;
    assert_eq!(
        (r.state, r.error.clone(), r.early),
        (
            MessageState::Failed,
            Some(err(131026, "not on WhatsApp")),
            Some(MessageState::Failed)
        )
    );
    assert_eq!(
        events(&r)[2..].to_vec(),
        vec![
            ev("early-sent", None),
            ev("early-failed", None),
            ev("accepted", Some("wamid.X")),
            ev("failed", Some("status received while sending")),
        ]
    );
}

async fn status_lookup_by_wamid_and_unknown(s: &dyn Store) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    // Nothing known yet about this wamid, and no id: unknown.
    assert_eq!(
        apply(s, &m, &status("wamid.L", MessageState::Sent, 5, None)).await,
        StatusOutcome::UnknownMessage
    );
    accepted(s, &m, "wamid.L").await;
    assert_eq!(
        apply(s, &m, &status("wamid.L", MessageState::Sent, 30, None)).await,
        applied(&m, MessageState::Sent)
    );
    // An id that is not on this number falls back to the wamid.
    let stranger = MessageId::generate();
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.L", MessageState::Delivered, 40, Some(&stranger))
        )
        .await,
        applied(&m, MessageState::Delivered)
    );
    assert_eq!(
        apply(
            s,
            &m,
            &status("wamid.nope", MessageState::Read, 50, Some(&stranger))
        )
        .await,
        StatusOutcome::UnknownMessage
    );
    // Another number does not see this number's messages, by id or by wamid.
    let other = number("3003");
    let r = s
        .apply_status(
            &other,
            &status("wamid.L", MessageState::Read, 60, Some(&m.id)),
        )
        .await;
    assert_eq!(r.ok(), Some(StatusOutcome::UnknownMessage));
    assert_eq!(record(s, &m).await.state, MessageState::Delivered);
    // A status that names our id teaches the store its wamid (the webhook beat the send call).
    let early = msg(Lane::Care);
    accept_ok(s, &early).await;
    assert_eq!(
        s.begin_attempt(&early.number, &early.id, 10).await.ok(),
        Some(Some(1))
    );
    assert_eq!(
        apply(
            s,
            &early,
            &status("wamid.K", MessageState::Sent, 20, Some(&early.id))
        )
        .await,
        StatusOutcome::KeptEarly {
            id: early.id.clone()
        }
    );
    assert_eq!(
        apply(
            s,
            &early,
            &status("wamid.K", MessageState::Delivered, 25, None)
        )
        .await,
        StatusOutcome::KeptEarly {
            id: early.id.clone()
        }
    );
    assert_eq!(record(s, &early).await.early, Some(MessageState::Delivered));
}

async fn tenants_are_isolated(s: &dyn Store) {
    let m = msg_on("clinic_a", "1001", Lane::Care, 1_000);
    accept_ok(s, &m).await;
    let mine = s
        .message(&m.tenant, &m.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mine, Some(MessageRecord::new(m.clone())));
    assert_eq!(s.message(&tenant("clinic_b"), &m.id).await.ok(), Some(None));
    assert_eq!(
        s.message(&m.tenant, &MessageId::generate()).await.ok(),
        Some(None)
    );
    assert_eq!(s.load(&number("2002"), &m.id).await.ok(), Some(None));
    // A second tenant on the same number, same message id: refused as already existing, and
    // neither tenant can read through the other.
    let mut clash = msg_on("clinic_b", "1001", Lane::Care, 2_000);
    clash.id = m.id.clone();
    assert!(matches!(
        s.accept(&clash, 100).await,
        Ok(Accepted::AlreadyExists)
    ));
    assert_eq!(s.message(&tenant("clinic_b"), &m.id).await.ok(), Some(None));
    assert_eq!(
        s.message(&m.tenant, &m.id)
            .await
            .ok()
            .flatten()
            .map(|r| r.message.tenant),
        Some(m.tenant.clone())
    );
    // After changes, the owner sees them.
    accepted(s, &m, "wamid.T").await;
    let seen = s
        .message(&m.tenant, &m.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        seen.map(|r| (r.state, r.wamid)),
        Some((MessageState::Accepted, Some("wamid.T".into())))
    );
}

async fn idempotency_keys(s: &dyn Store) {
    let t = tenant("clinic_a");
    let first = MessageId::generate();
    let second = MessageId::generate();
    let fp = "sha256:ab|cd";
    assert_eq!(
        s.claim_idempotency(&t, "key-1", fp, &first, 3600)
            .await
            .ok(),
        Some(IdempotencyClaim::Fresh)
    );
    assert_eq!(
        s.claim_idempotency(&t, "key-1", "other", &second, 3600)
            .await
            .ok(),
        Some(IdempotencyClaim::Seen {
            fingerprint: fp.into(),
            message: first.clone()
        })
    );
    assert_eq!(
        s.claim_idempotency(&t, "key-1", fp, &second, 3600)
            .await
            .ok(),
        Some(IdempotencyClaim::Seen {
            fingerprint: fp.into(),
            message: first.clone()
        })
    );
    assert_eq!(
        s.claim_idempotency(&tenant("clinic_b"), "key-1", fp, &second, 3600)
            .await
            .ok(),
        Some(IdempotencyClaim::Fresh)
    );
    assert_eq!(
        s.claim_idempotency(&t, "key-2 / any bytes ✓", fp, &second, 3600)
            .await
            .ok(),
        Some(IdempotencyClaim::Fresh)
    );
}

async fn timeline_of_a_full_journey(s: &dyn Store) {
    use MessageState::*;
    let m = msg(Lane::Reminders);
    accept_ok(s, &m).await;
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 1_000).await.ok(),
        Some(Some(1))
    );
    let retry = AttemptOutcome::Retry {
        error: err(131000, "something went wrong"),
    };
    assert_eq!(
        s.finish_attempt(&m.number, &m.id, &retry, 1_100).await.ok(),
        Some(Some(Queued))
    );
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 2_000).await.ok(),
        Some(Some(2))
    );
    let ok = AttemptOutcome::Accepted {
        wamid: "wamid.J\"quoted\"/slash".into(),
    };
    assert_eq!(
        s.finish_attempt(&m.number, &m.id, &ok, 2_100).await.ok(),
        Some(Some(Accepted))
    );
    for (st, at) in [(Sent, 2_200), (Delivered, 2_300), (Read, 2_400)] {
        assert_eq!(
            apply(s, &m, &status("wamid.J\"quoted\"/slash", st, at, None)).await,
            applied(&m, st)
        );
    }
    let r = s
        .message(&m.tenant, &m.id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("message missing"));
    let expected = vec![
        TimelineEvent {
            at_ms: m.created_ms,
            event: "queued".into(),
            detail: None,
        },
        TimelineEvent {
            at_ms: 1_000,
            event: "sending".into(),
            detail: Some("attempt 1".into()),
        },
        TimelineEvent {
            at_ms: 1_100,
            event: "retry".into(),
            detail: Some("(131000) something went wrong".into()),
        },
        TimelineEvent {
            at_ms: 2_000,
            event: "sending".into(),
            detail: Some("attempt 2".into()),
        },
        TimelineEvent {
            at_ms: 2_100,
            event: "accepted".into(),
            detail: Some("wamid.J\"quoted\"/slash".into()),
        },
        TimelineEvent {
            at_ms: 2_200,
            event: "sent".into(),
            detail: None,
        },
        TimelineEvent {
            at_ms: 2_300,
            event: "delivered".into(),
            detail: None,
        },
        TimelineEvent {
            at_ms: 2_400,
            event: "read".into(),
            detail: None,
        },
    ];
    assert_eq!(r.timeline, expected);
    assert_eq!(
        (r.state, r.attempts, r.send_started_ms),
        (Read, 2, Some(2_000))
    );
    assert_eq!(
        r.error,
        Some(err(131000, "something went wrong")),
        "the last error is kept"
    );
    assert_eq!(r.message, m);
}

async fn concurrent_statuses_converge(s: &dyn Store) {
    use MessageState::*;
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    accepted(s, &m, "wamid.C").await;
    let updates: Vec<StatusUpdate> = [
        Sent, Delivered, Read, Sent, Delivered, Read, Delivered, Sent,
    ]
    .iter()
    .enumerate()
    .map(|(i, st)| {
        status(
            "wamid.C",
            *st,
            100 + i as i64,
            if i % 2 == 0 { Some(&m.id) } else { None },
        )
    })
    .collect();
    let outcomes =
        futures::future::join_all(updates.iter().map(|u| s.apply_status(&m.number, u))).await;
    let mut applied_n = 0;
    for o in outcomes {
        match o.unwrap_or_else(|e| panic!("apply_status: {e}")) {
            StatusOutcome::Applied { .. } => applied_n += 1,
            StatusOutcome::Duplicate => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let r = record(s, &m).await;
    assert_eq!(r.state, Read);
    assert!((1..=3).contains(&applied_n));
    assert_eq!(
        r.timeline.len(),
        3 + applied_n,
        "one history line per applied status: {:?}",
        r.timeline
    );
    // Concurrent attempts on a fresh message: each gets its own number.
    let n = msg(Lane::Care);
    accept_ok(s, &n).await;
    let begun =
        futures::future::join_all((0..4).map(|i| s.begin_attempt(&n.number, &n.id, i))).await;
    let mut got: Vec<u32> = begun
        .into_iter()
        .map(|b| b.ok().flatten().unwrap_or(0))
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 3, 4]);
}

async fn queue_entries_carry_what_ack_needs(s: &dyn Store) {
    let m = msg(Lane::Bulk);
    accept_ok(s, &m).await;
    let e = s
        .claim(&m.number, Lane::Bulk, "c", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = QueueEntry {
        number: m.number.clone(),
        lane: Lane::Bulk,
        entry_id: e[0].entry_id.clone(),
        message: m.id.clone(),
    };
    assert_eq!(e[0], rebuilt);
    s.ack(&rebuilt).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(s, &m.number).await, QueueDepth::default());
    s.ping().await.unwrap_or_else(|e| panic!("ping: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Runners

async fn redis_store(case: &str) -> super::RedisStore {
    let url = &crate::testing::shared_redis().url;
    let s = super::RedisStore::connect(url, &crate::testing::unique_prefix(case), 4)
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.ping()
        .await
        .unwrap_or_else(|e| panic!("redis at {url}: {e}"));
    s
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&crate::store::MemoryStore::new()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test]
                async fn $case() {
                    let s = super::redis_store(stringify!($case)).await;
                    super::$case(&s).await;
                }
            )*
        }
    };
}

contract!(
    a_clinics_inbox_is_taken_in_order_and_taken_over,
    a_clinics_api_budget_is_one_for_every_caller,
    leases_are_exclusive_renewable_and_released,
    leases_run_out_and_the_next_holder_gets_a_higher_token,
    a_send_starts_only_under_the_current_lease,
    live_nodes_are_those_whose_heartbeat_has_not_run_out,
    work_announcements_reach_subscribers,
    accept_then_claim,
    accept_is_idempotent,
    queue_full_is_bounded_per_lane,
    claim_keeps_order_and_lanes,
    ack_removes_the_entry,
    reclaim_takes_over_idle_entries,
    defer_and_promote_due,
    promote_due_is_bounded_and_ordered,
    depth_counts_every_place,
    begin_attempt_counts_and_stops_once_meta_has_it,
    finish_attempt_accepted,
    finish_attempt_retry_and_unknown,
    finish_attempt_ended,
    statuses_are_monotonic,
    early_sent_is_folded_in_on_accept,
    early_failed_is_folded_in_on_accept,
    status_lookup_by_wamid_and_unknown,
    tenants_are_isolated,
    idempotency_keys,
    timeline_of_a_full_journey,
    concurrent_statuses_converge,
    queue_entries_carry_what_ack_needs,
    erasure_takes_delivered_messages_to_the_patient_only,
);

// ---------------------------------------------------------------------------------------------
// Clinics' inbound queues

async fn a_clinics_inbox_is_taken_in_order_and_taken_over<S: Store + InboxStore>(s: &S) {
    let a = TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let b = TenantId::parse("clinic_b").unwrap_or_else(|e| panic!("{e}"));
    let bodies =
        |e: &[super::inbox::InboxEntry]| e.iter().map(|x| x.body.clone()).collect::<Vec<_>>();
    assert_eq!(
        s.next_inbound(&a, "node-1", true, 10).await.ok(),
        Some(vec![])
    );
    for m in ["one", "two", "three"] {
        s.push_inbound(&a, m)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.push_inbound(&b, "other")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = s
        .next_inbound(&a, "node-1", false, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bodies(&first), ["one", "two", "three"]);
    s.ack_inbound(&a, &first[0].id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Not acknowledged: read again, first, by the same consumer.
    let again = s
        .next_inbound(&a, "node-1", false, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bodies(&again), ["two", "three"]);
    // Another node takes the clinic over: what node-1 left is now node-2's, in order.
    let taken = s
        .next_inbound(&a, "node-2", true, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bodies(&taken), ["two", "three"]);
    for e in &taken {
        s.ack_inbound(&a, &e.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    s.push_inbound(&a, "four")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next = s
        .next_inbound(&a, "node-2", false, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bodies(&next), ["four"]);
    // The other clinic's queue is its own.
    let other = s
        .next_inbound(&b, "node-2", false, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bodies(&other), ["other"]);
}

// ---------------------------------------------------------------------------------------------
// The shared API rate limit

async fn a_clinics_api_budget_is_one_for_every_caller<S: Store + RateStore>(s: &S) {
    let a = TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let b = TenantId::parse("clinic_b").unwrap_or_else(|e| panic!("{e}"));
    // 2/s with bursts of 3: three at once (from any caller), then a refusal with a wait.
    for _ in 0..3 {
        assert_eq!(s.take_api_request(&a, 2, 3).await.ok(), Some(Ok(())));
    }
    match s.take_api_request(&a, 2, 3).await {
        Ok(Err(wait)) => assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        ),
        other => panic!("the fourth request at once was not refused: {other:?}"),
    }
    // Another clinic has its own budget.
    assert_eq!(s.take_api_request(&b, 2, 3).await.ok(), Some(Ok(())));
    // Half a second later one more request fits.
    tokio::time::sleep(Duration::from_millis(520)).await;
    assert_eq!(s.take_api_request(&a, 2, 3).await.ok(), Some(Ok(())));
}

// ---------------------------------------------------------------------------------------------
// Ownership leases

async fn leases_are_exclusive_renewable_and_released<S: Store + LeaseStore>(s: &S) {
    let n = number("1001");
    let a = s
        .take_lease(&Leased::Number((n).clone()), "node-a", 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a = a.unwrap_or_else(|| panic!("a free lease is taken"));
    assert_eq!(a.node, "node-a");
    assert_eq!(
        s.take_lease(&Leased::Number((n).clone()), "node-b", 10_000)
            .await
            .ok(),
        Some(None)
    );
    // Renewal keeps the token.
    assert_eq!(
        s.take_lease(&Leased::Number((n).clone()), "node-a", 10_000)
            .await
            .ok(),
        Some(Some(a.clone()))
    );
    assert_eq!(
        s.lease_holder(&Leased::Number((n).clone())).await.ok(),
        Some(Some(a.clone()))
    );
    // Only the holder releases.
    assert_eq!(
        s.release_lease(&Leased::Number((n).clone()), "node-b")
            .await
            .ok(),
        Some(false)
    );
    assert_eq!(
        s.release_lease(&Leased::Number((n).clone()), "node-a")
            .await
            .ok(),
        Some(true)
    );
    assert_eq!(
        s.lease_holder(&Leased::Number((n).clone())).await.ok(),
        Some(None)
    );
    let b = s
        .take_lease(&Leased::Number((n).clone()), "node-b", 10_000)
        .await
        .ok()
        .flatten();
    let b = b.unwrap_or_else(|| panic!("a released lease is free"));
    assert!(b.token > a.token, "{b:?} after {a:?}");
    // Another number is another lease.
    assert!(s
        .take_lease(&Leased::Number((number("1002")).clone()), "node-a", 10_000)
        .await
        .ok()
        .flatten()
        .is_some());
}

async fn leases_run_out_and_the_next_holder_gets_a_higher_token<S: Store + LeaseStore>(s: &S) {
    let n = number("1001");
    let a = s
        .take_lease(&Leased::Number((n).clone()), "node-a", 100)
        .await
        .ok()
        .flatten();
    let a = a.unwrap_or_else(|| panic!("taken"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        s.lease_holder(&Leased::Number((n).clone())).await.ok(),
        Some(None)
    );
    let b = s
        .take_lease(&Leased::Number((n).clone()), "node-b", 10_000)
        .await
        .ok()
        .flatten();
    let b = b.unwrap_or_else(|| panic!("a lease that ran out is free"));
    assert!(b.token > a.token);
    // The old holder renewing does not get it back.
    assert_eq!(
        s.take_lease(&Leased::Number((n).clone()), "node-a", 10_000)
            .await
            .ok(),
        Some(None)
    );
}

async fn a_send_starts_only_under_the_current_lease<S: Store + LeaseStore>(s: &S) {
    let m = msg(Lane::Care);
    accept_ok(s, &m).await;
    let a = s
        .take_lease(&Leased::Number((m.number).clone()), "node-a", 10_000)
        .await
        .ok()
        .flatten();
    let a = a.unwrap_or_else(|| panic!("taken"));
    // Not the lease's value: refused, nothing written.
    let stale = Fence {
        node: "node-a".into(),
        token: a.token + 7,
    };
    assert!(matches!(
        s.begin_fenced_attempt(&m.number, &m.id, 10, Some(&stale)).await,
        Err(StoreError::Fenced(ref n)) if *n == m.number
    ));
    let rec = s.load(&m.number, &m.id).await.ok().flatten();
    assert_eq!(
        rec.map(|r| (r.state, r.attempts)),
        Some((MessageState::Queued, 0))
    );
    assert_eq!(
        s.begin_fenced_attempt(&m.number, &m.id, 10, Some(&a))
            .await
            .ok(),
        Some(Some(1))
    );
    // The lease passes to node b: a's fence no longer starts anything, b's does.
    assert_eq!(
        s.release_lease(&Leased::Number((m.number).clone()), "node-a")
            .await
            .ok(),
        Some(true)
    );
    let b = s
        .take_lease(&Leased::Number((m.number).clone()), "node-b", 10_000)
        .await
        .ok()
        .flatten();
    let b = b.unwrap_or_else(|| panic!("taken"));
    assert!(matches!(
        s.begin_fenced_attempt(&m.number, &m.id, 20, Some(&a)).await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(
        s.begin_fenced_attempt(&m.number, &m.id, 30, Some(&b))
            .await
            .ok(),
        Some(Some(2))
    );
    // Unfenced (a single node) is unaffected by leases.
    assert_eq!(
        s.begin_attempt(&m.number, &m.id, 40).await.ok(),
        Some(Some(3))
    );
}

async fn live_nodes_are_those_whose_heartbeat_has_not_run_out<S: Store + LeaseStore>(s: &S) {
    let now = crate::clock::now_ms();
    s.heartbeat("node-b", now, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.heartbeat("node-a", now, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.heartbeat("node-gone", now - 5_000, 1_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.live_nodes(now).await.ok(),
        Some(vec!["node-a".to_owned(), "node-b".to_owned()])
    );
    // Later, b's heartbeat has run out.
    s.heartbeat("node-a", now + 20_000, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.live_nodes(now + 15_000).await.ok(),
        Some(vec!["node-a".to_owned()])
    );
}

async fn work_announcements_reach_subscribers<S: Store + LeaseStore>(s: &S) {
    use futures::StreamExt;
    let mut sub = s
        .work_announcements()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = number("1001");
    // The subscription may take a moment to be registered server-side: announce until heard.
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            s.announce_work(&Leased::Number(n.clone()))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if let Ok(Some(got)) =
                tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                return got;
            }
        }
    })
    .await;
    assert_eq!(heard.ok(), Some(Leased::Number(n)));
}

/// Delivered messages to the patient go; one still queued stays (and is counted), as do other
/// patients' and another clinic's messages to the same phone.
async fn erasure_takes_delivered_messages_to_the_patient_only(s: &dyn Store) {
    let delivered = msg(Lane::Care);
    let queued = msg(Lane::Care);
    let mut other_patient = msg(Lane::Care);
    other_patient.to = E164::parse("+919800000077").unwrap_or_else(|e| panic!("{e}"));
    let other_clinic = msg_on("clinic_b", "2002", Lane::Care, 1_700_000_000_000);
    for m in [&delivered, &queued, &other_patient, &other_clinic] {
        accept_ok(s, m).await;
    }
    for (m, w) in [
        (&delivered, "wamid.D"),
        (&other_patient, "wamid.O"),
        (&other_clinic, "wamid.C"),
    ] {
        accepted(s, m, w).await;
        assert!(matches!(
            apply(s, m, &status(w, MessageState::Delivered, 30, None)).await,
            StatusOutcome::Applied { .. }
        ));
    }
    let r = s
        .erase_messages_to(&delivered.tenant, &delivered.to)
        .await
        .unwrap_or_else(|e| panic!("erase: {e}"));
    assert_eq!(r, super::MessageErasure { erased: 1, live: 1 });
    let gone = s
        .load(&delivered.number, &delivered.id)
        .await
        .ok()
        .flatten();
    assert!(gone.is_none());
    assert!(s
        .message(&delivered.tenant, &delivered.id)
        .await
        .ok()
        .flatten()
        .is_none());
    // A late status for the erased message finds nothing.
    assert_eq!(
        apply(
            s,
            &delivered,
            &status("wamid.D", MessageState::Read, 40, None)
        )
        .await,
        StatusOutcome::UnknownMessage
    );
    for m in [&queued, &other_patient, &other_clinic] {
        record(s, m).await;
    }
    // Nothing left to erase but the queued one.
    let again = s
        .erase_messages_to(&delivered.tenant, &delivered.to)
        .await
        .unwrap_or_else(|e| panic!("erase: {e}"));
    assert_eq!(again, super::MessageErasure { erased: 0, live: 1 });
}

// ---------------------------------------------------------------------------------------------
// Redis only: what the memory store cannot show.

mod redis_only {
    use super::*;

    async fn raw(url: &str) -> crate::store::RedisConnection {
        crate::store::raw_connection(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn keys_use_the_prefix_and_one_hash_tag_per_script() {
        let url = crate::testing::shared_redis().url.clone();
        let prefix = crate::testing::unique_prefix("layout");
        let s =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        let m = msg(Lane::Care);
        accept_ok(&s, &m).await;
        let mut c = raw(&url).await;
        let n = format!("{prefix}{{n:1001}}");
        // A record still to be sent never expires.
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{n}:m:{}", m.id))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ttl, -1);
        accepted(&s, &m, "wamid.K").await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        keys.sort();
        let mut expected = vec![
            format!("{n}:m:{}", m.id),
            format!("{n}:q:care"),
            format!("{n}:tl:{}", m.id),
            format!("{n}:w:wamid.K"),
            format!("{prefix}{{t:clinic_a}}:m:{}", m.id),
            format!("{prefix}{{t:clinic_a}}:mto:919876543210"),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        // Index keys expire; so does a record Meta has (it only waits for statuses), from
        // each status it takes.
        for k in [
            format!("{n}:w:wamid.K"),
            format!("{n}:m:{}", m.id),
            format!("{prefix}{{t:clinic_a}}:mto:919876543210"),
        ] {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ttl > 0, "{k}: {ttl}");
        }
        // Read: the record, its timeline and its tenant pointer expire.
        assert_eq!(
            apply(&s, &m, &status("wamid.K", MessageState::Read, 50, None)).await,
            applied(&m, MessageState::Read)
        );
        for k in [
            format!("{n}:m:{}", m.id),
            format!("{n}:tl:{}", m.id),
            format!("{prefix}{{t:clinic_a}}:m:{}", m.id),
        ] {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                ttl > 0 && ttl <= super::super::redis::TERMINAL_TTL_SECS as i64,
                "{k}: {ttl}"
            );
        }
    }

    #[tokio::test]
    async fn empty_prefix_and_bad_prefix() {
        assert!(matches!(
            super::super::RedisStore::connect("redis://127.0.0.1:1/", "a{b", 1),
            Err(StoreError::Unavailable(_))
        ));
        let down = super::super::RedisStore::connect("redis://127.0.0.1:1/", "", 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(down.ping().await, Err(StoreError::Unavailable(_))),
            "a dead server is unavailable"
        );
        assert!(matches!(
            down.depth(&number("1")).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn corrupt_records_are_reported_with_their_key() {
        let url = crate::testing::shared_redis().url.clone();
        let prefix = crate::testing::unique_prefix("corrupt");
        let s =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        let m = msg(Lane::Care);
        accept_ok(&s, &m).await;
        let key = format!("{prefix}{{n:1001}}:m:{}", m.id);
        let mut c = raw(&url).await;
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("state")
            .arg("bogus")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match s.load(&m.number, &m.id).await {
            Err(StoreError::Corrupt { key: k, why }) => {
                assert_eq!(k, key);
                assert!(why.contains("bogus"), "{why}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            s.begin_attempt(&m.number, &m.id, 1).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// Random sequences of record operations give the same answers and the same records on both
    /// stores (queue entry ids differ by design, so queues are covered by the cases above).
    #[tokio::test]
    async fn random_transitions_agree_with_the_memory_store() {
        use rand::{Rng, SeedableRng};
        use MessageState::*;
        let url = crate::testing::shared_redis().url.clone();
        let redis = super::super::RedisStore::connect(
            &url,
            &crate::testing::unique_prefix("differential"),
            2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let memory = crate::store::MemoryStore::new();
        let stores: [&dyn Store; 2] = [&memory, &redis];
        for seed in 0..8u64 {
            let msgs: Vec<NewMessage> = (0..4).map(|_| msg(Lane::Care)).collect();
            for m in &msgs {
                for s in stores {
                    accept_ok(s, m).await;
                }
            }
            let wamids = ["wamid.0", "wamid.1", "wamid.2", "wamid.3"];
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for step in 0..150i64 {
                let i = rng.gen_range(0..msgs.len());
                let m = &msgs[i];
                let e = err(rng.gen_range(1..4), "e");
                let op = rng.gen_range(0..3);
                let answers: Vec<String> = match op {
                    0 => {
                        let mut v = Vec::new();
                        for s in stores {
                            v.push(format!(
                                "{:?}",
                                s.begin_attempt(&m.number, &m.id, step)
                                    .await
                                    .map_err(|e| e.to_string())
                            ));
                        }
                        v
                    }
                    1 => {
                        let outcome = match rng.gen_range(0..5) {
                            0 | 1 => AttemptOutcome::Accepted {
                                wamid: wamids[i].into(),
                            },
                            2 => AttemptOutcome::Retry { error: e },
                            3 => AttemptOutcome::Unknown { error: e },
                            _ => AttemptOutcome::Ended {
                                state: if rng.gen_bool(0.5) { Failed } else { Expired },
                                error: Some(e),
                            },
                        };
                        let mut v = Vec::new();
                        for s in stores {
                            v.push(format!(
                                "{:?}",
                                s.finish_attempt(&m.number, &m.id, &outcome, step)
                                    .await
                                    .map_err(|e| e.to_string())
                            ));
                        }
                        v
                    }
                    _ => {
                        let state = [Sent, Delivered, Read, Failed, Accepted][rng.gen_range(0..5)];
                        let mut u = status(
                            wamids[i],
                            state,
                            step,
                            if rng.gen_bool(0.5) { Some(&m.id) } else { None },
                        );
                        if state == Failed {
                            u.error = Some(e);
                        }
                        let mut v = Vec::new();
                        for s in stores {
                            v.push(format!(
                                "{:?}",
                                s.apply_status(&m.number, &u)
                                    .await
                                    .map_err(|e| e.to_string())
                            ));
                        }
                        v
                    }
                };
                assert_eq!(
                    answers[0], answers[1],
                    "seed {seed}, step {step}, op {op} on message {i}"
                );
            }
            for m in &msgs {
                let a = memory
                    .load(&m.number, &m.id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let b = redis
                    .load(&m.number, &m.id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(a, b);
                let a = memory
                    .message(&m.tenant, &m.id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let b = redis
                    .message(&m.tenant, &m.id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(a, b);
            }
        }
    }

    #[tokio::test]
    async fn scripts_survive_a_script_flush() {
        let redis = crate::testing::shared_redis();
        if !redis.is_owned() {
            // SCRIPT FLUSH is server-wide: only on a server this test binary owns.
            return;
        }
        let url = redis.url.clone();
        let s = super::super::RedisStore::connect(&url, &crate::testing::unique_prefix("flush"), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        accept_ok(&s, &msg(Lane::Care)).await;
        let mut c = raw(&url).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        accept_ok(&s, &msg(Lane::Care)).await;
        assert_eq!(depth(&s, &number("1001")).await.ready, [2, 0, 0]);
    }
}
