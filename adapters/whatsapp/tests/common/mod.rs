//! Test helpers: a webhook receiver on port 0 and Graph clients pointed at a sandbox.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use whatsapp_cloud::wire::{Change, Status, WebhookEnvelope};
use whatsapp_cloud::{ClientConfig, GraphClient};

pub const SECRET: &str = "test-secret";

#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature: Option<String>,
    pub body: Vec<u8>,
    /// The HTTP status the receiver answered.
    pub answered: u16,
}

impl Delivery {
    pub fn envelope(&self) -> WebhookEnvelope {
        serde_json::from_slice(&self.body).expect("webhook body parses")
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.envelope()
            .changes()
            .filter_map(|c| match c {
                Change::Messages(v) => Some(v.statuses.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

pub struct Receiver {
    pub url: String,
    pub rx: mpsc::UnboundedReceiver<Delivery>,
    pub posts: Arc<AtomicUsize>,
}

impl Receiver {
    /// Next delivery the receiver answered 200, within `wait`.
    pub async fn next_ok(&mut self, wait: Duration) -> Option<Delivery> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let d = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            if d.answered == 200 {
                return Some(d);
            }
        }
    }

    /// Every status delivered (answered 200) until `pred` holds over the collected list.
    pub async fn statuses_until(
        &mut self,
        wait: Duration,
        pred: impl Fn(&[Status]) -> bool,
    ) -> Vec<Status> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while !pred(&all) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_ok(left).await {
                Some(d) => {
                    whatsapp_cloud::signature::verify(
                        SECRET.as_bytes(),
                        &d.body,
                        d.signature.as_deref(),
                    )
                    .expect("every webhook is signed with the app secret");
                    all.extend(d.statuses());
                }
                None => break,
            }
        }
        all
    }
}

/// A minimal HTTP/1.1 server: answers 500 to the first `fail_first` POSTs, then 200.
pub async fn receiver(fail_first: usize) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p;
                        }
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut len = 0usize;
                    let mut signature = None;
                    for line in head.split("\r\n").skip(1) {
                        if let Some((k, v)) = line.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "content-length" {
                                len = v.trim().parse().unwrap_or(0);
                            } else if k == "x-hub-signature-256" {
                                signature = Some(v.trim().to_owned());
                            }
                        }
                    }
                    let start = head_end + 4;
                    while buf.len() < start + len {
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[start..start + len].to_vec();
                    buf.drain(..start + len);
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let answered = if n < fail_first { 500 } else { 200 };
                    let _ = tx.send(Delivery {
                        signature,
                        body,
                        answered,
                    });
                    let resp = format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\n\r\n");
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Receiver {
        url: format!("http://{addr}/webhooks/whatsapp"),
        rx,
        posts,
    }
}

pub fn client(base_url: &str) -> GraphClient {
    client_with_timeout(base_url, Duration::from_secs(10))
}

pub fn client_with_timeout(base_url: &str, timeout: Duration) -> GraphClient {
    GraphClient::new(ClientConfig {
        base_url: base_url.to_owned(),
        request_timeout: timeout,
        ..ClientConfig::default()
    })
    .expect("client")
}
