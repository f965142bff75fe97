//! Webhook floods: Meta delivering statuses twice and out of order (the sandbox's duplicate and
//! reorder options) while an attacker floods the endpoint with forged, badly signed and
//! replayed deliveries. Every forged one is 401 and changes nothing; every message ends where
//! Meta's real statuses put it (read), settled exactly once.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use common::faults::*;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use whatsapp_cloud::signature::sign;

fn statuses(items: Vec<Value>) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_A, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "918045550001", "phone_number_id": NUMBER_A},
                  "statuses": items}}]}]})
    .to_string()
}

fn failed_item(id: &str, to: &str) -> Value {
    json!({"id": format!("wamid.forged.{id}"), "status": "failed", "timestamp": "1764000000",
        "recipient_id": to.trim_start_matches('+'), "biz_opaque_callback_data": id,
        "errors": [{"code": 131026, "title": "Message undeliverable"}]})
}

#[actix_rt::test]
async fn duplicate_reordered_and_forged_webhooks_end_every_message_right() {
    let messages = if long() { 2_000 } else { 200 };
    let app = spawn_app(
        "faults_webhooks",
        Options {
            tier_mps: 200,
            duplicate_rate: 0.5,
            reorder: true,
            ..Options::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..messages {
        ids.push(app.send(&template(&patient(i))).await);
    }

    // The flood, while the real statuses flow: forged "failed" statuses for every message with
    // no signature, a garbage one, one made with another secret, and a genuine signature over
    // another body.
    let forged_401 = Rc::new(Cell::new(0usize));
    let other = Rc::new(Cell::new(0usize));
    let mut flooders = Vec::new();
    for worker in 0..8u64 {
        let (http, base, ids, forged_401, other) = (
            app.http.clone(),
            app.base.clone(),
            ids.clone(),
            forged_401.clone(),
            other.clone(),
        );
        flooders.push(actix_rt::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker);
            for (n, id) in ids
                .iter()
                .enumerate()
                .filter(|(n, _)| *n as u64 % 8 == worker)
            {
                let body = statuses(vec![failed_item(id, &patient(n))]);
                let signature = match rng.gen_range(0..4) {
                    0 => None,
                    1 => Some(format!("sha256={:064x}", rng.gen::<u128>())),
                    2 => Some(sign(b"not-the-app-secret", body.as_bytes())),
                    _ => Some(sign(
                        APP_SECRET.as_bytes(),
                        statuses(vec![failed_item("msg_other", PATIENT)]).as_bytes(),
                    )),
                };
                let mut req = http
                    .post(format!("{base}/webhooks/whatsapp"))
                    .header("Content-Type", "application/json")
                    .body(body);
                if let Some(s) = signature {
                    req = req.header("X-Hub-Signature-256", s);
                }
                match bounded(req, Duration::from_secs(10)).await.status() {
                    Some(401) => forged_401.set(forged_401.get() + 1),
                    _ => other.set(other.get() + 1),
                }
            }
        }));
    }
    for f in flooders {
        let _ = f.await;
    }
    assert_eq!(
        (forged_401.get(), other.get()),
        (messages, 0),
        "every forged delivery is 401"
    );

    let stuck = wait_states(
        &app.http,
        &app.base,
        &ids,
        &["read"],
        Duration::from_secs(if long() { 180 } else { 60 }),
    )
    .await;
    assert!(
        stuck.is_empty(),
        "{} not read, e.g. {:?}",
        stuck.len(),
        stuck.first()
    );
    // A genuine delivery replayed after the fact: duplicates, nothing moves.
    let (_, v) = app.get_message(KEY_A, &ids[0]).await;
    let wamid = v["wamid"].as_str().unwrap_or_default().to_owned();
    let late = statuses(vec![
        json!({"id": wamid, "status": "delivered", "timestamp": "1764000000",
        "recipient_id": patient(0).trim_start_matches('+'), "biz_opaque_callback_data": ids[0],
        "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"}}),
    ]);
    let sig = sign(APP_SECRET.as_bytes(), late.as_bytes());
    for _ in 0..20 {
        let answer = bounded(
            app.http
                .post(format!("{}/webhooks/whatsapp", app.base))
                .header("Content-Type", "application/json")
                .header("X-Hub-Signature-256", sig.clone())
                .body(late.clone()),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(answer.status(), Some(200));
    }
    let (_, v) = app.get_message(KEY_A, &ids[0]).await;
    assert_eq!(v["status"], "read", "{v}");
    // Meta really did duplicate: the sandbox posted more webhooks than one per status.
    let (posts, _) = app.sim.webhook_post_counts();
    eprintln!("{posts} webhook posts from the sandbox for {messages} messages; {messages} forged");
    if let Err(e) = exactly_once(&app.sim.sent(), &ids) {
        panic!("{e}");
    }
    if let Err(e) = wallet_balances(&app.http, &app.base, 1_000_000_000, messages).await {
        panic!("{e}");
    }
    let metrics = app.metrics_text().await;
    let bad: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("clinic_gateway_webhook") && l.contains("bad-signature"))
        .filter(|l| !l.contains("_bucket") && !l.contains("_sum") && !l.contains("_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(bad >= messages as f64, "counted: {bad}");
    let duplicates: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("clinic_gateway_webhook_statuses_total") && l.contains("duplicate")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!("{duplicates} duplicate status items applied as no-ops");
    assert!(duplicates > 0.0, "Meta's duplicates reached the gateway");
}
