//! A clinic's patients as compact entries for filtering in memory.
//!
//! Each patient is one [`Entry`] (56 bytes: phone as an integer, language id, birth date as a day
//! number, sex, consent flags, last visit, and tags and conditions as 64-bit sets over the
//! clinic's own dictionaries, with a short list for ids past 64) keyed by the external id in a
//! B-tree, which keeps the stable id order for free. Measured cost: about 160 bytes per patient
//! with 11-character ids (see BENCHMARKS.md, "Patient directory"); names, consent sources and
//! everything else stay in Redis and are fetched only for the matches. The index is loaded from
//! the records' index entries ([`entry_of`], stored beside each record), not the records.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use super::filter::PatientFilter;
use super::{PatientRecord, Sex};

/// Set in an extra id: the id is a condition's (else a tag's).
const COND: u32 = 1 << 31;
const NO_BIRTH: i32 = i32::MIN;
const NO_VISIT: i64 = i64::MIN;
const CARE: u8 = 1;
const PROMOTIONAL: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("record {id}: {why}")]
    Unreadable { id: String, why: String },
    #[error("the clinic uses more distinct {0} than the index can hold")]
    Full(&'static str),
}

/// Strings to small ids, per clinic. Entries are never removed (a tag nobody has any more costs
/// its name once).
#[derive(Debug, Default)]
struct Dict {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Dict {
    fn id(&mut self, s: &str, max: u32) -> Option<u32> {
        if let Some(id) = self.ids.get(s) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len())
            .ok()
            .filter(|id| *id < max)?;
        self.ids.insert(s.into(), id);
        self.names.push(s.into());
        Some(id)
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }

    fn with_prefix(&self, prefix: &str) -> impl Iterator<Item = u32> + '_ {
        let prefix = prefix.to_owned();
        self.ids
            .iter()
            .filter(move |(name, _)| name.starts_with(prefix.as_str()))
            .map(|(_, id)| *id)
    }
}

/// One patient, compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// E.164 digits as a number (at most 15 digits).
    phone: u64,
    last_visit_ms: i64,
    /// Bit `i`: tag id `i` (ids below 64).
    tags: u64,
    /// Bit `i`: condition id `i` (ids below 64).
    conditions: u64,
    /// Sorted ids of 64 and above: tags as they are, conditions with [`COND`] set.
    extra: Option<Box<[u32]>>,
    /// Days since 0001-01-01 (`NO_BIRTH` if unknown).
    birth: i32,
    /// Language id + 1 (0 if unknown).
    language: u16,
    sex: u8,
    /// [`CARE`], [`PROMOTIONAL`].
    flags: u8,
}

impl Entry {
    fn has_extra(&self, id: u32) -> bool {
        self.extra
            .as_deref()
            .is_some_and(|e| e.binary_search(&id).is_ok())
    }

    pub fn phone_digits(&self) -> u64 {
        self.phone
    }
}

/// A record's index entry as stored beside it: the fields filters read, as a compact JSON array
/// `[phone digits, language, birth day number, sex, [tags], [conditions], last visit ms, care,
/// promotional]` (about 60 to 100 bytes), so loading an index reads a fraction of the records.
pub fn entry_of(p: &PatientRecord) -> String {
    let row = (
        p.phone.digits(),
        p.language.as_deref(),
        p.birth_date.map(|d| d.num_days_from_ce()),
        p.sex,
        &p.tags,
        &p.conditions,
        p.last_visit_ms,
        p.consent.care.granted,
        p.consent.promotional.granted,
    );
    // A tuple of plain values always serialises.
    serde_json::to_string(&row).unwrap_or_default()
}

/// An index entry as read back (strings borrowed when they need no unescaping).
#[derive(Deserialize)]
struct View<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Option<Label<'a>>,
    Option<i32>,
    Option<Sex>,
    #[serde(borrow)] Vec<Label<'a>>,
    #[serde(borrow)] Vec<Label<'a>>,
    Option<i64>,
    bool,
    bool,
);

#[derive(Deserialize)]
struct Label<'a>(#[serde(borrow)] Cow<'a, str>);

/// A filter translated to the clinic's dictionaries and day numbers.
#[derive(Debug, Default)]
pub struct Compiled {
    flags: u8,
    tags_all: u64,
    tags_all_extra: Vec<u32>,
    tags_any: Option<(u64, Vec<u32>)>,
    conditions_any: Option<(u64, Vec<u32>)>,
    languages: Option<Vec<u16>>,
    birth: Option<(i32, i32)>,
    visit: Option<(i64, i64)>,
}

fn split_ids(ids: impl IntoIterator<Item = u32>, cond: bool) -> (u64, Vec<u32>) {
    let mut bits = 0u64;
    let mut extra = Vec::new();
    for id in ids {
        if id < 64 {
            bits |= 1 << id;
        } else {
            extra.push(if cond { id | COND } else { id });
        }
    }
    extra.sort_unstable();
    extra.dedup();
    (bits, extra)
}

impl Compiled {
    #[inline]
    pub fn matches(&self, e: &Entry) -> bool {
        if e.flags & self.flags != self.flags || e.tags & self.tags_all != self.tags_all {
            return false;
        }
        if !self.tags_all_extra.iter().all(|id| e.has_extra(*id)) {
            return false;
        }
        if let Some((bits, extra)) = &self.tags_any {
            if e.tags & bits == 0 && !extra.iter().any(|id| e.has_extra(*id)) {
                return false;
            }
        }
        if let Some((bits, extra)) = &self.conditions_any {
            if e.conditions & bits == 0 && !extra.iter().any(|id| e.has_extra(*id)) {
                return false;
            }
        }
        if let Some(langs) = &self.languages {
            if !langs.contains(&e.language) {
                return false;
            }
        }
        if let Some((from, to)) = self.birth {
            if e.birth == NO_BIRTH || e.birth < from || e.birth > to {
                return false;
            }
        }
        if let Some((from, to)) = self.visit {
            if e.last_visit_ms == NO_VISIT || e.last_visit_ms < from || e.last_visit_ms >= to {
                return false;
            }
        }
        true
    }
}

/// A clinic's index: entries by external id and the dictionaries they refer to.
#[derive(Debug, Default)]
pub struct ClinicIndex {
    /// The clinic's feed version the index reflects.
    pub version: u64,
    entries: BTreeMap<Box<str>, Entry>,
    tags: Dict,
    conditions: Dict,
    languages: Dict,
}

impl ClinicIndex {
    pub fn new(version: u64) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds or replaces a patient from its record.
    pub fn put_record(&mut self, p: &PatientRecord) -> Result<(), IndexError> {
        self.put_entry(&p.external_id, &entry_of(p))
    }

    /// Adds or replaces a patient from its stored index entry ([`entry_of`]).
    pub fn put_entry(&mut self, id: &str, entry: &str) -> Result<(), IndexError> {
        let unreadable = |why: String| IndexError::Unreadable {
            id: id.chars().take(64).collect(),
            why,
        };
        let View(phone, language, birth, sex, tags, conditions, last_visit, care, promotional) =
            serde_json::from_str(entry).map_err(|e| unreadable(e.to_string()))?;
        let phone = Some(phone.as_ref())
            .filter(|d| (1..=15).contains(&d.len()))
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| unreadable("phone is not E.164".into()))?;
        let language = match &language {
            Some(Label(l)) => {
                let id = self
                    .languages
                    .id(l, u32::from(u16::MAX) - 1)
                    .ok_or(IndexError::Full("languages"))?;
                u16::try_from(id + 1).map_err(|_| IndexError::Full("languages"))?
            }
            None => 0,
        };
        let mut tag_ids = Vec::with_capacity(tags.len());
        for Label(t) in &tags {
            tag_ids.push(self.tags.id(t, COND).ok_or(IndexError::Full("tags"))?);
        }
        let mut cond_ids = Vec::with_capacity(conditions.len());
        for Label(c) in &conditions {
            cond_ids.push(
                self.conditions
                    .id(c, COND)
                    .ok_or(IndexError::Full("conditions"))?,
            );
        }
        let (tags, mut extra) = split_ids(tag_ids, false);
        let (conditions, cond_extra) = split_ids(cond_ids, true);
        extra.extend(cond_extra);
        extra.sort_unstable();
        let entry = Entry {
            phone,
            last_visit_ms: last_visit.unwrap_or(NO_VISIT),
            tags,
            conditions,
            extra: (!extra.is_empty()).then(|| extra.into_boxed_slice()),
            birth: birth.unwrap_or(NO_BIRTH),
            language,
            sex: sex.map_or(0, |s| s as u8 + 1),
            flags: if care { CARE } else { 0 } | if promotional { PROMOTIONAL } else { 0 },
        };
        match self.entries.get_mut(id) {
            Some(e) => *e = entry,
            None => {
                self.entries.insert(id.into(), entry);
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// The filter in this index's terms; `None` if nobody can match (e.g. a tag nobody has).
    pub fn compile(&self, f: &PatientFilter, today: NaiveDate) -> Option<Compiled> {
        let mut c = Compiled::default();
        if let Some(p) = f.consent {
            c.flags = match p {
                super::Purpose::Care => CARE,
                super::Purpose::Promotional => PROMOTIONAL,
            };
        }
        let mut all = Vec::with_capacity(f.tags_all.len());
        for t in &f.tags_all {
            all.push(self.tags.get(t)?);
        }
        (c.tags_all, c.tags_all_extra) = split_ids(all, false);
        if !f.tags_any.is_empty() {
            let ids: Vec<u32> = f.tags_any.iter().filter_map(|t| self.tags.get(t)).collect();
            if ids.is_empty() {
                return None;
            }
            c.tags_any = Some(split_ids(ids, false));
        }
        if !f.conditions_any.is_empty() {
            let ids: Vec<u32> = f
                .conditions_any
                .iter()
                .flat_map(|code| self.conditions.with_prefix(code))
                .collect();
            if ids.is_empty() {
                return None;
            }
            c.conditions_any = Some(split_ids(ids, true));
        }
        if !f.languages.is_empty() {
            let ids: Vec<u16> = f
                .languages
                .iter()
                .filter_map(|l| self.languages.get(l))
                .filter_map(|id| u16::try_from(id + 1).ok())
                .collect();
            if ids.is_empty() {
                return None;
            }
            c.languages = Some(ids);
        }
        if f.age_min.is_some() || f.age_max.is_some() {
            let (earliest, latest) = f.birth_range(today)?;
            c.birth = Some((
                earliest.map_or(NO_BIRTH + 1, |d| d.num_days_from_ce()),
                latest.map_or(i32::MAX, |d| d.num_days_from_ce()),
            ));
        }
        if f.last_visit_from_ms.is_some() || f.last_visit_to_ms.is_some() {
            let from = f
                .last_visit_from_ms
                .unwrap_or(NO_VISIT + 1)
                .max(NO_VISIT + 1);
            let to = f.last_visit_to_ms.unwrap_or(i64::MAX);
            if from >= to {
                return None;
            }
            c.visit = Some((from, to));
        }
        Some(c)
    }

    /// Entries matching, in external id order, starting after `after` when given.
    pub fn select<'a, 'c>(
        &'a self,
        c: &'c Compiled,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'c
    where
        'a: 'c,
    {
        let range = match after {
            Some(a) => self
                .entries
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.entries.range::<str, _>(..),
        };
        range
            .filter(move |(_, e)| c.matches(e))
            .map(|(id, e)| (&**id, e))
    }

    /// The language code of an entry.
    pub fn language_of(&self, e: &Entry) -> Option<&str> {
        e.language
            .checked_sub(1)
            .and_then(|id| self.languages.name(u32::from(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::E164;
    use crate::patients::{ConsentState, PatientRecord, Purpose};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_else(|| panic!("{y}-{m}-{day}"))
    }

    /// A deterministic spread of patients: every combination the filters care about, and more
    /// than 64 distinct tags and conditions so the extra lists are exercised.
    fn population(n: u64) -> Vec<PatientRecord> {
        let tags = ["diabetic", "antenatal", "hypertensive", "asthma", "senior"];
        let langs = ["en", "hi", "ta", "te"];
        (0..n)
            .map(|i| {
                let phone =
                    E164::parse(&format!("+9198{:08}", i)).unwrap_or_else(|e| panic!("{e}"));
                let mut p = PatientRecord::new(format!("P{i:05}"), phone);
                p.tags = tags
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| (i >> k) & 1 == 1)
                    .map(|(_, t)| t.to_string())
                    .collect();
                p.tags.push(format!("camp-{}", i % 97));
                p.conditions = vec![format!("E1{}.{}", i % 5, i % 3), format!("Z{:02}", i % 80)];
                p.language = (i % 5 != 0).then(|| langs[(i % 4) as usize].to_owned());
                p.birth_date = (i % 7 != 0).then(|| {
                    d(
                        1940 + (i % 80) as i32,
                        1 + (i % 12) as u32,
                        1 + (i % 28) as u32,
                    )
                });
                p.last_visit_ms = (i % 3 != 0).then_some((i as i64) * 1_000);
                p.consent.promotional = ConsentState::new(i % 2 == 0, 1, "api");
                p.consent.care = ConsentState::new(i % 11 != 0, 1, "api");
                p.normalise();
                p
            })
            .collect()
    }

    fn index_of(ps: &[PatientRecord]) -> ClinicIndex {
        let mut ix = ClinicIndex::new(0);
        for p in ps {
            ix.put_record(p).unwrap_or_else(|e| panic!("{e}"));
        }
        ix
    }

    fn filters() -> Vec<PatientFilter> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        vec![
            PatientFilter::default(),
            PatientFilter {
                tags_all: s(&["diabetic"]),
                age_min: Some(40),
                age_max: Some(70),
                consent: Some(Purpose::Promotional),
                ..Default::default()
            },
            PatientFilter {
                tags_all: s(&["diabetic", "camp-90"]),
                ..Default::default()
            },
            PatientFilter {
                tags_any: s(&["camp-70", "asthma", "nobody"]),
                languages: s(&["ta", "hi"]),
                ..Default::default()
            },
            PatientFilter {
                conditions_any: s(&["E12", "Z79"]),
                consent: Some(Purpose::Care),
                ..Default::default()
            },
            PatientFilter {
                conditions_any: s(&["E1"]),
                last_visit_from_ms: Some(100_000),
                last_visit_to_ms: Some(400_000),
                ..Default::default()
            },
            PatientFilter {
                age_max: Some(30),
                ..Default::default()
            },
            PatientFilter {
                tags_all: s(&["nobody"]),
                ..Default::default()
            },
            PatientFilter {
                languages: s(&["fr"]),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn the_index_agrees_with_the_reference_filter() {
        let ps = population(1_500);
        let ix = index_of(&ps);
        assert_eq!(ix.len(), 1_500);
        let today = d(2026, 3, 1);
        for f in filters() {
            let f = f.normalised();
            let want: Vec<&str> = ps
                .iter()
                .filter(|p| f.matches(p, today))
                .map(|p| p.external_id.as_str())
                .collect();
            let got: Vec<&str> = match ix.compile(&f, today) {
                Some(c) => ix.select(&c, None).map(|(id, _)| id).collect(),
                None => Vec::new(),
            };
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn replace_remove_and_page_after_an_id() {
        let mut ps = population(10);
        let mut ix = index_of(&ps);
        ps[3].tags = vec!["moved".into()];
        ix.put_record(&ps[3]).unwrap_or_else(|e| panic!("{e}"));
        ix.remove("P00004");
        let f = PatientFilter {
            tags_any: vec!["moved".into()],
            ..Default::default()
        };
        let today = d(2026, 1, 1);
        let c = ix
            .compile(&f, today)
            .unwrap_or_else(|| panic!("moved is known"));
        assert_eq!(ix.select(&c, None).count(), 1);
        let all = Compiled::default();
        let ids: Vec<&str> = ix.select(&all, Some("P00002")).map(|(id, _)| id).collect();
        assert_eq!(ids.first().copied(), Some("P00003"));
        assert!(!ids.contains(&"P00004"));
        assert_eq!(ix.len(), 9);
        let (_, e) = ix.select(&all, None).next().unwrap_or_else(|| panic!());
        assert_eq!(e.phone_digits(), 919_800_000_000);
        assert_eq!(ix.language_of(e), None, "P00000 has no language");
    }

    #[test]
    fn unreadable_entries_are_an_error_not_a_panic() {
        let mut ix = ClinicIndex::new(0);
        assert!(ix.put_entry("x", "[").is_err());
        assert!(ix.put_entry("x", r#"{"phone": "12"}"#).is_err());
        assert!(ix
            .put_entry("x", r#"["91abc",null,null,null,[],[],null,true,false]"#)
            .is_err());
        assert!(ix.is_empty());
        assert!(ix
            .put_entry(
                "x",
                r#"["919800000001",null,null,null,[],[],null,true,false]"#
            )
            .is_ok());
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn entries_stay_compact() {
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
