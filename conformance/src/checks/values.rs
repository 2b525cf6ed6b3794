//! Random tensors for the round-trip properties, and how results compare.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serving_proto::{DataType, Tensor, TensorData};

use crate::target::{Family, Target, Transport};

/// What a transport can carry exactly, which bounds the values generated.
#[derive(Clone, Copy, Debug)]
pub struct Carrier {
    /// MindSpore REST: replies are untyped JSON numbers, so 64-bit integers
    /// stay within ±2^53 and no dimension is zero.
    pub untyped: bool,
    /// MindSpore: a zero dimension only last (spec §2.4).
    pub zero_last: bool,
}

impl Carrier {
    /// The carrier of a target.
    pub fn of(target: &Target) -> Carrier {
        let rest = target.transport == Transport::Http;
        let ms = target.family == Family::MindSpore;
        Carrier {
            untyped: rest && ms,
            zero_last: ms,
        }
    }
}

/// A random shape of `rank` dimensions of 0 to 3 (1 to 3 where zero sizes
/// cannot travel).
pub fn shape(rank: usize, carrier: Carrier) -> BoxedStrategy<Vec<i64>> {
    let low = if carrier.untyped { 1 } else { 0 };
    proptest::collection::vec(low..=3i64, rank)
        .prop_map(move |mut s| {
            if carrier.zero_last
                && let Some(i) = s.iter().position(|&d| d == 0)
            {
                // Nothing after a zero dimension: make it the last.
                s.truncate(i + 1);
                while s.len() < rank {
                    s.insert(0, 1);
                }
            }
            s
        })
        .boxed()
}

fn finite_bits(dtype: DataType, bytes: &mut [u8]) {
    let item = dtype.item_size().unwrap_or(1);
    for chunk in bytes.chunks_exact_mut(item) {
        match dtype {
            // Clear the top exponent bit: never all ones, so never NaN or ∞.
            DataType::Fp16 | DataType::Bf16 => chunk[1] &= 0b1011_1111,
            DataType::Fp32 => chunk[3] &= 0b1011_1111,
            DataType::Fp64 => chunk[7] &= 0b1011_1111,
            _ => {}
        }
    }
}

/// A random tensor of `dtype` and `shape`.
pub fn tensor(dtype: DataType, shape: Vec<i64>, carrier: Carrier) -> BoxedStrategy<Tensor> {
    let count = shape.iter().product::<i64>() as usize;
    match dtype.item_size() {
        None => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), count)
            .prop_map(move |items| {
                let elements = items
                    .into_iter()
                    .map(|b| {
                        // ONNX string tensors (the identity models) hold UTF-8
                        // only: elements are text, whatever the protocol allows.
                        Bytes::from(
                            b.iter()
                                .map(|c| char::from(b'a' + c % 26))
                                .collect::<String>(),
                        )
                    })
                    .collect();
                Tensor::from_elements(dtype, shape.clone(), elements).expect("count elements")
            })
            .boxed(),
        Some(item) => proptest::collection::vec(any::<u8>(), count * item)
            .prop_map(move |mut raw| {
                if dtype == DataType::Bool {
                    raw.iter_mut().for_each(|b| *b &= 1);
                }
                // NaN and infinity have a check of their own
                // (roundtrip.special_floats); random values are finite.
                finite_bits(dtype, &mut raw);
                if carrier.untyped && matches!(dtype, DataType::Int64 | DataType::Uint64) {
                    // ±2^53: exact as a JSON number in any decoder.
                    for c in raw.chunks_exact_mut(8) {
                        let v = i64::from_le_bytes(c.try_into().expect("8 bytes")) % (1 << 53);
                        let v = if dtype == DataType::Uint64 {
                            v.abs()
                        } else {
                            v
                        };
                        c.copy_from_slice(&v.to_le_bytes());
                    }
                }
                Tensor::from_raw(dtype, shape.clone(), Bytes::from(raw))
                    .expect("count x item bytes")
            })
            .boxed(),
    }
}

/// A test runner seeded by `CONFORMANCE_SEED` (default 0): the random
/// cases are the same from run to run, so a report can be reproduced; set
/// another seed to explore.
pub fn runner() -> TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng};
    let seed: u64 = std::env::var("CONFORMANCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Draws one value from a strategy.
pub fn draw<T: std::fmt::Debug>(runner: &mut TestRunner, s: &BoxedStrategy<T>) -> T {
    s.new_tree(runner)
        .expect("strategies here never reject")
        .current()
}

/// `v` rounded to the float type `dtype` and widened again (other types:
/// `v`).
pub fn at_width(dtype: DataType, v: f64) -> f64 {
    match dtype {
        DataType::Fp16 => half::f16::from_f64(v).to_f64(),
        DataType::Bf16 => half::bf16::from_f64(v).to_f64(),
        DataType::Fp32 => f64::from(v as f32),
        _ => v,
    }
}

/// Whether `got` is `sent` as the transport can carry it: exactly (dtype,
/// shape and bytes), or, for untyped JSON replies, the same shape and the
/// same numbers read at the width of the type sent (a float is written
/// with the shortest text that reads back at its own width: FP32's
/// `-1.8778175e-9` is its value, though as an f64 it is another).
pub fn compare(sent: &Tensor, got: &Tensor, carrier: Carrier) -> Result<(), String> {
    if sent.shape() != got.shape() {
        return Err(format!(
            "shape {:?} came back as {:?}",
            sent.shape(),
            got.shape()
        ));
    }
    if !carrier.untyped {
        if sent != got {
            return Err(format!("{sent:?} came back as {got:?}"));
        }
        return Ok(());
    }
    match (sent.data(), got.data()) {
        (TensorData::Elements(a), TensorData::Elements(b)) if a == b => Ok(()),
        _ if sent.dtype() == DataType::Bool => {
            let a = sent.to_vec::<bool>().map_err(|e| e.to_string())?;
            let b = got
                .to_vec::<bool>()
                .map_err(|e| format!("BOOL came back as {:?}: {e}", got.dtype()))?;
            if a == b {
                Ok(())
            } else {
                Err(format!("{a:?} came back as {b:?}"))
            }
        }
        _ => {
            let a = sent.to_f64_vec().map_err(|e| e.to_string())?;
            let b = got
                .to_f64_vec()
                .map_err(|e| format!("{:?} came back as {:?}: {e}", sent.dtype(), got.dtype()))?;
            let b: Vec<f64> = b.into_iter().map(|v| at_width(sent.dtype(), v)).collect();
            if a == b {
                Ok(())
            } else {
                Err(format!(
                    "{:?} {a:?} came back as {:?} {b:?}",
                    sent.dtype(),
                    got.dtype()
                ))
            }
        }
    }
}

/// Random inputs for `identity`: each in a shape its declared dims allow
/// (each -1 drawn; a batch dimension drawn once for all inputs, 1 to the
/// model's rows), of its type.
pub fn identity_inputs(
    identity: &crate::discovery::IdentityModel,
    runner: &mut TestRunner,
    carrier: Carrier,
) -> Vec<(String, Tensor)> {
    let mut rows = None;
    identity
        .pairs
        .iter()
        .map(|p| {
            let variable = p.dims.iter().filter(|&&d| d < 0).count();
            let mut drawn = draw(runner, &shape(variable, carrier)).into_iter();
            let s: Vec<i64> = p
                .dims
                .iter()
                .enumerate()
                .map(|(i, &d)| match (d < 0, i == 0 && identity.batched()) {
                    (true, true) => {
                        let first = identity.rows(drawn.next().unwrap_or(1));
                        *rows.get_or_insert(first)
                    }
                    (true, false) => drawn.next().unwrap_or(1),
                    (false, _) => d,
                })
                .collect();
            (
                p.input.clone(),
                draw(runner, &tensor(identity.dtype, s, carrier)),
            )
        })
        .collect()
}
