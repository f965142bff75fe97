//! Documents carried in OBX: encapsulated data (OBX-2 = ED) and references (OBX-2 = RP).
//!
//! A PDF may be split over several OBX with the same OBX-3 and increasing OBX-4; the parts are
//! joined before decoding. ED is `source ^ type ^ subtype ^ encoding ^ data`, with type/subtype
//! either `AP^PDF` or `application^pdf`.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine};
use thiserror::Error;

use crate::message::{Repetition, Segment};
use crate::views::{text, Coded, FieldLocation};

/// Padding is optional and stray bits are tolerated: senders differ, and the PDF check that
/// follows catches data that is really broken.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A decoded document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// OBX-3 of the first part.
    pub observation_id: Option<Coded>,
    /// ED.2 type of data (`AP`, `application`, …).
    pub type_of_data: Option<String>,
    /// ED.3 subtype (`PDF`, `pdf`, …).
    pub subtype: Option<String>,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
    /// How many OBX segments it was joined from.
    pub parts: usize,
    /// OBX-5 of the first part.
    pub location: FieldLocation,
}

impl Document {
    /// True when the bytes are a PDF (checked for every document declared as PDF).
    pub fn is_pdf(&self) -> bool {
        self.bytes.starts_with(b"%PDF-")
    }
}

/// A reference to data held elsewhere (OBX-2 = RP). Fetch only from allow-listed hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalReference {
    /// OBX-3.
    pub observation_id: Option<Coded>,
    /// RP.1 pointer, usually a URL.
    pub pointer: String,
    /// RP.2.1 application id.
    pub application_id: Option<String>,
    /// RP.3 type of data.
    pub type_of_data: Option<String>,
    /// RP.4 subtype.
    pub subtype: Option<String>,
}

/// Why an ED observation could not be turned into a document.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocumentError {
    /// ED.4 names an encoding other than Base64, Hex or A (plain text).
    #[error("{location}: unsupported ED encoding {encoding:?}")]
    UnsupportedEncoding {
        /// OBX-5 of the first part.
        location: FieldLocation,
        /// ED.4 as received.
        encoding: String,
    },
    /// No data in ED.5.
    #[error("{location}: encapsulated data is empty")]
    Empty {
        /// OBX-5 of the first part.
        location: FieldLocation,
    },
    /// ED.5 is not valid Base64 or hex.
    #[error("{location}: encapsulated data cannot be decoded: {detail}")]
    Undecodable {
        /// OBX-5 of the first part.
        location: FieldLocation,
        /// Decoder message.
        detail: String,
    },
    /// Declared as PDF but the bytes do not start with `%PDF-`.
    #[error("{location}: declared as PDF but the data does not start with %PDF-")]
    NotPdf {
        /// OBX-5 of the first part.
        location: FieldLocation,
    },
}

impl DocumentError {
    /// Where the document started.
    pub fn location(&self) -> &FieldLocation {
        match self {
            Self::UnsupportedEncoding { location, .. }
            | Self::Empty { location }
            | Self::Undecodable { location, .. }
            | Self::NotPdf { location } => location,
        }
    }
}

/// Documents and references found in a run of OBX segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub documents: Vec<Result<Document, DocumentError>>,
    pub references: Vec<ExternalReference>,
}

/// An ED document being assembled from consecutive parts.
struct Pending {
    key: String,
    last_sub_id: String,
    observation_id: Option<Coded>,
    type_of_data: Option<String>,
    subtype: Option<String>,
    encoding: String,
    /// Data of each part, kept apart so parts that were encoded separately can be decoded
    /// separately if the joined text does not decode.
    chunks: Vec<String>,
    location: FieldLocation,
}

/// Walks OBX segments (with their message-wide occurrence numbers) in order.
pub(crate) fn extract<'a>(obx: impl IntoIterator<Item = (usize, &'a Segment)>) -> Extracted {
    let mut out = Extracted::default();
    let mut pending: Option<Pending> = None;
    for (seq, seg) in obx {
        let value_type = seg.value(2).trim().to_ascii_uppercase();
        let observation_id = Coded::from_field(seg.field(3));
        match value_type.as_str() {
            "ED" => {
                let key = observation_key(seg);
                let sub_id = seg.value(4).trim().to_string();
                let reps = seg.field(5).map(|f| f.repetitions()).unwrap_or_default();
                let continues = pending
                    .as_ref()
                    .is_some_and(|p| p.key == key && sub_id_increases(&p.last_sub_id, &sub_id));
                if continues {
                    if let Some(p) = pending.as_mut() {
                        p.chunks
                            .extend(reps.iter().map(|r| continuation_data(r).to_string()));
                        p.last_sub_id = sub_id;
                    }
                    continue;
                }
                if let Some(done) = pending.take() {
                    out.documents.push(finish(done));
                }
                let first = reps.first();
                let comp = |n| first.map_or("", |r: &Repetition| r.component_value(n));
                pending = Some(Pending {
                    key,
                    last_sub_id: sub_id,
                    observation_id,
                    type_of_data: text(comp(2)),
                    subtype: text(comp(3)),
                    encoding: comp(4).trim().to_string(),
                    chunks: reps
                        .iter()
                        .map(|r| r.component_value(5).to_string())
                        .collect(),
                    location: FieldLocation::new("OBX", seq, 5, None),
                });
            }
            "RP" => {
                let rep = seg.field(5).and_then(|f| f.repetition(1));
                let comp = |n| rep.map_or("", |r| r.component_value(n));
                if let Some(pointer) = text(comp(1)) {
                    out.references.push(ExternalReference {
                        observation_id,
                        pointer,
                        application_id: text(comp(2)),
                        type_of_data: text(comp(3)),
                        subtype: text(comp(4)),
                    });
                }
            }
            // Text and numeric results between parts do not interrupt a document.
            _ => {}
        }
    }
    if let Some(done) = pending.take() {
        out.documents.push(finish(done));
    }
    out
}

fn observation_key(seg: &Segment) -> String {
    let f = seg.field(3);
    let id = f.map_or("", |f| f.component_value(1)).trim();
    if id.is_empty() {
        f.map_or("", |f| f.component_value(2)).trim().to_string()
    } else {
        id.to_string()
    }
}

/// A later part repeats the ED header or, with some senders, carries only the data.
fn continuation_data(rep: &Repetition) -> &str {
    let data = rep.component_value(5);
    if data.is_empty() && rep.components().len() == 1 {
        rep.value()
    } else {
        data
    }
}

/// OBX-4 sub-ids compare as dotted numbers (`1` < `2`, `1.2` < `1.10`), else as text.
fn sub_id_increases(previous: &str, next: &str) -> bool {
    let numeric = |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
    match (numeric(previous), numeric(next)) {
        (Some(a), Some(b)) => a < b,
        _ => !previous.is_empty() && previous < next,
    }
}

fn finish(p: Pending) -> Result<Document, DocumentError> {
    let location = p.location.clone();
    let encoding = p.encoding.to_ascii_uppercase();
    let decode: fn(&str) -> Result<Vec<u8>, String> = match encoding.as_str() {
        "BASE64" | "B64" => decode_base64,
        "HEX" => decode_hex,
        "A" | "NONE" | "" => |s: &str| Ok(s.as_bytes().to_vec()),
        _ => {
            return Err(DocumentError::UnsupportedEncoding {
                location,
                encoding: p.encoding,
            })
        }
    };
    if p.chunks.iter().all(|c| c.trim().is_empty()) {
        return Err(DocumentError::Empty { location });
    }
    let joined: String = p.chunks.concat();
    let bytes = match decode(&joined) {
        Ok(b) => b,
        Err(first_error) => {
            // Each part may have been encoded (and padded) on its own.
            let parts: Result<Vec<Vec<u8>>, String> = p.chunks.iter().map(|c| decode(c)).collect();
            parts
                .map(|v| v.concat())
                .map_err(|_| DocumentError::Undecodable {
                    location: location.clone(),
                    detail: first_error,
                })?
        }
    };
    let declared_pdf = p
        .subtype
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("pdf"));
    if declared_pdf && !bytes.starts_with(b"%PDF-") {
        return Err(DocumentError::NotPdf { location });
    }
    Ok(Document {
        observation_id: p.observation_id,
        type_of_data: p.type_of_data,
        subtype: p.subtype,
        bytes,
        parts: p.chunks.len(),
        location,
    })
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64.decode(compact).map_err(|e| e.to_string())
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.len() % 2 != 0 {
        return Err("odd number of hex digits".to_string());
    }
    compact
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16);
            let lo = char::from(pair[1]).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => u8::try_from(h * 16 + l).map_err(|e| e.to_string()),
                _ => Err("invalid hex digit".to_string()),
            }
        })
        .collect()
}
