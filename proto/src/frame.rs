//! The gRPC length-prefixed message frame: a 1-byte compression flag and a
//! 4-byte big-endian length, then the message. A server reads the header
//! first and refuses an oversized message before buffering its body.

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether the message is compressed.
    pub compressed: bool,
    /// Length of the message that follows.
    pub len: u32,
}

/// Which side found a message too large.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A message received (a server's request, a client's reply).
    Received,
    /// A message about to be sent.
    Sent,
}

/// A message over the size limit, with gRPC's wording:
/// `Received message larger than max (<size> vs. <limit>)` or
/// `Sent message larger than max (<size> vs. <limit>)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} message larger than max ({size} vs. {limit})", match .direction { Direction::Received => "Received", Direction::Sent => "Sent" })]
pub struct TooLarge {
    /// Which side.
    pub direction: Direction,
    /// The message size in bytes.
    pub size: u64,
    /// The limit in bytes.
    pub limit: u64,
}

/// A frame header that is not valid gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer than 5 bytes.
    #[error("truncated gRPC frame header: {0} of 5 bytes")]
    Truncated(usize),
    /// A compression flag other than 0 or 1.
    #[error("invalid gRPC compression flag {0}; expected 0 or 1")]
    Flag(u8),
    /// The message is over the limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// Parses the first 5 bytes of `bytes` as a frame header and checks the
/// message length against `limit` bytes.
pub fn check_header(bytes: &[u8], limit: u64) -> Result<FrameHeader, FrameError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated(bytes.len()));
    };
    let compressed = match header[0] {
        0 => false,
        1 => true,
        other => return Err(FrameError::Flag(other)),
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    check_size(Direction::Received, u64::from(len), limit)?;
    Ok(FrameHeader { compressed, len })
}

/// Checks a message size against a limit.
pub fn check_size(direction: Direction, size: u64, limit: u64) -> Result<(), TooLarge> {
    if size > limit {
        Err(TooLarge {
            direction,
            size,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Reads `(size, limit)` back from a server's size error text, such as
/// `Received message larger than max (419429033 vs. 104857600)`.
pub fn parse_too_large(text: &str) -> Option<(u64, u64)> {
    let start = text.find("larger than max (")? + "larger than max (".len();
    let rest = &text[start..];
    let (size, rest) = rest.split_once(" vs. ")?;
    let limit = rest.split_once(')')?.0;
    Some((size.trim().parse().ok()?, limit.trim().parse().ok()?))
}

/// Splits a stream of gRPC frames (a streaming call's body, in whatever
/// pieces it arrives) into messages. Each header is checked against the
/// limit as soon as it is complete; memory holds only the bytes received
/// of the message in progress.
#[derive(Debug)]
pub struct Splitter {
    pending: bytes::BytesMut,
    limit: u64,
}

impl Splitter {
    /// A splitter refusing messages over `limit` bytes.
    pub fn new(limit: u64) -> Splitter {
        Splitter {
            pending: bytes::BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes received.
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next complete message and whether its flag says compressed,
    /// `None` until one is complete.
    pub fn next_message(&mut self) -> Result<Option<(bool, bytes::Bytes)>, FrameError> {
        if self.pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = check_header(&self.pending, self.limit)?;
        let len = h.len as usize;
        if self.pending.len() - HEADER_LEN < len {
            return Ok(None);
        }
        let _ = self.pending.split_to(HEADER_LEN);
        Ok(Some((h.compressed, self.pending.split_to(len).freeze())))
    }

    /// Bytes of a message not yet complete (0 between messages).
    pub fn partial(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_splits_into_messages_in_any_pieces() {
        let mut wire = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0, 0, 0];
        wire.extend_from_slice(&[0, 0, 0, 0, 1, b'z']);
        for piece in [1, 2, 5, 100] {
            let mut s = Splitter::new(16);
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                s.push(chunk);
                while let Some(m) = s.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(
                got,
                [
                    (false, bytes::Bytes::from_static(b"abc")),
                    (true, bytes::Bytes::new()),
                    (false, bytes::Bytes::from_static(b"z"))
                ]
            );
            assert_eq!(s.partial(), 0);
        }
        let mut s = Splitter::new(2);
        s.push(&[0, 0, 0, 0, 3]);
        assert!(matches!(s.next_message(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn header_is_checked_before_the_body() {
        let h = check_header(&[0, 0, 0, 1, 0], 256).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                compressed: false,
                len: 256
            }
        );
        let e = check_header(&[0, 0, 0, 1, 1], 256).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Received message larger than max (257 vs. 256)"
        );
        assert_eq!(check_header(&[0, 0], 1), Err(FrameError::Truncated(2)));
        assert_eq!(check_header(&[2, 0, 0, 0, 0], 1), Err(FrameError::Flag(2)));
    }

    #[test]
    fn size_errors_round_trip_through_their_text() {
        let e = check_size(Direction::Sent, 838858033, 536870912).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Sent message larger than max (838858033 vs. 536870912)"
        );
        assert_eq!(
            parse_too_large(&e.to_string()),
            Some((838858033, 536870912))
        );
        assert_eq!(
            parse_too_large(
                "Grpc Error, (8, 'resource exhausted'), Received message larger than max (419429033 vs. 104857600)"
            ),
            Some((419429033, 104857600))
        );
        assert_eq!(parse_too_large("resource exhausted"), None);
    }
}
