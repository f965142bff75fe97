//! Several nodes on Redis Cluster: `clinic-gateway` processes share nine numbers through Redis
//! leases while messages and bookings go in through all of them. One test SIGKILLs a node while
//! its numbers have work queued; the other starts nodes one after another (the first hands
//! numbers over to the newcomers) and stops one gracefully. The sandbox is the judge: every
//! accepted message reached Meta exactly once, no number ever went over its tier, and numbers
//! moved within the bound.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use clinic_gateway::domain::PhoneNumberId;
use clinic_gateway::store::leases::{LeaseStore, Leased};
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
                .lease_holder(&Leased::Number((id).clone()))
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

/// A deployment under test: the cluster, the sandbox (webhooks to node-1) and the nodes, not
/// started yet.
struct Deployment {
    _redis: TestRedis,
    sandbox: whatsapp_cloud::sandbox::SandboxHandle,
    nodes: Vec<Node>,
    store: RedisStore,
    http: reqwest::Client,
}

impl Deployment {
    fn new(name: &str, extra_env: &[(&str, &str)]) -> Self {
        let redis = TestRedis::start_cluster();
        let prefix = unique_prefix(name);
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
        let nodes: Vec<Node> = NODES
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
                        &[
                            ("CLINIC_GATEWAY__CLUSTER__ENABLED", "true"),
                            ("CLINIC_GATEWAY__CLUSTER__NODE_ID", name),
                        ],
                        extra_env,
                    ]
                    .concat(),
                )
            })
            .collect();
        let store = RedisStore::connect(&redis.url, &prefix, 2).unwrap_or_else(|e| panic!("{e}"));
        Self {
            _redis: redis,
            sandbox,
            nodes,
            store,
            http: reqwest::Client::new(),
        }
    }

    async fn start(&mut self, which: &[usize]) {
        for i in which {
            self.nodes[*i].start();
        }
        for i in which {
            self.nodes[*i].wait_healthy(&self.http).await;
        }
    }

    /// Waits until every number has an owner and the owners are exactly `nodes`.
    async fn settled_over(&self, nodes: &[usize]) -> HashMap<String, Option<String>> {
        let want: std::collections::HashSet<Option<String>> =
            nodes.iter().map(|i| Some(NODES[*i].to_owned())).collect();
        let began = Instant::now();
        loop {
            let h = holders(&self.store).await;
            let owners: std::collections::HashSet<Option<String>> = h.values().cloned().collect();
            if owners == want {
                return h;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "ownership did not settle over {want:?}: {h:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `per_number` templates on every number and one booking per clinic, through `via` in
    /// turn. Returns the accepted message ids and the booked patients' digits.
    async fn load(
        &self,
        via: &[usize],
        per_number: usize,
        tag: usize,
    ) -> (Vec<String>, Vec<String>) {
        let mut ids = Vec::new();
        let mut booked = Vec::new();
        let mut i = 0usize;
        for c in CLINICS.iter() {
            for n in c.numbers {
                for _ in 0..per_number {
                    let node = &self.nodes[via[i % via.len()]];
                    let mut body = template(&patient(tag * 10_000 + i));
                    body["from"] = json!(n);
                    let r = self
                        .http
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
            let phone = patient(500_000 + tag * 10_000 + i);
            let start = chrono::Utc::now() + chrono::Duration::days(3);
            let node = &self.nodes[via[i % via.len()]];
            let r = self
                .http
                .post(format!("{}/v1/appointments", node.base()))
                .bearer_auth(c.key)
                .json(&json!({"patient": {"phone": phone, "name": "Asha"}, "doctor": "Dr. Rao", "start": start.to_rfc3339()}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status().as_u16(), 201, "{}", node.log_tail());
            booked.push(phone.trim_start_matches('+').to_owned());
        }
        (ids, booked)
    }

    /// Every id and every booking's confirmation reached the sandbox exactly once, nothing was
    /// refused with 130429, and no number sent more than its tier in any rolling second.
    async fn assert_exactly_once_within_tier(&self, ids: &[String], booked: &[String]) {
        let sim = self.sandbox.state();
        assert!(
            wait_all_sent(&self.sandbox, ids, Duration::from_secs(90)).await,
            "not everything reached the sandbox; node-1 log:\n{}",
            self.nodes[0].log_tail()
        );
        let confirmations = |sent: &[whatsapp_cloud::sandbox::SentRecord]| -> Vec<usize> {
            booked
                .iter()
                .map(|p| {
                    sent.iter()
                        .filter(|r| &r.to == p && matches!(&r.message.content, whatsapp_cloud::wire::Content::Template { template } if template.name == "appointment_confirmation"))
                        .count()
                })
                .collect()
        };
        let began = Instant::now();
        while !confirmations(&sim.sent()).iter().all(|n| *n >= 1) {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "confirmations per booking: {:?}",
                confirmations(&sim.sent())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Late duplicates would show within a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = sim.sent();
        let per_id = sends_by_id(&sent);
        let wrong: Vec<(&String, usize)> = ids
            .iter()
            .map(|id| (id, per_id.get(id).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect();
        assert!(wrong.is_empty(), "sent other than once: {wrong:?}");
        let counts = confirmations(&sent);
        assert!(
            counts.iter().all(|n| *n == 1),
            "confirmations per booking: {counts:?}"
        );
        let throttled: Vec<String> = sim
            .rejected()
            .iter()
            .filter(|r| r.code == 130_429)
            .map(|r| format!("{} at {:?}", r.phone_number_id, r.at))
            .collect();
        if !throttled.is_empty() {
            let moves: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|n| {
                    std::fs::read_to_string(&n.log)
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.contains("lease") || l.contains("handed"))
                        .map(|l| format!("{}: {l}", n.port))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "the sandbox refused sends over the tier: {throttled:?}\nownership moves:\n{}",
                moves.join("\n")
            );
        }
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
    }

    /// Waits until none of `numbers` is held by `node` any more; how long that took.
    async fn moved_from(&self, node: usize, numbers: &[String]) -> Duration {
        let began = Instant::now();
        loop {
            let h = holders(&self.store).await;
            let moved = numbers
                .iter()
                .all(|n| matches!(h.get(n), Some(Some(owner)) if owner != NODES[node]));
            if moved {
                return began.elapsed();
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "the numbers of {} never moved: {h:?}",
                NODES[node]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One deployment at a time: six gateway processes and two clusters on two cores would jitter
/// sends enough to blur the tier check, which is what these tests judge.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn owned_by(spread: &HashMap<String, Option<String>>, node: usize) -> Vec<String> {
    spread
        .iter()
        .filter(|(_, h)| h.as_deref() == Some(NODES[node]))
        .map(|(n, _)| n.clone())
        .collect()
}

#[actix_rt::test]
async fn three_nodes_share_the_numbers_and_survive_losing_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut d = Deployment::new("multinode_kill", &[]);
    d.start(&[0, 1, 2]).await;
    let spread = d.settled_over(&[0, 1, 2]).await;
    // The victim: the node (not node-1, which takes the webhooks) owning the most numbers.
    let victim = if owned_by(&spread, 1).len() >= owned_by(&spread, 2).len() {
        1
    } else {
        2
    };
    let victim_numbers = owned_by(&spread, victim);
    assert!(!victim_numbers.is_empty(), "{spread:?}");

    // A mixed load through every node: 80 templates per number (8 s of work at the tier)
    // and bookings (confirmations).
    let mut ids = Vec::new();
    let mut booked = Vec::new();
    for round in 0..8 {
        let (i, b) = d.load(&[0, 1, 2], 10, round).await;
        ids.extend(i);
        booked.extend(b);
    }

    // Kill the victim while its numbers still have most of their work queued.
    let killed_at = SystemTime::now();
    d.nodes[victim].kill();
    let moved_after = d.moved_from(victim, &victim_numbers).await;
    assert!(
        moved_after <= FAILOVER_BOUND,
        "failover took {moved_after:?} (bound {FAILOVER_BOUND:?})"
    );
    d.assert_exactly_once_within_tier(&ids, &booked).await;
    // The dead node's numbers were sent for by their new owners after the kill.
    let sent = d.sandbox.state().sent();
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

#[actix_rt::test]
async fn nodes_joining_take_their_share_and_a_stopped_node_hands_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut d = Deployment::new("multinode_join", &[]);
    d.start(&[0]).await;
    d.settled_over(&[0]).await;
    // Work queued while node-1 owns everything, then two nodes join: node-1 drains and hands
    // their numbers over while they are busy.
    let (mut ids, mut booked) = d.load(&[0], 30, 0).await;
    d.start(&[1, 2]).await;
    let spread = d.settled_over(&[0, 1, 2]).await;
    let (i, b) = d.load(&[0, 1, 2], 20, 1).await;
    ids.extend(i);
    booked.extend(b);
    // A graceful stop (SIGTERM): node-3 drains and gives its leases back, so its numbers move
    // at the others' next tick instead of after the lease runs out.
    let leaving = owned_by(&spread, 2);
    let stopped = d.nodes[2].terminate(Duration::from_secs(15));
    assert!(
        stopped.is_some_and(|(status, _)| status.success()),
        "node-3 did not stop cleanly"
    );
    if !leaving.is_empty() {
        let moved_after = d.moved_from(2, &leaving).await;
        assert!(
            moved_after < Duration::from_secs(3),
            "released numbers moved only after {moved_after:?}"
        );
    }
    let (i, b) = d.load(&[0, 1], 10, 2).await;
    ids.extend(i);
    booked.extend(b);
    d.assert_exactly_once_within_tier(&ids, &booked).await;
    println!(
        "multinode: {} messages + {} bookings; joins and a graceful stop",
        ids.len(),
        booked.len()
    );
}

#[actix_rt::test]
async fn a_clinics_api_rate_limit_holds_across_nodes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut d = Deployment::new(
        "multinode_rate",
        &[
            ("CLINIC_GATEWAY__API__RATE_PER_SECOND", "5"),
            ("CLINIC_GATEWAY__API__BURST", "5"),
        ],
    );
    d.start(&[0, 1, 2]).await;
    // 30 requests at once, spread over the three nodes: one budget of 5 (plus what refills while
    // they are answered), not 5 per node.
    let began = Instant::now();
    let answers = futures::future::join_all((0..30).map(|i| {
        let node = &d.nodes[i % NODES.len()];
        d.http
            .get(format!("{}/v1/messages?status=failed", node.base()))
            .bearer_auth(KEY_A)
            .send()
    }))
    .await;
    let elapsed = began.elapsed().as_secs_f64();
    let mut admitted = 0;
    for a in answers {
        let r = a.unwrap_or_else(|e| panic!("{e}"));
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => assert!(r.headers().contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
    }
    let most = 5 + (5.0 * elapsed).ceil() as usize;
    assert!(
        (5..=most).contains(&admitted),
        "{admitted} admitted in {elapsed:.2} s (one budget: 5 + 5/s, at most {most})"
    );
}

/// The sum of a counter's series in a node's `/metrics`.
async fn counter(http: &reqwest::Client, node: &Node, name: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", node.base()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn a_patients_messages_go_to_the_clinics_owner_whichever_node_meta_calls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut d = Deployment::new("multinode_inbox", &[]);
    d.start(&[0, 1, 2]).await;
    d.settled_over(&[0, 1, 2]).await;
    // A clinic owned by another node than node-1, which receives every webhook.
    let began = Instant::now();
    let (clinic, owner) = loop {
        let mut found = None;
        for c in &CLINICS {
            let t = clinic_gateway::domain::TenantId::parse(c.id).unwrap_or_else(|e| panic!("{e}"));
            let holder = d
                .store
                .lease_holder(&Leased::Tenant(t))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|f| f.node);
            if let Some(i) = NODES.iter().position(|n| Some(*n) == holder.as_deref()) {
                if i != 0 && found.is_none() {
                    found = Some((c, i));
                }
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no clinic owned outside node-1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sim = d.sandbox.state();
    let patient = "919811100001";
    let texts: Vec<String> = (1..=5)
        .map(|i| format!("question {i} for the clinic"))
        .collect();
    for t in &texts {
        sim.inject_inbound_text(clinic.numbers[0], patient, t);
    }
    // Forwarded to the clinic's inbox (no workflow answers free text), all five.
    let began = Instant::now();
    loop {
        let v: Value = d
            .http
            .get(format!("{}/v1/inbox", d.nodes[0].base()))
            .bearer_auth(clinic.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        let got = v["messages"].as_array().map_or(0, |m| m.len());
        if got >= texts.len() {
            assert_eq!(got, texts.len(), "{v}");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the inbox has {got} of {}: {v}\nowner log:\n{}",
            texts.len(),
            d.nodes[owner].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Handled by the clinic's owner, not by node-1 where the webhooks arrived.
    let name = "clinic_gateway_inbound_messages_total";
    assert_eq!(counter(&d.http, &d.nodes[owner], name).await, 5.0);
    assert_eq!(counter(&d.http, &d.nodes[0], name).await, 0.0);
}
