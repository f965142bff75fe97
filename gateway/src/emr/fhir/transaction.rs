//! `POST [base]` with a `transaction` or `batch` Bundle. The gateway is not a FHIR data store:
//! an entry may create or update (POST/PUT) the resources it acts on, carry the resources they
//! reference (Practitioner, Location, Binary … accepted, not stored) or delete; reads, searches,
//! PATCH and operations are refused with an OperationOutcome naming the entry.
//!
//! A transaction is all or nothing as far as the gateway can make it: every entry is checked and
//! planned (referenced Patients read, PDFs decoded and fetched) before any is acted on, so an
//! entry that cannot be acted on rejects the whole Bundle with nothing sent. If acting fails
//! half-way (the store or Meta is down), the entries before it stay done; sending the Bundle
//! again is safe because every entry is idempotent by its `Type/id`. A batch acts on each entry
//! on its own and reports each in the batch-response.

use actix_web::http::StatusCode;
use fhir_r4::{
    Bundle, BundleEntry, BundleResponse, BundleType, HttpVerb, Instant, OperationOutcome, Resource,
};
use serde_json::Value;

use super::ingest::{is_accepted, is_context, is_fhir_id};
use super::outcome::{informational, Failure};
use super::service::{Done, Ingest, Planned};

/// Most entries a Bundle may have.
pub const MAX_ENTRIES: usize = 1_000;

/// What one entry asks for.
#[derive(Debug)]
enum Job<'b> {
    Ingest {
        resource: &'b Resource,
        raw: &'b Value,
    },
    Delete {
        resource_type: String,
        id: String,
    },
    /// A referenced resource riding along.
    Context {
        resource_type: String,
    },
}

/// `Type`, `Type/id` or `Type?query` of a request URL (relative to the base).
fn url_parts(url: &str) -> (String, Option<String>, bool) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut segs = path.trim_matches('/').split('/');
    let t = segs.next().unwrap_or("").to_owned();
    let id = segs.next().map(str::to_owned);
    (t, id, query.is_some())
}

fn prepare<'b>(entry: &'b BundleEntry, raw: &'b Value, what: &str) -> Result<Job<'b>, Failure> {
    let Some(req) = entry.request.as_ref() else {
        return Err(Failure::invalid(
            format!("request is required in a {what}"),
            "request",
        ));
    };
    let url = req.url.trim();
    let method = req.method;
    if url.contains('$') {
        return Err(Failure::not_supported(format!(
            "{method} {url}: operations are not supported; a {what} here may only create, update or delete"
        )));
    }
    let (url_type, url_id, conditional) = url_parts(url);
    match method {
        HttpVerb::Get | HttpVerb::Head | HttpVerb::Patch => Err(Failure::not_supported(format!(
            "{method} {url}: the gateway is not a FHIR data store; a {what} here may only create (POST), update (PUT) or delete (DELETE)"
        ))),
        HttpVerb::Delete => {
            if !is_accepted(&url_type) && !is_context(&url_type) {
                return Err(Failure::not_supported(format!(
                    "DELETE {url}: {url_type} is not a resource the gateway takes"
                )));
            }
            match url_id {
                Some(id) if !conditional && is_fhir_id(&id) => Ok(Job::Delete {
                    resource_type: url_type,
                    id,
                }),
                _ if url_type != "Appointment" => Ok(Job::Context {
                    resource_type: url_type,
                }),
                _ => Err(Failure::not_supported(format!(
                    "DELETE {url}: conditional deletes of Appointments are not supported; use DELETE Appointment/<id>"
                ))),
            }
        }
        HttpVerb::Post | HttpVerb::Put => {
            let resource = entry.resource.as_ref().ok_or_else(|| {
                Failure::invalid(format!("{method} {url} has no resource"), "resource")
            })?;
            let rt = resource.resource_type();
            if rt != url_type {
                return Err(Failure::invalid(
                    format!("the resource is a {rt} but request.url is {url}"),
                    "request.url",
                ));
            }
            if let (HttpVerb::Put, Some(id)) = (method, url_id.as_deref()) {
                if resource.id() != Some(id) {
                    return Err(Failure::invalid(
                        format!(
                            "PUT {url}: the resource's id ({}) must match the URL",
                            resource.id().unwrap_or("none")
                        ),
                        "resource.id",
                    ));
                }
            }
            if is_accepted(rt) {
                Ok(Job::Ingest { resource, raw })
            } else if is_context(rt) {
                Ok(Job::Context {
                    resource_type: rt.to_owned(),
                })
            } else {
                Err(Failure::not_supported(format!(
                    "{method} {url}: {rt} is not taken here; the gateway acts on Appointment, DiagnosticReport, DocumentReference, Encounter and Patient (and accepts the resources they reference)"
                )))
            }
        }
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

fn response_entry(status: StatusCode, outcome: OperationOutcome) -> BundleEntry {
    BundleEntry {
        response: Some(BundleResponse {
            status: status_line(status),
            location: None,
            etag: None,
            last_modified: None,
            outcome: Some(Resource::OperationOutcome(Box::new(outcome))),
        }),
        ..BundleEntry::default()
    }
}

fn done_entry(done: &Done) -> BundleEntry {
    let status = if done.acted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    response_entry(status, informational(done.message.clone(), done.warning))
}

fn response_bundle(type_: BundleType, entry: Vec<BundleEntry>) -> Bundle {
    Bundle {
        id: None,
        meta: None,
        identifier: None,
        type_,
        timestamp: Some(Instant::from_datetime(chrono::Utc::now().fixed_offset())),
        total: None,
        link: Vec::new(),
        entry,
    }
}

fn context_done(resource_type: &str) -> Done {
    Done::nothing(format!(
        "{resource_type} accepted as context for the other entries; the gateway keeps no copy"
    ))
}

fn raw_resource(raw: &Value, i: usize) -> &Value {
    raw.pointer(&format!("/entry/{i}/resource"))
        .unwrap_or(&Value::Null)
}

/// Processes a transaction (all or nothing) or a batch (each entry on its own); returns the
/// response Bundle and whether anything was acted on.
pub async fn process(
    ingest: &Ingest<'_>,
    raw: &Value,
    bundle: &Bundle,
) -> Result<(Bundle, bool), Failure> {
    let batch = match bundle.type_ {
        BundleType::Batch => true,
        BundleType::Transaction => false,
        other => {
            return Err(Failure::not_supported(format!(
                "Bundle.type {other} is not processed as a transaction or batch"
            )))
        }
    };
    if bundle.entry.len() > MAX_ENTRIES {
        return Err(Failure::too_large(format!(
            "the Bundle has {} entries; at most {MAX_ENTRIES} are taken in one request",
            bundle.entry.len()
        )));
    }
    if batch {
        return Ok(self::batch(ingest, raw, bundle).await);
    }
    transaction(ingest, raw, bundle).await
}

async fn batch(ingest: &Ingest<'_>, raw: &Value, bundle: &Bundle) -> (Bundle, bool) {
    let mut entries = Vec::with_capacity(bundle.entry.len());
    let mut acted = false;
    for (i, entry) in bundle.entry.iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        let result = match prepare(entry, raw_resource(raw, i), "batch") {
            Err(f) => Err(f),
            Ok(Job::Context { resource_type }) => Ok(context_done(&resource_type)),
            Ok(Job::Delete { resource_type, id }) => ingest.delete(&resource_type, &id).await,
            Ok(Job::Ingest { resource, raw }) => ingest.ingest(resource, raw, Some(bundle)).await,
        };
        entries.push(match result {
            Ok(done) => {
                acted |= done.acted;
                done_entry(&done)
            }
            Err(f) => {
                let f = f.at(&at);
                tracing::info!(tenant = %ingest.clinic.id, entry = i, error = %f, "FHIR batch entry refused");
                response_entry(f.status, f.outcome)
            }
        });
    }
    (response_bundle(BundleType::BatchResponse, entries), acted)
}

async fn transaction(
    ingest: &Ingest<'_>,
    raw: &Value,
    bundle: &Bundle,
) -> Result<(Bundle, bool), Failure> {
    // 1. Every entry is something the gateway can take.
    let mut jobs = Vec::with_capacity(bundle.entry.len());
    let mut refused: Option<Failure> = None;
    for (i, entry) in bundle.entry.iter().enumerate() {
        match prepare(entry, raw_resource(raw, i), "transaction") {
            Ok(job) => jobs.push(job),
            Err(f) => {
                let f = f.at(&format!("Bundle.entry[{i}]"));
                refused = Some(match refused {
                    None => f,
                    Some(mut first) => {
                        first.outcome = first.outcome.and(f.outcome);
                        first
                    }
                });
            }
        }
    }
    if let Some(mut f) = refused {
        if let Some(issue) = f.outcome.issue.first_mut() {
            if let Some(d) = issue.diagnostics.as_mut() {
                d.push_str(" (the transaction was not processed: nothing was acted on)");
            }
        }
        return Err(f);
    }
    // 2. Every entry is planned (reads only) before any is acted on.
    enum Step {
        Planned(Box<Planned>),
        Delete(String, String),
    }
    let mut steps = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        steps.push(match job {
            Job::Context { resource_type } => {
                Step::Planned(Box::new(Planned::Nothing(context_done(&resource_type))))
            }
            Job::Delete { resource_type, id } => Step::Delete(resource_type, id),
            Job::Ingest { resource, raw } => Step::Planned(Box::new(
                ingest
                    .plan(resource, raw, Some(bundle))
                    .await
                    .map_err(|f| {
                        f.at(&format!("Bundle.entry[{i}]"))
                            .note("the transaction was not processed: nothing was acted on")
                    })?,
            )),
        });
    }
    // 3. Act.
    let mut entries = Vec::with_capacity(steps.len());
    let mut acted = false;
    for (i, step) in steps.into_iter().enumerate() {
        let result = match step {
            Step::Planned(p) => ingest.execute(*p).await,
            Step::Delete(t, id) => ingest.delete(&t, &id).await,
        };
        let done = result.map_err(|f| {
            f.at(&format!("Bundle.entry[{i}]")).note(
                "entries before it were acted on; sending the Bundle again is safe (every entry is idempotent)",
            )
        })?;
        acted |= done.acted;
        entries.push(done_entry(&done));
    }
    Ok((
        response_bundle(BundleType::TransactionResponse, entries),
        acted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> BundleEntry {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn entries_the_gateway_does_not_take() {
        let cases = [
            (
                json!({"request": {"method": "GET", "url": "Patient?name=peter"}}),
                "not a FHIR data store",
            ),
            (
                json!({"resource": {"resourceType": "Parameters"}, "request": {"method": "POST", "url": "ValueSet/$lookup"}}),
                "operations are not supported",
            ),
            (
                json!({"resource": {"resourceType": "Claim"}, "request": {"method": "POST", "url": "Claim"}}),
                "Claim is not taken here",
            ),
            (
                json!({"request": {"method": "DELETE", "url": "Appointment?identifier=1"}}),
                "conditional deletes",
            ),
            (
                json!({"resource": {"resourceType": "Patient", "id": "1"}, "request": {"method": "PUT", "url": "Patient/2"}}),
                "must match the URL",
            ),
            (
                json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Encounter"}}),
                "is a Patient but request.url",
            ),
            (
                json!({"resource": {"resourceType": "Patient"}}),
                "request is required",
            ),
        ];
        for (v, expected) in cases {
            let e = entry(v.clone());
            let raw = v.get("resource").cloned().unwrap_or(Value::Null);
            let f = prepare(&e, &raw, "transaction")
                .err()
                .unwrap_or_else(|| panic!("accepted {v}"));
            assert!(f.diagnostics().contains(expected), "{v}: {f}");
        }
    }

    #[test]
    fn entries_the_gateway_takes() {
        let v = json!({"resource": {"resourceType": "Patient", "id": "123"}, "request": {"method": "PUT", "url": "Patient/123"}});
        let e = entry(v.clone());
        assert!(matches!(
            prepare(&e, &v["resource"], "transaction"),
            Ok(Job::Ingest { .. })
        ));
        let v = json!({"request": {"method": "DELETE", "url": "Patient/234"}});
        assert!(matches!(
            prepare(&entry(v), &Value::Null, "transaction"),
            Ok(Job::Delete { .. })
        ));
        let v = json!({"request": {"method": "DELETE", "url": "Patient?identifier=123456"}});
        assert!(matches!(
            prepare(&entry(v), &Value::Null, "transaction"),
            Ok(Job::Context { .. })
        ));
        let v = json!({"resource": {"resourceType": "Practitioner", "id": "d"}, "request": {"method": "POST", "url": "Practitioner"}});
        let e = entry(v.clone());
        assert!(matches!(
            prepare(&e, &v["resource"], "batch"),
            Ok(Job::Context { .. })
        ));
        assert_eq!(status_line(StatusCode::CREATED), "201 Created");
    }
}
