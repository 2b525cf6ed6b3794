//! Running one batch on a replica: its jobs' rows joined (charged to the
//! server's memory), the method's stages, the outputs split back per job;
//! a sequence model's batch with its control inputs and states.

use super::*;

/// One job's outputs from a run, or why the model failed on it.
pub(super) type Outputs = Result<Vec<Tensor>, EngineError>;

/// What a failed run of `jobs` means for them (a lost instance is the
/// replica's failure, not theirs).
pub(super) fn job_error(e: RunError, jobs: &[Job]) -> EngineError {
    match e {
        RunError::Memory(x) => EngineError::Memory {
            wanted: x.wanted,
            held: x.held,
            limit: x.limit,
            own: jobs
                .iter()
                .flat_map(|j| j.inputs.iter().flatten())
                .map(|t| t.payload_len() as u64)
                .sum(),
        },
        RunError::Failed(e) | RunError::Lost(e) => EngineError::Runtime(e),
    }
}

/// Charges the copy joining a batch's rows makes of its jobs' inputs
/// (raw bytes; a handle per element of BYTES): before it is made, for as
/// long as the run holds it. `None` for a batch of one job, whose inputs
/// go through unjoined.
pub(super) fn charge_join(ctx: &Context, batch: &[Job]) -> Result<Option<Charge>, RunError> {
    if batch.len() < 2 {
        return Ok(None);
    }
    let bytes: u64 = batch
        .iter()
        .flat_map(|j| j.inputs.iter().flatten())
        .map(joined_size)
        .sum();
    ctx.memory.charge(bytes).map(Some).map_err(RunError::Memory)
}

/// What joining `t` into a batch copies: its raw bytes, or a handle per
/// BYTES element.
fn joined_size(t: &Tensor) -> u64 {
    match t.data() {
        TensorData::Raw(r) => r.len() as u64,
        TensorData::Elements(e) => (e.len() * std::mem::size_of::<bytes::Bytes>()) as u64,
    }
}

/// What a run gives: each job's outputs, each job's sequence state after
/// it (a sequence model's, where it ran), and the times.
pub(super) type Ran = (Vec<Outputs>, Vec<Option<Vec<Tensor>>>, RunTimes);

/// Runs one batch: its jobs' rows joined, the method's stages, the outputs
/// split back per job. `Err` when the joined run failed (its jobs are then
/// retried alone); the jobs of a method without a batch dimension run one
/// after another, each with its own result. Blocking.
pub(super) fn run(
    shared: &Shared,
    ctx: &Context,
    replica: &mut Replica,
    batch: &[Job],
) -> Result<Ran, RunError> {
    if let Some(spec) = &shared.sequence {
        return run_sequences(shared, ctx, replica, batch, spec);
    }
    let plan = &shared.methods[batch[0].method];
    let mut runner = Runner::new(&ctx.models, replica);
    runner.deadline = batch.iter().filter_map(|j| j.deadline).min();
    // Making the runtime's values from the tensors is input time, taking
    // the outputs from its values output time (Triton's compute_input and
    // compute_output); the rest of a model's run is infer time.
    let split = |runner: &Runner<'_>, total: Duration| {
        (
            runner.input_time,
            total.saturating_sub(runner.input_time + runner.output_time),
            runner.output_time,
        )
    };
    if !plan.info.batched {
        let t0 = Instant::now();
        let mut each = Vec::with_capacity(batch.len());
        for job in batch {
            runner.deadline = job.deadline;
            runner.infos = vec![job.info.clone()];
            runner.partials = vec![job.partials.clone()];
            each.push(match plan.run(&mut runner, job.inputs.clone(), 1) {
                Ok(out) => Ok(out),
                Err(RunError::Lost(why)) => return Err(RunError::Lost(why)),
                Err(e) => Err(job_error(e, std::slice::from_ref(job))),
            });
        }
        let (input, infer, output) = split(&runner, t0.elapsed());
        let times = RunTimes {
            input,
            infer,
            output,
        };
        let states = vec![None; each.len()];
        return Ok((each, states, times));
    }
    let t0 = Instant::now();
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let _joined = charge_join(ctx, batch)?;
    // Jobs of one batch have the same inputs present (their signatures).
    let inputs = (0..plan.info.inputs.len())
        .map(|k| {
            let parts: Vec<&Tensor> = batch.iter().filter_map(|j| j.inputs[k].as_ref()).collect();
            (!parts.is_empty()).then(|| rows::join(&parts)).transpose()
        })
        .collect::<Result<Vec<Option<Tensor>>, String>>()?;
    let t1 = Instant::now();
    runner.jobs = batch.iter().map(|j| j.rows).collect();
    runner.infos = batch.iter().map(|j| j.info.clone()).collect();
    runner.partials = batch.iter().map(|j| j.partials.clone()).collect();
    let outputs = plan.run(&mut runner, inputs, rows)?;
    let t2 = Instant::now();
    let (model_input, model_infer, model_output) = split(&runner, t2 - t1);
    let per_job = if batch.len() == 1 {
        vec![Ok(outputs)]
    } else {
        let mut start = 0;
        batch
            .iter()
            .map(|job| {
                let range = start..start + job.rows;
                start = range.end;
                outputs
                    .iter()
                    .map(|o| rows::slice(o, range.start, range.end))
                    .collect::<Result<Vec<Tensor>, String>>()
                    .map(Ok)
            })
            .collect::<Result<Vec<_>, String>>()?
    };
    let times = RunTimes {
        input: (t1 - t0) + model_input,
        infer: model_infer,
        output: t2.elapsed() + model_output,
    };
    let states = vec![None; per_job.len()];
    Ok((per_job, states, times))
}

/// Runs one batch of a sequence model: each job with its sequence's
/// control inputs and state. Under `Direct` each job's row is its slot,
/// rows without a job filled with zeros marked not ready; under `Oldest`
/// the jobs' rows in order. A model without a batch dimension runs each
/// job alone. Blocking.
pub(super) fn run_sequences(
    shared: &Shared,
    ctx: &Context,
    replica: &mut Replica,
    batch: &[Job],
    spec: &SequenceSpec,
) -> Result<Ran, RunError> {
    let plan = &shared.methods[batch[0].method];
    let batched = plan.info.batched;
    fn flags(job: &Job) -> Option<&SequenceFlags> {
        job.sequence.as_ref().map(|s| &s.flags)
    }
    let keep: Vec<String> = spec.states.iter().map(|s| s.output.clone()).collect();
    let states: Vec<Vec<Tensor>> = {
        let q = lock(&shared.queue);
        batch
            .iter()
            .map(|j| {
                j.sequence
                    .as_ref()
                    .zip(q.sequences.as_ref())
                    .and_then(|(sj, seqs)| seqs.state(sj.serial, sj.flags.start))
                    .unwrap_or_else(|| spec.initial_states(batched))
            })
            .collect()
    };
    let with_states = |extra: &mut Vec<(String, Tensor)>, state: Vec<Tensor>| {
        extra.extend(spec.states.iter().map(|s| s.input.clone()).zip(state));
    };
    let mut runner = Runner::new(&ctx.models, replica);
    let t0 = Instant::now();
    let split = |runner: &Runner<'_>, total: Duration| RunTimes {
        input: runner.input_time,
        infer: total.saturating_sub(runner.input_time + runner.output_time),
        output: runner.output_time,
    };
    if !batched {
        let mut each = Vec::with_capacity(batch.len());
        let mut after = Vec::with_capacity(batch.len());
        for (job, state) in batch.iter().zip(states) {
            runner.deadline = job.deadline;
            runner.infos = vec![job.info.clone()];
            runner.partials = vec![job.partials.clone()];
            let mut extra = spec.control_row(flags(job), false);
            with_states(&mut extra, state);
            match plan.run_with(&mut runner, job.inputs.clone(), 1, extra, &keep) {
                Ok((out, kept)) => {
                    each.push(Ok(out));
                    after.push(Some(kept));
                }
                Err(RunError::Lost(why)) => return Err(RunError::Lost(why)),
                Err(e) => {
                    each.push(Err(job_error(e, std::slice::from_ref(job))));
                    after.push(None);
                }
            }
        }
        let times = split(&runner, t0.elapsed());
        return Ok((each, after, times));
    }
    let direct = matches!(spec.strategy, Strategy::Direct { .. });
    // The job of each row (`None`: a filler row).
    let rows_n = if direct {
        batch
            .iter()
            .filter_map(|j| j.sequence.as_ref().map(|s| s.position + 1))
            .max()
            .unwrap_or(1)
    } else {
        batch.len()
    };
    let mut at: Vec<Option<usize>> = vec![None; rows_n];
    for (k, job) in batch.iter().enumerate() {
        let row = match (&job.sequence, direct) {
            (Some(sj), true) => sj.position,
            _ => k,
        };
        at[row] = Some(k);
    }
    fn join_rows<'a>(
        at: &[Option<usize>],
        row_of: impl Fn(usize) -> Option<&'a Tensor>,
        filler: &'a Tensor,
    ) -> Result<Tensor, String> {
        let parts: Vec<&Tensor> = at
            .iter()
            .map(|a| a.and_then(&row_of).unwrap_or(filler))
            .collect();
        rows::join(&parts)
    }
    // Every row of the joined batch, the fillers of a direct batch's empty
    // slots included, is one request's row of inputs and states: charged
    // before the join, unless one row goes through unjoined.
    let row: u64 = batch[0]
        .inputs
        .iter()
        .flatten()
        .map(joined_size)
        .sum::<u64>()
        + states
            .first()
            .map_or(0, |s| s.iter().map(joined_size).sum());
    let _joined = (rows_n > 1)
        .then(|| ctx.memory.charge(row.saturating_mul(rows_n as u64)))
        .transpose()
        .map_err(RunError::Memory)?;
    let mut inputs = Vec::with_capacity(plan.info.inputs.len());
    for i in 0..plan.info.inputs.len() {
        // Jobs of one batch have the same inputs present (their signatures).
        let Some(first) = batch[0].inputs[i].as_ref() else {
            inputs.push(None);
            continue;
        };
        let filler = super::super::sequence::zeros(first.dtype(), first.shape());
        inputs.push(Some(join_rows(
            &at,
            |k| batch[k].inputs[i].as_ref(),
            &filler,
        )?));
    }
    let controls: Vec<Vec<(String, Tensor)>> = at
        .iter()
        .map(|a| spec.control_row(a.and_then(|k| flags(&batch[k])), true))
        .collect();
    let mut extra: Vec<(String, Tensor)> = Vec::new();
    for (c, control) in spec.controls.iter().enumerate() {
        let parts: Vec<&Tensor> = controls.iter().map(|row| &row[c].1).collect();
        extra.push((control.input.clone(), rows::join(&parts)?));
    }
    let initial = spec.initial_states(true);
    for (s, state) in spec.states.iter().enumerate() {
        extra.push((
            state.input.clone(),
            join_rows(&at, |k| states.get(k).and_then(|v| v.get(s)), &initial[s])?,
        ));
    }
    runner.deadline = batch.iter().filter_map(|j| j.deadline).min();
    runner.jobs = vec![1; rows_n];
    runner.infos = at
        .iter()
        .map(|a| a.and_then(|k| batch[k].info.clone()))
        .collect();
    runner.partials = at
        .iter()
        .map(|a| a.and_then(|k| batch[k].partials.clone()))
        .collect();
    let t1 = Instant::now();
    let (outputs, kept) = plan.run_with(&mut runner, inputs, rows_n, extra, &keep)?;
    let mut each = Vec::with_capacity(batch.len());
    let mut after = Vec::with_capacity(batch.len());
    for k in 0..batch.len() {
        let row = at
            .iter()
            .position(|a| *a == Some(k))
            .expect("every job has a row");
        let slice = |ts: &[Tensor]| {
            ts.iter()
                .map(|t| rows::slice(t, row, row + 1))
                .collect::<Result<Vec<Tensor>, String>>()
        };
        each.push(Ok(slice(&outputs)?));
        after.push(Some(slice(&kept)?));
    }
    let mut times = split(&runner, t1.elapsed());
    times.input += t1 - t0;
    Ok((each, after, times))
}
