//! One inference through either protocol family: the same named inputs
//! sent as a MindSpore instance or as Open Inference inputs, the outputs
//! back by name. The checks and the suite's sanity call share it.

use serving_client::{Client, Error, ServableError};
use serving_proto::{NamedTensors, Tensor};

use crate::target::Family;

/// Why a call gave no outputs.
#[derive(Debug)]
pub enum Failed {
    /// The call failed.
    Call(Error),
    /// MindSpore: the server answered the instance with an error.
    Instance(ServableError),
    /// MindSpore: the reply held no result for the instance.
    NoResult,
}

/// Runs `model` (MindSpore: its method `method`) on `inputs`; Open
/// Inference asks for the output `only` alone when given. Returns the
/// outputs by name.
pub async fn run(
    client: &Client,
    family: Family,
    model: &str,
    method: &str,
    inputs: &[(String, Tensor)],
    only: Option<&str>,
) -> Result<Vec<(String, Tensor)>, Failed> {
    match family {
        Family::MindSpore => {
            let instance: NamedTensors = inputs.iter().cloned().collect();
            let mut r = client
                .predict(model, method, &[instance])
                .await
                .map_err(Failed::Call)?;
            let outputs = r.pop().ok_or(Failed::NoResult)?.map_err(Failed::Instance)?;
            Ok(outputs.into_iter().collect())
        }
        Family::OpenInference => {
            let mut call = client.infer(model);
            if let Some(name) = only {
                call = call.output(name);
            }
            for (name, t) in inputs {
                call = call.input(name.clone(), t.clone());
            }
            let r = call.send().await.map_err(Failed::Call)?;
            Ok(r.outputs.into_iter().map(|o| (o.name, o.tensor)).collect())
        }
    }
}

/// The output `name` of a call's outputs.
pub fn output(outputs: Vec<(String, Tensor)>, name: &str) -> Option<Tensor> {
    outputs.into_iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

/// The shape a server takes a scalar input `x0` of `model` in: `[]`, or
/// `[1]` where its metadata says so (Triton declares a scalar as dims `[1]`
/// reshaped to `[]` for the model, and its clients send `[1]`).
pub async fn scalar_shape(client: &Client, family: Family, model: &str) -> Vec<i64> {
    if family != Family::OpenInference {
        return Vec::new();
    }
    match client.model_metadata(model, None).await {
        Ok(meta) => meta
            .inputs
            .iter()
            .find(|i| i.name == "x0")
            .filter(|i| i.shape == [1])
            .map_or_else(Vec::new, |_| vec![1]),
        Err(_) => Vec::new(),
    }
}
