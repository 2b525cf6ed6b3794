//! Triton's `statistics` extension: per model version, the engine's own
//! counters (successes and failures with their durations, time queued and
//! in each part of a run, runs per batch size).
//!
//! Statistics belong to a servable version: every method of a servable
//! (models `{servable}` and `{servable}.{method}`) shares its counters.

use std::sync::Arc;

use serving_proto::pb::inference::{
    InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration,
};
use serving_proto::text::quote;

use super::State;
use super::oip::resolve;
use crate::engine::ServableVersion;
use crate::engine::stats::{Stats, Timed};
use crate::error::ServeError;

fn duration(t: &Timed) -> Option<StatisticDuration> {
    let (count, ns) = t.get();
    Some(StatisticDuration { count, ns })
}

fn of(name: &str, sv: &ServableVersion) -> ModelStatistics {
    use std::sync::atomic::Ordering::Relaxed;
    let s: &Stats = sv.scheduler().counters();
    ModelStatistics {
        name: name.to_owned(),
        version: sv.version.to_string(),
        last_inference: s.last_inference_ms.load(Relaxed),
        inference_count: s.inference_count.load(Relaxed),
        execution_count: s.execution_count.load(Relaxed),
        inference_stats: Some(InferStatistics {
            success: duration(&s.success),
            fail: duration(&s.fail),
            queue: duration(&s.queue),
            compute_input: duration(&s.compute_input),
            compute_infer: duration(&s.compute_infer),
            compute_output: duration(&s.compute_output),
            cache_hit: duration(&s.cache_hit),
            cache_miss: duration(&s.cache_miss),
        }),
        batch_stats: s
            .by_batch_size()
            .into_iter()
            .map(|(size, c)| InferBatchStatistics {
                batch_size: size as u64,
                compute_input: Some(StatisticDuration {
                    count: c.count,
                    ns: c.compute_input_ns,
                }),
                compute_infer: Some(StatisticDuration {
                    count: c.count,
                    ns: c.compute_infer_ns,
                }),
                compute_output: Some(StatisticDuration {
                    count: c.count,
                    ns: c.compute_output_ns,
                }),
            })
            .collect(),
        ..Default::default()
    }
}

/// The statistics of model `name` at `version`: every loaded version when
/// `version` is empty, every model when `name` is too.
pub(crate) fn statistics(
    state: &State,
    name: &str,
    version: &str,
) -> Result<Vec<ModelStatistics>, ServeError> {
    if name.is_empty() {
        if !version.is_empty() {
            return Err(ServeError::InvalidArgument(format!(
                "version '{}' is given without a model name; give both, or neither for every model",
                quote(version)
            )));
        }
        return Ok(state
            .registry
            .all()
            .iter()
            .map(|sv| of(&sv.name, sv))
            .collect());
    }
    let model = resolve(state, name, version)?;
    let versions: Vec<Arc<ServableVersion>> = if version.is_empty() {
        state
            .registry
            .versions(&model.servable.name)
            .into_iter()
            .filter_map(|v| state.registry.get(&model.servable.name, v).ok())
            .collect()
    } else {
        vec![model.servable]
    };
    Ok(versions.iter().map(|sv| of(name, sv)).collect())
}
