//! Wire format → [`Message`]. Delimiters and character set come from the message itself.

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::error::ParseError;
use crate::escape::unescape;
use crate::message::{is_header_id, Component, Field, Message, Repetition, Segment};

/// Parses a message from raw bytes (as found inside an MLLP frame).
///
/// Lenient where senders commonly deviate: segments may end in CR, LF or CRLF, blank lines and a
/// UTF-8 byte-order mark are skipped, and bytes that are not UTF-8 are read as Latin-1 when MSH-18
/// does not say otherwise.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ParseError::Empty)?;
    let bytes = &bytes[start..];
    let (delimiters, charset) = read_header(bytes)?;
    let text = charset.decode(bytes);
    parse_text(&text, delimiters, charset)
}

/// Parses a message that is already text (MSH-18 still decides how `\Xhh\` bytes are read).
pub fn parse_str(text: &str) -> Result<Message, ParseError> {
    parse(text.as_bytes())
}

/// Reads MSH-1, MSH-2 and MSH-18 from the raw header line, before the text can be decoded.
fn read_header(bytes: &[u8]) -> Result<(Delimiters, Charset), ParseError> {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..line_end];
    let id = line.get(..3).unwrap_or(line);
    let id_text = String::from_utf8_lossy(id);
    if !is_header_id(&id_text) {
        return Err(ParseError::MissingHeader {
            found: String::from_utf8_lossy(&line[..line.len().min(16)]).into_owned(),
        });
    }
    let invalid = |reason| ParseError::InvalidEncodingCharacters {
        value: String::from_utf8_lossy(&line[3..line.len().min(9)]).into_owned(),
        reason,
    };
    let fs = *line.get(3).ok_or_else(|| invalid("MSH-1 is missing"))?;
    if !fs.is_ascii() {
        return Err(invalid("MSH-1 must be an ASCII character"));
    }
    let mut tokens = line[4..].split(|&b| b == fs);
    let encoding = tokens.next().unwrap_or_default();
    let encoding = std::str::from_utf8(encoding).map_err(|_| invalid("MSH-2 must be ASCII"))?;
    let delimiters = Delimiters::new(char::from(fs), encoding)?;
    // tokens now yields MSH-3, MSH-4, …; MSH-18 is the 16th.
    let charset = match (id, tokens.nth(15)) {
        (b"MSH", Some(msh18)) => {
            let first = msh18
                .split(|&b| b == delimiters.repetition() as u8 || b == delimiters.component() as u8)
                .next()
                .unwrap_or_default();
            // MSH-18 is an ordinary field: a sender whose escape character occurs in the name
            // (e.g. `/` in "8859/1") escapes it.
            let raw = String::from_utf8_lossy(first);
            Charset::from_msh18(&unescape(&raw, &delimiters, Charset::Undeclared))?
        }
        _ => Charset::Undeclared,
    };
    Ok((delimiters, charset))
}

fn parse_text(text: &str, d: Delimiters, charset: Charset) -> Result<Message, ParseError> {
    let mut segments = Vec::new();
    for (i, line) in text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .enumerate()
    {
        segments.push(parse_segment(line, i + 1, &d, charset)?);
    }
    Ok(Message::new(d, charset, segments))
}

fn parse_segment(
    line: &str,
    index: usize,
    d: &Delimiters,
    cs: Charset,
) -> Result<Segment, ParseError> {
    let (id, rest) = match line.find(d.field()) {
        Some(p) => (&line[..p], Some(&line[p + d.field().len_utf8()..])),
        None => (line.trim_end(), None),
    };
    if !valid_segment_id(id) {
        return Err(ParseError::InvalidSegmentId {
            index,
            id: id.chars().take(16).collect(),
        });
    }
    let mut seg = Segment::new(id);
    let Some(rest) = rest else {
        return Ok(seg);
    };
    let mut tokens = rest.split(d.field());
    if seg.is_header() {
        // MSH-1 is the separator just consumed; MSH-2 is taken verbatim, never unescaped.
        seg.fields.push(Field::new(d.field().to_string()));
        let encoding = tokens.next().unwrap_or_default();
        seg.fields.push(Field::new(encoding));
    }
    seg.fields.extend(tokens.map(|t| parse_field(t, d, cs)));
    Ok(seg)
}

fn valid_segment_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

pub(crate) fn parse_field(text: &str, d: &Delimiters, cs: Charset) -> Field {
    Field {
        repetitions: text
            .split(d.repetition())
            .map(|rep| Repetition {
                components: rep
                    .split(d.component())
                    .map(|comp| Component {
                        subcomponents: comp
                            .split(d.subcomponent())
                            .map(|sub| unescape(sub, d, cs).into_owned())
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
