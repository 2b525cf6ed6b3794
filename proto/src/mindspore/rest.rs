//! MindSpore Serving REST bodies to and from tensors (spec §3).
//!
//! Requests: `{"instances": {...} | [{...}, ...]}`, each instance a map of
//! input names to JSON scalars, rectangular arrays or b64 objects
//! `{"b64": "...", "type": "int64", "shape": [2, 2]}`. Every error text is
//! MindSpore's, byte for byte, including the `Parser request failed, ` prefix
//! on body-content errors. Where MindSpore silently narrows a JSON integer to
//! int32 or a number to float32, this codec refuses the value and names it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::text::quote;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Outcome, ServableError, StatusCode};
use crate::json::{self, KeySeed, NumberError, Render, Scalar, Text, TextSeed, Validate};
use crate::json_charge;
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
    /// A b64 BOOL element that is neither 0 nor 1 (MindSpore passes it on;
    /// we refuse it, as the gRPC decoder does).
    #[error("{0}")]
    InvalidBool(String),
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
///
/// One streaming pass over the body, no `Value` tree: each input's value
/// is kept as the body's text until its instance is complete, then decoded
/// straight into its tensor (a nested array into a buffer sized from its
/// shape, read from the text first). The errors, their texts and which one
/// wins when several apply are those of [`decode_instances`] over the
/// parsed body.
pub fn decode_request(body: &[u8], max_bytes: usize) -> Result<Vec<NamedTensors>, RestError> {
    check_body(body, max_bytes)?;
    let instances = match json::parse_all(body, TopSeed) {
        Ok(Some(instances)) => instances,
        Ok(None) => Err(ParseError::InstancesKey(0).into()),
        Err(e) => {
            return Err(match json::validate(body) {
                Err(e) => RestError::IllegalJson(e.to_string()),
                Ok(()) => RestError::IllegalJson(e.to_string()),
            });
        }
    };
    instances.map_err(|fail| match json::validate(body) {
        Err(e) => RestError::IllegalJson(e.to_string()),
        Ok(()) => match fail {
            Fail::Parse(e) => RestError::Parse(e),
            Fail::Json(message) => RestError::IllegalJson(message),
        },
    })
}

/// Why a body was refused while it was read.
enum Fail {
    /// For its content.
    Parse(ParseError),
    /// A part of the JSON parsed on its own is not valid where it stands in
    /// the body: the message of that parse (the whole body is validated
    /// before the error is reported).
    Json(String),
}

impl From<ParseError> for Fail {
    fn from(e: ParseError) -> Fail {
        Fail::Parse(e)
    }
}

fn json_fail(e: serde_json::Error) -> Fail {
    Fail::Json(e.to_string())
}

/// The body: its `instances` decoded, or `None` when it is not an object or
/// has no `instances` (the last of repeated keys counts).
struct TopSeed;

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Option<Result<Vec<NamedTensors>, Fail>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed {
    type Value = Option<Result<Vec<NamedTensors>, Fail>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Validate { level: 0 }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut instances = None;
        while let Some(key) = map.next_key_seed(KeySeed(&["instances"]))? {
            match key {
                Some(_) => instances = Some(map.next_value_seed(InstancesSeed)?),
                None => map.next_value_seed(Validate { level: 1 })?,
            }
        }
        Ok(instances)
    }
}

/// An instance's inputs as the body's text, by name (the last of repeated
/// names counts; the values it replaces are checked).
type RawInstance<'a> = BTreeMap<String, &'a RawValue>;

/// Checks the values of an instance that were not read (it failed, and a
/// repeated `instances` may yet replace it).
fn check_instance<E: de::Error>(instance: &RawInstance<'_>, level: usize) -> Result<(), E> {
    for raw in instance.values() {
        json::parse_text(raw.get(), Validate { level }).map_err(E::custom)?;
    }
    Ok(())
}

/// Decodes an instance whose values are inside `level` arrays and objects,
/// checking the values not read if it fails.
fn instance<E: de::Error>(
    raw: &RawInstance<'_>,
    level: usize,
) -> Result<Result<NamedTensors, Fail>, E> {
    let decoded = decode_raw_instance(raw, level);
    if decoded.is_err() {
        check_instance(raw, level)?;
    }
    // The instance's text map is dropped by the caller once decoded.
    json_charge::shrink(raw_instance_cost(raw));
    Ok(decoded)
}

/// What [`read_instance`] charges for a map of the instance's text.
fn raw_instance_cost(raw: &RawInstance<'_>) -> usize {
    json_charge::map_node::<String, &RawValue>()
        + raw
            .keys()
            .map(|k| json_charge::map_entry::<String, &RawValue>(k.len()))
            .sum::<usize>()
}

struct InstancesSeed;

impl<'de> DeserializeSeed<'de> for InstancesSeed {
    type Value = Result<Vec<NamedTensors>, Fail>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed {
    type Value = Result<Vec<NamedTensors>, Fail>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(ParseError::NoKeyMode.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        // `{"instances": {...}}`: one instance.
        let raw = read_instance(map, 1)?;
        if raw.is_empty() {
            return Ok(Err(ParseError::EmptyObject.into()));
        }
        Ok(instance::<A::Error>(&raw, 2)?.map(|one| vec![one]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut instances = Ok(Vec::new());
        let mut index = 0;
        loop {
            let Ok(list) = instances.as_mut() else {
                while seq.next_element_seed(Validate { level: 2 })?.is_some() {}
                break;
            };
            let Some(item) = seq.next_element_seed(InstanceSeed { level: 2 })? else {
                if index == 0 {
                    instances = Err(ParseError::InstancesEmpty.into());
                }
                break;
            };
            let decoded = match item {
                None if index == 0 => Err(ParseError::NoKeyMode.into()),
                None => Err(ParseError::InstanceNotObject.into()),
                Some(raw) if raw.is_empty() => Err(ParseError::InstanceEmpty.into()),
                Some(raw) => instance::<A::Error>(&raw, 3)?,
            };
            match decoded {
                Ok(one) => {
                    json_charge::grow(2 * std::mem::size_of::<NamedTensors>())
                        .map_err(de::Error::custom)?;
                    list.push(one);
                }
                Err(e) => instances = Err(e),
            }
            index += 1;
        }
        Ok(instances)
    }
}

/// An instance: its values as text, or `None` when it is not an object.
struct InstanceSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed {
    type Value = Option<RawInstance<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceSeed {
    type Value = Option<RawInstance<'de>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_instance(map, self.level).map(Some)
    }
}

/// Reads an instance object inside `level` arrays and objects.
fn read_instance<'de, A: MapAccess<'de>>(
    mut map: A,
    level: usize,
) -> Result<RawInstance<'de>, A::Error> {
    let level = json::enter(level)?;
    let mut raw = RawInstance::new();
    json_charge::grow(json_charge::map_node::<String, &RawValue>()).map_err(de::Error::custom)?;
    while let Some(key) = map.next_key::<String>()? {
        if raw.contains_key(&key) {
            // Replaced: charged once.
        } else {
            json_charge::grow(json_charge::map_entry::<String, &RawValue>(key.len()))
                .map_err(de::Error::custom)?;
        }
        if let Some(before) = raw.insert(key, map.next_value()?) {
            json::parse_text(before.get(), Validate { level }).map_err(de::Error::custom)?;
        }
    }
    Ok(raw)
}

fn decode_raw_instance(raw: &RawInstance<'_>, level: usize) -> Result<NamedTensors, Fail> {
    let mut tensors = NamedTensors::new();
    json_charge::grow(json_charge::map_node::<String, Tensor>()).map_err(refused)?;
    for (key, value) in raw {
        if key.is_empty() {
            return Err(ParseError::EmptyKey.into());
        }
        json_charge::grow(json_charge::map_entry::<String, Tensor>(key.len())).map_err(refused)?;
        tensors.insert(key.clone(), decode_raw_value(value.get(), level)?);
    }
    Ok(tensors)
}

/// Decodes one input value from its text, inside `level` arrays and
/// objects: a scalar, a rectangular array or a b64 object.
fn decode_raw_value(text: &str, level: usize) -> Result<Tensor, Fail> {
    match text.as_bytes().first() {
        Some(b'[') => decode_raw_array(text, level),
        Some(b'n') => Err(ParseError::Null.into()),
        _ => match json::parse_text(text, LeafSeed { level }).map_err(json_fail)? {
            Leaf::Object(fields) => decode_raw_object(&fields, level + 1),
            Leaf::Str(s) => {
                json_charge::grow(element_cost(s.len())).map_err(refused)?;
                Ok(string_tensor(vec![], Bytes::copy_from_slice(s.as_bytes())))
            }
            Leaf::Scalar(scalar) => {
                let dtype = leaf_kind(scalar).ok_or(ParseError::LeafKind)?;
                json_charge::grow(16).map_err(refused)?;
                let mut raw = Vec::with_capacity(4);
                push_scalar_leaf(dtype, scalar, &mut raw)?;
                Ok(numeric(dtype, vec![], raw))
            }
            Leaf::Null | Leaf::Array => Err(ParseError::LeafKind.into()),
        },
    }
}

/// The tensor type of a JSON scalar: int -> INT32, float -> FP32, bool.
fn leaf_kind(scalar: Scalar) -> Option<DataType> {
    match scalar {
        Scalar::Bool(_) => Some(DataType::Bool),
        Scalar::F64(_) => Some(DataType::Fp32),
        Scalar::U64(_) | Scalar::I64(_) => Some(DataType::Int32),
        Scalar::Other => None,
    }
}

fn push_scalar_leaf(dtype: DataType, v: Scalar, out: &mut Vec<u8>) -> Result<(), ParseError> {
    json::push_scalar(dtype, v, out).map_err(|e| match (e, dtype) {
        (NumberError::Range(text), DataType::Int32) => ParseError::IntRange(text),
        (NumberError::Range(text), _) => ParseError::FloatRange(text),
        (NumberError::Kind, _) => ParseError::ElementsNotEqual,
    })
}

/// A value read as one leaf: arrays are only checked.
enum Leaf<'a> {
    Scalar(Scalar),
    Str(Cow<'a, str>),
    Null,
    Array,
    Object(Fields<'a>),
}

struct LeafSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for LeafSeed {
    type Value = Leaf<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Leaf<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeafSeed {
    type Value = Leaf<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Scalar(Scalar::Bool(b)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Scalar(Scalar::I64(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Scalar(Scalar::U64(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Scalar(Scalar::F64(v)))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Str(s.into()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Str(s.to_owned().into()))
    }
    fn visit_unit<E>(self) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Leaf<'de>, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(Leaf::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Leaf<'de>, A::Error> {
        Ok(Leaf::Object(
            FieldsSeed { level: self.level }.visit_map(map)?,
        ))
    }
}

/// The fields of an object as found, by key: at most four distinct keys
/// are kept (a fourth means too many), the last of repeated keys counts and
/// the text it replaces is checked.
struct Fields<'a> {
    entries: BTreeMap<String, Field<'a>>,
}

enum Field<'a> {
    B64(&'a RawValue),
    Type(Text<'a>),
    Shape(&'a RawValue),
    Other,
}

struct FieldsSeed {
    level: usize,
}

impl<'de> FieldsSeed {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let level = json::enter(self.level)?;
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.len() > 3 && !entries.contains_key(&key) {
                map.next_value_seed(Validate { level })?;
                continue;
            }
            let field = match key.as_str() {
                "b64" => Field::B64(map.next_value()?),
                "type" => Field::Type(map.next_value_seed(TextSeed { level })?),
                "shape" => Field::Shape(map.next_value()?),
                _ => {
                    map.next_value_seed(Validate { level })?;
                    Field::Other
                }
            };
            if let Some(Field::B64(before) | Field::Shape(before)) = entries.insert(key, field) {
                json::parse_text(before.get(), Validate { level }).map_err(de::Error::custom)?;
            }
        }
        Ok(Fields { entries })
    }
}

/// A validated b64 object: its type and shape, and the base64 value's text.
struct RawB64Object<'a> {
    dtype: DataType,
    shape: Vec<i64>,
    b64: &'a RawValue,
}

/// MindSpore's `CheckObj` over the fields of an object whose values are
/// inside `level` arrays and objects: keys in sorted order, each checked as
/// it comes.
fn check_fields<'a>(fields: &Fields<'a>, level: usize) -> Result<RawB64Object<'a>, Fail> {
    if fields.entries.is_empty() {
        return Err(ParseError::EmptyObject.into());
    }
    if fields.entries.len() > 3 {
        return Err(ParseError::ObjectTooManyKeys.into());
    }
    let mut b64 = None;
    let mut dtype = DataType::Bytes;
    let mut shape = Vec::new();
    for (key, field) in &fields.entries {
        match field {
            Field::B64(raw) => b64 = Some(*raw),
            Field::Type(Text::Str(name)) => {
                dtype = DataType::from_mindspore_rest_name(name)
                    .ok_or_else(|| ParseError::TypeIllegal(name.to_string()))?;
            }
            Field::Type(Text::Other) => return Err(ParseError::TypeNotString.into()),
            Field::Shape(raw) => shape = check_raw_shape(raw.get(), level)?,
            Field::Other => return Err(ParseError::ObjectUnknownKey(key.clone()).into()),
        }
    }
    let b64 = b64.ok_or(ParseError::ObjectB64Count)?;
    Ok(RawB64Object { dtype, shape, b64 })
}

/// The checks of [`check_shape`] on a shape's text.
fn check_raw_shape(text: &str, level: usize) -> Result<Vec<i64>, Fail> {
    if !text.starts_with('[') {
        return Err(ParseError::ShapeNotArray.into());
    }
    // The error quotes the shape's first bytes: rendering more than an
    // error text's worth would only be held (a shape of `1E15`s renders
    // 4.5 times its text).
    let rendered = || -> Result<String, Fail> {
        json::parse_text(
            text,
            Render {
                cap: crate::text::MESSAGE_MAX,
                level,
            },
        )
        .map_err(json_fail)
    };
    let (shape, fault) = json::parse_text(text, ShapeSeed { level }).map_err(json_fail)?;
    match fault {
        Some(ShapeFault::AfterZero) => return Err(ParseError::ShapeInvalid(rendered()?).into()),
        Some(ShapeFault::NotUnsigned) => return Err(ParseError::ShapeNotUnsigned.into()),
        Some(ShapeFault::TooLarge) => return Err(ParseError::ShapeTooLarge(rendered()?).into()),
        None => {}
    }
    if element_count(&shape)
        .and_then(|n| n.checked_mul(8))
        .is_none()
    {
        return Err(ParseError::ShapeTooLarge(rendered()?).into());
    }
    Ok(shape)
}

/// The first fault of a b64 object's shape, in [`check_shape`]'s order.
enum ShapeFault {
    AfterZero,
    NotUnsigned,
    TooLarge,
}

struct ShapeSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = (Vec<i64>, Option<ShapeFault>);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = (Vec<i64>, Option<ShapeFault>);
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let level = json::enter(self.level)?;
        let mut shape = Vec::new();
        let mut fault = None;
        while fault.is_none() {
            let Some(dim) = seq.next_element_seed(UnsignedSeed { level })? else {
                break;
            };
            fault = if shape.last() == Some(&0) {
                Some(ShapeFault::AfterZero)
            } else {
                match dim.map(i64::try_from) {
                    None => Some(ShapeFault::NotUnsigned),
                    Some(Err(_)) => Some(ShapeFault::TooLarge),
                    Some(Ok(d)) => {
                        shape.push(d);
                        None
                    }
                }
            };
        }
        while seq.next_element_seed(Validate { level })?.is_some() {}
        Ok((shape, fault))
    }
}

/// A JSON unsigned integer, else `None`.
struct UnsignedSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for UnsignedSeed {
    type Value = Option<u64>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UnsignedSeed {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<u64>, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<u64>, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(None)
    }
}

/// The bytes of a `b64` value given as text.
fn decode_raw_b64(raw: &RawValue, level: usize) -> Result<Vec<u8>, Fail> {
    if !raw.get().starts_with('"') {
        return Err(ParseError::B64NotString.into());
    }
    // At most 3 bytes per 4 of text.
    json_charge::grow(element_cost(raw.get().len() / 4 * 3 + 3)).map_err(refused)?;
    match json::parse_text(raw.get(), TextSeed { level }).map_err(json_fail)? {
        Text::Str(text) => B64
            .decode(text.as_bytes())
            .map_err(|_| ParseError::B64Illegal(text.into_owned()).into()),
        Text::Other => Err(ParseError::B64NotString.into()),
    }
}

/// [`decode_object`] over an object's fields (values inside `level`).
fn decode_raw_object(fields: &Fields<'_>, level: usize) -> Result<Tensor, Fail> {
    let obj = check_fields(fields, level)?;
    let count = element_count(&obj.shape).unwrap_or(usize::MAX);
    match obj.dtype.item_size() {
        None => {
            if count != 1 {
                return Err(ParseError::ObjectStringNotScalar.into());
            }
            let data = decode_raw_b64(obj.b64, level)?;
            Ok(string_like(obj.dtype, obj.shape, Bytes::from(data)))
        }
        Some(item) => {
            let data = decode_raw_b64(obj.b64, level)?;
            if Some(data.len()) != count.checked_mul(item) {
                return Err(ParseError::B64Size {
                    decoded: data.len(),
                    type_name: obj.dtype.mindspore_rest_name(),
                    type_size: item,
                    elements: count,
                }
                .into());
            }
            b64_numeric(obj.dtype, obj.shape, data)
        }
    }
}

/// [`decode_array`] over an array's text (inside `level` arrays and
/// objects), in the same order of checks: the shape and the first leaf
/// (read from the text before anything is parsed), the type, then one
/// parse that walks the array against the shape and writes the leaves
/// into a buffer sized from the shape (when the text can hold that many
/// leaves: two bytes each with their commas).
fn decode_raw_array(text: &str, level: usize) -> Result<Tensor, Fail> {
    let (shape, at) = json::first_path(text.as_bytes());
    if shape.is_empty() {
        return Err(ParseError::ArrayShapeEmpty.into());
    }
    let leaf_level = level + shape.len();
    let first =
        json::parse_first(&text[at..], LeafSeed { level: leaf_level }).map_err(json_fail)?;
    let (dtype, objects) = match &first {
        Leaf::Object(fields) => (check_fields(fields, leaf_level + 1)?.dtype, true),
        Leaf::Array | Leaf::Null => return Err(ParseError::ArrayTypeUnknown.into()),
        Leaf::Str(_) => (DataType::String, false),
        Leaf::Scalar(scalar) => (
            leaf_kind(*scalar).ok_or(ParseError::ArrayTypeUnknown)?,
            false,
        ),
    };
    // The product may exceed what the body holds (a ragged array); it is only
    // compared, never allocated.
    let count = element_count(&shape).unwrap_or(usize::MAX);
    if dtype.is_variable() && count != 1 {
        return Err(ParseError::ArrayStringCount.into());
    }
    if objects && !dtype.is_variable() {
        return Err(ParseError::ArrayObjectType.into());
    }
    let values = !dtype.is_variable();
    let store = values && count <= text.len().div_ceil(2);
    let Walked {
        fault,
        mut raw,
        value_fault,
    } = walk(text, &shape, dtype, values, store, level)?;
    if let Some(fault) = fault {
        return Err(fault.into());
    }
    if !values {
        // Exactly one leaf, checked above and by the walk.
        let element = match first {
            Leaf::Str(s) if !objects => {
                json_charge::grow(element_cost(s.len())).map_err(refused)?;
                Bytes::copy_from_slice(s.as_bytes())
            }
            Leaf::Object(fields) => {
                let obj = check_fields(&fields, leaf_level + 1)?;
                Bytes::from(decode_raw_b64(obj.b64, leaf_level + 1)?)
            }
            _ => return Err(ParseError::LeafKind.into()),
        };
        return Ok(string_like(dtype, shape, element));
    }
    if let Some(fault) = value_fault {
        return Err(fault.into());
    }
    if !store {
        // Not reached: a rectangular array of `count` leaves takes at least
        // `2 * count - 1` bytes. Walk again, keeping the leaves.
        raw = walk(text, &shape, dtype, values, true, level)?.raw;
    }
    Ok(numeric(dtype, shape, raw))
}

/// Walks a nested array's text against `shape`: the walk's fault, the
/// leaves (when `store`) and the first leaf that is not an element.
fn walk(
    text: &str,
    shape: &[i64],
    dtype: DataType,
    values: bool,
    store: bool,
    level: usize,
) -> Result<Walked, Fail> {
    let count = element_count(shape).unwrap_or(usize::MAX);
    let mut state = WalkState {
        shape,
        dtype,
        values,
        count,
        store,
        raw: Vec::new(),
        leaves: 0,
        value_fault: None,
        failed: false,
    };
    if store {
        let bytes = count * dtype.item_size().unwrap_or(1);
        json_charge::grow(bytes).map_err(refused)?;
        state.raw.reserve_exact(bytes);
    }
    let fault = json::parse_text(
        text,
        Walk {
            state: &mut state,
            depth: 0,
            level,
        },
    )
    .map_err(json_fail)?;
    Ok(Walked {
        fault,
        raw: state.raw,
        value_fault: state.value_fault,
    })
}

/// What [`walk`] found.
struct Walked {
    /// The walk's fault (the array is not rectangular, or holds arrays or
    /// `null` where leaves are).
    fault: Option<ParseError>,
    /// The leaves, when kept.
    raw: Vec<u8>,
    /// The first leaf that is not an element of the type.
    value_fault: Option<ParseError>,
}

/// What a walk over a nested array keeps: [`collect_leaves`]'s checks,
/// then [`decode_array`]'s checks of each leaf, with the leaves written to
/// `raw`.
struct WalkState<'s> {
    shape: &'s [i64],
    dtype: DataType,
    /// Whether leaves are checked and kept (numeric types).
    values: bool,
    count: usize,
    store: bool,
    raw: Vec<u8>,
    leaves: usize,
    /// The first leaf that is not an element of the type.
    value_fault: Option<ParseError>,
    /// Whether the walk found a fault (leaves no longer matter).
    failed: bool,
}

impl WalkState<'_> {
    /// The index of the next leaf, if its value is still checked.
    #[inline]
    fn next(&mut self) -> Option<usize> {
        let i = self.leaves;
        self.leaves += 1;
        (self.values && !self.failed && self.value_fault.is_none() && i < self.count).then_some(i)
    }

    #[inline]
    fn scalar(&mut self, value: Scalar) {
        if self.next().is_none() {
            return;
        }
        if leaf_kind(value) != Some(self.dtype) {
            self.value_fault = Some(ParseError::ElementsNotEqual);
            return;
        }
        match push_scalar_leaf(self.dtype, value, &mut self.raw) {
            Ok(()) => {
                if !self.store {
                    self.raw.clear();
                }
            }
            Err(e) => self.value_fault = Some(e),
        }
    }

    fn not_scalar(&mut self, fault: ParseError) {
        if self.next().is_some() {
            self.value_fault = Some(fault);
        }
    }
}

/// A node of a nested array at `depth` (an array is expected): its fault in
/// [`collect_leaves`]'s order, the node's own before its children's.
struct Walk<'a, 's> {
    state: &'a mut WalkState<'s>,
    depth: usize,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = Option<ParseError>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_, '_> {
    fn not_array(self) -> Option<ParseError> {
        self.state.failed = true;
        Some(ParseError::NotArray)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = Option<ParseError>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.not_array())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(self.not_array())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let level = json::enter(self.level)?;
        let last = self.depth + 1 == self.state.shape.len();
        let mut first_fault = None;
        let mut len = 0usize;
        loop {
            let item = if self.state.failed {
                seq.next_element_seed(Validate { level })?.map(|()| None)
            } else if last {
                seq.next_element_seed(LeafItem {
                    state: &mut *self.state,
                    level,
                })?
            } else {
                seq.next_element_seed(Walk {
                    state: &mut *self.state,
                    depth: self.depth + 1,
                    level,
                })?
            };
            let Some(fault) = item else { break };
            len += 1;
            if first_fault.is_none() && fault.is_some() {
                first_fault = fault;
                self.state.failed = true;
            }
        }
        let expected = self.state.shape[self.depth];
        if len as i64 != expected {
            self.state.failed = true;
            return Ok(Some(ParseError::Ragged {
                size: len,
                dim: self.depth,
                expected,
            }));
        }
        Ok(first_fault)
    }
}

/// An element of an array at the last depth: a leaf (checked and kept), or
/// an array or `null` (a fault of the walk).
struct LeafItem<'a, 's> {
    state: &'a mut WalkState<'s>,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for LeafItem<'_, '_> {
    type Value = Option<ParseError>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeafItem<'_, '_> {
    type Value = Option<ParseError>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        self.state.scalar(Scalar::Bool(b));
        Ok(None)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        self.state.scalar(Scalar::I64(v));
        Ok(None)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        self.state.scalar(Scalar::U64(v));
        Ok(None)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        self.state.scalar(Scalar::F64(v));
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        self.state.not_scalar(ParseError::ElementsNotEqual);
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        self.state.not_scalar(ParseError::LeafKind);
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(ParseError::LeafKind))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(Some(ParseError::LeafKind))
    }
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

/// The tensor of a b64 object's bytes (of the right size), refusing BOOL
/// bytes other than 0 and 1.
fn b64_numeric<E: From<ParseError>>(
    dtype: DataType,
    shape: Vec<i64>,
    data: Vec<u8>,
) -> Result<Tensor, E> {
    Tensor::from_raw(dtype, shape, Bytes::from(data))
        .map_err(|e| ParseError::InvalidBool(e.to_string()).into())
}

fn numeric(dtype: DataType, shape: Vec<i64>, raw: Vec<u8>) -> Tensor {
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).expect("shape and data were built together")
}

/// What one string or bytes element of `len` bytes costs: its bytes and
/// the tensor's list of one handle.
fn element_cost(len: usize) -> usize {
    json_charge::block(len) + json_charge::block(std::mem::size_of::<Bytes>())
}

/// The decode's error when the memory budget refused it (replaced by the
/// refusal itself, see [`json_charge::charged`]).
fn refused(e: json_charge::Refused) -> Fail {
    Fail::Json(e.to_string())
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
            b64_numeric(obj.dtype, obj.shape, data)
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
/// `{"error_msg": ...}` object in place of each failed instance. The JSON
/// is written straight into one buffer (keys in sorted order), no `Value`
/// tree.
pub fn encode_response(outcome: &Outcome) -> Result<String, ResponseError> {
    let results = match outcome {
        Outcome::Failed(e) => return Ok(encode_error(&e.message)),
        Outcome::Instances(results) => results,
    };
    let capacity: usize = results
        .iter()
        .flatten()
        .flat_map(|tensors| tensors.iter())
        .map(|(name, t)| name.len() + value_capacity(t))
        .sum();
    let mut out = Vec::with_capacity(capacity + 64);
    out.extend_from_slice(b"{\"instances\":[");
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match result {
            Err(e) => {
                out.extend_from_slice(b"{\"error_msg\":");
                json::write_value(&mut out, &crate::text::bounded(&e.message));
                out.push(b'}');
            }
            Ok(tensors) if tensors.is_empty() => return Err(ResponseError::EmptyInstance),
            Ok(tensors) => {
                out.push(b'{');
                for (k, (name, t)) in tensors.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    json::write_value(&mut out, name);
                    out.push(b':');
                    write_output(&mut out, t)?;
                }
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"]}");
    Ok(into_string(out))
}

/// The text written by the JSON writers (always UTF-8).
fn into_string(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A capacity for the JSON of a tensor's value.
fn value_capacity(t: &Tensor) -> usize {
    let data = match t.data() {
        TensorData::Raw(raw) => {
            (raw.len() / 3 + 1) * 4 + t.element_count() * json::element_text_bound(t.dtype())
        }
        TensorData::Elements(e) => e.iter().map(|e| e.len() / 3 * 4 + 16).sum(),
    };
    64 + 24 * t.shape().len() + data
}

/// Appends a `{"b64": ...}` object.
fn write_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"{\"b64\":");
    json::write_value(out, &B64.encode(bytes));
    out.push(b'}');
}

/// Appends an output tensor as MindSpore writes it.
fn write_output(out: &mut Vec<u8>, t: &Tensor) -> Result<(), ResponseError> {
    let mut next = 0;
    match t.data() {
        TensorData::Elements(elements) => {
            if t.shape().len() > 1 {
                return Err(ResponseError::StringShape(t.shape().len()));
            }
            let string = t.dtype() == DataType::String;
            json::write_nested(out, t.shape(), &mut next, &mut |out, i| {
                let Some(e) = elements.get(i) else {
                    return false;
                };
                if string {
                    json::write_value(out, &String::from_utf8_lossy(e));
                } else {
                    write_b64(out, e);
                }
                true
            });
        }
        TensorData::Raw(raw) => {
            let dtype = t.dtype();
            json::write_nested(out, t.shape(), &mut next, &mut |out, i| {
                json::write_element(out, dtype, raw, i)
            });
        }
    }
    Ok(())
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
    let capacity: usize = instances
        .iter()
        .flatten()
        .map(|(name, t)| name.len() + value_capacity(t))
        .sum();
    let mut out = Vec::with_capacity(capacity + 64);
    out.extend_from_slice(b"{\"instances\":[");
    for (i, instance) in instances.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (k, (name, t)) in instance.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            json::write_value(&mut out, name);
            out.push(b':');
            write_request_value(&mut out, name, t)?;
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(into_string(out))
}

/// Appends `{"b64": ..., "shape": [...], "type": ...}`.
fn write_typed_b64(out: &mut Vec<u8>, bytes: &[u8], t: &Tensor) {
    out.extend_from_slice(b"{\"b64\":");
    json::write_value(out, &B64.encode(bytes));
    out.extend_from_slice(b",\"shape\":");
    json::write_value(out, t.shape());
    out.extend_from_slice(b",\"type\":");
    json::write_value(out, t.dtype().mindspore_rest_name());
    out.push(b'}');
}

fn write_request_value(out: &mut Vec<u8>, name: &str, t: &Tensor) -> Result<(), EncodeError> {
    t.dtype().to_mindspore()?;
    let mut next = 0;
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
                Ok(text) if t.dtype() == DataType::String => {
                    json::write_nested(out, t.shape(), &mut next, &mut |out, i| {
                        if i == 0 {
                            json::write_value(out, text);
                        }
                        i == 0
                    });
                }
                _ => write_typed_b64(out, element, t),
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
                let dtype = t.dtype();
                json::write_nested(out, t.shape(), &mut next, &mut |out, i| {
                    json::write_element(out, dtype, raw, i)
                });
            } else {
                write_typed_b64(out, raw, t);
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::text_gen::{deep, faulty, key, nested, object, scalar, string, value};
    use proptest::prelude::*;

    /// The decoder as it was: the body parsed into a `Value`, then
    /// [`decode_instances`].
    fn reference(body: &[u8], max_bytes: usize) -> Result<Vec<NamedTensors>, RestError> {
        check_body(body, max_bytes)?;
        let json: Value =
            serde_json::from_slice(body).map_err(|e| RestError::IllegalJson(e.to_string()))?;
        Ok(decode_instances(&json)?)
    }

    fn same(body: &str) {
        let new = decode_request(body.as_bytes(), usize::MAX);
        let old = reference(body.as_bytes(), usize::MAX);
        assert_eq!(format!("{new:?}"), format!("{old:?}"), "body {body}");
    }

    fn quoted(s: &str) -> String {
        format!("\"{s}\"")
    }

    const TYPES: &[&str] = &[
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "fp16",
        "float16", "fp32", "float32", "fp64", "float64", "str", "bytes",
    ];

    fn b64_object() -> impl Strategy<Value = String> {
        let b64 = prop_oneof![
            6 => prop::collection::vec(any::<u8>(), 0..9).prop_map(|b| quoted(&B64.encode(b))),
            1 => string(),
            1 => value(),
        ];
        let ty = prop_oneof![
            8 => prop::sample::select(TYPES).prop_map(quoted),
            1 => Just(quoted("INt")),
            1 => value(),
        ];
        let shape = prop_oneof![
            6 => prop::collection::vec(0u8..3, 0..3).prop_map(|d| {
                let d: Vec<String> = d.iter().map(u8::to_string).collect();
                format!("[{}]", d.join(","))
            }),
            1 => prop_oneof![
                Just("[1,0,2]"), Just("[0,\"x\",{\"b\":1,\"a\":[1E15]}]"), Just("[-1]"), Just("[1.5]"),
                Just("[18446744073709551615]"), Just("[4294967296,4294967296]"), Just("3"),
            ]
            .prop_map(String::from),
            1 => value(),
        ];
        let field = prop_oneof![
            4 => (Just(quoted("b64")), b64.boxed()),
            3 => (Just(quoted("type")), ty.boxed()),
            3 => (Just(quoted("shape")), shape.boxed()),
            1 => (key(), value().boxed()),
        ];
        prop::collection::vec(field, 0..5).prop_map(|f| object(&f))
    }

    fn leaf() -> BoxedStrategy<String> {
        prop_oneof![
            10 => scalar(),
            2 => b64_object(),
            1 => value(),
        ]
        .boxed()
    }

    /// A rectangular array of one kind of leaf.
    fn rectangular() -> impl Strategy<Value = String> {
        (0..3, prop::collection::vec(1usize..4, 1..4))
            .prop_flat_map(|(kind, shape)| {
                let n: usize = shape.iter().product();
                let leaf = match kind {
                    0 => (-5i64..300).prop_map(|v| v.to_string()).boxed(),
                    1 => (-1e3f64..1e3).prop_map(|v| format!("{v:?}")).boxed(),
                    _ => prop_oneof![Just("true"), Just("false")]
                        .prop_map(String::from)
                        .boxed(),
                };
                (Just(shape), prop::collection::vec(leaf, n))
            })
            .prop_map(|(shape, leaves)| {
                fn nest(shape: &[usize], leaves: &mut std::slice::Iter<'_, String>) -> String {
                    match shape.split_first() {
                        None => leaves.next().cloned().unwrap_or_default(),
                        Some((&d, rest)) => {
                            let items: Vec<String> = (0..d).map(|_| nest(rest, leaves)).collect();
                            format!("[{}]", items.join(","))
                        }
                    }
                }
                nest(&shape, &mut leaves.iter())
            })
    }

    fn tensor() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => rectangular().boxed(),
            4 => nested(leaf()).boxed(),
            2 => b64_object().boxed(),
            1 => value().boxed(),
        ]
    }

    fn instance() -> impl Strategy<Value = String> {
        let name = prop_oneof![6 => Just(quoted("x")), 6 => Just(quoted("y")), 1 => key()];
        prop::collection::vec((name, tensor()), 1..4).prop_map(|f| object(&f))
    }

    fn body() -> impl Strategy<Value = String> {
        let instances = prop_oneof![
            6 => prop::collection::vec(prop_oneof![12 => instance().boxed(), 1 => value().boxed()], 1..4)
                .prop_map(|i| format!("[{}]", i.join(","))),
            3 => instance().boxed(),
            1 => value(),
            1 => Just("[]".to_owned()),
        ];
        let junk = prop::collection::vec((key(), value()), 0..3);
        let fields = (instances, junk, any::<u8>()).prop_map(|(instances, mut fields, at)| {
            fields.insert(
                at as usize % (fields.len() + 1),
                (quoted("instances"), instances),
            );
            object(&fields)
        });
        prop_oneof![
            12 => fields.boxed(),
            1 => prop::collection::vec((key(), value()), 0..3).prop_map(|f| object(&f)).boxed(),
            1 => value().boxed(),
        ]
        .prop_flat_map(faulty)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The streaming decoder decodes what the tree-based one did and
        /// refuses what it refused, with the same error.
        #[test]
        fn decoder_agrees_with_the_tree_based_one(body in body()) {
            same(&body);
            // Spaced out (strings change too; both decoders read the same).
            same(&body.replace(',', " ,\n").replace('[', "[ ").replace(']', "\t]"));
        }
    }

    fn tensor_value() -> impl Strategy<Value = Tensor> {
        let dtypes = DataType::ALL.to_vec();
        (
            prop::sample::select(dtypes),
            prop::collection::vec(0i64..3, 0..3),
        )
            .prop_flat_map(|(dtype, shape)| {
                let n = shape.iter().product::<i64>() as usize;
                let data: BoxedStrategy<TensorData> = match dtype.item_size() {
                    None => prop::collection::vec(
                        prop_oneof![
                            prop::collection::vec(any::<u8>(), 0..5),
                            "[a-z\"\u{0}é]{0,4}".prop_map(String::into_bytes),
                        ],
                        n,
                    )
                    .prop_map(|e| TensorData::Elements(e.into_iter().map(Bytes::from).collect()))
                    .boxed(),
                    Some(_) if dtype == DataType::Bool => prop::collection::vec(0u8..2, n)
                        .prop_map(|b| TensorData::Raw(Bytes::from(b)))
                        .boxed(),
                    Some(item) => prop::collection::vec(any::<u8>(), n * item)
                        .prop_map(|b| TensorData::Raw(Bytes::from(b)))
                        .boxed(),
                };
                (Just(dtype), Just(shape), data)
            })
            .prop_map(|(dtype, shape, data)| Tensor::new(dtype, shape, data).unwrap())
    }

    fn named_tensors() -> impl Strategy<Value = NamedTensors> {
        prop::collection::btree_map("[a-z\"\u{1}é]{0,3}", tensor_value(), 0..3)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The streaming encoders write the bytes the tree-based ones wrote.
        #[test]
        fn encoders_write_what_the_tree_based_ones_wrote(
            instances in prop::collection::vec(named_tensors(), 0..3),
            failed in prop::collection::vec(any::<bool>(), 3),
            message in "[a-z\"\u{0}é]{0,8}",
        ) {
            prop_assert_eq!(encode_request(&instances), reference::encode_request(&instances));
            let results = instances
                .iter()
                .zip(&failed)
                .map(|(i, &f)| {
                    if f {
                        Err(ServableError::new(StatusCode::Failed, message.clone()))
                    } else {
                        Ok(i.clone())
                    }
                })
                .collect();
            let outcome = Outcome::Instances(results);
            prop_assert_eq!(encode_response(&outcome), reference::encode_response(&outcome));
            let outcome = Outcome::Failed(ServableError::new(StatusCode::Failed, message));
            prop_assert_eq!(encode_response(&outcome), reference::encode_response(&outcome));
        }
    }

    #[test]
    fn decoder_agrees_on_nesting_around_the_parser_limit() {
        for depth in 118..=130 {
            for body in [
                format!(r#"{{"instances":{{"x":{}}}}}"#, deep("1", depth)),
                format!(r#"{{"instances":[{{"x":{}}}]}}"#, deep("1", depth)),
                format!(r#"{{"instances":[{{"x":[[1],{}]}}]}}"#, deep("1", depth)),
                format!(r#"{{"instances":[{{"x":[1,{}]}}]}}"#, deep("1", depth)),
                format!(
                    r#"{{"instances":[{{"x":{{"b64":"AA==","shape":{}}}}}]}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"instances":[{{"x":{}}}]}}"#,
                    deep("{\"b64\":\"AA==\"}", depth)
                ),
                format!(r#"{{"instances":[{{"":1,"x":{}}}]}}"#, deep("1", depth)),
                format!(
                    r#"{{"instances":[{{"x":{}}}],"instances":[{{"x":1}}]}}"#,
                    deep("1", depth)
                ),
                format!(r#"{{"instances":[{{"x":{},"x":1}}]}}"#, deep("1", depth)),
            ] {
                same(&body);
            }
        }
    }

    #[test]
    fn decoder_agrees_on_odd_values() {
        for value in [
            r#""\ud800""#,
            "1e400",
            "[1e400]",
            "[[1],[1e400]]",
            r#"{"b64":"\ud800"}"#,
            r#"{"b64":"AA==","shape":[0,1e400]}"#,
            r#"{"b64":"AA==","b64":1e400}"#,
            r#"{"b64":"AA==","type":"int8","shape":[1,0,{"z":1E15,"a":"\u0000"}]}"#,
            r#"[[1,2],[3,"\ud800"]]"#,
            r#"[[1,2],[3]]"#,
            r#"[{"b64":"AA=="},[{"b64":"AA=="}]]"#,
            r#"[[[{"b64":"AA==","type":"str"}]]]"#,
            "[[[[]]]]",
            "[[1],[[2]]]",
            "[[1],2]",
            r#"[true,{"b64":"AA=="},null,[1]]"#,
            "[2147483648]",
            "[1.5,3.5e38]",
        ] {
            same(&format!(r#"{{"instances":{{"x":{value}}}}}"#));
            same(&format!(
                r#"{{"instances":[{{"x":{value}}},{{"x":1}}],"instances":[{{"y":2}}]}}"#
            ));
            same(&format!(r#"{{"instances":[{{"":1,"x":{value}}}]}}"#));
        }
        for body in [
            &b"{\"instances\":{\"x\":\"\xff\"}}"[..],
            b"{\"instances\":{\"x\":[\"\xff\"]}}",
            b"{\"instances\":{\"x\":{\"b64\":\"\xff\"}}}",
        ] {
            let new = decode_request(body, usize::MAX);
            let old = reference(body, usize::MAX);
            assert_eq!(format!("{new:?}"), format!("{old:?}"));
        }
    }
}

/// The encoders as they were, over a `Value` tree: what the streaming
/// encoders are compared with.
#[cfg(test)]
mod reference {
    use super::*;

    /// Encodes the reply body of an outcome (spec §3.6): a whole-request failure
    /// as `{"error_msg": ...}`, otherwise `{"instances": [...]}` with a
    /// `{"error_msg": ...}` object in place of each failed instance.
    pub(super) fn encode_response(outcome: &Outcome) -> Result<String, ResponseError> {
        let results = match outcome {
            Outcome::Failed(e) => return Ok(encode_error(&e.message)),
            Outcome::Instances(results) => results,
        };
        let mut instances = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Err(e) => instances
                    .push(serde_json::json!({ "error_msg": crate::text::bounded(&e.message) })),
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

    /// Encodes instances as a request body. INT32, FP32 and BOOL tensors become
    /// plain JSON (scalars or nested arrays); every other numeric type, empty
    /// tensors and non-finite floats become b64 objects with explicit type and
    /// shape, so values arrive exactly. Strings become JSON strings.
    pub(super) fn encode_request(instances: &[NamedTensors]) -> Result<String, EncodeError> {
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
}
