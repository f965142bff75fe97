//! Several nodes on Redis Cluster: three `clinic-gateway` processes share nine numbers through
//! Redis leases; messages and bookings go in through all three; one node is SIGKILLed while its
//! numbers have work queued. The sandbox is the judge: every accepted message reached Meta
//! exactly once, no number ever went over its tier, and the dead node's numbers moved to the
//! others within the failover bound.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use clinic_gateway::domain::PhoneNumberId;
use clinic_gateway::store::leases::LeaseStore;
use clinic_gateway::store::RedisStore;
use clinic_gateway::testing::{unique_prefix, TestRedis};
use common::faults::{free_port, sends_by_id, wait_all_sent, Node};
use common::*;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig};

/// Messages per second each number may send (the sandbox enforces it with 130429).
const TIER: u32 = 10;
/// The default lease (config/default.toml): the bound asserted is the 10 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

struct Clinic {
    id: &'static str,
    key: &'static str,
    waba: &'static str,
    numbers: [&'static str; 3],
}

const CLINICS: [Clinic; 3] = [
    Clinic {
        id: "clinic_a",
        key: KEY_A,
        waba: WABA_A,
        numbers: ["510000000000001", "510000000000002", "510000000000003"],
    },
    Clinic {
        id: "clinic_b",
        key: KEY_B,
        waba: WABA_B,
        numbers: ["520000000000001", "520000000000002", "520000000000003"],
    },
    Clinic {
        id: "clinic_c",
        key: "test-key-clinic-c",
        waba: "600000000000006",
        numbers: ["530000000000001", "530000000000002", "530000000000003"],
    },
];

fn config_toml() -> String {
    let mut out = String::new();
    for c in &CLINICS {
        let conf = clinic(c.id, c.key, c.numbers[0], c.waba, TIER);
        out.push_str(&format!(
            "[[clinics]]\nid = \"{}\"\nwallet_credit = 1000000000\napi_key_sha256 = \"{}\"\nwaba_id = \"{}\"\napp_secret = \"{}\"\naccess_token = \"{}\"\n",
            conf.id, conf.api_key_sha256, conf.waba_id, conf.app_secret, conf.access_token
        ));
        for n in c.numbers {
            out.push_str(&format!(
                "[[clinics.numbers]]\nphone_number_id = \"{n}\"\ntier_mps = {TIER}\n"
            ));
        }
    }
    out
}

/// Who holds each number's lease now.
async fn holders(store: &RedisStore) -> HashMap<String, Option<String>> {
    let mut out = HashMap::new();
    for c in &CLINICS {
        for n in c.numbers {
            let id = PhoneNumberId::parse(n).unwrap_or_else(|e| panic!("{e}"));
            let holder = store
                .number_holder(&id)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|f| f.node);
            out.insert(n.to_owned(), holder);
        }
    }
    out
}

/// The most sends of one number within any rolling second.
fn busiest_second(times: &mut [SystemTime]) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]).unwrap_or_default() >= Duration::from_secs(1)
        {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[actix_rt::test]
async fn three_nodes_share_the_numbers_and_survive_losing_one() {
    let redis = TestRedis::start_cluster();
    let prefix = unique_prefix("multinode");
    let ports: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
    // Meta's webhooks go to node-1, which stays up (a load balancer's job in production).
    let sandbox = Sandbox::spawn(SandboxConfig {
        webhook_url: Some(format!("http://127.0.0.1:{}/webhooks/whatsapp", ports[0])),
        app_secret: APP_SECRET.into(),
        webhook_retry_interval: Duration::from_millis(300),
        auto_register_numbers: false,
        ..SandboxConfig::default()
    })
    .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let sim = sandbox.state();
    for (i, c) in CLINICS.iter().enumerate() {
        for (j, n) in c.numbers.iter().enumerate() {
            sim.register_number(n, c.waba, &format!("9180455{i}{j}001"), TIER);
        }
        approve_templates(&sim, c.waba, false);
    }
    let toml = config_toml();
    let mut nodes: Vec<Node> = NODES
        .iter()
        .zip(&ports)
        .map(|(name, port)| {
            Node::with_config(
                name,
                &sandbox,
                &redis.url,
                *port,
                &toml,
                &prefix,
                &[
                    ("CLINIC_GATEWAY__CLUSTER__ENABLED", "true"),
                    ("CLINIC_GATEWAY__CLUSTER__NODE_ID", name),
                ],
            )
        })
        .collect();
    let http = reqwest::Client::new();
    for node in &mut nodes {
        node.start();
    }
    for node in &nodes {
        node.wait_healthy(&http).await;
    }
    let store = RedisStore::connect(&redis.url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));

    // Every number gets exactly one owner, and the three nodes share them.
    let began = Instant::now();
    let spread = loop {
        let h = holders(&store).await;
        let owners: std::collections::HashSet<Option<String>> = h.values().cloned().collect();
        if h.values().all(Option::is_some) && owners.len() == NODES.len() {
            break h;
        }
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "ownership did not settle over the three nodes: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The victim: the node (not node-1, which takes the webhooks) owning the most numbers.
    let victim = (1..NODES.len())
        .max_by_key(|i| {
            spread
                .values()
                .filter(|h| h.as_deref() == Some(NODES[*i]))
                .count()
        })
        .unwrap_or(1);
    let victim_numbers: Vec<String> = spread
        .iter()
        .filter(|(_, h)| h.as_deref() == Some(NODES[victim]))
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!victim_numbers.is_empty(), "{spread:?}");

    // A mixed load through every node: templates on each number (8 s of work per number at
    // the tier) and bookings (confirmations).
    let mut ids: Vec<String> = Vec::new();
    let mut booked: Vec<String> = Vec::new();
    let mut i = 0usize;
    for round in 0..8 {
        for c in CLINICS.iter() {
            for n in c.numbers {
                for _ in 0..10 {
                    let node = &nodes[i % NODES.len()];
                    let mut body = template(&patient(i));
                    body["from"] = json!(n);
                    let r = http
                        .post(format!("{}/v1/messages", node.base()))
                        .bearer_auth(c.key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(r.status().as_u16(), 202, "{}", node.log_tail());
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    ids.push(v["id"].as_str().unwrap_or_default().to_owned());
                    i += 1;
                }
            }
            // One booking per clinic per round, on a rotating node.
            let phone = patient(100_000 + i);
            let start = chrono::Utc::now() + chrono::Duration::days(3);
            let r = http
                .post(format!("{}/v1/appointments", nodes[(round + 1) % NODES.len()].base()))
                .bearer_auth(c.key)
                .json(&json!({"patient": {"phone": phone, "name": "Asha"}, "doctor": "Dr. Rao", "start": start.to_rfc3339()}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status().as_u16(), 201);
            booked.push(phone.trim_start_matches('+').to_owned());
        }
    }

    // Kill the victim while its numbers still have most of their work queued.
    let killed_at = SystemTime::now();
    let kill_instant = Instant::now();
    nodes[victim].kill();
    let moved_after = loop {
        let h = holders(&store).await;
        let moved = victim_numbers
            .iter()
            .all(|n| matches!(h.get(n), Some(Some(owner)) if owner != NODES[victim]));
        if moved {
            break kill_instant.elapsed();
        }
        assert!(
            kill_instant.elapsed() < Duration::from_secs(30),
            "the dead node's numbers never moved: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        moved_after <= FAILOVER_BOUND,
        "failover took {moved_after:?} (bound {FAILOVER_BOUND:?})"
    );

    // Everything accepted reaches Meta, exactly once.
    assert!(
        wait_all_sent(&sandbox, &ids, Duration::from_secs(90)).await,
        "not everything reached the sandbox; node-1 log:\n{}",
        nodes[0].log_tail()
    );
    let sent = sim.sent();
    let per_id = sends_by_id(&sent);
    let wrong: Vec<(&String, usize)> = ids
        .iter()
        .map(|id| (id, per_id.get(id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(wrong.is_empty(), "sent other than once: {wrong:?}");
    // Each booking's confirmation, once.
    let began = Instant::now();
    loop {
        let sent = sim.sent();
        let counts: Vec<usize> = booked
            .iter()
            .map(|p| {
                sent.iter()
                    .filter(|r| &r.to == p && matches!(&r.message.content, whatsapp_cloud::wire::Content::Template { template } if template.name == "appointment_confirmation"))
                    .count()
            })
            .collect();
        if counts.iter().all(|n| *n == 1) {
            break;
        }
        assert!(
            counts.iter().all(|n| *n <= 1) && began.elapsed() < Duration::from_secs(30),
            "confirmations per booking: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No number over its tier: nothing refused with 130429, and no rolling second above it.
    let throttled = sim.rejected().iter().filter(|r| r.code == 130_429).count();
    assert_eq!(throttled, 0, "the sandbox refused sends over the tier");
    let mut by_number: HashMap<&str, Vec<SystemTime>> = HashMap::new();
    for r in &sent {
        by_number.entry(&r.phone_number_id).or_default().push(r.at);
    }
    for (number, times) in &mut by_number {
        let busiest = busiest_second(times);
        assert!(
            busiest <= TIER as usize,
            "{number} sent {busiest} in one second (tier {TIER})"
        );
    }
    // The dead node's numbers were sent for by their new owners after the kill.
    for n in &victim_numbers {
        assert!(
            sent.iter()
                .any(|r| &r.phone_number_id == n && r.at > killed_at),
            "{n} sent nothing after its owner died"
        );
    }
    println!(
        "multinode: {} messages + {} bookings over 3 nodes; {} numbers moved {:.2} s after the kill",
        ids.len(),
        booked.len(),
        victim_numbers.len(),
        moved_after.as_secs_f64()
    );
}
