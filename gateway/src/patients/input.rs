//! Patients as clinics send them (a JSON body, an NDJSON line, a CSV row), checked field by field
//! into a [`PatientRecord`]. Every error names the field at fault.

use chrono::{DateTime, NaiveDate, TimeZone};
use serde::Deserialize;

use super::{ConsentState, Consents, PatientRecord, Sex, MAX_EXTERNAL_ID};
use crate::domain::E164;

pub const MAX_NAME: usize = 200;
pub const MAX_LABELS: usize = 50;
pub const MAX_TAG: usize = 64;
pub const MAX_CONDITION: usize = 20;

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// What the checks need from the caller: the clinic's defaults and the time.
#[derive(Debug, Clone)]
pub struct InputContext {
    pub default_country_code: String,
    pub time_zone: chrono_tz::Tz,
    pub now_ms: i64,
    /// The source recorded with consent stated in the input (`api`, `import`, `hl7` …).
    pub source: String,
}

impl InputContext {
    fn today(&self) -> NaiveDate {
        DateTime::from_timestamp_millis(self.now_ms)
            .map(|t| t.with_timezone(&self.time_zone).date_naive())
            .unwrap_or_default()
    }
}

/// A patient as sent in JSON (`PUT /v1/patients/{id}`, one NDJSON line).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientInput {
    /// Required in NDJSON; in a PUT the path gives it (and this, when sent, must agree).
    #[serde(default)]
    pub external_id: Option<String>,
    pub phone: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: Option<String>,
    /// `female`, `male`, `other`, `unknown` (or `f`, `m`, `o`, `u`).
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub conditions: Vec<String>,
    /// RFC 3339, or `YYYY-MM-DD` (midnight in the clinic's zone).
    #[serde(default)]
    pub last_visit: Option<String>,
    #[serde(default)]
    pub consent: Option<ConsentInput>,
}

/// Consent stated by the clinic. A purpose left out keeps what is stored (or the default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    #[serde(default)]
    pub care: Option<bool>,
    #[serde(default)]
    pub promotional: Option<bool>,
    /// When the patient gave it (RFC 3339); default now.
    #[serde(default)]
    pub at: Option<String>,
}

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Checks a clinic's external id.
pub fn external_id(raw: &str) -> Result<String, FieldError> {
    let n = raw.chars().count();
    if n == 0 || n > MAX_EXTERNAL_ID {
        return Err(FieldError::new(
            "external_id",
            format!("use 1 to {MAX_EXTERNAL_ID} characters"),
        ));
    }
    if raw.chars().any(char::is_control) || raw.trim() != raw {
        return Err(FieldError::new(
            "external_id",
            "no control characters or surrounding spaces",
        ));
    }
    if raw.starts_with(super::directory::PLACEHOLDER_PREFIX) {
        return Err(FieldError::new(
            "external_id",
            "ids starting with wa: are reserved for patients known only from WhatsApp",
        ));
    }
    Ok(raw.to_owned())
}

fn language(raw: &str) -> Result<String, FieldError> {
    let (lang, region) = match raw.split_once(['_', '-']) {
        Some((l, r)) => (l, Some(r)),
        None => (raw, None),
    };
    let ok = (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_alphabetic())
        && region.is_none_or(|r| {
            (2..=8).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            "language",
            format!("{raw:?} is not a language code (en, hi, ta, en_US …)"),
        ))
    }
}

fn date(field: &str, raw: &str) -> Result<NaiveDate, FieldError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, format!("{raw:?} is not a date (YYYY-MM-DD)")))
}

fn labels(
    field: &str,
    raw: &[String],
    max_len: usize,
    case: fn(&str) -> String,
    allowed: fn(char) -> bool,
    what: &str,
) -> Result<Vec<String>, FieldError> {
    if raw.len() > MAX_LABELS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_LABELS} {what}"),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let v = case(s.trim());
        if v.is_empty() {
            continue;
        }
        if v.chars().count() > max_len || !v.chars().all(allowed) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("{s:?}: use 1 to {max_len} {what} characters"),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

fn instant_ms(field: &str, raw: &str, ctx: &InputContext) -> Result<i64, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    let d = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        FieldError::new(
            field,
            format!("{raw:?} is neither RFC 3339 (2026-01-31T10:00:00+05:30) nor a date"),
        )
    })?;
    let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    ctx.time_zone
        .from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| {
            FieldError::new(
                field,
                format!("{raw:?} has no midnight in the clinic's zone"),
            )
        })
}

impl PatientInput {
    /// The record this input describes. `path_id` is the id from the URL, if any.
    pub fn into_record(
        self,
        path_id: Option<&str>,
        ctx: &InputContext,
    ) -> Result<PatientRecord, FieldError> {
        let id = match (path_id, blank(&self.external_id)) {
            (Some(p), Some(b)) if p != b => {
                return Err(FieldError::new(
                    "external_id",
                    "differs from the id in the path",
                ))
            }
            (Some(p), _) => external_id(p)?,
            (None, Some(b)) => external_id(b)?,
            (None, None) => return Err(FieldError::new("external_id", "required")),
        };
        let phone = E164::parse_with_default(&self.phone, Some(&ctx.default_country_code))
            .map_err(|e| FieldError::new("phone", e.to_string()))?;
        let mut p = PatientRecord::new(id, phone);
        if let Some(name) = blank(&self.name) {
            // Line breaks and runs of spaces (a spreadsheet cell's Alt+Enter) become one space.
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
                return Err(FieldError::new(
                    "name",
                    format!("at most {MAX_NAME} characters, no control characters"),
                ));
            }
            p.name = name;
        }
        p.language = blank(&self.language).map(language).transpose()?;
        if let Some(raw) = blank(&self.birth_date) {
            let d = date("birth_date", raw)?;
            let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default();
            if d < earliest || d > ctx.today() {
                return Err(FieldError::new(
                    "birth_date",
                    format!("{raw} is not between 1900-01-01 and today"),
                ));
            }
            p.birth_date = Some(d);
        }
        if let Some(raw) = blank(&self.sex) {
            p.sex = Some(Sex::parse(raw).ok_or_else(|| {
                FieldError::new(
                    "sex",
                    format!("unknown value {raw:?}: use female, male, other or unknown"),
                )
            })?);
        }
        p.tags = labels(
            "tags",
            &self.tags,
            MAX_TAG,
            str::to_lowercase,
            |c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'),
            "tag (letters, digits, _ - . :)",
        )?;
        p.conditions = labels(
            "conditions",
            &self.conditions,
            MAX_CONDITION,
            str::to_uppercase,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'),
            "code (letters, digits, . -)",
        )?;
        p.last_visit_ms = blank(&self.last_visit)
            .map(|raw| instant_ms("last_visit", raw, ctx))
            .transpose()?;
        if let Some(c) = self.consent {
            let at = blank(&c.at)
                .map(|raw| {
                    DateTime::parse_from_rfc3339(raw)
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| {
                            FieldError::new("consent.at", format!("{raw:?} is not RFC 3339"))
                        })
                })
                .transpose()?
                .unwrap_or(ctx.now_ms);
            if at > ctx.now_ms + 60_000 {
                return Err(FieldError::new("consent.at", "is in the future"));
            }
            let mut consents = Consents::default();
            if let Some(g) = c.care {
                consents.care = ConsentState::new(g, at, ctx.source.clone());
            }
            if let Some(g) = c.promotional {
                consents.promotional = ConsentState::new(g, at, ctx.source.clone());
            }
            p.consent = consents;
        }
        p.normalise();
        Ok(p)
    }
}

/// The CSV columns, in any order (the header row names them; unknown names are refused).
pub const CSV_COLUMNS: [&str; 11] = [
    "external_id",
    "phone",
    "name",
    "language",
    "birth_date",
    "sex",
    "tags",
    "conditions",
    "last_visit",
    "consent_care",
    "consent_promotional",
];

/// Where each known column is in a CSV file.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    at: [Option<usize>; 11],
}

impl CsvLayout {
    /// Reads the header row. Needs `external_id` and `phone`; refuses unknown or repeated names.
    pub fn from_header<'a>(header: impl IntoIterator<Item = &'a str>) -> Result<Self, FieldError> {
        let mut at = [None; 11];
        for (i, name) in header.into_iter().enumerate() {
            let name = name
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let Some(k) = CSV_COLUMNS.iter().position(|c| *c == name) else {
                return Err(FieldError::new(
                    "header",
                    format!(
                        "unknown column {name:?}; columns are {}",
                        CSV_COLUMNS.join(", ")
                    ),
                ));
            };
            if at[k].replace(i).is_some() {
                return Err(FieldError::new(
                    "header",
                    format!("column {name:?} appears twice"),
                ));
            }
        }
        for required in ["external_id", "phone"] {
            let k = CSV_COLUMNS.iter().position(|c| *c == required).unwrap_or(0);
            if at[k].is_none() {
                return Err(FieldError::new(
                    "header",
                    format!("the {required} column is required"),
                ));
            }
        }
        Ok(Self { at })
    }

    fn cell<'r>(&self, row: &'r csv::StringRecord, column: usize) -> Option<&'r str> {
        self.at[column]
            .and_then(|i| row.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The row's external id cell, if any (for error reports).
    pub fn external_id<'r>(&self, row: &'r csv::StringRecord) -> Option<&'r str> {
        self.cell(row, 0)
    }

    /// The row as an input (empty cells are absent; `tags` and `conditions` split on `;`).
    pub fn input(&self, row: &csv::StringRecord) -> Result<PatientInput, FieldError> {
        let cell = |name: &str| {
            CSV_COLUMNS
                .iter()
                .position(|c| *c == name)
                .and_then(|k| self.cell(row, k))
        };
        let list = |name: &str| -> Vec<String> {
            cell(name)
                .map(|s| {
                    s.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let flag = |name: &str| -> Result<Option<bool>, FieldError> {
            match cell(name).map(str::to_ascii_lowercase).as_deref() {
                None => Ok(None),
                Some("true" | "yes" | "y" | "1") => Ok(Some(true)),
                Some("false" | "no" | "n" | "0") => Ok(Some(false)),
                Some(other) => Err(FieldError::new(
                    name,
                    format!("{other:?} is not yes/no (true, false, yes, no, 1, 0)"),
                )),
            }
        };
        let care = flag("consent_care")?;
        let promotional = flag("consent_promotional")?;
        Ok(PatientInput {
            external_id: cell("external_id").map(str::to_owned),
            phone: cell("phone").unwrap_or_default().to_owned(),
            name: cell("name").map(str::to_owned),
            language: cell("language").map(str::to_owned),
            birth_date: cell("birth_date").map(str::to_owned),
            sex: cell("sex").map(str::to_owned),
            tags: list("tags"),
            conditions: list("conditions"),
            last_visit: cell("last_visit").map(str::to_owned),
            consent: (care.is_some() || promotional.is_some()).then_some(ConsentInput {
                care,
                promotional,
                at: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patients::Purpose;

    fn ctx() -> InputContext {
        InputContext {
            default_country_code: "91".into(),
            time_zone: chrono_tz::Asia::Kolkata,
            // 2026-03-01T00:00:00Z
            now_ms: 1_772_323_200_000,
            source: "api".into(),
        }
    }

    fn input(phone: &str) -> PatientInput {
        PatientInput {
            phone: phone.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_input_becomes_a_normalised_record() {
        let i: PatientInput = serde_json::from_str(
            r#"{"phone": "98765 43210", "name": " Asha ", "language": "hi", "birth_date": "1970-04-02",
                "sex": "F", "tags": ["Diabetic", "antenatal"], "conditions": ["e11.9"],
                "last_visit": "2026-02-01", "consent": {"promotional": true}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p = i
            .into_record(Some("P-1"), &ctx())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.external_id, "P-1");
        assert_eq!(p.phone.as_str(), "+919876543210");
        assert_eq!(p.name, "Asha");
        assert_eq!(p.sex, Some(Sex::Female));
        assert_eq!(p.tags, vec!["antenatal", "diabetic"]);
        assert_eq!(p.conditions, vec!["E11.9"]);
        // Midnight in Kolkata is 18:30 UTC the day before.
        assert_eq!(p.last_visit_ms, Some(1_769_884_200_000));
        assert!(p.consents_to(Purpose::Promotional));
        assert_eq!(p.consent.promotional.source, "api");
        assert_eq!(p.consent.promotional.changed_ms, ctx().now_ms);
        assert_eq!(p.consent.care.source, "default", "care was not stated");
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |i: PatientInput| match i.into_record(Some("P1"), &ctx()) {
            Err(e) => e.field,
            Ok(p) => panic!("accepted {p:?}"),
        };
        assert_eq!(field(input("12")), "phone");
        assert_eq!(
            field(PatientInput {
                sex: Some("robot".into()),
                ..input("9876543210")
            }),
            "sex"
        );
        assert_eq!(
            field(PatientInput {
                birth_date: Some("1970-13-01".into()),
                ..input("9876543210")
            }),
            "birth_date"
        );
        assert_eq!(
            field(PatientInput {
                birth_date: Some("2030-01-01".into()),
                ..input("9876543210")
            }),
            "birth_date"
        );
        assert_eq!(
            field(PatientInput {
                language: Some("english!".into()),
                ..input("9876543210")
            }),
            "language"
        );
        assert_eq!(
            field(PatientInput {
                tags: vec!["ok".into(), "not ok".into()],
                ..input("9876543210")
            }),
            "tags[1]"
        );
        assert_eq!(
            field(PatientInput {
                last_visit: Some("yesterday".into()),
                ..input("9876543210")
            }),
            "last_visit"
        );
        assert_eq!(
            field(PatientInput {
                external_id: Some("P2".into()),
                ..input("9876543210")
            }),
            "external_id"
        );
        assert!(
            input("9876543210").into_record(None, &ctx()).is_err(),
            "id required"
        );
        assert!(external_id("wa:919876543210").is_err());
        assert!(external_id(&"x".repeat(129)).is_err());
        assert!(external_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn csv_rows_map_by_header() {
        let layout =
            CsvLayout::from_header(["Phone", "external_id", "tags", "consent_promotional", ""])
                .unwrap_or_else(|e| panic!("{e}"));
        let row = csv::StringRecord::from(vec!["9876543210", "P9", "diabetic; senior", "yes", "x"]);
        let i = layout.input(&row).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.external_id.as_deref(), Some("P9"));
        assert_eq!(i.tags, vec!["diabetic", "senior"]);
        assert_eq!(i.consent.as_ref().and_then(|c| c.promotional), Some(true));
        let bad = csv::StringRecord::from(vec!["9876543210", "P9", "", "maybe"]);
        assert_eq!(
            layout.input(&bad).map_err(|e| e.field).err().as_deref(),
            Some("consent_promotional")
        );
        assert!(CsvLayout::from_header(["external_id", "phone", "birthdate"]).is_err());
        assert!(CsvLayout::from_header(["external_id", "name"]).is_err());
        assert!(CsvLayout::from_header(["external_id", "phone", "phone"]).is_err());
    }
}
