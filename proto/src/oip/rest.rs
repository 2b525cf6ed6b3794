//! Open Inference Protocol REST bodies: JSON tensors, and the binary tensor
//! extension (`Inference-Header-Content-Length` framing).
//!
//! A binary body is the JSON header followed by the tensors' bytes, in the
//! order the tensors appear in the JSON, each announced by its
//! `binary_data_size` parameter. Numeric binary tensors decoded here share
//! the body's buffer; BYTES elements are 4-byte little-endian length-prefixed.

use crate::text::quote;
use bytes::Bytes;
use serde_json::{Map, Number, Value};

use super::contents::{decode_raw, encode_raw, raw_len};
use super::{
    External, InferRequest, InferResponse, NamedTensor, OipError, Parameter, Parameters,
    RequestedOutput, checked_count, datatype_name, external_input, resolve_datatype, shared_memory,
};
use crate::json::{self, NumberError};
use crate::{DataType, Tensor, TensorData};

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

fn param_to_json(p: &Parameter) -> Value {
    match p {
        Parameter::Bool(b) => Value::Bool(*b),
        Parameter::Int64(v) => Value::from(*v),
        Parameter::Uint64(v) => Value::from(*v),
        Parameter::Double(v) => Number::from_f64(*v).map_or(Value::Null, Value::Number),
        Parameter::String(s) => Value::String(s.clone()),
    }
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

fn params_to_json(p: &Parameters) -> Value {
    Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), param_to_json(v)))
            .collect(),
    )
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str, OipError> {
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
        .map_err(super::value_error(name, shape))
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
    decode_response_inner(body, header_len, None)
}

/// Decodes a response body whose outputs may have been written to shared
/// memory (such outputs have neither `data` nor binary data): their data
/// comes from `external`, given each output's name and placement.
pub fn decode_response_with(
    body: Bytes,
    header_len: Option<usize>,
    external: External<'_>,
) -> Result<InferResponse, OipError> {
    decode_response_inner(body, header_len, Some(external))
}

fn decode_response_inner(
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

fn finish(top: Map<String, Value>, binary_parts: Vec<Bytes>) -> HttpBody {
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
pub fn encode_request(req: &InferRequest, binary: bool) -> Result<HttpBody, OipError> {
    let mut parts = Vec::new();
    let mut top = Map::new();
    if !req.id.is_empty() {
        top.insert("id".into(), Value::String(req.id.clone()));
    }
    if !req.parameters.is_empty() {
        top.insert("parameters".into(), params_to_json(&req.parameters));
    }
    let inputs = encode_tensor_list(&req.inputs, |_| binary, &mut parts)?;
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
    Ok(finish(top, parts))
}

/// Which outputs a request wants as binary data: each output's own
/// `binary_data` parameter if given, else the request's `binary_data_output`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryOutputs {
    all: bool,
    per_output: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// The choice a request makes.
    pub fn of(req: &InferRequest) -> BinaryOutputs {
        BinaryOutputs {
            all: req
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
    let outputs = encode_tensor_list(&resp.outputs, |t| binary(&t.name), &mut parts)?;
    top.insert("outputs".into(), Value::Array(outputs));
    Ok(finish(top, parts))
}

/// `{"error": "<message>"}`.
pub fn encode_error(message: &str) -> String {
    serde_json::json!({ "error": crate::text::bounded(message) }).to_string()
}
