//! Unique message and media ids. A random prefix per sandbox keeps ids from two runs (or two
//! simulators behind one gateway) from colliding, which a gateway deduplicating on wamid relies on.

use std::sync::atomic::{AtomicU64, Ordering};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug)]
pub struct IdGen {
    prefix: u64,
    counter: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        Self {
            prefix: rand::random(),
            counter: AtomicU64::new(1),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// `wamid.` followed by 22 base64url characters, like Meta's opaque ids.
    pub fn wamid(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix.to_be_bytes());
        bytes[8..].copy_from_slice(&self.next().to_be_bytes());
        let mut out = String::with_capacity(6 + 22);
        out.push_str("wamid.");
        encode(&bytes, &mut out);
        out
    }

    /// Numeric ids as Meta gives media and templates.
    pub fn numeric(&self) -> String {
        format!(
            "{}{:08}",
            1_000_000 + (self.prefix % 9_000_000),
            self.next()
        )
    }
}

fn encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let g = IdGen::new();
        let a = g.wamid();
        let b = g.wamid();
        assert_ne!(a, b);
        assert!(a.starts_with("wamid.") && a.len() == 28, "{a}");
        assert!(g.numeric().bytes().all(|c| c.is_ascii_digit()));
    }
}
