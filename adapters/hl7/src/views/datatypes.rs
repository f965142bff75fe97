//! Composite data types shared by several views (HD, CE/CWE, XPN, XCN, PL).

use crate::message::{Component, Field, Repetition};
use crate::views::text;

/// HD: namespace id ^ universal id ^ universal id type (MSH-3/4, PL facility).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HierarchicDesignator {
    /// HD.1
    pub namespace_id: Option<String>,
    /// HD.2
    pub universal_id: Option<String>,
    /// HD.3
    pub universal_id_type: Option<String>,
}

impl HierarchicDesignator {
    pub(crate) fn from_field(field: Option<&Field>) -> Option<Self> {
        let rep = field?.repetition(1)?;
        let hd = Self {
            namespace_id: text(rep.component_value(1)),
            universal_id: text(rep.component_value(2)),
            universal_id_type: text(rep.component_value(3)),
        };
        (hd != Self::default()).then_some(hd)
    }

    /// HD as found inside a component (sub-components), e.g. PL.4.
    pub(crate) fn from_component(comp: Option<&Component>) -> Option<Self> {
        let comp = comp?;
        let hd = Self {
            namespace_id: text(comp.subcomponent(1).unwrap_or_default()),
            universal_id: text(comp.subcomponent(2).unwrap_or_default()),
            universal_id_type: text(comp.subcomponent(3).unwrap_or_default()),
        };
        (hd != Self::default()).then_some(hd)
    }

    /// The namespace id, else the universal id: what to use as a key.
    pub fn key(&self) -> Option<&str> {
        self.namespace_id
            .as_deref()
            .or(self.universal_id.as_deref())
    }
}

/// CE/CWE: identifier ^ text ^ coding system.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coded {
    /// Code.
    pub identifier: Option<String>,
    /// Human-readable text.
    pub text: Option<String>,
    /// Coding system name.
    pub coding_system: Option<String>,
}

impl Coded {
    pub(crate) fn from_field(field: Option<&Field>) -> Option<Self> {
        Self::from_repetition(field?.repetition(1)?)
    }

    pub(crate) fn from_repetition(rep: &Repetition) -> Option<Self> {
        let c = Self {
            identifier: text(rep.component_value(1)),
            text: text(rep.component_value(2)),
            coding_system: text(rep.component_value(3)),
        };
        (c != Self::default()).then_some(c)
    }

    /// The text, else the code.
    pub fn display(&self) -> Option<&str> {
        self.text.as_deref().or(self.identifier.as_deref())
    }
}

/// A person's name (XPN, or the name part of XCN).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonName {
    /// Family name (surname).
    pub family: Option<String>,
    /// Given name.
    pub given: Option<String>,
    /// Second and further given names or initials.
    pub middle: Option<String>,
    /// Suffix (JR, III).
    pub suffix: Option<String>,
    /// Prefix (DR, Mrs).
    pub prefix: Option<String>,
    /// Degree (MD, MBBS).
    pub degree: Option<String>,
}

impl PersonName {
    /// Reads the name starting at component `first` (1 for XPN, 2 for XCN). The family name may
    /// carry sub-components (v2.5 FN); only the surname is kept.
    pub(crate) fn from_repetition(rep: &Repetition, first: usize) -> Option<Self> {
        let at = |offset: usize| text(rep.component_value(first + offset));
        let name = Self {
            family: at(0),
            given: at(1),
            middle: at(2),
            suffix: at(3),
            prefix: at(4),
            degree: at(5),
        };
        (name != Self::default()).then_some(name)
    }

    /// "Prefix Given Middle Family Suffix", skipping absent parts.
    pub fn display(&self) -> String {
        [
            &self.prefix,
            &self.given,
            &self.middle,
            &self.family,
            &self.suffix,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// XCN: a practitioner (AIP-3, PV1-7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Practitioner {
    /// XCN.1 id.
    pub id: Option<String>,
    /// XCN.2–7.
    pub name: Option<PersonName>,
}

impl Practitioner {
    pub(crate) fn from_field(field: Option<&Field>) -> Option<Self> {
        let rep = field?.repetitions().iter().find(|r| !r.is_empty())?;
        Some(Self {
            id: text(rep.component_value(1)),
            name: PersonName::from_repetition(rep, 2),
        })
    }
}

/// PL: a place (AIL-3, PV1-3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// PL.1 point of care (clinic, ward).
    pub point_of_care: Option<String>,
    /// PL.2 room.
    pub room: Option<String>,
    /// PL.3 bed.
    pub bed: Option<String>,
    /// PL.4 facility.
    pub facility: Option<HierarchicDesignator>,
    /// PL.7 building.
    pub building: Option<String>,
    /// PL.8 floor.
    pub floor: Option<String>,
    /// PL.9 description.
    pub description: Option<String>,
}

impl Location {
    pub(crate) fn from_field(field: Option<&Field>) -> Option<Self> {
        let rep = field?.repetition(1)?;
        let loc = Self {
            point_of_care: text(rep.component_value(1)),
            room: text(rep.component_value(2)),
            bed: text(rep.component_value(3)),
            facility: HierarchicDesignator::from_component(rep.component(4)),
            building: text(rep.component_value(7)),
            floor: text(rep.component_value(8)),
            description: text(rep.component_value(9)),
        };
        (loc != Self::default()).then_some(loc)
    }
}
