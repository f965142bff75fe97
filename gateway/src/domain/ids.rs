//! Identifiers. Message ids are prefixed, sortable ULIDs (`msg_01J…`).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {why}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// Letters, digits, `_` and `-`, 1 to 64 characters: safe inside Redis keys and URLs.
fn is_key_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! key_safe_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_key_safe(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError { what: $what, value: s.chars().take(80).collect(), why: "use 1 to 64 letters, digits, _ or -" })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

key_safe_id!(
    /// A clinic (tenant).
    TenantId,
    "tenant id"
);
key_safe_id!(
    /// Meta's id of a business phone number (digits).
    PhoneNumberId,
    "phone number id"
);
key_safe_id!(
    /// An outbound message: `msg_` + ULID.
    MessageId,
    "message id"
);

impl MessageId {
    pub fn generate() -> Self {
        Self(format!("msg_{}", ulid::Ulid::new()))
    }

    /// Parses an id as given by a client or echoed by Meta: must look like one we issued.
    pub fn parse_issued(s: &str) -> Result<Self, IdError> {
        let ok = s
            .strip_prefix("msg_")
            .is_some_and(|u| u.parse::<ulid::Ulid>().is_ok());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                what: "message id",
                value: s.chars().take(80).collect(),
                why: "expected msg_ followed by a ULID",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_key_safe() {
        assert!(TenantId::parse("clinic_1").is_ok());
        assert!(TenantId::parse("a:b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn message_ids_sort_by_creation() {
        let a = MessageId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::generate();
        assert!(a < b);
        assert!(MessageId::parse_issued(a.as_str()).is_ok());
        assert!(MessageId::parse_issued("msg_nope").is_err());
        assert!(MessageId::parse_issued("apt_01JDEXAMPLE").is_err());
    }
}
