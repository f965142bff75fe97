//! Prescriptions, lab reports and other health records: validated, uploaded to Meta's media
//! endpoint once, and sent by media id. The same document again is a duplicate; different bytes
//! under the same EMR id are a correction, sent again as corrected.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Cause, Clinical, ClinicalError};
use crate::clock::now_ms;
use crate::domain::appointment::Patient;
use crate::domain::records::{new_record_id, Document, DocumentKind};
use crate::store::records::RecordKind;
use crate::tenants::ClinicSettings;
use crate::workflows::documents::{self, Arrival};

/// A document to deliver, parsed at the edge (the PDF not yet checked).
#[derive(Debug, Clone)]
pub struct DocumentRequest {
    pub kind: DocumentKind,
    pub external_id: Option<String>,
    pub patient: Patient,
    pub title: Option<String>,
    pub doctor: Option<String>,
    pub filename: Option<String>,
    pub pdf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Delivered {
    pub document: Document,
    /// Nothing was sent: the same document had been delivered before.
    pub replayed: bool,
}

/// The EMR's id is unique per kind of document: a prescription and a lab report may share one.
pub(super) fn external_key(kind: DocumentKind, ext: &str) -> String {
    format!("{}:{ext}", kind.as_str())
}

impl Clinical {
    pub async fn document(
        &self,
        tenant: &crate::domain::TenantId,
        id: &str,
    ) -> Result<Option<Document>, ClinicalError> {
        self.load(tenant, RecordKind::Document, id).await
    }

    pub async fn deliver_document(
        &self,
        clinic: &Arc<ClinicSettings>,
        input: DocumentRequest,
        max_bytes: usize,
    ) -> Result<Delivered, ClinicalError> {
        crate::pdf::check(&input.pdf, max_bytes)
            .map_err(|e| ClinicalError::invalid("pdf", e.to_string()))?;
        if let Some(ext) = input.external_id.as_deref() {
            if ext.is_empty() || ext.len() > 128 {
                return Err(ClinicalError::invalid("external_id", "1 to 128 characters"));
            }
        }
        let sha256 = hex::encode(Sha256::digest(&input.pdf));
        let existing = match input.external_id.as_deref() {
            Some(ext) => match self
                .store
                .record_by_external(
                    &clinic.id,
                    RecordKind::Document,
                    &external_key(input.kind, ext),
                )
                .await?
            {
                Some(id) => self.document(&clinic.id, &id).await?,
                None => None,
            },
            None => None,
        };
        let arrival = documents::arrival(existing.as_ref(), &sha256);
        if let (Arrival::Duplicate, Some(document)) = (arrival, &existing) {
            return Ok(Delivered {
                document: document.clone(),
                replayed: true,
            });
        }
        let Some(number) = clinic.numbers.first() else {
            return Err(ClinicalError::Conflict(
                "the clinic has no WhatsApp number".into(),
            ));
        };
        let filename = crate::pdf::filename(input.filename.as_deref(), input.kind.as_str());
        let size_bytes = input.pdf.len();
        let upload = self
            .meta
            .client(clinic)
            .upload_media(
                self.meta.token(clinic),
                number.phone_number_id.as_str(),
                input.pdf,
                "application/pdf",
                &filename,
            )
            .await
            .map_err(|e| ClinicalError::Upload(e.to_string()))?;
        let now = now_ms();
        let mut doc = Document {
            id: existing
                .as_ref()
                .map_or_else(|| new_record_id("doc"), |d| d.id.clone()),
            tenant: clinic.id.clone(),
            kind: input.kind,
            external_id: input.external_id,
            patient: input.patient,
            title: input
                .title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| input.kind.default_title().to_owned()),
            doctor: input.doctor,
            filename,
            size_bytes,
            sha256,
            revision: existing.as_ref().map_or(1, |d| d.revision + 1),
            media_id: upload.id,
            message: None,
            created_ms: existing.as_ref().map_or(now, |d| d.created_ms),
            updated_ms: now,
        };
        self.put_document(&doc).await?;
        let commands = documents::deliver(&doc, clinic, now);
        let key = format!("doc|{}|{}", doc.id, doc.revision);
        let sent = self
            .execute(
                clinic,
                &doc.id,
                commands,
                Cause {
                    key: &key,
                    at_ms: doc.updated_ms,
                },
            )
            .await?;
        if let Some((_, message)) = sent.into_iter().next() {
            doc.message = Some(message);
            self.put_document(&doc).await?;
        }
        Ok(Delivered {
            document: doc,
            replayed: false,
        })
    }

    async fn put_document(&self, doc: &Document) -> Result<(), ClinicalError> {
        self.save(
            &doc.tenant,
            RecordKind::Document,
            &doc.id,
            doc.created_ms,
            doc.external_id
                .as_deref()
                .map(|ext| external_key(doc.kind, ext))
                .as_deref(),
            doc,
        )
        .await
    }
}
