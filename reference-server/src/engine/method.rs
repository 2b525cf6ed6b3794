//! A method compiled against its models: which model input each method
//! input feeds, the shape a job must have, and how a batch of rows runs
//! through the stages.
//!
//! A method is *batched* when any of its stage models has a batch
//! dimension. Its jobs are rows: every input is `[rows, ...]`, the rest of
//! the shape being the model's ("the row shape"); rows of several jobs are
//! joined into one batch. A stage whose model has a batch dimension runs the
//! whole batch at once (padded to the model's fixed batch, in chunks of it
//! if need be); a stage whose model has none runs each row alone, and its
//! outputs are stacked back into rows. A method without a batched model
//! runs each job whole, one per run, with the model's shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serving_proto::{DataType, NamedTensors, Tensor};

use super::backend::RunError;
use super::config::{Batching, MethodSpec};
use super::error::{EngineError, InputProblem};
use super::model::{self, ModelInfo};
use super::replica::Runner;
use super::rows;

/// The largest batch formed for a model whose batch dimension is dynamic,
/// unless the deployment says otherwise.
pub const DYNAMIC_BATCH: usize = 64;

/// A method as front ends see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// Method name.
    pub name: String,
    /// Its inputs, in order.
    pub inputs: Vec<InputInfo>,
    /// Its outputs, in order.
    pub outputs: Vec<OutputInfo>,
    /// Whether jobs are rows (dim 0) that batch together.
    pub batched: bool,
    /// The most rows one run takes; for a method that is not batched, the
    /// most jobs a replica takes at once (run one after another; default 1).
    pub max_batch_size: usize,
    /// Whether its model answers a job with any number of responses as it
    /// sends them (a decoupled model, its only stage): jobs then need
    /// somewhere to send them ([`crate::engine::JobRequest::partials`]).
    pub decoupled: bool,
}

/// One input of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputInfo {
    /// Its name.
    pub name: String,
    /// Its position among the inputs of the first model it feeds.
    pub model_input: usize,
    /// Its data type: that of the model input (`String` for text, which
    /// must be UTF-8 without NUL bytes; `Bytes` for any bytes).
    pub dtype: DataType,
    /// The shape a job gives: `[-1, row shape...]` for a batched method,
    /// the model's shape otherwise (or the method's reshape of it); -1
    /// where any size goes.
    pub shape: Vec<i64>,
    /// The shape of one row (batched) or of the whole input.
    pub unit: Vec<i64>,
    /// Whether a job may leave it out.
    pub optional: bool,
    /// Whether any type and shape goes (it feeds only Python functions,
    /// which declare neither): `dtype` and `unit` then say nothing.
    pub untyped: bool,
    /// The model's shape of one row (or whole input), when the method
    /// reshapes it.
    model_unit: Option<Vec<i64>>,
}

impl InputInfo {
    /// Whether a tensor of `given` type can be this input (text and bytes
    /// are one wire type).
    pub fn accepts(&self, given: DataType) -> bool {
        if self.untyped {
            true
        } else if self.dtype.is_variable() {
            given.is_variable()
        } else {
            given == self.dtype
        }
    }
}

/// One output of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputInfo {
    /// Its name.
    pub name: String,
    /// Its data type.
    pub dtype: DataType,
    /// Its shape, rows first for a batched method.
    pub shape: Vec<i64>,
    /// The shape clients see of one row (or whole output), when the method
    /// reshapes the model's.
    reshape: Option<Vec<i64>>,
    /// Class labels: label `i` names element `i` of a row.
    pub labels: Option<Arc<[String]>>,
    /// The value it is: its own name, or the input or stage output it
    /// returns under this name.
    source: String,
    /// Whether it may be of any type and shape (a Python function's
    /// result): `dtype` and `shape` then say nothing.
    pub untyped: bool,
}

#[derive(Clone, Debug)]
struct StagePlan {
    model: usize,
    inputs: Vec<String>,
    outputs: Vec<String>,
    batched: bool,
    fixed_batch: Option<usize>,
}

/// A compiled method.
#[derive(Clone, Debug)]
pub(crate) struct MethodPlan {
    pub(crate) info: MethodInfo,
    stages: Vec<StagePlan>,
}

/// What makes jobs' rows joinable: each input's type and row shape, or
/// `None` for an optional input left out.
pub(crate) type Signature = Vec<Option<(DataType, Vec<i64>)>>;

/// A job's inputs, checked: in method order (`None` for an optional input
/// left out), with its rows.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) inputs: Vec<Option<Tensor>>,
    pub(crate) rows: usize,
    pub(crate) signature: Signature,
}

fn rows_first(unit: &[i64]) -> Vec<i64> {
    std::iter::once(-1).chain(unit.iter().copied()).collect()
}

/// Checks that a reshape keeps the element count where both shapes are
/// fixed, and has at most one `-1`.
fn check_reshape(what: &str, from: &[i64], to: &[i64]) -> Result<(), String> {
    let count = |s: &[i64]| s.iter().all(|&d| d >= 0).then(|| s.iter().product::<i64>());
    if to.iter().filter(|&&d| d < 0).count() > 1 {
        return Err(format!("{what}: the shape {to:?} has more than one -1"));
    }
    match (count(from), count(to)) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "{what}: the shape {to:?} holds {b} elements and the model's {from:?} {a}"
        )),
        _ => Ok(()),
    }
}

/// `t` (rows first when `batched`) with each row, or the whole tensor,
/// reshaped to `unit` (a `-1` there follows from the element count).
fn reshape_to(t: Tensor, unit: &[i64], batched: bool) -> Result<Tensor, String> {
    let rows = if batched {
        t.shape().first().copied()
    } else {
        None
    };
    let total = t.element_count() as i64;
    let per = match rows {
        Some(r) if r > 0 => total / r,
        Some(_) => 0,
        None => total,
    };
    let known: i64 = unit.iter().filter(|&&d| d >= 0).product();
    let mut shape: Vec<i64> = unit
        .iter()
        .map(|&d| {
            if d < 0 {
                per.checked_div(known).unwrap_or(0)
            } else {
                d
            }
        })
        .collect();
    if let Some(r) = rows {
        shape.insert(0, r);
    }
    t.reshape(shape).map_err(|e| e.to_string())
}

/// A declared input or output: its name, type and shape (of one row when
/// batched), for a method that runs no models of its own (an ensemble's).
pub type Declared = (String, DataType, Vec<i64>);

impl MethodInfo {
    /// A method as declared rather than compiled against models (an
    /// ensemble's, whose steps are models of their own): inputs and
    /// outputs with their row shapes when `batched`.
    pub fn declared(
        name: &str,
        inputs: Vec<Declared>,
        outputs: Vec<Declared>,
        batched: bool,
        max_batch_size: usize,
    ) -> MethodInfo {
        let shape = |unit: &[i64]| {
            if batched {
                rows_first(unit)
            } else {
                unit.to_vec()
            }
        };
        MethodInfo {
            name: name.to_owned(),
            inputs: inputs
                .into_iter()
                .enumerate()
                .map(|(i, (name, dtype, unit))| InputInfo {
                    name,
                    model_input: i,
                    dtype,
                    shape: shape(&unit),
                    unit,
                    optional: false,
                    untyped: false,
                    model_unit: None,
                })
                .collect(),
            outputs: outputs
                .into_iter()
                .map(|(name, dtype, unit)| OutputInfo {
                    source: name.clone(),
                    name,
                    dtype,
                    shape: shape(&unit),
                    reshape: None,
                    labels: None,
                    untyped: false,
                })
                .collect(),
            batched,
            max_batch_size: max_batch_size.max(1),
            decoupled: false,
        }
    }
}

impl MethodPlan {
    /// A method that runs no stages of its own (an ensemble's): only its
    /// checks.
    pub(crate) fn declared(info: MethodInfo) -> MethodPlan {
        MethodPlan {
            info,
            stages: Vec::new(),
        }
    }

    /// Compiles `spec` against the loaded models (in the order of the
    /// servable's model list).
    pub(crate) fn compile(
        spec: &MethodSpec,
        models: &[ModelInfo],
        batching: &Batching,
    ) -> Result<MethodPlan, String> {
        let name = &spec.name;
        let mut stages = Vec::with_capacity(spec.stages.len());
        for (i, stage) in spec.stages.iter().enumerate() {
            let Some(model) = models.iter().position(|m| m.spec.name == stage.model) else {
                return Err(format!(
                    "method '{name}' stage {}: model '{}' is not a model of the servable",
                    i + 1,
                    stage.model
                ));
            };
            let info = &models[model];
            if stage.inputs.len() != info.inputs.len() || stage.outputs.len() != info.outputs.len()
            {
                return Err(format!(
                    "method '{name}' stage {}: model '{}' has {} inputs and {} outputs, the stage names {} and {}",
                    i + 1,
                    stage.model,
                    info.inputs.len(),
                    info.outputs.len(),
                    stage.inputs.len(),
                    stage.outputs.len()
                ));
            }
            stages.push(StagePlan {
                model,
                inputs: stage.inputs.clone(),
                outputs: stage.outputs.clone(),
                batched: info.spec.batched,
                fixed_batch: info.fixed_batch(),
            });
        }
        let batched = stages.iter().any(|s| s.batched);
        let decoupled = stages.iter().any(|s| models[s.model].decoupled);
        if decoupled && stages.len() != 1 {
            return Err(format!(
                "method '{name}': a decoupled model answers in several responses, so it can only be a method's one stage"
            ));
        }
        let unit_of = |stage: &StagePlan, shape: &[i64]| -> Vec<i64> {
            if stage.batched {
                shape.get(1..).unwrap_or_default().to_vec()
            } else {
                shape.to_vec()
            }
        };
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for input in &spec.inputs {
            // The first model that declares what it takes says what the
            // input is; one that feeds only untyped stages takes anything.
            let feeds = |typed: bool| {
                stages.iter().find_map(|s| {
                    let position = s.inputs.iter().position(|n| n == input)?;
                    (models[s.model].inputs[position].untyped != typed).then_some((s, position))
                })
            };
            let Some((stage, position)) = feeds(true).or_else(|| feeds(false)) else {
                // An input that is only returned (a MindSpore method that
                // echoes it) goes through as it came.
                let returned = spec
                    .outputs
                    .iter()
                    .any(|o| spec.output_sources.get(o).unwrap_or(o) == input);
                if !returned {
                    return Err(format!(
                        "method '{name}': input '{input}' feeds no stage; a method input must be a model input"
                    ));
                }
                inputs.push(InputInfo {
                    name: input.clone(),
                    model_input: inputs.len(),
                    dtype: DataType::Bytes,
                    shape: vec![-1],
                    unit: Vec::new(),
                    optional: spec.optional.contains(input),
                    untyped: true,
                    model_unit: None,
                });
                continue;
            };
            let model = &models[stage.model].inputs[position];
            let model_unit = unit_of(stage, &model.shape);
            let unit = match spec.reshape.get(input) {
                Some(shape) => {
                    check_reshape(
                        &format!("method '{name}' input '{input}'"),
                        &model_unit,
                        shape,
                    )?;
                    shape.clone()
                }
                None => model_unit.clone(),
            };
            inputs.push(InputInfo {
                name: input.clone(),
                model_input: position,
                dtype: model.dtype,
                shape: if batched {
                    rows_first(&unit)
                } else {
                    unit.clone()
                },
                optional: spec.optional.contains(input),
                untyped: model.untyped,
                model_unit: (unit != model_unit).then_some(model_unit),
                unit,
            });
        }
        let mut outputs = Vec::with_capacity(spec.outputs.len());
        for output in &spec.outputs {
            let source = spec.output_sources.get(output).unwrap_or(output);
            let produced = stages.iter().rev().find_map(|s| {
                let position = s.outputs.iter().position(|n| n == source)?;
                Some((s, &models[s.model].outputs[position]))
            });
            let (dtype, unit, untyped) = match produced {
                Some((stage, model)) => (model.dtype, unit_of(stage, &model.shape), model.untyped),
                None => match inputs.iter().find(|i| &i.name == source) {
                    Some(i) => (i.dtype, i.unit.clone(), i.untyped),
                    None => {
                        return Err(format!(
                            "method '{name}': output '{output}' is neither an input nor a stage output"
                        ));
                    }
                },
            };
            let reshape = spec.reshape.get(output).cloned();
            if let Some(shape) = &reshape {
                check_reshape(&format!("method '{name}' output '{output}'"), &unit, shape)?;
            }
            let unit = reshape.clone().unwrap_or(unit);
            outputs.push(OutputInfo {
                name: output.clone(),
                dtype,
                shape: if batched { rows_first(&unit) } else { unit },
                reshape,
                labels: spec.labels.get(output).cloned(),
                untyped,
                source: source.clone(),
            });
        }
        let max_batch_size = if batched {
            let fixed = stages.iter().filter_map(|s| s.fixed_batch).min();
            batching
                .max_batch_size
                .unwrap_or(fixed.unwrap_or(DYNAMIC_BATCH))
        } else {
            batching.max_batch_size.unwrap_or(1)
        }
        .max(1);
        Ok(MethodPlan {
            info: MethodInfo {
                name: name.clone(),
                inputs,
                outputs,
                batched,
                max_batch_size,
                decoupled,
            },
            stages,
        })
    }

    /// Checks a job's inputs against the method: names, types, shapes,
    /// rows, and UTF-8 text for string inputs.
    pub(crate) fn check(&self, mut given: NamedTensors) -> Result<Checked, EngineError> {
        let info = &self.info;
        let missing: Vec<String> = info
            .inputs
            .iter()
            .filter(|i| !i.optional && !given.contains_key(&i.name))
            .map(|i| i.name.clone())
            .collect();
        if let Some(first) = missing.first() {
            return Err(EngineError::MissingInput {
                input: first.clone(),
                given: given.keys().take(16).cloned().collect(),
                given_count: given.len(),
                required: info.inputs.iter().filter(|i| !i.optional).count(),
                missing,
            });
        }
        if let Some(extra) = given
            .keys()
            .find(|k| !info.inputs.iter().any(|i| &i.name == *k))
        {
            return Err(EngineError::UnexpectedInput {
                input: extra.clone(),
            });
        }
        let mut inputs = Vec::with_capacity(info.inputs.len());
        let mut signature = Vec::with_capacity(info.inputs.len());
        let mut rows: Option<(usize, &str)> = None;
        for spec in &info.inputs {
            let Some(t) = given.remove(&spec.name) else {
                inputs.push(None);
                signature.push(None);
                continue;
            };
            let invalid = |problem| EngineError::InvalidInput {
                input: spec.name.clone(),
                model_input: spec.model_input,
                problem,
            };
            let dims = t.shape();
            let unit = if info.batched {
                dims.get(1..)
            } else {
                Some(dims)
            };
            let fits = unit.is_some_and(|u| {
                spec.untyped
                    || (u.len() == spec.unit.len()
                        && u.iter().zip(&spec.unit).all(|(&d, &s)| s < 0 || d == s))
            });
            if !spec.accepts(t.dtype()) || !fits {
                return Err(invalid(InputProblem::Mismatch {
                    expected_dtype: spec.dtype,
                    expected_shape: spec.shape.clone(),
                    given_dtype: t.dtype(),
                    given_shape: dims.to_vec(),
                }));
            }
            if info.batched {
                let n = rows::count(&t);
                if n == 0 {
                    return Err(invalid(InputProblem::NoRows));
                }
                match rows {
                    None => rows = Some((n, &spec.name)),
                    Some((first, other)) if first != n => {
                        return Err(invalid(InputProblem::Rows {
                            rows: n,
                            other: other.to_owned(),
                            other_rows: first,
                        }));
                    }
                    Some(_) => {}
                }
            }
            if spec.dtype == DataType::String && !spec.untyped {
                if let Some(element) = model::first_non_utf8(&t) {
                    return Err(invalid(InputProblem::NotUtf8 { element }));
                }
                if let Some((element, at)) = model::first_nul(&t) {
                    return Err(invalid(InputProblem::Nul { element, at }));
                }
            }
            signature.push(Some((t.dtype(), unit.unwrap_or_default().to_vec())));
            inputs.push(Some(t));
        }
        let rows = rows.map_or(1, |(n, _)| n);
        if info.batched && rows > info.max_batch_size {
            return Err(EngineError::TooManyRows {
                rows,
                max: info.max_batch_size,
            });
        }
        Ok(Checked {
            inputs,
            rows,
            signature,
        })
    }

    /// Runs the stages on `inputs` (a batch of `rows` rows, or one whole
    /// job); returns the method's outputs. Blocking.
    pub(crate) fn run(
        &self,
        runner: &mut Runner<'_>,
        inputs: Vec<Option<Tensor>>,
        rows: usize,
    ) -> Result<Vec<Tensor>, RunError> {
        Ok(self.run_with(runner, inputs, rows, Vec::new(), &[])?.0)
    }

    /// As [`MethodPlan::run`], with model inputs the engine feeds itself
    /// (`extra`: a sequence model's control inputs and states, by model
    /// input name); returns the outputs and the values of `keep` (model
    /// outputs that are not method outputs: a sequence's next state).
    pub(crate) fn run_with(
        &self,
        runner: &mut Runner<'_>,
        inputs: Vec<Option<Tensor>>,
        rows: usize,
        extra: Vec<(String, Tensor)>,
        keep: &[String],
    ) -> Result<(Vec<Tensor>, Vec<Tensor>), RunError> {
        let batched = self.info.batched;
        let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
        for (spec, t) in self.info.inputs.iter().zip(inputs) {
            let Some(t) = t else { continue };
            let t = match &spec.model_unit {
                Some(unit) => reshape_to(t, unit, batched)?,
                None => t,
            };
            values.insert(&spec.name, t);
        }
        for (name, t) in &extra {
            values.insert(name, t.clone());
        }
        for stage in &self.stages {
            let args: Vec<Option<&Tensor>> = stage
                .inputs
                .iter()
                .map(|n| values.get(n.as_str()))
                .collect();
            let outputs = if !batched {
                runner.run_model(stage.model, &args)?
            } else if stage.batched {
                run_batched(runner, stage, &args, rows)?
            } else {
                run_rows(runner, stage, &args, rows)?
            };
            for (name, t) in stage.outputs.iter().zip(outputs) {
                values.insert(name, t);
            }
        }
        let kept = keep
            .iter()
            .map(|name| {
                values
                    .get(name.as_str())
                    .cloned()
                    .ok_or_else(|| format!("the model did not output state '{name}'"))
            })
            .collect::<Result<Vec<Tensor>, String>>()?;
        // A decoupled model has sent its responses itself.
        if self.info.decoupled {
            return Ok((Vec::new(), kept));
        }
        let outputs = self
            .info
            .outputs
            .iter()
            .map(|o| {
                let t = values
                    .get(o.source.as_str())
                    .cloned()
                    .ok_or_else(|| format!("output '{}' was not computed", o.name))?;
                Ok(match &o.reshape {
                    Some(unit) => reshape_to(t, unit, batched)?,
                    None => t,
                })
            })
            .collect::<Result<Vec<Tensor>, RunError>>()?;
        Ok((outputs, kept))
    }
}

/// A batched model on `rows` rows: as they are for a dynamic batch,
/// padded (and in chunks) for a fixed one.
fn run_batched(
    runner: &mut Runner<'_>,
    stage: &StagePlan,
    args: &[Option<&Tensor>],
    rows: usize,
) -> Result<Vec<Tensor>, RunError> {
    let Some(fixed) = stage.fixed_batch.filter(|&f| f != rows) else {
        let outputs = runner.run_model(stage.model, args)?;
        check_rows(&outputs, rows)?;
        return Ok(outputs);
    };
    let mut chunks: Vec<Vec<Tensor>> = Vec::new();
    for start in (0..rows).step_by(fixed) {
        let end = (start + fixed).min(rows);
        let padded = args
            .iter()
            .map(|t| {
                t.map(|t| rows::pad(&rows::slice(t, start, end)?, fixed))
                    .transpose()
            })
            .collect::<Result<Vec<Option<Tensor>>, String>>()?;
        let refs: Vec<Option<&Tensor>> = padded.iter().map(Option::as_ref).collect();
        let outputs = runner.run_model(stage.model, &refs)?;
        check_rows(&outputs, fixed)?;
        chunks.push(
            outputs
                .iter()
                .map(|o| rows::slice(o, 0, end - start))
                .collect::<Result<_, _>>()?,
        );
    }
    if chunks.len() == 1 {
        return Ok(chunks.remove(0));
    }
    Ok((0..chunks[0].len())
        .map(|k| rows::join(&chunks.iter().map(|c| &c[k]).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()?)
}

/// A model without a batch dimension on each row alone, outputs stacked.
fn run_rows(
    runner: &mut Runner<'_>,
    stage: &StagePlan,
    args: &[Option<&Tensor>],
    rows: usize,
) -> Result<Vec<Tensor>, RunError> {
    let mut per_row: Vec<Vec<Tensor>> = Vec::with_capacity(rows);
    for r in 0..rows {
        let row: Vec<Option<Tensor>> = args
            .iter()
            .map(|t| t.map(|t| rows::row(t, r)).transpose())
            .collect::<Result<_, _>>()?;
        let refs: Vec<Option<&Tensor>> = row.iter().map(Option::as_ref).collect();
        per_row.push(runner.run_model(stage.model, &refs)?);
    }
    let outputs = per_row.first().map_or(0, Vec::len);
    Ok((0..outputs)
        .map(|k| rows::stack(&per_row.iter().map(|r| r[k].clone()).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()?)
}

fn check_rows(outputs: &[Tensor], rows: usize) -> Result<(), String> {
    for o in outputs {
        if rows::count(o) != rows || o.shape().is_empty() {
            return Err(format!(
                "the model output has shape {:?}, but the batch holds {rows} rows",
                o.shape()
            ));
        }
    }
    Ok(())
}
