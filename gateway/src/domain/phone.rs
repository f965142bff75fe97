//! E.164 phone numbers, parsed once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error(
        "phone number may contain only digits, spaces, dashes, dots, parentheses and a leading +"
    )]
    BadCharacters,
    #[error("phone number needs a country code: start with + or use a 10-digit national number with a default country")]
    NoCountryCode,
    #[error("phone number must have 8 to 15 digits including the country code")]
    BadLength,
    #[error("a country code cannot start with 0")]
    LeadingZero,
}

/// A phone number in E.164: `+` and 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

impl E164 {
    /// Parses a number, normalising 10-digit national numbers (and a leading trunk `0`) with
    /// `default_country_code` (e.g. `"91"`): `98765 43210` → `+919876543210`.
    pub fn parse_with_default(
        s: &str,
        default_country_code: Option<&str>,
    ) -> Result<Self, PhoneError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(PhoneError::Empty);
        }
        let plus = t.starts_with('+') || t.starts_with("00");
        let mut digits = String::with_capacity(16);
        for (i, c) in t.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => {}
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneError::BadCharacters),
            }
        }
        let full = if t.starts_with("00") {
            digits[2..].to_owned()
        } else if plus {
            digits
        } else {
            let national = digits.strip_prefix('0').unwrap_or(&digits);
            match default_country_code {
                Some(cc) if national.len() == 10 => format!("{cc}{national}"),
                _ if digits.len() > 10 => digits,
                _ => return Err(PhoneError::NoCountryCode),
            }
        };
        if !(8..=15).contains(&full.len()) {
            return Err(PhoneError::BadLength);
        }
        if full.starts_with('0') {
            return Err(PhoneError::LeadingZero);
        }
        Ok(Self(format!("+{full}")))
    }

    /// Strict E.164 (`+` required).
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        if s.trim().is_empty() {
            return Err(PhoneError::Empty);
        }
        if !s.trim().starts_with('+') {
            return Err(PhoneError::NoCountryCode);
        }
        Self::parse_with_default(s, None)
    }

    /// Meta's `wa_id` / `from`: the full international number as digits, without `+`.
    pub fn from_wa_id(s: &str) -> Result<Self, PhoneError> {
        let t = s.trim();
        Self::parse(&format!("+{}", t.strip_prefix('+').unwrap_or(t)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits without `+`, as Meta's `wa_id` and `recipient_id` carry them.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// For logs: `+91******3210`. Never log a full number.
    pub fn masked(&self) -> String {
        let d = self.digits();
        let keep_head = d.len().min(2);
        let keep_tail = 4.min(d.len().saturating_sub(keep_head));
        let stars = d.len() - keep_head - keep_tail;
        format!(
            "+{}{}{}",
            &d[..keep_head],
            "*".repeat(stars),
            &d[d.len() - keep_tail..]
        )
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, PhoneError> {
        Self::parse(&s)
    }
}

impl From<E164> for String {
    fn from(v: E164) -> String {
        v.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wa_ids_are_international_without_the_plus() {
        assert_eq!(
            E164::from_wa_id("919876543210").map(|p| p.as_str().to_owned()),
            Ok("+919876543210".to_owned())
        );
        assert_eq!(
            E164::from_wa_id("+15551234567").map(|p| p.digits().len()),
            Ok(11)
        );
        assert!(E164::from_wa_id("12").is_err());
    }

    #[test]
    fn parses_international_and_national() {
        assert_eq!(
            E164::parse("+91 98765-43210").map(|p| p.0),
            Ok("+919876543210".into())
        );
        assert_eq!(
            E164::parse_with_default("9876543210", Some("91")).map(|p| p.0),
            Ok("+919876543210".into())
        );
        assert_eq!(
            E164::parse_with_default("09876543210", Some("91")).map(|p| p.0),
            Ok("+919876543210".into())
        );
        assert_eq!(
            E164::parse_with_default("0091 9876543210", None).map(|p| p.0),
            Ok("+919876543210".into())
        );
        assert_eq!(
            E164::parse_with_default("9876543210", None),
            Err(PhoneError::NoCountryCode)
        );
        assert_eq!(E164::parse("+91abc"), Err(PhoneError::BadCharacters));
        assert_eq!(E164::parse("+1234"), Err(PhoneError::BadLength));
        assert_eq!(E164::parse("+0123456789"), Err(PhoneError::LeadingZero));
        assert_eq!(E164::parse(""), Err(PhoneError::Empty));
    }

    #[test]
    fn masks_for_logs() {
        let p = E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.masked(), "+91******3210");
        assert_eq!(p.to_string(), "+91******3210");
        assert_eq!(p.digits(), "919876543210");
    }
}
