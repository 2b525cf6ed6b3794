//! The engine runs any backend through its one interface: an in-process
//! backend that doubles FP32 rows (no ONNX Runtime) is batched, answered
//! per job and counted as an ONNX model is, and an instance that reports
//! itself lost is restarted while its jobs are run again; a batch's joined
//! rows are charged to the server's memory while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reference_server::engine::backend::{
    Backend, Backends, Batch, IoTimes, LoadError, ModelInstance, ModelIo, ModelLoad, RunError,
};
use reference_server::engine::config::{
    Batching, Deployment, MethodSpec, ModelSpec, ServableSpec, StageSpec,
};
use reference_server::engine::model::TensorSpec;
use reference_server::engine::{JobRequest, LoadOptions, ServableVersion};
use reference_server::runtime::device::Device;
use serving_proto::gather::Budget;
use serving_proto::{DataType, NamedTensors, Tensor};

/// `y = 2x` over rows of 2 FP32; a row starting with -1 makes the instance
/// report itself lost (once per load: `loads` counts them).
#[derive(Debug, Default)]
struct Double {
    loads: AtomicUsize,
    batches: Arc<std::sync::Mutex<Vec<Vec<usize>>>>,
    /// The server memory held during each run, in run order.
    held: Arc<std::sync::Mutex<Vec<u64>>>,
}

#[derive(Debug)]
struct DoubleInstance {
    batches: Arc<std::sync::Mutex<Vec<Vec<usize>>>>,
    held: Arc<std::sync::Mutex<Vec<u64>>>,
    memory: Arc<Budget>,
}

impl Backend for Double {
    fn name(&self) -> &'static str {
        "double"
    }

    fn load(
        &self,
        load: &ModelLoad<'_>,
        _: Device,
    ) -> Result<(Box<dyn ModelInstance>, ModelIo), LoadError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            dtype: DataType::Fp32,
            shape: vec![-1, 2],
            untyped: false,
        };
        Ok((
            Box::new(DoubleInstance {
                batches: self.batches.clone(),
                held: self.held.clone(),
                memory: load.memory.clone(),
            }),
            ModelIo {
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
                ..ModelIo::default()
            },
        ))
    }
}

impl ModelInstance for DoubleInstance {
    fn run(&mut self, batch: &Batch<'_>, _: &mut IoTimes) -> Result<Vec<Tensor>, RunError> {
        let x = batch.inputs[0].expect("x");
        let values = x
            .to_vec::<f32>()
            .map_err(|e| RunError::Failed(e.to_string()))?;
        if values.first() == Some(&-1.0) {
            return Err(RunError::Lost("the instance went away".into()));
        }
        self.batches.lock().unwrap().push(batch.jobs.to_vec());
        self.held.lock().unwrap().push(self.memory.held());
        let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        Ok(vec![Tensor::from_vec(x.shape(), doubled).unwrap()])
    }
}

fn spec() -> ServableSpec {
    let mut model = ModelSpec::onnx("m", "(in process)", true);
    model.backend = "double".into();
    ServableSpec {
        models: vec![model],
        methods: vec![MethodSpec {
            name: "predict".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            stages: vec![StageSpec {
                model: "m".into(),
                inputs: vec!["x".into()],
                outputs: vec!["y".into()],
            }],
            ..MethodSpec::default()
        }],
        deployment: Deployment {
            devices: vec![Device::Cpu],
            batching: Batching {
                join: true,
                max_batch_size: Some(8),
                preferred_batch_sizes: vec![],
                max_delay: Duration::from_millis(50),
            },
            ..Default::default()
        },
    }
}

fn job(rows: usize, seed: f32) -> JobRequest {
    let values: Vec<f32> = (0..rows * 2).map(|i| seed + i as f32).collect();
    JobRequest {
        inputs: NamedTensors::from([(
            "x".to_string(),
            Tensor::from_vec(&[rows as i64, 2], values).unwrap(),
        )]),
        ..JobRequest::default()
    }
}

/// Submits jobs of 1, 2 and 3 rows at once, within the batching delay,
/// and checks that each gets its own rows doubled.
async fn three_jobs(sv: &Arc<ServableVersion>) {
    let jobs = [(1, 0.0), (2, 10.0), (3, 20.0)];
    let runs: Vec<_> = jobs
        .into_iter()
        .map(|(rows, seed)| {
            let sv = sv.clone();
            tokio::spawn(async move { sv.submit("predict", vec![job(rows, seed)]).await })
        })
        .collect();
    for ((rows, seed), run) in jobs.into_iter().zip(runs) {
        let out = run.await.unwrap().unwrap().remove(0).unwrap();
        let want: Vec<f32> = (0..rows * 2).map(|i| 2.0 * (seed + i as f32)).collect();
        assert_eq!(out["y"].to_vec::<f32>().unwrap(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_process_backend_is_batched_answered_per_job_and_restarted_when_lost() {
    let double = Arc::new(Double::default());
    let backends = Arc::new(Backends::new().with(double.clone()));
    let options = LoadOptions {
        inline_max: Duration::ZERO,
        ..LoadOptions::default()
    };
    let sv = Arc::new(
        ServableVersion::load(&backends, "doubler", 1, spec(), vec![vec![]], &options).unwrap(),
    );
    // Three jobs at once (1, 2 and 3 rows) within the batching delay: one
    // run, the backend told each job's rows, each job its own rows back.
    three_jobs(&sv).await;
    let batches = double.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().flatten().sum::<usize>(), 6, "{batches:?}");
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "no batch joined jobs: {batches:?}"
    );
    assert_eq!(sv.scheduler().counters().success.get().0, 3);

    // A lost instance: the replica is restarted (a second load) and the
    // job, run again alone, is answered with the replicas' failure.
    assert_eq!(double.loads.load(Ordering::SeqCst), 1);
    let lost = sv.submit("predict", vec![job(1, -1.0)]).await.unwrap();
    assert!(lost[0].is_err(), "{lost:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while double.loads.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted instance serves.
    let again = sv.submit("predict", vec![job(1, 1.0)]).await.unwrap();
    assert_eq!(
        again[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![2.0, 4.0]
    );
}

/// Jobs of 1, 2 and 3 rows (8, 16 and 24 bytes) submitted at once, with
/// the server's memory for requests `budget` bytes: the (jobs, memory
/// held) of each run.
async fn three_jobs_with_memory(budget: u64) -> Vec<(Vec<usize>, u64)> {
    let double = Arc::new(Double::default());
    let backends = Arc::new(Backends::new().with(double.clone()));
    let memory = Arc::new(Budget::new(budget));
    let options = LoadOptions {
        inline_max: Duration::ZERO,
        memory: memory.clone(),
        ..LoadOptions::default()
    };
    let sv = Arc::new(
        ServableVersion::load(&backends, "doubler", 1, spec(), vec![vec![]], &options).unwrap(),
    );
    three_jobs(&sv).await;
    assert_eq!(memory.held(), 0, "every charge is given back");
    let batches = double.batches.lock().unwrap().clone();
    let held = double.held.lock().unwrap().clone();
    batches.into_iter().zip(held).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_s_joined_rows_are_charged_while_it_runs_and_run_alone_without_room() {
    // Room: the jobs that ran together held their rows joined (8 bytes a
    // row) during the run; a job alone is not copied and holds nothing.
    let runs = three_jobs_with_memory(1 << 20).await;
    assert!(runs.iter().any(|(jobs, _)| jobs.len() > 1), "{runs:?}");
    for (jobs, held) in &runs {
        let rows: usize = jobs.iter().sum();
        let want = if jobs.len() > 1 { rows as u64 * 8 } else { 0 };
        assert_eq!(*held, want, "{runs:?}");
    }
    // No room for the join (48 bytes): the batch's jobs run alone, each
    // answered, none of them refused.
    let runs = three_jobs_with_memory(40).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter()
            .all(|(jobs, held)| jobs.len() == 1 && *held == 0),
        "{runs:?}"
    );
}
