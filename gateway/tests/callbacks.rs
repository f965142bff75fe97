//! Clinic callbacks are durable: an endpoint that fails for a while gets the event later, signed,
//! with the same event id, and a slow endpoint holds no other clinic's events.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Events received: (event id header, body).
type Received = Arc<parking_lot::Mutex<Vec<(String, Value)>>>;

/// A receiver that answers 503 to the first `fail_first` deliveries.
fn flaky_receiver(fail_first: usize) -> (String, Received, Arc<AtomicUsize>) {
    let got: Received = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}/events",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let (g, c) = (got.clone(), calls.clone());
    let server = actix_web::HttpServer::new(move || {
        let (g, c) = (g.clone(), c.clone());
        actix_web::App::new().route(
            "/events",
            actix_web::web::post().to(
                move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                    let (g, c) = (g.clone(), c.clone());
                    async move {
                        if c.fetch_add(1, Ordering::SeqCst) < fail_first {
                            return actix_web::HttpResponse::ServiceUnavailable().finish();
                        }
                        let id = req
                            .headers()
                            .get("X-Clinic-Gateway-Event")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        g.lock()
                            .push((id, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        actix_web::HttpResponse::Ok().finish()
                    }
                },
            ),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    actix_rt::spawn(server);
    (url, got, calls)
}

#[actix_rt::test]
async fn an_event_for_a_failing_endpoint_is_retried_until_it_lands() {
    let app = spawn_app("callbacks_durable", Options::default()).await;
    let (url, got, calls) = flaky_receiver(2);
    app.patch_clinic(
        "clinic_a",
        json!({"callback": {"url": url, "secret": "callback-secret-0123456789"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A message no workflow answers raises `message.received`.
    app.sim.inject_inbound_text(
        NUMBER_A,
        PATIENT.trim_start_matches('+'),
        "Is the clinic open today?",
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) && got.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.lock().clone();
    assert_eq!(
        got.len(),
        1,
        "delivered once after two refusals ({} calls)",
        calls.load(Ordering::SeqCst)
    );
    let (id, event) = &got[0];
    assert_eq!(
        (event["type"].as_str(), event["id"].as_str()),
        (Some("message.received"), Some(id.as_str()))
    );
    assert!(calls.load(Ordering::SeqCst) >= 3);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("clinic_gateway_callback_deliveries_total{result=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clinic_gateway_callback_deliveries_total{result=\"delivered\"} 1"),
        "{metrics}"
    );
}

/// One clinic's endpoint refusing does not hold up another's events: clinic B's lands at once
/// while clinic A's waits for its retry, and A's is still delivered (once) when its endpoint
/// answers. That the retries span an outage of an hour (about a day of backoff) is
/// `callbacks::tests::backoff_doubles_to_half_an_hour_and_spans_a_day`.
#[actix_rt::test]
async fn a_failing_endpoint_does_not_block_another_clinics_events() {
    let app = spawn_app("callbacks_isolated", Options::default()).await;
    let (down_url, down_got, down_calls) = flaky_receiver(2);
    let (up_url, up_got, _) = flaky_receiver(0);
    for (clinic, url) in [("clinic_a", &down_url), ("clinic_b", &up_url)] {
        app.patch_clinic(
            clinic,
            json!({"callback": {"url": url, "secret": "callback-secret-0123456789"}}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let patient = PATIENT.trim_start_matches('+');
    app.sim
        .inject_inbound_text(NUMBER_A, patient, "Is the clinic open today?");
    app.sim
        .inject_inbound_text(NUMBER_B, patient, "Is the clinic open today?");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) && up_got.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up_got.lock().len(), 1, "clinic B's event");
    // Clinic A's endpoint refuses twice: its event is retried after 5 s and 10 s more.
    assert!(
        down_got.lock().is_empty(),
        "clinic A's endpoint refused, its retries come later"
    );
    while start.elapsed() < Duration::from_secs(40) && down_got.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        down_got.lock().len(),
        1,
        "clinic A's event, retried, not lost"
    );
    assert_eq!(down_calls.load(Ordering::SeqCst), 3);
}
