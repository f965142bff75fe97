//! The tenancy contract: clinics, API keys, wallets, templates, windows and messaging limits. One
//! suite, run against `MemoryStore` and against `RedisStore` on a real Redis (each Redis case
//! under its own key prefix), plus Redis-only checks of the key layout and a differential run of
//! random wallet operations on both stores.

use rand::{Rng, SeedableRng};
use whatsapp_cloud::wire::{TemplateCategory, TemplateStatus};

use super::tenancy::{
    ApiKeyRecord, ConversationStore, LedgerEntry, LedgerKind, LimitDecision, LimitStore,
    Reservation, TemplateRecord, TemplateStore, TenantStore, WalletSnapshot, WalletStore,
};
use super::StoreError;
use crate::domain::{MessageId, Money, PhoneNumberId, TenantId};
use crate::store::memory_tenancy::WINDOW_MS;
use crate::tenants::model::{BusinessNumber, ClinicSettings, Secret};

/// Every tenancy trait at once, so a case takes one `&dyn Tenancy`.
trait Tenancy: TenantStore + WalletStore + TemplateStore + ConversationStore + LimitStore {}
impl<T: TenantStore + WalletStore + TemplateStore + ConversationStore + LimitStore> Tenancy for T {}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn msg_id(s: &str) -> MessageId {
    MessageId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn clinic(id: &str, numbers: &[&str]) -> ClinicSettings {
    ClinicSettings {
        id: tenant(id),
        display_name: format!("Clinic {id}"),
        status: Default::default(),
        mode: Default::default(),
        waba_id: "waba_1".into(),
        portfolio_id: "portfolio_1".into(),
        meta_app_id: String::new(),
        app_secret: Secret::new("app-secret-value"),
        access_token: Secret::new("EAAG-token-value"),
        numbers: numbers
            .iter()
            .map(|n| BusinessNumber {
                phone_number_id: PhoneNumberId::parse(n).unwrap_or_else(|e| panic!("{e}")),
                display: format!("+91 {n}"),
                tier_mps: 80,
            })
            .collect(),
        time_zone: "Asia/Kolkata".into(),
        default_country_code: "91".into(),
        default_language: "en".into(),
        locations: Vec::new(),
        doctors: Vec::new(),
        quiet_hours: None,
        rate_card: None,
        low_balance_threshold: Money(50_000_000),
        callback: None,
        recategorisation: Default::default(),
        reminder_offsets_minutes: vec![24 * 60],
        follow_up: Default::default(),
        feedback_delay_minutes: Some(120),
        retention_days: None,
        emr: Default::default(),
        messaging_limit: Some(1000),
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
    }
}

fn api_key(t: &str, id: &str, hash: &str, created_ms: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        tenant: tenant(t),
        hash: hash.into(),
        label: format!("{id} label"),
        created_ms,
        revoked_ms: None,
    }
}

fn template(name: &str, language: &str) -> TemplateRecord {
    TemplateRecord {
        name: name.into(),
        language: language.into(),
        category: TemplateCategory::Utility,
        status: TemplateStatus::Approved,
        meta_id: format!("meta_{name}_{language}"),
        body_parameters: 2,
        pending_category: None,
        reason: None,
        updated_ms: 1,
    }
}

fn snap(credited: i64, settled: i64, reserved: i64) -> WalletSnapshot {
    WalletSnapshot {
        credited: Money(credited),
        settled: Money(settled),
        reserved: Money(reserved),
    }
}

async fn put_ok(s: &dyn Tenancy, c: &ClinicSettings) {
    s.put_clinic(c)
        .await
        .unwrap_or_else(|e| panic!("put_clinic {}: {e}", c.id));
}

async fn version(s: &dyn Tenancy) -> u64 {
    s.directory_version()
        .await
        .unwrap_or_else(|e| panic!("directory_version: {e}"))
}

fn key_ids(keys: &[ApiKeyRecord]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| (k.tenant.to_string(), k.id.clone()))
        .collect()
}

async fn wallet(s: &dyn Tenancy, t: &TenantId) -> WalletSnapshot {
    s.wallet(t).await.unwrap_or_else(|e| panic!("wallet: {e}"))
}

/// The whole ledger, read in pages of `page`.
async fn full_ledger(s: &dyn Tenancy, t: &TenantId, page: usize) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = Vec::new();
    loop {
        let cursor = out.last().map(|e| e.id.clone());
        let got = s
            .ledger(t, cursor.as_deref(), page)
            .await
            .unwrap_or_else(|e| panic!("ledger: {e}"));
        assert!(got.len() <= page);
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// Replays the ledger: its sums give the wallet's totals and each entry's `available_after`.
async fn assert_ledger_replays(s: &dyn Tenancy, t: &TenantId) {
    let w = wallet(s, t).await;
    let (mut credited, mut settled, mut reserved) = (0i64, 0i64, 0i64);
    for e in full_ledger(s, t, 7).await {
        match e.kind {
            LedgerKind::Credit => credited += e.amount.0,
            LedgerKind::Reserve => reserved += e.amount.0,
            LedgerKind::Release => reserved -= e.amount.0,
            LedgerKind::Settle => {
                settled += e.amount.0;
                reserved -= e.reserved.0;
            }
        }
        if e.kind != LedgerKind::Settle {
            assert_eq!(e.reserved, Money::ZERO, "{e:?}");
        }
        assert_eq!(
            e.available_after.0,
            credited - settled - reserved,
            "available after {e:?}"
        );
    }
    assert_eq!(w, snap(credited, settled, reserved), "ledger replay");
    assert_eq!(w.available().0, credited - settled - reserved);
    assert!(!w.reserved.is_negative() && !w.settled.is_negative());
}

// ---------------------------------------------------------------------------------------------
// Clinics and API keys

async fn clinics_put_get_list(s: &dyn Tenancy) {
    assert!(s
        .clinics()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    assert_eq!(s.clinic(&tenant("clinic_a")).await.ok(), Some(None));
    let b = clinic("clinic_b", &["2001"]);
    let a = clinic("clinic_a", &["1001", "1002"]);
    put_ok(s, &b).await;
    put_ok(s, &a).await;
    let got = s
        .clinic(&a.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("clinic_a missing"));
    assert_eq!(got, a, "round-trips, secrets included");
    assert_eq!(got.access_token.expose(), "EAAG-token-value");
    assert_eq!(
        s.clinics().await.unwrap_or_else(|e| panic!("{e}")),
        vec![a.clone(), b.clone()],
        "every clinic, by id"
    );
    // Replace.
    let mut a2 = a.clone();
    a2.display_name = "Renamed".into();
    a2.messaging_limit = None;
    put_ok(s, &a2).await;
    assert_eq!(s.clinic(&a.id).await.ok(), Some(Some(a2.clone())));
    assert_eq!(
        s.clinics().await.unwrap_or_else(|e| panic!("{e}")),
        vec![a2, b]
    );
}

async fn a_number_belongs_to_one_clinic(s: &dyn Tenancy) {
    let a = clinic("clinic_a", &["1001", "1002"]);
    put_ok(s, &a).await;
    put_ok(s, &a).await; // its own numbers: fine
    let v = version(s).await;
    // `b` asks for a free number and one of `a`'s: refused as a whole.
    let b = clinic("clinic_b", &["3003", "1002"]);
    match s.put_clinic(&b).await {
        Err(StoreError::Conflict(why)) => {
            assert!(why.contains("1002"), "{why}");
            assert!(!why.contains("3003"), "{why}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(s.clinic(&b.id).await.ok(), Some(None), "nothing stored");
    assert_eq!(version(s).await, v, "a refused put changes nothing");
    // The free number `b` asked for was not kept for it.
    put_ok(s, &clinic("clinic_c", &["3003"])).await;
    put_ok(s, &clinic("clinic_b", &["4004"])).await;
    assert_eq!(s.clinics().await.map(|c| c.len()).ok(), Some(3));
}

async fn dropping_a_number_frees_it(s: &dyn Tenancy) {
    put_ok(s, &clinic("clinic_a", &["1001", "1002"])).await;
    put_ok(s, &clinic("clinic_a", &["1001"])).await;
    put_ok(s, &clinic("clinic_b", &["1002"])).await;
    assert!(matches!(
        s.put_clinic(&clinic("clinic_a", &["1001", "1002"])).await,
        Err(StoreError::Conflict(_))
    ));
    // Moving a number: `b` lets go, then `a` takes it.
    put_ok(s, &clinic("clinic_b", &["2002"])).await;
    put_ok(s, &clinic("clinic_a", &["1001", "1002"])).await;
}

async fn directory_version_increases(s: &dyn Tenancy) {
    let v0 = version(s).await;
    put_ok(s, &clinic("clinic_a", &["1001"])).await;
    let v1 = version(s).await;
    assert!(v1 > v0);
    put_ok(s, &clinic("clinic_a", &["1001"])).await;
    let v2 = version(s).await;
    assert!(v2 > v1, "every put counts, even an unchanged one");
    s.put_api_key(&api_key("clinic_a", "key_1", "h1", 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v3 = version(s).await;
    assert!(v3 > v2);
    assert_eq!(
        s.revoke_api_key(&tenant("clinic_a"), "key_1", 5).await.ok(),
        Some(true)
    );
    let v4 = version(s).await;
    assert!(v4 > v3);
    assert_eq!(
        s.revoke_api_key(&tenant("clinic_a"), "key_nope", 5)
            .await
            .ok(),
        Some(false)
    );
    assert_eq!(version(s).await, v4);
}

async fn api_keys_put_list_revoke(s: &dyn Tenancy) {
    let (a, b) = (tenant("clinic_a"), tenant("clinic_b"));
    put_ok(s, &clinic("clinic_a", &["1001"])).await;
    put_ok(s, &clinic("clinic_b", &["2001"])).await;
    let k1 = api_key("clinic_a", "key_1", "aa11", 10);
    let k2 = api_key("clinic_a", "key_2", "aa22", 20);
    let k3 = api_key("clinic_b", "key_3", "bb33", 30);
    for k in [&k2, &k1, &k3] {
        s.put_api_key(k).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        s.api_keys(&a).await.ok(),
        Some(vec![k1.clone(), k2.clone()])
    );
    assert_eq!(s.api_keys(&b).await.ok(), Some(vec![k3.clone()]));
    assert_eq!(s.api_keys(&tenant("clinic_z")).await.ok(), Some(vec![]));
    let active = s.active_api_keys().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(active, vec![k1.clone(), k2.clone(), k3.clone()]);

    // A key id reused for another key, or a hash another key holds: refused.
    assert!(matches!(
        s.put_api_key(&api_key("clinic_a", "key_1", "other", 11))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.put_api_key(&api_key("clinic_b", "key_9", "aa11", 12))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The same record again (e.g. a retried request) is fine.
    s.put_api_key(&k1).await.unwrap_or_else(|e| panic!("{e}"));

    // Revoking another tenant's key: no such key for that tenant.
    assert_eq!(s.revoke_api_key(&b, "key_1", 40).await.ok(), Some(false));
    assert_eq!(s.revoke_api_key(&a, "key_1", 50).await.ok(), Some(true));
    let keys = s.api_keys(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys[0].revoked_ms, Some(50));
    assert_eq!(keys[1].revoked_ms, None);
    assert_eq!(
        key_ids(&s.active_api_keys().await.unwrap_or_else(|e| panic!("{e}"))),
        key_ids(&[k2.clone(), k3.clone()]),
        "revoked keys are not active"
    );
    // Revoking twice keeps the first time.
    assert_eq!(s.revoke_api_key(&a, "key_1", 60).await.ok(), Some(true));
    assert_eq!(
        s.api_keys(&a).await.ok().map(|k| k[0].revoked_ms),
        Some(Some(50))
    );
    // A revoked key's hash is free again, the revoked record stays listed.
    let k4 = api_key("clinic_b", "key_4", "aa11", 70);
    s.put_api_key(&k4).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        key_ids(&s.active_api_keys().await.unwrap_or_else(|e| panic!("{e}"))),
        key_ids(&[k2, k3, k4])
    );
    assert_eq!(s.api_keys(&a).await.map(|k| k.len()).ok(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Wallets

async fn credit_is_idempotent_by_reference(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    assert_eq!(wallet(s, &t).await, WalletSnapshot::default());
    assert_eq!(
        s.credit(&t, Money(100), "topup-1", 1).await.ok(),
        Some((true, snap(100, 0, 0)))
    );
    assert_eq!(
        s.credit(&t, Money(100), "topup-1", 2).await.ok(),
        Some((false, snap(100, 0, 0))),
        "the same reference applies once"
    );
    assert_eq!(
        s.credit(&t, Money(50), "topup-2", 3).await.ok(),
        Some((true, snap(150, 0, 0)))
    );
    assert_eq!(wallet(s, &t).await, snap(150, 0, 0));
    assert_eq!(
        wallet(s, &tenant("clinic_b")).await,
        WalletSnapshot::default(),
        "wallets are per tenant"
    );
    assert!(matches!(
        s.credit(&t, Money(-1), "neg", 4).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(full_ledger(s, &t, 10).await.len(), 2);
    assert_ledger_replays(s, &t).await;
}

async fn reserve_holds_refuses_and_is_idempotent(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    let (m1, m2, m3) = (msg_id("msg_1"), msg_id("msg_2"), msg_id("msg_3"));
    assert_eq!(
        s.reserve(&t, &m1, Money(1), 1).await.ok(),
        Some(Reservation::Insufficient {
            available: Money(0)
        }),
        "an empty wallet holds nothing"
    );
    s.credit(&t, Money(100), "r", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.reserve(&t, &m1, Money(60), 2).await.ok(),
        Some(Reservation::Held {
            available: Money(40)
        })
    );
    assert_eq!(
        s.reserve(&t, &m1, Money(60), 3).await.ok(),
        Some(Reservation::Held {
            available: Money(40)
        }),
        "again for the same message: held once"
    );
    assert_eq!(
        s.reserve(&t, &m2, Money(41), 4).await.ok(),
        Some(Reservation::Insufficient {
            available: Money(40)
        })
    );
    assert_eq!(
        s.reserve(&t, &m2, Money(40), 5).await.ok(),
        Some(Reservation::Held {
            available: Money(0)
        }),
        "exactly what is available"
    );
    assert_eq!(
        s.reserve(&t, &m3, Money(0), 6).await.ok(),
        Some(Reservation::Held {
            available: Money(0)
        }),
        "a free message is held (and recorded) on an empty balance"
    );
    assert_eq!(wallet(s, &t).await, snap(100, 0, 100));
    let kinds: Vec<LedgerKind> = full_ledger(s, &t, 10)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    use LedgerKind::*;
    assert_eq!(kinds, vec![Credit, Reserve, Reserve, Reserve]);
    // The zero hold ends like any other.
    assert_eq!(
        s.settle(&t, &m3, Money(0), 7).await.ok(),
        Some(Some(snap(100, 0, 100)))
    );
    assert_eq!(s.settle(&t, &m3, Money(0), 8).await.ok(), Some(None));
    assert_ledger_replays(s, &t).await;
}

async fn settle_charges_once(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    let m1 = msg_id("msg_1");
    s.credit(&t, Money(100), "r", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.settle(&t, &msg_id("msg_unknown"), Money(5), 2).await.ok(),
        Some(None),
        "nothing reserved: nothing charged"
    );
    s.reserve(&t, &m1, Money(60), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.settle(&t, &m1, Money(45), 4).await.ok(),
        Some(Some(snap(100, 45, 0)))
    );
    assert_eq!(
        s.settle(&t, &m1, Money(45), 5).await.ok(),
        Some(None),
        "a second settle charges nothing"
    );
    assert_eq!(s.release(&t, &m1, 6).await.ok(), Some(None));
    assert_eq!(wallet(s, &t).await, snap(100, 45, 0));
    let last = full_ledger(s, &t, 10).await.pop();
    assert_eq!(
        last.map(|e| (
            e.kind,
            e.amount,
            e.reserved,
            e.reference,
            e.available_after,
            e.at_ms
        )),
        Some((
            LedgerKind::Settle,
            Money(45),
            Money(60),
            "msg_1".to_owned(),
            Money(55),
            4
        ))
    );
    // A charge above the hold is still charged in full.
    s.reserve(&t, &msg_id("msg_2"), Money(10), 7)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.settle(&t, &msg_id("msg_2"), Money(15), 8).await.ok(),
        Some(Some(snap(100, 60, 0)))
    );
    assert_ledger_replays(s, &t).await;
}

async fn release_frees_the_hold(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    let m = msg_id("msg_1");
    assert_eq!(s.release(&t, &m, 1).await.ok(), Some(None));
    s.credit(&t, Money(100), "r", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.reserve(&t, &m, Money(30), 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wallet(s, &t).await, snap(100, 0, 30));
    assert_eq!(s.release(&t, &m, 3).await.ok(), Some(Some(snap(100, 0, 0))));
    assert_eq!(s.release(&t, &m, 4).await.ok(), Some(None));
    assert_eq!(s.settle(&t, &m, Money(30), 5).await.ok(), Some(None));
    assert_eq!(wallet(s, &t).await, snap(100, 0, 0));
    let last = full_ledger(s, &t, 10).await.pop();
    assert_eq!(
        last.map(|e| (e.kind, e.amount, e.reserved, e.available_after)),
        Some((LedgerKind::Release, Money(30), Money(0), Money(100)))
    );
    // Released, the message may be held again (a new attempt).
    assert!(matches!(
        s.reserve(&t, &m, Money(30), 6).await,
        Ok(Reservation::Held { .. })
    ));
    assert_ledger_replays(s, &t).await;
}

async fn ledger_pages_with_a_cursor(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    assert!(s
        .ledger(&t, None, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    for i in 0..7 {
        s.credit(&t, Money(10), &format!("ref-{i}"), i)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let all = s
        .ledger(&t, None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 7);
    let refs: Vec<&str> = all.iter().map(|e| e.reference.as_str()).collect();
    assert_eq!(
        refs,
        ["ref-0", "ref-1", "ref-2", "ref-3", "ref-4", "ref-5", "ref-6"]
    );
    let first = s
        .ledger(&t, None, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, all[..3]);
    let second = s
        .ledger(&t, Some(&first[2].id), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second, all[3..6], "the cursor itself is excluded");
    let third = s
        .ledger(&t, Some(&second[2].id), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third, all[6..]);
    assert!(s
        .ledger(&t, Some(&all[6].id), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    assert!(s
        .ledger(&t, None, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    assert_eq!(full_ledger(s, &t, 2).await, all);
    assert_eq!(
        all.iter().map(|e| e.available_after.0).collect::<Vec<_>>(),
        [10, 20, 30, 40, 50, 60, 70]
    );
    assert!(matches!(
        s.ledger(&t, Some("not-an-id"), 3).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s
        .ledger(&tenant("clinic_b"), Some(&all[0].id), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
}

/// One random wallet operation (seeded); its answer as text, to compare stores.
async fn random_wallet_op(
    s: &dyn Tenancy,
    t: &TenantId,
    rng: &mut rand::rngs::StdRng,
    step: i64,
) -> String {
    // Small pools so references and messages repeat (duplicates are the point).
    let m = msg_id(&format!("msg_{}", rng.gen_range(0..8)));
    match rng.gen_range(0..10) {
        0 | 1 => {
            let amount = Money(rng.gen_range(0..200));
            let reference = format!("topup-{}", rng.gen_range(0..12));
            format!("{:?}", s.credit(t, amount, &reference, step).await)
        }
        2..=5 => {
            let amount = Money(rng.gen_range(0..60));
            format!("{:?}", s.reserve(t, &m, amount, step).await)
        }
        6 | 7 => {
            let charge = Money(rng.gen_range(0..70));
            format!("{:?}", s.settle(t, &m, charge, step).await)
        }
        _ => format!("{:?}", s.release(t, &m, step).await),
    }
}

async fn ledger_replays_after_random_operations(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for step in 0..200 {
        let answer = random_wallet_op(s, &t, &mut rng, step).await;
        assert!(!answer.starts_with("Err"), "step {step}: {answer}");
    }
    assert!(full_ledger(s, &t, 50).await.len() > 50);
    assert_ledger_replays(s, &t).await;
}

async fn concurrent_reserves_never_overdraw(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    s.credit(&t, Money(100), "r", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<MessageId> = (0..12).map(|i| msg_id(&format!("msg_{i}"))).collect();
    // Every message twice, all at once: 3 of 30 fit in 100, each held once.
    let results = futures::future::join_all(
        ids.iter()
            .chain(ids.iter())
            .map(|m| s.reserve(&t, m, Money(30), 2)),
    )
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(wallet(s, &t).await, snap(100, 0, 90));
    let holds = full_ledger(s, &t, 100)
        .await
        .iter()
        .filter(|e| e.kind == LedgerKind::Reserve)
        .count();
    assert_eq!(holds, 3);
    // Settling and releasing all of them at once ends each hold exactly once.
    let ended = futures::future::join_all(ids.iter().map(|m| s.settle(&t, m, Money(20), 3)))
        .await
        .into_iter()
        .chain(futures::future::join_all(ids.iter().map(|m| s.release(&t, m, 4))).await)
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(ended, 3);
    assert_eq!(wallet(s, &t).await.reserved, Money::ZERO);
    assert_ledger_replays(s, &t).await;
}

// ---------------------------------------------------------------------------------------------
// Templates

async fn templates_put_get_list_replace(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    assert_eq!(s.templates(&t).await.ok(), Some(vec![]));
    assert_eq!(
        s.template(&t, "appointment_reminder", "en").await.ok(),
        Some(None)
    );
    let en = template("appointment_reminder", "en");
    let hi = template("appointment_reminder", "hi");
    let first = template("a_first", "en_US");
    for x in [&hi, &en, &first] {
        s.put_template(&t, x)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        s.template(&t, "appointment_reminder", "hi").await.ok(),
        Some(Some(hi.clone()))
    );
    assert_eq!(
        s.templates(&t).await.ok(),
        Some(vec![first.clone(), en.clone(), hi.clone()]),
        "by name, then language"
    );
    let mut rejected = en.clone();
    rejected.status = TemplateStatus::Rejected;
    rejected.reason = Some("INVALID_FORMAT".into());
    rejected.pending_category = Some(TemplateCategory::Marketing);
    rejected.updated_ms = 99;
    s.put_template(&t, &rejected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.template(&t, "appointment_reminder", "en").await.ok(),
        Some(Some(rejected.clone()))
    );
    assert_eq!(s.templates(&t).await.ok(), Some(vec![first, rejected, hi]));
    assert_eq!(
        s.templates(&tenant("clinic_b")).await.ok(),
        Some(vec![]),
        "templates are per tenant"
    );
    assert_eq!(
        s.template(&tenant("clinic_b"), "appointment_reminder", "en")
            .await
            .ok(),
        Some(None)
    );
}

// ---------------------------------------------------------------------------------------------
// Customer-service windows

async fn windows_open_extend_and_expire(s: &dyn Tenancy) {
    let t = tenant("clinic_a");
    let now = crate::clock::now_ms();
    let hour = 3_600_000;
    let until = |p: &'static str| {
        let t = t.clone();
        async move {
            s.window_until(&t, p)
                .await
                .unwrap_or_else(|e| panic!("window_until: {e}"))
        }
    };
    let touch = |p: &'static str, at: i64| {
        let t = t.clone();
        async move {
            s.touch_window(&t, p, at)
                .await
                .unwrap_or_else(|e| panic!("touch_window: {e}"))
        }
    };
    assert_eq!(until("+919876543210").await, None, "never wrote");
    touch("+919876543210", now - 2 * hour).await;
    assert_eq!(
        until("+919876543210").await,
        Some(now - 2 * hour + WINDOW_MS)
    );
    touch("+919876543210", now - hour).await;
    assert_eq!(
        until("+919876543210").await,
        Some(now - hour + WINDOW_MS),
        "a later message extends"
    );
    touch("+919876543210", now - 3 * hour).await;
    assert_eq!(
        until("+919876543210").await,
        Some(now - hour + WINDOW_MS),
        "an older message does not shrink"
    );
    assert_eq!(
        until("919876543210").await,
        Some(now - hour + WINDOW_MS),
        "the same patient with or without +"
    );
    assert_eq!(
        s.window_until(&tenant("clinic_b"), "+919876543210")
            .await
            .ok(),
        Some(None),
        "windows are per clinic"
    );
    // Wrote 25 h ago: the window closed an hour ago.
    touch("+919800000001", now - 25 * hour).await;
    assert_eq!(until("+919800000001").await, None);
    // A window that closed is opened again by a new message.
    touch("+919800000001", now - hour).await;
    assert_eq!(until("+919800000001").await, Some(now - hour + WINDOW_MS));
}

// ---------------------------------------------------------------------------------------------
// Messaging limits

async fn reach(
    s: &dyn Tenancy,
    portfolio: &str,
    patient: &str,
    limit: u32,
    now: i64,
) -> LimitDecision {
    s.reach_patient(portfolio, patient, limit, now)
        .await
        .unwrap_or_else(|e| panic!("reach_patient: {e}"))
}

async fn limits_count_unique_patients_per_portfolio(s: &dyn Tenancy) {
    let t0 = 1_700_000_000_000i64;
    let pf = "pf_1";
    use LimitDecision::*;
    assert_eq!(reach(s, pf, "+911", 3, t0).await, Allowed { used: 1 });
    assert_eq!(reach(s, pf, "+912", 3, t0 + 10).await, Allowed { used: 2 });
    assert_eq!(reach(s, pf, "+913", 3, t0 + 20).await, Allowed { used: 3 });
    assert_eq!(
        reach(s, pf, "+914", 3, t0 + 30).await,
        Reached {
            limit: 3,
            frees_at_ms: t0 + WINDOW_MS
        },
        "frees when the oldest leaves the 24 h window"
    );
    assert_eq!(
        reach(s, pf, "+911", 3, t0 + 40).await,
        Allowed { used: 3 },
        "a patient already counted is not counted again"
    );
    assert_eq!(
        reach(s, pf, "+914", 3, t0 + 50).await,
        Reached {
            limit: 3,
            frees_at_ms: t0 + 10 + WINDOW_MS
        },
        "+911 was reached again, so +912 is now the oldest"
    );
    // 24 h after +912: it no longer counts.
    assert_eq!(
        reach(s, pf, "+914", 3, t0 + 10 + WINDOW_MS).await,
        Allowed { used: 3 }
    );
    // 24 h after +911's last reach: only +914 is left.
    assert_eq!(
        reach(s, pf, "+915", 3, t0 + 40 + WINDOW_MS).await,
        Allowed { used: 2 }
    );
    // Another portfolio counts on its own.
    assert_eq!(reach(s, "pf_2", "+911", 1, t0).await, Allowed { used: 1 });
    assert!(matches!(
        reach(s, "pf_2", "+912", 1, t0).await,
        Reached { limit: 1, .. }
    ));
    // A lowered limit frees only when enough have left.
    let pf3 = "pf_3";
    for (i, p) in ["+921", "+922", "+923"].iter().enumerate() {
        reach(s, pf3, p, 5, t0 + i as i64).await;
    }
    assert_eq!(
        reach(s, pf3, "+924", 2, t0 + 5).await,
        Reached {
            limit: 2,
            frees_at_ms: t0 + 1 + WINDOW_MS
        }
    );
}

async fn concurrent_reaches_respect_the_limit(s: &dyn Tenancy) {
    let t0 = 1_700_000_000_000i64;
    let patients: Vec<String> = (0..20).map(|i| format!("+9198000000{i:02}")).collect();
    let decisions =
        futures::future::join_all(patients.iter().map(|p| s.reach_patient("pf_c", p, 7, t0))).await;
    let allowed = decisions
        .iter()
        .filter(|d| matches!(d, Ok(LimitDecision::Allowed { .. })))
        .count();
    assert_eq!(allowed, 7, "{decisions:?}");
    assert!(decisions.iter().all(|d| matches!(
        d,
        Ok(LimitDecision::Allowed { .. }) | Ok(LimitDecision::Reached { limit: 7, .. })
    )));
}

async fn clinics_of_a_portfolio_share_its_limit(s: &dyn Tenancy) {
    // Two clinics of one portfolio: what one reaches counts for the other.
    let mut a = clinic("clinic_a", &["1001"]);
    let mut b = clinic("clinic_b", &["2001"]);
    a.portfolio_id = "portfolio 42/ünïcode".into();
    b.portfolio_id = a.portfolio_id.clone();
    put_ok(s, &a).await;
    put_ok(s, &b).await;
    let t0 = 1_700_000_000_000i64;
    use LimitDecision::*;
    assert_eq!(
        reach(s, &a.portfolio_id, "+919800000001", 2, t0).await,
        Allowed { used: 1 }
    );
    assert_eq!(
        reach(s, &b.portfolio_id, "+919800000002", 2, t0 + 1).await,
        Allowed { used: 2 }
    );
    assert_eq!(
        reach(s, &a.portfolio_id, "+919800000003", 2, t0 + 2).await,
        Reached {
            limit: 2,
            frees_at_ms: t0 + WINDOW_MS
        }
    );
    assert_eq!(
        reach(s, &b.portfolio_id, "+919800000001", 2, t0 + 3).await,
        Allowed { used: 2 },
        "a patient the other clinic reached is already counted"
    );
    assert_eq!(
        reach(s, "portfolio_other", "+919800000003", 2, t0 + 2).await,
        Allowed { used: 1 }
    );
}

// ---------------------------------------------------------------------------------------------
// Runners

pub(crate) async fn redis_store(case: &str) -> super::RedisStore {
    let url = &crate::testing::shared_redis().url;
    let s = super::RedisStore::connect(url, &crate::testing::unique_prefix(case), 4)
        .unwrap_or_else(|e| panic!("connect: {e}"));
    super::Store::ping(&s)
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
    clinics_put_get_list,
    a_number_belongs_to_one_clinic,
    dropping_a_number_frees_it,
    directory_version_increases,
    api_keys_put_list_revoke,
    credit_is_idempotent_by_reference,
    reserve_holds_refuses_and_is_idempotent,
    settle_charges_once,
    release_frees_the_hold,
    ledger_pages_with_a_cursor,
    ledger_replays_after_random_operations,
    concurrent_reserves_never_overdraw,
    templates_put_get_list_replace,
    windows_open_extend_and_expire,
    limits_count_unique_patients_per_portfolio,
    concurrent_reaches_respect_the_limit,
    clinics_of_a_portfolio_share_its_limit,
);

// ---------------------------------------------------------------------------------------------
// Redis only: what the memory store cannot show.

mod redis_only {
    use super::*;

    async fn raw(url: &str) -> crate::store::RedisConnection {
        crate::store::raw_connection(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same random wallet operations on both stores: the same answers, totals and ledgers
    /// (ids aside: the stream ids are Redis's own).
    #[tokio::test]
    async fn random_wallet_operations_agree_with_the_memory_store() {
        let redis = redis_store("wallet_differential").await;
        let memory = crate::store::MemoryStore::new();
        let stores: [&dyn Tenancy; 2] = [&memory, &redis];
        for seed in 0..4u64 {
            let t = tenant(&format!("clinic_{seed}"));
            let mut rngs = [
                rand::rngs::StdRng::seed_from_u64(seed),
                rand::rngs::StdRng::seed_from_u64(seed),
            ];
            for step in 0..200 {
                let mut answers = Vec::new();
                for (s, rng) in stores.iter().zip(rngs.iter_mut()) {
                    answers.push(random_wallet_op(*s, &t, rng, step).await);
                }
                assert_eq!(answers[0], answers[1], "seed {seed}, step {step}");
            }
            assert_eq!(wallet(&memory, &t).await, wallet(&redis, &t).await);
            let strip = |l: Vec<LedgerEntry>| -> Vec<LedgerEntry> {
                l.into_iter()
                    .map(|mut e| {
                        e.id.clear();
                        e
                    })
                    .collect()
            };
            assert_eq!(
                strip(full_ledger(&memory, &t, 1000).await),
                strip(full_ledger(&redis, &t, 13).await)
            );
            for s in stores {
                assert_ledger_replays(s, &t).await;
            }
        }
    }

    #[tokio::test]
    async fn tenancy_keys_use_the_prefix_and_their_hash_tags() {
        let url = crate::testing::shared_redis().url.clone();
        let prefix = crate::testing::unique_prefix("tenancy_layout");
        let s =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        let t = tenant("clinic_a");
        put_ok(&s, &clinic("clinic_a", &["1001"])).await;
        s.put_api_key(&api_key("clinic_a", "key_1", "abc123", 1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.credit(&t, Money(10), "r", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.reserve(&t, &msg_id("msg_1"), Money(5), 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.put_template(&t, &template("hello", "en"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let now = crate::clock::now_ms();
        s.touch_window(&t, "+919876543210", now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        reach(&s, "pf_1", "+919876543210", 10, now).await;
        let mut c = raw(&url).await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        keys.sort();
        let tk = format!("{prefix}{{t:clinic_a}}");
        let mut expected = vec![
            format!("{prefix}clinics"),
            format!("{prefix}number:1001"),
            format!("{prefix}directory:version"),
            format!("{prefix}apikey:abc123"),
            format!("{tk}:clinic"),
            format!("{tk}:apikeys"),
            format!("{tk}:wallet"),
            format!("{tk}:credits"),
            format!("{tk}:res"),
            format!("{tk}:ledger"),
            format!("{tk}:templates"),
            format!("{tk}:win:919876543210"),
            format!("{prefix}{{p:pf_1}}:reached"),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        let lookup: String = redis::cmd("GET")
            .arg(format!("{prefix}apikey:abc123"))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lookup, "clinic_a|key_1");
        // Windows and limits clean up after themselves; the rest is the record.
        for (k, max) in [
            (format!("{tk}:win:919876543210"), 24 * 3600),
            (format!("{prefix}{{p:pf_1}}:reached"), 24 * 3600),
        ] {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ttl > 0 && ttl <= max, "{k}: {ttl}");
        }
        // Revoked: the lookup is gone, the record stays.
        assert_eq!(s.revoke_api_key(&t, "key_1", 3).await.ok(), Some(true));
        let exists: i64 = redis::cmd("EXISTS")
            .arg(format!("{prefix}apikey:abc123"))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exists, 0);
        // A portfolio id that is not key-safe is hashed, not pasted into the key.
        reach(&s, "a{b}:c", "+911", 10, now).await;
        let odd: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{{p:~*"))
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(odd.len(), 1, "{odd:?}");
        assert_eq!(odd[0].len(), format!("{prefix}{{p:~}}:reached").len() + 64);
    }

    #[tokio::test]
    async fn corrupt_tenancy_records_are_reported_with_their_key() {
        let url = crate::testing::shared_redis().url.clone();
        let prefix = crate::testing::unique_prefix("tenancy_corrupt");
        let s =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        let t = tenant("clinic_a");
        put_ok(&s, &clinic("clinic_a", &["1001"])).await;
        let mut c = raw(&url).await;
        let key = format!("{prefix}{{t:clinic_a}}:clinic");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("{not json")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for r in [s.clinic(&t).await.map(drop), s.clinics().await.map(drop)] {
            match r {
                Err(StoreError::Corrupt { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        // Putting the clinic again repairs it.
        put_ok(&s, &clinic("clinic_a", &["1001"])).await;
        assert!(s.clinic(&t).await.is_ok_and(|c| c.is_some()));

        let wallet_key = format!("{prefix}{{t:clinic_a}}:wallet");
        let _: () = redis::cmd("HSET")
            .arg(&wallet_key)
            .arg("credited")
            .arg("lots")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for r in [
            s.credit(&t, Money(1), "x", 1).await.map(drop),
            s.reserve(&t, &msg_id("msg_1"), Money(1), 1).await.map(drop),
            s.release(&t, &msg_id("msg_1"), 1).await.map(drop),
            s.wallet(&t).await.map(drop),
        ] {
            match r {
                Err(StoreError::Corrupt { key: k, .. }) => assert_eq!(k, wallet_key),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        let win = format!("{prefix}{{t:clinic_a}}:win:911");
        let _: () = redis::cmd("SET")
            .arg(&win)
            .arg("yesterday")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            s.window_until(&t, "+911").await,
            Err(StoreError::Corrupt { key, .. }) if key == win
        ));
    }

    /// With keys configured, secrets never reach Redis in plain text; rotating re-seals them.
    #[tokio::test]
    async fn secrets_are_sealed_at_rest_and_rotate() {
        use base64::Engine;
        let url = crate::testing::shared_redis().url.clone();
        let prefix = crate::testing::unique_prefix("sealed");
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let keys = |spec: String| {
            std::sync::Arc::new(
                crate::secrets::SecretKeys::parse(&spec).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let s =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.set_secret_keys(keys(format!("k1:{}", b64(1)))));
        let mut c = clinic("clinic_a", &["1001"]);
        c.access_token = Secret::new("EAAG-very-secret-token");
        c.app_secret = Secret::new("app-secret-value");
        put_ok(&s, &c).await;
        let mut conn = raw(&url).await;
        let stored: String = redis::cmd("GET")
            .arg(format!("{prefix}{{t:clinic_a}}:clinic"))
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !stored.contains("EAAG-very-secret-token") && !stored.contains("app-secret-value"),
            "{stored}"
        );
        assert!(stored.contains("enc:v1:k1:"), "{stored}");
        let back = s
            .clinic(&tenant("clinic_a"))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("clinic"));
        assert_eq!(back.access_token.expose(), "EAAG-very-secret-token");
        // Rotation: a node with k2 first re-seals; k1 alone can no longer open them.
        let s2 =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        s2.set_secret_keys(keys(format!("k2:{},k1:{}", b64(2), b64(1))));
        assert_eq!(s2.reseal_clinics().await.ok(), Some(1));
        assert_eq!(s2.reseal_clinics().await.ok(), Some(0), "already current");
        let stored: String = redis::cmd("GET")
            .arg(format!("{prefix}{{t:clinic_a}}:clinic"))
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            stored.contains("enc:v1:k2:") && !stored.contains("enc:v1:k1:"),
            "{stored}"
        );
        let s3 =
            super::super::RedisStore::connect(&url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        s3.set_secret_keys(keys(format!("k1:{}", b64(1))));
        assert!(matches!(
            s3.clinic(&tenant("clinic_a")).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
