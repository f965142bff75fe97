//! Pure decisions of a broadcast: who is skipped and why, each recipient's parameters and
//! language, and the dry-run estimates.

use std::collections::{BTreeMap, HashSet};

use super::model::{ParamSource, SkipReason, Target};
use crate::domain::E164;

/// What the plan knows about one candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub phone: Result<E164, String>,
    pub name: String,
    pub external_id: Option<String>,
    pub language: Option<String>,
    /// Consent for the purpose the template needs (`true` when not known to be refused and the
    /// purpose is care).
    pub consented: bool,
    pub opted_out: bool,
    pub not_on_whatsapp: bool,
    /// Until when the patient's customer-service window is open (read with `opted_out`).
    pub window_until: Option<i64>,
    /// Explicit per-recipient parameters (a listed recipient's own).
    pub own_parameters: Option<Vec<String>>,
}

/// The resolved audience: who gets it (in order) and who does not, by reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub targets: Vec<Target>,
    /// Each target's window as read when resolving, in `targets` order (for the estimate).
    pub window_until: Vec<Option<i64>>,
    pub skipped: BTreeMap<SkipReason, u64>,
}

fn field(c: &Candidate, name: &str) -> Option<String> {
    let v = match name {
        "name" => Some(c.name.clone()),
        "first_name" => c.name.split_whitespace().next().map(str::to_owned),
        "external_id" => c.external_id.clone(),
        "language" => c.language.clone(),
        _ => None,
    };
    v.filter(|s| !s.trim().is_empty())
}

fn parameters(c: &Candidate, sources: &[ParamSource]) -> Option<Vec<String>> {
    if let Some(own) = &c.own_parameters {
        return (own.len() == sources.len() || sources.is_empty())
            .then(|| own.clone())
            .filter(|p| p.iter().all(|v| !v.trim().is_empty()));
    }
    sources
        .iter()
        .map(|s| match s {
            ParamSource::Value { value } => Some(value.clone()),
            ParamSource::Field { field: f } => field(c, f),
        })
        .collect()
}

/// Picks each candidate's fate. `languages` are the languages the template exists in;
/// `fallback` is the broadcast's own.
pub fn resolve(
    candidates: impl IntoIterator<Item = Candidate>,
    sources: &[ParamSource],
    languages: &HashSet<String>,
    fallback: &str,
) -> Resolved {
    let mut out = Resolved::default();
    let mut seen = HashSet::new();
    for c in candidates {
        let skip = |out: &mut Resolved, r| *out.skipped.entry(r).or_insert(0) += 1;
        let phone = match &c.phone {
            Ok(p) => p.clone(),
            Err(_) => {
                skip(&mut out, SkipReason::InvalidPhone);
                continue;
            }
        };
        if !seen.insert(phone.clone()) {
            skip(&mut out, SkipReason::Duplicate);
            continue;
        }
        if c.opted_out {
            skip(&mut out, SkipReason::OptedOut);
            continue;
        }
        if !c.consented {
            skip(&mut out, SkipReason::NoConsent);
            continue;
        }
        if c.not_on_whatsapp {
            skip(&mut out, SkipReason::NotOnWhatsapp);
            continue;
        }
        let Some(parameters) = parameters(&c, sources) else {
            skip(&mut out, SkipReason::MissingParameter);
            continue;
        };
        let language = c
            .language
            .clone()
            .filter(|l| languages.contains(l))
            .unwrap_or_else(|| fallback.to_owned());
        out.targets.push(Target {
            phone,
            language,
            parameters,
        });
        out.window_until.push(c.window_until);
    }
    out
}

/// Seconds to send `n` messages at a number's tier, paced at `headroom` of it.
pub fn duration_secs(n: u64, tier_mps: u32, headroom: f64) -> f64 {
    if tier_mps == 0 {
        return 0.0;
    }
    n as f64 / (f64::from(tier_mps) * headroom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(phone: &str, name: &str) -> Candidate {
        Candidate {
            phone: E164::parse(phone).map_err(|e| e.to_string()),
            name: name.into(),
            external_id: Some(format!("P-{phone}")),
            language: Some("hi".into()),
            consented: true,
            opted_out: false,
            not_on_whatsapp: false,
            window_until: None,
            own_parameters: None,
        }
    }

    #[test]
    fn skips_with_reasons_and_fills_parameters() {
        let sources = vec![
            ParamSource::Field {
                field: "first_name".into(),
            },
            ParamSource::Value {
                value: "Saturday".into(),
            },
        ];
        let langs: HashSet<String> = ["en".to_owned()].into();
        let mut opted = cand("+919800000002", "Ravi");
        opted.opted_out = true;
        let mut no_consent = cand("+919800000003", "Sita");
        no_consent.consented = false;
        let mut gone = cand("+919800000004", "Om");
        gone.not_on_whatsapp = true;
        let r = resolve(
            vec![
                cand("+919800000001", "Asha Rao"),
                cand("+919800000001", "Asha again"),
                opted,
                no_consent,
                gone,
                cand("12", "Bad"),
                cand("+919800000005", " "),
            ],
            &sources,
            &langs,
            "en",
        );
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.targets[0].parameters, vec!["Asha", "Saturday"]);
        assert_eq!(
            r.targets[0].language, "en",
            "no Hindi version: the broadcast's language"
        );
        let s = |k| r.skipped.get(&k).copied().unwrap_or(0);
        assert_eq!(
            [
                s(SkipReason::Duplicate),
                s(SkipReason::OptedOut),
                s(SkipReason::NoConsent),
                s(SkipReason::NotOnWhatsapp),
                s(SkipReason::InvalidPhone),
                s(SkipReason::MissingParameter)
            ],
            [1, 1, 1, 1, 1, 1]
        );
    }

    #[test]
    fn listed_parameters_win_and_durations_follow_the_tier() {
        let mut c = cand("+919800000001", "Asha");
        c.own_parameters = Some(vec!["A".into(), "B".into()]);
        let langs: HashSet<String> = ["hi".to_owned()].into();
        let r = resolve(
            vec![c],
            &[
                ParamSource::Field {
                    field: "name".into(),
                },
                ParamSource::Value { value: "x".into() },
            ],
            &langs,
            "en",
        );
        assert_eq!(r.targets[0].parameters, vec!["A", "B"]);
        assert_eq!(r.targets[0].language, "hi");
        assert!((duration_secs(100_000, 1_000, 0.9) - 111.11).abs() < 0.01);
    }
}
