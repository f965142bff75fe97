//! Erasure of a patient's clinical data in one clinic (by phone), and the per-clinic retention
//! sweep. Both scan the record store's time indexes: erasure is rare and bounded
//! ([`MAX_SCAN`] entries per kind), the sweep deletes at most a budget per run and continues on
//! the next one.

use std::collections::HashSet;

use serde::Serialize;

use super::inbound::COMMENT_SLOT;
use super::jobs::RATING_SLOT;
use super::{Clinical, ClinicalError};
use crate::domain::records::{Document, Feedback, InboxMessage, Visit};
use crate::domain::{MessageId, TenantId, E164};
use crate::patients::PatientRecord;
use crate::store::records::{RecordEntry, RecordKind};
use crate::tenants::ClinicSettings;
use crate::workflows::Job;

/// Entries read per page.
const PAGE: usize = 500;
/// Entries of one kind read by one erasure at most; beyond it the report says `complete: false`.
pub const MAX_SCAN: usize = 100_000;
/// Record versions of an appointment whose reminder jobs are unscheduled.
const MAX_VERSIONS: u32 = 64;
const DAY_MS: i64 = 86_400_000;
/// Record kinds the retention sweep expires.
const RETAINED_KINDS: [RecordKind; 7] = [
    RecordKind::Inbox,
    RecordKind::Feedback,
    RecordKind::Visit,
    RecordKind::Document,
    RecordKind::DeadLetter,
    RecordKind::Callback,
    RecordKind::BroadcastChunk,
];

/// What an erasure removed, per kind.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ErasureReport {
    pub inbox_messages: usize,
    pub feedback: usize,
    pub visits: usize,
    pub documents: usize,
    pub appointments: usize,
    pub jobs_unscheduled: usize,
    pub dead_letters: usize,
    /// Outbox records of ended messages to the patient (recipient, parameters, text, timeline).
    pub messages: usize,
    /// Messages to the patient still queued or in flight: kept (they expire on the clinic's
    /// retention once they end).
    pub messages_in_flight_kept: usize,
    /// Marker slots cleared per phone (rating, comment, not-on-WhatsApp) and the pending
    /// appointment question.
    pub markers_cleared: usize,
    /// Media ids of erased documents still held by Meta until it drops them (30 days): the
    /// Graph client has no media delete call yet.
    pub media_left_at_meta: Vec<String>,
    /// The patient sent STOP: the opt-out is kept as the record of the refusal.
    pub opt_out_kept: bool,
    /// `false` when a kind had more than [`MAX_SCAN`] entries and was not fully scanned.
    pub complete: bool,
}

/// Reads a kind's entries in `[from, to)` page by page without deleting, at most `max`.
async fn scan(
    c: &Clinical,
    tenant: &TenantId,
    kind: RecordKind,
    max: usize,
) -> Result<(Vec<RecordEntry>, bool), ClinicalError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut from = i64::MIN;
    loop {
        let page = c
            .store
            .record_entries(tenant, kind, from, i64::MAX, PAGE)
            .await?;
        let full = page.len() == PAGE;
        let mut progressed = false;
        for e in page {
            // `from` is inclusive: entries at the last page's final instant come again.
            if !seen.insert(e.id.clone()) {
                continue;
            }
            progressed = true;
            from = from.max(e.at_ms);
            if out.len() == max {
                return Ok((out, false));
            }
            out.push(e);
        }
        if !full {
            return Ok((out, true));
        }
        if !progressed {
            // More than a page of entries at one instant: give up on the rest.
            return Ok((out, false));
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(e: &RecordEntry) -> Option<T> {
    e.json.as_deref().and_then(|j| serde_json::from_str(j).ok())
}

/// The external-id entry of a record, to delete with it.
fn external_of(kind: RecordKind, e: &RecordEntry) -> Option<String> {
    match kind {
        RecordKind::Visit => decode::<Visit>(e).and_then(|v| v.external_id),
        RecordKind::Document => decode::<Document>(e).and_then(|d| {
            d.external_id
                .map(|x| super::documents::external_key(d.kind, &x))
        }),
        _ => None,
    }
}

impl Clinical {
    /// Removes what the clinic holds about the patient with these phones: inbox messages,
    /// feedback, visits (and their follow-up and feedback jobs), documents, appointments (and
    /// their reminder jobs), markers, the pending question and dead letters of messages to the
    /// patient still on record, and the outbox records of ended messages to the patient. Kept:
    /// the STOP opt-out; messages still on their way (they expire on the clinic's retention once
    /// they end).
    pub async fn erase_patient(
        &self,
        clinic: &ClinicSettings,
        phones: &[E164],
    ) -> Result<ErasureReport, ClinicalError> {
        let tenant = &clinic.id;
        let digits: HashSet<&str> = phones.iter().map(|p| p.digits()).collect();
        let ours = |p: &E164| digits.contains(p.digits());
        let mut report = ErasureReport {
            complete: true,
            ..ErasureReport::default()
        };

        let (entries, complete) = scan(self, tenant, RecordKind::Inbox, MAX_SCAN).await?;
        report.complete &= complete;
        for e in entries {
            if decode::<InboxMessage>(&e).is_some_and(|m| ours(&m.from))
                && self
                    .store
                    .delete_record(tenant, RecordKind::Inbox, &e.id, None)
                    .await?
            {
                report.inbox_messages += 1;
            }
        }

        let (entries, complete) = scan(self, tenant, RecordKind::Feedback, MAX_SCAN).await?;
        report.complete &= complete;
        for e in entries {
            if decode::<Feedback>(&e).is_some_and(|f| ours(&f.patient))
                && self
                    .store
                    .delete_record(tenant, RecordKind::Feedback, &e.id, None)
                    .await?
            {
                report.feedback += 1;
            }
        }

        let (entries, complete) = scan(self, tenant, RecordKind::Visit, MAX_SCAN).await?;
        report.complete &= complete;
        for e in entries {
            let Some(v) = decode::<Visit>(&e).filter(|v| ours(&v.patient.phone)) else {
                continue;
            };
            let jobs = [
                Job::FollowUp {
                    visit: v.id.clone(),
                },
                Job::Feedback {
                    visit: v.id.clone(),
                },
            ];
            self.store.unschedule(tenant, &jobs).await?;
            report.jobs_unscheduled += jobs.len();
            if self
                .store
                .delete_record(tenant, RecordKind::Visit, &e.id, v.external_id.as_deref())
                .await?
            {
                report.visits += 1;
            }
        }

        let (entries, complete) = scan(self, tenant, RecordKind::Document, MAX_SCAN).await?;
        report.complete &= complete;
        for e in entries {
            let Some(d) = decode::<Document>(&e).filter(|d| ours(&d.patient.phone)) else {
                continue;
            };
            let external = external_of(RecordKind::Document, &e);
            if self
                .store
                .delete_record(tenant, RecordKind::Document, &e.id, external.as_deref())
                .await?
            {
                report.documents += 1;
                if !d.media_id.is_empty() {
                    report.media_left_at_meta.push(d.media_id);
                }
            }
        }

        let mut from = i64::MIN;
        let mut seen = HashSet::new();
        'appointments: loop {
            let page = self
                .store
                .appointments(tenant, from, i64::MAX, PAGE)
                .await?;
            let full = page.len() == PAGE;
            let mut progressed = false;
            for a in page {
                if !seen.insert(a.id.clone()) {
                    continue;
                }
                progressed = true;
                from = from.max(a.start_ms);
                if seen.len() > MAX_SCAN {
                    report.complete = false;
                    break 'appointments;
                }
                if !ours(&a.patient.phone) {
                    continue;
                }
                let jobs = appointment_jobs(&a, clinic);
                self.store.unschedule(tenant, &jobs).await?;
                report.jobs_unscheduled += jobs.len();
                if self.store.delete_appointment(tenant, &a.id).await? {
                    report.appointments += 1;
                }
            }
            if !full {
                break;
            }
            if !progressed {
                report.complete = false;
                break;
            }
        }

        let (entries, complete) = scan(self, tenant, RecordKind::DeadLetter, MAX_SCAN).await?;
        report.complete &= complete;
        for e in entries {
            // The entry names the message; the message record names the patient (when it has
            // not expired: then the entry holds nothing about the patient).
            let Ok(id) = MessageId::parse_issued(&e.id) else {
                continue;
            };
            let Some(m) = self.store.message(tenant, &id).await? else {
                continue;
            };
            if ours(&m.message.to)
                && self
                    .store
                    .delete_record(tenant, RecordKind::DeadLetter, &e.id, None)
                    .await?
            {
                report.dead_letters += 1;
            }
        }

        // After the dead letters: those are found through the message records.
        for phone in phones {
            let m = self.store.erase_messages_to(tenant, phone).await?;
            report.messages += m.erased;
            report.messages_in_flight_kept += m.live;
        }

        for phone in phones {
            let d = phone.digits();
            for slot in [
                RATING_SLOT,
                COMMENT_SLOT,
                crate::broadcasts::NOT_ON_WHATSAPP,
            ] {
                if self.store.marker(tenant, d, slot).await?.is_some() {
                    report.markers_cleared += 1;
                }
                self.store.set_marker(tenant, d, slot, None, 0).await?;
            }
            if self.store.pending(tenant, d).await?.is_some() {
                report.markers_cleared += 1;
            }
            self.store.clear_pending(tenant, d).await?;
            report.opt_out_kept |= self.store.opted_out(tenant, d).await?;
        }
        tracing::info!(
            tenant = %tenant,
            inbox = report.inbox_messages,
            feedback = report.feedback,
            visits = report.visits,
            documents = report.documents,
            appointments = report.appointments,
            dead_letters = report.dead_letters,
            messages = report.messages,
            complete = report.complete,
            "patient erased"
        );
        Ok(report)
    }

    /// Deletes at most `budget` records and appointments of the clinic older than its
    /// retention (records listed, appointments ended, before `now_ms − retention_days`); returns
    /// how many. Nothing when the clinic keeps everything.
    pub async fn sweep_retention(
        &self,
        clinic: &ClinicSettings,
        now_ms: i64,
        budget: usize,
    ) -> Result<usize, ClinicalError> {
        let Some(days) = clinic.retention_days else {
            return Ok(0);
        };
        let tenant = &clinic.id;
        let cutoff = now_ms.saturating_sub(i64::from(days) * DAY_MS);
        let mut deleted = 0;
        for kind in RETAINED_KINDS {
            if deleted >= budget {
                return Ok(deleted);
            }
            let entries = self
                .store
                .record_entries(tenant, kind, i64::MIN, cutoff, budget - deleted)
                .await?;
            for e in entries {
                let external = external_of(kind, &e);
                if kind == RecordKind::Visit {
                    self.store
                        .unschedule(
                            tenant,
                            &[
                                Job::FollowUp {
                                    visit: e.id.clone(),
                                },
                                Job::Feedback {
                                    visit: e.id.clone(),
                                },
                            ],
                        )
                        .await?;
                }
                self.store
                    .delete_record(tenant, kind, &e.id, external.as_deref())
                    .await?;
                deleted += 1;
            }
        }
        if deleted < budget {
            let listed = self
                .store
                .appointments(tenant, i64::MIN, cutoff, budget - deleted)
                .await?;
            for a in listed {
                if a.end_ms.unwrap_or(a.start_ms) >= cutoff {
                    continue;
                }
                let jobs = appointment_jobs(&a, clinic);
                self.store.unschedule(tenant, &jobs).await?;
                self.store.delete_appointment(tenant, &a.id).await?;
                deleted += 1;
            }
        }
        if deleted < budget {
            deleted += self
                .expire_patients(tenant, cutoff, budget - deleted)
                .await?;
        }
        if deleted > 0 {
            tracing::info!(tenant = %tenant, deleted, days, "retention sweep");
        }
        Ok(deleted)
    }
}

impl Clinical {
    /// Removes directory records of patients neither updated (by the clinic, its EMR, a consent
    /// change) nor seen at a visit since `cutoff`, at most `budget`. Scans the whole directory:
    /// the sweep runs at most hourly, and a scan reads pages of the compact JSON only.
    async fn expire_patients(
        &self,
        tenant: &TenantId,
        cutoff: i64,
        budget: usize,
    ) -> Result<usize, ClinicalError> {
        let mut deleted = 0;
        let mut cursor: Option<String> = None;
        while deleted < budget {
            let page = self
                .store
                .scan_patients(tenant, cursor.as_deref(), PAGE)
                .await?;
            for (id, json) in &page.items {
                let Ok(p) = serde_json::from_str::<PatientRecord>(json) else {
                    continue;
                };
                let last_seen = p.updated_ms.max(p.last_visit_ms.unwrap_or(i64::MIN));
                if last_seen < cutoff && self.store.delete_patient(tenant, id).await?.is_some() {
                    deleted += 1;
                    if deleted >= budget {
                        break;
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(deleted)
    }
}

/// The reminder jobs an appointment may still have (every version's, at the clinic's offsets).
fn appointment_jobs(
    a: &crate::domain::appointment::Appointment,
    clinic: &ClinicSettings,
) -> Vec<Job> {
    let first = a.version.saturating_sub(MAX_VERSIONS).max(1);
    (first..=a.version.max(1))
        .flat_map(|version| {
            clinic
                .reminder_offsets_minutes
                .iter()
                .map(move |&offset_minutes| Job::Reminder {
                    appointment: a.id.clone(),
                    version,
                    offset_minutes,
                })
        })
        .collect()
}
