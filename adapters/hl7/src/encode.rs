//! [`Message`] → wire format. Every segment ends with CR; values are escaped.

use crate::delimiters::Delimiters;
use crate::escape::escape;
use crate::message::{Field, Message, Segment};

impl Message {
    /// The message as text, each segment terminated by CR. Delimiters come from
    /// [`Message::delimiters`], so MSH-1/MSH-2 always match the escaping used.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(256);
        for (i, seg) in self.segments.iter().enumerate() {
            encode_segment(seg, &self.delimiters, i == 0, &mut out);
            out.push('\r');
        }
        out
    }

    /// The message as bytes in its MSH-18 character set (UTF-8 unless 8859/1 is declared).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.charset.encode(&self.encode())
    }
}

fn encode_segment(seg: &Segment, d: &Delimiters, first: bool, out: &mut String) {
    out.push_str(&seg.id);
    let rest = if seg.is_header() {
        if seg.fields.is_empty() {
            return;
        }
        out.push(d.field());
        // The first header's MSH-2 must match the escaping used; a later header (batches) keeps
        // what it declared, verbatim, like the parser read it.
        match seg.fields.get(1) {
            Some(msh2) if !first => out.push_str(msh2.value()),
            _ => out.push_str(&d.encoding_characters()),
        }
        seg.fields.get(2..).unwrap_or_default()
    } else {
        &seg.fields[..]
    };
    for field in rest {
        out.push(d.field());
        encode_field(field, d, out);
    }
}

pub(crate) fn encode_field(field: &Field, d: &Delimiters, out: &mut String) {
    for (r, rep) in field.repetitions.iter().enumerate() {
        if r > 0 {
            out.push(d.repetition());
        }
        for (c, comp) in rep.components.iter().enumerate() {
            if c > 0 {
                out.push(d.component());
            }
            for (s, sub) in comp.subcomponents.iter().enumerate() {
                if s > 0 {
                    out.push(d.subcomponent());
                }
                out.push_str(&escape(sub, d));
            }
        }
    }
}
