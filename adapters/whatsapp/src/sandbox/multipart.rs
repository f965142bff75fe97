//! Just enough `multipart/form-data` parsing for media uploads (actix-multipart is not a
//! dependency of this crate, and uploads are buffered whole anyway).

#[derive(Debug)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("Content-Type is not multipart/form-data with a boundary")]
    NoBoundary,
    #[error("multipart body is malformed: {0}")]
    Malformed(&'static str),
}

pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.starts_with("multipart/form-data") {
        return Err(MultipartError::NoBoundary);
    }
    content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
        .ok_or(MultipartError::NoBoundary)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() || from > hay.len() - needle.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

pub fn parse<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, MultipartError> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0)
        .ok_or(MultipartError::Malformed("no boundary"))?
        + delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return Err(MultipartError::Malformed("boundary not followed by CRLF"));
        }
        pos += 2;
        let head_end =
            find(body, b"\r\n\r\n", pos).ok_or(MultipartError::Malformed("no part headers"))?;
        let head = String::from_utf8_lossy(&body[pos..head_end]);
        let data_start = head_end + 4;
        let data_end = find(body, next_delim.as_bytes(), data_start)
            .ok_or(MultipartError::Malformed("unterminated part"))?;
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: &body[data_start..data_end],
        };
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                for attr in v.split(';').skip(1) {
                    if let Some((ak, av)) = attr.trim().split_once('=') {
                        let av = av.trim().trim_matches('"').to_owned();
                        match ak.trim() {
                            "name" => part.name = av,
                            "filename" => part.filename = Some(av),
                            _ => {}
                        }
                    }
                }
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(v.trim().to_owned());
            }
        }
        parts.push(part);
        pos = data_end + next_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\napplication/pdf\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--XX--\r\n";
        let b = boundary("multipart/form-data; boundary=XX").unwrap_or_default();
        let parts = parse(&b, body).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "type");
        assert_eq!(parts[0].data, b"application/pdf");
        assert_eq!(parts[1].filename.as_deref(), Some("a.pdf"));
        assert_eq!(parts[1].data, b"%PDF");
        assert!(boundary("application/json").is_err());
    }
}
