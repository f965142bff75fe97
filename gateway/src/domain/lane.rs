//! Priority lanes of a business number's queue.

use serde::{Deserialize, Serialize};

/// `care` (clinical results, prescriptions, replies) before `reminders` before `bulk` (broadcasts).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    #[default]
    Care,
    Reminders,
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Care, Lane::Reminders, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Care => "care",
            Lane::Reminders => "reminders",
            Lane::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
