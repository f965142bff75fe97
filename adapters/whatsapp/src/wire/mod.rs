//! Serde models of the Cloud API. Unknown fields are ignored and unknown enum values land in an
//! `Unknown`/`Other` variant, so a field Meta adds tomorrow never breaks parsing.

pub mod management;
pub mod send;
pub mod webhook;

pub use management::*;
pub use send::*;
pub use webhook::*;

use serde::{Deserialize, Deserializer};

/// Meta sends some ids as JSON numbers (template ids) and others as strings: accept both.
pub(crate) fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
        I(i64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
        Id::I(n) => n.to_string(),
    })
}

pub(crate) fn opt_id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "id_string")] String);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}
