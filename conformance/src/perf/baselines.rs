//! ONNX Runtime's own run time for a model, in this process, through the
//! same runner the reference server uses (inputs borrowed, no copies).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reference_server::backends::onnxruntime::OnnxRuntime;
use reference_server::engine::Backends;
use reference_server::engine::replica::{Replica, ReplicaSpec, Runner};
use reference_server::runtime::Runtime;
use reference_server::runtime::device::{Device, family_of};
use serving_proto::Tensor;

/// Latencies of `iterations` runs of the demo `add` model (after
/// `warmup` runs), sorted.
pub fn ort_add(warmup: usize, iterations: usize) -> Result<Vec<Duration>, String> {
    let family = family_of(&[Device::Cpu]).map_err(|e| e.to_string())?;
    let runtime = Runtime::global(None, family).map_err(|e| e.to_string())?;
    let spec = reference_server::demo::spec();
    let models = vec![
        Arc::new(reference_server::demo::add_model()),
        Arc::new(reference_server::demo::add_cast_model()),
    ];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = Arc::new(serving_proto::gather::Budget::unlimited());
    let spec = ReplicaSpec {
        servable: "add",
        version: 1,
        spec: &spec,
        models: &models,
        index: 0,
        threads,
        cpu_fallback: false,
        memory: &memory,
    };
    let backends = Backends::new().with(Arc::new(OnnxRuntime::new(runtime)));
    let (mut replica, infos) =
        Replica::load(&backends, spec, Device::Cpu).map_err(|e| e.to_string())?;
    let mut runner = Runner::new(&infos, &mut replica);
    let x = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4");
    let mut lat = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        runner
            .run_model(0, &[Some(&x), Some(&x)])
            .map_err(|e| e.to_string())?;
        if i >= warmup {
            lat.push(t0.elapsed());
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

pub use super::load::quantile;
