//! The REST JSON decoders allocate in proportion to the body: this binary
//! counts every live byte with its own allocator and checks the peak
//! during `oip::rest::decode_request`, `oip::rest::decode_response` and
//! `mindspore::rest::decode_request` on bodies of many shapes (large flat
//! and deeply nested arrays, many tiny tensors and instances, long strings,
//! b64, refused bodies) and on generated ones.
//!
//! The bound, for a body of `n` bytes whose decoded result (or error) still
//! holds `r` bytes once the decoder returns, `C` = 64 KiB:
//!
//! * every body: peak <= `1.5 r + n + C`. Beyond the result, a decode
//!   holds at most one unescaped string (serde_json's scratch buffer) and
//!   the vectors of the result while they grow (counted here as moves: the
//!   old block and the new one both live);
//! * except objects of many small entries (`parameters`, an instance's
//!   inputs), which cost what the map they become costs while they are
//!   read even when the body is then refused: peak <= `1.5 r + 7 n + C`;
//! * one large numeric tensor: peak <= `n + C` when an element takes at
//!   least as many bytes of text as of tensor (`[0.5,1.25,...]` as FP32),
//!   `2n + C` for `[0,0,...]` as FP32 or INT32 (the tensor itself is `2n`;
//!   with the body, the process holds `3n`).
//!
//! The tree-based decoders these replaced peaked at 6 to 30 times the body
//! (a `serde_json::Value` per element).
//!
//! One test function only: the counter is process-wide, and a second test
//! running beside it would add its own allocations.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serving_proto::gather::Budget;
use serving_proto::json_charge;
use serving_proto::mindspore::rest as ms;
use serving_proto::oip::rest as oip;

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
        // Counted as a move: the old and the new block both live for a
        // moment.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes above the start while running `f`, and the bytes its result
/// still holds.
fn measure<T>(f: impl FnOnce() -> T) -> (usize, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed) - start;
    let retained = LIVE.load(Ordering::Relaxed).saturating_sub(start);
    drop(out);
    (peak, retained)
}

const SLACK: usize = 64 << 10;

/// Decodes `bytes` with `decoder` under `json_charge::charged` with a
/// budget of `limit`: the peak, what the result holds, and the charge (or
/// `None`, refused).
fn decode_charged(decoder: Decoder, bytes: &Bytes, limit: u64) -> (usize, usize, Option<u64>) {
    let budget = Arc::new(Budget::new(limit));
    let mut charged = None;
    let (peak, retained) = measure(|| {
        let r = json_charge::charged(budget.charge(0).unwrap(), || match decoder {
            Decoder::OipRequest => oip::decode_request(bytes.clone(), None).map(|_| ()).is_ok(),
            Decoder::MindSpore => ms::decode_request(bytes, usize::MAX).map(|_| ()).is_ok(),
            Decoder::OipResponse => unreachable!("replies are decoded by clients, uncharged"),
        });
        charged = r.as_ref().ok().map(|(_, c)| c.bytes());
        r
    });
    assert_eq!(budget.held(), 0, "given back");
    (peak, retained, charged)
}

/// The charge covers what a decode builds: what its result holds is
/// charged, its peak is within the charge, the parse state (a body's
/// worth) and the slack, and with half that budget it is refused having
/// held no more than the budget allowed.
fn check_charged(decoder: Decoder, what: &str, body: &[u8], per_byte: usize) {
    let bytes = Bytes::copy_from_slice(body);
    let n = body.len();
    let (peak, retained, charged) = decode_charged(decoder, &bytes, u64::MAX / 2);
    let charged = charged.expect("an unlimited budget refuses nothing") as usize;
    assert!(
        charged + SLACK >= retained,
        "{decoder:?} {what}: the result holds {retained} bytes, {charged} charged"
    );
    assert!(
        peak <= charged + charged / 2 + per_byte * n + SLACK,
        "{decoder:?} {what}: peak {peak} bytes, {charged} charged, body {n}"
    );
    if charged > 4 * SLACK {
        let limit = charged / 2;
        let (peak, _, refused) = decode_charged(decoder, &bytes, limit as u64);
        assert_eq!(refused, None, "{decoder:?} {what}: fits half its charge");
        assert!(
            peak <= limit + limit / 2 + per_byte * n + SLACK,
            "{decoder:?} {what}: refused at {limit} bytes of budget, peak {peak}"
        );
    }
}

/// Which decoder a body is for.
#[derive(Clone, Copy, Debug)]
enum Decoder {
    OipRequest,
    OipResponse,
    MindSpore,
}

/// What a body is, for its bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anything.
    Any,
    /// An object of many small entries.
    ManyEntries,
    /// One large numeric tensor, at least one byte of text per byte of
    /// tensor.
    Tensor,
    /// One large FP32 or INT32 tensor of `[0,0,...]`.
    Zeros,
}

/// Decodes `body` and checks the bound; returns (peak, retained).
fn check(decoder: Decoder, kind: Kind, what: &str, body: &[u8]) -> (usize, usize) {
    let bytes = Bytes::copy_from_slice(body);
    let (peak, retained) = match decoder {
        Decoder::OipRequest => measure(|| oip::decode_request(bytes.clone(), None)),
        Decoder::OipResponse => measure(|| oip::decode_response(bytes.clone(), None)),
        Decoder::MindSpore => measure(|| ms::decode_request(&bytes, usize::MAX)),
    };
    let n = body.len();
    let per_byte = if kind == Kind::ManyEntries { 7 } else { 1 };
    assert!(
        peak <= retained + retained / 2 + per_byte * n + SLACK,
        "{decoder:?} {what}: peak {peak} bytes, result {retained}, body {n}"
    );
    let tight = match kind {
        Kind::Tensor => n,
        Kind::Zeros => 2 * n,
        Kind::Any | Kind::ManyEntries => usize::MAX - SLACK,
    };
    assert!(
        peak <= tight + SLACK,
        "{decoder:?} {what}: peak {peak} bytes for one tensor in a body of {n}"
    );
    if !matches!(decoder, Decoder::OipResponse) {
        check_charged(decoder, what, body, per_byte);
    }
    (peak, retained)
}

fn leaves(n: usize, leaf: impl Fn(usize) -> String) -> String {
    let items: Vec<String> = (0..n).map(leaf).collect();
    format!("[{}]", items.join(","))
}

fn oip_tensor(dtype: &str, shape: &str, data: &str) -> String {
    format!(r#"{{"name":"x","datatype":"{dtype}","shape":{shape},"data":{data}}}"#)
}

fn oip_body(tensors: &[String]) -> String {
    format!(r#"{{"inputs":[{}]}}"#, tensors.join(","))
}

fn entries(n: usize, prefix: &str) -> String {
    let e: Vec<String> = (0..n).map(|i| format!("\"{prefix}{i}\":{i}")).collect();
    e.join(",")
}

/// Named bodies for each decoder: large, nested, many small parts, long
/// strings, refused.
fn shapes() -> Vec<(Decoder, Kind, String, String)> {
    const N: usize = 1 << 18;
    let mut out = Vec::new();
    let mut oip = |kind: Kind, what: &str, body: String| {
        out.push((Decoder::OipRequest, kind, what.to_owned(), body.clone()));
        let response = body.replacen("{\"inputs\":", "{\"model_name\":\"m\",\"outputs\":", 1);
        out.push((Decoder::OipResponse, kind, what.to_owned(), response));
    };
    let frac = |i: usize| format!("{}.{}", i % 1000, i % 7);
    let flat = |dtype: &str, leaf: &dyn Fn(usize) -> String| {
        oip_body(&[oip_tensor(dtype, &format!("[{N}]"), &leaves(N, leaf))])
    };
    oip(Kind::Tensor, "FP32 fractions", flat("FP32", &frac));
    oip(Kind::Zeros, "FP32 zeros", flat("FP32", &|_| "0".into()));
    oip(Kind::Any, "INT64 zeros", flat("INT64", &|_| "0".into()));
    oip(
        Kind::Tensor,
        "INT8",
        flat("INT8", &|i| (i % 100).to_string()),
    );
    oip(
        Kind::Tensor,
        "BOOL",
        flat("BOOL", &|i| (i % 2 == 0).to_string()),
    );
    oip(Kind::Tensor, "FP16", flat("FP16", &frac));
    let rows = leaves(N / 256, |_| leaves(256, frac));
    let shape = format!("[{},256]", N / 256);
    oip(
        Kind::Tensor,
        "FP32 rows",
        oip_body(&[oip_tensor("FP32", &shape, &rows)]),
    );
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let ones = vec!["1"; 100].join(",");
    let deep_tensor = oip_tensor("INT32", &format!("[{ones}]"), &deep);
    oip(
        Kind::Any,
        "deeply nested",
        oip_body(&vec![deep_tensor; 2000]),
    );
    let tiny = oip_tensor("FP32", "[1]", "[0.5]");
    oip(
        Kind::Any,
        "many tiny tensors",
        oip_body(&vec![tiny; 50_000]),
    );
    let empty = oip_tensor("FP32", "[0]", "[]");
    oip(
        Kind::Any,
        "many empty tensors",
        oip_body(&vec![empty; 50_000]),
    );
    oip(
        Kind::Any,
        "many empty objects",
        oip_body(&vec!["{}".to_owned(); 300_000]),
    );
    oip(
        Kind::Any,
        "BYTES short strings",
        flat("BYTES", &|_| "\"ab\"".into()),
    );
    oip(
        Kind::Any,
        "BYTES empty strings",
        flat("BYTES", &|_| "\"\"".into()),
    );
    let long = format!("\"{}\"", "a\\n".repeat(N));
    let one_long = oip_tensor("BYTES", "[1]", &format!("[{long}]"));
    oip(Kind::Any, "BYTES one long string", oip_body(&[one_long]));
    let named = format!(r#"{{"name":{long},"datatype":"FP32","shape":[1],"data":[1]}}"#);
    oip(Kind::Any, "long name", oip_body(&[named]));
    let in_fp32 = oip_tensor("FP32", "[2]", &format!("[1,{long}]"));
    oip(Kind::Any, "long string in FP32", oip_body(&[in_fp32]));
    let object = format!("{{\"k\":{}}}", leaves(N, |_| "0".into()));
    let object_leaf = oip_tensor("FP32", "[2]", &format!("[1,{object}]"));
    oip(Kind::Any, "large object leaf", oip_body(&[object_leaf]));
    let mismatch = oip_tensor("FP32", &format!("[{}]", N + 1), &leaves(N, frac));
    oip(Kind::Any, "count mismatch", oip_body(&[mismatch]));
    let far = oip_tensor("FP32", "[1000000000000]", &leaves(N, frac));
    oip(Kind::Any, "shape far above data", oip_body(&[far]));
    let unknown = oip_tensor("XYZ", &format!("[{N}]"), &leaves(N, frac));
    oip(Kind::Any, "unknown datatype", oip_body(&[unknown]));
    let huge_shape = oip_tensor("FP32", &leaves(N, |_| "0".into()), "[]");
    oip(Kind::Any, "huge shape", oip_body(&[huge_shape]));
    let params = entries(N / 16, "p");
    let body = format!(r#"{{"parameters":{{{params}}},"inputs":[]}}"#);
    oip(Kind::ManyEntries, "many parameters", body);
    let body = format!(r#"{{"parameters":{{"a":[1],{params}}},"inputs":[]}}"#);
    oip(Kind::ManyEntries, "many parameters, one refused", body);
    let body = format!(r#"{{"junk":{},"inputs":[]}}"#, leaves(N, frac));
    oip(Kind::Any, "large unknown field", body);
    let mut truncated = flat("FP32", &frac);
    truncated.truncate(truncated.len() - 10);
    oip(Kind::Any, "truncated", truncated);
    oip(Kind::Any, "not JSON", "[".repeat(N));

    let mut ms = |kind: Kind, what: &str, body: String| {
        out.push((Decoder::MindSpore, kind, what.to_owned(), body));
    };
    ms(
        Kind::Tensor,
        "FP32 rows",
        format!(r#"{{"instances":[{{"x":{rows}}}]}}"#),
    );
    let zero_rows = leaves(N / 256, |_| leaves(256, |_| "0".into()));
    ms(
        Kind::Zeros,
        "INT32 zeros",
        format!(r#"{{"instances":[{{"x":{zero_rows}}}]}}"#),
    );
    let bools = leaves(N, |i| (i % 2 == 0).to_string());
    ms(
        Kind::Tensor,
        "BOOL flat",
        format!(r#"{{"instances":{{"x":{bools}}}}}"#),
    );
    let small = r#"{"x":[[0.5,1.5],[2.5,3.5]],"y":7,"z":"s"}"#;
    let body = format!(r#"{{"instances":[{}]}}"#, vec![small; 20_000].join(","));
    ms(Kind::Any, "many small instances", body);
    let body = format!(
        r#"{{"instances":[{{"x":1}},{}]}}"#,
        vec!["{}"; 300_000].join(",")
    );
    ms(Kind::Any, "many empty instances", body);
    let inputs = entries(N / 16, "i");
    ms(
        Kind::ManyEntries,
        "many inputs",
        format!(r#"{{"instances":{{{inputs}}}}}"#),
    );
    let body = format!(r#"{{"instances":{{"":1,{inputs}}}}}"#);
    ms(Kind::ManyEntries, "many inputs, one refused", body);
    ms(
        Kind::Any,
        "deeply nested",
        format!(r#"{{"instances":[{{"x":{deep}}}]}}"#),
    );
    ms(
        Kind::Any,
        "long string",
        format!(r#"{{"instances":{{"x":{long}}}}}"#),
    );
    let b64 = "A".repeat(4 * (N / 3));
    let count = 3 * (N / 3);
    let body =
        format!(r#"{{"instances":{{"x":{{"b64":"{b64}","type":"int8","shape":[{count}]}}}}}}"#);
    ms(Kind::Any, "b64 bytes", body);
    ms(
        Kind::Any,
        "b64 in array",
        format!(r#"{{"instances":{{"x":[[{{"b64":"{b64}"}}]]}}}}"#),
    );
    ms(
        Kind::Any,
        "b64 illegal",
        format!(r#"{{"instances":{{"x":{{"b64":"{b64}*"}}}}}}"#),
    );
    let shape = format!("[0,{}]", vec!["1E15"; N / 8].join(","));
    let body = format!(r#"{{"instances":{{"x":{{"b64":"","shape":{shape}}}}}}}"#);
    ms(Kind::Any, "b64 invalid shape", body);
    let ragged = leaves(N / 256, |i| leaves(if i == 5 { 255 } else { 256 }, frac));
    ms(
        Kind::Any,
        "ragged",
        format!(r#"{{"instances":[{{"x":{ragged}}}]}}"#),
    );
    let mixed = format!(r#"{{"instances":[{{"x":[1,{}]}}]}}"#, &leaves(N, frac)[1..]);
    ms(Kind::Any, "mixed kinds", mixed);
    ms(
        Kind::Any,
        "truncated",
        format!(r#"{{"instances":[{{"x":{rows}}}"#),
    );
    out
}

/// A JSON text of a few levels, made to weigh: some arrays repeat their
/// element hundreds of times.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (-5i64..300).prop_map(|v| v.to_string()),
        (-1e3f64..1e3).prop_map(|v| format!("{v:?}")),
        Just("true".to_owned()),
        Just("null".to_owned()),
        "[a-z\\\\\"]{0,6}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            (inner.clone(), 0usize..400).prop_map(|(v, n)| format!("[{}]", vec![v; n].join(","))),
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{0,3}|b64|type|shape", inner), 0..4).prop_map(|e| {
                let mut s = String::from("{");
                for (i, (k, v)) in e.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    let _ = write!(s, "\"{k}\":{v}");
                }
                s.push('}');
                s
            }),
        ]
    })
}

fn generated_oip() -> impl Strategy<Value = String> {
    let dtype = prop::sample::select(vec!["FP32", "INT64", "INT8", "BOOL", "BYTES", "FP16", "X"]);
    let shape = prop_oneof![
        prop::collection::vec(0usize..500, 0..3).prop_map(|d| {
            let d: Vec<String> = d.iter().map(usize::to_string).collect();
            format!("[{}]", d.join(","))
        }),
        json_value(),
    ];
    let tensor = (dtype, shape, json_value()).prop_map(|(d, s, v)| oip_tensor(d, &s, &v));
    (prop::collection::vec(tensor, 0..4), 1usize..50).prop_map(|(t, times)| {
        let mut all = Vec::new();
        for _ in 0..times {
            all.extend(t.iter().cloned());
        }
        oip_body(&all)
    })
}

fn generated_ms() -> impl Strategy<Value = String> {
    let instance = prop::collection::vec(("[a-z]{0,2}", json_value()), 0..4).prop_map(|e| {
        let parts: Vec<String> = e.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", parts.join(","))
    });
    (prop::collection::vec(instance, 0..4), 1usize..50).prop_map(|(i, times)| {
        format!(
            r#"{{"instances":[{}]}}"#,
            vec![i.join(","); times].join(",")
        )
    })
}

#[test]
fn json_decoders_allocate_in_proportion_to_the_body() {
    let mut report = String::new();
    for (decoder, kind, what, body) in shapes() {
        let (peak, retained) = check(decoder, kind, &what, body.as_bytes());
        let n = body.len() as f64;
        let _ = writeln!(
            report,
            "{decoder:?} {what}: {} bytes, peak {:.2}x, result {:.2}x",
            body.len(),
            peak as f64 / n,
            retained as f64 / n
        );
    }
    println!("{report}");

    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&generated_oip(), |body| {
            check(Decoder::OipRequest, Kind::Any, "generated", body.as_bytes());
            Ok(())
        })
        .unwrap();
    runner
        .run(&generated_ms(), |body| {
            check(Decoder::MindSpore, Kind::Any, "generated", body.as_bytes());
            Ok(())
        })
        .unwrap();
}
