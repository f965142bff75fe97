//! MSH-18 character sets: how bytes on the wire become text and back.

use std::borrow::Cow;

use crate::error::ParseError;

/// The character set a message declares in MSH-18 (first repetition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// MSH-18 empty. Read as UTF-8, falling back to Latin-1 because undeclared Latin-1 is common.
    #[default]
    Undeclared,
    /// `ASCII`. Read leniently like `Undeclared`: senders that declare ASCII still send accents.
    Ascii,
    /// `8859/1`.
    Latin1,
    /// `UNICODE UTF-8` (also `UTF-8`, and the ambiguous `UNICODE`, which senders use for UTF-8).
    Utf8,
}

impl Charset {
    /// Reads an MSH-18 value.
    pub fn from_msh18(value: &str) -> Result<Self, ParseError> {
        let v = value.trim().to_ascii_uppercase();
        match v.as_str() {
            "" => Ok(Self::Undeclared),
            "ASCII" | "US-ASCII" => Ok(Self::Ascii),
            "8859/1" | "ISO-8859-1" | "ISO8859-1" | "ISO_IR 100" | "LATIN1" => Ok(Self::Latin1),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" | "UNICODE" | "ISO_IR 192" => Ok(Self::Utf8),
            _ => Err(ParseError::UnsupportedCharset {
                value: value.to_string(),
            }),
        }
    }

    /// The MSH-18 value to write for this set (empty when undeclared).
    pub fn msh18(self) -> &'static str {
        match self {
            Self::Undeclared => "",
            Self::Ascii => "ASCII",
            Self::Latin1 => "8859/1",
            Self::Utf8 => "UNICODE UTF-8",
        }
    }

    /// Bytes to text. Never fails: invalid UTF-8 is read as Latin-1, where every byte is a char.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Self::Latin1 => Cow::Owned(latin1_to_string(bytes)),
            Self::Undeclared | Self::Ascii | Self::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(latin1_to_string(bytes)),
            },
        }
    }

    /// Text to bytes. Latin-1 cannot hold characters above U+00FF; they become `?`.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Self::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
            Self::Undeclared | Self::Ascii | Self::Utf8 => text.as_bytes().to_vec(),
        }
    }
}

fn latin1_to_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Charset::from_msh18("8859/1").unwrap(), Charset::Latin1);
        assert_eq!(Charset::from_msh18("unicode utf-8").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("").unwrap(), Charset::Undeclared);
        assert!(matches!(
            Charset::from_msh18("ISO IR87"),
            Err(ParseError::UnsupportedCharset { .. })
        ));
    }

    #[test]
    fn decode_and_fallback() {
        assert_eq!(Charset::Latin1.decode(b"Jos\xe9"), "José");
        assert_eq!(Charset::Undeclared.decode("José".as_bytes()), "José");
        assert_eq!(Charset::Undeclared.decode(b"Jos\xe9"), "José");
        assert_eq!(Charset::Latin1.encode("José €"), b"Jos\xe9 ?");
    }
}
