//! `clinic-gateway templates submit`: sends the template library to one configured clinic's WABA
//! through Meta's `POST /{waba-id}/message_templates`, so its touchpoints can be approved.
//!
//! It first lists what the WABA already has (one paged read), creates only what is missing, and
//! reads Meta's duplicate error as "already exists", so running it again is harmless.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use whatsapp_cloud::wire::{CreateTemplateRequest, TemplateStatus};
use whatsapp_cloud::{ClientConfig, ClientError, GraphClient};

use crate::config::Settings;
use crate::template_library::{LibraryError, TemplateLibrary};

/// Meta's `error_subcode` for "content in this language already exists" on a create.
pub const SUBCODE_ALREADY_EXISTS: i64 = 2_388_024;

/// What to submit.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// A clinic id from the configuration's `[[clinics]]`.
    pub clinic: String,
    /// Only these languages (empty: every language of the library).
    pub languages: Vec<String>,
    /// List what would be created without creating anything.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("clinic {clinic} is not in the configuration's [[clinics]] (configured: {known})")]
    UnknownClinic { clinic: String, known: String },
    #[error("clinic {0} has no waba_id in the configuration")]
    NoWaba(String),
    #[error("language {language} is not in the template library (it has: {available})")]
    UnknownLanguage { language: String, available: String },
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("Meta client: {0}")]
    Client(#[from] ClientError),
}

/// What happened to one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Meta accepted it for review.
    Created { id: String, status: TemplateStatus },
    /// The WABA already has this name in this language (status when Meta listed it).
    AlreadyExists { status: Option<TemplateStatus> },
    /// Dry run: it would be created.
    WouldCreate,
    /// Meta refused it (or could not be reached); Meta's own words.
    Failed { message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitLine {
    pub name: String,
    pub language: String,
    pub outcome: Outcome,
}

impl fmt::Display for SubmitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = format!("{}/{}", self.language, self.name);
        match &self.outcome {
            Outcome::Created { id, status } => {
                write!(f, "{what:<30} created (id {id}, {})", status_name(*status))
            }
            Outcome::AlreadyExists { status: Some(s) } => {
                write!(f, "{what:<30} already exists ({})", status_name(*s))
            }
            Outcome::AlreadyExists { status: None } => write!(f, "{what:<30} already exists"),
            Outcome::WouldCreate => write!(f, "{what:<30} would be created (dry run)"),
            Outcome::Failed { message } => write!(f, "{what:<30} failed: {message}"),
        }
    }
}

fn status_name(s: TemplateStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}"))
}

#[derive(Debug, Clone, Default)]
pub struct SubmitReport {
    pub waba_id: String,
    /// Problems that did not stop the run (e.g. the WABA's templates could not be listed).
    pub warnings: Vec<String>,
    pub lines: Vec<SubmitLine>,
}

impl SubmitReport {
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    pub fn created(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Created { .. }))
    }

    pub fn already_existing(&self) -> usize {
        self.count(|o| matches!(o, Outcome::AlreadyExists { .. }))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.lines.iter().filter(|l| f(&l.outcome)).count()
    }

    /// One line summing the run up.
    pub fn summary(&self) -> String {
        let would = self.count(|o| matches!(o, Outcome::WouldCreate));
        let mut s = format!(
            "WABA {}: {} created, {} already existed, {} failed",
            self.waba_id,
            self.created(),
            self.already_existing(),
            self.failed()
        );
        if would > 0 {
            s.push_str(&format!(", {would} would be created"));
        }
        s
    }
}

/// Loads the library named by `settings`, finds the clinic in the configuration and submits
/// (a language subset of) the library to its WABA with its access token.
pub async fn run(
    settings: &Settings,
    request: &SubmitRequest,
) -> Result<SubmitReport, SubmitError> {
    let clinic = settings
        .clinics
        .iter()
        .find(|c| c.id.as_str() == request.clinic)
        .ok_or_else(|| SubmitError::UnknownClinic {
            clinic: request.clinic.clone(),
            known: if settings.clinics.is_empty() {
                "none".into()
            } else {
                settings
                    .clinics
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })?;
    if clinic.waba_id.is_empty() {
        return Err(SubmitError::NoWaba(request.clinic.clone()));
    }
    let library = TemplateLibrary::load(&settings.templates.resolved_dir())?;
    for language in &request.languages {
        if !library.languages().iter().any(|l| l == language) {
            return Err(SubmitError::UnknownLanguage {
                language: language.clone(),
                available: library.languages().join(", "),
            });
        }
    }
    let templates: Vec<&CreateTemplateRequest> = library
        .templates()
        .iter()
        .filter(|t| request.languages.is_empty() || request.languages.contains(&t.language))
        .collect();
    let client = GraphClient::new(ClientConfig {
        base_url: settings.meta.base_url.clone(),
        api_version: settings.meta.api_version.clone(),
        connect_timeout: Duration::from_millis(settings.meta.connect_timeout_ms),
        request_timeout: settings.request_timeout(),
        ..ClientConfig::default()
    })?;
    Ok(submit(
        &client,
        &clinic.access_token,
        &clinic.waba_id,
        &templates,
        request.dry_run,
    )
    .await)
}

/// Submits `templates` to one WABA: what the WABA lists already is skipped, the rest created
/// one by one (a dry run creates nothing).
pub async fn submit(
    client: &GraphClient,
    token: &str,
    waba_id: &str,
    templates: &[&CreateTemplateRequest],
    dry_run: bool,
) -> SubmitReport {
    let mut report = SubmitReport {
        waba_id: waba_id.to_owned(),
        ..SubmitReport::default()
    };
    let existing: HashMap<(String, String), TemplateStatus> = match client
        .list_templates(token, waba_id)
        .await
    {
        Ok(list) => list
            .into_iter()
            .map(|t| ((t.name, t.language), t.status))
            .collect(),
        Err(e) => {
            report.warnings.push(format!(
                    "could not list the WABA's templates ({}); creating each one and reading Meta's answer",
                    describe(&e)
                ));
            HashMap::new()
        }
    };
    for t in templates {
        let known = existing.get(&(t.name.clone(), t.language.clone())).copied();
        let outcome = match known {
            Some(status) => Outcome::AlreadyExists {
                status: Some(status),
            },
            None if dry_run => Outcome::WouldCreate,
            None => create_one(client, token, waba_id, t).await,
        };
        report.lines.push(SubmitLine {
            name: t.name.clone(),
            language: t.language.clone(),
            outcome,
        });
    }
    report
}

/// One `POST /{waba-id}/message_templates`, with Meta's duplicate answer read as "already exists".
pub async fn create_one(
    client: &GraphClient,
    token: &str,
    waba_id: &str,
    template: &CreateTemplateRequest,
) -> Outcome {
    match client.create_template(token, waba_id, template).await {
        Ok(r) => Outcome::Created {
            id: r.id,
            status: r.status,
        },
        Err(e) if is_duplicate(&e) => Outcome::AlreadyExists { status: None },
        Err(e) => Outcome::Failed {
            message: describe(&e),
        },
    }
}

/// Meta refuses a second template with the same name and language: code 100 with subcode
/// 2388024 ("content in this language already exists"); the sandbox says "already exists".
pub fn is_duplicate(e: &ClientError) -> bool {
    match e {
        ClientError::Api { error, .. } => {
            error.error_subcode == Some(SUBCODE_ALREADY_EXISTS)
                || (error.code == 100
                    && (error.text().contains("already exists")
                        || error.message.contains("already exists")))
        }
        _ => false,
    }
}

/// Meta's message (code and details) or the transport problem.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Api { error, .. } => {
            let details = error.text();
            if details == error.message {
                error.message.clone()
            } else {
                format!("{}: {details}", error.message)
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_cloud::wire::GraphError;

    fn api(code: i64, subcode: Option<i64>, details: &str) -> ClientError {
        let mut error = GraphError::new(code, "Invalid parameter", details);
        error.error_subcode = subcode;
        ClientError::Api { status: 400, error }
    }

    #[test]
    fn duplicates_are_recognised_by_subcode_or_by_the_sandbox_wording() {
        assert!(is_duplicate(&api(
            100,
            Some(SUBCODE_ALREADY_EXISTS),
            "There is already English content for this template."
        )));
        assert!(is_duplicate(&api(
            100,
            None,
            "name: a template named x already exists in language en"
        )));
        assert!(!is_duplicate(&api(100, None, "name: lowercase only")));
        assert!(!is_duplicate(&api(2388019, None, "too many templates")));
        assert!(!is_duplicate(&ClientError::Timeout));
    }

    #[test]
    fn lines_read_well() {
        let line = |outcome| SubmitLine {
            name: "visit_reminder".into(),
            language: "ta".into(),
            outcome,
        };
        assert_eq!(
            line(Outcome::Created {
                id: "42".into(),
                status: TemplateStatus::Pending
            })
            .to_string(),
            "ta/visit_reminder              created (id 42, PENDING)"
        );
        assert!(line(Outcome::AlreadyExists {
            status: Some(TemplateStatus::Approved)
        })
        .to_string()
        .ends_with("already exists (APPROVED)"));
        assert!(line(Outcome::Failed {
            message: describe(&api(100, None, "name: lowercase only"))
        })
        .to_string()
        .ends_with("failed: (#100) Invalid parameter: name: lowercase only"));
    }
}
