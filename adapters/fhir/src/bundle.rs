//! Bundle and reference resolution inside it.

use serde::{Deserialize, Serialize};

use crate::codes::{BundleType, HttpVerb};
use crate::datatypes::{Identifier, Meta, Reference};
use crate::primitives::Instant;
use crate::resource::Resource;

/// Bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Persistent identifier (documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    /// Bundle type (required).
    #[serde(rename = "type")]
    pub type_: BundleType,
    /// When assembled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Instant>,
    /// Total matches (searchset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Links (paging).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<BundleLink>,
    /// Entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<BundleEntry>,
}

/// Bundle.link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleLink {
    /// self | next | previous …
    pub relation: String,
    /// URL.
    pub url: String,
}

/// Bundle.entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    /// Absolute URL or `urn:uuid:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Transaction/batch/history request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<BundleRequest>,
    /// Transaction/batch/history response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<BundleResponse>,
}

/// Bundle.entry.request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleRequest {
    /// HTTP verb (required).
    pub method: HttpVerb,
    /// URL relative to the base (required).
    pub url: String,
    /// If-None-Match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_none_match: Option<String>,
    /// If-Modified-Since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_modified_since: Option<Instant>,
    /// If-Match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// If-None-Exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_none_exist: Option<String>,
}

/// Bundle.entry.response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleResponse {
    /// Status code and text (required), e.g. `201 Created`.
    pub status: String,
    /// Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<Instant>,
    /// OperationOutcome for the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Resource>,
}

impl Bundle {
    /// Resources of the entries, in order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.entry.iter().filter_map(|e| e.resource.as_ref())
    }

    /// The first entry's resource.
    pub fn first_resource(&self) -> Option<&Resource> {
        self.entry.first().and_then(|e| e.resource.as_ref())
    }

    /// Resolve a reference inside the Bundle: by exact `fullUrl` (absolute URLs, `urn:uuid:`,
    /// `urn:oid:`), else for RESTful references (`Type/id` or a URL ending in `Type/id`) by a
    /// `fullUrl` ending in `/Type/id` or by the entry's resource type and id. `#contained` and
    /// identifier-only references are not resolved here.
    pub fn resolve(&self, reference: &Reference) -> Option<&Resource> {
        let r = reference.reference.as_deref()?.trim();
        if r.is_empty() || r.starts_with('#') {
            return None;
        }
        if let Some(found) = self
            .entry
            .iter()
            .find(|e| e.full_url.as_deref() == Some(r))
            .and_then(|e| e.resource.as_ref())
        {
            return Some(found);
        }
        let (t, id) = reference.type_and_id()?;
        let suffix = format!("/{t}/{id}");
        self.entry
            .iter()
            .filter_map(|e| e.resource.as_ref().map(|res| (e, res)))
            .find(|(e, res)| {
                e.full_url.as_deref().is_some_and(|u| u.ends_with(&suffix))
                    || (res.resource_type() == t && res.id() == Some(id))
            })
            .map(|(_, res)| res)
    }

    /// Resolve a reference and return the typed model when it has that type.
    pub fn resolve_as<T: crate::FhirResource>(&self, reference: &Reference) -> Option<&T> {
        self.resolve(reference).and_then(T::cast)
    }
}
