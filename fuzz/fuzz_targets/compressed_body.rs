//! gzip and deflate bodies, as both servers inflate them (REST
//! `Content-Encoding`, gRPC `grpc-encoding`). Properties: any bytes inflate
//! or give an error, never a panic; the output never exceeds the limit (a
//! body that inflates past it is refused, not truncated); what is
//! compressed inflates back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serving_fuzz::{assert_bounded, reset};
use serving_proto::compression::{self, Encoding, InflateError};

const LIMIT: usize = 32 << 10;

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        reset();
        match compression::inflate(encoding, data, LIMIT) {
            Ok(out) => assert!(out.len() <= LIMIT),
            Err(InflateError::TooLarge { limit, .. }) => assert_eq!(limit, LIMIT),
            Err(_) => {}
        }
        assert_bounded(data.len().max(LIMIT / 64), "inflate");
        if data.len() <= LIMIT {
            let packed = compression::compress(encoding, data);
            let back =
                compression::inflate(encoding, &packed, LIMIT).expect("our own body inflates");
            assert_eq!(back, data);
            assert!(
                matches!(
                    compression::inflate(encoding, &packed, data.len().saturating_sub(1)),
                    Err(InflateError::TooLarge { .. })
                ) || data.is_empty()
            );
        }
    }
});
