//! The per-clinic patient directory: who the clinic's patients are (phone, name, language, date
//! of birth, sex, tags, condition codes, last visit) and what each agreed to be messaged about
//! (consent per purpose, with the time and source of each change).
//!
//! Records live in the store (Redis is the system of record). Filtering ("diabetic patients aged
//! 40 to 70 who accept promotional messages") runs in memory over a compact per-clinic index
//! (see [`index`]) that each node loads on first use and keeps current from the clinic's change
//! feed, so a filter over a million patients takes milliseconds and is never stale.

mod directory;
pub mod filter;
pub mod index;
pub mod input;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::E164;

pub use self::directory::{
    IndexLimits, IndexStats, MatchPage, PatientDirectory, PatientMatch, Upserted,
    PLACEHOLDER_PREFIX,
};
pub use self::filter::PatientFilter;

/// The longest external id a clinic may use.
pub const MAX_EXTERNAL_ID: usize = 128;

/// A patient as the clinic knows them. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    /// The clinic's id for the patient (1 to 128 characters).
    pub external_id: String,
    pub phone: E164,
    #[serde(default)]
    pub name: String,
    /// Meta's language code: `en`, `hi`, `ta`, `en_US` …
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
    #[serde(default)]
    pub sex: Option<Sex>,
    /// Lower-case labels: `diabetic`, `antenatal` …
    #[serde(default)]
    pub tags: Vec<String>,
    /// Upper-case condition codes, e.g. ICD-10 `E11.9`.
    #[serde(default)]
    pub conditions: Vec<String>,
    #[serde(default)]
    pub last_visit_ms: Option<i64>,
    #[serde(default)]
    pub consent: Consents,
    #[serde(default)]
    pub updated_ms: i64,
}

impl PatientRecord {
    /// A record with only an id and a phone; everything else default (care granted,
    /// promotional not).
    pub fn new(external_id: impl Into<String>, phone: E164) -> Self {
        Self {
            external_id: external_id.into(),
            phone,
            name: String::new(),
            language: None,
            birth_date: None,
            sex: None,
            tags: Vec::new(),
            conditions: Vec::new(),
            last_visit_ms: None,
            consent: Consents::default(),
            updated_ms: 0,
        }
    }

    /// Whether the patient agreed to messages of this purpose.
    pub fn consents_to(&self, purpose: Purpose) -> bool {
        self.consent.get(purpose).granted
    }

    /// Tags lower-cased, conditions upper-cased, both trimmed, sorted and without duplicates;
    /// empty ones dropped; the language trimmed.
    pub fn normalise(&mut self) {
        normalise_labels(&mut self.tags, |s| s.to_lowercase());
        normalise_labels(&mut self.conditions, |s| s.to_uppercase());
        self.name = self.name.trim().to_owned();
        if let Some(l) = &self.language {
            let l = l.trim();
            self.language = (!l.is_empty()).then(|| l.to_owned());
        }
    }
}

fn normalise_labels(v: &mut Vec<String>, case: impl Fn(&str) -> String) {
    for s in v.iter_mut() {
        *s = case(s.trim());
    }
    v.retain(|s| !s.is_empty());
    v.sort();
    v.dedup();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    /// `female`/`f`, `male`/`m`, `other`/`o`, `unknown`/`u`, any case.
    pub fn parse(s: &str) -> Option<Sex> {
        match s.trim().to_ascii_lowercase().as_str() {
            "female" | "f" => Some(Sex::Female),
            "male" | "m" => Some(Sex::Male),
            "other" | "o" => Some(Sex::Other),
            "unknown" | "u" => Some(Sex::Unknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
}

/// What a message is for: consent is given or withdrawn per purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Care messages: reminders, reports, prescriptions, follow-ups.
    Care,
    /// Promotional and broadcast messages: camps, drives, offers.
    Promotional,
}

impl Purpose {
    pub fn parse(s: &str) -> Option<Purpose> {
        match s.trim().to_ascii_lowercase().as_str() {
            "care" => Some(Purpose::Care),
            "promotional" => Some(Purpose::Promotional),
            _ => None,
        }
    }
}

/// Consent for one purpose: the state, when it last changed and who changed it (`default`, `api`,
/// `import`, `hl7`, `fhir`, `patient:STOP` …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    pub granted: bool,
    pub changed_ms: i64,
    pub source: String,
}

impl ConsentState {
    pub fn new(granted: bool, changed_ms: i64, source: impl Into<String>) -> Self {
        Self {
            granted,
            changed_ms,
            source: source.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    pub care: ConsentState,
    pub promotional: ConsentState,
}

/// The source of a consent nobody stated.
pub const DEFAULT_SOURCE: &str = "default";

impl Default for Consents {
    /// Care granted, promotional not, both as of time 0 from `default` (so any stated consent
    /// supersedes them).
    fn default() -> Self {
        Self {
            care: ConsentState::new(true, 0, DEFAULT_SOURCE),
            promotional: ConsentState::new(false, 0, DEFAULT_SOURCE),
        }
    }
}

impl Consents {
    pub fn get(&self, purpose: Purpose) -> &ConsentState {
        match purpose {
            Purpose::Care => &self.care,
            Purpose::Promotional => &self.promotional,
        }
    }

    pub fn get_mut(&mut self, purpose: Purpose) -> &mut ConsentState {
        match purpose {
            Purpose::Care => &mut self.care,
            Purpose::Promotional => &mut self.promotional,
        }
    }

    /// Keeps, per purpose, whichever state changed later (`incoming` on a tie). A re-import that
    /// does not state consent (time 0) never undoes the patient's STOP.
    pub fn merge_newer(&mut self, stored: &Consents) {
        for p in [Purpose::Care, Purpose::Promotional] {
            let s = stored.get(p);
            if s.changed_ms > self.get(p).changed_ms {
                *self.get_mut(p) = s.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone() -> E164 {
        E164::parse("+919800000001").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_grant_care_only() {
        let p = PatientRecord::new("P1", phone());
        assert!(p.consents_to(Purpose::Care));
        assert!(!p.consents_to(Purpose::Promotional));
        assert_eq!(p.consent.care.source, "default");
    }

    #[test]
    fn normalise_cases_sorts_and_dedupes() {
        let mut p = PatientRecord::new("P1", phone());
        p.tags = vec![
            " Diabetic".into(),
            "antenatal".into(),
            "DIABETIC".into(),
            " ".into(),
        ];
        p.conditions = vec!["e11.9".into(), "I10".into(), "E11.9".into()];
        p.language = Some("  ".into());
        p.normalise();
        assert_eq!(p.tags, vec!["antenatal", "diabetic"]);
        assert_eq!(p.conditions, vec!["E11.9", "I10"]);
        assert_eq!(p.language, None);
    }

    #[test]
    fn newer_consent_wins_and_defaults_never_override() {
        let stored = Consents {
            promotional: ConsentState::new(true, 500, "api"),
            care: ConsentState::new(false, 900, "patient:STOP"),
        };
        let mut incoming = Consents {
            promotional: ConsentState::new(false, 1_000, "import"),
            ..Default::default()
        };
        incoming.merge_newer(&stored);
        assert!(!incoming.promotional.granted, "the later import wins");
        assert_eq!(
            incoming.care.source, "patient:STOP",
            "the default never wins"
        );
    }

    #[test]
    fn record_json_round_trips_with_snake_case_enums() {
        let mut p = PatientRecord::new("P1", phone());
        p.sex = Some(Sex::Female);
        p.birth_date = NaiveDate::from_ymd_opt(1970, 4, 2);
        let json = serde_json::to_string(&p).unwrap_or_default();
        assert!(json.contains("\"sex\":\"female\""), "{json}");
        assert!(json.contains("\"birth_date\":\"1970-04-02\""), "{json}");
        let back: PatientRecord = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
    }
}
