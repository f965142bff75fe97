//! Signed webhook delivery: a scheduler of due items, batching per (WABA, number), and retries
//! with backoff so a gateway that was down receives what it missed.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};

use crate::signature;
use crate::wire::{
    Change, Entry, InboundContact, InboundMessage, MessagesValue, Metadata, Status, WebhookEnvelope,
};

/// Past this many undelivered items the oldest retry batches are dropped: memory stays bounded
/// even when the receiver is down for good.
const MAX_RETRY_ITEMS: usize = 100_000;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
const POST_TIMEOUT: Duration = Duration::from_secs(5);
const CONCURRENT_POSTS: usize = 32;
/// Upper bound on how late a due item is picked up.
const TICK: Duration = Duration::from_millis(10);

/// Which POST an item can share with others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub waba_id: String,
    pub phone_number_id: String,
    pub display_phone_number: String,
}

#[derive(Debug, Clone)]
pub enum Item {
    Status(Status),
    /// Boxed: inbound messages are rare next to statuses, which should stay small in the queue.
    Inbound {
        contact: InboundContact,
        message: Box<InboundMessage>,
    },
    /// A change that is not about one number's messages (template and quality events).
    Field(Change),
}

struct Scheduled {
    due: Instant,
    seq: u64,
    key: GroupKey,
    item: Item,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed so that BinaryHeap (a max-heap) pops the earliest due item first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Post {
    body: Bytes,
    signature: String,
    items: usize,
    attempts: u32,
    first_attempt: Instant,
    next_at: Instant,
    delay: Duration,
}

/// Delivery settings, copied out of the sandbox config.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub url: Option<String>,
    pub app_secret: String,
    pub batch_max: usize,
    pub duplicate_rate: f64,
    pub reorder: bool,
    pub retry_interval: Duration,
}

pub struct WebhookQueue {
    config: DeliveryConfig,
    pending: Mutex<BinaryHeap<Scheduled>>,
    retries: Mutex<VecDeque<Post>>,
    retry_items: AtomicUsize,
    seq: AtomicU64,
    notify: Notify,
    delivered_posts: AtomicU64,
    failed_posts: AtomicU64,
}

impl WebhookQueue {
    pub fn new(config: DeliveryConfig) -> Self {
        Self {
            config,
            pending: Mutex::new(BinaryHeap::new()),
            retries: Mutex::new(VecDeque::new()),
            retry_items: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            notify: Notify::new(),
            delivered_posts: AtomicU64::new(0),
            failed_posts: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.url.is_some()
    }

    /// Queues an item for delivery at `due`. Does nothing when no webhook URL is configured.
    pub fn schedule(&self, due: Instant, key: GroupKey, item: Item) {
        if !self.enabled() {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let immediate = due <= Instant::now();
        self.pending.lock().push(Scheduled {
            due,
            seq,
            key,
            item,
        });
        if immediate {
            self.notify.notify_one();
        }
    }

    pub fn clear(&self) {
        self.pending.lock().clear();
        self.retries.lock().clear();
        self.retry_items.store(0, Ordering::Relaxed);
    }

    /// Items not yet delivered (scheduled, or waiting for a retry).
    pub fn backlog(&self) -> usize {
        self.pending.lock().len() + self.retry_items.load(Ordering::Relaxed)
    }

    /// (POSTs answered 200, POSTs that failed at least once).
    pub fn post_counts(&self) -> (u64, u64) {
        (
            self.delivered_posts.load(Ordering::Relaxed),
            self.failed_posts.load(Ordering::Relaxed),
        )
    }

    fn take_due(&self, now: Instant) -> Vec<Scheduled> {
        let mut heap = self.pending.lock();
        let mut out = Vec::new();
        while heap.peek().is_some_and(|s| s.due <= now) {
            if let Some(s) = heap.pop() {
                out.push(s);
            }
        }
        out
    }

    fn take_due_retries(&self, now: Instant) -> Vec<Post> {
        let mut retries = self.retries.lock();
        let mut due = Vec::new();
        let mut keep = VecDeque::with_capacity(retries.len());
        for p in retries.drain(..) {
            if p.next_at <= now {
                due.push(p);
            } else {
                keep.push_back(p);
            }
        }
        *retries = keep;
        for p in &due {
            self.retry_items.fetch_sub(p.items, Ordering::Relaxed);
        }
        due
    }

    fn requeue(&self, mut post: Post) {
        let now = Instant::now();
        if now.duration_since(post.first_attempt) >= GIVE_UP_AFTER {
            tracing::warn!(
                items = post.items,
                "webhook POST given up after 1 h of retries"
            );
            return;
        }
        post.next_at = now + post.delay;
        post.delay = (post.delay * 2).min(MAX_RETRY_DELAY);
        let mut retries = self.retries.lock();
        self.retry_items.fetch_add(post.items, Ordering::Relaxed);
        retries.push_back(post);
        while self.retry_items.load(Ordering::Relaxed) > MAX_RETRY_ITEMS {
            match retries.pop_front() {
                Some(old) => {
                    self.retry_items.fetch_sub(old.items, Ordering::Relaxed);
                    tracing::warn!(
                        items = old.items,
                        "webhook retry queue full: dropping the oldest batch"
                    );
                }
                None => break,
            }
        }
    }

    /// Turns due items into signed POST bodies: statuses batched per group, inbound messages
    /// and field changes one per POST (as Meta sends them).
    fn build_posts(&self, due: Vec<Scheduled>) -> Vec<Post> {
        let mut groups: HashMap<GroupKey, Vec<Status>> = HashMap::new();
        let mut order: Vec<GroupKey> = Vec::new();
        let mut bodies: Vec<(usize, WebhookEnvelope)> = Vec::new();
        let mut rng = rand::thread_rng();
        for s in due {
            match s.item {
                Item::Status(status) => {
                    let list = groups.entry(s.key.clone()).or_insert_with(|| {
                        order.push(s.key.clone());
                        Vec::new()
                    });
                    if self.config.duplicate_rate > 0.0
                        && rng.gen_bool(self.config.duplicate_rate.clamp(0.0, 1.0))
                    {
                        list.push(status.clone());
                    }
                    list.push(status);
                }
                Item::Inbound { contact, message } => {
                    let value = MessagesValue {
                        messaging_product: "whatsapp".into(),
                        metadata: metadata(&s.key),
                        contacts: vec![contact],
                        messages: vec![*message],
                        ..MessagesValue::default()
                    };
                    bodies.push((1, envelope(&s.key.waba_id, Change::Messages(value))));
                }
                Item::Field(change) => bodies.push((1, envelope(&s.key.waba_id, change))),
            }
        }
        let batch_max = self.config.batch_max.max(1);
        for key in order {
            let Some(mut statuses) = groups.remove(&key) else {
                continue;
            };
            if self.config.reorder {
                statuses.shuffle(&mut rng);
            }
            while !statuses.is_empty() {
                let rest = statuses.split_off(batch_max.min(statuses.len()));
                let chunk = std::mem::replace(&mut statuses, rest);
                let value = MessagesValue {
                    messaging_product: "whatsapp".into(),
                    metadata: metadata(&key),
                    statuses: chunk,
                    ..MessagesValue::default()
                };
                let n = value.statuses.len();
                bodies.push((n, envelope(&key.waba_id, Change::Messages(value))));
            }
        }
        let now = Instant::now();
        bodies
            .into_iter()
            .filter_map(|(items, env)| match serde_json::to_vec(&env) {
                Ok(body) => Some(Post {
                    signature: signature::sign(self.config.app_secret.as_bytes(), &body),
                    body: Bytes::from(body),
                    items,
                    attempts: 0,
                    first_attempt: now,
                    next_at: now,
                    delay: self.config.retry_interval,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "could not serialise a webhook");
                    None
                }
            })
            .collect()
    }
}

fn metadata(key: &GroupKey) -> Metadata {
    Metadata {
        display_phone_number: key.display_phone_number.clone(),
        phone_number_id: key.phone_number_id.clone(),
    }
}

fn envelope(waba_id: &str, change: Change) -> WebhookEnvelope {
    WebhookEnvelope {
        object: "whatsapp_business_account".into(),
        entry: vec![Entry {
            id: waba_id.to_owned(),
            changes: vec![change],
        }],
    }
}

/// The delivery loop; runs until its runtime stops.
pub async fn run(queue: Arc<WebhookQueue>) {
    let Some(url) = queue.config.url.clone() else {
        return;
    };
    let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; no webhooks will be sent");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(CONCURRENT_POSTS));
    loop {
        let now = Instant::now();
        let mut posts = queue.build_posts(queue.take_due(now));
        posts.extend(queue.take_due_retries(now));
        for mut post in posts {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let client = client.clone();
            let url = url.clone();
            let queue = queue.clone();
            actix_web::rt::spawn(async move {
                post.attempts += 1;
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(signature::SIGNATURE_HEADER, &post.signature)
                    .body(post.body.clone())
                    .send()
                    .await;
                let ok = match result {
                    Ok(resp) if resp.status().as_u16() == 200 => true,
                    Ok(resp) => {
                        tracing::debug!(status = resp.status().as_u16(), "webhook POST refused");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "webhook POST failed");
                        false
                    }
                };
                if ok {
                    queue.delivered_posts.fetch_add(1, Ordering::Relaxed);
                } else {
                    queue.failed_posts.fetch_add(1, Ordering::Relaxed);
                    queue.requeue(post);
                }
                drop(permit);
            });
        }
        let _ = tokio::time::timeout(TICK, queue.notify.notified()).await;
    }
}
