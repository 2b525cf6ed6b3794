//! Tensor data in the forms both OIP transports share: raw little-endian
//! bytes with 4-byte length-prefixed BYTES elements (gRPC raw contents and
//! the REST binary extension), and typed `InferTensorContents`.

use bytes::{BufMut, Bytes, BytesMut};

use super::{OipError, checked_count};
use crate::pb::inference::InferTensorContents;
use crate::{DataType, Tensor, TensorData};

/// Decodes raw data of a tensor. Numeric data is not copied: the tensor
/// shares `raw`. BYTES elements are slices of `raw`.
pub(crate) fn decode_raw(
    name: &str,
    dtype: DataType,
    shape: Vec<i64>,
    raw: Bytes,
) -> Result<Tensor, OipError> {
    let count = checked_count(name, dtype, &shape)?;
    let Some(item) = dtype.item_size() else {
        let elements = split_bytes_elements(name, &raw, count, &shape)?;
        return Tensor::from_elements(dtype, shape.clone(), elements).map_err(|_| {
            OipError::Shape {
                name: name.to_owned(),
                shape,
            }
        });
    };
    let expected = (count * item) as u64;
    if raw.len() as u64 != expected {
        return Err(OipError::DataSize {
            name: name.to_owned(),
            datatype: dtype,
            shape,
            expected,
            actual: raw.len() as u64,
        });
    }
    Tensor::from_raw(dtype, shape.clone(), raw).map_err(super::value_error(name, shape))
}

/// Splits 4-byte little-endian length-prefixed elements; exactly `count` of
/// them must fill `raw`.
fn split_bytes_elements(
    name: &str,
    raw: &Bytes,
    count: usize,
    shape: &[i64],
) -> Result<Vec<Bytes>, OipError> {
    // Each element takes at least 4 bytes: never reserve more than the input holds.
    let mut elements = Vec::with_capacity(count.min(raw.len() / 4));
    let mut offset = 0usize;
    while offset < raw.len() {
        let index = elements.len();
        let available = raw.len() - offset;
        if available < 4 {
            return Err(OipError::BytesElement {
                name: name.to_owned(),
                index,
                offset,
                declared: 4,
                available,
            });
        }
        let prefix = [
            raw[offset],
            raw[offset + 1],
            raw[offset + 2],
            raw[offset + 3],
        ];
        let declared = u32::from_le_bytes(prefix) as usize;
        if declared > available - 4 {
            return Err(OipError::BytesElement {
                name: name.to_owned(),
                index,
                offset,
                declared: declared as u64,
                available: available - 4,
            });
        }
        elements.push(raw.slice(offset + 4..offset + 4 + declared));
        offset += 4 + declared;
    }
    if elements.len() != count {
        return Err(OipError::ElementCount {
            name: name.to_owned(),
            shape: shape.to_vec(),
            expected: count as u64,
            actual: elements.len() as u64,
        });
    }
    Ok(elements)
}

/// The raw form of a tensor: shared bytes for numeric data, length-prefixed
/// elements for BYTES (the one case that must copy).
pub(crate) fn encode_raw(t: &Tensor) -> Bytes {
    match t.data() {
        TensorData::Raw(raw) => raw.clone(),
        TensorData::Elements(elements) => {
            let mut out = BytesMut::with_capacity(raw_len(t));
            for e in elements {
                out.put_u32_le(e.len() as u32);
                out.put_slice(e);
            }
            out.freeze()
        }
    }
}

/// The size of [`encode_raw`]'s output, without building it.
pub(crate) fn raw_len(t: &Tensor) -> usize {
    match t.data() {
        TensorData::Raw(raw) => raw.len(),
        TensorData::Elements(elements) => elements.iter().map(|e| 4 + e.len()).sum(),
    }
}

/// Whether typed contents cannot carry this type (FP16 and BF16 must be raw).
pub(crate) fn needs_raw(dtype: DataType) -> bool {
    matches!(dtype, DataType::Fp16 | DataType::Bf16)
}

fn field_for(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes | DataType::String => "bytes_contents",
        DataType::Fp16 | DataType::Bf16 => "raw contents",
    }
}

fn filled_fields(c: &InferTensorContents) -> usize {
    [
        !c.bool_contents.is_empty(),
        !c.int_contents.is_empty(),
        !c.int64_contents.is_empty(),
        !c.uint_contents.is_empty(),
        !c.uint64_contents.is_empty(),
        !c.fp32_contents.is_empty(),
        !c.fp64_contents.is_empty(),
        !c.bytes_contents.is_empty(),
    ]
    .into_iter()
    .filter(|&f| f)
    .count()
}

/// Whether typed contents hold any element.
pub(crate) fn has_typed(c: &Option<InferTensorContents>) -> bool {
    c.as_ref().is_some_and(|c| filled_fields(c) > 0)
}

/// Decodes typed contents, checking the field, the element count and the
/// range of narrow integer types.
pub(crate) fn decode_typed(
    name: &str,
    dtype: DataType,
    shape: Vec<i64>,
    contents: InferTensorContents,
) -> Result<Tensor, OipError> {
    let count = checked_count(name, dtype, &shape)?;
    let wrong = || OipError::WrongContents {
        name: name.to_owned(),
        datatype: dtype,
        expected: field_for(dtype),
    };
    if needs_raw(dtype) && count > 0 {
        return Err(wrong());
    }
    let given = match dtype {
        DataType::Bool => contents.bool_contents.len(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => contents.int_contents.len(),
        DataType::Int64 => contents.int64_contents.len(),
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => contents.uint_contents.len(),
        DataType::Uint64 => contents.uint64_contents.len(),
        DataType::Fp32 => contents.fp32_contents.len(),
        DataType::Fp64 => contents.fp64_contents.len(),
        DataType::Bytes | DataType::String => contents.bytes_contents.len(),
        DataType::Fp16 | DataType::Bf16 => 0,
    };
    if filled_fields(&contents) > usize::from(given > 0) {
        return Err(wrong());
    }
    if given != count {
        return Err(OipError::ElementCount {
            name: name.to_owned(),
            shape,
            expected: count as u64,
            actual: given as u64,
        });
    }
    let range = |value: String| OipError::ValueRange {
        name: name.to_owned(),
        datatype: dtype,
        value,
    };
    let mut raw = Vec::with_capacity(count * dtype.item_size().unwrap_or(0));
    match dtype {
        DataType::Bool => raw.extend(contents.bool_contents.iter().map(|&b| u8::from(b))),
        DataType::Int8 => {
            for &v in &contents.int_contents {
                raw.extend_from_slice(
                    &i8::try_from(v)
                        .map_err(|_| range(v.to_string()))?
                        .to_le_bytes(),
                );
            }
        }
        DataType::Int16 => {
            for &v in &contents.int_contents {
                raw.extend_from_slice(
                    &i16::try_from(v)
                        .map_err(|_| range(v.to_string()))?
                        .to_le_bytes(),
                );
            }
        }
        DataType::Int32 => contents
            .int_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Int64 => contents
            .int64_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Uint8 => {
            for &v in &contents.uint_contents {
                raw.extend_from_slice(
                    &u8::try_from(v)
                        .map_err(|_| range(v.to_string()))?
                        .to_le_bytes(),
                );
            }
        }
        DataType::Uint16 => {
            for &v in &contents.uint_contents {
                raw.extend_from_slice(
                    &u16::try_from(v)
                        .map_err(|_| range(v.to_string()))?
                        .to_le_bytes(),
                );
            }
        }
        DataType::Uint32 => contents
            .uint_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Uint64 => contents
            .uint64_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Fp32 => contents
            .fp32_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Fp64 => contents
            .fp64_contents
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes())),
        DataType::Fp16 | DataType::Bf16 => {}
        DataType::Bytes | DataType::String => {
            return Tensor::from_elements(dtype, shape.clone(), contents.bytes_contents).map_err(
                |_| OipError::Shape {
                    name: name.to_owned(),
                    shape,
                },
            );
        }
    }
    Tensor::from_raw(dtype, shape.clone(), Bytes::from(raw))
        .map_err(super::value_error(name, shape))
}

/// Typed contents of a tensor whose type has a typed field (not FP16/BF16).
pub(crate) fn encode_typed(t: &Tensor) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    let raw = match t.data() {
        TensorData::Elements(elements) => {
            c.bytes_contents = elements.clone();
            return c;
        }
        TensorData::Raw(raw) => raw,
    };
    let item = t.dtype().item_size().unwrap_or(1);
    let chunks = raw.chunks_exact(item);
    let le4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let le8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    match t.dtype() {
        DataType::Bool => c.bool_contents = chunks.map(|b| b[0] != 0).collect(),
        DataType::Int8 => c.int_contents = chunks.map(|b| i32::from(b[0] as i8)).collect(),
        DataType::Int16 => {
            c.int_contents = chunks
                .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
                .collect()
        }
        DataType::Int32 => c.int_contents = chunks.map(|b| i32::from_le_bytes(le4(b))).collect(),
        DataType::Int64 => c.int64_contents = chunks.map(|b| i64::from_le_bytes(le8(b))).collect(),
        DataType::Uint8 => c.uint_contents = chunks.map(|b| u32::from(b[0])).collect(),
        DataType::Uint16 => {
            c.uint_contents = chunks
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .collect()
        }
        DataType::Uint32 => c.uint_contents = chunks.map(|b| u32::from_le_bytes(le4(b))).collect(),
        DataType::Uint64 => {
            c.uint64_contents = chunks.map(|b| u64::from_le_bytes(le8(b))).collect()
        }
        DataType::Fp32 => c.fp32_contents = chunks.map(|b| f32::from_le_bytes(le4(b))).collect(),
        DataType::Fp64 => c.fp64_contents = chunks.map(|b| f64::from_le_bytes(le8(b))).collect(),
        DataType::Fp16 | DataType::Bf16 | DataType::String | DataType::Bytes => {}
    }
    c
}
