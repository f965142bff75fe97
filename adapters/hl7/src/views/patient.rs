//! PID: identifiers, name, phone numbers and language. Shared by every view.

use crate::message::{Message, Repetition, Segment};
use crate::views::{text, Coded, PersonName};

/// One PID-3 identifier (CX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientIdentifier {
    /// CX.1.
    pub id: String,
    /// CX.4.1 assigning authority.
    pub assigning_authority: Option<String>,
    /// CX.5 identifier type (MR, PI, AN, …).
    pub type_code: Option<String>,
}

/// One PID-13 telephone entry (XTN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// The number as digits with a leading `+` when a country code was given; `None` for entries
    /// that carry only an e-mail address.
    pub number: Option<String>,
    /// XTN.2 use code (PRN primary residence, ORN other residence, WPN work, NET e-mail).
    pub use_code: Option<String>,
    /// XTN.3 equipment type (CP cellular, PH telephone, FX fax, Internet).
    pub equipment: Option<String>,
    /// XTN.4 e-mail address.
    pub email: Option<String>,
}

impl Phone {
    /// Equipment type CP.
    pub fn is_mobile(&self) -> bool {
        self.equipment
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("CP"))
    }

    /// Use code PRN or ORN (the patient's own numbers rather than work ones).
    pub fn is_residence(&self) -> bool {
        self.use_code
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("PRN") || u.eq_ignore_ascii_case("ORN"))
    }

    fn from_repetition(rep: &Repetition) -> Option<Self> {
        let phone = Self {
            number: xtn_number(rep),
            use_code: text(rep.component_value(2)),
            equipment: text(rep.component_value(3)),
            email: text(rep.component_value(4)),
        };
        (phone.number.is_some() || phone.email.is_some()).then_some(phone)
    }
}

/// The number in XTN.1, else XTN.5 (country) + 6 (area) + 7 (local), else XTN.12 (unformatted).
fn xtn_number(rep: &Repetition) -> Option<String> {
    if let Some(n) = clean_number(rep.component_value(1)) {
        return Some(n);
    }
    let local = digits(rep.component_value(7));
    if !local.is_empty() {
        let country = digits(rep.component_value(5));
        let area = digits(rep.component_value(6));
        let plus = if country.is_empty() { "" } else { "+" };
        return Some(format!("{plus}{country}{area}{local}"));
    }
    clean_number(rep.component_value(12))
}

/// Keeps a leading `+` and the digits, stopping at the old-style `X123` extension / `B` beeper /
/// `C` comment suffixes.
fn clean_number(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let main = raw
        .split(|c: char| c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    let d = digits(main);
    if d.is_empty() {
        return None;
    }
    Some(if main.starts_with('+') {
        format!("+{d}")
    } else {
        d
    })
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The patient as described by PID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    /// PID-3, in message order.
    pub identifiers: Vec<PatientIdentifier>,
    /// PID-5 (first non-empty repetition).
    pub name: Option<PersonName>,
    /// PID-7 as written.
    pub birth_date: Option<String>,
    /// PID-8.
    pub sex: Option<String>,
    /// PID-13, entries without a number or e-mail skipped.
    pub phones: Vec<Phone>,
    /// PID-15 primary language.
    pub language: Option<Coded>,
}

impl Patient {
    /// Reads the first PID segment; `None` when the message has none (allowed in SIU).
    pub fn from_message(msg: &Message) -> Option<Self> {
        msg.segment("PID").map(Self::from_segment)
    }

    /// Reads a PID segment.
    pub fn from_segment(pid: &Segment) -> Self {
        let reps = |n| pid.field(n).map(|f| f.repetitions()).unwrap_or_default();
        let identifiers = reps(3)
            .iter()
            .filter_map(|r| {
                Some(PatientIdentifier {
                    id: text(r.component_value(1))?,
                    assigning_authority: text(r.component_value(4)),
                    type_code: text(r.component_value(5)),
                })
            })
            .collect();
        let name = reps(5)
            .iter()
            .find_map(|r| PersonName::from_repetition(r, 1));
        Self {
            identifiers,
            name,
            birth_date: text(pid.value(7)),
            sex: text(pid.value(8)),
            phones: reps(13).iter().filter_map(Phone::from_repetition).collect(),
            language: pid
                .field(15)
                .and_then(|f| f.repetition(1))
                .and_then(Coded::from_repetition),
        }
    }

    /// The medical record number (type MR), else the first identifier.
    pub fn primary_identifier(&self) -> Option<&PatientIdentifier> {
        self.identifiers
            .iter()
            .find(|i| {
                i.type_code
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("MR"))
            })
            .or_else(|| self.identifiers.first())
    }

    /// The number to message: a mobile (CP) with a residence use code, else any mobile.
    pub fn mobile(&self) -> Option<&Phone> {
        let mobiles = || {
            self.phones
                .iter()
                .filter(|p| p.is_mobile() && p.number.is_some())
        };
        mobiles()
            .find(|p| p.is_residence())
            .or_else(|| mobiles().next())
    }

    /// [`Patient::mobile`], else a residence number, else the first number at all. Senders often
    /// leave XTN.3 empty, and in India a residence number is frequently a mobile.
    pub fn best_phone(&self) -> Option<&Phone> {
        let numbers = || self.phones.iter().filter(|p| p.number.is_some());
        self.mobile()
            .or_else(|| numbers().find(|p| p.is_residence()))
            .or_else(|| numbers().next())
    }

    /// PID-15.1, e.g. `hi` or `HIN`.
    pub fn language_code(&self) -> Option<&str> {
        self.language.as_ref()?.identifier.as_deref()
    }
}
