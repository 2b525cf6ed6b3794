//! Running a method on MindSpore instances (spec §2.4, §5.4): inputs checked
//! per instance by data type and byte size, never by shape; models declared
//! `with_batch_dim` run instances together in batches padded with copies of
//! the first instance, and each instance gets its outputs with the batch
//! dimension removed.

use bytes::Bytes;
use serving_proto::mindspore::{InstanceResult, ServableError, StatusCode};
use serving_proto::{NamedTensors, Tensor, TensorData};

use super::ModelInfo;
use super::replica::Runner;
use crate::repository::config::{MethodConfig, StageConfig};
use crate::runtime::tensor_io;

/// The largest batch formed for a model whose batch dimension is dynamic.
const DYNAMIC_BATCH: usize = 64;

/// Runs `method` on `instances`. A request-level error (a missing input) is
/// `Err`; otherwise one result per instance, in order. Blocking.
pub fn predict(
    runner: &mut Runner<'_>,
    servable: &str,
    method: &MethodConfig,
    instances: Vec<NamedTensors>,
) -> Result<Vec<InstanceResult>, ServableError> {
    for instance in &instances {
        if let Some(missing) = method.inputs.iter().find(|i| !instance.contains_key(*i)) {
            return Err(ServableError::missing_input(
                missing,
                servable,
                &method.name,
            ));
        }
    }
    let mut values: Vec<InstanceResult> = instances
        .into_iter()
        .map(|mut instance| {
            // Inputs the method does not declare are ignored, as MindSpore does.
            instance.retain(|k, _| method.inputs.contains(k));
            Ok(instance)
        })
        .collect();
    for stage in &method.stage {
        run_stage(runner, stage, &mut values);
    }
    Ok(values
        .into_iter()
        .map(|v| {
            v.map(|map| {
                method
                    .outputs
                    .iter()
                    .filter_map(|o| Some((o.clone(), map.get(o)?.clone())))
                    .collect()
            })
        })
        .collect())
}

fn invalid(message: String) -> ServableError {
    ServableError::new(StatusCode::InvalidInputs, message)
}

fn runtime_error(e: &str) -> ServableError {
    ServableError::new(
        StatusCode::SystemError,
        format!("Serving Error: runtime error occurred: {e}"),
    )
}

/// The per-instance shape of a model input: without the batch dimension
/// when the model has one.
fn unit_shape(info: &ModelInfo, shape: &[i64]) -> Vec<i64> {
    if info.config.with_batch_dim {
        shape.get(1..).unwrap_or_default().to_vec()
    } else {
        shape.to_vec()
    }
}

/// Checks one instance's stage inputs against the model (MindSpore's worker
/// texts) and shapes them as the model wants them.
fn prepare(
    info: &ModelInfo,
    stage: &StageConfig,
    map: &NamedTensors,
) -> Result<Vec<Tensor>, ServableError> {
    let mut out = Vec::with_capacity(stage.inputs.len());
    for (i, (name, spec)) in stage.inputs.iter().zip(&info.inputs).enumerate() {
        let Some(t) = map.get(name) else {
            return Err(invalid(format!(
                "Cannot find input {name} in instance input"
            )));
        };
        if !tensor_io::accepts(spec.element, t.dtype()) {
            return Err(invalid(format!(
                "Given model input {i} data type {} not match the data type {} defined in model",
                t.dtype().mindspore_internal_name(),
                spec.dtype.mindspore_internal_name()
            )));
        }
        let unit = unit_shape(info, &spec.shape);
        let fixed = unit.iter().all(|&d| d >= 0);
        if fixed && !t.dtype().is_variable() {
            let expected = serving_proto::tensor::byte_size(t.dtype(), &unit).unwrap_or(usize::MAX);
            if t.payload_len() != expected {
                return Err(invalid(format!(
                    "Given model input {i} size {} not match the size {expected} defined in model",
                    t.payload_len()
                )));
            }
        }
        let shaped = if fixed {
            t.clone()
                .reshape(unit)
                .map_err(|e| invalid(format!("Given model input {i} {e}")))?
        } else {
            t.clone()
        };
        out.push(shaped);
    }
    Ok(out)
}

fn run_stage(runner: &mut Runner<'_>, stage: &StageConfig, values: &mut [InstanceResult]) {
    let index = runner.model_index(&stage.model);
    let info = &runner.models[index];
    let mut ready: Vec<(usize, Vec<Tensor>)> = Vec::new();
    for (k, value) in values.iter_mut().enumerate() {
        let Ok(map) = value else { continue };
        match prepare(info, stage, map) {
            Ok(inputs) => ready.push((k, inputs)),
            Err(e) => *value = Err(e),
        }
    }
    let mut store =
        |k: usize, outputs: Result<Vec<Tensor>, ServableError>| match (outputs, &mut values[k]) {
            (Ok(outputs), Ok(map)) => {
                for (name, t) in stage.outputs.iter().zip(outputs) {
                    map.insert(name.clone(), t);
                }
            }
            (Err(e), slot) => *slot = Err(e),
            (Ok(_), Err(_)) => {}
        };
    if !info.config.with_batch_dim {
        for (k, inputs) in ready {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            store(
                k,
                runner
                    .run_model(index, &refs)
                    .map_err(|e| runtime_error(&e)),
            );
        }
        return;
    }
    let batch = info.fixed_batch().unwrap_or(DYNAMIC_BATCH);
    // Instances batch together only when their unit shapes agree.
    let mut groups: Vec<Vec<(usize, Vec<Tensor>)>> = Vec::new();
    for item in ready {
        let shapes: Vec<&[i64]> = item.1.iter().map(Tensor::shape).collect();
        match groups.iter_mut().find(|g| {
            g.len() < batch && g[0].1.iter().map(Tensor::shape).eq(shapes.iter().copied())
        }) {
            Some(g) => g.push(item),
            None => groups.push(vec![item]),
        }
    }
    for group in groups {
        let real = group.len();
        let padded = info.fixed_batch().unwrap_or(real);
        let results = run_batch(runner, index, &group, padded);
        for (j, (k, _)) in group.into_iter().enumerate() {
            store(
                k,
                match &results {
                    Ok(per_instance) => Ok(per_instance[j].clone()),
                    Err(e) => Err(e.clone()),
                },
            );
        }
        debug_assert!(real <= padded);
    }
}

/// Runs one batch of `group` padded to `padded` instances with copies of the
/// first; returns each real instance's outputs without the batch dimension.
fn run_batch(
    runner: &mut Runner<'_>,
    index: usize,
    group: &[(usize, Vec<Tensor>)],
    padded: usize,
) -> Result<Vec<Vec<Tensor>>, ServableError> {
    let inputs_per_instance = group[0].1.len();
    let mut batched = Vec::with_capacity(inputs_per_instance);
    for input in 0..inputs_per_instance {
        let parts: Vec<&Tensor> = (0..padded)
            .map(|j| &group.get(j).unwrap_or(&group[0]).1[input])
            .collect();
        batched.push(stack(&parts).map_err(|e| runtime_error(&e))?);
    }
    let refs: Vec<&Tensor> = batched.iter().collect();
    let outputs = runner
        .run_model(index, &refs)
        .map_err(|e| runtime_error(&e))?;
    let mut per_instance: Vec<Vec<Tensor>> = vec![Vec::with_capacity(outputs.len()); group.len()];
    for output in outputs {
        let parts = unstack(&output, padded).map_err(|e| runtime_error(&e))?;
        for (slot, part) in per_instance.iter_mut().zip(parts) {
            slot.push(part);
        }
    }
    Ok(per_instance)
}

/// Stacks same-shape tensors along a new leading dimension (one copy).
fn stack(parts: &[&Tensor]) -> Result<Tensor, String> {
    let first = parts[0];
    let mut shape = Vec::with_capacity(first.shape().len() + 1);
    shape.push(parts.len() as i64);
    shape.extend_from_slice(first.shape());
    match first.data() {
        TensorData::Raw(_) => {
            let mut raw = Vec::with_capacity(first.payload_len() * parts.len());
            for p in parts {
                raw.extend_from_slice(p.raw().map_or(&[][..], |r| r));
            }
            Tensor::from_raw(first.dtype(), shape, Bytes::from(raw)).map_err(|e| e.to_string())
        }
        TensorData::Elements(_) => {
            let elements = parts
                .iter()
                .flat_map(|p| p.elements().unwrap_or_default().iter().cloned())
                .collect();
            Tensor::from_elements(first.dtype(), shape, elements).map_err(|e| e.to_string())
        }
    }
}

/// Splits a batched output along dimension 0 into its first `take` parts
/// (no copy: the parts share the output's buffer).
fn unstack(t: &Tensor, batch: usize) -> Result<Vec<Tensor>, String> {
    let Some((&dim0, rest)) = t.shape().split_first() else {
        return Err("the model output is a scalar, not a batch".into());
    };
    if dim0 as usize != batch {
        return Err(format!(
            "the model output has {dim0} rows but the batch holds {batch} instances"
        ));
    }
    let per = serving_proto::tensor::element_count(rest).unwrap_or(0);
    (0..batch)
        .map(|j| match t.data() {
            TensorData::Raw(raw) => {
                let item = t.dtype().item_size().unwrap_or(1);
                let bytes = raw.slice(j * per * item..(j + 1) * per * item);
                Tensor::from_raw(t.dtype(), rest.to_vec(), bytes).map_err(|e| e.to_string())
            }
            TensorData::Elements(e) => {
                Tensor::from_elements(t.dtype(), rest.to_vec(), e[j * per..(j + 1) * per].to_vec())
                    .map_err(|e| e.to_string())
            }
        })
        .collect()
}
