//! The gRPC frame-header size check the server runs before reading a
//! message, and the parser of the size error's text the client runs.
//! Properties: a header is accepted only with a valid flag and a length
//! within the limit; the parsed numbers of a size error are the ones its
//! Display printed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serving_proto::frame::{self, FrameError};

fuzz_target!(|data: &[u8]| {
    let [l0, l1, l2, l3, rest @ ..] = data else {
        return;
    };
    let limit = u64::from(u32::from_le_bytes([*l0, *l1, *l2, *l3]));
    match frame::check_header(rest, limit) {
        Ok(header) => {
            assert!(rest.len() >= 5);
            assert!(rest[0] <= 1);
            assert!(u64::from(header.len) <= limit);
            assert_eq!(
                header.len,
                u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]])
            );
        }
        Err(FrameError::TooLarge(e)) => {
            assert!(e.size > limit);
            assert_eq!(
                frame::parse_too_large(&e.to_string()),
                Some((e.size, e.limit))
            );
        }
        Err(_) => assert!(rest.len() < 5 || rest[0] > 1),
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = frame::parse_too_large(text);
    }
});
