//! [`DataType`]: the union of the element types of both protocols, and the
//! names each protocol gives them.

use std::fmt;

use crate::pb::mindspore as ms_pb;

/// The element type of a [`Tensor`](crate::Tensor).
///
/// This is the union of MindSpore Serving's `DataType` enum and the Open
/// Inference Protocol's datatype strings. A type one protocol cannot carry
/// (`BF16` on MindSpore, `STRING` on OIP) is refused by that protocol's
/// codec with [`UnsupportedType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DataType {
    /// One byte, 0 or 1.
    Bool,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// IEEE 754 half precision.
    Fp16,
    /// bfloat16 (Open Inference Protocol only).
    Bf16,
    /// IEEE 754 single precision.
    Fp32,
    /// IEEE 754 double precision.
    Fp64,
    /// UTF-8 text, one variable-length element per item (MindSpore only).
    String,
    /// Arbitrary bytes, one variable-length element per item.
    Bytes,
}

/// A [`DataType`] that the named protocol cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("data type {dtype} cannot be carried by the {protocol}; {hint}")]
pub struct UnsupportedType {
    /// The type that was refused.
    pub dtype: DataType,
    /// The protocol that refused it.
    pub protocol: &'static str,
    /// What to do instead.
    pub hint: &'static str,
}

impl DataType {
    /// Every data type, in declaration order.
    pub const ALL: [DataType; 15] = [
        DataType::Bool,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::String,
        DataType::Bytes,
    ];

    /// Size in bytes of one element, or `None` for the variable-length
    /// types `String` and `Bytes`.
    pub const fn item_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Int8 | DataType::Uint8 => Some(1),
            DataType::Int16 | DataType::Uint16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Int32 | DataType::Uint32 | DataType::Fp32 => Some(4),
            DataType::Int64 | DataType::Uint64 | DataType::Fp64 => Some(8),
            DataType::String | DataType::Bytes => None,
        }
    }

    /// Whether elements are variable-length byte strings (`String`, `Bytes`).
    pub const fn is_variable(self) -> bool {
        self.item_size().is_none()
    }

    /// The Open Inference Protocol name (`"FP32"`, `"BYTES"`, ...).
    pub fn oip_name(self) -> Result<&'static str, UnsupportedType> {
        Ok(match self {
            DataType::Bool => "BOOL",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::String => {
                return Err(UnsupportedType {
                    dtype: self,
                    protocol: "Open Inference Protocol",
                    hint: "send the UTF-8 text as a BYTES tensor",
                });
            }
        })
    }

    /// Parses an Open Inference Protocol name. Names are case-sensitive, as
    /// the protocol says.
    pub fn from_oip_name(name: &str) -> Option<DataType> {
        Some(match name {
            "BOOL" => DataType::Bool,
            "INT8" => DataType::Int8,
            "INT16" => DataType::Int16,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "UINT8" => DataType::Uint8,
            "UINT16" => DataType::Uint16,
            "UINT32" => DataType::Uint32,
            "UINT64" => DataType::Uint64,
            "FP16" => DataType::Fp16,
            "BF16" => DataType::Bf16,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }

    /// The MindSpore Serving proto enum value.
    pub fn to_mindspore(self) -> Result<ms_pb::DataType, UnsupportedType> {
        Ok(match self {
            DataType::Bool => ms_pb::DataType::MsBool,
            DataType::Int8 => ms_pb::DataType::MsInt8,
            DataType::Int16 => ms_pb::DataType::MsInt16,
            DataType::Int32 => ms_pb::DataType::MsInt32,
            DataType::Int64 => ms_pb::DataType::MsInt64,
            DataType::Uint8 => ms_pb::DataType::MsUint8,
            DataType::Uint16 => ms_pb::DataType::MsUint16,
            DataType::Uint32 => ms_pb::DataType::MsUint32,
            DataType::Uint64 => ms_pb::DataType::MsUint64,
            DataType::Fp16 => ms_pb::DataType::MsFloat16,
            DataType::Fp32 => ms_pb::DataType::MsFloat32,
            DataType::Fp64 => ms_pb::DataType::MsFloat64,
            DataType::String => ms_pb::DataType::MsString,
            DataType::Bytes => ms_pb::DataType::MsBytes,
            DataType::Bf16 => {
                return Err(UnsupportedType {
                    dtype: self,
                    protocol: "MindSpore Serving protocol",
                    hint: "convert the tensor to FP16 or FP32 first",
                });
            }
        })
    }

    /// The type of a MindSpore Serving proto enum value; `None` for
    /// `MS_UNKNOWN` and values outside the enum.
    pub fn from_mindspore(value: i32) -> Option<DataType> {
        Some(match ms_pb::DataType::try_from(value).ok()? {
            ms_pb::DataType::MsUnknown => return None,
            ms_pb::DataType::MsBool => DataType::Bool,
            ms_pb::DataType::MsInt8 => DataType::Int8,
            ms_pb::DataType::MsUint8 => DataType::Uint8,
            ms_pb::DataType::MsInt16 => DataType::Int16,
            ms_pb::DataType::MsUint16 => DataType::Uint16,
            ms_pb::DataType::MsInt32 => DataType::Int32,
            ms_pb::DataType::MsUint32 => DataType::Uint32,
            ms_pb::DataType::MsInt64 => DataType::Int64,
            ms_pb::DataType::MsUint64 => DataType::Uint64,
            ms_pb::DataType::MsFloat16 => DataType::Fp16,
            ms_pb::DataType::MsFloat32 => DataType::Fp32,
            ms_pb::DataType::MsFloat64 => DataType::Fp64,
            ms_pb::DataType::MsString => DataType::String,
            ms_pb::DataType::MsBytes => DataType::Bytes,
        })
    }

    /// MindSpore Serving's internal name, as it appears in its error texts
    /// (`kMSI_Float32`, ...). `BF16`, which MindSpore lacks, is `kMSI_Unknown`.
    pub const fn mindspore_internal_name(self) -> &'static str {
        match self {
            DataType::Bool => "kMSI_Bool",
            DataType::Int8 => "kMSI_Int8",
            DataType::Int16 => "kMSI_Int16",
            DataType::Int32 => "kMSI_Int32",
            DataType::Int64 => "kMSI_Int64",
            DataType::Uint8 => "kMSI_Uint8",
            DataType::Uint16 => "kMSI_Uint16",
            DataType::Uint32 => "kMSI_Uint32",
            DataType::Uint64 => "kMSI_Uint64",
            DataType::Fp16 => "kMSI_Float16",
            DataType::Fp32 => "kMSI_Float32",
            DataType::Fp64 => "kMSI_Float64",
            DataType::String => "kMSI_String",
            DataType::Bytes => "kMSI_Bytes",
            DataType::Bf16 => "kMSI_Unknown",
        }
    }

    /// The canonical type name of MindSpore's REST b64 objects (`"float32"`,
    /// `"int8"`, `"str"`, ...), as its error texts print it.
    pub const fn mindspore_rest_name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::Uint8 => "uint8",
            DataType::Uint16 => "uint16",
            DataType::Uint32 => "uint32",
            DataType::Uint64 => "uint64",
            DataType::Fp16 => "float16",
            DataType::Bf16 => "bfloat16",
            DataType::Fp32 => "float32",
            DataType::Fp64 => "float64",
            DataType::String => "str",
            DataType::Bytes => "bytes",
        }
    }

    /// Parses the `type` of a MindSpore REST b64 object. `bfloat16` is not
    /// one of them.
    pub fn from_mindspore_rest_name(name: &str) -> Option<DataType> {
        Some(match name {
            "bool" => DataType::Bool,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" => DataType::Int32,
            "int64" => DataType::Int64,
            "uint8" => DataType::Uint8,
            "uint16" => DataType::Uint16,
            "uint32" => DataType::Uint32,
            "uint64" => DataType::Uint64,
            "fp16" | "float16" => DataType::Fp16,
            "fp32" | "float32" => DataType::Fp32,
            "fp64" | "float64" => DataType::Fp64,
            "str" => DataType::String,
            "bytes" => DataType::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    /// Formats as the Open Inference Protocol name, with `STRING` for text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::String => "STRING",
            other => other.oip_name().unwrap_or("STRING"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_each_protocol_that_carries_it() {
        for dtype in DataType::ALL {
            match dtype.oip_name() {
                Ok(name) => assert_eq!(DataType::from_oip_name(name), Some(dtype)),
                Err(e) => assert_eq!(e.dtype, DataType::String),
            }
            match dtype.to_mindspore() {
                Ok(v) => assert_eq!(DataType::from_mindspore(v as i32), Some(dtype)),
                Err(e) => assert_eq!(e.dtype, DataType::Bf16),
            }
            if dtype != DataType::Bf16 {
                let name = dtype.mindspore_rest_name();
                assert_eq!(DataType::from_mindspore_rest_name(name), Some(dtype));
            }
        }
    }

    #[test]
    fn unknown_names_and_values_are_refused() {
        assert_eq!(DataType::from_oip_name("fp32"), None);
        assert_eq!(DataType::from_oip_name("STRING"), None);
        assert_eq!(DataType::from_mindspore(0), None);
        assert_eq!(DataType::from_mindspore(15), None);
        assert_eq!(DataType::from_mindspore(-1), None);
        assert_eq!(DataType::from_mindspore_rest_name("INt"), None);
    }

    #[test]
    fn unsupported_types_say_what_to_do() {
        let e = DataType::String.oip_name().unwrap_err();
        assert_eq!(
            e.to_string(),
            "data type STRING cannot be carried by the Open Inference Protocol; \
             send the UTF-8 text as a BYTES tensor"
        );
        let e = DataType::Bf16.to_mindspore().unwrap_err();
        assert_eq!(
            e.to_string(),
            "data type BF16 cannot be carried by the MindSpore Serving protocol; \
             convert the tensor to FP16 or FP32 first"
        );
    }
}
