//! Open Inference Protocol REST bodies: JSON tensors, and the binary tensor
//! extension (`Inference-Header-Content-Length` framing).
//!
//! A binary body is the JSON header followed by the tensors' bytes, in the
//! order the tensors appear in the JSON, each announced by its
//! `binary_data_size` parameter. Numeric binary tensors decoded here share
//! the body's buffer; BYTES elements are 4-byte little-endian length-prefixed.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::text::quote;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Number, Value};

use super::contents::{decode_raw, encode_raw, raw_len};
use super::{
    External, InferRequest, InferResponse, NamedTensor, OipError, Parameter, Parameters,
    RequestedOutput, checked_count, datatype_name, external_input, resolve_datatype, shared_memory,
};
use crate::json::{self, KeySeed, NumberError, Render, Scalar, Text, TextSeed, Validate};
use crate::json_charge::{self, Prepaid};
use crate::{DataType, Tensor, TensorData, TensorError};

/// The header that gives the length of the JSON part of a binary body.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";
/// Tensor parameter: bytes of binary data for this tensor.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Request parameter: return every output as binary data.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// Requested-output parameter: return this output as binary data.
pub const BINARY_DATA: &str = "binary_data";

/// An encoded REST body: the JSON header and the binary parts, which share
/// the tensors' bytes. Send `parts` in order; with binary parts, send
/// `Inference-Header-Content-Length: header_len`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBody {
    /// Length of the JSON header when binary parts follow, else `None`.
    pub header_len: Option<usize>,
    /// The JSON header, then each binary tensor.
    pub parts: Vec<Bytes>,
}

impl HttpBody {
    /// Total body length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in one buffer (copies when there are binary parts).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }

    /// The `Content-Type`: `application/octet-stream` for binary bodies,
    /// else `application/json`.
    pub fn content_type(&self) -> &'static str {
        if self.header_len.is_some() {
            "application/octet-stream"
        } else {
            "application/json"
        }
    }
}

/// Parses an `Inference-Header-Content-Length` value against the body size.
pub fn parse_header_length(value: &str, body_len: usize) -> Result<usize, OipError> {
    let err = |reason: String| OipError::HeaderLength {
        value: value.chars().take(40).collect(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("it must be a non-negative decimal integer".into()));
    }
    match trimmed.parse::<u64>() {
        Ok(n) if n <= body_len as u64 => Ok(n as usize),
        _ => Err(err(format!("it exceeds the body length {body_len}"))),
    }
}

fn json_err(what: impl Into<String>) -> OipError {
    OipError::Json(what.into())
}

fn param_to_json(p: &Parameter) -> Value {
    match p {
        Parameter::Bool(b) => Value::Bool(*b),
        Parameter::Int64(v) => Value::from(*v),
        Parameter::Uint64(v) => Value::from(*v),
        Parameter::Double(v) => Number::from_f64(*v).map_or(Value::Null, Value::Number),
        Parameter::String(s) => Value::String(s.clone()),
    }
}

/// Why a body was refused while it was read.
enum Fail {
    /// For its content.
    Oip(OipError),
    /// A part of the JSON parsed on its own is not valid where it stands in
    /// the body: the message of that parse.
    Json(String),
}

impl From<OipError> for Fail {
    fn from(e: OipError) -> Fail {
        Fail::Oip(e)
    }
}

fn invalid(e: impl std::fmt::Display) -> OipError {
    json_err(format!("the JSON header is invalid: {e}"))
}

/// The error a body is refused with: that it is not JSON if it is not
/// (the body is only known to be valid once every part has been parsed in
/// full), else `fail`.
fn refuse(json: &[u8], fail: Fail) -> OipError {
    match json::validate(json) {
        Err(e) => invalid(e),
        Ok(()) => match fail {
            Fail::Oip(e) => e,
            Fail::Json(message) => invalid(message),
        },
    }
}

/// The length of the JSON header of a body.
fn json_len(body: &Bytes, header_len: Option<usize>) -> Result<usize, OipError> {
    match header_len {
        Some(0) => Err(OipError::HeaderLength {
            value: "0".into(),
            reason: "a raw binary request (no JSON header) needs the model's input; use decode_raw_binary_request".into(),
        }),
        Some(n) if n > body.len() => Err(OipError::HeaderLength {
            value: n.to_string(),
            reason: format!("it exceeds the body length {}", body.len()),
        }),
        Some(n) => Ok(n),
        None => Ok(body.len()),
    }
}

/// A `parameters` value as found.
enum Params {
    Null,
    NotObject,
    /// The parameters of scalar values, and the names of the others (the
    /// last of repeated names counts).
    Map {
        params: Parameters,
        bad: BTreeSet<String>,
    },
}

struct ParamsSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Params, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Params;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Params, E> {
        Ok(Params::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Params, E> {
        Ok(Params::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Params, E> {
        Ok(Params::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Params, E> {
        Ok(Params::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Params, E> {
        Ok(Params::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Params, E> {
        Ok(Params::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(Params::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let level = json::enter(self.level)?;
        let mut params = Parameters::new();
        let mut bad = BTreeSet::new();
        json_charge::grow(json_charge::map_node::<String, Parameter>())
            .map_err(de::Error::custom)?;
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ParamSeed { level })?;
            let text = match &value {
                Some(Parameter::String(t)) => json_charge::block(t.len()),
                _ => 0,
            };
            json_charge::grow(json_charge::map_entry::<String, Parameter>(key.len()) + text)
                .map_err(de::Error::custom)?;
            match value {
                Some(p) => {
                    bad.remove(&key);
                    params.insert(key, p);
                }
                None => {
                    params.remove(&key);
                    bad.insert(key);
                }
            }
        }
        Ok(Params::Map { params, bad })
    }
}

/// One parameter: `None` for a value that is no string, number or boolean.
struct ParamSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ParamSeed {
    type Value = Option<Parameter>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Parameter>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamSeed {
    type Value = Option<Parameter>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Option<Parameter>, E> {
        Ok(Some(Parameter::Bool(b)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<Parameter>, E> {
        Ok(Some(Parameter::Int64(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<Parameter>, E> {
        Ok(Some(match i64::try_from(v) {
            Ok(i) => Parameter::Int64(i),
            Err(_) => Parameter::Uint64(v),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Option<Parameter>, E> {
        Ok(Some(Parameter::Double(v)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Option<Parameter>, E> {
        Ok(Some(Parameter::String(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Option<Parameter>, E> {
        Ok(Some(Parameter::String(s)))
    }
    fn visit_unit<E>(self) -> Result<Option<Parameter>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Parameter>, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Parameter>, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(None)
    }
}

fn params(field: Option<Params>) -> Result<Parameters, OipError> {
    match field {
        None | Some(Params::Null) => Ok(Parameters::new()),
        Some(Params::NotObject) => Err(json_err("'parameters' must be an object")),
        Some(Params::Map { params, bad }) => match bad.first() {
            Some(name) => Err(json_err(format!(
                "parameter '{name}' must be a string, number or boolean",
                name = quote(name)
            ))),
            None => Ok(params),
        },
    }
}

/// An optional string field (`id`, `model_name`, `model_version`).
enum OptText {
    Null,
    Str(String),
    Other,
}

struct OptTextSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for OptTextSeed {
    type Value = OptText;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<OptText, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptTextSeed {
    type Value = OptText;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<OptText, E> {
        Ok(OptText::Null)
    }
    fn visit_str<E>(self, s: &str) -> Result<OptText, E> {
        Ok(OptText::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<OptText, E> {
        Ok(OptText::Str(s))
    }
    fn visit_bool<E>(self, _: bool) -> Result<OptText, E> {
        Ok(OptText::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<OptText, E> {
        Ok(OptText::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<OptText, E> {
        Ok(OptText::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<OptText, E> {
        Ok(OptText::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OptText, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(OptText::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OptText, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(OptText::Other)
    }
}

fn opt_text(field: Option<OptText>, key: &str) -> Result<String, OipError> {
    match field {
        None | Some(OptText::Null) => Ok(String::new()),
        Some(OptText::Str(s)) => Ok(s),
        Some(OptText::Other) => Err(json_err(format!("'{key}' must be a string"))),
    }
}

/// A `shape` value: its dimensions, or `None` if it is not an array of
/// non-negative integers.
struct ShapeSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Option<Vec<i64>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Vec<i64>>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Option<Vec<i64>>;
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
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let level = json::enter(self.level)?;
        let mut dims = Some(Vec::new());
        while let Some(dims_so_far) = dims.as_mut() {
            match seq.next_element_seed(DimSeed { level })? {
                None => break,
                Some(Some(d)) => {
                    if dims_so_far.len() == dims_so_far.capacity() {
                        // The vector is about to grow (to twice, at least 4).
                        let more = dims_so_far.capacity().max(4) * 8;
                        json_charge::grow(more).map_err(de::Error::custom)?;
                    }
                    dims_so_far.push(d);
                }
                Some(None) => dims = None,
            }
        }
        if dims.is_none() {
            while seq.next_element_seed(Validate { level })?.is_some() {}
        }
        Ok(dims)
    }
}

/// One dimension: a non-negative integer in the i64 range, else `None`.
struct DimSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for DimSeed {
    type Value = Option<i64>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DimSeed {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<i64>, E> {
        Ok(i64::try_from(v).ok())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<i64>, E> {
        Ok((v >= 0).then_some(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<i64>, A::Error> {
        Validate { level: self.level }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<i64>, A::Error> {
        Validate { level: self.level }.visit_map(map)?;
        Ok(None)
    }
}

/// A tensor object's fields as found (the last of repeated keys counts);
/// `data` stays the body's text until the type and shape are known.
#[derive(Default)]
struct Head<'a> {
    name: Option<Text<'a>>,
    datatype: Option<Text<'a>>,
    shape: Option<Option<Vec<i64>>>,
    parameters: Option<Params>,
    data: Option<&'a RawValue>,
}

/// One element of a tensor list: `None` when it is not an object. Without
/// `full` (a requested output), only `name` and `parameters` are kept.
struct HeadSeed {
    full: bool,
    level: usize,
}

const HEAD_KEYS: &[&str] = &["name", "datatype", "shape", "parameters", "data"];

impl<'de> DeserializeSeed<'de> for HeadSeed {
    type Value = Option<Head<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed {
    type Value = Option<Head<'de>>;
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
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let level = json::enter(self.level)?;
        let mut head = Head::default();
        while let Some(key) = map.next_key_seed(KeySeed(HEAD_KEYS))? {
            match key {
                Some(0) => head.name = Some(map.next_value_seed(TextSeed { level })?),
                Some(1) if self.full => {
                    head.datatype = Some(map.next_value_seed(TextSeed { level })?);
                }
                Some(2) if self.full => {
                    head.shape = Some(map.next_value_seed(ShapeSeed { level })?)
                }
                Some(3) => head.parameters = Some(map.next_value_seed(ParamsSeed { level })?),
                Some(4) if self.full => {
                    // A repeated `data` replaces the one before, which is
                    // only checked.
                    if let Some(before) = head.data.replace(map.next_value()?) {
                        check_data(before).map_err(de::Error::custom)?;
                    }
                }
                _ => map.next_value_seed(Validate { level })?,
            }
        }
        Ok(Some(head))
    }
}

fn head_str<'a>(
    field: Option<Text<'a>>,
    key: &str,
    what: &dyn Fn() -> String,
) -> Result<Cow<'a, str>, OipError> {
    match field {
        Some(Text::Str(s)) => Ok(s),
        Some(Text::Other) => Err(json_err(format!("{}: '{key}' must be a string", what()))),
        None => Err(json_err(format!("{}: '{key}' is missing", what()))),
    }
}

/// What a pass over the body needs besides the JSON: the binary part and
/// where inputs placed in shared memory are read from.
struct Ctx<'e> {
    mode: Mode,
    binary: Bytes,
    external: Option<External<'e>>,
    /// A reply's request outputs: where an output without data of its own
    /// was placed.
    requested: &'e [RequestedOutput],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Request,
    Response,
}

/// A tensor list (`inputs` of a request, `outputs` of a response): its
/// tensors decoded and the binary part they left, or that it is no array.
enum List {
    NotArray,
    Tensors(Result<(Vec<NamedTensor>, Bytes), Fail>),
}

struct ListSeed<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    key: &'static str,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = List;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<List, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = List;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_i64<E>(self, _: i64) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_u64<E>(self, _: u64) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_f64<E>(self, _: f64) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_str<E>(self, _: &str) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_unit<E>(self) -> Result<List, E> {
        Ok(List::NotArray)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List, A::Error> {
        Validate { level: 1 }.visit_map(map)?;
        Ok(List::NotArray)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
        // Each list starts from the whole binary part (a repeated key's
        // last list is the one decoded).
        let mut rest = self.ctx.binary.clone();
        let mut tensors = Ok(Vec::new());
        let mut index = 0;
        loop {
            let Ok(list) = tensors.as_mut() else {
                while seq.next_element_seed(Validate { level: 2 })?.is_some() {}
                break;
            };
            let Some(head) = seq.next_element_seed(HeadSeed {
                full: true,
                level: 2,
            })?
            else {
                break;
            };
            let data = head.as_ref().and_then(|h| h.data);
            let requested = self.ctx.requested;
            match decode_item(
                head,
                index,
                self.key,
                &mut rest,
                self.ctx.external.as_mut(),
                requested,
            ) {
                Ok(t) => {
                    json_charge::grow(item_cost(&t)).map_err(de::Error::custom)?;
                    list.push(t);
                }
                Err(e) => {
                    // The list may yet be replaced by a repeated key: the
                    // `data` it did not read must be valid all the same.
                    if let Some(data) = data {
                        check_data(data).map_err(de::Error::custom)?;
                    }
                    tensors = Err(e);
                }
            }
            index += 1;
        }
        Ok(List::Tensors(tensors.map(|t| (t, rest))))
    }
}

/// The requested outputs of a request.
enum Requested {
    Null,
    NotArray,
    Items(Result<Vec<RequestedOutput>, OipError>),
}

struct RequestedSeed;

impl<'de> DeserializeSeed<'de> for RequestedSeed {
    type Value = Requested;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Requested, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestedSeed {
    type Value = Requested;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Requested, E> {
        Ok(Requested::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Requested, E> {
        Ok(Requested::NotArray)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Requested, E> {
        Ok(Requested::NotArray)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Requested, E> {
        Ok(Requested::NotArray)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Requested, E> {
        Ok(Requested::NotArray)
    }
    fn visit_str<E>(self, _: &str) -> Result<Requested, E> {
        Ok(Requested::NotArray)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Requested, A::Error> {
        Validate { level: 1 }.visit_map(map)?;
        Ok(Requested::NotArray)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Requested, A::Error> {
        let mut outputs = Ok(Vec::new());
        loop {
            let Ok(list) = outputs.as_mut() else {
                while seq.next_element_seed(Validate { level: 2 })?.is_some() {}
                break;
            };
            let Some(head) = seq.next_element_seed(HeadSeed {
                full: false,
                level: 2,
            })?
            else {
                break;
            };
            let output = head
                .ok_or_else(|| json_err("each requested output must be an object"))
                .and_then(|head| {
                    Ok(RequestedOutput {
                        name: head_str(head.name, "name", &|| "requested output".into())?
                            .into_owned(),
                        parameters: params(head.parameters)?,
                    })
                });
            match output {
                Ok(o) => {
                    json_charge::grow(
                        2 * std::mem::size_of::<RequestedOutput>()
                            + json_charge::block(o.name.len()),
                    )
                    .map_err(de::Error::custom)?;
                    list.push(o);
                }
                Err(e) => outputs = Err(e),
            }
        }
        Ok(Requested::Items(outputs))
    }
}

/// The top-level fields of a body.
#[derive(Default)]
struct Top {
    tensors: Option<List>,
    requested: Option<Requested>,
    id: Option<OptText>,
    model_name: Option<OptText>,
    model_version: Option<OptText>,
    parameters: Option<Params>,
}

const TOP_KEYS: &[&str] = &[
    "inputs",
    "outputs",
    "id",
    "parameters",
    "model_name",
    "model_version",
];

/// The body: `None` when it is not a JSON object.
struct TopSeed<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = Option<Top>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Top>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = Option<Top>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Top>, A::Error> {
        Validate { level: 0 }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Top>, A::Error> {
        let mut top = Top::default();
        let request = self.ctx.mode == Mode::Request;
        while let Some(key) = map.next_key_seed(KeySeed(TOP_KEYS))? {
            let level = 1;
            match key {
                Some(0) if request => {
                    let ctx = &mut *self.ctx;
                    top.tensors = Some(map.next_value_seed(ListSeed { ctx, key: "inputs" })?);
                }
                Some(1) if request => top.requested = Some(map.next_value_seed(RequestedSeed)?),
                Some(1) => {
                    let ctx = &mut *self.ctx;
                    top.tensors = Some(map.next_value_seed(ListSeed {
                        ctx,
                        key: "outputs",
                    })?);
                }
                Some(2) => top.id = Some(map.next_value_seed(OptTextSeed { level })?),
                Some(3) => top.parameters = Some(map.next_value_seed(ParamsSeed { level })?),
                Some(4) if !request => {
                    top.model_name = Some(map.next_value_seed(OptTextSeed { level })?);
                }
                Some(5) if !request => {
                    top.model_version = Some(map.next_value_seed(OptTextSeed { level })?);
                }
                _ => map.next_value_seed(Validate { level })?,
            }
        }
        Ok(Some(top))
    }
}

/// Reads the JSON part of a body: its top-level fields, the tensors of its
/// tensor list decoded on the way.
fn read_top(json: &[u8], ctx: &mut Ctx<'_>) -> Result<Top, OipError> {
    match json::parse_all(json, TopSeed { ctx }) {
        Ok(Some(top)) => Ok(top),
        Ok(None) => Err(refuse(
            json,
            json_err("the JSON header must be an object").into(),
        )),
        Err(e) => Err(match json::validate(json) {
            Err(e) => invalid(e),
            Ok(()) => invalid(e),
        }),
    }
}

/// The tensors of a tensor list, or the error for it.
fn tensor_list(list: Option<List>, key: &str) -> Result<(Vec<NamedTensor>, Option<Bytes>), Fail> {
    match list {
        Some(List::Tensors(r)) => r.map(|(t, rest)| (t, Some(rest))),
        None if key == "outputs" => Ok((Vec::new(), None)),
        _ => Err(json_err(format!("'{key}' must be an array of tensors")).into()),
    }
}

/// Decodes one element of a tensor list, taking binary data from `rest`.
fn decode_item(
    head: Option<Head<'_>>,
    index: usize,
    key: &str,
    rest: &mut Bytes,
    external: Option<&mut External<'_>>,
    requested: &[RequestedOutput],
) -> Result<NamedTensor, Fail> {
    let what = || format!("{key}[{index}]");
    let Some(head) = head else {
        return Err(json_err(format!("{} must be an object", what())).into());
    };
    let name = head_str(head.name, "name", &what)?.into_owned();
    let datatype = head_str(head.datatype, "datatype", &what)?;
    let dtype = resolve_datatype(&name, &datatype)?;
    let Some(Some(shape)) = head.shape else {
        return Err(json_err(format!(
            "tensor '{name}': 'shape' must be an array of non-negative integers",
            name = quote(&name)
        ))
        .into());
    };
    let mut parameters = params(head.parameters)?;
    // An output with neither data, binary data nor a placement of its own
    // was written where its request placed it (Triton's replies say
    // nothing of it).
    let placed_by_request = requested
        .iter()
        .find(|o| o.name == name)
        .filter(|_| head.data.is_none() && !parameters.contains_key(BINARY_DATA_SIZE))
        .filter(|_| matches!(super::shared_memory::placement(&parameters), Ok(None)));
    let placement = placed_by_request.map_or(&parameters, |o| &o.parameters);
    if let Some(external) = external
        && let Some(bytes) = external_input(&name, placement, external)?
    {
        if head.data.is_some() || parameters.contains_key(BINARY_DATA_SIZE) {
            return Err(OipError::PlacedWithData { name }.into());
        }
        let tensor = decode_raw(&name, dtype, shape, bytes)?;
        return Ok(NamedTensor {
            name,
            tensor,
            parameters,
        });
    }
    let binary = parameters.remove(BINARY_DATA_SIZE);
    let tensor = match binary {
        Some(p) => {
            let declared = p.as_u64().ok_or_else(|| {
                json_err(format!(
                    "tensor '{name}': '{BINARY_DATA_SIZE}' must be a non-negative integer",
                    name = quote(&name)
                ))
            })?;
            if declared > rest.len() as u64 {
                return Err(OipError::BinaryOverrun {
                    name,
                    declared,
                    available: rest.len(),
                }
                .into());
            }
            let part = rest.split_to(declared as usize);
            let tensor = decode_raw(&name, dtype, shape, part)?;
            // The `data` beside binary data is not read, only checked.
            if let Some(data) = head.data {
                check_data(data).map_err(|e| Fail::Json(e.to_string()))?;
            }
            tensor
        }
        None => match head.data {
            Some(data) => tensor_from_json_data(&name, dtype, shape, data)?,
            None => {
                return Err(json_err(format!(
                    "tensor '{name}': neither 'data' nor '{BINARY_DATA_SIZE}' is given",
                    name = quote(&name)
                ))
                .into());
            }
        },
    };
    Ok(NamedTensor {
        name,
        tensor,
        parameters,
    })
}

/// What a decoded tensor of a list holds besides its data and its shape
/// (charged as they are allocated): its entry in the list (twice, as the
/// list grows) and its name.
fn item_cost(t: &NamedTensor) -> usize {
    2 * std::mem::size_of::<NamedTensor>() + json_charge::block(t.name.len())
}

/// The arrays and objects around a tensor's `data`: the body, the list,
/// the tensor.
const DATA_LEVEL: usize = 3;

/// Checks a tensor's `data` that is not read.
fn check_data(data: &RawValue) -> Result<(), serde_json::Error> {
    json::parse_text(data.get(), Validate { level: DATA_LEVEL })
}

/// Why a leaf of `data` is not an element.
enum LeafFault {
    /// Of the wrong kind: the value's text, at most 40 bytes.
    Kind(String),
    /// Out of the type's range: the value's text.
    Range(String),
}

/// The elements of a tensor's `data`, read in one pass: flat, row-major,
/// checked, stored up to the element count of the shape.
struct Sink {
    dtype: DataType,
    count: usize,
    store: bool,
    raw: Vec<u8>,
    elements: Vec<Bytes>,
    /// The strings of BYTES elements, charged ahead.
    prepaid: Prepaid,
    leaves: usize,
    first: Option<(usize, LeafFault)>,
}

/// The longest text of a value shown in an error.
const SHOWN: usize = 40;

impl Sink {
    /// The index of the next leaf if it is still read (no fault so far, and
    /// within the element count).
    #[inline]
    fn next(&mut self) -> Option<usize> {
        let i = self.leaves;
        self.leaves += 1;
        (self.first.is_none() && i < self.count).then_some(i)
    }

    #[inline]
    fn scalar(&mut self, value: Scalar) {
        let Some(i) = self.next() else { return };
        let kind = |v: Scalar| {
            let mut text = v.text();
            text.truncate(text.floor_char_boundary(SHOWN));
            LeafFault::Kind(text)
        };
        if self.dtype.is_variable() {
            self.first = Some((i, kind(value)));
            return;
        }
        match json::push_scalar(self.dtype, value, &mut self.raw) {
            Ok(()) => {
                if !self.store {
                    self.raw.clear();
                }
            }
            Err(NumberError::Kind) => self.first = Some((i, kind(value))),
            Err(NumberError::Range(text)) => self.first = Some((i, LeafFault::Range(text))),
        }
    }

    fn null(&mut self) {
        if let Some(i) = self.next() {
            self.first = Some((i, LeafFault::Kind("null".into())));
        }
    }

    fn string(&mut self, s: &str) {
        let Some(i) = self.next() else { return };
        if !self.dtype.is_variable() {
            self.first = Some((i, LeafFault::Kind(Render::string(s, SHOWN))));
        } else if self.store {
            if self.prepaid.take(json_charge::block(s.len())).is_err() {
                // Refused by the budget: nothing more is kept (the decode's
                // error is then the refusal).
                self.first = Some((i, LeafFault::Kind(String::new())));
                return;
            }
            self.elements.push(Bytes::copy_from_slice(s.as_bytes()));
        }
    }
}

/// A node of `data`: arrays are flattened, anything else is a leaf.
struct Node<'s> {
    sink: &'s mut Sink,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.sink.scalar(Scalar::Bool(b));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.sink.scalar(Scalar::I64(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.sink.scalar(Scalar::U64(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.sink.scalar(Scalar::F64(v));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.sink.string(s);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.sink.null();
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let level = json::enter(self.level)?;
        while seq
            .next_element_seed(Node {
                sink: &mut *self.sink,
                level,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // An object is one leaf, of the wrong kind for every type.
        match self.sink.next() {
            Some(i) => {
                let mut text = Render {
                    cap: SHOWN,
                    level: self.level,
                }
                .visit_map(map)?;
                text.truncate(text.floor_char_boundary(SHOWN));
                self.sink.first = Some((i, LeafFault::Kind(text)));
            }
            None => Validate { level: self.level }.visit_map(map)?,
        }
        Ok(())
    }
}

/// Reads the leaves of `data` (its text) into a [`Sink`].
fn read_leaves(text: &str, dtype: DataType, count: usize, store: bool) -> Result<Sink, Fail> {
    let mut sink = Sink {
        dtype,
        count,
        store,
        raw: Vec::new(),
        elements: Vec::new(),
        prepaid: Prepaid::default(),
        leaves: 0,
        first: None,
    };
    if store {
        let bytes = match dtype.item_size() {
            Some(item) => count * item,
            None => count * std::mem::size_of::<Bytes>(),
        };
        json_charge::grow(bytes).map_err(|e| Fail::Json(e.to_string()))?;
        match dtype.item_size() {
            Some(item) => sink.raw.reserve_exact(count * item),
            None => sink.elements.reserve_exact(count),
        }
    }
    json::parse_text(
        text,
        Node {
            sink: &mut sink,
            level: DATA_LEVEL,
        },
    )
    .map_err(|e| Fail::Json(e.to_string()))?;
    Ok(sink)
}

/// Decodes a tensor's `data` (nested arrays flattened row-major) straight
/// into its buffer. The buffer is sized from the shape only when the text
/// can hold that many elements (a leaf takes at least 2 bytes with its
/// comma, a string 3), never from the shape alone.
fn tensor_from_json_data(
    name: &str,
    dtype: DataType,
    shape: Vec<i64>,
    data: &RawValue,
) -> Result<Tensor, Fail> {
    let count = checked_count(name, dtype, &shape)?;
    let text = data.get();
    let per_leaf = if dtype.is_variable() { 3 } else { 2 };
    let store = count <= (text.len() + 1) / per_leaf;
    let mut sink = read_leaves(text, dtype, count, store)?;
    if sink.leaves != count {
        return Err(OipError::ElementCount {
            name: name.to_owned(),
            shape,
            expected: count as u64,
            actual: sink.leaves as u64,
        }
        .into());
    }
    match sink.first.take() {
        Some((index, LeafFault::Kind(value))) => {
            return Err(OipError::ValueKind {
                name: name.to_owned(),
                datatype: dtype,
                index,
                value,
            }
            .into());
        }
        Some((_, LeafFault::Range(value))) => {
            return Err(OipError::ValueRange {
                name: name.to_owned(),
                datatype: dtype,
                value,
            }
            .into());
        }
        None => {}
    }
    if !store {
        // Not reached: that many valid leaves fit in the text. Read again,
        // keeping them.
        sink = read_leaves(text, dtype, count, true)?;
    }
    // The shape moves into the tensor (it may be as long as the body); an
    // error gives it back.
    let tensor = if dtype.is_variable() {
        Tensor::from_elements(dtype, shape, sink.elements)
    } else {
        Tensor::from_raw(dtype, shape, Bytes::from(sink.raw))
    };
    tensor.map_err(|e| {
        let shape = match &e {
            TensorError::NegativeDim { shape }
            | TensorError::Overflow { shape, .. }
            | TensorError::DataSize { shape, .. }
            | TensorError::ElementCount { shape, .. } => shape.clone(),
            _ => Vec::new(),
        };
        crate::oip::value_error(name, shape)(e).into()
    })
}

fn decode_request_json(
    body: Bytes,
    header_len: Option<usize>,
    external: External<'_>,
) -> Result<InferRequest, OipError> {
    let len = json_len(&body, header_len)?;
    let json = &body[..len];
    let mut ctx = Ctx {
        mode: Mode::Request,
        binary: body.slice(len..),
        external: Some(external),
        requested: &[],
    };
    let top = read_top(json, &mut ctx)?;
    let refused = |f: Fail| refuse(json, f);
    let (inputs, rest) = tensor_list(top.tensors, "inputs").map_err(refused)?;
    if let Some(rest) = rest
        && !rest.is_empty()
    {
        return Err(refused(OipError::TrailingBinary(rest.len()).into()));
    }
    let outputs = match top.requested {
        None | Some(Requested::Null) => Vec::new(),
        Some(Requested::Items(items)) => items.map_err(|e| refused(e.into()))?,
        Some(Requested::NotArray) => {
            return Err(refused(json_err("'outputs' must be an array").into()));
        }
    };
    let id = opt_text(top.id, "id").map_err(|e| refused(e.into()))?;
    let parameters = params(top.parameters).map_err(|e| refused(e.into()))?;
    Ok(InferRequest {
        model_name: String::new(),
        model_version: String::new(),
        id,
        parameters,
        inputs,
        outputs,
    })
}

fn decode_response_json<'e>(
    body: Bytes,
    header_len: Option<usize>,
    external: Option<External<'e>>,
    requested: &'e [RequestedOutput],
) -> Result<InferResponse, OipError> {
    let len = json_len(&body, header_len)?;
    let json = &body[..len];
    let mut ctx = Ctx {
        mode: Mode::Response,
        binary: body.slice(len..),
        external,
        requested,
    };
    let top = read_top(json, &mut ctx)?;
    let refused = |f: Fail| refuse(json, f);
    let (outputs, rest) = tensor_list(top.tensors, "outputs").map_err(refused)?;
    // Without an `outputs` list, the whole binary part is left over.
    let rest = rest.unwrap_or(ctx.binary);
    if !rest.is_empty() {
        return Err(refused(OipError::TrailingBinary(rest.len()).into()));
    }
    let text = |field, key| opt_text(field, key).map_err(|e| refused(e.into()));
    Ok(InferResponse {
        model_name: text(top.model_name, "model_name")?,
        model_version: text(top.model_version, "model_version")?,
        id: text(top.id, "id")?,
        parameters: params(top.parameters).map_err(|e| refused(e.into()))?,
        outputs,
    })
}

/// Decodes a request body. `header_len` is the parsed
/// `Inference-Header-Content-Length` (see [`parse_header_length`]), absent
/// for a pure JSON body. The model name and version come from the URL and
/// are left empty.
pub fn decode_request(body: Bytes, header_len: Option<usize>) -> Result<InferRequest, OipError> {
    decode_request_with(body, header_len, &mut super::no_shared_memory)
}

/// Decodes a request body, taking the data of inputs placed in shared
/// memory from `external` (such inputs have neither `data` nor binary
/// data).
pub fn decode_request_with(
    body: Bytes,
    header_len: Option<usize>,
    external: External<'_>,
) -> Result<InferRequest, OipError> {
    decode_request_json(body, header_len, external)
}

/// Decodes a raw binary request (`Inference-Header-Content-Length: 0`): the
/// whole body is the data of the model's single input.
pub fn decode_raw_binary_request(
    body: Bytes,
    input: &str,
    dtype: DataType,
    shape: Vec<i64>,
) -> Result<InferRequest, OipError> {
    let tensor = decode_raw(input, dtype, shape, body)?;
    Ok(InferRequest {
        inputs: vec![NamedTensor::new(input, tensor)],
        ..InferRequest::default()
    })
}

/// Decodes a response body (what a client receives).
pub fn decode_response(body: Bytes, header_len: Option<usize>) -> Result<InferResponse, OipError> {
    decode_response_json(body, header_len, None, &[])
}

/// Decodes a response body whose outputs may have been written to shared
/// memory (such outputs have neither `data` nor binary data): their data
/// comes from `external`, given each output's name and placement.
pub fn decode_response_with(
    body: Bytes,
    header_len: Option<usize>,
    external: External<'_>,
) -> Result<InferResponse, OipError> {
    decode_response_json(body, header_len, Some(external), &[])
}

/// [`decode_response_with`] for the reply to a request whose `outputs`
/// placed some in shared memory: an output that comes back with neither
/// data, binary data nor a placement of its own was written where the
/// request placed it, and is read from `external` there (Triton's replies
/// carry no parameters for such outputs; this server's carry the
/// placement).
pub fn decode_response_placed<'e>(
    body: Bytes,
    header_len: Option<usize>,
    requested: &'e [RequestedOutput],
    external: External<'e>,
) -> Result<InferResponse, OipError> {
    decode_response_json(body, header_len, Some(external), requested)
}

/// Appends a parameters object.
fn write_params(out: &mut Vec<u8>, p: &Parameters) {
    out.push(b'{');
    for (i, (name, value)) in p.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_value(out, name);
        out.push(b':');
        json::write_value(out, &param_to_json(value));
    }
    out.push(b'}');
}

/// A capacity for the JSON of `tensors` (their data written as text).
fn text_capacity(tensors: &[NamedTensor]) -> usize {
    tensors
        .iter()
        .map(|t| {
            let data = match t.tensor.data() {
                TensorData::Raw(_) => {
                    t.tensor.element_count() * json::element_text_bound(t.tensor.dtype())
                }
                TensorData::Elements(e) => e.iter().map(|e| e.len() + 3).sum(),
            };
            128 + t.name.len() + 24 * t.tensor.shape().len() + data
        })
        .sum()
}

/// Appends tensors as a JSON array of objects (keys in sorted order, as a
/// `Value` object writes them), moving binary ones into `parts`. A tensor
/// placed in shared memory has no data, and keeps its placement in its
/// `parameters` when `keep_placement` (a request's inputs); a reply's
/// outputs say nothing of it, as Triton's (NVIDIA's C++ client reads
/// `binary_data_size` from any output that has `parameters` and no data,
/// and failed on ours).
fn write_tensor_list(
    out: &mut Vec<u8>,
    tensors: &[NamedTensor],
    binary: impl Fn(&NamedTensor) -> bool,
    parts: &mut Vec<Bytes>,
    keep_placement: bool,
) -> Result<(), OipError> {
    out.push(b'[');
    for (i, t) in tensors.iter().enumerate() {
        let datatype = datatype_name(&t.name, t.tensor.dtype())?;
        if i > 0 {
            out.push(b',');
        }
        let placed = shared_memory::is_placed(&t.parameters);
        let as_binary = !placed && binary(t);
        let mut parameters = Cow::Borrowed(&t.parameters);
        if placed && !keep_placement {
            parameters
                .to_mut()
                .retain(|k, _| !k.starts_with(shared_memory::PREFIX));
        }
        if as_binary {
            parameters.to_mut().insert(
                BINARY_DATA_SIZE.into(),
                Parameter::Uint64(raw_len(&t.tensor) as u64),
            );
            parts.push(encode_raw(&t.tensor));
        }
        out.push(b'{');
        if !placed && !as_binary {
            out.extend_from_slice(b"\"data\":");
            let count = t.tensor.element_count();
            let mut next = 0;
            match t.tensor.data() {
                TensorData::Elements(elements) => json::write_nested(
                    out,
                    &[count as i64],
                    &mut next,
                    &mut |out, i| match elements.get(i) {
                        Some(e) => {
                            json::write_value(out, &String::from_utf8_lossy(e));
                            true
                        }
                        None => false,
                    },
                ),
                TensorData::Raw(raw) => {
                    let dtype = t.tensor.dtype();
                    json::write_nested(out, &[count as i64], &mut next, &mut |out, i| {
                        json::write_element(out, dtype, raw, i)
                    });
                }
            }
            out.push(b',');
        }
        out.extend_from_slice(b"\"datatype\":");
        json::write_value(out, datatype);
        out.extend_from_slice(b",\"name\":");
        json::write_value(out, &t.name);
        if !parameters.is_empty() {
            out.extend_from_slice(b",\"parameters\":");
            write_params(out, &parameters);
        }
        out.extend_from_slice(b",\"shape\":");
        json::write_value(out, t.tensor.shape());
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

fn finish(header: Vec<u8>, binary_parts: Vec<Bytes>) -> HttpBody {
    let header = Bytes::from(header);
    let header_len = (!binary_parts.is_empty()).then_some(header.len());
    let mut parts = Vec::with_capacity(1 + binary_parts.len());
    parts.push(header);
    parts.extend(binary_parts);
    HttpBody { header_len, parts }
}

/// Encodes a request body (what a client sends): with `binary`, every input
/// travels as binary data; otherwise as flat JSON `data` (lossy for NaN and
/// infinities, which JSON cannot carry). The JSON is written straight into
/// one buffer (keys in sorted order), no `Value` tree.
pub fn encode_request(req: &InferRequest, binary: bool) -> Result<HttpBody, OipError> {
    let mut parts = Vec::new();
    let capacity = if binary {
        256
    } else {
        text_capacity(&req.inputs)
    };
    let mut out = Vec::with_capacity(capacity + 256);
    out.push(b'{');
    if !req.id.is_empty() {
        out.extend_from_slice(b"\"id\":");
        json::write_value(&mut out, &req.id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"inputs\":");
    write_tensor_list(&mut out, &req.inputs, |_| binary, &mut parts, true)?;
    if !req.outputs.is_empty() {
        out.extend_from_slice(b",\"outputs\":[");
        for (i, o) in req.outputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            json::write_value(&mut out, &o.name);
            if !o.parameters.is_empty() {
                out.extend_from_slice(b",\"parameters\":");
                write_params(&mut out, &o.parameters);
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    if !req.parameters.is_empty() {
        out.extend_from_slice(b",\"parameters\":");
        write_params(&mut out, &req.parameters);
    }
    out.push(b'}');
    Ok(finish(out, parts))
}

/// Which outputs a request wants as binary data: each output's own
/// `binary_data` parameter if given, else the request's `binary_data_output`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryOutputs {
    all: bool,
    per_output: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// The choice a request makes, as Triton reads it: `binary_data_output`
    /// applies only when the request lists no outputs (it then asks for
    /// all of them); a listed output is binary when its own `binary_data`
    /// says so.
    pub fn of(req: &InferRequest) -> BinaryOutputs {
        BinaryOutputs {
            all: req.outputs.is_empty()
                && req
                    .parameters
                    .get(BINARY_DATA_OUTPUT)
                    .and_then(Parameter::as_bool)
                    .unwrap_or(false),
            per_output: req
                .outputs
                .iter()
                .filter_map(|o| Some((o.name.clone(), o.parameters.get(BINARY_DATA)?.as_bool()?)))
                .collect(),
        }
    }

    /// Every output binary (a raw binary request's answer).
    pub fn all() -> BinaryOutputs {
        BinaryOutputs {
            all: true,
            per_output: Vec::new(),
        }
    }

    /// Whether output `name` travels as binary data.
    pub fn wants(&self, name: &str) -> bool {
        self.per_output
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.all, |(_, b)| *b)
    }
}

/// Encodes a response body (what a server sends); outputs for which
/// `binary(name)` holds travel as binary data sharing the tensors' bytes.
pub fn encode_response(
    resp: &InferResponse,
    binary: impl Fn(&str) -> bool,
) -> Result<HttpBody, OipError> {
    let mut parts = Vec::new();
    let capacity: usize = resp
        .outputs
        .iter()
        .filter(|t| !binary(&t.name))
        .map(|t| text_capacity(std::slice::from_ref(t)))
        .sum();
    let mut out = Vec::with_capacity(capacity + 256);
    out.push(b'{');
    if !resp.id.is_empty() {
        out.extend_from_slice(b"\"id\":");
        json::write_value(&mut out, &resp.id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"model_name\":");
    json::write_value(&mut out, &resp.model_name);
    if !resp.model_version.is_empty() {
        out.extend_from_slice(b",\"model_version\":");
        json::write_value(&mut out, &resp.model_version);
    }
    out.extend_from_slice(b",\"outputs\":");
    write_tensor_list(
        &mut out,
        &resp.outputs,
        |t| binary(&t.name),
        &mut parts,
        false,
    )?;
    if !resp.parameters.is_empty() {
        out.extend_from_slice(b",\"parameters\":");
        write_params(&mut out, &resp.parameters);
    }
    out.push(b'}');
    Ok(finish(out, parts))
}

/// `{"error": "<message>"}`.
pub fn encode_error(message: &str) -> String {
    serde_json::json!({ "error": crate::text::bounded(message) }).to_string()
}

/// The decoders as they were, over a `serde_json::Value` tree: what the
/// streaming decoders are compared with.
#[cfg(test)]
pub(super) mod reference {
    use super::*;
    use serde_json::Map;

    fn params_to_json(p: &Parameters) -> Value {
        Value::Object(
            p.iter()
                .map(|(k, v)| (k.clone(), param_to_json(v)))
                .collect(),
        )
    }

    /// Splits a body into the parsed JSON header and the binary rest.
    fn split_body(
        body: &Bytes,
        header_len: Option<usize>,
    ) -> Result<(Map<String, Value>, Bytes), OipError> {
        let json_len = match header_len {
            Some(0) => {
                return Err(OipError::HeaderLength {
                value: "0".into(),
                reason: "a raw binary request (no JSON header) needs the model's input; use decode_raw_binary_request".into(),
            });
            }
            Some(n) if n > body.len() => {
                return Err(OipError::HeaderLength {
                    value: n.to_string(),
                    reason: format!("it exceeds the body length {}", body.len()),
                });
            }
            Some(n) => n,
            None => body.len(),
        };
        let value: Value = serde_json::from_slice(&body[..json_len])
            .map_err(|e| json_err(format!("the JSON header is invalid: {e}")))?;
        let Value::Object(map) = value else {
            return Err(json_err("the JSON header must be an object"));
        };
        Ok((map, body.slice(json_len..)))
    }

    fn param_from_json(name: &str, v: &Value) -> Result<Parameter, OipError> {
        Ok(match v {
            Value::Bool(b) => Parameter::Bool(*b),
            Value::String(s) => Parameter::String(s.clone()),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Parameter::Int64(i),
                (None, Some(u)) => Parameter::Uint64(u),
                _ => Parameter::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => {
                return Err(json_err(format!(
                    "parameter '{name}' must be a string, number or boolean",
                    name = quote(name)
                )));
            }
        })
    }

    fn params_from_json(v: Option<&Value>) -> Result<Parameters, OipError> {
        match v {
            None | Some(Value::Null) => Ok(Parameters::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), param_from_json(k, v)?)))
                .collect(),
            Some(_) => Err(json_err("'parameters' must be an object")),
        }
    }

    fn get_str<'a>(
        obj: &'a Map<String, Value>,
        key: &str,
        what: &str,
    ) -> Result<&'a str, OipError> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(json_err(format!("{what}: '{key}' must be a string"))),
            None => Err(json_err(format!("{what}: '{key}' is missing"))),
        }
    }

    fn get_opt_str(obj: &Map<String, Value>, key: &str) -> Result<String, OipError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(json_err(format!("'{key}' must be a string"))),
        }
    }

    /// Flattens nested `data` arrays into leaves, row-major. Nesting depth is
    /// bounded by the JSON parser's recursion limit.
    fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            leaf => out.push(leaf),
        }
    }

    fn tensor_from_json_data(
        name: &str,
        dtype: DataType,
        shape: Vec<i64>,
        data: &Value,
    ) -> Result<Tensor, OipError> {
        let count = checked_count(name, dtype, &shape)?;
        let mut leaves = Vec::new();
        flatten(data, &mut leaves);
        if leaves.len() != count {
            return Err(OipError::ElementCount {
                name: name.to_owned(),
                shape,
                expected: count as u64,
                actual: leaves.len() as u64,
            });
        }
        let kind = |index: usize, v: &Value| {
            // At most 40 bytes of the value, cut on a character boundary (a cut
            // inside a character panicked: found by fuzzing).
            let mut value = v.to_string();
            value.truncate(value.floor_char_boundary(40));
            OipError::ValueKind {
                name: name.to_owned(),
                datatype: dtype,
                index,
                value,
            }
        };
        if dtype.is_variable() {
            let elements = leaves
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(Bytes::copy_from_slice(s.as_bytes())),
                    other => Err(kind(i, other)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Tensor::from_elements(dtype, shape.clone(), elements).map_err(|_| {
                OipError::Shape {
                    name: name.to_owned(),
                    shape,
                }
            });
        }
        let mut raw = Vec::with_capacity(count * dtype.item_size().unwrap_or(1));
        for (i, v) in leaves.iter().enumerate() {
            json::push_element(dtype, v, &mut raw).map_err(|e| match e {
                NumberError::Kind => kind(i, v),
                NumberError::Range(value) => OipError::ValueRange {
                    name: name.to_owned(),
                    datatype: dtype,
                    value,
                },
            })?;
        }
        Tensor::from_raw(dtype, shape.clone(), Bytes::from(raw))
            .map_err(crate::oip::value_error(name, shape))
    }

    /// Decodes the `inputs` or `outputs` list, taking binary tensors from `rest`
    /// in order.
    fn decode_tensor_list(
        list: Option<&Value>,
        key: &str,
        rest: &mut Bytes,
        mut external: Option<External<'_>>,
    ) -> Result<Vec<NamedTensor>, OipError> {
        let items = match list {
            Some(Value::Array(items)) => items,
            None if key == "outputs" => return Ok(Vec::new()),
            _ => return Err(json_err(format!("'{key}' must be an array of tensors"))),
        };
        let mut tensors = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let what = format!("{key}[{index}]");
            let Value::Object(obj) = item else {
                return Err(json_err(format!("{what} must be an object")));
            };
            let name = get_str(obj, "name", &what)?.to_owned();
            let datatype = get_str(obj, "datatype", &what)?;
            let dtype = resolve_datatype(&name, datatype)?;
            let shape = match obj.get("shape") {
                Some(Value::Array(dims)) => dims
                    .iter()
                    .map(|d| d.as_i64().filter(|&d| d >= 0))
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| {
                        json_err(format!(
                            "tensor '{name}': 'shape' must be an array of non-negative integers",
                            name = quote(&name)
                        ))
                    })?,
                _ => {
                    return Err(json_err(format!(
                        "tensor '{name}': 'shape' must be an array of non-negative integers",
                        name = quote(&name)
                    )));
                }
            };
            let mut parameters = params_from_json(obj.get("parameters"))?;
            if let Some(external) = external.as_mut()
                && let Some(bytes) = external_input(&name, &parameters, external)?
            {
                if obj.contains_key("data") || parameters.contains_key(BINARY_DATA_SIZE) {
                    return Err(OipError::PlacedWithData { name });
                }
                let tensor = decode_raw(&name, dtype, shape, bytes)?;
                tensors.push(NamedTensor {
                    name,
                    tensor,
                    parameters,
                });
                continue;
            }
            let binary = parameters.remove(BINARY_DATA_SIZE);
            let tensor = match binary {
                Some(p) => {
                    let declared = p.as_u64().ok_or_else(|| {
                        json_err(format!(
                            "tensor '{name}': '{BINARY_DATA_SIZE}' must be a non-negative integer",
                            name = quote(&name)
                        ))
                    })?;
                    if declared > rest.len() as u64 {
                        return Err(OipError::BinaryOverrun {
                            name,
                            declared,
                            available: rest.len(),
                        });
                    }
                    let part = rest.split_to(declared as usize);
                    decode_raw(&name, dtype, shape, part)?
                }
                None => match obj.get("data") {
                    Some(data) => tensor_from_json_data(&name, dtype, shape, data)?,
                    None => {
                        return Err(json_err(format!(
                            "tensor '{name}': neither 'data' nor '{BINARY_DATA_SIZE}' is given",
                            name = quote(&name)
                        )));
                    }
                },
            };
            tensors.push(NamedTensor {
                name,
                tensor,
                parameters,
            });
        }
        Ok(tensors)
    }

    pub(super) fn decode_request_with(
        body: Bytes,
        header_len: Option<usize>,
        external: External<'_>,
    ) -> Result<InferRequest, OipError> {
        let (top, mut rest) = split_body(&body, header_len)?;
        let inputs = decode_tensor_list(top.get("inputs"), "inputs", &mut rest, Some(external))?;
        if !rest.is_empty() {
            return Err(OipError::TrailingBinary(rest.len()));
        }
        let outputs = match top.get("outputs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|o| {
                    let obj = o
                        .as_object()
                        .ok_or_else(|| json_err("each requested output must be an object"))?;
                    Ok(RequestedOutput {
                        name: get_str(obj, "name", "requested output")?.to_owned(),
                        parameters: params_from_json(obj.get("parameters"))?,
                    })
                })
                .collect::<Result<_, OipError>>()?,
            Some(_) => return Err(json_err("'outputs' must be an array")),
        };
        Ok(InferRequest {
            model_name: String::new(),
            model_version: String::new(),
            id: get_opt_str(&top, "id")?,
            parameters: params_from_json(top.get("parameters"))?,
            inputs,
            outputs,
        })
    }

    pub(super) fn decode_response_inner(
        body: Bytes,
        header_len: Option<usize>,
        external: Option<External<'_>>,
    ) -> Result<InferResponse, OipError> {
        let (top, mut rest) = split_body(&body, header_len)?;
        let outputs = decode_tensor_list(top.get("outputs"), "outputs", &mut rest, external)?;
        if !rest.is_empty() {
            return Err(OipError::TrailingBinary(rest.len()));
        }
        Ok(InferResponse {
            model_name: get_opt_str(&top, "model_name")?,
            model_version: get_opt_str(&top, "model_version")?,
            id: get_opt_str(&top, "id")?,
            parameters: params_from_json(top.get("parameters"))?,
            outputs,
        })
    }

    /// The encoders as they were, over a `Value` tree.
    fn flat_data(t: &Tensor) -> Value {
        match t.data() {
            TensorData::Elements(elements) => Value::Array(
                elements
                    .iter()
                    .map(|e| Value::String(String::from_utf8_lossy(e).into_owned()))
                    .collect(),
            ),
            TensorData::Raw(raw) => Value::Array(
                raw.chunks_exact(t.dtype().item_size().unwrap_or(1))
                    .map(|b| json::element_value(t.dtype(), b))
                    .collect(),
            ),
        }
    }

    /// Encodes tensors into JSON objects, moving binary ones into `parts`.
    fn encode_tensor_list(
        tensors: &[NamedTensor],
        binary: impl Fn(&NamedTensor) -> bool,
        parts: &mut Vec<Bytes>,
        keep_placement: bool,
    ) -> Result<Vec<Value>, OipError> {
        tensors
            .iter()
            .map(|t| {
                let mut obj = Map::new();
                obj.insert("name".into(), Value::String(t.name.clone()));
                obj.insert(
                    "datatype".into(),
                    Value::from(datatype_name(&t.name, t.tensor.dtype())?),
                );
                obj.insert("shape".into(), Value::from(t.tensor.shape().to_vec()));
                let mut parameters = t.parameters.clone();
                if shared_memory::is_placed(&t.parameters) {
                    // Written to shared memory: no data in the body.
                    if !keep_placement {
                        parameters.retain(|k, _| !k.starts_with(shared_memory::PREFIX));
                    }
                } else if binary(t) {
                    parameters.insert(
                        BINARY_DATA_SIZE.into(),
                        Parameter::Uint64(raw_len(&t.tensor) as u64),
                    );
                    parts.push(encode_raw(&t.tensor));
                } else {
                    obj.insert("data".into(), flat_data(&t.tensor));
                }
                if !parameters.is_empty() {
                    obj.insert("parameters".into(), params_to_json(&parameters));
                }
                Ok(Value::Object(obj))
            })
            .collect()
    }

    fn finish_tree(top: Map<String, Value>, binary_parts: Vec<Bytes>) -> HttpBody {
        let header = Bytes::from(Value::Object(top).to_string());
        let header_len = (!binary_parts.is_empty()).then_some(header.len());
        let mut parts = Vec::with_capacity(1 + binary_parts.len());
        parts.push(header);
        parts.extend(binary_parts);
        HttpBody { header_len, parts }
    }

    /// Encodes a request body (what a client sends): with `binary`, every input
    /// travels as binary data; otherwise as flat JSON `data` (lossy for NaN and
    /// infinities, which JSON cannot carry).
    pub(crate) fn encode_request(req: &InferRequest, binary: bool) -> Result<HttpBody, OipError> {
        let mut parts = Vec::new();
        let mut top = Map::new();
        if !req.id.is_empty() {
            top.insert("id".into(), Value::String(req.id.clone()));
        }
        if !req.parameters.is_empty() {
            top.insert("parameters".into(), params_to_json(&req.parameters));
        }
        let inputs = encode_tensor_list(&req.inputs, |_| binary, &mut parts, true)?;
        top.insert("inputs".into(), Value::Array(inputs));
        if !req.outputs.is_empty() {
            let outputs = req
                .outputs
                .iter()
                .map(|o| {
                    let mut obj = Map::new();
                    obj.insert("name".into(), Value::String(o.name.clone()));
                    if !o.parameters.is_empty() {
                        obj.insert("parameters".into(), params_to_json(&o.parameters));
                    }
                    Value::Object(obj)
                })
                .collect();
            top.insert("outputs".into(), Value::Array(outputs));
        }
        Ok(finish_tree(top, parts))
    }

    pub(crate) fn encode_response(
        resp: &InferResponse,
        binary: impl Fn(&str) -> bool,
    ) -> Result<HttpBody, OipError> {
        let mut parts = Vec::new();
        let mut top = Map::new();
        top.insert("model_name".into(), Value::String(resp.model_name.clone()));
        if !resp.model_version.is_empty() {
            top.insert(
                "model_version".into(),
                Value::String(resp.model_version.clone()),
            );
        }
        if !resp.id.is_empty() {
            top.insert("id".into(), Value::String(resp.id.clone()));
        }
        if !resp.parameters.is_empty() {
            top.insert("parameters".into(), params_to_json(&resp.parameters));
        }
        let outputs = encode_tensor_list(&resp.outputs, |t| binary(&t.name), &mut parts, false)?;
        top.insert("outputs".into(), Value::Array(outputs));
        Ok(finish_tree(top, parts))
    }

    /// Decodes a response body as the tree-based decoder did.
    pub(crate) fn decode_response(
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<InferResponse, OipError> {
        decode_response_inner(body, header_len, None)
    }

    /// Decodes a request body as the tree-based decoder did.
    pub(crate) fn decode_request(
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<InferRequest, OipError> {
        decode_request_with(body, header_len, &mut super::super::no_shared_memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::text_gen::{deep, faulty, key, nested, object, scalar, string, value};
    use proptest::prelude::*;

    const DTYPES: &[&str] = &[
        "FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
        "UINT32", "UINT64", "BOOL", "BYTES",
    ];

    fn quoted(s: &str) -> String {
        format!("\"{s}\"")
    }

    fn datatype() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(DTYPES).prop_map(quoted),
            1 => Just(quoted("XYZ")),
            1 => value(),
        ]
    }

    fn dims(dims: &[usize]) -> String {
        let d: Vec<String> = dims.iter().map(usize::to_string).collect();
        format!("[{}]", d.join(","))
    }

    fn shape() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::collection::vec(0usize..4, 0..4).prop_map(|d| dims(&d)),
            1 => prop_oneof![
                Just("[-1]"), Just("[1.0]"), Just("[18446744073709551615]"),
                Just("[9223372036854775807,9223372036854775807]"), Just("[1,\"2\"]"),
            ]
            .prop_map(String::from),
            1 => value(),
        ]
    }

    fn leaf() -> BoxedStrategy<String> {
        prop_oneof![
            8 => scalar(),
            1 => value(),
        ]
        .boxed()
    }

    fn params() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            3 => key(),
            1 => prop::sample::select(vec![
                BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT,
                "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
            ])
            .prop_map(quoted),
        ];
        prop_oneof![
            6 => prop::collection::vec((name, prop_oneof![4 => scalar(), 1 => value()]), 0..4)
                .prop_map(|e| object(&e)),
            1 => value(),
        ]
    }

    /// A tensor whose data agrees with its type and shape (flat or nested).
    fn good_tensor() -> impl Strategy<Value = String> {
        (
            prop::sample::select(DTYPES),
            prop::collection::vec(0usize..3, 0..3),
            any::<bool>(),
        )
            .prop_flat_map(|(dt, shape, flat)| {
                let n: usize = shape.iter().product();
                let leaf: BoxedStrategy<String> = match dt {
                    "BOOL" => prop_oneof![Just("true"), Just("false")]
                        .prop_map(String::from)
                        .boxed(),
                    "BYTES" => string().boxed(),
                    "FP32" | "FP64" | "FP16" | "BF16" => prop_oneof![
                        (-100i64..100).prop_map(|v| v.to_string()),
                        (-1e6f64..1e6).prop_map(|v| v.to_string()),
                    ]
                    .boxed(),
                    _ => (0i64..100).prop_map(|v| v.to_string()).boxed(),
                };
                (
                    Just(dt),
                    Just(shape),
                    Just(flat),
                    prop::collection::vec(leaf, n),
                )
            })
            .prop_map(|(dt, shape, flat, leaves)| {
                fn nest(shape: &[usize], leaves: &mut std::slice::Iter<'_, String>) -> String {
                    match shape.split_first() {
                        None => leaves.next().cloned().unwrap_or_default(),
                        Some((&d, rest)) => {
                            let items: Vec<String> = (0..d).map(|_| nest(rest, leaves)).collect();
                            format!("[{}]", items.join(","))
                        }
                    }
                }
                let data = if flat {
                    format!("[{}]", leaves.join(","))
                } else {
                    nest(&shape, &mut leaves.iter())
                };
                format!(
                    r#"{{"name":"x","datatype":"{dt}","shape":{},"data":{data}}}"#,
                    dims(&shape)
                )
            })
    }

    /// A tensor object of any fields, in any order, some repeated.
    fn any_tensor() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            3 => (Just(quoted("name")), prop_oneof![4 => Just(quoted("x")), 1 => value()]),
            3 => (Just(quoted("datatype")), datatype().boxed()),
            3 => (Just(quoted("shape")), shape().boxed()),
            3 => (Just(quoted("data")), nested(leaf()).boxed()),
            2 => (Just(quoted("parameters")), params().boxed()),
            1 => (key(), value().boxed()),
        ];
        prop::collection::vec(field, 0..7).prop_map(|f| object(&f))
    }

    /// A tensor object of the usual fields, each of them sometimes odd.
    fn near_tensor() -> impl Strategy<Value = String> {
        let name = prop_oneof![12 => Just(quoted("x")), 1 => value()];
        let shape = prop_oneof![
            4 => prop::collection::vec(0usize..4, 0..3).prop_map(|d| dims(&d)),
            1 => shape(),
        ];
        let data = prop_oneof![
            4 => prop::collection::vec(leaf(), 0..6).prop_map(|l| format!("[{}]", l.join(","))),
            2 => nested(leaf()),
        ];
        let extra = prop::collection::vec(
            prop_oneof![
                (Just(quoted("parameters")), params().boxed()),
                (key(), value().boxed()),
                (Just(quoted("data")), nested(leaf()).boxed()),
            ],
            0..2,
        );
        (name, datatype(), shape, data, extra, any::<u8>()).prop_map(
            |(name, datatype, shape, data, extra, order)| {
                let mut fields = vec![
                    (quoted("name"), name),
                    (quoted("datatype"), datatype),
                    (quoted("shape"), shape),
                    (quoted("data"), data),
                ];
                fields.extend(extra);
                let n = fields.len();
                fields.rotate_left(order as usize % n);
                if order & 0x80 != 0 {
                    fields.swap(0, n - 1);
                }
                object(&fields)
            },
        )
    }

    fn tensor_list() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::collection::vec(
                prop_oneof![
                    4 => good_tensor().boxed(),
                    6 => near_tensor().boxed(),
                    2 => any_tensor().boxed(),
                    1 => value().boxed(),
                ],
                0..4,
            )
            .prop_map(|t| format!("[{}]", t.join(","))),
            1 => value(),
        ]
    }

    fn requested() -> impl Strategy<Value = String> {
        let output = prop_oneof![
            4 => (Just(quoted("y")), params())
                .prop_map(|(n, p)| format!(r#"{{"name":{n},"parameters":{p}}}"#)),
            1 => value(),
        ];
        prop_oneof![
            4 => prop::collection::vec(output, 0..3).prop_map(|o| format!("[{}]", o.join(","))),
            1 => value(),
        ]
    }

    /// A request or response body.
    fn body() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            4 => (Just(quoted("outputs")), prop_oneof![tensor_list().boxed(), requested().boxed()].boxed()),
            1 => (Just(quoted("id")), prop_oneof![Just(quoted("r1")), value()].boxed()),
            1 => (Just(quoted("model_name")), prop_oneof![Just(quoted("m")), value()].boxed()),
            1 => (Just(quoted("model_version")), value().boxed()),
            2 => (Just(quoted("parameters")), params().boxed()),
            1 => (key(), value().boxed()),
            1 => (Just(quoted("inputs")), tensor_list().boxed()),
        ];
        let fields = (
            tensor_list(),
            prop::collection::vec(field, 0..4),
            any::<u8>(),
        )
            .prop_map(|(inputs, mut fields, at)| {
                fields.insert(at as usize % (fields.len() + 1), (quoted("inputs"), inputs));
                object(&fields)
            });
        prop_oneof![
            16 => fields,
            1 => prop::collection::vec(
                prop_oneof![(Just(quoted("outputs")), tensor_list().boxed()), (key(), value().boxed())],
                0..3,
            )
            .prop_map(|f| object(&f)),
            1 => value(),
        ]
        .prop_flat_map(faulty)
    }

    fn same_request(body: &[u8], binary: &[u8]) {
        let mut all = body.to_vec();
        all.extend_from_slice(binary);
        let header = (!binary.is_empty()).then_some(body.len());
        let text = String::from_utf8_lossy(body);
        let new = decode_request(Bytes::from(all.clone()), header);
        let old = reference::decode_request(Bytes::from(all.clone()), header);
        assert_eq!(format!("{new:?}"), format!("{old:?}"), "request {text}");
        let new = decode_response(Bytes::from(all.clone()), header);
        let old = reference::decode_response(Bytes::from(all), header);
        assert_eq!(format!("{new:?}"), format!("{old:?}"), "response {text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The streaming decoders decode what the tree-based ones did and
        /// refuse what they refused, with the same error.
        #[test]
        fn decoders_agree_with_the_tree_based_ones(
            body in body(),
            binary in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            same_request(body.as_bytes(), &[]);
            same_request(body.as_bytes(), &binary);
            // Spaced out (strings change too; both decoders read the same).
            let spaced = body.replace(',', " ,\n").replace('[', "[ ").replace(']', "\t]");
            same_request(spaced.as_bytes(), &[]);
        }
    }

    fn any_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z]{1,4}",
            1 => "[a-z\"\\\\\u{0}-\u{1f}é日/]{0,6}",
        ]
    }

    fn parameters() -> impl Strategy<Value = Parameters> {
        let value = prop_oneof![
            any::<bool>().prop_map(Parameter::Bool),
            any::<i64>().prop_map(Parameter::Int64),
            any::<u64>().prop_map(Parameter::Uint64),
            any::<f64>().prop_map(Parameter::Double),
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(0.1)].prop_map(Parameter::Double),
            any_name().prop_map(Parameter::String),
        ];
        let name = prop_oneof![
            4 => any_name(),
            1 => Just(BINARY_DATA_SIZE.to_owned()),
            1 => Just("shared_memory_region".to_owned()),
        ];
        prop::collection::btree_map(name, value, 0..3)
    }

    fn named_tensor() -> impl Strategy<Value = NamedTensor> {
        let dtypes = DataType::ALL.to_vec();
        (
            prop::sample::select(dtypes),
            prop::collection::vec(0i64..3, 0..3),
        )
            .prop_flat_map(|(dtype, shape)| {
                let n = shape.iter().product::<i64>() as usize;
                let data: BoxedStrategy<TensorData> = match dtype.item_size() {
                    None => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), n)
                        .prop_map(|e| {
                            TensorData::Elements(e.into_iter().map(Bytes::from).collect())
                        })
                        .boxed(),
                    Some(_) if dtype == DataType::Bool => prop::collection::vec(0u8..2, n)
                        .prop_map(|b| TensorData::Raw(Bytes::from(b)))
                        .boxed(),
                    Some(item) => prop::collection::vec(any::<u8>(), n * item)
                        .prop_map(|b| TensorData::Raw(Bytes::from(b)))
                        .boxed(),
                };
                (Just(dtype), Just(shape), data, any_name(), parameters())
            })
            .prop_map(|(dtype, shape, data, name, parameters)| NamedTensor {
                name,
                tensor: Tensor::new(dtype, shape, data).unwrap(),
                parameters,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The streaming encoders write the bytes the tree-based ones wrote.
        #[test]
        fn encoders_write_what_the_tree_based_ones_wrote(
            inputs in prop::collection::vec(named_tensor(), 0..3),
            outputs in prop::collection::vec((any_name(), parameters()), 0..3),
            id in prop_oneof![Just(String::new()), any_name()],
            parameters in parameters(),
            binary in any::<bool>(),
            which in any::<u8>(),
        ) {
            let req = InferRequest {
                model_name: "m".into(),
                model_version: String::new(),
                id: id.clone(),
                parameters: parameters.clone(),
                inputs: inputs.clone(),
                outputs: outputs
                    .into_iter()
                    .map(|(name, parameters)| RequestedOutput { name, parameters })
                    .collect(),
            };
            prop_assert_eq!(encode_request(&req, binary), reference::encode_request(&req, binary));
            for version in ["", "1"] {
                let resp = InferResponse {
                    model_name: id.clone(),
                    model_version: version.into(),
                    id: id.clone(),
                    parameters: parameters.clone(),
                    outputs: inputs.clone(),
                };
                let binary = |name: &str| name.len() % 2 == usize::from(which % 2);
                prop_assert_eq!(
                    encode_response(&resp, binary),
                    reference::encode_response(&resp, binary)
                );
            }
        }
    }

    #[test]
    fn decoders_agree_on_nesting_around_the_parser_limit() {
        for depth in 118..=130 {
            let bodies = [
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1],"data":{}}}]}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"BYTES","shape":[1],"data":{}}}]}}"#,
                    deep("{\"a\":1}", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[2],"data":[1,{}]}}]}}"#,
                    deep("[]", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[0],"data":[],"parameters":{{"binary_data_size":0}}}}],"data":{}}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[0],"data":{},"parameters":{{"binary_data_size":0}}}}]}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"XYZ","shape":[1],"data":[1]}},{{"data":{}}}]}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"inputs":[],"parameters":{{"a":{}}}}}"#,
                    deep("1", depth)
                ),
                format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1],"data":[{{"k":{}}}]}}]}}"#,
                    deep("1", depth)
                ),
            ];
            for body in bodies {
                same_request(body.as_bytes(), &[]);
            }
        }
    }

    #[test]
    fn decoders_agree_on_odd_strings_and_numbers() {
        for leaf in [
            r#""\ud800""#,
            r#""\udc00x""#,
            "1e400",
            "-1e400",
            "1e-400",
            r#""日本語のテキストはここで四十バイトを超えて続きます""#,
            r#"{"b":[1,2,{"z":1,"a":"\u0000"}],"a":"日本語のテキストはここで四十バイトを超え"}"#,
            r#"{"k":1,"k":2}"#,
            "18446744073709551616",
            "-9223372036854775809",
        ] {
            for dtype in DTYPES {
                let body = format!(
                    r#"{{"inputs":[{{"name":"x","datatype":"{dtype}","shape":[2],"data":[{leaf},{leaf}]}}]}}"#
                );
                same_request(body.as_bytes(), &[]);
            }
        }
        same_request(b"{\"inputs\":[],\"id\":\"\xff\"}", &[]);
        same_request(b"{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"\xff\"]}]}", &[]);
    }
}
