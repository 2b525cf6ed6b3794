//! Ensembles: a servable version whose one method runs other servables
//! (its steps) in the order their tensors allow, each step a job of its own
//! model, scheduled, batched and counted by that model's scheduler as any
//! other request is. Tensors pass from step to step without copies (their
//! bytes are shared).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serving_proto::NamedTensors;

use super::error::EngineError;
use super::method::MethodPlan;
use super::registry::Registry;
use super::scheduler::{JobRequest, JobResult};
use super::servable::ServableVersion;

/// One step of an ensemble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    /// The model it runs: a servable's name, or `servable.method`.
    pub model: String,
    /// Its version; 0: the newest loaded.
    pub version: u64,
    /// Its inputs: by the model's input name, the ensemble tensor it takes.
    pub inputs: BTreeMap<String, String>,
    /// Its outputs: by the model's output name, the ensemble tensor it
    /// gives.
    pub outputs: BTreeMap<String, String>,
}

/// An ensemble's steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsembleSpec {
    /// The steps, as declared (they run as their tensors allow).
    pub steps: Vec<StepSpec>,
}

impl EnsembleSpec {
    /// Checks that every step's inputs are ensemble inputs or other steps'
    /// outputs, that no tensor is given twice, that the steps do not wait
    /// for each other in a circle, and that every output is given.
    pub fn check(&self, inputs: &[String], outputs: &[String]) -> Result<(), String> {
        let mut given: BTreeMap<&str, String> = inputs
            .iter()
            .map(|i| (i.as_str(), "an input of the ensemble".to_owned()))
            .collect();
        for (k, step) in self.steps.iter().enumerate() {
            for tensor in step.outputs.values() {
                let by = format!("step {} (model '{}')", k + 1, step.model);
                if let Some(other) = given.insert(tensor.as_str(), by.clone()) {
                    return Err(format!(
                        "tensor '{tensor}' is given by {other} and by {by}; each ensemble tensor has one source"
                    ));
                }
            }
        }
        for (k, step) in self.steps.iter().enumerate() {
            if let Some(missing) = step
                .inputs
                .values()
                .find(|t| !given.contains_key(t.as_str()))
            {
                return Err(format!(
                    "step {} (model '{}') takes tensor '{missing}', which neither an ensemble input nor a step's output_map gives",
                    k + 1,
                    step.model
                ));
            }
        }
        if let Some(missing) = outputs.iter().find(|o| !given.contains_key(o.as_str())) {
            return Err(format!(
                "output '{missing}' is given by no step's output_map"
            ));
        }
        // The order the steps can run in: each once all it takes is there.
        let mut ready: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut left: Vec<&StepSpec> = self.steps.iter().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|s| {
                let runs = s.inputs.values().all(|t| ready.contains(&t.as_str()));
                if runs {
                    ready.extend(s.outputs.values().map(String::as_str));
                }
                !runs
            });
            if left.len() == before {
                let names: Vec<&str> = left.iter().map(|s| s.model.as_str()).collect();
                return Err(format!(
                    "the steps of models {} wait for each other's outputs in a circle",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// An ensemble ready to run: its steps and its method's checks.
#[derive(Debug)]
pub(crate) struct Ensemble {
    pub(crate) spec: EnsembleSpec,
    pub(crate) plan: MethodPlan,
}

/// A boxed future of a job's answer (an ensemble's steps may be ensembles).
type Answer<'a> = Pin<Box<dyn Future<Output = JobResult> + Send + 'a>>;

impl Ensemble {
    /// Checks a job's inputs against the ensemble's declared method: the
    /// job as its steps take it and its rows, or why the request is
    /// refused.
    pub(crate) fn check(&self, mut job: JobRequest) -> Result<(JobRequest, usize), EngineError> {
        let checked = self.plan.check(std::mem::take(&mut job.inputs))?;
        let rows = checked.rows;
        job.inputs = self
            .plan
            .info
            .inputs
            .iter()
            .zip(checked.inputs)
            .filter_map(|(spec, t)| Some((spec.name.clone(), t?)))
            .collect();
        Ok((job, rows))
    }

    /// Runs one checked job ([`Ensemble::check`]) through the steps, each
    /// model looked up in `registry` when its step runs.
    pub(crate) fn run<'a>(&'a self, registry: &'a Registry, mut job: JobRequest) -> Answer<'a> {
        Box::pin(async move {
            // The ensemble's tensors, from its inputs on.
            let mut values = std::mem::take(&mut job.inputs);
            let mut left: Vec<usize> = (0..self.spec.steps.len()).collect();
            while !left.is_empty() {
                let (ready, waiting): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&k| {
                    self.spec.steps[k]
                        .inputs
                        .values()
                        .all(|t| values.contains_key(t))
                });
                if ready.is_empty() {
                    // Checked at load; a step's model gave fewer outputs
                    // than its output_map names.
                    let k = waiting[0];
                    return Err(EngineError::Runtime(format!(
                        "step {} (model '{}') waits for tensors no step gave",
                        k + 1,
                        self.spec.steps[k].model
                    )));
                }
                let runs = ready.iter().map(|&k| {
                    let step = &self.spec.steps[k];
                    let inputs: NamedTensors = step
                        .inputs
                        .iter()
                        .map(|(input, tensor)| (input.clone(), values[tensor].clone()))
                        .collect();
                    let request = JobRequest {
                        inputs,
                        deadline: job.deadline,
                        priority: job.priority,
                        queue_timeout: job.queue_timeout,
                        info: job.info.clone(),
                        partials: None,
                        // As Triton: a step of a sequence model is in the
                        // ensemble request's sequence.
                        sequence: job.sequence.clone(),
                        timing: None,
                    };
                    async move {
                        let failed = |error: EngineError| EngineError::Step {
                            step: k + 1,
                            model: step.model.clone(),
                            error: Box::new(error),
                        };
                        let outputs = run_step(registry, step, request).await.map_err(failed)?;
                        Ok::<_, EngineError>((k, outputs))
                    }
                });
                for result in futures_util::future::join_all(runs).await {
                    let (k, mut outputs) = result?;
                    let step = &self.spec.steps[k];
                    for (output, tensor) in &step.outputs {
                        let t = outputs.remove(output).ok_or_else(|| EngineError::Step {
                            step: k + 1,
                            model: step.model.clone(),
                            error: Box::new(EngineError::Runtime(format!(
                                "the model gave no output '{output}' (its output_map names it)"
                            ))),
                        })?;
                        values.insert(tensor.clone(), t);
                    }
                }
                left = waiting;
            }
            Ok(self
                .plan
                .info
                .outputs
                .iter()
                .filter_map(|o| Some((o.name.clone(), values.remove(&o.name)?)))
                .collect())
        })
    }
}

/// Runs one step's job on its model (an ensemble in its turn, perhaps).
async fn run_step(
    registry: &Registry,
    step: &StepSpec,
    job: JobRequest,
) -> Result<NamedTensors, EngineError> {
    let (sv, method) = step_model(registry, step)?;
    sv.submit_in(registry, &method, vec![job])
        .await?
        .pop()
        .unwrap_or(Err(EngineError::Unavailable))
}

/// The servable version and method a step runs.
fn step_model(
    registry: &Registry,
    step: &StepSpec,
) -> Result<(Arc<ServableVersion>, String), EngineError> {
    if let Ok(sv) = registry.get(&step.model, step.version) {
        let method = match sv.methods() {
            [one] => one.name.clone(),
            _ => {
                return Err(EngineError::Runtime(format!(
                    "model '{}' has several methods: name one as '{}.<method>'",
                    step.model, step.model
                )));
            }
        };
        return Ok((sv, method));
    }
    if let Some((servable, method)) = step.model.split_once('.')
        && let Ok(sv) = registry.get(servable, step.version)
        && sv.method(method).is_some()
    {
        return Ok((sv, method.to_owned()));
    }
    Err(EngineError::Unavailable)
}
