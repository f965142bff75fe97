//! One HL7 message in, one ACK out. The listener calls [`Hl7Service::handle`] for each MLLP
//! frame; the load generator and tests can call it directly.
//!
//! Order of checks: parse (AR) → sender by MSH-3/MSH-4 and source address (AR) → MSH-10 present
//! (AR) → mapping ([`super::ingest`]: AR / AE) → per-appointment (or per-patient) lock → seen
//! (sender, MSH-10) with the same content (AA, nothing done) → the clinical request or the
//! patient directory write (AE when it fails for a reason the sender can fix or should retry) →
//! remember (sender, MSH-10) → AA.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hl7_v2::ack::{AckBuilder, AckCode, AckContext, AckError, ErrorCode, Severity};
use hl7_v2::views::Header;
use hl7_v2::{Message, ParseError};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use super::ingest::patient::{self as emr_patient, Stored};
use super::ingest::{self, Action, IfUnknown, Refusal, Verdict};
use super::{Hl7Link, UnprocessableAck};
use crate::clinical::{Clinical, ClinicalError};
use crate::clock::now_ms;
use crate::domain::TenantId;
use crate::store::StoreError;
use crate::tenants::ClinicSettings;

/// Marker slot of seen (sender, MSH-10) pairs.
const SEEN_SLOT: &str = "hl7seen";

/// What to send back for one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The encoded ACK (without MLLP framing).
    pub ack: Vec<u8>,
    /// Message type label (bounded: see [`ingest::type_label`]).
    pub label: &'static str,
    /// `AA`, `AE`, `AR`, or `AA-duplicate` (for metrics and logs; MSA-1 may be CA/CE/CR).
    pub code: &'static str,
}

pub struct Hl7Service {
    clinical: Clinical,
    max_pdf_bytes: usize,
    dedupe_ttl_ms: i64,
    senders: Senders,
    locks: KeyedLocks,
    ack_seq: AtomicU64,
}

impl Hl7Service {
    pub fn new(clinical: Clinical, max_pdf_bytes: usize, dedupe_ttl: Duration) -> Self {
        Self {
            clinical,
            max_pdf_bytes,
            dedupe_ttl_ms: i64::try_from(dedupe_ttl.as_millis()).unwrap_or(i64::MAX),
            senders: Senders::default(),
            locks: KeyedLocks::default(),
            ack_seq: AtomicU64::new(0),
        }
    }

    /// Handles one message from `peer`. `None` for an inbound ACK (never acknowledged).
    pub async fn handle(&self, raw: &[u8], peer: IpAddr) -> Option<Outcome> {
        let outcome = self.handle_inner(raw, peer).await?;
        self.clinical
            .metrics
            .hl7_messages
            .with_label_values(&[outcome.label, outcome.code])
            .inc();
        Some(outcome)
    }

    /// An AR for a frame that was too large (nothing of it is kept).
    pub fn frame_too_large(&self, limit: usize) -> Outcome {
        self.clinical
            .metrics
            .hl7_messages
            .with_label_values(&["unparsable", "AR"])
            .inc();
        let ack = AckBuilder::new(AckContext::default(), AckCode::Reject)
            .error(
                AckError::new(ErrorCode::ApplicationInternalError)
                    .message(format!("MLLP frame exceeds the {limit}-byte limit")),
            )
            .build(&self.next_ack_id(), Utc::now());
        Outcome {
            ack: ack.to_bytes(),
            label: "unparsable",
            code: "AR",
        }
    }

    async fn handle_inner(&self, raw: &[u8], peer: IpAddr) -> Option<Outcome> {
        let msg = match hl7_v2::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "HL7 message could not be parsed");
                let code = match &e {
                    ParseError::InvalidEncodingCharacters { .. }
                    | ParseError::UnsupportedCharset { .. } => ErrorCode::DataTypeError,
                    _ => ErrorCode::SegmentSequenceError,
                };
                let ack = hl7_v2::ack::reject(
                    raw,
                    AckError::new(code).message(e.to_string()),
                    &self.next_ack_id(),
                    Utc::now(),
                );
                return Some(self.outcome(ack, "unparsable", "AR"));
            }
        };
        let header = match Header::from_message(&msg) {
            Ok(h) => h,
            Err(e) => {
                let r = ingest::view_refusal(e);
                return Some(self.refused(&msg, None, "unparsable", r));
            }
        };
        if header.message_type.eq_ignore_ascii_case("ACK") {
            tracing::debug!(%peer, "ignoring an inbound ACK");
            return None;
        }
        let label = ingest::type_label(&header);
        let app = header.sending_application.as_ref().and_then(|h| h.key());
        let fac = header.sending_facility.as_ref().and_then(|h| h.key());
        let clinic = match self.senders.find(&self.clinical.directory, app, fac) {
            Found::One(c) => c,
            Found::None => {
                // Echoed to the sender and logged: cut to a sane length.
                let short = |s: Option<&str>| s.unwrap_or("").chars().take(64).collect::<String>();
                let (app, fac) = (short(app), short(fac));
                tracing::warn!(%peer, application = app, facility = fac, "HL7 message from an unknown sender");
                let r = Refusal::reject(
                    ErrorCode::TableValueNotFound,
                    Some(ingest::at("MSH", 3, None)),
                    format!(
                        "sending application {app:?} / facility {fac:?} (MSH-3/MSH-4) is not linked to any clinic"
                    ),
                );
                return Some(self.refused(&msg, None, label, r));
            }
            Found::Ambiguous => {
                tracing::error!(%peer, "HL7 sender (MSH-3/MSH-4) matches more than one clinic");
                let r = Refusal::reject(
                    ErrorCode::TableValueNotFound,
                    Some(ingest::at("MSH", 4, None)),
                    "MSH-3/MSH-4 match more than one clinic; the gateway's configuration must name the facility",
                );
                return Some(self.refused(&msg, None, label, r));
            }
        };
        let Some(link) = clinic.emr.hl7.clone() else {
            return Some(self.refused(
                &msg,
                None,
                label,
                Refusal::retry("the clinic's HL7 link changed; send again"),
            ));
        };
        if !link.allows(peer) {
            tracing::warn!(tenant = %clinic.id, %peer, "HL7 message from a source address the clinic does not allow");
            let r = Refusal::reject(
                ErrorCode::TableValueNotFound,
                Some(ingest::at("MSH", 3, None)),
                "this source address may not send for MSH-3/MSH-4",
            );
            return Some(self.refused(&msg, Some(&link), label, r));
        }
        if !clinic.is_active() {
            let r = Refusal::retry("the clinic is suspended");
            return Some(self.refused(&msg, Some(&link), label, r));
        }
        let Some(control_id) = header.control_id.clone() else {
            let r = Refusal::reject(
                ErrorCode::RequiredFieldMissing,
                Some(ingest::at("MSH", 10, None)),
                "MSH-10 message control id is empty",
            );
            return Some(self.refused(&msg, Some(&link), label, r));
        };
        let action = match ingest::map(&msg, &header, &clinic, &link) {
            Ok(a) => a,
            Err(r) => {
                self.report(&clinic, &header, label, &r);
                return Some(self.refused(&msg, Some(&link), label, r));
            }
        };
        let sender = format!("{}|{}", app.unwrap_or(""), fac.unwrap_or(""));
        let seen_key = seen_key(&clinic.id, &sender, &control_id);
        let lock_key = format!(
            "{}|{}",
            clinic.id,
            lock_subject(&action).unwrap_or_else(|| seen_key.clone())
        );
        let _guard = self.locks.lock(lock_key).await;
        let digest = content_digest(&msg);
        match self
            .clinical
            .store
            .marker(&clinic.id, &seen_key, SEEN_SLOT)
            .await
        {
            Ok(Some(seen)) if seen == digest => {
                tracing::debug!(tenant = %clinic.id, control_id, "re-sent HL7 message acknowledged again");
                let ack = self.ack(&msg, AckCode::Accept, None);
                return Some(self.outcome(ack, label, "AA-duplicate"));
            }
            Ok(Some(_)) => {
                tracing::warn!(tenant = %clinic.id, control_id, "MSH-10 reused with different content; processing it as a new message");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(tenant = %clinic.id, error = %e, "HL7 dedupe lookup failed");
                return Some(self.refused(
                    &msg,
                    Some(&link),
                    label,
                    Refusal::retry("the gateway's store is unavailable; send again"),
                ));
            }
        }
        if let Err(r) = self.act(&clinic, action).await {
            if r.verdict != Verdict::Retry {
                self.report(&clinic, &header, label, &r);
            }
            let accepted = r.verdict == Verdict::Unprocessable
                && link.unprocessable_ack == UnprocessableAck::Aa;
            if accepted {
                self.remember(&clinic.id, &seen_key, &digest).await;
            }
            return Some(self.refused(&msg, Some(&link), label, r));
        }
        self.remember(&clinic.id, &seen_key, &digest).await;
        let ack = self.ack(&msg, AckCode::Accept, None);
        Some(self.outcome(ack, label, "AA"))
    }

    async fn remember(&self, tenant: &TenantId, key: &str, digest: &str) {
        if let Err(e) = self
            .clinical
            .store
            .set_marker(tenant, key, SEEN_SLOT, Some(digest), self.dedupe_ttl_ms)
            .await
        {
            // The request itself is stored; the clinical layer is idempotent by EMR id, so a
            // re-send still sends nothing twice.
            tracing::warn!(tenant = %tenant, error = %e, "could not remember an HL7 control id");
        }
    }

    /// Runs the request. `Err` carries the refusal for the ACK.
    async fn act(&self, clinic: &Arc<ClinicSettings>, action: Action) -> Result<(), Refusal> {
        let c = &self.clinical;
        match action {
            Action::Book(b) => c
                .book(clinic, b)
                .await
                .map(|_| ())
                .map_err(clinical_refusal),
            Action::Change {
                external_id,
                change,
                if_unknown,
            } => match c
                .by_external(clinic, &external_id)
                .await
                .map_err(clinical_refusal)?
            {
                Some(a) => c
                    .change(clinic, &a.id, change)
                    .await
                    .map(|_| ())
                    .map_err(clinical_refusal),
                None => match if_unknown {
                    IfUnknown::Ignore => {
                        tracing::debug!(tenant = %clinic.id, "HL7 change of an appointment the gateway never saw: nothing to do");
                        Ok(())
                    }
                    IfUnknown::Book(b) => c
                        .book(clinic, *b)
                        .await
                        .map(|_| ())
                        .map_err(clinical_refusal),
                    IfUnknown::Refuse(r) => Err(r),
                },
            },
            Action::Documents(docs) => {
                for d in docs {
                    c.deliver_document(clinic, d, self.max_pdf_bytes)
                        .await
                        .map_err(clinical_refusal)?;
                }
                Ok(())
            }
            Action::Visit { request, patient } => {
                let at_ms = request.completed_ms;
                c.visit_completed(clinic, request)
                    .await
                    .map_err(clinical_refusal)?;
                if let Some(id) = patient {
                    // The visit is stored; a failure here is answered AE, and the visit sent
                    // again is recognised by its id.
                    emr_patient::record_visit(&c.broadcasts.patients, &clinic.id, &id, at_ms)
                        .await
                        .map_err(store_refusal)?;
                }
                Ok(())
            }
            Action::UpsertPatient(record) => {
                let stored =
                    emr_patient::upsert_from_emr(&c.broadcasts.patients, &clinic.id, *record)
                        .await
                        .map_err(store_refusal)?;
                let what = match &stored {
                    Stored::Created(_) => "created",
                    Stored::Updated(_) => "updated",
                    Stored::Unchanged(_) => "unchanged",
                };
                tracing::debug!(tenant = %clinic.id, what, "HL7 patient registration stored in the directory");
                Ok(())
            }
            Action::Ignore(why) => {
                tracing::debug!(tenant = %clinic.id, reason = why, "HL7 message accepted; nothing to do");
                Ok(())
            }
        }
    }

    /// Tells the clinic (callback) that a message was not acted on.
    fn report(&self, clinic: &ClinicSettings, header: &Header, label: &str, r: &Refusal) {
        tracing::warn!(tenant = %clinic.id, message_type = label, control_id = header.control_id.as_deref().unwrap_or(""), problem = %r, "HL7 message not acted on");
        self.clinical.callbacks.send(
            clinic,
            "hl7.not_processed",
            serde_json::json!({
                "message_type": label,
                "control_id": header.control_id,
                "code": r.code.code(),
                "location": r.location.as_ref().map(|l| l.to_string()),
                "problem": r.message,
            }),
        );
    }

    fn refused(
        &self,
        msg: &Message,
        link: Option<&Hl7Link>,
        label: &'static str,
        r: Refusal,
    ) -> Outcome {
        let (code, text, severity) = match r.verdict {
            Verdict::Reject => (AckCode::Reject, "AR", Severity::Error),
            Verdict::Retry => (AckCode::Error, "AE", Severity::Error),
            Verdict::Unprocessable
                if link.is_some_and(|l| l.unprocessable_ack == UnprocessableAck::Aa) =>
            {
                (AckCode::Accept, "AA", Severity::Warning)
            }
            Verdict::Unprocessable => (AckCode::Error, "AE", Severity::Error),
        };
        let mut e = AckError::new(r.code).severity(severity).message(r.message);
        if let Some(l) = r.location {
            e = e.at(l);
        }
        let ack = self.ack(msg, code, Some(e));
        self.outcome(ack, label, text)
    }

    fn ack(&self, msg: &Message, code: AckCode, error: Option<AckError>) -> Message {
        let mut b = AckBuilder::new(AckContext::from_message(msg), code);
        if let Some(e) = error {
            b = b.error(e);
        }
        b.build(&self.next_ack_id(), Utc::now())
    }

    /// Encodes the ACK; if it cannot be framed (a value that unescapes to an MLLP control byte
    /// was copied from the inbound MSH), falls back to an ACK with nothing copied.
    fn outcome(&self, ack: Message, label: &'static str, code: &'static str) -> Outcome {
        let mut bytes = ack.to_bytes();
        if bytes.iter().any(|&b| b == 0x0b || b == 0x1c) {
            let ack_code = match code {
                "AR" => AckCode::Reject,
                "AE" => AckCode::Error,
                _ => AckCode::Accept,
            };
            bytes = AckBuilder::new(AckContext::default(), ack_code)
                .build(&self.next_ack_id(), Utc::now())
                .to_bytes();
        }
        Outcome {
            ack: bytes,
            label,
            code,
        }
    }

    /// 20 characters (MSH-10 is ST(20) before v2.5.1): `GW`, milliseconds, a sequence number.
    fn next_ack_id(&self) -> String {
        let seq = self.ack_seq.fetch_add(1, Ordering::Relaxed) % 100_000;
        let ms = now_ms().rem_euclid(10_000_000_000_000);
        format!("GW{ms:013}{seq:05}")
    }
}

/// The appointment, document, visit or patient a message is about: messages about the same one
/// are handled one at a time (an EMR re-sending on a second connection must not book twice, two
/// updates of one patient must not interleave their reads and writes).
fn lock_subject(action: &Action) -> Option<String> {
    match action {
        Action::Book(b) => b.external_id.clone(),
        Action::Change { external_id, .. } => Some(external_id.clone()),
        Action::Documents(d) => d.first().and_then(|d| d.external_id.clone()),
        Action::Visit { request, .. } => request.external_id.clone(),
        Action::UpsertPatient(p) => Some(format!("patient\n{}", p.external_id)),
        Action::Ignore(_) => None,
    }
}

/// The marker key of (clinic, sender, MSH-10), hashed to a fixed length.
fn seen_key(tenant: &TenantId, sender: &str, control_id: &str) -> String {
    let d = Sha256::digest(format!("{tenant}\n{sender}\n{control_id}").as_bytes());
    format!("hl7-{}", hex::encode(&d[..16]))
}

/// The message's content without MSH (whose MSH-7 a re-sending engine may refresh), plus MSH-9.
fn content_digest(msg: &Message) -> String {
    let mut h = Sha256::new();
    for p in ["MSH-9.1", "MSH-9.2"] {
        if let Ok(Some(t)) = msg.get(p) {
            h.update(t.as_bytes());
        }
        h.update(b"^");
    }
    let encoded = msg.encode();
    if let Some((_, body)) = encoded.split_once('\r') {
        h.update(body.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// A patient directory write that failed: the sender should try again.
fn store_refusal(e: StoreError) -> Refusal {
    tracing::warn!(error = %e, "patient directory write failed while handling an HL7 message");
    Refusal::retry("the gateway's store is unavailable; send again")
}

/// What a clinical failure means to the sender.
fn clinical_refusal(e: ClinicalError) -> Refusal {
    match e {
        ClinicalError::Invalid { field, detail } => {
            let location = match field.as_str() {
                "start" | "end" => Some(ingest::at("SCH", 11, None)),
                "pdf" => Some(ingest::at("OBX", 5, None)),
                "completed_at" => Some(ingest::at("PV1", 45, None)),
                "visit_type" => Some(ingest::at("PV1", 10, None)),
                "location" => Some(ingest::at("AIL", 3, None)),
                _ => None,
            };
            Refusal::unprocessable(
                ErrorCode::DataTypeError,
                location,
                format!("{field}: {detail}"),
            )
        }
        ClinicalError::NotFound(what) => {
            Refusal::unprocessable(ErrorCode::UnknownKeyIdentifier, None, what)
        }
        ClinicalError::Conflict(why) => {
            Refusal::unprocessable(ErrorCode::ApplicationRecordLocked, None, why)
        }
        ClinicalError::Upload(why) => {
            tracing::warn!(error = %why, "document upload to Meta failed");
            Refusal::retry("the document could not be uploaded to WhatsApp yet; send again")
        }
        ClinicalError::Store(e) => {
            tracing::warn!(error = %e, "store error while handling an HL7 message");
            Refusal::retry("the gateway's store is unavailable; send again")
        }
    }
}

enum Found {
    One(Arc<ClinicSettings>),
    None,
    Ambiguous,
}

/// Clinics with an HL7 link by upper-cased MSH-3, rebuilt when the directory changes.
#[derive(Default)]
struct Senders {
    index: RwLock<SenderIndex>,
}

#[derive(Default)]
struct SenderIndex {
    version: Option<u64>,
    built_at: Option<Instant>,
    by_application: HashMap<String, Vec<TenantId>>,
}

impl Senders {
    fn find(
        &self,
        directory: &crate::tenants::Directory,
        app: Option<&str>,
        fac: Option<&str>,
    ) -> Found {
        let version = directory.version();
        let stale = |i: &SenderIndex| i.version != Some(version);
        if stale(&self.index.read()) {
            self.rebuild(directory, version);
        }
        let found = self.lookup(directory, app, fac);
        // A clinic changed by this node (not yet reflected in the version), at most once a second.
        let old = self
            .index
            .read()
            .built_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if matches!(found, Found::None) && old {
            self.rebuild(directory, version);
            return self.lookup(directory, app, fac);
        }
        found
    }

    fn rebuild(&self, directory: &crate::tenants::Directory, version: u64) {
        let mut by_application: HashMap<String, Vec<TenantId>> = HashMap::new();
        for c in directory.all() {
            if let Some(link) = &c.emr.hl7 {
                by_application
                    .entry(link.sending_application.trim().to_ascii_uppercase())
                    .or_default()
                    .push(c.id.clone());
            }
        }
        *self.index.write() = SenderIndex {
            version: Some(version),
            built_at: Some(Instant::now()),
            by_application,
        };
    }

    fn lookup(
        &self,
        directory: &crate::tenants::Directory,
        app: Option<&str>,
        fac: Option<&str>,
    ) -> Found {
        let Some(app) = app else {
            return Found::None;
        };
        let ids = self
            .index
            .read()
            .by_application
            .get(&app.trim().to_ascii_uppercase())
            .cloned()
            .unwrap_or_default();
        let mut exact = Vec::new();
        let mut any_facility = Vec::new();
        for id in ids {
            let Some(c) = directory.get(&id) else {
                continue;
            };
            match c.emr.hl7.as_ref().and_then(|l| l.matches(Some(app), fac)) {
                Some(true) => exact.push(c),
                Some(false) => any_facility.push(c),
                None => {}
            }
        }
        let pick = if exact.is_empty() {
            any_facility
        } else {
            exact
        };
        match pick.len() {
            0 => Found::None,
            1 => pick.into_iter().next().map_or(Found::None, Found::One),
            _ => Found::Ambiguous,
        }
    }
}

/// Async locks by key, removed when nobody holds or waits for them.
#[derive(Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: String) -> KeyGuard<'_> {
        let mutex = self.map.lock().entry(key.clone()).or_default().clone();
        let guard = mutex.clone().lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            mutex,
            guard: Some(guard),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock();
        // The map's reference and ours: nobody else holds or waits, and nobody can start to
        // without the map lock we hold.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mutex) && Arc::strong_count(m) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keyed_locks_serialise_one_key_and_clean_up() {
        let locks = Arc::new(KeyedLocks::default());
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, counter) = (locks.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("k".into()).await;
                let before = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert_eq!(
                    counter.load(Ordering::SeqCst),
                    before + 1,
                    "one holder at a time"
                );
            }));
        }
        for t in tasks {
            t.await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(locks.map.lock().is_empty());
    }

    #[test]
    fn digests_ignore_msh_but_not_the_body_or_type() {
        let p = |s: &str| hl7_v2::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let a = p("MSH|^~\\&|E|F|G|H|20300101||SIU^S12|1|P|2.5\rSCH||A1\r");
        let b = p("MSH|^~\\&|E|F|G|H|20300102||SIU^S12|1|P|2.5\rSCH||A1\r");
        let c = p("MSH|^~\\&|E|F|G|H|20300101||SIU^S12|1|P|2.5\rSCH||A2\r");
        let d = p("MSH|^~\\&|E|F|G|H|20300101||SIU^S15|1|P|2.5\rSCH||A1\r");
        assert_eq!(content_digest(&a), content_digest(&b));
        assert_ne!(content_digest(&a), content_digest(&c));
        assert_ne!(content_digest(&a), content_digest(&d));
    }

    #[test]
    fn seen_keys_differ_by_sender_and_id() {
        let t = TenantId::parse("c").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(seen_key(&t, "A|F", "1"), seen_key(&t, "A|G", "1"));
        assert_ne!(seen_key(&t, "A|F", "1"), seen_key(&t, "A|F", "2"));
        assert_eq!(seen_key(&t, "A|F", "1").len(), 36);
    }
}
