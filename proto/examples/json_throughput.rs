//! JSON decoding throughput and peak memory of the REST decoders.
//!
//! ```sh
//! cargo run --release -p serving-proto --example json_throughput [MB [FILTER]]
//! ```
//!
//! Builds request bodies of about `MB` megabytes (default 100): OIP REST
//! JSON (`{"inputs":[{"name":"x","shape":[N],"datatype":"FP32","data":[..]}]}`,
//! FP32 fractions, FP32 zeros, INT64, nested arrays) and MindSpore REST
//! (`{"instances":[{"x":[[..],..]}]}`, one large instance and many small
//! ones), decodes each a few times and prints the best throughput (MB/s of
//! body) and the peak of live heap bytes during one decode, over the body
//! size (the body itself is allocated before and not counted; add 1 for
//! what the process holds at the peak).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serving_proto::mindspore::rest as ms;
use serving_proto::oip::rest as oip;

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A tiny deterministic generator (xorshift), so that runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes `n` comma-separated leaves made by `leaf`, nested in rows of
/// `row` when given.
fn leaves(out: &mut String, n: usize, row: Option<usize>, mut leaf: impl FnMut(&mut String)) {
    out.push('[');
    for i in 0..n {
        if let Some(row) = row {
            if i % row == 0 {
                if i > 0 {
                    out.push_str("],");
                }
                out.push('[');
            } else {
                out.push(',');
            }
        } else if i > 0 {
            out.push(',');
        }
        leaf(out);
    }
    if row.is_some() && n > 0 {
        out.push(']');
    }
    out.push(']');
}

/// The number of leaves of about `width` bytes each (separator included)
/// that make a body of `target` bytes, rounded down to whole rows.
fn count(target: usize, width: usize, row: usize) -> usize {
    (target / width / row).max(1) * row
}

fn fp32_fraction(rng: &mut Rng) -> impl FnMut(&mut String) + '_ {
    |s| {
        // Values like 0.5, 1.25, 37.875: short exact binary fractions.
        let v = (rng.next() % 100_000) as f32 / 8.0;
        let _ = write!(s, "{v:?}");
    }
}

fn oip_body(dtype: &str, shape: &[usize], data: &str) -> Vec<u8> {
    let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!(
        r#"{{"inputs":[{{"name":"x","shape":[{}],"datatype":"{dtype}","data":{data}}}]}}"#,
        shape.join(",")
    )
    .into_bytes()
}

/// The bodies measured: (name, body, which decoder).
fn cases(target: usize) -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();

    // OIP FP32 fractions, flat: about 8 bytes a leaf.
    let n = count(target, 8, 1);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, None, fp32_fraction(&mut rng));
    out.push((
        "oip FP32 flat [0.5,1.25,..]",
        oip_body("FP32", &[n], &data),
        true,
    ));

    // OIP FP32 zeros, flat: the issue's `"data":[0,0,...]`.
    let n = count(target, 2, 1);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, None, |s| s.push('0'));
    out.push((
        "oip FP32 flat [0,0,..]",
        oip_body("FP32", &[n], &data),
        true,
    ));

    // OIP INT64, flat: random integers of up to 7 digits.
    let n = count(target, 7, 1);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, None, |s| {
        let _ = write!(s, "{}", rng.next() % 1_000_000);
    });
    out.push(("oip INT64 flat", oip_body("INT64", &[n], &data), true));

    // OIP FP32, nested rows of 1000.
    let row = 1000;
    let n = count(target, 8, row);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, Some(row), fp32_fraction(&mut rng));
    out.push((
        "oip FP32 nested [[..],..]",
        oip_body("FP32", &[n / row, row], &data),
        true,
    ));

    // MindSpore, one instance: FP32 rows of 1000.
    let n = count(target, 8, row);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, Some(row), fp32_fraction(&mut rng));
    out.push((
        "ms FP32 nested, 1 instance",
        format!(r#"{{"instances":[{{"x":{data}}}]}}"#).into_bytes(),
        false,
    ));

    // MindSpore, one instance: INT32 zeros in rows of 1000.
    let n = count(target, 2, row);
    let mut data = String::with_capacity(target + 64);
    leaves(&mut data, n, Some(row), |s| s.push('0'));
    out.push((
        "ms INT32 zeros nested, 1 instance",
        format!(r#"{{"instances":[{{"x":{data}}}]}}"#).into_bytes(),
        false,
    ));

    // MindSpore, many instances of two small tensors (16 FP32, 1 INT32).
    let mut body = String::with_capacity(target + 64);
    body.push_str(r#"{"instances":["#);
    let mut first = true;
    while body.len() < target {
        if !first {
            body.push(',');
        }
        first = false;
        body.push_str(r#"{"x":"#);
        leaves(&mut body, 16, Some(4), fp32_fraction(&mut rng));
        let _ = write!(body, r#","y":{}}}"#, rng.next() % 1000);
    }
    body.push_str("]}");
    out.push(("ms many small instances", body.into_bytes(), false));
    out
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let target_mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let filter = std::env::args().nth(2).unwrap_or_default();
    let runs = 3;
    println!(
        "{:<36} {:>8} {:>9} {:>12} {:>13}",
        "body", "MB", "MB/s", "peak MB", "peak / body"
    );
    for (name, body, is_oip) in cases(target_mb * 1_000_000) {
        if !name.contains(&filter) {
            continue;
        }
        let len = body.len();
        let bytes = Bytes::from(body);
        let mut best = Duration::MAX;
        let mut peak = 0;
        for _ in 0..runs {
            let input = bytes.clone();
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let started = Instant::now();
            let ok = if is_oip {
                oip::decode_request(input, None).map(drop).is_ok()
            } else {
                ms::decode_request(&input, usize::MAX).map(drop).is_ok()
            };
            best = best.min(started.elapsed());
            peak = peak.max(PEAK.load(Ordering::Relaxed) - before);
            assert!(ok, "{name}: the body decodes");
        }
        println!(
            "{:<36} {:>8.1} {:>9.1} {:>12.1} {:>13.2}",
            name,
            mb(len),
            mb(len) / best.as_secs_f64(),
            mb(peak),
            peak as f64 / len as f64
        );
    }
}
