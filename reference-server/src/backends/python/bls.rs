//! A Python model's requests to the server's models (Triton's BLS:
//! `InferenceRequest(...).exec()`): the worker lays the inputs out in its
//! region and asks; the server runs the request as any Open Inference
//! request and writes the response's outputs into the region.
//!
//! `exec(decoupled=True)` reads a decoupled model's responses one at a time
//! as the model sends them: the worker asks for the next (`next`) until the
//! last. Responses a call did not read are dropped when the call ends.
//! `cancel` is answered and changes nothing: the called model is not told.
//!
//! | worker asks | server answers |
//! |---|---|
//! | `{"op": "infer", "model", "version", "id", "inputs", "outputs", "at"}` | `{"ok": true, "outputs"}` |
//! | the same with `"decoupled": true` | `{"ok": true, "stream": n}` |
//! | `{"op": "next", "stream": n, "at"}` | `{"ok": true, "final", "outputs" \| "error"}`, or `{"ok": true, "done": true}` after the last |
//! | `{"op": "cancel", "stream": n}` | `{"ok": true}` |

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use serving_proto::oip::{InferRequest, InferResponse, NamedTensor, RequestedOutput};

use super::process::Process;
use crate::engine::backend::{RunError, Siblings};

/// One response of a decoupled request: the response and whether it is
/// the request's last, or why this response failed and whether that ends
/// the request (its deadline passed).
pub type Streamed = Result<(InferResponse, bool), (String, bool)>;

/// The responses of one decoupled request, in order: each call blocks for
/// the next until the deadline given; `None` once the last was given.
pub type BlsResponses = Box<dyn FnMut(Option<Instant>) -> Option<Streamed> + Send>;

/// How Python models' BLS requests reach the server's models.
#[derive(Clone)]
pub struct Bls {
    /// Runs one request, blocking, by the deadline given: its response, or
    /// why not.
    pub infer:
        Arc<dyn Fn(InferRequest, Option<Instant>) -> Result<InferResponse, String> + Send + Sync>,
    /// Starts one request whose responses are read one by one (a
    /// decoupled model's; a model that answers once gives one, the last).
    pub stream:
        Arc<dyn Fn(InferRequest, Option<Instant>) -> Result<BlsResponses, String> + Send + Sync>,
}

impl std::fmt::Debug for Bls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bls")
    }
}

/// Why a BLS request failed: the request (the model gets the text in its
/// response) or the worker.
pub(super) enum BlsFailure {
    Request(String),
    Worker(RunError),
}

pub(super) fn text_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

impl Process {
    /// Serves one BLS message of the worker (`op`: `infer`, `next`,
    /// `cancel`): the answer to send it.
    pub(super) fn bls(
        &mut self,
        op: &str,
        msg: &Value,
        bls: Option<&Bls>,
        deadline: Option<Instant>,
    ) -> Result<Value, BlsFailure> {
        let request = BlsFailure::Request;
        let bls =
            bls.ok_or_else(|| request("BLS calls are not available in this server".into()))?;
        let stream = msg.get("stream").and_then(Value::as_u64).unwrap_or(0);
        match op {
            "next" => {
                let Some(next) = self.streams.get_mut(&stream) else {
                    return Ok(json!({"ok": true, "done": true}));
                };
                match next(deadline) {
                    None => {
                        self.streams.remove(&stream);
                        Ok(json!({"ok": true, "done": true}))
                    }
                    Some(Err((e, last))) => {
                        if last {
                            self.streams.remove(&stream);
                        }
                        Ok(json!({"ok": true, "final": last, "error": e}))
                    }
                    Some(Ok((response, last))) => {
                        if last {
                            self.streams.remove(&stream);
                        }
                        let outputs = self.write_outputs(msg, &response, deadline)?;
                        Ok(json!({"ok": true, "final": last, "outputs": outputs}))
                    }
                }
            }
            // The called model is not told (Triton tells it, and a model
            // that does not check goes on the same); its responses are
            // read on, or dropped with the call.
            "cancel" => Ok(json!({"ok": true})),
            _ => {
                let req = self.request(msg).map_err(request)?;
                if msg.get("decoupled").and_then(Value::as_bool) == Some(true) {
                    let responses = (bls.stream)(req, deadline).map_err(request)?;
                    self.next_stream += 1;
                    self.streams.insert(self.next_stream, responses);
                    return Ok(json!({"ok": true, "stream": self.next_stream}));
                }
                let response = (bls.infer)(req, deadline).map_err(request)?;
                let outputs = self.write_outputs(msg, &response, deadline)?;
                Ok(json!({"ok": true, "outputs": outputs}))
            }
        }
    }

    /// Runs a model of the replica for the worker (a MindSpore stage's
    /// `Model.call`): `{"op": "call_model", "model", "inputs", "at"}`,
    /// answered `{"ok": true, "outputs"}` with the outputs in model order.
    pub(super) fn call_model(
        &mut self,
        msg: &Value,
        siblings: Option<&Siblings<'_>>,
        deadline: Option<Instant>,
    ) -> Result<Value, BlsFailure> {
        let request = BlsFailure::Request;
        let siblings =
            siblings.ok_or_else(|| request("the model is not declared by this servable".into()))?;
        let inputs = msg
            .get("inputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| self.tensor_at(i))
            .collect::<Result<Vec<_>, String>>()
            .map_err(request)?;
        let outputs = siblings
            .call(&text_of(msg, "model"), &inputs)
            .map_err(|e| match e {
                RunError::Lost(_) => BlsFailure::Worker(e),
                e => request(e.to_string()),
            })?;
        let response = InferResponse {
            outputs: outputs
                .into_iter()
                .enumerate()
                .map(|(k, t)| NamedTensor::new(k.to_string(), t))
                .collect(),
            ..Default::default()
        };
        let outputs = self.write_outputs(msg, &response, deadline)?;
        Ok(json!({"ok": true, "outputs": outputs}))
    }

    /// The request the worker described (its inputs in the region).
    fn request(&self, msg: &Value) -> Result<InferRequest, String> {
        let mut inputs = Vec::new();
        for i in msg
            .get("inputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            inputs.push(NamedTensor::new(text_of(i, "name"), self.tensor_at(i)?));
        }
        let outputs = msg
            .get("outputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|n| RequestedOutput {
                name: n.to_owned(),
                parameters: Default::default(),
            })
            .collect();
        Ok(InferRequest {
            model_name: text_of(msg, "model"),
            model_version: text_of(msg, "version"),
            id: text_of(msg, "id"),
            inputs,
            outputs,
            ..Default::default()
        })
    }

    /// Writes a response's outputs into the region at the offset the
    /// worker gave (from 0 in a larger region if need be), charged to the
    /// call first; their descriptions.
    fn write_outputs(
        &mut self,
        msg: &Value,
        response: &InferResponse,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, BlsFailure> {
        let data: Vec<(&str, &'static str, &[i64], bytes::Bytes)> = response
            .outputs
            .iter()
            .map(|o| {
                (
                    o.name.as_str(),
                    super::instance::wire(o.tensor.dtype()),
                    o.tensor.shape(),
                    serving_proto::oip::raw_contents(&o.tensor),
                )
            })
            .collect();
        let align = |n: usize| n.div_ceil(64) * 64;
        let total: usize = data.iter().map(|d| align(d.3.len())).sum();
        let mut at = msg.get("at").and_then(Value::as_u64).unwrap_or(0) as usize;
        // `at` is the worker's word: past the region, it is written from 0.
        let end = at.checked_add(total).filter(|&e| e <= self.region.len());
        let fits = end.is_some();
        let used = end.unwrap_or(total);
        let made = self.reserve(used).and_then(|()| match fits {
            true => Ok(()),
            false => self.grow_to(total, deadline),
        });
        made.map_err(|e| match e {
            // The calling model gets the refusal as the response's error,
            // as for any failed BLS request.
            RunError::Memory(exhausted) => BlsFailure::Request(format!(
                "the response of model '{}' needs {total} bytes of shared memory, and the server has no room for them: {exhausted}",
                serving_proto::text::quote(&text_of(msg, "model"))
            )),
            e => BlsFailure::Worker(e),
        })?;
        if !fits {
            at = 0;
        }
        let region = self.region.bytes_mut();
        let mut described = Vec::with_capacity(data.len());
        for (name, datatype, shape, bytes) in &data {
            region[at..at + bytes.len()].copy_from_slice(bytes);
            described.push(json!({"name": name, "datatype": datatype, "shape": shape, "offset": at, "size": bytes.len()}));
            at = align(at + bytes.len());
        }
        Ok(described)
    }
}
