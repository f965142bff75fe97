//! Each clinic's template catalog: synced from Meta, moved by Meta's template webhooks, read by
//! admission and by the dispatcher (a paused template stops its queued sends).

use whatsapp_cloud::wire::{
    TemplateCategoryUpdate, TemplateInfo, TemplateStatus, TemplateStatusUpdate,
};

use crate::clock::now_ms;
use crate::store::tenancy::{TemplateRecord, TemplateStore};
use crate::store::StoreError;
use crate::tenants::model::RecategorisationPolicy;
use crate::tenants::ClinicSettings;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Meta: {0}")]
    Meta(#[from] whatsapp_cloud::ClientError),
}

pub fn record_from_info(info: &TemplateInfo, previous: Option<&TemplateRecord>) -> TemplateRecord {
    TemplateRecord {
        name: info.name.clone(),
        language: info.language.clone(),
        category: info.category,
        status: info.status,
        meta_id: info.id.clone().unwrap_or_default(),
        body_parameters: info.body_parameter_count(),
        pending_category: previous.and_then(|p| p.pending_category),
        reason: previous.and_then(|p| p.reason.clone()),
        updated_ms: now_ms(),
    }
}

/// Replaces the clinic's catalog entries with what Meta lists. Returns how many were synced.
pub async fn sync(
    store: &dyn TemplateStore,
    meta: &crate::meta::Meta,
    clinic: &ClinicSettings,
) -> Result<usize, CatalogError> {
    let listed = meta
        .client(clinic)
        .list_templates(meta.token(clinic), &clinic.waba_id)
        .await?;
    for info in &listed {
        let previous = store
            .template(&clinic.id, &info.name, &info.language)
            .await?;
        store
            .put_template(&clinic.id, &record_from_info(info, previous.as_ref()))
            .await?;
    }
    Ok(listed.len())
}

/// `message_template_status_update` for one clinic of the WABA.
pub async fn apply_status(
    store: &dyn TemplateStore,
    clinic: &ClinicSettings,
    u: &TemplateStatusUpdate,
) -> Result<(), StoreError> {
    let existing = store
        .template(
            &clinic.id,
            &u.message_template_name,
            &u.message_template_language,
        )
        .await?;
    let record = match existing {
        Some(mut r) => {
            r.status = u.event;
            r.reason = u.reason.clone().filter(|r| r != "NONE");
            if let Some(c) = u.message_template_category {
                if r.pending_category.is_none() {
                    r.category = c;
                }
            }
            if r.meta_id.is_empty() {
                r.meta_id = u.message_template_id.clone();
            }
            r.updated_ms = now_ms();
            r
        }
        // Not synced yet: record what Meta says; the parameter count comes with the next sync.
        None => TemplateRecord {
            name: u.message_template_name.clone(),
            language: u.message_template_language.clone(),
            category: u
                .message_template_category
                .unwrap_or(whatsapp_cloud::wire::TemplateCategory::Utility),
            status: u.event,
            meta_id: u.message_template_id.clone(),
            body_parameters: 0,
            pending_category: None,
            reason: u.reason.clone().filter(|r| r != "NONE"),
            updated_ms: now_ms(),
        },
    };
    tracing::info!(tenant = %clinic.id, template = %record.name, language = %record.language, status = ?record.status, "template status");
    store.put_template(&clinic.id, &record).await
}

/// `template_category_update`: a completed re-categorisation is held or applied per the clinic's
/// policy; an impending one is only logged (the completed event follows).
pub async fn apply_category(
    store: &dyn TemplateStore,
    clinic: &ClinicSettings,
    u: &TemplateCategoryUpdate,
) -> Result<(), StoreError> {
    if u.is_impending() {
        tracing::info!(tenant = %clinic.id, template = %u.message_template_name, to = ?u.correct_category, "template re-categorisation announced");
        return Ok(());
    }
    let Some(new) = u.new_category else {
        return Ok(());
    };
    let Some(mut r) = store
        .template(
            &clinic.id,
            &u.message_template_name,
            &u.message_template_language,
        )
        .await?
    else {
        return Ok(());
    };
    if r.category == new {
        return Ok(());
    }
    match clinic.recategorisation {
        RecategorisationPolicy::Hold => r.pending_category = Some(new),
        RecategorisationPolicy::Accept => r.category = new,
    }
    r.updated_ms = now_ms();
    tracing::info!(tenant = %clinic.id, template = %r.name, new = ?new, policy = ?clinic.recategorisation, "template re-categorised");
    store.put_template(&clinic.id, &r).await
}

/// Whether queued sends of this template must stop, and why.
pub fn stops_sends(r: &TemplateRecord) -> Option<(i64, &'static str)> {
    match r.status {
        TemplateStatus::Paused => Some((132015, "Template is Paused")),
        TemplateStatus::Disabled => Some((132016, "Template is Disabled")),
        TemplateStatus::Approved => None,
        _ => Some((132001, "Template does not exist or is not approved")),
    }
}
