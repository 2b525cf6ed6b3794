//! Triton's model configuration, `ModelConfig` (`config.pbtxt`): read from
//! protobuf text format and written to and read from its JSON form, by
//! reflection over the compiled `model_config.proto` (the subset this
//! project supports; see `proto/model_config.proto`), with
//! [`prost_reflect`]'s parser rather than a hand-written one.
//!
//! ```
//! use serving_proto::model_config;
//!
//! let config = model_config::parse_text(r#"
//!     name: "resnet"
//!     platform: "onnxruntime_onnx"
//!     max_batch_size: 8
//!     input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
//!     dynamic_batching { max_queue_delay_microseconds: 100 }
//! "#)?;
//! assert_eq!(config.max_batch_size, 8);
//! assert_eq!(config.input[0].dims, vec![3, 224, 224]);
//! let e = model_config::parse_text("name: \"m\"\nbatch_input {}").unwrap_err();
//! assert!(e.to_string().starts_with("2:1: field 'batch_input' of Triton's ModelConfig is not supported"));
//! let e = model_config::parse_text("name: \"m\"\nbogus {}").unwrap_err();
//! assert_eq!(e.to_string(), "2:1: field 'bogus' not found for message 'inference.ModelConfig'");
//! # Ok::<(), model_config::ConfigError>(())
//! ```

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

pub use crate::pb::inference::{
    DataType as TritonType, ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup,
    ModelOutput, ModelQueuePolicy, ModelSequenceBatching, ModelTensorReshape, ModelVersionPolicy,
};

/// Triton's configuration type of a data type: `BYTES` and MindSpore's
/// strings are `TYPE_STRING`.
///
/// ```
/// use serving_proto::DataType;
/// use serving_proto::model_config::{TritonType, triton_type};
///
/// assert_eq!(triton_type(DataType::Fp32), TritonType::TypeFp32);
/// assert_eq!(triton_type(DataType::Bytes).as_str_name(), "TYPE_STRING");
/// ```
pub fn triton_type(t: crate::DataType) -> TritonType {
    use crate::DataType;
    match t {
        DataType::Bool => TritonType::TypeBool,
        DataType::Uint8 => TritonType::TypeUint8,
        DataType::Uint16 => TritonType::TypeUint16,
        DataType::Uint32 => TritonType::TypeUint32,
        DataType::Uint64 => TritonType::TypeUint64,
        DataType::Int8 => TritonType::TypeInt8,
        DataType::Int16 => TritonType::TypeInt16,
        DataType::Int32 => TritonType::TypeInt32,
        DataType::Int64 => TritonType::TypeInt64,
        DataType::Fp16 => TritonType::TypeFp16,
        DataType::Fp32 => TritonType::TypeFp32,
        DataType::Fp64 => TritonType::TypeFp64,
        DataType::Bf16 => TritonType::TypeBf16,
        DataType::String | DataType::Bytes => TritonType::TypeString,
    }
}

/// The tensor type of a Triton configuration's `data_type`: the inverse of
/// [`triton_type`], `TYPE_STRING` read as `Bytes` (any bytes); `None` for
/// `TYPE_INVALID`.
///
/// ```
/// use serving_proto::DataType;
/// use serving_proto::model_config::{TritonType, data_type};
///
/// assert_eq!(data_type(TritonType::TypeFp32), Some(DataType::Fp32));
/// assert_eq!(data_type(TritonType::TypeString), Some(DataType::Bytes));
/// assert_eq!(data_type(TritonType::TypeInvalid), None);
/// ```
pub fn data_type(t: TritonType) -> Option<crate::DataType> {
    if t == TritonType::TypeString {
        return Some(crate::DataType::Bytes);
    }
    crate::DataType::ALL
        .iter()
        .copied()
        .find(|&d| d != crate::DataType::Bytes && triton_type(d) == t)
}

pub(crate) static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))[..])
        .expect("the compiled descriptors decode")
});

fn descriptor() -> MessageDescriptor {
    POOL.get_message_by_name("inference.ModelConfig")
        .expect("inference.ModelConfig is compiled in")
}

/// A configuration that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid text format for `ModelConfig`, at a line and column.
    #[error("{line}:{column}: {message}")]
    Text {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Not valid JSON for `ModelConfig`.
    #[error("{0}")]
    Json(String),
    /// A field of Triton's `ModelConfig` that this subset leaves out (see
    /// [`UNSUPPORTED_FIELDS`]).
    #[error("{line}:{column}: field '{field}' of Triton's ModelConfig is not supported: {why}")]
    Unsupported {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field.
        field: &'static str,
        /// Why, and what to do.
        why: &'static str,
    },
}

/// Top-level fields of Triton's `ModelConfig` that this subset leaves out,
/// with why: a configuration that sets one is refused naming it, rather
/// than with the parser's "not found".
pub const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    (
        "batch_input",
        "batch inputs (tensors the server computes for a batch, such as element counts) are not made by this server; compute them in the model or the client",
    ),
    (
        "batch_output",
        "batch outputs (outputs split by a batch input) are not served",
    ),
    (
        "model_operations",
        "custom operation libraries are not loaded; build the operations into the model",
    ),
    (
        "model_repository_agents",
        "repository agents (checksums, decryption) are not run; prepare the files before they reach the repository",
    ),
];

/// The fields set at the top level of a text-format configuration, with
/// their byte offsets: identifiers at nesting depth 0 that name a field
/// (not a value after `:`). Strings and `#` comments are passed over.
fn top_level_fields(text: &str) -> Vec<(&str, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut depth, mut i, mut value_next) = (0usize, 0usize, false);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                value_next = false;
                continue;
            }
            b'{' | b'[' | b'<' => {
                depth += 1;
                value_next = false;
            }
            b'}' | b']' | b'>' => {
                depth = depth.saturating_sub(1);
                value_next = false;
            }
            b':' => value_next = true,
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if depth == 0 && !value_next {
                    out.push((&text[start..i], start));
                }
                value_next = false;
                continue;
            }
            c if !c.is_ascii_whitespace() && c != b',' && c != b';' => value_next = false,
            _ => {}
        }
        i += 1;
    }
    out
}

/// The 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// `text` with a `:` inserted between a field name and the `[` of a list
/// of messages where it is left out (`input [ { ... } ]`, how Triton's
/// configurations are written; the text format allows it for message
/// fields, and prost-reflect's parser wants the colon), and the offsets
/// (in `text`) where one was inserted. Strings and `#` comments are passed
/// over as they are.
fn with_list_colons(text: &str) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = Vec::new();
    // Whether the last token outside strings and comments was a name.
    let mut after_name = false;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                after_name = false;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'[' if after_name => {
                out.push_str(&text[copied..i]);
                out.push(':');
                copied = i;
                inserted.push(i);
                after_name = false;
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                after_name = true;
            }
            _ => {
                after_name = false;
                i += 1;
            }
        }
    }
    out.push_str(&text[copied.min(text.len())..]);
    (out, inserted)
}

/// Parses `config.pbtxt` text. Unknown fields, wrong types and bad enum
/// values are errors naming the field and where it is.
pub fn parse_text(text: &str) -> Result<ModelConfig, ConfigError> {
    if let Some((field, at, why)) = top_level_fields(text).into_iter().find_map(|(f, at)| {
        UNSUPPORTED_FIELDS
            .iter()
            .find(|(name, _)| *name == f)
            .map(|(name, why)| (*name, at, *why))
    }) {
        let (line, column) = position(text, at);
        return Err(ConfigError::Unsupported {
            line,
            column,
            field,
            why,
        });
    }
    let (normal, inserted) = with_list_colons(text);
    let dynamic = DynamicMessage::parse_text_format(descriptor(), &normal).map_err(|e| {
        use miette::Diagnostic;
        let offset = e
            .labels()
            .and_then(|mut l| l.next())
            .map_or(normal.len(), |l| l.offset());
        // Back to an offset of the text as written.
        let offset = offset
            - inserted
                .iter()
                .enumerate()
                .take_while(|(k, at)| **at + k < offset)
                .count();
        let (line, column) = position(text, offset);
        ConfigError::Text {
            line,
            column,
            message: e.to_string(),
        }
    })?;
    dynamic.transcode_to().map_err(|e| ConfigError::Text {
        line: 1,
        column: 1,
        message: e.to_string(),
    })
}

fn dynamic(config: &ModelConfig) -> DynamicMessage {
    let mut d = DynamicMessage::new(descriptor());
    d.transcode_from(config)
        .expect("a ModelConfig transcodes to its own descriptor");
    d
}

/// The text format of a configuration (what `config.pbtxt` holds).
pub fn to_text(config: &ModelConfig) -> String {
    dynamic(config).to_text_format()
}

/// The JSON form of a configuration, as Triton's REST `config` route
/// answers: protobuf's JSON mapping with the proto field names, 64-bit
/// integers as numbers, enums by name, and fields at their default left
/// out.
pub fn to_json(config: &ModelConfig) -> serde_json::Value {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    dynamic(config)
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a ModelConfig serializes to JSON")
}

/// Reads the JSON form (either field-name style, any integer form).
pub fn from_json(json: &str) -> Result<ModelConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let d = DynamicMessage::deserialize(descriptor(), &mut de)
        .map_err(|e| ConfigError::Json(e.to_string()))?;
    d.transcode_to()
        .map_err(|e| ConfigError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [1, 3] } }
input [
  { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape: { shape: [ 4, -1 ] } },
  { name: "s" data_type: TYPE_STRING dims: [ 1 ] optional: true }
]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 5000 max_queue_size: 16 }
}
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]
default_model_filename: "net.onnx"
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
"#;

    #[test]
    fn the_supported_fields_parse_and_round_trip() {
        let c = parse_text(FULL).unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.input[0].reshape.as_ref().unwrap().shape, vec![4, -1]);
        assert!(c.input[1].optional);
        assert_eq!(c.input[1].data_type, TritonType::TypeString as i32);
        assert_eq!(c.instance_group[0].gpus, vec![0, 1]);
        assert_eq!(c.parameters["intra_op_thread_count"].string_value, "2");
        assert_eq!(parse_text(&to_text(&c)).unwrap(), c);
        let json = to_json(&c);
        assert_eq!(json["max_batch_size"], 8);
        assert_eq!(json["input"][0]["dims"], serde_json::json!([-1, 4]));
        assert_eq!(json["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(json["instance_group"][0]["kind"], "KIND_GPU");
        assert_eq!(from_json(&json.to_string()).unwrap(), c);
    }

    #[test]
    fn lists_of_messages_need_no_colon() {
        let (t, at) =
            with_list_colons("input [ { dims: [ 1 ] } ] # a [ comment\noutput:[] s: \"x [\"");
        assert_eq!(
            t,
            "input :[ { dims: [ 1 ] } ] # a [ comment\noutput:[] s: \"x [\""
        );
        assert_eq!(at, vec![6]);
        let c =
            parse_text("input [ { name: \"a\" }, { name: \"b\" } ]\noutput: [ { name: \"y\" } ]")
                .unwrap();
        assert_eq!(c.input.len(), 2);
        assert_eq!(c.output[0].name, "y");
        // Positions are the text's as written.
        let e = parse_text("input [ { name: \"a\" } ]\ninput [ { nam: \"b\" } ]").unwrap_err();
        assert!(e.to_string().starts_with("2:11: "), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_where_it_is() {
        let e = |t: &str| parse_text(t).unwrap_err().to_string();
        assert!(
            e("name: \"m\"\n  model_repository_agents {}").starts_with(
                "2:3: field 'model_repository_agents' of Triton's ModelConfig is not supported: repository agents"
            ),
            "{}",
            e("name: \"m\"\n  model_repository_agents {}")
        );
        // Only a field, at the top level: a name elsewhere is not one.
        assert_eq!(
            e(
                "name: \"batch_input\"\nparameters { key: \"batch_output\" value: { string_value: \"x\" } }\nbogus: 1"
            ),
            "3:1: field 'bogus' not found for message 'inference.ModelConfig'"
        );
        assert_eq!(
            e("name: \"m\"\n  nothing_known {}"),
            "2:3: field 'nothing_known' not found for message 'inference.ModelConfig'"
        );
        assert!(
            e("max_batch_size: \"eight\"").starts_with("1:17: "),
            "{}",
            e("max_batch_size: \"eight\"")
        );
        assert!(e("input [ { data_type: TYPE_FLOAT } ]").contains("TYPE_FLOAT"));
        assert!(e("name: \"m\"\nname: \"n\"").contains("already set"));
        assert!(
            e("max_batch_size: 99999999999").contains("out of range")
                || e("max_batch_size: 99999999999").contains("99999999999")
        );
        // Total on any input.
        for t in [
            "{",
            "}",
            "input [",
            "\"",
            "name: \"\\x",
            "\u{feff}",
            "\u{0}",
            "input { dims: [1,, 2] }",
        ] {
            let _ = parse_text(t);
        }
    }
}
