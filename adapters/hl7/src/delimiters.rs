//! The delimiter set a message declares in MSH-1 and MSH-2.

use crate::error::ParseError;

/// Field, component, repetition, escape and sub-component separators (plus the optional v2.7
/// truncation character). Always read from the message; `Default` is only for building new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    field: char,
    component: char,
    repetition: char,
    escape: char,
    subcomponent: char,
    truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Builds the set from MSH-1 and MSH-2. MSH-2 must hold component, repetition, escape and
    /// sub-component characters in that order, optionally followed by the truncation character.
    pub fn new(field: char, encoding_characters: &str) -> Result<Self, ParseError> {
        let invalid = |reason| ParseError::InvalidEncodingCharacters {
            value: format!("{field}{encoding_characters}"),
            reason,
        };
        let chars: Vec<char> = encoding_characters.chars().collect();
        if chars.len() < 4 {
            return Err(invalid("expected at least 4 encoding characters"));
        }
        if chars.len() > 5 {
            return Err(invalid("expected at most 5 encoding characters"));
        }
        let mut all = vec![field];
        all.extend(&chars);
        for (i, c) in all.iter().enumerate() {
            // Delimiters are located in raw bytes before the character set is known, so they
            // must be single-byte ASCII punctuation.
            if !c.is_ascii()
                || c.is_ascii_alphanumeric()
                || c.is_ascii_whitespace()
                || c.is_ascii_control()
            {
                return Err(invalid("delimiters must be ASCII punctuation"));
            }
            if all[..i].contains(c) {
                return Err(invalid("delimiters must be distinct"));
            }
        }
        Ok(Self {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
            truncation: chars.get(4).copied(),
        })
    }

    /// MSH-1.
    pub fn field(&self) -> char {
        self.field
    }
    /// Component separator (normally `^`).
    pub fn component(&self) -> char {
        self.component
    }
    /// Repetition separator (normally `~`).
    pub fn repetition(&self) -> char {
        self.repetition
    }
    /// Escape character (normally `\`).
    pub fn escape(&self) -> char {
        self.escape
    }
    /// Sub-component separator (normally `&`).
    pub fn subcomponent(&self) -> char {
        self.subcomponent
    }
    /// Truncation character (v2.7 `#`), when MSH-2 declares one.
    pub fn truncation(&self) -> Option<char> {
        self.truncation
    }

    /// MSH-2 as it is written on the wire.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// True when `c` must be escaped inside a value.
    pub(crate) fn is_special(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
            || c == '\r'
            || c == '\n'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_custom_sets() {
        let d = Delimiters::new('|', "^~\\&").unwrap();
        assert_eq!(d, Delimiters::default());
        let d = Delimiters::new('#', "*@!%$").unwrap();
        assert_eq!(d.component(), '*');
        assert_eq!(d.truncation(), Some('$'));
        assert_eq!(d.encoding_characters(), "*@!%$");
    }

    #[test]
    fn rejects_bad_sets() {
        assert!(Delimiters::new('|', "^~\\").is_err());
        assert!(Delimiters::new('|', "^~\\^").is_err());
        assert!(Delimiters::new('|', "^~\\a").is_err());
        assert!(Delimiters::new('|', "^~\\&#!").is_err());
        assert!(Delimiters::new('|', "^|\\&").is_err());
    }
}
