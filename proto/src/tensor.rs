//! [`Tensor`]: one protocol-neutral tensor, validated on construction.

use std::fmt;

use bytes::Bytes;

use crate::DataType;

/// The payload of a [`Tensor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorData {
    /// Numeric elements: row-major, little-endian, no padding.
    Raw(Bytes),
    /// One byte string per element, for `String` and `Bytes` tensors.
    Elements(Vec<Bytes>),
}

/// A tensor: data type, shape and data, always consistent with each other.
///
/// Numeric data is held as [`Bytes`], so a tensor decoded from a protobuf
/// message shares the message's buffer instead of copying it.
///
/// ```
/// use serving_proto::{DataType, Tensor};
///
/// let t = Tensor::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0])?;
/// assert_eq!(t.dtype(), DataType::Fp32);
/// assert_eq!(t.element_count(), 4);
/// assert_eq!(t.to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), serving_proto::TensorError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<i64>,
    data: TensorData,
}

/// Why a tensor could not be built: its parts disagree.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// A BOOL element that is neither 0 nor 1 (found by fuzzing).
    #[error("BOOL element {index} is byte {value:#04x}; BOOL elements are 0 (false) or 1 (true)")]
    InvalidBool {
        /// The element's index, row-major.
        index: usize,
        /// Its byte.
        value: u8,
    },
    /// A dimension is negative.
    #[error("shape {} has a negative dimension", ShapeDisplay(.shape))]
    NegativeDim {
        /// The offending shape.
        shape: Vec<i64>,
    },
    /// The element count or byte size of the shape does not fit in memory.
    #[error("shape {} of {dtype} overflows the addressable size", ShapeDisplay(.shape))]
    Overflow {
        /// The type.
        dtype: DataType,
        /// The offending shape.
        shape: Vec<i64>,
    },
    /// Raw data of the wrong length.
    #[error(
        "{dtype} tensor of shape {} needs {expected} bytes of data but has {actual}",
        ShapeDisplay(.shape)
    )]
    DataSize {
        /// The type.
        dtype: DataType,
        /// The shape.
        shape: Vec<i64>,
        /// Element count times item size.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A variable-length tensor with the wrong number of elements.
    #[error(
        "{dtype} tensor of shape {} needs {expected} elements but has {actual}",
        ShapeDisplay(.shape)
    )]
    ElementCount {
        /// The type.
        dtype: DataType,
        /// The shape.
        shape: Vec<i64>,
        /// The element count of the shape.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// Raw bytes given for a variable-length type, or elements for a numeric one.
    #[error("{dtype} tensors hold {expected}, not {given}")]
    DataKind {
        /// The type.
        dtype: DataType,
        /// What the type needs.
        expected: &'static str,
        /// What was given.
        given: &'static str,
    },
    /// A response has no output of the name asked for.
    #[error("no output named '{}' in the response (outputs: {})", crate::text::quote(.name), crate::text::quote(&.present.join(", ")))]
    NoOutput {
        /// The name asked for.
        name: String,
        /// The outputs the response has.
        present: Vec<String>,
    },
    /// The tensor's type is not the one asked for.
    #[error("tensor is {actual}, not {requested}")]
    TypeMismatch {
        /// The type asked for.
        requested: DataType,
        /// The tensor's type.
        actual: DataType,
    },
}

/// The number of elements of `shape` (1 for a scalar `[]`), checked for
/// negative dimensions and overflow.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).ok()?;
        acc.checked_mul(d)
    })
}

/// The byte size of a numeric tensor of `dtype` and `shape`; `None` for a
/// variable-length type, a negative dimension or overflow.
pub fn byte_size(dtype: DataType, shape: &[i64]) -> Option<usize> {
    element_count(shape)?.checked_mul(dtype.item_size()?)
}

/// Formats a shape as `[2, 2]`.
#[derive(Clone, Copy)]
pub struct ShapeDisplay<'a>(pub &'a [i64]);

/// The most dimensions [`ShapeDisplay`] writes: a shape comes from the
/// request, and an error text must not grow with it.
pub const SHAPE_DISPLAY_MAX: usize = 16;

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().take(SHAPE_DISPLAY_MAX).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > SHAPE_DISPLAY_MAX {
            write!(f, ", ...({} more)", self.0.len() - SHAPE_DISPLAY_MAX)?;
        }
        f.write_str("]")
    }
}

impl Tensor {
    /// Builds a tensor, checking that shape, type and data agree.
    pub fn new(dtype: DataType, shape: Vec<i64>, data: TensorData) -> Result<Tensor, TensorError> {
        if shape.iter().any(|&d| d < 0) {
            return Err(TensorError::NegativeDim { shape });
        }
        let Some(count) = element_count(&shape) else {
            return Err(TensorError::Overflow { dtype, shape });
        };
        match (&data, dtype.item_size()) {
            (TensorData::Raw(raw), Some(item)) => {
                let Some(expected) = count.checked_mul(item) else {
                    return Err(TensorError::Overflow { dtype, shape });
                };
                if raw.len() != expected {
                    return Err(TensorError::DataSize {
                        dtype,
                        shape,
                        expected,
                        actual: raw.len(),
                    });
                }
                // A BOOL byte other than 0 or 1 is no bool: runtimes that
                // read it as C++ `bool` behave undefined, and re-encoding it
                // would change it.
                if dtype == DataType::Bool
                    && let Some(index) = raw.iter().position(|&b| b > 1)
                {
                    return Err(TensorError::InvalidBool {
                        index,
                        value: raw[index],
                    });
                }
            }
            (TensorData::Elements(elements), None) => {
                if elements.len() != count {
                    return Err(TensorError::ElementCount {
                        dtype,
                        shape,
                        expected: count,
                        actual: elements.len(),
                    });
                }
            }
            (TensorData::Raw(_), None) => {
                return Err(TensorError::DataKind {
                    dtype,
                    expected: "one byte string per element",
                    given: "raw bytes",
                });
            }
            (TensorData::Elements(_), Some(_)) => {
                return Err(TensorError::DataKind {
                    dtype,
                    expected: "raw little-endian bytes",
                    given: "a list of byte strings",
                });
            }
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A numeric tensor over raw little-endian bytes (not copied).
    pub fn from_raw(dtype: DataType, shape: Vec<i64>, raw: Bytes) -> Result<Tensor, TensorError> {
        Tensor::new(dtype, shape, TensorData::Raw(raw))
    }

    /// A `String` or `Bytes` tensor, one byte string per element.
    pub fn from_elements(
        dtype: DataType,
        shape: Vec<i64>,
        elements: Vec<Bytes>,
    ) -> Result<Tensor, TensorError> {
        Tensor::new(dtype, shape, TensorData::Elements(elements))
    }

    /// A numeric tensor from a slice of values in row-major order.
    pub fn from_slice<T: Element>(shape: &[i64], values: &[T]) -> Result<Tensor, TensorError> {
        let mut raw = Vec::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.write_le(&mut raw);
        }
        Tensor::from_raw(T::DTYPE, shape.to_vec(), Bytes::from(raw))
    }

    /// A numeric tensor that takes ownership of `values` (row-major); on
    /// little-endian machines their memory becomes the tensor's data without
    /// a copy.
    pub fn from_vec<T: Element + Send + 'static>(
        shape: &[i64],
        values: Vec<T>,
    ) -> Result<Tensor, TensorError> {
        #[cfg(target_endian = "little")]
        {
            Tensor::from_raw(
                T::DTYPE,
                shape.to_vec(),
                Bytes::from_owner(ElementVec(values)),
            )
        }
        #[cfg(not(target_endian = "little"))]
        {
            Tensor::from_slice(shape, &values)
        }
    }

    /// A scalar (shape `[]`) numeric tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        let mut raw = Vec::with_capacity(T::DTYPE.item_size().unwrap_or(0));
        value.write_le(&mut raw);
        Tensor {
            dtype: T::DTYPE,
            shape: Vec::new(),
            data: TensorData::Raw(Bytes::from(raw)),
        }
    }

    /// A `String` tensor from UTF-8 texts in row-major order.
    pub fn from_strings<S: AsRef<str>>(shape: &[i64], texts: &[S]) -> Result<Tensor, TensorError> {
        let elements = texts
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_ref().as_bytes()))
            .collect();
        Tensor::from_elements(DataType::String, shape.to_vec(), elements)
    }

    /// A `Bytes` tensor from byte strings in row-major order.
    pub fn from_byte_strings<B: AsRef<[u8]>>(
        shape: &[i64],
        items: &[B],
    ) -> Result<Tensor, TensorError> {
        let elements = items
            .iter()
            .map(|b| Bytes::copy_from_slice(b.as_ref()))
            .collect();
        Tensor::from_elements(DataType::Bytes, shape.to_vec(), elements)
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The dimensions; `[]` is a scalar.
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// The payload.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The raw bytes of a numeric tensor; `None` for `String`/`Bytes`.
    pub fn raw(&self) -> Option<&Bytes> {
        match &self.data {
            TensorData::Raw(raw) => Some(raw),
            TensorData::Elements(_) => None,
        }
    }

    /// The elements of a `String`/`Bytes` tensor; `None` for numeric ones.
    pub fn elements(&self) -> Option<&[Bytes]> {
        match &self.data {
            TensorData::Elements(e) => Some(e),
            TensorData::Raw(_) => None,
        }
    }

    /// The number of elements (1 for a scalar).
    pub fn element_count(&self) -> usize {
        match &self.data {
            TensorData::Elements(e) => e.len(),
            TensorData::Raw(raw) => raw.len() / self.dtype.item_size().unwrap_or(1),
        }
    }

    /// Bytes of payload: the raw length, or the sum of the element lengths.
    pub fn payload_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(raw) => raw.len(),
            TensorData::Elements(e) => e.iter().map(Bytes::len).sum(),
        }
    }

    /// Splits the tensor into its parts.
    pub fn into_parts(self) -> (DataType, Vec<i64>, TensorData) {
        (self.dtype, self.shape, self.data)
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(self, shape: Vec<i64>) -> Result<Tensor, TensorError> {
        Tensor::new(self.dtype, shape, self.data)
    }

    /// The values of a numeric tensor converted to `f64`, whatever its type
    /// (exact for every type but 64-bit integers beyond 2^53). Useful where
    /// the wire carries no type, as in MindSpore REST replies.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, TensorError> {
        let TensorData::Raw(raw) = &self.data else {
            return Err(TensorError::TypeMismatch {
                requested: DataType::Fp64,
                actual: self.dtype,
            });
        };
        fn each<T: Element>(raw: &[u8], f: impl Fn(T) -> f64) -> Vec<f64> {
            raw.chunks_exact(std::mem::size_of::<T>())
                .map(|b| f(T::read_le(b)))
                .collect()
        }
        Ok(match self.dtype {
            DataType::Bool => each(raw, |v: bool| f64::from(u8::from(v))),
            DataType::Uint8 => each::<u8>(raw, f64::from),
            DataType::Int8 => each::<i8>(raw, f64::from),
            DataType::Int16 => each::<i16>(raw, f64::from),
            DataType::Uint16 => each::<u16>(raw, f64::from),
            DataType::Int32 => each::<i32>(raw, f64::from),
            DataType::Uint32 => each::<u32>(raw, f64::from),
            DataType::Int64 => each(raw, |v: i64| v as f64),
            DataType::Uint64 => each(raw, |v: u64| v as f64),
            DataType::Fp16 => each(raw, half::f16::to_f64),
            DataType::Bf16 => each(raw, half::bf16::to_f64),
            DataType::Fp32 => each::<f32>(raw, f64::from),
            DataType::Fp64 => each(raw, |v: f64| v),
            // A tensor never holds raw data of these types.
            DataType::String | DataType::Bytes => {
                return Err(TensorError::TypeMismatch {
                    requested: DataType::Fp64,
                    actual: self.dtype,
                });
            }
        })
    }

    /// Copies the values out as `T`, which must be the tensor's type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        match (&self.data, self.dtype == T::DTYPE) {
            (TensorData::Raw(raw), true) => {
                let item = T::DTYPE.item_size().unwrap_or(1);
                Ok(raw.chunks_exact(item).map(T::read_le).collect())
            }
            _ => Err(TensorError::TypeMismatch {
                requested: T::DTYPE,
                actual: self.dtype,
            }),
        }
    }
}

/// A Rust type that is the element type of a numeric [`Tensor`].
///
/// Implemented for `bool`, the fixed-width integers, `f32`, `f64`,
/// [`half::f16`] and [`half::bf16`].
pub trait Element: Copy + sealed::Sealed {
    /// The tensor type of this element.
    const DTYPE: DataType;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one value from exactly `item_size` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// The values' memory as bytes (little-endian on little-endian targets).
    #[doc(hidden)]
    fn native_bytes(values: &[Self]) -> &[u8];
}

/// A `Vec` of elements owned by a `Bytes` without copying.
#[cfg(target_endian = "little")]
struct ElementVec<T>(Vec<T>);

#[cfg(target_endian = "little")]
impl<T: Element> AsRef<[u8]> for ElementVec<T> {
    fn as_ref(&self) -> &[u8] {
        T::native_bytes(&self.0)
    }
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric_element {
    ($($t:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = DataType::$dtype;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_le_bytes(buf)
            }
            fn native_bytes(values: &[Self]) -> &[u8] {
                bytemuck::cast_slice(values)
            }
        }
    )*};
}

numeric_element! {
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    half::f16 => Fp16, half::bf16 => Bf16, f32 => Fp32, f64 => Fp64,
}

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn native_bytes(values: &[Self]) -> &[u8] {
        bytemuck::cast_slice(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_type_converts_to_f64() {
        let f = |t: Tensor| t.to_f64_vec().unwrap();
        assert_eq!(
            f(Tensor::from_slice(&[2], &[true, false]).unwrap()),
            [1.0, 0.0]
        );
        assert_eq!(
            f(Tensor::from_slice(&[2], &[-3i8, 4]).unwrap()),
            [-3.0, 4.0]
        );
        assert_eq!(f(Tensor::from_slice(&[1], &[250u8]).unwrap()), [250.0]);
        assert_eq!(f(Tensor::from_slice(&[1], &[-300i16]).unwrap()), [-300.0]);
        assert_eq!(f(Tensor::from_slice(&[1], &[60000u16]).unwrap()), [60000.0]);
        assert_eq!(f(Tensor::from_slice(&[1], &[-7i32]).unwrap()), [-7.0]);
        assert_eq!(f(Tensor::from_slice(&[1], &[7u32]).unwrap()), [7.0]);
        assert_eq!(
            f(Tensor::from_slice(&[1], &[-1i64 << 40]).unwrap()),
            [-(2f64.powi(40))]
        );
        assert_eq!(
            f(Tensor::from_slice(&[1], &[1u64 << 40]).unwrap()),
            [2f64.powi(40)]
        );
        let h = half::f16::from_f32(1.5);
        assert_eq!(f(Tensor::from_slice(&[1], &[h]).unwrap()), [1.5]);
        let b = half::bf16::from_f32(-2.0);
        assert_eq!(f(Tensor::from_slice(&[1], &[b]).unwrap()), [-2.0]);
        assert_eq!(f(Tensor::from_slice(&[1], &[0.25f32]).unwrap()), [0.25]);
        assert_eq!(f(Tensor::from_slice(&[1], &[0.1f64]).unwrap()), [0.1]);
        assert!(
            Tensor::from_strings(&[1], &["a"])
                .unwrap()
                .to_f64_vec()
                .is_err()
        );
    }

    #[test]
    fn from_vec_keeps_the_vec_memory_and_agrees_with_from_slice() {
        let values: Vec<f32> = (0..1024).map(|i| i as f32 * 0.5).collect();
        let address = values.as_ptr() as usize;
        let expected = Tensor::from_slice(&[32, 32], &values).unwrap();
        let t = Tensor::from_vec(&[32, 32], values).unwrap();
        assert_eq!(t, expected);
        #[cfg(target_endian = "little")]
        assert_eq!(t.raw().unwrap().as_ptr() as usize, address, "no copy");
        let b = Tensor::from_vec(&[3], vec![true, false, true]).unwrap();
        assert_eq!(b.to_vec::<bool>().unwrap(), vec![true, false, true]);
        let h = Tensor::from_vec(
            &[2],
            vec![half::f16::from_f32(1.5), half::f16::from_f32(2.0)],
        );
        assert_eq!(
            h.unwrap().to_vec::<half::f16>().unwrap()[0],
            half::f16::from_f32(1.5)
        );
        assert!(Tensor::from_vec(&[3], vec![1i64; 2]).is_err());
    }

    #[test]
    fn bool_bytes_are_zero_or_one() {
        // Regression (fuzz target oip_grpc_request): raw BOOL byte 0x1a was
        // accepted and came back as 0x01 from typed contents.
        let e = Tensor::from_raw(DataType::Bool, vec![1, 2], Bytes::from_static(&[0x1a, 0]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "BOOL element 0 is byte 0x1a; BOOL elements are 0 (false) or 1 (true)"
        );
        assert!(Tensor::from_raw(DataType::Bool, vec![2], Bytes::from_static(&[1, 0])).is_ok());
    }

    #[test]
    fn parts_must_agree() {
        let e = Tensor::from_raw(DataType::Fp32, vec![2, 2], Bytes::from_static(&[0; 12]));
        assert_eq!(
            e.unwrap_err().to_string(),
            "FP32 tensor of shape [2, 2] needs 16 bytes of data but has 12"
        );
        let e = Tensor::from_raw(DataType::Fp32, vec![2, -1], Bytes::new());
        assert_eq!(
            e.unwrap_err().to_string(),
            "shape [2, -1] has a negative dimension"
        );
        let e = Tensor::from_raw(DataType::Fp64, vec![i64::MAX, 4], Bytes::new());
        assert!(matches!(e, Err(TensorError::Overflow { .. })));
        let e = Tensor::from_raw(DataType::Bytes, vec![1], Bytes::new());
        assert!(matches!(e, Err(TensorError::DataKind { .. })));
        let e = Tensor::from_strings(&[3], &["a", "b"]);
        assert_eq!(
            e.unwrap_err().to_string(),
            "STRING tensor of shape [3] needs 3 elements but has 2"
        );
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let s = Tensor::scalar(7i64);
        assert_eq!(s.shape(), &[] as &[i64]);
        assert_eq!(s.element_count(), 1);
        let empty = Tensor::from_slice::<f32>(&[3, 0], &[]).unwrap();
        assert_eq!(empty.element_count(), 0);
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[4, 0, 9]), Some(0));
    }

    #[test]
    fn to_vec_checks_the_type() {
        let t = Tensor::from_slice(&[2], &[true, false]).unwrap();
        assert_eq!(t.to_vec::<bool>().unwrap(), vec![true, false]);
        assert!(matches!(
            t.to_vec::<u8>(),
            Err(TensorError::TypeMismatch { .. })
        ));
    }
}
