//! A sample document for tests, the demo and benchmarks: what a clinic's lab system would upload.

/// A small, valid one-page PDF with `text` on it (tests, the demo and benchmarks): real bytes
/// with a correct cross-reference table, padded with a comment to about `size` bytes.
pub fn sample_pdf(text: &str, size: usize) -> Vec<u8> {
    let bare = build_sample(text, 0);
    match size.checked_sub(bare.len()) {
        Some(pad) if pad > 0 => build_sample(text, pad),
        _ => bare,
    }
}

fn build_sample(text: &str, pad: usize) -> Vec<u8> {
    let safe: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !matches!(c, '(' | ')' | '\\'))
        .collect();
    let stream = format!("BT /F1 18 Tf 72 720 Td ({safe}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    // Padding as comment lines keeps the file valid at any size.
    let mut left = pad;
    while left > 0 {
        let n = left.min(100);
        if n > 1 {
            out.push(b'%');
            out.extend(std::iter::repeat_n(b'x', n - 2));
        }
        out.push(b'\n');
        left -= n;
    }
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).into_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").into_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}
