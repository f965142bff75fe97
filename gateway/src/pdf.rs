//! Is this upload a PDF a patient's phone can open? A structural check: the `%PDF-` header, a
//! `startxref` pointer and the `%%EOF` trailer. That catches what clinics actually send by
//! mistake (a Word file, an HTML error page, a truncated upload) in microseconds. A full parser
//! (lopdf) would add build time and per-upload memory for little gain: the gateway never reads
//! the content, and viewers open many PDFs that strict parsers reject.

/// What is wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    #[error("is empty")]
    Empty,
    #[error("is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("is not a PDF: it does not start with %PDF-")]
    NoHeader,
    #[error("is not a complete PDF: no %%EOF at the end (truncated upload?)")]
    NoTrailer,
    #[error("is not a complete PDF: no startxref (cross-reference) section")]
    NoXref,
}

/// How far from the start the header may be (the spec allows leading junk within 1 KiB).
const HEADER_WINDOW: usize = 1024;
/// How far from the end `%%EOF` may be (trailing whitespace and junk).
const TRAILER_WINDOW: usize = 1024;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn check(bytes: &[u8], limit: usize) -> Result<(), PdfError> {
    if bytes.is_empty() {
        return Err(PdfError::Empty);
    }
    if bytes.len() > limit {
        return Err(PdfError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if find(&bytes[..bytes.len().min(HEADER_WINDOW)], b"%PDF-").is_none() {
        return Err(PdfError::NoHeader);
    }
    let tail = &bytes[bytes.len().saturating_sub(TRAILER_WINDOW)..];
    if find(tail, b"%%EOF").is_none() {
        return Err(PdfError::NoTrailer);
    }
    // startxref sits just before the final %%EOF; incremental updates repeat it further up.
    let xref_tail = &bytes[bytes.len().saturating_sub(TRAILER_WINDOW * 4)..];
    if find(xref_tail, b"startxref").is_none() {
        return Err(PdfError::NoXref);
    }
    Ok(())
}

/// A filename safe to show in WhatsApp: no path, no control characters, ends in `.pdf`.
pub fn filename(given: Option<&str>, fallback: &str) -> String {
    let base = given
        .map(|g| g.rsplit(['/', '\\']).next().unwrap_or(g))
        .map(|g| g.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| fallback.to_owned());
    let base: String = base.chars().take(100).collect();
    if base.to_ascii_lowercase().ends_with(".pdf") {
        base
    } else {
        format!("{base}.pdf")
    }
}

/// A small, valid one-page PDF with `text` on it, about `size` bytes (tests, the demo and
/// benchmarks): the sandbox's sample document.
pub use whatsapp_cloud::sandbox::sample_pdf as sample;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_pdfs_of_any_size() {
        for size in [0, 2_000, 2_000_000] {
            let pdf = sample("CBC: Hb 13.2 g/dL", size);
            assert_eq!(check(&pdf, 10_000_000), Ok(()), "{size}");
            assert!(pdf.len() >= size);
            assert!(
                pdf.len() <= size.max(1_000) + 16,
                "{} for {size}",
                pdf.len()
            );
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let pdf = sample("x", 0);
        assert_eq!(check(b"", 10), Err(PdfError::Empty));
        assert_eq!(check(b"<html>error</html>", 100), Err(PdfError::NoHeader));
        assert_eq!(
            check(&pdf[..pdf.len() / 2], 10_000),
            Err(PdfError::NoTrailer)
        );
        assert!(matches!(
            check(&pdf, 10),
            Err(PdfError::TooLarge { limit: 10, .. })
        ));
        let no_xref = String::from_utf8_lossy(&pdf).replace("startxref", "xxxxxxxxx");
        assert_eq!(check(no_xref.as_bytes(), 10_000), Err(PdfError::NoXref));
    }

    #[test]
    fn filenames_are_plain_and_end_in_pdf() {
        assert_eq!(
            filename(Some("../../etc/cbc report.PDF"), "x"),
            "cbc report.PDF"
        );
        assert_eq!(filename(Some("C:\\lab\\result"), "x"), "result.pdf");
        assert_eq!(filename(Some("  "), "lab_report"), "lab_report.pdf");
        assert_eq!(filename(None, "rx"), "rx.pdf");
    }
}
