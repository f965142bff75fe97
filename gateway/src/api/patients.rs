//! The patient directory over HTTP: `PUT/GET/DELETE /v1/patients/{external_id}`,
//! `GET /v1/patients` (a filtered, paged list) and `POST /v1/patients/import` (CSV or NDJSON,
//! read as it streams in, with a per-row error report).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::patients::input::{CsvLayout, FieldError, InputContext, PatientInput};
use crate::patients::{PatientFilter, PatientRecord, Purpose};
use crate::tenants::ClinicSettings;

/// Bounds of one import request.
pub const MAX_IMPORT_BYTES: usize = 50 * 1024 * 1024;
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Rows written per pipelined batch.
const IMPORT_BATCH: usize = 1_000;
/// Row errors listed in the answer (all are counted in `failed`).
const MAX_REPORTED_ERRORS: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

fn zone(clinic: &ClinicSettings) -> chrono_tz::Tz {
    clinic.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

fn context(clinic: &ClinicSettings, source: &str) -> InputContext {
    InputContext {
        default_country_code: clinic.default_country_code.clone(),
        time_zone: zone(clinic),
        now_ms: now_ms(),
        source: source.to_owned(),
    }
}

fn invalid(e: FieldError) -> Problem {
    Problem::invalid_field(&e.field, e.detail)
}

fn unknown_patient() -> Problem {
    Problem::not_found("no patient with this external_id in this clinic")
}

pub async fn put(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let id = path.into_inner();
    let input: PatientInput = super::body::parse_json_body(&body)?;
    let record = input
        .into_record(Some(&id), &context(&clinic, "api"))
        .map_err(invalid)?;
    let done = state.patients.put(&clinic.id, record).await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(done.record))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    match state.patients.get(&clinic.id, &path.into_inner()).await? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(unknown_patient()),
    }
}

/// Erasure: what the clinic holds about the patient's phone (inbox messages, feedback, visits,
/// documents, appointments and their jobs, markers, the pending question, dead letters), then
/// the directory record and its index entries. Answers what was removed, per kind.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let external_id = path.into_inner();
    let Some(record) = state.patients.get(&clinic.id, &external_id).await? else {
        return Err(unknown_patient());
    };
    let erased = state
        .clinical
        .erase_patient(&clinic, std::slice::from_ref(&record.phone))
        .await?;
    if !state.patients.delete(&clinic.id, &external_id).await? {
        // Deleted concurrently: the clinical data is erased all the same.
        return Err(unknown_patient());
    }
    Ok(HttpResponse::Ok().json(json!({
        "external_id": external_id,
        "erased": erased,
        "kept": {
            "opt_out": erased.opt_out_kept,
            "messages_in_flight": erased.messages_in_flight_kept,
            "why": "a STOP is kept as the legal record that the patient refused messages; \
                    messages still queued or in flight are kept and expire on the clinic's \
                    retention (default 30 days) after they end; \
                    documents' media stay at Meta until Meta drops them (30 days)",
        },
    })))
}

/// `GET /v1/patients`: lists are comma-separated; all criteria AND-ed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Every one of these tags.
    tag: Option<String>,
    /// At least one of these tags.
    tag_any: Option<String>,
    /// A condition code starting with one of these.
    condition: Option<String>,
    language: Option<String>,
    age_min: Option<u32>,
    age_max: Option<u32>,
    /// `care` or `promotional`.
    consent: Option<String>,
    /// RFC 3339 or a date (midnight in the clinic's zone); `[from, to)`.
    last_visit_from: Option<String>,
    last_visit_to: Option<String>,
    limit: Option<usize>,
    /// The last external id of the previous page.
    after: Option<String>,
}

fn list_of(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn instant(field: &str, raw: &str, tz: chrono_tz::Tz) -> Result<i64, Problem> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|m| m.and_local_timezone(tz).earliest())
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| Problem::invalid_field(field, format!("{raw:?} is not RFC 3339 or a date")))
}

impl ListQuery {
    fn filter(&self, tz: chrono_tz::Tz) -> Result<PatientFilter, Problem> {
        let consent = self
            .consent
            .as_deref()
            .map(|c| {
                Purpose::parse(c)
                    .ok_or_else(|| Problem::invalid_field("consent", "use care or promotional"))
            })
            .transpose()?;
        Ok(PatientFilter {
            tags_all: list_of(&self.tag),
            tags_any: list_of(&self.tag_any),
            conditions_any: list_of(&self.condition),
            age_min: self.age_min,
            age_max: self.age_max,
            languages: list_of(&self.language),
            last_visit_from_ms: self
                .last_visit_from
                .as_deref()
                .map(|r| instant("last_visit_from", r, tz))
                .transpose()?,
            last_visit_to_ms: self
                .last_visit_to
                .as_deref()
                .map(|r| instant("last_visit_to", r, tz))
                .transpose()?,
            consent,
        })
    }
}

pub async fn list(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let tz = zone(&clinic);
    let filter = q.filter(tz)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let today = Utc::now().with_timezone(&tz).date_naive();
    let page = state
        .patients
        .query(&clinic.id, &filter, today, q.after.as_deref(), limit)
        .await?;
    let ids: Vec<&str> = page
        .matches
        .iter()
        .map(|m| m.external_id.as_str())
        .collect();
    let patients = state.patients.records(&clinic.id, &ids).await?;
    Ok(HttpResponse::Ok().json(json!({
        "patients": patients,
        "total": page.total,
        "next_after": page.next_after,
    })))
}

// ---------------------------------------------------------------------------------------------
// Import

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

/// One row that was not imported.
#[derive(Debug, Clone, Serialize)]
struct RowError {
    /// The line in the file where the row starts (a CSV's header is line 1).
    row: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    field: Option<String>,
    detail: String,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    imported: u64,
    created: u64,
    updated: u64,
    failed: u64,
    errors: Vec<RowError>,
    /// The request went past a bound; rows after the last reported were not read.
    truncated: bool,
}

/// Finds where complete records end in a growing buffer (a newline outside CSV quotes).
#[derive(Debug, Default)]
struct Splitter {
    in_quotes: bool,
    scanned: usize,
    cut: usize,
}

impl Splitter {
    fn scan(&mut self, buf: &[u8], csv: bool) -> usize {
        for (i, b) in buf.iter().enumerate().skip(self.scanned) {
            match b {
                b'"' if csv => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.cut = i + 1,
                _ => {}
            }
        }
        self.scanned = buf.len();
        self.cut
    }

    fn consumed(&mut self, n: usize) {
        self.scanned -= n;
        self.cut -= n;
    }
}

struct Importer<'a> {
    state: &'a AppState,
    clinic: &'a ClinicSettings,
    format: Format,
    ctx: InputContext,
    layout: Option<CsvLayout>,
    /// Lines before the segment being parsed.
    lines: u64,
    rows: usize,
    pending: Vec<(u64, PatientRecord)>,
    report: Report,
}

impl<'a> Importer<'a> {
    fn fail(&mut self, row: u64, external_id: Option<String>, e: FieldError) {
        self.report.failed += 1;
        if self.report.errors.len() < MAX_REPORTED_ERRORS {
            self.report.errors.push(RowError {
                row,
                external_id,
                field: Some(e.field),
                detail: e.detail,
            });
        }
    }

    /// Whether another row may be read; marks the report truncated at the bound.
    fn room(&mut self, row: u64) -> bool {
        if self.rows < MAX_IMPORT_ROWS {
            self.rows += 1;
            return true;
        }
        if !self.report.truncated {
            self.report.truncated = true;
            self.report.errors.push(RowError {
                row,
                external_id: None,
                field: None,
                detail: format!(
                    "at most {MAX_IMPORT_ROWS} rows per request: this row and the rest were not imported"
                ),
            });
        }
        false
    }

    fn accept(&mut self, row: u64, input: PatientInput) {
        let id = input.external_id.clone();
        match input.into_record(None, &self.ctx) {
            Ok(p) => self.pending.push((row, p)),
            Err(e) => self.fail(row, id, e),
        }
    }

    /// Parses the complete records in `segment`. `Err` for a bad CSV header.
    fn parse(&mut self, segment: &[u8]) -> Result<(), Problem> {
        match self.format {
            Format::Ndjson => {
                for (i, line) in segment.split(|b| *b == b'\n').enumerate() {
                    let row = self.lines + i as u64 + 1;
                    let line = line.trim_ascii();
                    if line.is_empty() || self.report.truncated {
                        continue;
                    }
                    if !self.room(row) {
                        continue;
                    }
                    let parsed: Result<PatientInput, _> = serde_path_to_error::deserialize(
                        &mut serde_json::Deserializer::from_slice(line),
                    );
                    match parsed {
                        Ok(input) => self.accept(row, input),
                        Err(e) => {
                            let path = e.path().to_string();
                            let inner = e.into_inner().to_string();
                            let field = inner
                                .strip_prefix("missing field `")
                                .and_then(|r| r.split('`').next())
                                .map(str::to_owned)
                                .unwrap_or(if path == "." { "json".to_owned() } else { path });
                            self.fail(row, None, FieldError::new(field, inner));
                        }
                    }
                }
            }
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(segment);
                for record in reader.records() {
                    let (row, record) = match record {
                        Ok(r) => (self.lines + r.position().map_or(1, |p| p.line()), r),
                        Err(e) => {
                            let row = self.lines + e.position().map_or(1, |p| p.line());
                            if self.layout.is_some() && self.room(row) {
                                self.fail(row, None, FieldError::new("row", e.to_string()));
                            }
                            continue;
                        }
                    };
                    let Some(layout) = self.layout.clone() else {
                        self.layout = Some(CsvLayout::from_header(record.iter()).map_err(invalid)?);
                        continue;
                    };
                    if self.report.truncated || !self.room(row) {
                        continue;
                    }
                    let id = layout.external_id(&record).map(str::to_owned);
                    match layout.input(&record) {
                        Ok(input) => self.accept(row, input),
                        Err(e) => self.fail(row, id, e),
                    }
                }
            }
        }
        self.lines += segment.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(())
    }

    async fn flush(&mut self, at_least: usize) -> Result<(), Problem> {
        if self.pending.len() < at_least.max(1) {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let records: Vec<PatientRecord> = batch.into_iter().map(|(_, p)| p).collect();
        let n = records.len() as u64;
        match self.state.patients.put_many(&self.clinic.id, records).await {
            Ok(done) => {
                self.report.imported += n;
                let created = done.iter().filter(|u| u.created).count() as u64;
                self.report.created += created;
                self.report.updated += n - created;
                Ok(())
            }
            Err(e) => {
                let mut p = Problem::from(e);
                p.extra = json!({"imported": self.report.imported})
                    .as_object()
                    .cloned();
                Err(p)
            }
        }
    }
}

fn format_of(req: &HttpRequest) -> Result<Format, Problem> {
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "text/csv" => Ok(Format::Csv),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Format::Ndjson),
        _ => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send Content-Type: text/csv (header row first) or application/x-ndjson",
        )),
    }
}

/// `POST /v1/patients/import`: valid rows are written in batches as the body streams in; the
/// answer counts them and lists the rows that failed, with the field at fault.
pub async fn import(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let format = format_of(&req)?;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_IMPORT_BYTES) {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("an import may be at most {MAX_IMPORT_BYTES} bytes; split the file"),
        ));
    }
    let mut im = Importer {
        state: &state,
        clinic: &clinic,
        format,
        ctx: context(&clinic, "import"),
        layout: None,
        lines: 0,
        rows: 0,
        pending: Vec::new(),
        report: Report::default(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut split = Splitter::default();
    let mut read = 0usize;
    let mut over = false;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                "Could not read the body",
                e.to_string(),
            )
        })?;
        let room = MAX_IMPORT_BYTES - read;
        let take = chunk.len().min(room);
        buf.extend_from_slice(&chunk[..take]);
        read += take;
        over = take < chunk.len();
        let cut = split.scan(&buf, format == Format::Csv);
        if cut > 0 {
            im.parse(&buf[..cut])?;
            buf.drain(..cut);
            split.consumed(cut);
            im.flush(IMPORT_BATCH).await?;
        }
        if over || im.report.truncated {
            break;
        }
    }
    if over {
        // The last partial row is dropped, not guessed at.
        im.report.truncated = true;
        im.report.errors.push(RowError {
            row: im.lines + 1,
            external_id: None,
            field: None,
            detail: format!(
                "the body exceeds {MAX_IMPORT_BYTES} bytes: this row and the rest were not read"
            ),
        });
    } else if !buf.is_empty() && !im.report.truncated {
        im.parse(&buf)?;
    }
    if format == Format::Csv && im.layout.is_none() && !im.report.truncated {
        return Err(Problem::invalid_field(
            "header",
            "the CSV has no header row",
        ));
    }
    im.flush(1).await?;
    let report = im.report;
    Ok(HttpResponse::Ok().json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splitter_cuts_after_complete_records_only() {
        let mut s = Splitter::default();
        let mut buf = b"id,name\n1,\"two\nlines\"\n2,x".to_vec();
        let cut = s.scan(&buf, true);
        assert_eq!(&buf[..cut], b"id,name\n1,\"two\nlines\"\n");
        buf.drain(..cut);
        s.consumed(cut);
        buf.extend_from_slice(b"\n3,\"a \"\"q\"\"\"\n");
        let cut = s.scan(&buf, true);
        assert_eq!(&buf[..cut], b"2,x\n3,\"a \"\"q\"\"\"\n");
        let mut n = Splitter::default();
        assert_eq!(n.scan(b"{\"a\": \"\\\"\"}\n{", false), 12);
    }

    #[test]
    fn list_queries_become_filters() {
        let q = ListQuery {
            tag: Some("Diabetic, senior".into()),
            condition: Some("E11".into()),
            consent: Some("promotional".into()),
            last_visit_from: Some("2026-01-01".into()),
            ..Default::default()
        };
        let f = q
            .filter(chrono_tz::Asia::Kolkata)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.tags_all, vec!["Diabetic", "senior"]);
        assert_eq!(f.consent, Some(Purpose::Promotional));
        assert_eq!(f.last_visit_from_ms, Some(1_767_205_800_000));
        let bad = ListQuery {
            consent: Some("marketing".into()),
            ..Default::default()
        };
        assert!(bad.filter(chrono_tz::UTC).is_err());
    }
}
