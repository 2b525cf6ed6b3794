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

#[cfg(test)]
mod tests {
    use super::*;

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
