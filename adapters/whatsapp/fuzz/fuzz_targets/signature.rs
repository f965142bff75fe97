//! `scripts/fuzz signature`: `X-Hub-Signature-256` verification and the subscription handshake
//! on any secret, header and body. The input is `<secret length byte><secret><header>\n<body>`.
//!
//! Properties: never a panic; a header verifies exactly when it carries the HMAC of the body
//! under the secret; the handshake answers only `subscribe` with the right, non-empty token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsapp_cloud::signature::{sign, verify, verify_subscription};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (secret, rest) = rest.split_at(usize::from(n % 64).min(rest.len()));
    let (header, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let header = String::from_utf8_lossy(header);

    let expected = sign(secret, body);
    let verified = verify(secret, body, Some(&header)).is_ok();
    let claimed = header
        .trim()
        .strip_prefix("sha256=")
        .map(str::to_ascii_lowercase);
    assert_eq!(
        verified,
        claimed.as_deref() == expected.strip_prefix("sha256="),
        "header {header:?}, expected {expected:?}"
    );
    assert!(verify(secret, body, Some(&expected)).is_ok());

    // The handshake: `mode`, `token` and `challenge` are the header's first three `&` parts.
    let mut parts = header.splitn(3, '&');
    let (mode, token, challenge) = (parts.next(), parts.next(), parts.next());
    let expected_token = String::from_utf8_lossy(secret);
    let answer = verify_subscription(mode, token, challenge, &expected_token);
    let allowed = mode == Some("subscribe")
        && token == Some(expected_token.as_ref())
        && !expected_token.is_empty();
    assert_eq!(answer, if allowed { challenge } else { None });
});
