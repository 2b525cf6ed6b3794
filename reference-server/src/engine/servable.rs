//! A servable version ready to serve: its models' metadata, its compiled
//! methods, and the scheduler that runs jobs on its replicas.

use std::sync::Arc;

use serving_proto::gather::Budget;

use super::backend::{Backends, LoadError};
use super::cache::ResponseCache;
use super::config::ServableSpec;
use super::ensemble::{Ensemble, EnsembleSpec};
use super::error::EngineError;
use super::method::{MethodInfo, MethodPlan};
use super::model::ModelInfo;
use super::registry::Registry;
use super::replica::{Replica, ReplicaSpec};
use super::scheduler::{JobRequest, JobResult, Scheduler, StartSpec};
use crate::runtime::device::Device;

/// How to load a servable version.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Devices when the servable names none.
    pub default_devices: Vec<Device>,
    /// Run a replica on the CPU when its device cannot be used.
    pub cpu_fallback: bool,
    /// The most requests queued or running per servable version.
    pub queue_limit: usize,
    /// The longest last run of a method for which a lone request to an
    /// idle CPU replica runs on its caller's thread; zero: never.
    pub inline_max: std::time::Duration,
    /// Whether tests may make replicas fail on purpose.
    pub fault_injection: bool,
    /// The server's response cache, for servables that enable it.
    pub cache: Option<Arc<ResponseCache>>,
    /// The memory the server gives requests (`--max-incoming-mb`): what a
    /// run holds beyond its jobs' own inputs (a batch's joined rows, a
    /// backend's buffers grown for it) is charged to it before it is
    /// allocated.
    pub memory: Arc<Budget>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            default_devices: vec![Device::Cpu],
            cpu_fallback: false,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            inline_max: super::scheduler::DEFAULT_INLINE_MAX,
            fault_injection: false,
            cache: None,
            memory: Arc::new(Budget::unlimited()),
        }
    }
}

/// The default limit of requests queued or running per servable version.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;

/// A servable version ready to serve.
pub struct ServableVersion {
    /// Servable name.
    pub name: String,
    /// Version number (>= 1).
    pub version: u64,
    /// What it is.
    pub spec: ServableSpec,
    /// Models, in the servable's order.
    pub models: Vec<ModelInfo>,
    /// What the repository loaded this version from, for the front ends
    /// (a model configuration, say); the engine never reads it.
    pub attachment: Option<Arc<dyn std::any::Any + Send + Sync>>,
    methods: Vec<MethodInfo>,
    devices: Vec<Device>,
    scheduler: Scheduler,
    /// For an ensemble: its steps, which run other servables (its
    /// scheduler then has no replicas, and keeps its counters).
    ensemble: Option<Ensemble>,
    /// The response cache, when the servable enables it and the server has
    /// one.
    cache: Option<Arc<ResponseCache>>,
}

impl std::fmt::Debug for ServableVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServableVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("devices", &self.devices)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl ServableVersion {
    /// Loads every model of `spec` on every device, compiles the methods
    /// against the models, and starts one worker per replica. `models`
    /// holds each model's bytes in the order of `spec.models`.
    pub fn load(
        backends: &Arc<Backends>,
        name: &str,
        version: u64,
        spec: ServableSpec,
        models: Vec<Vec<u8>>,
        options: &LoadOptions,
    ) -> Result<ServableVersion, LoadError> {
        let fail = |reason: String| LoadError::Servable {
            servable: format!("{name}/{version}"),
            reason,
        };
        spec.deployment.queue.check().map_err(fail)?;
        let mut devices = spec.deployment.devices.clone();
        if devices.is_empty() {
            devices = options.default_devices.clone();
        }
        if devices.is_empty() {
            devices.push(Device::Cpu);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = spec
            .deployment
            .intra_op_threads
            .unwrap_or_else(|| (cores / devices.len()).max(1));
        let model_bytes: Vec<Arc<Vec<u8>>> = models.into_iter().map(Arc::new).collect();
        let mut replicas = Vec::with_capacity(devices.len());
        let mut infos = Vec::new();
        for (index, &device) in devices.iter().enumerate() {
            let replica_spec = ReplicaSpec {
                servable: name,
                version,
                spec: &spec,
                models: &model_bytes,
                index,
                threads,
                cpu_fallback: options.cpu_fallback,
                memory: &options.memory,
            };
            let (replica, models) = Replica::load(backends, replica_spec, device)?;
            tracing::info!(servable = name, version, %device, threads, "replica loaded");
            infos = models;
            replicas.push(replica);
        }
        let plans = spec
            .methods
            .iter()
            .map(|m| MethodPlan::compile(m, &infos, &spec.deployment.batching))
            .collect::<Result<Vec<_>, String>>()
            .map_err(fail)?;
        let methods = plans.iter().map(|p| p.info.clone()).collect();
        let cache = options
            .cache
            .clone()
            .filter(|_| spec.deployment.response_cache);
        if spec.deployment.response_cache && cache.is_none() {
            tracing::warn!(
                servable = name,
                version,
                "response_cache is enabled, and the server has no cache (--cache-config local,size=BYTES): answers are not kept"
            );
        }
        let scheduler = Scheduler::start(StartSpec {
            backends: backends.clone(),
            name: name.to_owned(),
            version,
            spec: spec.clone(),
            model_bytes,
            models: infos.clone(),
            methods: plans,
            replicas,
            threads,
            cpu_fallback: options.cpu_fallback,
            queue_limit: spec.deployment.queue.limit.unwrap_or(options.queue_limit),
            inline_max: options.inline_max,
            fault_injection: options.fault_injection,
            memory: options.memory.clone(),
        })
        .map_err(|e| fail(e.to_string()))?;
        Ok(ServableVersion {
            name: name.to_owned(),
            version,
            spec,
            models: infos,
            attachment: None,
            methods,
            devices,
            scheduler,
            ensemble: None,
            cache,
        })
    }

    /// An ensemble: one method, `method`, whose jobs run `steps`, each on
    /// the servable it names, looked up when it runs.
    pub fn ensemble(
        backends: &Arc<Backends>,
        name: &str,
        version: u64,
        method: MethodInfo,
        steps: EnsembleSpec,
        options: &LoadOptions,
    ) -> Result<ServableVersion, LoadError> {
        let fail = |reason: String| LoadError::Servable {
            servable: format!("{name}/{version}"),
            reason,
        };
        let inputs: Vec<String> = method.inputs.iter().map(|i| i.name.clone()).collect();
        let outputs: Vec<String> = method.outputs.iter().map(|o| o.name.clone()).collect();
        steps.check(&inputs, &outputs).map_err(fail)?;
        let spec = ServableSpec::default();
        let plan = MethodPlan::declared(method.clone());
        let scheduler = Scheduler::start(StartSpec {
            backends: backends.clone(),
            name: name.to_owned(),
            version,
            spec: spec.clone(),
            model_bytes: Vec::new(),
            models: Vec::new(),
            methods: vec![plan.clone()],
            replicas: Vec::new(),
            threads: 1,
            cpu_fallback: options.cpu_fallback,
            queue_limit: options.queue_limit,
            inline_max: options.inline_max,
            fault_injection: false,
            memory: options.memory.clone(),
        })
        .map_err(|e| fail(e.to_string()))?;
        Ok(ServableVersion {
            name: name.to_owned(),
            version,
            spec,
            models: Vec::new(),
            attachment: None,
            methods: vec![method],
            devices: Vec::new(),
            scheduler,
            ensemble: Some(Ensemble { spec: steps, plan }),
            cache: None,
        })
    }

    /// The steps, when this is an ensemble.
    pub fn ensemble_steps(&self) -> Option<&EnsembleSpec> {
        self.ensemble.as_ref().map(|e| &e.spec)
    }

    /// Runs the jobs of one request: on this version's replicas, or for an
    /// ensemble through its steps, their models looked up in `registry`
    /// (see [`Scheduler::submit`]). An ensemble's jobs are counted in its
    /// scheduler's counters.
    pub async fn submit_in(
        &self,
        registry: &Registry,
        method: &str,
        jobs: Vec<JobRequest>,
    ) -> Result<Vec<JobResult>, EngineError> {
        let Some(ensemble) = &self.ensemble else {
            return self.submit(method, jobs).await;
        };
        if self.method(method).is_none() {
            return Err(EngineError::NoMethod(method.to_owned()));
        }
        let stats = self.scheduler.counters();
        let runs = jobs.into_iter().map(|job| async move {
            let started = std::time::Instant::now();
            // A request its checks refuse is not a failed inference (as
            // Triton counts, and as the scheduler counts).
            let (job, rows) = ensemble.check(job)?;
            let result = ensemble.run(registry, job).await;
            match &result {
                Ok(_) => {
                    let took = started.elapsed();
                    stats.success.add(took);
                    stats.record_ensemble(rows, took);
                }
                Err(_) => stats.fail.add(started.elapsed()),
            }
            result
        });
        Ok(futures_util::future::join_all(runs).await)
    }

    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The methods, in the servable's order.
    pub fn methods(&self) -> &[MethodInfo] {
        &self.methods
    }

    /// The devices of the replicas.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The scheduler (queue, replicas, counters, fault hooks).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Runs the jobs of one request on `method` (see [`Scheduler::submit`]);
    /// with the response cache, jobs it holds the answer of are answered
    /// from it, and the others' answers are kept.
    pub async fn submit(
        &self,
        method: &str,
        jobs: Vec<JobRequest>,
    ) -> Result<Vec<JobResult>, EngineError> {
        let Some(cache) = &self.cache else {
            return self.scheduler.submit(method, jobs).await;
        };
        let stats = self.scheduler.counters();
        let mut answers: Vec<Option<JobResult>> = Vec::with_capacity(jobs.len());
        let mut misses = Vec::new();
        let mut missed = Vec::new();
        for (k, job) in jobs.into_iter().enumerate() {
            let started = std::time::Instant::now();
            let key = cache.key(
                &self.name,
                self.version,
                method,
                &job.inputs,
                job.info.as_deref(),
            );
            if let Some(outputs) = cache.get(&key) {
                let took = started.elapsed();
                stats.cache_hit.add(took);
                stats.success.add(took);
                answers.push(Some(Ok(outputs)));
            } else {
                answers.push(None);
                missed.push((k, key, started.elapsed()));
                misses.push(job);
            }
        }
        if !misses.is_empty() {
            let results = self.scheduler.submit(method, misses).await?;
            for ((k, key, lookup), result) in missed.into_iter().zip(results) {
                if let Ok(outputs) = &result {
                    let started = std::time::Instant::now();
                    cache.insert(key, outputs);
                    stats.cache_miss.add(lookup + started.elapsed());
                }
                answers[k] = Some(result);
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(EngineError::Unavailable)))
            .collect())
    }
}
