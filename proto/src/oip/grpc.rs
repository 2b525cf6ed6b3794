//! Open Inference Protocol gRPC messages to and from tensors.
//!
//! Raw contents (`raw_input_contents`, `raw_output_contents`) are moved into
//! tensors without copying; typed contents are converted element by element.

use bytes::Bytes;

use super::contents::{decode_raw, decode_typed, encode_raw, encode_typed, has_typed, needs_raw};
use super::{
    External, InferRequest, InferResponse, NamedTensor, OipError, Parameter, Parameters,
    RequestedOutput, datatype_name, external_input, resolve_datatype, shared_memory,
};
use crate::pb::inference::{self as pb, InferParameter, InferTensorContents, infer_parameter};

/// How tensor data travels in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Contents {
    /// Raw little-endian bytes in `raw_*_contents`: no per-element work.
    #[default]
    Raw,
    /// Typed `InferTensorContents` fields. A message with an FP16 or BF16
    /// tensor is sent raw regardless, as the protocol requires.
    Typed,
}

fn param_from_pb(p: InferParameter) -> Option<Parameter> {
    Some(match p.parameter_choice? {
        infer_parameter::ParameterChoice::BoolParam(v) => Parameter::Bool(v),
        infer_parameter::ParameterChoice::Int64Param(v) => Parameter::Int64(v),
        infer_parameter::ParameterChoice::StringParam(v) => Parameter::String(v),
        infer_parameter::ParameterChoice::DoubleParam(v) => Parameter::Double(v),
        infer_parameter::ParameterChoice::Uint64Param(v) => Parameter::Uint64(v),
    })
}

fn param_to_pb(p: &Parameter) -> InferParameter {
    InferParameter {
        parameter_choice: Some(match p {
            Parameter::Bool(v) => infer_parameter::ParameterChoice::BoolParam(*v),
            Parameter::Int64(v) => infer_parameter::ParameterChoice::Int64Param(*v),
            Parameter::String(v) => infer_parameter::ParameterChoice::StringParam(v.clone()),
            Parameter::Double(v) => infer_parameter::ParameterChoice::DoubleParam(*v),
            Parameter::Uint64(v) => infer_parameter::ParameterChoice::Uint64Param(*v),
        }),
    }
}

/// Parameters from the wire; an empty `InferParameter` (no choice) is dropped.
pub fn params_from_pb(map: std::collections::BTreeMap<String, InferParameter>) -> Parameters {
    map.into_iter()
        .filter_map(|(k, v)| Some((k, param_from_pb(v)?)))
        .collect()
}

/// Parameters to the wire.
pub fn params_to_pb(map: &Parameters) -> std::collections::BTreeMap<String, InferParameter> {
    map.iter()
        .map(|(k, v)| (k.clone(), param_to_pb(v)))
        .collect()
}

/// The wire parts of one tensor, shared by inputs and outputs.
struct WireTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    parameters: std::collections::BTreeMap<String, InferParameter>,
    contents: Option<InferTensorContents>,
}

/// The input and output tensor messages have the same fields; both convert
/// to and from [`WireTensor`].
macro_rules! wire_tensor_conversions {
    ($($t:ty),*) => {$(
        impl From<$t> for WireTensor {
            fn from(t: $t) -> Self {
                WireTensor {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                    parameters: t.parameters,
                    contents: t.contents,
                }
            }
        }
        impl From<WireTensor> for $t {
            fn from(t: WireTensor) -> Self {
                Self {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                    parameters: t.parameters,
                    contents: t.contents,
                }
            }
        }
    )*};
}

wire_tensor_conversions!(
    pb::model_infer_request::InferInputTensor,
    pb::model_infer_response::InferOutputTensor
);

fn decode_tensors(
    tensors: Vec<WireTensor>,
    raw: Vec<Bytes>,
    mut external: Option<External<'_>>,
    requested: &[RequestedOutput],
) -> Result<Vec<NamedTensor>, OipError> {
    let reads = external.is_some();
    let mut aligned = false;
    // Where a reply's output was placed by its request, when the reply
    // itself does not say (Triton's replies carry no parameters for
    // outputs written to shared memory).
    let placed_by_request = |t: &WireTensor| {
        let own = t
            .parameters
            .get(shared_memory::REGION)
            .is_some_and(|p| p.parameter_choice.is_some());
        if own || has_typed(&t.contents) {
            return None;
        }
        requested
            .iter()
            .find(|o| o.name == t.name && shared_memory::is_placed(&o.parameters))
    };
    let placed = |t: &WireTensor| {
        reads
            && (t
                .parameters
                .get(shared_memory::REGION)
                .is_some_and(|p| p.parameter_choice.is_some())
                || placed_by_request(t).is_some())
    };
    if !raw.is_empty() {
        if let Some(t) = tensors.iter().find(|t| has_typed(&t.contents)) {
            return Err(OipError::MixedContents {
                tensor: t.name.clone(),
                model: String::new(),
            });
        }
        let carried = tensors.iter().filter(|t| !placed(t)).count();
        // Placed tensors have no raw entry (what Triton's clients send),
        // or an empty one each that keeps the list in step with the
        // tensors (what Triton's server and ours answer with).
        aligned = raw.len() == tensors.len() && carried < tensors.len();
        if raw.len() != carried && !aligned {
            return Err(OipError::RawCount {
                tensors: carried,
                raw: raw.len(),
            });
        }
    }
    let mut raw = raw.into_iter();
    tensors
        .into_iter()
        .map(|t| {
            let dtype = resolve_datatype(&t.name, &t.datatype)?;
            let by_request = placed_by_request(&t);
            let parameters = params_from_pb(t.parameters);
            let placement = by_request.map_or(&parameters, |o| &o.parameters);
            let from_external = match external.as_mut() {
                Some(external) => external_input(&t.name, placement, external)?,
                None => None,
            };
            let tensor = match from_external {
                Some(bytes) => {
                    let in_step = if aligned { raw.next() } else { None };
                    if has_typed(&t.contents) || in_step.is_some_and(|r| !r.is_empty()) {
                        return Err(OipError::PlacedWithData { name: t.name });
                    }
                    decode_raw(&t.name, dtype, t.shape, bytes)?
                }
                None => match raw.next() {
                    Some(bytes) => decode_raw(&t.name, dtype, t.shape, bytes)?,
                    None => decode_typed(&t.name, dtype, t.shape, t.contents.unwrap_or_default())?,
                },
            };
            Ok(NamedTensor {
                name: t.name,
                tensor,
                parameters,
            })
        })
        .collect()
}

/// The wire parts of tensors: (name, datatype, shape, parameters, contents)
/// and the raw list, in the chosen form. A tensor placed in shared memory
/// has an empty raw entry that keeps the list in step when `in_step` (a
/// reply's outputs, as Triton answers), and none otherwise (a request's
/// inputs, as tritonclient sends them: Triton takes the raw entries of the
/// inputs not placed, in order, and gave an input the empty entry of the
/// one placed before it).
fn encode_tensors(
    tensors: &[NamedTensor],
    contents: Contents,
    in_step: bool,
) -> Result<(Vec<WireTensor>, Vec<Bytes>), OipError> {
    let raw = contents == Contents::Raw || tensors.iter().any(|t| needs_raw(t.tensor.dtype()));
    let mut wire = Vec::with_capacity(tensors.len());
    let mut raws = Vec::new();
    for t in tensors {
        let datatype = datatype_name(&t.name, t.tensor.dtype())?;
        // A tensor in shared memory travels without its data.
        let typed = if shared_memory::is_placed(&t.parameters) {
            if raw && in_step {
                raws.push(Bytes::new());
            }
            None
        } else if raw {
            raws.push(encode_raw(&t.tensor));
            None
        } else {
            Some(encode_typed(&t.tensor))
        };
        // A reply's output placed in shared memory says nothing of it, as
        // Triton's (the request said where).
        let parameters = if in_step && shared_memory::is_placed(&t.parameters) {
            let mut p = t.parameters.clone();
            p.retain(|k, _| !k.starts_with(shared_memory::PREFIX));
            params_to_pb(&p)
        } else {
            params_to_pb(&t.parameters)
        };
        wire.push(WireTensor {
            name: t.name.clone(),
            datatype: datatype.to_owned(),
            shape: t.tensor.shape().to_vec(),
            parameters,
            contents: typed,
        });
    }
    Ok((wire, raws))
}

/// Decodes a `ModelInferRequest` (what a server receives). Inputs placed
/// in shared memory are refused; see [`decode_request_with`].
pub fn decode_request(req: pb::ModelInferRequest) -> Result<InferRequest, OipError> {
    decode_request_with(req, &mut super::no_shared_memory)
}

/// Decodes a `ModelInferRequest`, taking the data of inputs placed in
/// shared memory from `external` (such inputs have no entry in
/// `raw_input_contents`).
pub fn decode_request_with(
    req: pb::ModelInferRequest,
    external: External<'_>,
) -> Result<InferRequest, OipError> {
    let wire = req.inputs.into_iter().map(WireTensor::from).collect();
    let inputs = decode_tensors(wire, req.raw_input_contents, Some(external), &[])
        .map_err(|e| e.of_model(&req.model_name))?;
    Ok(InferRequest {
        model_name: req.model_name,
        model_version: req.model_version,
        id: req.id,
        parameters: params_from_pb(req.parameters),
        inputs,
        outputs: req
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                name: o.name,
                parameters: params_from_pb(o.parameters),
            })
            .collect(),
    })
}

/// Encodes a `ModelInferRequest` (what a client sends).
pub fn encode_request(
    req: &InferRequest,
    contents: Contents,
) -> Result<pb::ModelInferRequest, OipError> {
    let (wire, raw) = encode_tensors(&req.inputs, contents, false)?;
    Ok(pb::ModelInferRequest {
        model_name: req.model_name.clone(),
        model_version: req.model_version.clone(),
        id: req.id.clone(),
        parameters: params_to_pb(&req.parameters),
        inputs: wire.into_iter().map(Into::into).collect(),
        outputs: req
            .outputs
            .iter()
            .map(|o| pb::model_infer_request::InferRequestedOutputTensor {
                name: o.name.clone(),
                parameters: params_to_pb(&o.parameters),
            })
            .collect(),
        raw_input_contents: raw,
    })
}

/// Decodes a `ModelInferResponse` (what a client receives).
pub fn decode_response(resp: pb::ModelInferResponse) -> Result<InferResponse, OipError> {
    decode_response_inner(resp, None, &[])
}

/// Decodes a `ModelInferResponse` whose outputs may have been written to
/// shared memory (Triton's shared-memory parameters on an output): their
/// data comes from `external`, given each output's name and placement.
pub fn decode_response_with(
    resp: pb::ModelInferResponse,
    external: External<'_>,
) -> Result<InferResponse, OipError> {
    decode_response_inner(resp, Some(external), &[])
}

/// [`decode_response_with`] for the reply to a request whose `outputs`
/// placed some in shared memory: an output that comes back with no data
/// (an empty raw entry, or none) and no placement of its own was written
/// where the request placed it, and is read from `external` there, as
/// Triton answers.
pub fn decode_response_placed(
    resp: pb::ModelInferResponse,
    requested: &[RequestedOutput],
    external: External<'_>,
) -> Result<InferResponse, OipError> {
    decode_response_inner(resp, Some(external), requested)
}

fn decode_response_inner(
    resp: pb::ModelInferResponse,
    external: Option<External<'_>>,
    requested: &[RequestedOutput],
) -> Result<InferResponse, OipError> {
    let wire = resp.outputs.into_iter().map(WireTensor::from).collect();
    let outputs = decode_tensors(wire, resp.raw_output_contents, external, requested)
        .map_err(|e| e.of_model(&resp.model_name))?;
    Ok(InferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version,
        id: resp.id,
        parameters: params_from_pb(resp.parameters),
        outputs,
    })
}

/// Encodes a `ModelInferResponse` (what a server sends). Raw contents share
/// the tensors' bytes.
pub fn encode_response(
    resp: &InferResponse,
    contents: Contents,
) -> Result<pb::ModelInferResponse, OipError> {
    let (wire, raw) = encode_tensors(&resp.outputs, contents, true)?;
    Ok(pb::ModelInferResponse {
        model_name: resp.model_name.clone(),
        model_version: resp.model_version.clone(),
        id: resp.id.clone(),
        parameters: params_to_pb(&resp.parameters),
        outputs: wire.into_iter().map(Into::into).collect(),
        raw_output_contents: raw,
    })
}
