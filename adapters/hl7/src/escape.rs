//! HL7 escape sequences (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\P\`, `\Xhh…\`, `\.br\`, `\H\`, `\N\`, …).
//!
//! The message model holds unescaped text; escaping happens only when writing the wire format.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::delimiters::Delimiters;

/// Escapes a value so it can be written between delimiters.
///
/// Delimiters become `\F\ \S\ \T\ \R\ \E\` (and `\P\` for a declared truncation character); a line
/// feed becomes `\.br\` and a carriage return `\X0D\`, because a raw CR would end the segment.
pub fn escape<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    if !text.chars().any(|c| d.is_special(c)) {
        return Cow::Borrowed(text);
    }
    let e = d.escape();
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == d.field() {
            "F"
        } else if c == d.component() {
            "S"
        } else if c == d.subcomponent() {
            "T"
        } else if c == d.repetition() {
            "R"
        } else if c == e {
            "E"
        } else if Some(c) == d.truncation() {
            "P"
        } else if c == '\n' {
            ".br"
        } else if c == '\r' {
            "X0D"
        } else {
            out.push(c);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    Cow::Owned(out)
}

/// Resolves escape sequences in one leaf value.
///
/// Formatting sequences are turned into plain text: `\.br\` and `\.sp\` become line feeds, the other
/// `\.xx\` commands, highlighting `\H\`/`\N\` and character-set switches `\Cxxyy\`/`\Mxxyyzz\` are
/// dropped. `\Xhh…\` bytes are decoded in the message's character set. Anything unrecognised (or an
/// escape character without a closing one) is kept as received, since senders often forget to
/// escape a backslash in free text.
pub fn unescape<'a>(text: &'a str, d: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let e = d.escape();
    if !text.contains(e) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(e) {
        out.push_str(&rest[..start]);
        let after = &rest[start + e.len_utf8()..];
        let Some(end) = after.find(e) else {
            // Unterminated: keep the remainder literally.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let seq = &after[..end];
        if !apply_sequence(seq, d, charset, &mut out) {
            out.push(e);
            out.push_str(seq);
            out.push(e);
        }
        rest = &after[end + e.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Writes the meaning of one sequence; returns false when it is not a recognised sequence.
fn apply_sequence(seq: &str, d: &Delimiters, charset: Charset, out: &mut String) -> bool {
    match seq {
        "F" => out.push(d.field()),
        "S" => out.push(d.component()),
        "T" => out.push(d.subcomponent()),
        "R" => out.push(d.repetition()),
        "E" => out.push(d.escape()),
        "P" => match d.truncation() {
            Some(t) => out.push(t),
            None => return false,
        },
        // Start/end highlighting: no plain-text equivalent.
        "H" | "N" => {}
        _ => {
            if let Some(hex) = seq.strip_prefix('X') {
                return match decode_hex(hex) {
                    Some(bytes) => {
                        out.push_str(&charset.decode(&bytes));
                        true
                    }
                    None => false,
                };
            }
            if let Some(cmd) = seq.strip_prefix('.') {
                return apply_formatting(cmd, out);
            }
            // ISO 2022 single/multi-byte character set switches: the text around them is already
            // decoded, so the switch itself carries nothing.
            let is_switch = |prefix: char, len: usize| {
                seq.strip_prefix(prefix)
                    .is_some_and(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
            };
            if is_switch('C', 4) || is_switch('M', 4) || is_switch('M', 6) {
                return true;
            }
            return false;
        }
    }
    true
}

/// `\.br\`, `\.sp n\` → line feeds; layout commands (`.in`, `.ti`, `.sk`, `.ce`, `.fi`, `.nf`) dropped.
fn apply_formatting(cmd: &str, out: &mut String) -> bool {
    if cmd == "br" {
        out.push('\n');
    } else if let Some(arg) = cmd.strip_prefix("sp") {
        let n: usize = arg.trim().trim_start_matches('+').parse().unwrap_or(1);
        // A bound so a hostile `\.sp 999999999\` cannot allocate gigabytes.
        for _ in 0..n.clamp(1, 100) {
            out.push('\n');
        }
    } else if ["in", "ti", "sk", "ce", "fi", "nf"]
        .iter()
        .any(|p| cmd.starts_with(p))
    {
        // Layout commands (indent, centre, fill) have no plain-text meaning.
    } else {
        return false;
    }
    true
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn delimiter_sequences() {
        let s = r"A\F\B\S\C\T\D\R\E\E\";
        assert_eq!(unescape(s, &d(), Charset::Utf8), "A|B^C&D~E\\");
        assert_eq!(escape("A|B^C&D~E\\", &d()), s);
    }

    #[test]
    fn formatting_and_highlight() {
        let s = r"Line 1\.br\Line 2\.sp 2\\H\bold\N\ \.in+4\x";
        assert_eq!(unescape(s, &d(), Charset::Utf8), "Line 1\nLine 2\n\nbold x");
        assert_eq!(unescape(r"\.zz\", &d(), Charset::Utf8), r"\.zz\");
    }

    #[test]
    fn hex_per_charset() {
        assert_eq!(unescape(r"Jos\XE9\", &d(), Charset::Latin1), "José");
        assert_eq!(unescape(r"Jos\XC3A9\", &d(), Charset::Utf8), "José");
        assert_eq!(unescape(r"\X0D0A\", &d(), Charset::Ascii), "\r\n");
        assert_eq!(unescape(r"\XZZ\", &d(), Charset::Ascii), r"\XZZ\");
    }

    #[test]
    fn lenient_unknown_and_unterminated() {
        assert_eq!(
            unescape(r"C:\temp\file", &d(), Charset::Utf8),
            r"C:\temp\file"
        );
        assert_eq!(unescape(r"50\% off", &d(), Charset::Utf8), r"50\% off");
        assert_eq!(unescape(r"a\C2842\b", &d(), Charset::Utf8), "ab");
    }

    #[test]
    fn line_breaks_round_trip() {
        let text = "a\r\nb\nc";
        let esc = escape(text, &d());
        assert!(!esc.contains('\r') && !esc.contains('\n'));
        assert_eq!(unescape(&esc, &d(), Charset::Utf8), text);
    }

    #[test]
    fn truncation_character() {
        let d = Delimiters::new('|', "^~\\&#").unwrap();
        assert_eq!(escape("#1", &d), r"\P\1");
        assert_eq!(unescape(r"\P\1", &d, Charset::Utf8), "#1");
        assert_eq!(
            unescape(r"\P\1", &Delimiters::default(), Charset::Utf8),
            r"\P\1"
        );
    }
}
