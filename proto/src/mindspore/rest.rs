//! MindSpore Serving REST bodies to and from tensors (spec §3).
//!
//! Requests: `{"instances": {...} | [{...}, ...]}`, each instance a map of
//! input names to JSON scalars, rectangular arrays or b64 objects
//! `{"b64": "...", "type": "int64", "shape": [2, 2]}`. Every error text is
//! MindSpore's, byte for byte, including the `Parser request failed, ` prefix
//! on body-content errors. Where MindSpore silently narrows a JSON integer to
//! int32 or a number to float32, this codec refuses the value and names it.

use crate::text::quote;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Outcome, ServableError, StatusCode};
use crate::json::{self, NumberError};
use crate::tensor::element_count;
use crate::{DataType, NamedTensors, Tensor, TensorData, UnsupportedType};

/// Standard alphabet, `=` padding required; trailing bits need not be zero.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A REST request MindSpore refuses, with its exact `error_msg` text as Display.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// A method other than POST.
    #[error("http message only support POST right now")]
    OnlyPost,
    /// An empty body.
    #[error("http message invalid")]
    EmptyBody,
    /// A body over the limit (strictly greater than `limit` bytes).
    #[error("http message is bigger than {limit}")]
    TooBig {
        /// The limit in bytes.
        limit: usize,
        /// The body size in bytes.
        size: usize,
    },
    /// The body is not JSON; holds the parser's detail.
    #[error("Illegal JSON format.{0}")]
    IllegalJson(String),
    /// The URL does not name a servable method.
    #[error(transparent)]
    Url(#[from] super::url::UrlError),
    /// The JSON does not follow the request grammar.
    #[error("Parser request failed, {0}")]
    Parse(#[from] ParseError),
}

/// Body-content errors (spec §3.3-§3.5). Display is MindSpore's text without
/// the `Parser request failed, ` prefix that [`RestError::Parse`] adds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// `instances` missing (or the body is not an object).
    #[error("key 'instances' expects to exist once, but actually {0} times")]
    InstancesKey(usize),
    /// `instances` is a scalar, or an array whose first element is no object.
    #[error("instances no key mode is not supported")]
    NoKeyMode,
    /// `instances: []`.
    #[error("instances value is array type, but no value")]
    InstancesEmpty,
    /// `instances: {}` or an empty b64 object.
    #[error("json object, value is empty")]
    EmptyObject,
    /// A later element of `instances` is not an object.
    #[error("json array, instance is not object type")]
    InstanceNotObject,
    /// A later element of `instances` is `{}`.
    #[error("json array, instance is object type, but no value")]
    InstanceEmpty,
    /// An input named by the empty string.
    #[error("string key is empty")]
    EmptyKey,
    /// A `null` input value.
    #[error("json value is null, it is not supported")]
    Null,
    /// An input value of `[]`.
    #[error("json array, shape is empty")]
    ArrayShapeEmpty,
    /// An array whose first leaf gives no type (`[[]]`, `[null]`).
    #[error("json array, data type is unknown")]
    ArrayTypeUnknown,
    /// A string or bytes array of more than one element.
    #[error("json array, string or bytes type only support one item")]
    ArrayStringCount,
    /// An array of b64 objects whose type is not str or bytes.
    #[error("json array, item is object type, object only support string or bytes type")]
    ArrayObjectType,
    /// A scalar where the shape expects an array.
    #[error("invalid json array: json type is not array")]
    NotArray,
    /// A ragged array.
    #[error("invalid json array: json size is {size}, the dim {dim} expected to be {expected}")]
    Ragged {
        /// The length found.
        size: usize,
        /// The depth.
        dim: usize,
        /// The length the first element gave.
        expected: i64,
    },
    /// An array or object where a scalar leaf is expected.
    #[error("json array, data should be number, bool, string or bytes")]
    LeafKind,
    /// Leaves of different JSON kinds.
    #[error("json array, elements type is not equal")]
    ElementsNotEqual,
    /// A b64 object of more than 3 keys.
    #[error(
        "json object, items size is more than 3, only support specified ['b64', 'type', 'shape']"
    )]
    ObjectTooManyKeys,
    /// A b64 object with another key.
    #[error("json object, key is not ['b64', 'type', 'shape'], fail key:{}", quote(.0))]
    ObjectUnknownKey(String),
    /// A b64 object without `b64`.
    #[error("json object, 'b64' should be specified only one time")]
    ObjectB64Count,
    /// A `type` that is not a string.
    #[error("json object, key is 'type', value should be string type")]
    TypeNotString,
    /// A `type` outside the table.
    #[error("json object, specified type:'{}' is illegal", quote(.0))]
    TypeIllegal(String),
    /// A `shape` that is not an array.
    #[error("json object, key is 'shape', value should be array type")]
    ShapeNotArray,
    /// A `shape` element that is not an unsigned integer.
    #[error("json object, key is 'shape', array value should be unsigned integer")]
    ShapeNotUnsigned,
    /// A `shape` with a dimension after a zero one; holds the shape as JSON.
    #[error("json object, key is 'shape', invalid shape value {}", quote(.0))]
    ShapeInvalid(String),
    /// A `shape` whose byte size overflows (our addition); holds the shape as JSON.
    #[error("json object, key is 'shape', shape value {} is too large", quote(.0))]
    ShapeTooLarge(String),
    /// A str/bytes b64 object of more than one element.
    #[error(
        "json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'"
    )]
    ObjectStringNotScalar,
    /// A `b64` that is not a JSON string.
    #[error("get scalar data failed, type is string, but json is not string type")]
    B64NotString,
    /// A `b64` that is not standard padded base64.
    #[error("'{}' is illegal b64 encode string", quote(.0))]
    B64Illegal(String),
    /// A decoded size that disagrees with type and shape.
    #[error(
        "size is not matched, decode base64 size:{decoded}; Given info: type:{type_name}; type size:{type_size}; element nums:{elements}"
    )]
    B64Size {
        /// Bytes decoded.
        decoded: usize,
        /// The canonical type name.
        type_name: &'static str,
        /// Its item size.
        type_size: usize,
        /// The shape's element count.
        elements: usize,
    },
    /// A JSON integer outside int32 (MindSpore narrows it silently).
    #[error(
        "json integer {} is out of the int32 range; send it in a b64 object with an explicit 'type' such as int64",
        quote(.0)
    )]
    IntRange(String),
    /// A JSON number outside float32 (MindSpore narrows it silently).
    #[error(
        "json number {} is out of the float32 range; send it in a b64 object with 'type' fp64",
        quote(.0)
    )]
    FloatRange(String),
}

/// Checks the body before parsing, in MindSpore's order: empty, then size.
pub fn check_body(body: &[u8], max_bytes: usize) -> Result<(), RestError> {
    if body.is_empty() {
        return Err(RestError::EmptyBody);
    }
    if body.len() > max_bytes {
        return Err(RestError::TooBig {
            limit: max_bytes,
            size: body.len(),
        });
    }
    Ok(())
}

/// Decodes a request body into its instances. `max_bytes` is the server's
/// body limit (`max_msg_mb_size` MiB).
pub fn decode_request(body: &[u8], max_bytes: usize) -> Result<Vec<NamedTensors>, RestError> {
    check_body(body, max_bytes)?;
    let json: Value =
        serde_json::from_slice(body).map_err(|e| RestError::IllegalJson(e.to_string()))?;
    Ok(decode_instances(&json)?)
}

/// Decodes the instances of an already parsed request body.
pub fn decode_instances(json: &Value) -> Result<Vec<NamedTensors>, ParseError> {
    let instances = match json.as_object().and_then(|o| o.get("instances")) {
        Some(v) => v,
        None => return Err(ParseError::InstancesKey(0)),
    };
    match instances {
        Value::Object(one) => {
            if one.is_empty() {
                return Err(ParseError::EmptyObject);
            }
            Ok(vec![decode_instance(one)?])
        }
        Value::Array(list) => {
            match list.first() {
                None => return Err(ParseError::InstancesEmpty),
                Some(Value::Object(_)) => {}
                Some(_) => return Err(ParseError::NoKeyMode),
            }
            list.iter()
                .map(|item| match item {
                    Value::Object(o) if o.is_empty() => Err(ParseError::InstanceEmpty),
                    Value::Object(o) => decode_instance(o),
                    _ => Err(ParseError::InstanceNotObject),
                })
                .collect()
        }
        _ => Err(ParseError::NoKeyMode),
    }
}

fn decode_instance(map: &Map<String, Value>) -> Result<NamedTensors, ParseError> {
    let mut tensors = NamedTensors::new();
    for (key, value) in map {
        if key.is_empty() {
            return Err(ParseError::EmptyKey);
        }
        tensors.insert(key.clone(), decode_value(value)?);
    }
    Ok(tensors)
}

/// Decodes one input value: a scalar, a rectangular array or a b64 object.
pub fn decode_value(value: &Value) -> Result<Tensor, ParseError> {
    match value {
        Value::Object(map) => decode_object(map),
        Value::Array(_) => decode_array(value),
        Value::Null => Err(ParseError::Null),
        Value::String(s) => Ok(string_tensor(vec![], Bytes::copy_from_slice(s.as_bytes()))),
        scalar => {
            let dtype = scalar_kind(scalar).ok_or(ParseError::LeafKind)?;
            let mut raw = Vec::with_capacity(4);
            push_leaf(dtype, scalar, &mut raw)?;
            Ok(numeric(dtype, vec![], raw))
        }
    }
}

/// The tensor type of a JSON scalar: int -> INT32, float -> FP32, bool.
fn scalar_kind(v: &Value) -> Option<DataType> {
    match v {
        Value::Bool(_) => Some(DataType::Bool),
        Value::Number(n) if n.is_f64() => Some(DataType::Fp32),
        Value::Number(_) => Some(DataType::Int32),
        Value::String(_) => Some(DataType::String),
        _ => None,
    }
}

fn push_leaf(dtype: DataType, v: &Value, out: &mut Vec<u8>) -> Result<(), ParseError> {
    json::push_element(dtype, v, out).map_err(|e| match (e, dtype) {
        (NumberError::Range(text), DataType::Int32) => ParseError::IntRange(text),
        (NumberError::Range(text), _) => ParseError::FloatRange(text),
        (NumberError::Kind, _) => ParseError::ElementsNotEqual,
    })
}

fn numeric(dtype: DataType, shape: Vec<i64>, raw: Vec<u8>) -> Tensor {
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).expect("shape and data were built together")
}

fn string_tensor(shape: Vec<i64>, element: Bytes) -> Tensor {
    string_like(DataType::String, shape, element)
}

fn string_like(dtype: DataType, shape: Vec<i64>, element: Bytes) -> Tensor {
    Tensor::from_elements(dtype, shape, vec![element]).expect("one element for a one-element shape")
}

/// A validated b64 object: its type and shape, and the base64 text.
struct B64Object<'a> {
    dtype: DataType,
    shape: Vec<i64>,
    b64: &'a Value,
}

/// MindSpore's `CheckObj`: keys in sorted order, each checked as it comes.
fn check_object(map: &Map<String, Value>) -> Result<B64Object<'_>, ParseError> {
    if map.is_empty() {
        return Err(ParseError::EmptyObject);
    }
    if map.len() > 3 {
        return Err(ParseError::ObjectTooManyKeys);
    }
    let mut b64 = None;
    let mut dtype = DataType::Bytes;
    let mut shape = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "b64" => b64 = Some(value),
            "type" => {
                let Value::String(name) = value else {
                    return Err(ParseError::TypeNotString);
                };
                dtype = DataType::from_mindspore_rest_name(name)
                    .ok_or_else(|| ParseError::TypeIllegal(name.clone()))?;
            }
            "shape" => shape = check_shape(value)?,
            other => return Err(ParseError::ObjectUnknownKey(other.to_owned())),
        }
    }
    let b64 = b64.ok_or(ParseError::ObjectB64Count)?;
    Ok(B64Object { dtype, shape, b64 })
}

fn check_shape(value: &Value) -> Result<Vec<i64>, ParseError> {
    let Value::Array(dims) = value else {
        return Err(ParseError::ShapeNotArray);
    };
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        if shape.last() == Some(&0) {
            return Err(ParseError::ShapeInvalid(value.to_string()));
        }
        let d = d.as_u64().ok_or(ParseError::ShapeNotUnsigned)?;
        shape.push(i64::try_from(d).map_err(|_| ParseError::ShapeTooLarge(value.to_string()))?);
    }
    if element_count(&shape)
        .and_then(|n| n.checked_mul(8))
        .is_none()
    {
        return Err(ParseError::ShapeTooLarge(value.to_string()));
    }
    Ok(shape)
}

fn decode_b64(value: &Value) -> Result<Vec<u8>, ParseError> {
    let Value::String(text) = value else {
        return Err(ParseError::B64NotString);
    };
    B64.decode(text)
        .map_err(|_| ParseError::B64Illegal(text.clone()))
}

fn decode_object(map: &Map<String, Value>) -> Result<Tensor, ParseError> {
    let obj = check_object(map)?;
    let count = element_count(&obj.shape).unwrap_or(usize::MAX);
    match obj.dtype.item_size() {
        None => {
            if count != 1 {
                return Err(ParseError::ObjectStringNotScalar);
            }
            let data = decode_b64(obj.b64)?;
            Ok(string_like(obj.dtype, obj.shape, Bytes::from(data)))
        }
        Some(item) => {
            let data = decode_b64(obj.b64)?;
            if Some(data.len()) != count.checked_mul(item) {
                return Err(ParseError::B64Size {
                    decoded: data.len(),
                    type_name: obj.dtype.mindspore_rest_name(),
                    type_size: item,
                    elements: count,
                });
            }
            Ok(numeric(obj.dtype, obj.shape, data))
        }
    }
}

/// The shape of a nested array, from the first element at each depth.
fn array_shape(value: &Value) -> Vec<i64> {
    let mut shape = Vec::new();
    let mut cur = value;
    while let Value::Array(items) = cur {
        let Some(first) = items.first() else { break };
        shape.push(items.len() as i64);
        cur = first;
    }
    shape
}

fn first_leaf(value: &Value) -> &Value {
    let mut cur = value;
    while let Value::Array(items) = cur {
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    cur
}

fn decode_array(value: &Value) -> Result<Tensor, ParseError> {
    let shape = array_shape(value);
    if shape.is_empty() {
        return Err(ParseError::ArrayShapeEmpty);
    }
    let leaf = first_leaf(value);
    let (dtype, objects) = match leaf {
        Value::Object(map) => match check_object(map) {
            Ok(obj) => (obj.dtype, true),
            Err(e) => return Err(e),
        },
        Value::Array(_) | Value::Null => return Err(ParseError::ArrayTypeUnknown),
        scalar => (
            scalar_kind(scalar).ok_or(ParseError::ArrayTypeUnknown)?,
            false,
        ),
    };
    // The product may exceed what the body holds (a ragged array); it is only
    // compared, never allocated.
    let count = element_count(&shape).unwrap_or(usize::MAX);
    if dtype.is_variable() && count != 1 {
        return Err(ParseError::ArrayStringCount);
    }
    if objects && !dtype.is_variable() {
        return Err(ParseError::ArrayObjectType);
    }
    let mut leaves = Vec::new();
    collect_leaves(value, &shape, 0, &mut leaves)?;
    if dtype.is_variable() {
        // Exactly one leaf, checked above and by the walk.
        let element = match leaves.first() {
            Some(Value::String(s)) if !objects => Bytes::copy_from_slice(s.as_bytes()),
            Some(Value::Object(map)) => Bytes::from(decode_b64(check_object(map)?.b64)?),
            _ => return Err(ParseError::LeafKind),
        };
        return Ok(string_like(dtype, shape, element));
    }
    let mut raw = Vec::new();
    for leaf in leaves {
        if !matches!(leaf, Value::Number(_) | Value::Bool(_) | Value::String(_)) {
            return Err(ParseError::LeafKind);
        }
        if scalar_kind(leaf) != Some(dtype) {
            return Err(ParseError::ElementsNotEqual);
        }
        push_leaf(dtype, leaf, &mut raw)?;
    }
    Ok(numeric(dtype, shape, raw))
}

/// Walks a nested array against `shape`, collecting its leaves in row-major
/// order (MindSpore's `RecursiveGetArray` checks, in its order).
fn collect_leaves<'a>(
    value: &'a Value,
    shape: &[i64],
    depth: usize,
    out: &mut Vec<&'a Value>,
) -> Result<(), ParseError> {
    let Value::Array(items) = value else {
        return Err(ParseError::NotArray);
    };
    let expected = shape[depth];
    if items.len() as i64 != expected {
        return Err(ParseError::Ragged {
            size: items.len(),
            dim: depth,
            expected,
        });
    }
    if depth + 1 < shape.len() {
        for item in items {
            collect_leaves(item, shape, depth + 1, out)?;
        }
    } else {
        for item in items {
            if matches!(item, Value::Array(_) | Value::Null) {
                return Err(ParseError::LeafKind);
            }
            out.push(item);
        }
    }
    Ok(())
}

/// A reply that cannot be written as MindSpore REST JSON; Display is
/// MindSpore's `Failed to construct the response: ...` text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// A string/bytes output of rank 2 or more.
    #[error(
        "Failed to construct the response: reply string or bytes, shape should be 1, given shape size:{0}"
    )]
    StringShape(usize),
    /// A successful instance without outputs.
    #[error("Failed to construct the response: reply instance items is empty")]
    EmptyInstance,
}

/// `{"error_msg": "<text>"}`.
pub fn encode_error(text: &str) -> String {
    serde_json::json!({ "error_msg": crate::text::bounded(text) }).to_string()
}

/// Encodes the reply body of an outcome (spec §3.6): a whole-request failure
/// as `{"error_msg": ...}`, otherwise `{"instances": [...]}` with a
/// `{"error_msg": ...}` object in place of each failed instance.
pub fn encode_response(outcome: &Outcome) -> Result<String, ResponseError> {
    let results = match outcome {
        Outcome::Failed(e) => return Ok(encode_error(&e.message)),
        Outcome::Instances(results) => results,
    };
    let mut instances = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Err(e) => {
                instances.push(serde_json::json!({ "error_msg": crate::text::bounded(&e.message) }))
            }
            Ok(tensors) if tensors.is_empty() => return Err(ResponseError::EmptyInstance),
            Ok(tensors) => {
                let mut obj = Map::new();
                for (name, t) in tensors {
                    obj.insert(name.clone(), output_value(t)?);
                }
                instances.push(Value::Object(obj));
            }
        }
    }
    Ok(serde_json::json!({ "instances": instances }).to_string())
}

fn b64_value(bytes: &[u8]) -> Value {
    serde_json::json!({ "b64": B64.encode(bytes) })
}

fn output_value(t: &Tensor) -> Result<Value, ResponseError> {
    match t.data() {
        TensorData::Elements(elements) => {
            if t.shape().len() > 1 {
                return Err(ResponseError::StringShape(t.shape().len()));
            }
            let mut values = elements.iter().map(|e| match t.dtype() {
                DataType::String => Value::String(String::from_utf8_lossy(e).into_owned()),
                _ => b64_value(e),
            });
            Ok(json::nest(t.shape(), &mut values))
        }
        TensorData::Raw(raw) => {
            let item = t.dtype().item_size().unwrap_or(1);
            let mut values = raw
                .chunks_exact(item)
                .map(|b| json::element_value(t.dtype(), b));
            Ok(json::nest(t.shape(), &mut values))
        }
    }
}

/// A request the client cannot express in MindSpore REST JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A type MindSpore does not carry.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedType),
    /// More than one string/bytes element in one input.
    #[error(
        "input {name} has {count} {dtype} elements, but MindSpore Serving takes exactly one string or bytes element per input"
    )]
    StringCount {
        /// Input name.
        name: String,
        /// The type.
        dtype: DataType,
        /// Elements given.
        count: usize,
    },
}

/// Encodes instances as a request body. INT32, FP32 and BOOL tensors become
/// plain JSON (scalars or nested arrays); every other numeric type, empty
/// tensors and non-finite floats become b64 objects with explicit type and
/// shape, so values arrive exactly. Strings become JSON strings.
pub fn encode_request(instances: &[NamedTensors]) -> Result<String, EncodeError> {
    let mut list = Vec::with_capacity(instances.len());
    for instance in instances {
        let mut obj = Map::new();
        for (name, t) in instance {
            obj.insert(name.clone(), request_value(name, t)?);
        }
        list.push(Value::Object(obj));
    }
    Ok(serde_json::json!({ "instances": list }).to_string())
}

fn request_value(name: &str, t: &Tensor) -> Result<Value, EncodeError> {
    t.dtype().to_mindspore()?;
    let shape_json = || Value::from(t.shape().to_vec());
    match t.data() {
        TensorData::Elements(elements) => {
            let [element] = elements.as_slice() else {
                return Err(EncodeError::StringCount {
                    name: name.to_owned(),
                    dtype: t.dtype(),
                    count: elements.len(),
                });
            };
            match std::str::from_utf8(element) {
                Ok(text) if t.dtype() == DataType::String => Ok(json::nest(
                    t.shape(),
                    &mut std::iter::once(Value::from(text)),
                )),
                _ => Ok(serde_json::json!({
                    "b64": B64.encode(element),
                    "type": t.dtype().mindspore_rest_name(),
                    "shape": shape_json(),
                })),
            }
        }
        TensorData::Raw(raw) => {
            let plain = matches!(t.dtype(), DataType::Int32 | DataType::Fp32 | DataType::Bool)
                && !raw.is_empty()
                && (t.dtype() != DataType::Fp32
                    || raw
                        .chunks_exact(4)
                        .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()));
            if plain {
                let mut values = raw
                    .chunks_exact(t.dtype().item_size().unwrap_or(1))
                    .map(|b| json::element_value(t.dtype(), b));
                Ok(json::nest(t.shape(), &mut values))
            } else {
                Ok(serde_json::json!({
                    "b64": B64.encode(raw),
                    "type": t.dtype().mindspore_rest_name(),
                    "shape": shape_json(),
                }))
            }
        }
    }
}

/// A reply body that is not MindSpore REST JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseDecodeError {
    /// The body is not JSON, or not of the reply form.
    #[error("malformed MindSpore REST reply: {0}")]
    Malformed(String),
    /// The reply has a different number of instances from the request.
    #[error("reply has {actual} instances but the request sent {expected}")]
    InstanceCount {
        /// Instances sent.
        expected: usize,
        /// Instances received.
        actual: usize,
    },
}

fn malformed(what: impl Into<String>) -> ResponseDecodeError {
    ResponseDecodeError::Malformed(what.into())
}

/// Decodes a reply body for a request of `sent` instances.
///
/// JSON carries no types: integers decode as INT64 (UINT64 above its range),
/// other numbers and `null` (a NaN) as FP64, strings as STRING and
/// `{"b64": ...}` as BYTES; an empty array decodes as FP64 of that shape.
pub fn decode_response(body: &[u8], sent: usize) -> Result<Outcome, ResponseDecodeError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let Value::Object(top) = json else {
        return Err(malformed("the body is not a JSON object"));
    };
    let Some(instances) = top.get("instances") else {
        return match top.get("error_msg") {
            Some(Value::String(text)) => Ok(Outcome::Failed(ServableError::new(
                StatusCode::Failed,
                text.clone(),
            ))),
            _ => Err(malformed(
                "neither 'instances' nor 'error_msg' in the reply",
            )),
        };
    };
    let Value::Array(list) = instances else {
        return Err(malformed("'instances' is not an array"));
    };
    if list.len() != sent {
        return Err(ResponseDecodeError::InstanceCount {
            expected: sent,
            actual: list.len(),
        });
    }
    let mut results = Vec::with_capacity(sent);
    for (index, item) in list.iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(malformed(format!("instance {index} is not an object")));
        };
        if let (1, Some(Value::String(text))) = (obj.len(), obj.get("error_msg")) {
            results.push(Err(ServableError::new(StatusCode::Failed, text.clone())));
            continue;
        }
        let mut tensors = NamedTensors::new();
        for (name, value) in obj {
            let t = response_tensor(value)
                .map_err(|e| malformed(format!("output {name} of instance {index}: {e}")))?;
            tensors.insert(name.clone(), t);
        }
        results.push(Ok(tensors));
    }
    Ok(Outcome::Instances(results))
}

fn response_tensor(value: &Value) -> Result<Tensor, String> {
    let mut shape = Vec::new();
    let mut cur = value;
    while let Value::Array(items) = cur {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut leaves = Vec::new();
    if shape.is_empty() {
        leaves.push(value);
    } else {
        collect_leaves(value, &shape, 0, &mut leaves).map_err(|e| e.to_string())?;
    }
    let all = |f: fn(&Value) -> bool| leaves.iter().all(|v| f(v));
    if leaves.is_empty() {
        return Tensor::from_raw(DataType::Fp64, shape, Bytes::new()).map_err(|e| e.to_string());
    }
    if all(|v| v.is_boolean()) {
        return typed(DataType::Bool, shape, &leaves);
    }
    if all(|v| v.is_i64()) {
        return typed(DataType::Int64, shape, &leaves);
    }
    if all(|v| v.is_u64() || v.is_i64()) && all(|v| !v.is_i64() || v.as_i64() >= Some(0)) {
        return typed(DataType::Uint64, shape, &leaves);
    }
    if all(|v| v.is_number() || v.is_null()) {
        let mut raw = Vec::with_capacity(leaves.len() * 8);
        for v in &leaves {
            raw.extend_from_slice(&v.as_f64().unwrap_or(f64::NAN).to_le_bytes());
        }
        return Tensor::from_raw(DataType::Fp64, shape, Bytes::from(raw))
            .map_err(|e| e.to_string());
    }
    if all(|v| v.is_string()) {
        let elements = leaves
            .iter()
            .map(|v| Bytes::copy_from_slice(v.as_str().unwrap_or_default().as_bytes()))
            .collect();
        return Tensor::from_elements(DataType::String, shape, elements).map_err(|e| e.to_string());
    }
    let mut elements = Vec::with_capacity(leaves.len());
    for v in &leaves {
        let b64 = v
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("b64"))
            .ok_or("values of mixed or unknown kinds")?;
        let data = decode_b64(b64).map_err(|e| e.to_string())?;
        elements.push(Bytes::from(data));
    }
    Tensor::from_elements(DataType::Bytes, shape, elements).map_err(|e| e.to_string())
}

fn typed(dtype: DataType, shape: Vec<i64>, leaves: &[&Value]) -> Result<Tensor, String> {
    let mut raw = Vec::with_capacity(leaves.len() * dtype.item_size().unwrap_or(1));
    for v in leaves {
        json::push_element(dtype, v, &mut raw).map_err(|_| format!("value {v} is not {dtype}"))?;
    }
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).map_err(|e| e.to_string())
}
