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
    fn narrow(value: &Value, v: f64, max: f64) -> Result<f64, NumberError> {
        if v.is_finite() && v.abs() > max {
            Err(NumberError::Range(value.to_string()))
        } else {
            Ok(v)
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
            let v = narrow(value, float(value)?, f64::from(half::f16::MAX))?;
            out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes());
        }
        DataType::Bf16 => {
            let v = narrow(value, float(value)?, f64::from(half::bf16::MAX))?;
            out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes());
        }
        DataType::Fp32 => {
            let v = narrow(value, float(value)?, f64::from(f32::MAX))?;
            out.extend_from_slice(&(v as f32).to_le_bytes());
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
        DataType::Fp16 => float(half::f16::from_le_bytes([b[0], b[1]]).to_f64()),
        DataType::Bf16 => float(half::bf16::from_le_bytes([b[0], b[1]]).to_f64()),
        DataType::Fp32 => float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::Fp64 => float(f64::from_le_bytes(arr(8))),
        DataType::String | DataType::Bytes => Value::Null,
    }
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
