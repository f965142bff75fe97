//! REST client against a tiny in-test HTTP/1.1 server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fhir_r4::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&Req) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + Sync>;

async fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Req>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_owned();
                let path = first.next().unwrap_or("").to_owned();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = buf[head_end..].to_vec();
                while body.len() < len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&tmp[..n]);
                }
                let req = Req {
                    method,
                    path,
                    headers,
                    body,
                };
                let (status, hdrs, out) = handler(&req);
                log.lock().unwrap().push(req);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    out.len()
                );
                for (k, v) in hdrs {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&out).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/fhir/r4"), seen)
}

fn appointment(status: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "resourceType": "Appointment", "id": "a1",
        "meta": {"versionId": version, "lastUpdated": "2024-06-01T09:00:00+05:30"},
        "status": status,
        "start": "2024-06-01T10:30:00+05:30",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]
    }))
    .unwrap()
}

fn client(base: &str, token: Option<&str>) -> FhirClient {
    let mut cfg = ClientConfig::new(base.parse().unwrap());
    cfg.bearer_token = token.map(str::to_owned);
    cfg.timeout = Duration::from_secs(5);
    FhirClient::new(cfg).unwrap()
}

#[tokio::test]
async fn read_returns_resource_and_version() {
    let (base, seen) = serve(Arc::new(|r: &Req| {
        if r.path.ends_with("/a1") {
            (
                200,
                vec![
                    ("ETag", "W/\"3\"".into()),
                    ("Content-Type", FHIR_JSON.into()),
                ],
                appointment("booked", "3"),
            )
        } else {
            let oo = OperationOutcome::not_found("Appointment", "zz");
            (
                404,
                vec![],
                Resource::OperationOutcome(Box::new(oo)).to_json().unwrap(),
            )
        }
    }))
    .await;
    let c = client(&base, Some("s3cret"));
    let v = c.read_as::<Appointment>("a1").await.unwrap();
    assert_eq!(v.resource.status, AppointmentStatus::Booked);
    assert_eq!(v.etag.as_deref(), Some("W/\"3\""));
    assert_eq!(v.version_id.as_deref(), Some("3"));
    {
        let reqs = seen.lock().unwrap();
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(
            reqs[0].headers.get("authorization").map(String::as_str),
            Some("Bearer s3cret")
        );
        assert_eq!(
            reqs[0].headers.get("accept").map(String::as_str),
            Some(FHIR_JSON)
        );
    }

    let err = c.read("Appointment", "zz").await.unwrap_err();
    match &err {
        ClientError::Status {
            status: 404,
            outcome: Some(oo),
            ..
        } => {
            assert_eq!(oo.issue[0].code, IssueType::NotFound);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("not-found"), "{err}");
    // Ids that cannot be a path segment are refused before sending.
    assert!(matches!(
        c.read("Appointment", "../x").await,
        Err(ClientError::InvalidUrl { .. })
    ));
    assert!(matches!(
        c.read_as::<Patient>("a1").await,
        Err(ClientError::Parse { .. })
    ));
}

#[tokio::test]
async fn patch_sends_json_patch_with_if_match() {
    let (base, seen) = serve(Arc::new(|r: &Req| {
        let ok_ct = r.headers.get("content-type").map(String::as_str)
            == Some("application/json-patch+json");
        let ok_match = r.headers.get("if-match").map(String::as_str) == Some("W/\"3\"");
        if r.method != "PATCH" || !ok_ct {
            return (400, vec![], b"{}".to_vec());
        }
        if !ok_match {
            let oo = OperationOutcome::conflict("version mismatch");
            return (
                412,
                vec![],
                Resource::OperationOutcome(Box::new(oo)).to_json().unwrap(),
            );
        }
        (
            200,
            vec![("ETag", "W/\"4\"".into())],
            appointment("cancelled", "4"),
        )
    }))
    .await;
    let c = client(&base, None);
    let patch = JsonPatch::cancel_appointment_by_patient(AppointmentStatus::Booked, None);
    let v = c
        .patch("Appointment", "a1", &patch, Some(&weak_etag("3")))
        .await
        .unwrap();
    let a: Appointment = v.resource.into_type().unwrap();
    assert_eq!(a.status, AppointmentStatus::Cancelled);
    assert_eq!(v.version_id.as_deref(), Some("4"));
    {
        let reqs = seen.lock().unwrap();
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(
            body[0],
            json!({"op": "test", "path": "/status", "value": "booked"})
        );
        assert_eq!(body[2]["path"], "/cancelationReason");
        assert!(!reqs[0].headers.contains_key("authorization"));
    }
    let err = c
        .patch("Appointment", "a1", &patch, Some("W/\"2\""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::VersionConflict {
                status: 412,
                outcome: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version mismatch"), "{err}");
}

#[tokio::test]
async fn update_and_create() {
    let (base, seen) = serve(Arc::new(|r: &Req| {
        let ct = r.headers.get("content-type").cloned().unwrap_or_default();
        if ct != FHIR_JSON {
            return (415, vec![], Vec::new());
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/fhir/r4/Appointment/a1") => {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["resourceType"], "Appointment");
                (
                    200,
                    vec![("ETag", "W/\"5\"".into())],
                    appointment(v["status"].as_str().unwrap(), "5"),
                )
            }
            ("POST", "/fhir/r4/Communication") => {
                let mut v: Value = serde_json::from_slice(&r.body).unwrap();
                v["id"] = json!("c9");
                v["meta"] = json!({"versionId": "1"});
                (
                    201,
                    vec![(
                        "Location",
                        "http://x/fhir/r4/Communication/c9/_history/1".into(),
                    )],
                    serde_json::to_vec(&v).unwrap(),
                )
            }
            ("POST", "/fhir/r4/Patient") => (201, vec![], Vec::new()),
            _ => (405, vec![], Vec::new()),
        }
    }))
    .await;
    let c = client(&base, None);
    let a: Appointment = parse_as(&appointment("arrived", "4")).unwrap();
    let v = c.update(&a.into_resource(), Some("W/\"4\"")).await.unwrap();
    assert_eq!(v.version_id.as_deref(), Some("5"));
    assert_eq!(
        seen.lock().unwrap()[0]
            .headers
            .get("if-match")
            .map(String::as_str),
        Some("W/\"4\"")
    );

    let comm: Communication = serde_json::from_value(json!({
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "sent": "2024-06-01T10:00:00+05:30",
        "payload": [{"contentString": "Reminder sent"}]
    }))
    .unwrap();
    let v = c.create(&comm.into_resource()).await.unwrap();
    assert_eq!(v.status, 201);
    assert_eq!(v.resource.id(), Some("c9"));
    assert_eq!(v.version_id.as_deref(), Some("1"));
    assert!(v
        .location
        .as_deref()
        .unwrap()
        .ends_with("Communication/c9/_history/1"));

    let err = c
        .create(&Patient::default().into_resource())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::EmptyBody { status: 201, .. }),
        "{err}"
    );
    let err = c
        .update(&Patient::default().into_resource(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::MissingId(_)));
}

#[tokio::test]
async fn timeouts_and_size_limits() {
    let (base, _) = serve(Arc::new(|_r: &Req| (200, vec![], vec![b' '; 4096]))).await;
    let mut cfg = ClientConfig::new(base.parse().unwrap());
    cfg.max_response_bytes = 1024;
    let c = FhirClient::new(cfg).unwrap();
    assert!(matches!(
        c.read("Patient", "p1").await,
        Err(ClientError::TooLarge { .. })
    ));

    // A listener that never answers: the configured timeout fires.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cfg = ClientConfig::new(format!("http://{addr}/fhir").parse().unwrap());
    cfg.timeout = Duration::from_millis(300);
    let c = FhirClient::new(cfg).unwrap();
    assert!(matches!(
        c.read("Patient", "p1").await,
        Err(ClientError::Transport { .. })
    ));
    assert_eq!(version_from_etag("W/\"12\""), Some("12"));
    assert_eq!(version_from_etag("\"7\""), Some("7"));
}
