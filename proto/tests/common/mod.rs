//! Proptest strategies shared by the codec tests.
#![allow(dead_code)]

use bytes::Bytes;
use proptest::prelude::*;
use serving_proto::{DataType, Tensor};

/// What the wire form can carry.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Only finite floats (JSON cannot carry NaN or infinities).
    pub finite: bool,
    /// Variable-length elements must be UTF-8 (JSON strings).
    pub utf8: bool,
    /// MindSpore: a zero dimension only in last position.
    pub zero_only_last: bool,
    /// MindSpore inputs: exactly one string/bytes element, shape [] or [1].
    pub single_string: bool,
}

pub const EXACT: Limits = Limits {
    finite: false,
    utf8: false,
    zero_only_last: false,
    single_string: false,
};

pub fn shape(zero_only_last: bool) -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(0i64..4, 0..4).prop_map(move |mut dims| {
        if zero_only_last && let Some(i) = dims.iter().position(|&d| d == 0) {
            dims.truncate(i + 1);
        }
        dims
    })
}

fn count(shape: &[i64]) -> usize {
    shape.iter().product::<i64>() as usize
}

/// Makes raw bytes valid for the type: bools 0/1, and non-finite floats
/// replaced when only finite ones can travel.
fn sanitize(dtype: DataType, raw: &mut [u8], finite: bool) {
    match dtype {
        DataType::Bool => raw.iter_mut().for_each(|b| *b &= 1),
        DataType::Fp16 | DataType::Bf16 if finite => {
            let mask: u16 = if dtype == DataType::Fp16 {
                0x7C00
            } else {
                0x7F80
            };
            for c in raw.chunks_exact_mut(2) {
                if u16::from_le_bytes([c[0], c[1]]) & mask == mask {
                    c.copy_from_slice(&[0, 0]);
                }
            }
        }
        DataType::Fp32 if finite => {
            for c in raw.chunks_exact_mut(4) {
                if !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite() {
                    c.copy_from_slice(&[0; 4]);
                }
            }
        }
        DataType::Fp64 if finite => {
            for c in raw.chunks_exact_mut(8) {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                if !f64::from_le_bytes(a).is_finite() {
                    c.copy_from_slice(&[0; 8]);
                }
            }
        }
        _ => {}
    }
}

pub fn tensor(dtype: DataType, limits: Limits) -> BoxedStrategy<Tensor> {
    let shapes = if dtype.is_variable() && limits.single_string {
        prop_oneof![Just(vec![]), Just(vec![1])].boxed()
    } else {
        shape(limits.zero_only_last).boxed()
    };
    shapes
        .prop_flat_map(move |shape| {
            let n = count(&shape);
            match dtype.item_size() {
                Some(item) => prop::collection::vec(any::<u8>(), n * item)
                    .prop_map(move |mut raw| {
                        sanitize(dtype, &mut raw, limits.finite);
                        Tensor::from_raw(dtype, shape.clone(), Bytes::from(raw)).unwrap()
                    })
                    .boxed(),
                None => {
                    let element = if limits.utf8 || dtype == DataType::String {
                        ".{0,6}"
                            .prop_map(|s: String| Bytes::from(s.into_bytes()))
                            .boxed()
                    } else {
                        prop::collection::vec(any::<u8>(), 0..6)
                            .prop_map(Bytes::from)
                            .boxed()
                    };
                    prop::collection::vec(element, n)
                        .prop_map(move |elements| {
                            Tensor::from_elements(dtype, shape.clone(), elements).unwrap()
                        })
                        .boxed()
                }
            }
        })
        .boxed()
}

/// A tensor of any of `dtypes`.
pub fn any_tensor(dtypes: &[DataType], limits: Limits) -> BoxedStrategy<Tensor> {
    let dtypes = dtypes.to_vec();
    prop::sample::select(dtypes)
        .prop_flat_map(move |d| tensor(d, limits))
        .boxed()
}

pub fn all_but(excluded: &[DataType]) -> Vec<DataType> {
    DataType::ALL
        .into_iter()
        .filter(|d| !excluded.contains(d))
        .collect()
}

/// Named tensors `t0`, `t1`, ...
pub fn named(
    dtypes: &[DataType],
    limits: Limits,
) -> impl Strategy<Value = serving_proto::NamedTensors> + use<> {
    prop::collection::vec(any_tensor(dtypes, limits), 1..4).prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .map(|(i, t)| (format!("t{i}"), t))
            .collect()
    })
}
