//! JSON helpers shared by the REST codecs of both protocols: numeric elements
//! to and from JSON values with range checks, and nesting of flat values.

use serde_json::{Number, Value};

use crate::DataType;

/// Why a JSON value is not an element of the wanted type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NumberError {
    /// The JSON kind does not fit the type (a string for FP32, a float for INT8, ...).
    Kind,
    /// The value is of the right kind but outside the type's range; holds the
    /// value as JSON text.
    Range(String),
}

/// Appends the little-endian bytes of `value` as one element of `dtype`.
/// Integers must be JSON integers within range; floats accept any JSON number
/// within range; bools accept only `true`/`false`.
pub(crate) fn push_element(
    dtype: DataType,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NumberError> {
    fn int<T: TryFrom<i64> + TryFrom<u64>>(value: &Value) -> Result<T, NumberError> {
        let Value::Number(n) = value else {
            return Err(NumberError::Kind);
        };
        if let Some(i) = n.as_i64() {
            T::try_from(i).map_err(|_| NumberError::Range(n.to_string()))
        } else if let Some(u) = n.as_u64() {
            T::try_from(u).map_err(|_| NumberError::Range(n.to_string()))
        } else {
            Err(NumberError::Kind)
        }
    }
    fn float(value: &Value) -> Result<f64, NumberError> {
        match value {
            Value::Number(n) => n.as_f64().ok_or(NumberError::Kind),
            _ => Err(NumberError::Kind),
        }
    }
    // A finite value is in range when it rounds to a finite value of the
    // type: the shortest text of f32::MAX (`3.4028235e38`, what numpy
    // prints) is a little above it and rounds to it.
    fn narrow<T>(
        value: &Value,
        convert: impl Fn(f64) -> T,
        finite: impl Fn(&T) -> bool,
    ) -> Result<T, NumberError> {
        let v = float(value)?;
        let narrowed = convert(v);
        if v.is_finite() && !finite(&narrowed) {
            Err(NumberError::Range(value.to_string()))
        } else {
            Ok(narrowed)
        }
    }
    match dtype {
        DataType::Bool => match value {
            Value::Bool(b) => out.push(u8::from(*b)),
            _ => return Err(NumberError::Kind),
        },
        DataType::Int8 => out.extend_from_slice(&int::<i8>(value)?.to_le_bytes()),
        DataType::Int16 => out.extend_from_slice(&int::<i16>(value)?.to_le_bytes()),
        DataType::Int32 => out.extend_from_slice(&int::<i32>(value)?.to_le_bytes()),
        DataType::Int64 => out.extend_from_slice(&int::<i64>(value)?.to_le_bytes()),
        DataType::Uint8 => out.extend_from_slice(&int::<u8>(value)?.to_le_bytes()),
        DataType::Uint16 => out.extend_from_slice(&int::<u16>(value)?.to_le_bytes()),
        DataType::Uint32 => out.extend_from_slice(&int::<u32>(value)?.to_le_bytes()),
        DataType::Uint64 => out.extend_from_slice(&int::<u64>(value)?.to_le_bytes()),
        DataType::Fp16 => {
            let v = narrow(value, half::f16::from_f64, |h| h.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Bf16 => {
            let v = narrow(value, half::bf16::from_f64, |h| h.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Fp32 => {
            let v = narrow(value, |v| v as f32, |f| f.is_finite())?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DataType::Fp64 => out.extend_from_slice(&float(value)?.to_le_bytes()),
        DataType::String | DataType::Bytes => return Err(NumberError::Kind),
    }
    Ok(())
}

/// The JSON value of one numeric element of `dtype`, read from exactly
/// `item_size` bytes. Non-finite floats become `null` (JSON has no NaN).
pub(crate) fn element_value(dtype: DataType, b: &[u8]) -> Value {
    fn float(v: f64) -> Value {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
    // The shortest decimal that reads back as the same value at the
    // type's own width (`0.001`, not `0.0010000000474974513`), held as the
    // f64 nearest to it, which serde_json writes with those digits.
    fn float32(v: f32) -> Value {
        if !v.is_finite() {
            return Value::Null;
        }
        float(shortest_f32(v))
    }
    let arr = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&b[..n]);
        a
    };
    match dtype {
        DataType::Bool => Value::Bool(b[0] != 0),
        DataType::Int8 => Value::from(b[0] as i8),
        DataType::Uint8 => Value::from(b[0]),
        DataType::Int16 => Value::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Uint16 => Value::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int32 => Value::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Uint32 => Value::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Int64 => Value::from(i64::from_le_bytes(arr(8))),
        DataType::Uint64 => Value::from(u64::from_le_bytes(arr(8))),
        DataType::Fp16 => {
            let v = half::f16::from_le_bytes([b[0], b[1]]);
            float(shortest_half(v.to_f32(), |d| {
                half::f16::from_f64(d).to_bits() == v.to_bits()
            }))
        }
        DataType::Bf16 => {
            let v = half::bf16::from_le_bytes([b[0], b[1]]);
            float(shortest_half(v.to_f32(), |d| {
                half::bf16::from_f64(d).to_bits() == v.to_bits()
            }))
        }
        DataType::Fp32 => float32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Fp64 => float(f64::from_le_bytes(arr(8))),
        DataType::String | DataType::Bytes => Value::Null,
    }
}

/// The f64 nearest to the shortest decimal that reads back as `v` (finite).
fn shortest_f32(v: f32) -> f64 {
    let mut buffer = ryu::Buffer::new();
    // ryu's output always parses.
    buffer.format_finite(v).parse().unwrap_or(f64::from(v))
}

/// The f64 nearest to the shortest decimal `d` of at most 5 significant
/// digits (enough for every FP16 and BF16 value) for which `same(d)`;
/// `v` itself when `v` is not finite or none is found.
fn shortest_half(v: f32, same: impl Fn(f64) -> bool) -> f64 {
    if v.is_finite() {
        for digits in 0..5 {
            if let Ok(d) = format!("{v:.digits$e}").parse::<f64>()
                && same(d)
            {
                return d;
            }
        }
    }
    f64::from(v)
}

/// Nests flat row-major `values` into arrays of `shape`. A scalar shape `[]`
/// gives the single value itself. The caller guarantees that the number of
/// values equals the element count of `shape`.
pub(crate) fn nest(shape: &[i64], values: &mut impl Iterator<Item = Value>) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&d, rest)) => Value::Array(
            (0..usize::try_from(d).unwrap_or(0))
                .map(|_| nest(rest, values))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element's JSON text, read back through the decoder.
    fn round_trip(dtype: DataType, bytes: &[u8]) -> (String, Vec<u8>) {
        let text = serde_json::to_string(&element_value(dtype, bytes)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let mut back = Vec::new();
        push_element(dtype, &value, &mut back).unwrap();
        (text, back)
    }

    #[test]
    fn floats_are_written_with_the_shortest_text_of_their_own_width() {
        let f32_text = |v: f32| round_trip(DataType::Fp32, &v.to_le_bytes()).0;
        assert_eq!(f32_text(0.001), "0.001");
        assert_eq!(f32_text(0.1), "0.1");
        assert_eq!(f32_text(1.0), "1.0");
        assert_eq!(f32_text(-2.5e-38), "-2.5e-38");
        assert_eq!(f32_text(f32::MAX), "3.4028235e+38");
        assert_eq!(
            element_value(DataType::Fp32, &f32::NAN.to_le_bytes()),
            Value::Null
        );
        let f16 = |v: f32| round_trip(DataType::Fp16, &half::f16::from_f32(v).to_le_bytes()).0;
        assert_eq!(f16(0.1), "0.1");
        assert_eq!(f16(65504.0), "65500.0");
        let bf16 = |v: f32| round_trip(DataType::Bf16, &half::bf16::from_f32(v).to_le_bytes()).0;
        assert_eq!(bf16(0.1), "0.1");
        assert_eq!(bf16(3.0e38), "3e+38");
    }

    #[test]
    fn every_half_value_reads_back_bit_exact() {
        for bits in 0..=u16::MAX {
            for dtype in [DataType::Fp16, DataType::Bf16] {
                let finite = match dtype {
                    DataType::Fp16 => half::f16::from_bits(bits).is_finite(),
                    _ => half::bf16::from_bits(bits).is_finite(),
                };
                if !finite {
                    continue;
                }
                let (text, back) = round_trip(dtype, &bits.to_le_bytes());
                assert_eq!(
                    back,
                    bits.to_le_bytes(),
                    "{dtype:?} {bits:#06x} written {text}"
                );
            }
        }
    }

    #[test]
    fn fp32_values_read_back_bit_exact() {
        // A million bit patterns spread over every exponent, and the edges.
        let mut x: u32 = 0x9E37_79B9;
        let edges = [0u32, 1, 0x007F_FFFF, 0x0080_0000, 0x7F7F_FFFF, 0x8000_0001];
        for i in 0..1_000_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let bits = if (i as usize) < edges.len() {
                edges[i as usize]
            } else {
                x
            };
            let v = f32::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            let (text, back) = round_trip(DataType::Fp32, &bits.to_le_bytes());
            assert_eq!(back, bits.to_le_bytes(), "{bits:#010x} written {text}");
            assert!(text.len() <= 24, "{bits:#010x} written {text}");
        }
    }
}
