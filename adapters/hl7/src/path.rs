//! Path lookup such as `PID-13[2].1` or `OBX[3]-5.5`: segment (occurrence), field (repetition),
//! component, sub-component, all 1-based as in HL7 documentation.

use std::str::FromStr;

use crate::error::PathError;
use crate::message::Message;

/// A parsed path. Omitted parts default to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Segment id.
    pub segment: String,
    /// Which occurrence of the segment (`OBX[2]`).
    pub occurrence: usize,
    /// Field number (MSH-1 is the field separator).
    pub field: usize,
    /// Repetition (`PID-13[2]`).
    pub repetition: usize,
    /// Component.
    pub component: usize,
    /// Sub-component.
    pub subcomponent: usize,
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        let err = |reason| PathError {
            path: path.to_string(),
            reason,
        };
        let (seg_part, rest) = path
            .split_once('-')
            .ok_or_else(|| err("expected SEG-field"))?;
        let (segment, occurrence) =
            split_index(seg_part).ok_or_else(|| err("bad segment occurrence"))?;
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("segment id must be 3 letters or digits"));
        }
        let mut parts = rest.split('.');
        let field_part = parts.next().unwrap_or_default();
        let (field, repetition) =
            split_index(field_part).ok_or_else(|| err("bad field repetition"))?;
        let field = number(field).ok_or_else(|| err("field must be a number from 1"))?;
        let component = match parts.next() {
            Some(c) => number(c).ok_or_else(|| err("component must be a number from 1"))?,
            None => 1,
        };
        let subcomponent = match parts.next() {
            Some(s) => number(s).ok_or_else(|| err("sub-component must be a number from 1"))?,
            None => 1,
        };
        if parts.next().is_some() {
            return Err(err("too many parts"));
        }
        Ok(Self {
            segment: segment.to_ascii_uppercase(),
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// `"OBX[2]"` → ("OBX", 2); `"OBX"` → ("OBX", 1). `(n)` is accepted too.
fn split_index(s: &str) -> Option<(&str, usize)> {
    let Some(open) = s.find(['[', '(']) else {
        return Some((s, 1));
    };
    let inner = s[open + 1..].strip_suffix([']', ')'])?;
    Some((&s[..open], number(inner)?))
}

fn number(s: &str) -> Option<usize> {
    s.parse::<usize>().ok().filter(|n| *n >= 1)
}

impl Message {
    /// Looks up a path such as `"PID-13[2].1"`. `Ok(None)` when the value is absent or empty.
    pub fn get(&self, path: &str) -> Result<Option<&str>, PathError> {
        Ok(self.get_path(&path.parse()?))
    }

    /// Looks up a parsed [`Path`]; `None` when absent or empty.
    pub fn get_path(&self, path: &Path) -> Option<&str> {
        let value = self
            .segments
            .iter()
            .filter(|s| s.id == path.segment)
            .nth(path.occurrence.checked_sub(1)?)?
            .field(path.field)?
            .repetition(path.repetition)?
            .component(path.component)?
            .subcomponent(path.subcomponent)?;
        (!value.is_empty()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        let p: Path = "PID-13[2].1".parse().unwrap();
        assert_eq!(
            (
                p.segment.as_str(),
                p.occurrence,
                p.field,
                p.repetition,
                p.component
            ),
            ("PID", 1, 13, 2, 1)
        );
        let p: Path = "OBX(3)-5.5.2".parse().unwrap();
        assert_eq!(
            (p.occurrence, p.field, p.component, p.subcomponent),
            (3, 5, 5, 2)
        );
        for bad in [
            "PID",
            "PID-0",
            "PID-x",
            "PIDX-1",
            "PID-1.2.3.4",
            "PID[0]-1",
            "PID-3[2",
        ] {
            assert!(bad.parse::<Path>().is_err(), "{bad}");
        }
    }
}
