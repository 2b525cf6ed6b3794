//! gzip and deflate message bodies (gRPC's `grpc-encoding`, HTTP's
//! `Content-Encoding`), with [`flate2`].
//!
//! Inflating is bounded: output past the limit is refused as soon as it is
//! produced, so a small body that inflates without end (a compression
//! bomb) costs no more than the limit in memory and no more work than that
//! many bytes.
//!
//! ```
//! use serving_proto::compression::{Encoding, compress, inflate};
//!
//! let body = vec![7u8; 1 << 20];
//! let packed = compress(Encoding::Gzip, &body);
//! assert!(packed.len() < 4096);
//! assert_eq!(inflate(Encoding::Gzip, &packed, 1 << 20)?, body);
//! let e = inflate(Encoding::Gzip, &packed, 1000).unwrap_err();
//! assert_eq!(e.to_string(), "the gzip body inflates past the 1000-byte limit");
//! # Ok::<(), serving_proto::compression::InflateError>(())
//! ```

use std::io::{Read, Write};

/// A compression the server and client speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// RFC 1952 gzip.
    Gzip,
    /// RFC 1950 zlib, which both gRPC and HTTP call `deflate`.
    Deflate,
}

impl Encoding {
    /// The encoding named `name` (ASCII case-insensitive), if spoken.
    pub fn from_name(name: &str) -> Option<Encoding> {
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if name.eq_ignore_ascii_case("deflate") {
            Some(Encoding::Deflate)
        } else {
            None
        }
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// A body that could not be inflated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// It inflates to more than the limit.
    #[error("the {} body inflates past the {limit}-byte limit", .encoding.name())]
    TooLarge {
        /// Its encoding.
        encoding: Encoding,
        /// The limit.
        limit: usize,
    },
    /// The caller's memory budget refused the output (see
    /// [`inflate_charged`]).
    #[error("the {} body inflates to more than the server's memory for requests allows now ({inflated} bytes so far); retry later", .encoding.name())]
    Refused {
        /// Its encoding.
        encoding: Encoding,
        /// Bytes inflated when refused.
        inflated: usize,
    },
    /// It is not valid data of its encoding.
    #[error("the body is not valid {} data: {source}", .encoding.name())]
    Corrupt {
        /// Its encoding.
        encoding: Encoding,
        /// What the decoder found.
        source: std::io::Error,
    },
}

/// The first read of a body: output that fits it is the result as it is;
/// a larger body is measured and inflated again into a buffer of exactly
/// its size.
const FIRST: usize = 1 << 20;

/// Inflates `body`, refusing output past `limit` bytes: the memory held is
/// at most the output's size (or 1 MiB), never a growing buffer's old and
/// new copies (see [`inflate_charged`]).
pub fn inflate(encoding: Encoding, body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    inflate_charged(encoding, body, limit, &mut |_| true)
}

fn decoder(encoding: Encoding, body: &[u8]) -> Box<dyn Read + '_> {
    match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
    }
}

/// Fills `buf` from `reader`; the bytes read (fewer only at the end).
fn fill(reader: &mut dyn Read, buf: &mut [u8], encoding: Encoding) -> Result<usize, InflateError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(InflateError::Corrupt { encoding, source }),
        }
    }
    Ok(filled)
}

/// [`inflate`], telling `hold` before each allocation how many bytes it
/// will hold in all from then on: memory a server charges to its budget
/// as it inflates. Output of up to 1 MiB is read into one buffer. A larger
/// output is first measured (inflated again into that buffer as scratch,
/// refused once past the limit), then inflated anew into a buffer of
/// exactly its size, the first one freed: twice the work for large
/// bodies, and memory of exactly the output instead of its pieces and
/// their joined copy (2x). `hold` returning false refuses the body with
/// [`InflateError::Refused`].
pub fn inflate_charged(
    encoding: Encoding,
    body: &[u8],
    limit: usize,
    hold: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, InflateError> {
    let refused = |inflated| InflateError::Refused { encoding, inflated };
    let first = FIRST.min(limit.saturating_add(1));
    if !hold(first) {
        return Err(refused(0));
    }
    let mut reader = decoder(encoding, body);
    let mut out = vec![0u8; first];
    let filled = fill(&mut reader, &mut out, encoding)?;
    if filled > limit {
        return Err(InflateError::TooLarge { encoding, limit });
    }
    if filled < first {
        out.truncate(filled);
        return Ok(out);
    }
    // Measure the rest in the first buffer, reused as scratch.
    let mut total = filled;
    loop {
        let n = fill(&mut reader, &mut out, encoding)?;
        total += n;
        if total > limit {
            return Err(InflateError::TooLarge { encoding, limit });
        }
        if n < out.len() {
            break;
        }
    }
    drop(out);
    if !hold(total) {
        return Err(refused(total));
    }
    let mut out = vec![0u8; total];
    let filled = fill(&mut decoder(encoding, body), &mut out, encoding)?;
    debug_assert_eq!(filled, total, "the same body inflates the same");
    out.truncate(filled);
    Ok(out)
}

/// Compresses `body` at the default level.
pub fn compress(encoding: Encoding, body: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    let out = Vec::with_capacity(body.len() / 2 + 64);
    match encoding {
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, level);
            w.write_all(body).expect("writing to a Vec cannot fail");
            w.finish().expect("writing to a Vec cannot fail")
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(out, level);
            w.write_all(body).expect("writing to a Vec cannot fail");
            w.finish().expect("writing to a Vec cannot fail")
        }
    }
}

/// Compresses a body given in pieces (a message sent as chunks), without
/// joining them first.
pub fn compress_chunks(encoding: Encoding, chunks: &[bytes::Bytes]) -> Vec<u8> {
    let level = flate2::Compression::default();
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let out = Vec::with_capacity(total / 2 + 64);
    fn all<W: Write>(mut w: W, chunks: &[bytes::Bytes]) -> W {
        for c in chunks {
            w.write_all(c).expect("writing to a Vec cannot fail");
        }
        w
    }
    match encoding {
        Encoding::Gzip => all(flate2::write::GzEncoder::new(out, level), chunks)
            .finish()
            .expect("writing to a Vec cannot fail"),
        Encoding::Deflate => all(flate2::write::ZlibEncoder::new(out, level), chunks)
            .finish()
            .expect("writing to a Vec cannot fail"),
    }
}

/// One gRPC message given as frame chunks (its 5-byte frame header first,
/// as [`crate::chunked`] builds them), compressed into one frame with the
/// compressed flag set: the new header, then the packed message.
pub fn compress_frame(encoding: Encoding, chunks: &[bytes::Bytes]) -> Vec<bytes::Bytes> {
    let mut body: Vec<bytes::Bytes> = chunks.to_vec();
    let mut skip = crate::frame::HEADER_LEN;
    for c in &mut body {
        let cut = skip.min(c.len());
        *c = c.slice(cut..);
        skip -= cut;
        if skip == 0 {
            break;
        }
    }
    let packed = compress_chunks(encoding, &body);
    let mut header = Vec::with_capacity(crate::frame::HEADER_LEN);
    header.push(1);
    header.extend_from_slice(
        &u32::try_from(packed.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    vec![bytes::Bytes::from(header), bytes::Bytes::from(packed)]
}

/// The encodings a `grpc-accept-encoding` or `Accept-Encoding` value
/// lists, in its order (HTTP's `;q=0` entries left out; unknown names
/// skipped).
pub fn accepted(value: &str) -> Vec<Encoding> {
    value
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                None
            } else {
                Encoding::from_name(name)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_round_trip_at_the_exact_limit() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for e in [Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(e, &body);
            assert_eq!(inflate(e, &packed, body.len()).unwrap(), body);
            assert!(matches!(
                inflate(e, &packed, body.len() - 1),
                Err(InflateError::TooLarge { .. })
            ));
            let chunks = [
                bytes::Bytes::from(body[..10].to_vec()),
                bytes::Bytes::from(body[10..].to_vec()),
            ];
            assert_eq!(
                inflate(e, &compress_chunks(e, &chunks), usize::MAX).unwrap(),
                body
            );
        }
    }

    #[test]
    fn a_large_body_is_held_once_at_its_exact_size() {
        let body: Vec<u8> = (0..(5 << 20) + 77u32).map(|i| (i % 13) as u8).collect();
        for e in [Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(e, &body);
            let mut asked = Vec::new();
            let out = inflate_charged(e, &packed, 8 << 20, &mut |n| {
                asked.push(n);
                true
            })
            .unwrap();
            assert_eq!(out, body);
            assert_eq!(asked, [FIRST, body.len()]);
            let e = inflate_charged(e, &packed, 8 << 20, &mut |n| n <= FIRST).unwrap_err();
            assert!(matches!(e, InflateError::Refused { inflated, .. } if inflated == body.len()));
        }
    }

    #[test]
    fn a_bomb_is_refused_with_memory_near_the_limit() {
        // 64 MiB of zeros packs into about 64 KiB.
        let bomb = compress(Encoding::Gzip, &vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        match inflate(Encoding::Gzip, &bomb, 1 << 20) {
            Err(InflateError::TooLarge { limit, .. }) => assert_eq!(limit, 1 << 20),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for e in [Encoding::Gzip, Encoding::Deflate] {
            assert!(matches!(
                inflate(e, b"not compressed at all", 1 << 20),
                Err(InflateError::Corrupt { .. })
            ));
            assert_eq!(inflate(e, &compress(e, b""), 0).unwrap(), b"");
        }
    }

    #[test]
    fn accept_lists_are_read_in_order() {
        assert_eq!(
            accepted("identity,deflate,gzip"),
            [Encoding::Deflate, Encoding::Gzip]
        );
        assert_eq!(accepted("gzip;q=0, deflate;q=0.5, br"), [Encoding::Deflate]);
        assert_eq!(accepted(""), []);
    }
}
