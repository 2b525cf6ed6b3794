//! Bounded quotes of untrusted text in error messages.
//!
//! An error text that quotes a name, id or value from a request must not
//! grow with the request: a 1 MiB model name echoed into `grpc-message`
//! makes 786 KB of trailers, which gRPC clients refuse ("metadata size
//! exceeds hard limit"), so the client loses the status. Every such quote
//! goes through [`quote`], and every whole message leaving a server goes
//! through [`bounded`] as a last guard.
//!
//! ```
//! use serving_proto::text::{QUOTE_MAX, quote};
//!
//! assert_eq!(quote("add").to_string(), "add");
//! let long = "é".repeat(1000);
//! let shown = quote(&long).to_string();
//! assert!(shown.len() < QUOTE_MAX + 40);
//! assert!(shown.ends_with("...(1872 more bytes)"));
//! ```

use std::borrow::Cow;
use std::fmt;

/// The most bytes of one quoted value shown in an error text.
pub const QUOTE_MAX: usize = 128;

/// The most bytes of a whole error text a server sends.
pub const MESSAGE_MAX: usize = 4096;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// A value quoted in an error text: at most [`QUOTE_MAX`] bytes of it, cut
/// on a character boundary, then how many bytes were left out.
#[derive(Clone, Copy, Debug)]
pub struct Quote<'a>(pub &'a str);

/// Quotes `s` for an error text (see [`Quote`]).
pub fn quote(s: &str) -> Quote<'_> {
    Quote(s)
}

impl fmt::Display for Quote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = prefix(self.0, QUOTE_MAX);
        f.write_str(shown)?;
        if shown.len() < self.0.len() {
            write!(f, "...({} more bytes)", self.0.len() - shown.len())?;
        }
        Ok(())
    }
}

/// `message` cut to at most [`MESSAGE_MAX`] bytes (plus a short marker) on a
/// character boundary. Texts that are already short are returned as they
/// are, byte for byte.
pub fn bounded(message: &str) -> Cow<'_, str> {
    if message.len() <= MESSAGE_MAX {
        return Cow::Borrowed(message);
    }
    let shown = prefix(message, MESSAGE_MAX);
    Cow::Owned(format!(
        "{shown}...({} more bytes)",
        message.len() - shown.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_unchanged() {
        assert_eq!(quote("").to_string(), "");
        let exact = "a".repeat(QUOTE_MAX);
        assert_eq!(quote(&exact).to_string(), exact);
        assert_eq!(bounded("abc"), "abc");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        for s in [
            "x".repeat(1 << 20),
            "日本".repeat(5000),
            "é".repeat(QUOTE_MAX),
        ] {
            let q = quote(&s).to_string();
            assert!(q.len() <= QUOTE_MAX + 30, "{}", q.len());
            assert!(s.starts_with(q.split("...(").next().unwrap()));
            let b = bounded(&s);
            assert!(b.len() <= MESSAGE_MAX + 30);
        }
        assert_eq!(
            quote(&"ab".repeat(100)).to_string(),
            format!("{}...(72 more bytes)", "ab".repeat(64))
        );
    }
}
