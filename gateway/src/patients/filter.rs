//! Which patients a broadcast or a list reaches. All criteria are optional and AND-ed; an empty
//! list means "no constraint". [`PatientFilter::matches`] is the reference semantics over a
//! full record; the index (`super::index`) evaluates the same rules over compact entries.

use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{PatientRecord, Purpose};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatientFilter {
    /// The patient has every one of these tags.
    pub tags_all: Vec<String>,
    /// The patient has at least one of these tags.
    pub tags_any: Vec<String>,
    /// The patient has a condition code starting with one of these (`E11` matches `E11`,
    /// `E11.9`, `E119`).
    pub conditions_any: Vec<String>,
    /// Age in whole years on `today` (in the clinic's zone), inclusive. Patients without a
    /// date of birth never match an age bound.
    pub age_min: Option<u32>,
    pub age_max: Option<u32>,
    /// The patient's language is one of these.
    pub languages: Vec<String>,
    /// Last visit in `[from, to)`, unix ms. Patients without a last visit never match.
    pub last_visit_from_ms: Option<i64>,
    pub last_visit_to_ms: Option<i64>,
    /// Only patients who granted this purpose.
    pub consent: Option<Purpose>,
}

impl PatientFilter {
    /// Tags lower-cased and conditions upper-cased like records are, languages trimmed.
    pub fn normalised(&self) -> PatientFilter {
        let mut f = self.clone();
        for t in f.tags_all.iter_mut().chain(f.tags_any.iter_mut()) {
            *t = t.trim().to_lowercase();
        }
        for c in f.conditions_any.iter_mut() {
            *c = c.trim().to_uppercase();
        }
        for l in f.languages.iter_mut() {
            *l = l.trim().to_owned();
        }
        f.tags_all.retain(|s| !s.is_empty());
        f.tags_any.retain(|s| !s.is_empty());
        f.conditions_any.retain(|s| !s.is_empty());
        f.languages.retain(|s| !s.is_empty());
        f
    }

    /// Whether a (normalised) record matches this (normalised) filter on `today`.
    pub fn matches(&self, p: &PatientRecord, today: NaiveDate) -> bool {
        if let Some(purpose) = self.consent {
            if !p.consents_to(purpose) {
                return false;
            }
        }
        if !self.tags_all.iter().all(|t| p.tags.contains(t)) {
            return false;
        }
        if !self.tags_any.is_empty() && !self.tags_any.iter().any(|t| p.tags.contains(t)) {
            return false;
        }
        if !self.conditions_any.is_empty()
            && !self
                .conditions_any
                .iter()
                .any(|c| p.conditions.iter().any(|have| have.starts_with(c.as_str())))
        {
            return false;
        }
        if !self.languages.is_empty()
            && !p
                .language
                .as_ref()
                .is_some_and(|l| self.languages.contains(l))
        {
            return false;
        }
        if self.age_min.is_some() || self.age_max.is_some() {
            let Some(age) = p.birth_date.and_then(|b| age_on(b, today)) else {
                return false;
            };
            if self.age_min.is_some_and(|min| age < min)
                || self.age_max.is_some_and(|max| age > max)
            {
                return false;
            }
        }
        if self.last_visit_from_ms.is_some() || self.last_visit_to_ms.is_some() {
            let Some(at) = p.last_visit_ms else {
                return false;
            };
            if self.last_visit_from_ms.is_some_and(|from| at < from)
                || self.last_visit_to_ms.is_some_and(|to| at >= to)
            {
                return false;
            }
        }
        true
    }

    /// The birth dates an age range admits on `today`, as an inclusive range `(earliest,
    /// latest)` (`None` for an open end); `None` if nobody can match.
    pub fn birth_range(&self, today: NaiveDate) -> Option<(Option<NaiveDate>, Option<NaiveDate>)> {
        // age >= min  ⇔  born on or before `today - min years`.
        let latest = match self.age_min {
            Some(min) => Some(years_before(today, min)?),
            None => None,
        };
        // age <= max  ⇔  not (age >= max + 1)  ⇔  born after `today - (max + 1) years`.
        let earliest = match self.age_max {
            Some(max) => years_before(today, max.saturating_add(1)).and_then(|d| d.succ_opt()),
            None => None,
        };
        if let (Some(e), Some(l)) = (earliest, latest) {
            if e > l {
                return None;
            }
        }
        Some((earliest, latest))
    }
}

/// Whole years from `birth` to `today` (`None` if born after `today`).
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    today.years_since(birth)
}

/// The latest birth date of someone at least `years` old on `today` (`None` if out of range).
fn years_before(today: NaiveDate, years: u32) -> Option<NaiveDate> {
    today.checked_sub_months(Months::new(years.checked_mul(12)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::E164;
    use crate::patients::{ConsentState, Sex};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_else(|| panic!("{y}-{m}-{day}"))
    }

    fn patient(id: &str) -> PatientRecord {
        let mut p = PatientRecord::new(
            id,
            E164::parse("+919800000001").unwrap_or_else(|e| panic!("{e}")),
        );
        p.tags = vec!["diabetic".into(), "hypertensive".into()];
        p.conditions = vec!["E11.9".into(), "I10".into()];
        p.language = Some("hi".into());
        p.birth_date = Some(d(1970, 6, 15));
        p.sex = Some(Sex::Female);
        p.last_visit_ms = Some(1_000);
        p
    }

    fn today() -> NaiveDate {
        d(2026, 6, 15)
    }

    #[test]
    fn empty_filter_matches_everyone() {
        assert!(PatientFilter::default().matches(&patient("a"), today()));
    }

    #[test]
    fn tags_all_and_any() {
        let p = patient("a");
        let f = |all: &[&str], any: &[&str]| PatientFilter {
            tags_all: all.iter().map(|s| s.to_string()).collect(),
            tags_any: any.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(f(&["diabetic"], &[]).matches(&p, today()));
        assert!(f(&["diabetic", "hypertensive"], &[]).matches(&p, today()));
        assert!(!f(&["diabetic", "antenatal"], &[]).matches(&p, today()));
        assert!(f(&[], &["antenatal", "hypertensive"]).matches(&p, today()));
        assert!(!f(&[], &["antenatal"]).matches(&p, today()));
    }

    #[test]
    fn conditions_match_by_code_prefix() {
        let p = patient("a");
        let f = |c: &[&str]| PatientFilter {
            conditions_any: c.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(f(&["E11"]).matches(&p, today()));
        assert!(f(&["E11.9"]).matches(&p, today()));
        assert!(f(&["J45", "I10"]).matches(&p, today()));
        assert!(!f(&["E10"]).matches(&p, today()));
        assert!(!f(&["E11.99"]).matches(&p, today()));
    }

    #[test]
    fn age_bounds_are_inclusive_and_need_a_birth_date() {
        let mut p = patient("a");
        let f = |min, max| PatientFilter {
            age_min: min,
            age_max: max,
            ..Default::default()
        };
        // Born 1970-06-15: 56 on 2026-06-15, 55 the day before.
        assert!(f(Some(56), Some(56)).matches(&p, today()));
        assert!(!f(Some(56), None).matches(&p, d(2026, 6, 14)));
        assert!(f(None, Some(55)).matches(&p, d(2026, 6, 14)));
        assert!(!f(Some(57), None).matches(&p, today()));
        assert!(f(Some(40), Some(70)).matches(&p, today()));
        p.birth_date = None;
        assert!(!f(Some(0), None).matches(&p, today()));
        assert!(PatientFilter::default().matches(&p, today()));
    }

    #[test]
    fn birth_range_agrees_with_age_on_every_day_including_leap_days() {
        let f = PatientFilter {
            age_min: Some(1),
            age_max: Some(3),
            ..Default::default()
        };
        for today in [
            d(2024, 2, 29),
            d(2025, 2, 28),
            d(2025, 3, 1),
            d(2026, 12, 31),
        ] {
            let (earliest, latest) = f.birth_range(today).unwrap_or_else(|| panic!());
            let mut birth = d(2019, 1, 1);
            while birth <= today {
                let by_age = age_on(birth, today).is_some_and(|a| (1..=3).contains(&a));
                let by_range =
                    earliest.is_none_or(|e| birth >= e) && latest.is_none_or(|l| birth <= l);
                assert_eq!(by_age, by_range, "born {birth}, today {today}");
                match birth.succ_opt() {
                    Some(next) => birth = next,
                    None => break,
                }
            }
        }
        let none = PatientFilter {
            age_min: Some(50),
            age_max: Some(40),
            ..Default::default()
        };
        assert!(none.birth_range(today()).is_none());
    }

    #[test]
    fn language_visit_window_and_consent() {
        let mut p = patient("a");
        let langs = PatientFilter {
            languages: vec!["ta".into(), "hi".into()],
            ..Default::default()
        };
        assert!(langs.matches(&p, today()));
        let visit = |from, to| PatientFilter {
            last_visit_from_ms: from,
            last_visit_to_ms: to,
            ..Default::default()
        };
        assert!(visit(Some(1_000), Some(1_001)).matches(&p, today()));
        assert!(!visit(None, Some(1_000)).matches(&p, today()), "[from, to)");
        let promo = PatientFilter {
            consent: Some(Purpose::Promotional),
            ..Default::default()
        };
        assert!(!promo.matches(&p, today()));
        p.consent.promotional = ConsentState::new(true, 5, "api");
        assert!(promo.matches(&p, today()));
        p.language = None;
        assert!(!langs.matches(&p, today()));
        p.last_visit_ms = None;
        assert!(!visit(Some(0), None).matches(&p, today()));
    }

    #[test]
    fn filters_normalise_like_records_and_reject_unknown_fields() {
        let f: PatientFilter = serde_json::from_str(
            r#"{"tags_all": [" Diabetic "], "conditions_any": ["e11"], "consent": "promotional"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = f.normalised();
        assert_eq!(f.tags_all, vec!["diabetic"]);
        assert_eq!(f.conditions_any, vec!["E11"]);
        assert_eq!(f.consent, Some(Purpose::Promotional));
        assert!(serde_json::from_str::<PatientFilter>(r#"{"tag": ["x"]}"#).is_err());
    }
}
