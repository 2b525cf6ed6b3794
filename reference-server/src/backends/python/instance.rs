//! One instance of a Python model: a worker process, and how a batch
//! becomes the requests of one `execute` call and its responses the
//! batch's outputs.

use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};
use serving_proto::{DataType, Tensor, TensorData};

use super::process::Process;
use crate::engine::backend::{Batch, IoTimes, ModelInstance, RunError};
use crate::engine::model::TensorSpec;
use crate::engine::scheduler::Partial;

/// Offsets in the region are multiples of this (numpy views of any type
/// are aligned).
const ALIGN: usize = 64;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A loaded Python model instance.
pub(crate) struct PythonInstance {
    pub(crate) bls: std::sync::Arc<std::sync::OnceLock<super::Bls>>,
    pub(crate) process: Option<Process>,
    pub(crate) inputs: Vec<TensorSpec>,
    pub(crate) outputs: Vec<TensorSpec>,
    pub(crate) batched: bool,
    /// Whether it answers a request any number of times (its responses are
    /// handed on as they come; a run returns no outputs).
    pub(crate) decoupled: bool,
}

impl std::fmt::Debug for PythonInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonInstance")
            .field("process", &self.process)
            .field("batched", &self.batched)
            .finish_non_exhaustive()
    }
}

/// One input of one request, laid out in the region.
struct Placed<'a> {
    name: &'a str,
    datatype: DataType,
    shape: Vec<i64>,
    bytes: Part<'a>,
    offset: usize,
}

/// The bytes of an input part: a slice of a raw tensor, or BYTES
/// elements to write in the binary form.
enum Part<'a> {
    Raw(&'a [u8]),
    Elements(&'a [Bytes]),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Raw(b) => b.len(),
            Part::Elements(e) => e.iter().map(|b| 4 + b.len()).sum(),
        }
    }

    fn write(&self, to: &mut [u8]) {
        match self {
            Part::Raw(b) => to[..b.len()].copy_from_slice(b),
            Part::Elements(e) => {
                let mut at = 0;
                for b in *e {
                    to[at..at + 4].copy_from_slice(&(b.len() as u32).to_le_bytes());
                    to[at + 4..at + 4 + b.len()].copy_from_slice(b);
                    at += 4 + b.len();
                }
            }
        }
    }
}

/// Rows `start..end` of `t` (all of it for an unbatched model).
fn part(t: &Tensor, rows: usize, start: usize, end: usize) -> Part<'_> {
    match t.data() {
        TensorData::Raw(raw) => {
            let per = raw.len().checked_div(rows).unwrap_or(0);
            Part::Raw(&raw[start * per..end * per])
        }
        TensorData::Elements(e) => {
            let per = e.len().checked_div(rows).unwrap_or(0);
            Part::Elements(&e[start * per..end * per])
        }
    }
}

/// The protocol name of a datatype as the worker speaks it (ONNX strings
/// are BYTES to Python).
pub(crate) fn wire(d: DataType) -> &'static str {
    match d {
        DataType::String | DataType::Bytes => "BYTES",
        d => d.oip_name().unwrap_or("BYTES"),
    }
}

impl ModelInstance for PythonInstance {
    fn run(&mut self, batch: &Batch<'_>, times: &mut IoTimes) -> Result<Vec<Tensor>, RunError> {
        let ran = self.call(batch, times);
        // Whichever way the call ended: a region it grew past what an
        // instance keeps is given back, and what it wrote is the server's
        // no longer.
        if let Some(p) = self.process.as_mut() {
            if !matches!(ran, Err(RunError::Lost(_))) {
                p.shrink(super::KEEP_REGION, super::FIRST_REGION);
            }
            p.release();
        }
        ran
    }
}

impl PythonInstance {
    /// One `execute` call for the batch.
    fn call(&mut self, batch: &Batch<'_>, times: &mut IoTimes) -> Result<Vec<Tensor>, RunError> {
        let started = Instant::now();
        let process = self
            .process
            .as_mut()
            .ok_or_else(|| RunError::Lost("the Python worker is gone".into()))?;
        // The rows the inputs hold; a batch split otherwise than the jobs
        // (a method's own chunks) is one request.
        let total = batch
            .inputs
            .iter()
            .flatten()
            .find_map(|t| t.shape().first().copied())
            .map_or(1, |r| r.max(0) as usize);
        let jobs: Vec<usize> = match self.batched {
            false => vec![1],
            true if batch.jobs.iter().sum::<usize>() == total => batch.jobs.to_vec(),
            true => vec![total],
        };
        // Each job's inputs, placed one after another.
        let mut requests: Vec<Vec<Placed<'_>>> = Vec::with_capacity(jobs.len());
        let mut at = 0;
        let mut row = 0;
        for &rows in &jobs {
            let mut placed = Vec::new();
            for (spec, t) in self.inputs.iter().zip(batch.inputs) {
                let Some(t) = t else { continue };
                let (bytes, shape) = if self.batched {
                    let mut shape = t.shape().to_vec();
                    if let Some(d) = shape.first_mut() {
                        *d = rows as i64;
                    }
                    (part(t, total, row, row + rows), shape)
                } else {
                    (part(t, 1, 0, 1), t.shape().to_vec())
                };
                let offset = align(at);
                at = offset + bytes.len();
                placed.push(Placed {
                    name: &spec.name,
                    datatype: t.dtype(),
                    shape,
                    bytes,
                    offset,
                });
            }
            row += rows;
            requests.push(placed);
        }
        // The inputs' copy in the region is the call's, charged before it
        // is written.
        process.reserve(at)?;
        if at > process.region.len() {
            process.grow_to(at, batch.deadline)?;
        }
        let region = process.region.bytes_mut();
        let mut described = Vec::with_capacity(requests.len());
        for (n, placed) in requests.iter().enumerate() {
            let info = batch.requests.get(n).and_then(Option::as_ref);
            let inputs: Vec<Value> = placed
                .iter()
                .map(|p| {
                    p.bytes.write(&mut region[p.offset..]);
                    let mut d = json!({
                        "name": p.name,
                        "datatype": wire(p.datatype),
                        "shape": p.shape,
                        "offset": p.offset,
                        "size": p.bytes.len(),
                    });
                    // Text, which MindSpore's stages take as `str`.
                    if p.datatype == DataType::String {
                        d["text"] = Value::Bool(true);
                    }
                    d
                })
                .collect();
            let mut request = json!({
                "inputs": inputs,
                "requested_outputs": self.outputs.iter().map(|o| &o.name).collect::<Vec<_>>(),
            });
            if let Some(info) = info {
                request["id"] = Value::String(info.id.clone());
                request["parameters"] = Value::Object(info.parameters.clone());
                if let Some(c) = &info.correlation_id {
                    request["correlation_id"] = c.clone();
                }
                if info.flags != 0 {
                    request["flags"] = Value::from(info.flags);
                }
            }
            described.push(request);
        }
        drop(requests);
        let ran = Instant::now();
        times.input += ran - started;
        let execute = json!({"op": "execute", "requests": described});
        if self.decoupled {
            let specs = &self.outputs;
            let batched = self.batched;
            let mut respond = |r: &Value, region: &[u8]| {
                let request = r.get("request").and_then(Value::as_u64).unwrap_or(0) as usize;
                let job = if batched { request } else { 0 };
                let outputs = match r.get("error").and_then(Value::as_str) {
                    Some(e) => Err(e.to_owned()),
                    None => response_tensors(r, region, specs),
                };
                let last = r.get("final").and_then(Value::as_bool) == Some(true);
                batch.responses.send(job, Partial { outputs, last });
            };
            process.call_with(
                &execute,
                batch.deadline,
                self.bls.get(),
                batch.siblings,
                Some(&mut respond),
            )?;
            return Ok(Vec::new());
        }
        let reply = process.call_with(
            &execute,
            batch.deadline,
            self.bls.get(),
            batch.siblings,
            None,
        )?;
        let taking = Instant::now();
        let out = self.outputs(reply, &jobs);
        times.output += taking.elapsed();
        out
    }
}

impl PythonInstance {
    /// The batch's outputs, in model order, from the worker's responses
    /// (one per request, rows in request order).
    fn outputs(&self, reply: Value, jobs: &[usize]) -> Result<Vec<Tensor>, RunError> {
        let process = self.process.as_ref().expect("ran");
        let region = process.region.bytes();
        let responses = reply
            .get("responses")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                RunError::Failed("the Python worker answered without responses".into())
            })?;
        if responses.len() != jobs.len() {
            return Err(RunError::Failed(format!(
                "execute returned {} responses for {} requests",
                responses.len(),
                jobs.len()
            )));
        }
        for r in responses {
            if let Some(e) = r.get("error").and_then(Value::as_str) {
                return Err(RunError::Failed(e.to_owned()));
            }
        }
        self.outputs
            .iter()
            .map(|spec| {
                let mut raw: Vec<u8> = Vec::new();
                let mut elements: Vec<Bytes> = Vec::new();
                let mut shape: Option<Vec<i64>> = None;
                // An untyped output (a MindSpore stage's) is what the first
                // response says it is, and the same in every response.
                let mut dtype: Option<DataType> = (!spec.untyped).then_some(spec.dtype);
                for (r, &rows) in responses.iter().zip(jobs) {
                    let o = r
                        .get("outputs")
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(&spec.name)))
                        .ok_or_else(|| {
                            RunError::Failed(format!("the model's response has no output '{}'", spec.name))
                        })?;
                    let got = o.get("datatype").and_then(Value::as_str).unwrap_or("");
                    let expected = match dtype {
                        Some(d) => d,
                        None => {
                            let text = o.get("text").and_then(Value::as_bool) == Some(true);
                            let d = match DataType::from_oip_name(got) {
                                Some(DataType::Bytes) if text => DataType::String,
                                Some(d) => d,
                                None => {
                                    return Err(RunError::Failed(format!(
                                        "output '{}' has the unknown datatype {}",
                                        spec.name,
                                        serving_proto::text::quote(got)
                                    )));
                                }
                            };
                            *dtype.insert(d)
                        }
                    };
                    if got != wire(expected) {
                        return Err(RunError::Failed(format!(
                            "output '{}' is {} where {} was expected",
                            spec.name,
                            serving_proto::text::quote(got),
                            wire(expected)
                        )));
                    }
                    let dims: Vec<i64> = o
                        .get("shape")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                    if self.batched && dims.first().copied() != Some(rows as i64) {
                        return Err(RunError::Failed(format!(
                            "output '{}' has shape {dims:?} for a request of {rows} rows: its first dimension must be the request's rows",
                            spec.name
                        )));
                    }
                    let offset = o.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let size = o.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let bytes = offset
                        .checked_add(size)
                        .and_then(|end| region.get(offset..end))
                        .ok_or_else(|| {
                            RunError::Failed(format!("output '{}' lies outside the shared memory", spec.name))
                        })?;
                    match &mut shape {
                        None => shape = Some(dims),
                        Some(s) => {
                            if s.get(1..) != dims.get(1..) {
                                return Err(RunError::Failed(format!(
                                    "output '{}' has shape {dims:?} in one response and {s:?} in another",
                                    spec.name
                                )));
                            }
                            s[0] += dims[0];
                        }
                    }
                    if expected.is_variable() {
                        elements.extend(split_elements(bytes).map_err(RunError::Failed)?);
                    } else {
                        raw.extend_from_slice(bytes);
                    }
                }
                let shape = shape.unwrap_or_default();
                let made = match dtype.unwrap_or(spec.dtype) {
                    DataType::String if spec.untyped => {
                        Tensor::from_elements(DataType::String, shape, elements)
                    }
                    d if d.is_variable() => Tensor::from_elements(DataType::Bytes, shape, elements),
                    d => Tensor::from_raw(d, shape, Bytes::from(raw)),
                };
                made.map_err(|e| RunError::Failed(format!("output '{}': {e}", spec.name)))
            })
            .collect()
    }
}

/// The outputs of one response of a decoupled model, by name, copied out
/// of the region; checked against the configuration where it names them.
fn response_tensors(
    r: &Value,
    region: &[u8],
    specs: &[TensorSpec],
) -> Result<serving_proto::NamedTensors, String> {
    let mut named = serving_proto::NamedTensors::new();
    for o in r
        .get("outputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
        let got = o.get("datatype").and_then(Value::as_str).unwrap_or("");
        let quoted = serving_proto::text::quote(name);
        let spec = specs.iter().find(|s| s.name == name).ok_or_else(|| {
            format!("the response has output '{quoted}', which the configuration does not declare")
        })?;
        if got != wire(spec.dtype) {
            return Err(format!(
                "output '{quoted}' is {got} where the configuration says {}",
                wire(spec.dtype)
            ));
        }
        named.insert(name.to_owned(), region_tensor("output", o, region)?);
    }
    Ok(named)
}

/// The tensor a worker described in the region (`name`, `datatype`,
/// `shape`, `offset`, `size`), copied out of it; `what` (input, output)
/// names it in errors.
pub(crate) fn region_tensor(what: &str, spec: &Value, region: &[u8]) -> Result<Tensor, String> {
    let name = serving_proto::text::quote(spec.get("name").and_then(Value::as_str).unwrap_or(""));
    let datatype = spec.get("datatype").and_then(Value::as_str).unwrap_or("");
    let dtype = DataType::from_oip_name(datatype)
        .ok_or_else(|| format!("{what} '{name}': unknown datatype {datatype}"))?;
    let shape: Vec<i64> = spec
        .get("shape")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let offset = spec.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let size = spec.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
    let bytes = offset
        .checked_add(size)
        .and_then(|end| region.get(offset..end))
        .ok_or_else(|| format!("{what} '{name}' lies outside the shared memory"))?;
    let made = if dtype.is_variable() {
        Tensor::from_elements(dtype, shape, split_elements(bytes)?)
    } else {
        Tensor::from_raw(dtype, shape, Bytes::copy_from_slice(bytes))
    };
    made.map_err(|e| format!("{what} '{name}': {e}"))
}

/// BYTES elements in the binary form (a 4-byte little-endian length, then
/// the bytes), copied out of the region.
pub(crate) fn split_elements(mut b: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (head, rest) = b
            .split_at_checked(4)
            .ok_or("a BYTES output ends inside an element's length")?;
        let n = u32::from_le_bytes(head.try_into().expect("4")) as usize;
        let (e, rest) = rest
            .split_at_checked(n)
            .ok_or("a BYTES output's element runs past its end")?;
        out.push(Bytes::copy_from_slice(e));
        b = rest;
    }
    Ok(out)
}

impl Drop for PythonInstance {
    /// The model's `finalize`, as Triton calls it when an instance goes.
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }
}
