//! The protobuf request decoders allocate no more than
//! `serving_proto::decode_cost` says, for any message: this binary counts
//! every live byte with its own allocator and compares the peak during
//! `prost::Message::decode` with the walker's figure, on generated
//! messages (many empty entries, maps, typed contents, raw contents) and
//! on arbitrary bytes.
//!
//! One test function only: the counter is process-wide, and a second test
//! running beside it would add its own allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use serving_proto::decode_cost;
use serving_proto::pb::inference::ModelInferRequest;
use serving_proto::pb::mindspore::PredictRequest;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size);
        }
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        if new_size <= layout.size() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated above the start while running `f`.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed) - start, out)
}

/// Slack for what the walker does not model: the decode's own small
/// temporaries.
const SLACK: usize = 1024;

fn check(wire: &[u8]) {
    let bytes = Bytes::copy_from_slice(wire);
    let cost = decode_cost::model_infer_request(wire) as usize;
    let (peak, decoded) = peak_of(|| ModelInferRequest::decode(bytes.clone()));
    drop(decoded);
    assert!(
        peak <= cost + SLACK,
        "ModelInferRequest: {peak} bytes allocated, walker said {cost}, for {} bytes",
        wire.len()
    );
    let cost = decode_cost::predict_request(wire) as usize;
    let (peak, decoded) = peak_of(|| PredictRequest::decode(bytes.clone()));
    drop(decoded);
    assert!(
        peak <= cost + SLACK,
        "PredictRequest: {peak} bytes allocated, walker said {cost}, for {} bytes",
        wire.len()
    );
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn field(number: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(number) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Building blocks of hostile and ordinary messages, as wire bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let name = "[a-z]{0,6}";
    prop_oneof![
        // Empty entries of every repeated or map field, at both levels.
        (1u32..=8, 0usize..400).prop_map(|(n, count)| {
            let mut out = Vec::new();
            for _ in 0..count {
                field(n, &[], &mut out);
            }
            out
        }),
        // Distinct parameters.
        (name, 0usize..200).prop_map(|(prefix, count)| {
            let mut out = Vec::new();
            for i in 0..count {
                let mut entry = Vec::new();
                field(1, format!("{prefix}{i}").as_bytes(), &mut entry);
                let mut value = Vec::new();
                field(3, b"v", &mut value);
                field(2, &value, &mut entry);
                field(4, &entry, &mut out);
            }
            out
        }),
        // An input with typed contents: packed varints, fixed widths,
        // bytes, and unpacked entries.
        (0usize..2000, 1u32..=8, any::<bool>()).prop_map(|(count, which, packed)| {
            let mut contents = Vec::new();
            if packed && which != 8 {
                let mut body = Vec::new();
                for i in 0..count {
                    match which {
                        6 => body.extend_from_slice(&(i as f32).to_le_bytes()),
                        7 => body.extend_from_slice(&(i as f64).to_le_bytes()),
                        _ => varint(i as u64 % 3, &mut body),
                    }
                }
                field(which, &body, &mut contents);
            } else {
                for i in 0..count {
                    match which {
                        8 => field(8, &[], &mut contents),
                        6 => {
                            varint(u64::from(which) << 3 | 5, &mut contents);
                            contents.extend_from_slice(&(i as f32).to_le_bytes());
                        }
                        7 => {
                            varint(u64::from(which) << 3 | 1, &mut contents);
                            contents.extend_from_slice(&(i as f64).to_le_bytes());
                        }
                        _ => {
                            varint(u64::from(which) << 3, &mut contents);
                            varint(i as u64 % 3, &mut contents);
                        }
                    }
                }
            }
            let mut input = Vec::new();
            field(1, b"x", &mut input);
            field(2, b"INT32", &mut input);
            field(5, &contents, &mut input);
            let mut out = Vec::new();
            field(5, &input, &mut out);
            out
        }),
        // MindSpore instances with tensors of many empty bytes_val.
        (0usize..50, 0usize..50).prop_map(|(instances, values)| {
            let mut out = Vec::new();
            for i in 0..instances {
                let mut tensor = Vec::new();
                for _ in 0..values {
                    field(4, &[], &mut tensor);
                }
                let mut entry = Vec::new();
                field(1, format!("x{i}").as_bytes(), &mut entry);
                field(2, &tensor, &mut entry);
                let mut instance = Vec::new();
                field(1, &entry, &mut instance);
                field(2, &instance, &mut out);
            }
            out
        }),
        // Raw contents.
        (0usize..20, 0usize..5000).prop_map(|(count, len)| {
            let mut out = Vec::new();
            for _ in 0..count {
                field(7, &vec![7u8; len], &mut out);
            }
            out
        }),
        // Groups on unknown fields (prost skips them and decodes on),
        // nested, and one on a known field (refused).
        (0usize..3).prop_map(|depth| {
            let mut out = Vec::new();
            for d in 0..depth {
                varint(u64::from(100 + d as u32) << 3 | 3, &mut out);
            }
            varint(u64::from(200u32) << 3 | 3, &mut out);
            varint(u64::from(200u32) << 3 | 4, &mut out);
            for d in (0..depth).rev() {
                varint(u64::from(100 + d as u32) << 3 | 4, &mut out);
            }
            out
        }),
        Just(vec![0x2b, 0x2c]),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn decoding_allocates_no_more_than_the_walker_counts() {
    // The measured case of the issue, scaled down: model_name then empty
    // inputs.
    let mut empty_inputs = Vec::new();
    field(1, b"identity", &mut empty_inputs);
    for _ in 0..100_000 {
        field(5, &[], &mut empty_inputs);
    }
    check(&empty_inputs);
    // The same behind an empty group on an unknown field.
    let mut grouped = vec![0xa3, 0x06, 0xa4, 0x06];
    grouped.extend_from_slice(&empty_inputs);
    check(&grouped);
    assert!(
        decode_cost::model_infer_request(&empty_inputs) > 100 * empty_inputs.len() as u64,
        "the walker sees the amplification"
    );

    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(pieces in prop::collection::vec(piece(), 0..6))| {
        check(&pieces.concat());
    });
    proptest!(config, |(wire in prop::collection::vec(any::<u8>(), 0..512))| {
        check(&wire);
    });
}
