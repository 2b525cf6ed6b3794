//! Triton's model warm-up (`model_warmup` in config.pbtxt): samples run
//! against a version after it loads and before it serves, so that the
//! first clients do not pay its start-up cost (ONNX Runtime's first runs,
//! a GPU's kernels, a Python model's imports). A sample that fails fails
//! the load, naming the sample.
//!
//! Each sample gives every input its type, its shape (without the batch
//! dimension of a batching model: `batch_size` rows are sent) and its data:
//! zeros, random values, or a file of `warmup/` in the model directory
//! (raw little-endian elements; for `TYPE_STRING` each element a 4-byte
//! length then its bytes), repeated for each row. It runs `count` times
//! (0: once).

use std::path::Path;

use serving_proto::model_config::{self, ModelConfig, TritonType};
use serving_proto::pb::inference::ModelWarmup;
use serving_proto::pb::inference::model_warmup::input::InputDataType;
use serving_proto::{DataType, NamedTensors, Tensor};

use crate::engine::{JobRequest, ServableVersion};

/// The most bytes one warm-up input may take (its file, or what its shape
/// asks for).
pub(crate) const MAX_WARMUP_INPUT_BYTES: u64 = 256 << 20;

/// One sample, ready to run.
#[derive(Debug)]
pub(crate) struct Sample {
    name: String,
    /// The method it runs (`None`: the version's default).
    method: Option<String>,
    count: u32,
    inputs: NamedTensors,
}

/// The samples of a configuration, built; `model_dir` holds `warmup/`.
pub(crate) fn samples(config: &ModelConfig, model_dir: &Path) -> Result<Vec<Sample>, String> {
    let entries: Vec<(Option<String>, &ModelWarmup)> =
        config.model_warmup.iter().map(|w| (None, w)).collect();
    build(&entries, config.max_batch_size, model_dir)
}

/// Samples of `entries` (each with the method it runs) for methods taking
/// up to `max_batch_size` rows (0: no batch dimension).
pub(crate) fn build(
    entries: &[(Option<String>, &ModelWarmup)],
    max_batch_size: i32,
    model_dir: &Path,
) -> Result<Vec<Sample>, String> {
    let config = ModelConfig {
        max_batch_size,
        ..Default::default()
    };
    let batching = config.max_batch_size > 0;
    let mut out = Vec::with_capacity(entries.len());
    for (k, (method, w)) in entries.iter().enumerate() {
        let name = if w.name.is_empty() {
            format!("#{}", k + 1)
        } else {
            w.name.clone()
        };
        let fail = |why: String| format!("model_warmup sample '{name}': {why}");
        let rows = match (batching, w.batch_size) {
            (true, 0) => return Err(fail("batch_size must be at least 1".into())),
            (true, n) if n > config.max_batch_size as u32 => {
                return Err(fail(format!(
                    "batch_size {n} is more than max_batch_size {}",
                    config.max_batch_size
                )));
            }
            (true, n) => Some(n as i64),
            (false, 0 | 1) => None,
            (false, n) => {
                return Err(fail(format!(
                    "batch_size {n}: a model without batching (max_batch_size 0) takes 1"
                )));
            }
        };
        let mut inputs = NamedTensors::new();
        // In name order, so that random data is the same from run to run.
        let mut names: Vec<&String> = w.inputs.keys().collect();
        names.sort();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ k as u64;
        for input in names {
            let spec = &w.inputs[input];
            let dtype = TritonType::try_from(spec.data_type)
                .ok()
                .and_then(model_config::data_type)
                .ok_or_else(|| fail(format!("input '{input}' has no data_type")))?;
            if spec.dims.iter().any(|&d| d < 0) {
                return Err(fail(format!(
                    "input '{input}' has dims {:?}: a sample's dimensions are fixed",
                    spec.dims
                )));
            }
            let per_row = serving_proto::tensor::element_count(&spec.dims)
                .ok_or_else(|| fail(format!("input '{input}' has too many elements")))?;
            let mut shape = spec.dims.clone();
            if let Some(r) = rows {
                shape.insert(0, r);
            }
            let total = per_row * rows.unwrap_or(1) as usize;
            let bound = dtype.item_size().unwrap_or(1) as u64 * total as u64;
            if bound > MAX_WARMUP_INPUT_BYTES {
                return Err(fail(format!(
                    "input '{input}' would take {bound} bytes, more than {MAX_WARMUP_INPUT_BYTES}"
                )));
            }
            let tensor = match &spec.input_data_type {
                Some(InputDataType::InputDataFile(file)) => {
                    let one = read_file(model_dir, file, dtype, per_row).map_err(&fail)?;
                    repeat(&one, rows.unwrap_or(1) as usize, dtype, &shape)
                }
                Some(InputDataType::RandomData(_)) if !dtype.is_variable() => {
                    random(dtype, &shape, total, &mut seed)
                }
                // Zeros; random text is zeros too, as in Triton.
                _ => Ok(crate::engine::sequence::zeros(dtype, &shape)),
            }
            .map_err(|e| fail(format!("input '{input}': {e}")))?;
            inputs.insert(input.clone(), tensor);
        }
        out.push(Sample {
            name,
            method: method.clone(),
            count: w.count.max(1),
            inputs,
        });
    }
    Ok(out)
}

/// Reads `warmup/FILE` of the model directory: the elements of one row.
fn read_file(
    model_dir: &Path,
    file: &str,
    dtype: DataType,
    elements: usize,
) -> Result<Vec<u8>, String> {
    if !super::is_inside_path(file) {
        return Err(format!(
            "input_data_file \"{file}\" must be a path inside the model's warmup/ directory"
        ));
    }
    let path = super::resolve_beneath(model_dir, &Path::new("warmup").join(file))
        .map_err(|_| format!("input_data_file \"{file}\" {}", super::ESCAPES))?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("warmup/{file}: {e}"))?;
    if meta.len() > MAX_WARMUP_INPUT_BYTES {
        return Err(format!(
            "warmup/{file} holds {} bytes, more than {MAX_WARMUP_INPUT_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("warmup/{file}: {e}"))?;
    if let Some(size) = dtype.item_size() {
        let want = size * elements;
        if bytes.len() != want {
            return Err(format!(
                "warmup/{file} holds {} bytes; {elements} {dtype} elements take {want}",
                bytes.len()
            ));
        }
    }
    Ok(bytes)
}

/// `one` row's bytes repeated `rows` times, as a tensor of `shape`.
fn repeat(one: &[u8], rows: usize, dtype: DataType, shape: &[i64]) -> Result<Tensor, String> {
    if dtype.item_size().is_some() {
        return Tensor::from_raw(dtype, shape.to_vec(), one.repeat(rows).into())
            .map_err(|e| e.to_string());
    }
    // Length-prefixed elements.
    let mut elements: Vec<&[u8]> = Vec::new();
    let mut rest = one;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("a string element's 4-byte length is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!(
                "a string element of {len} bytes is cut short at {}",
                tail.len()
            ));
        }
        elements.push(&tail[..len]);
        rest = &tail[len..];
    }
    let all: Vec<&[u8]> = (0..rows).flat_map(|_| elements.iter().copied()).collect();
    Tensor::from_byte_strings(shape, &all).map_err(|e| e.to_string())
}

/// Random values of `dtype` (floats in [0, 1), integers 0 to 99, random
/// booleans): never a NaN or an infinity.
fn random(dtype: DataType, shape: &[i64], n: usize, seed: &mut u64) -> Result<Tensor, String> {
    let mut next = || {
        // xorshift64*
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
    let t = match dtype {
        DataType::Fp32 => Tensor::from_vec(shape, (0..n).map(|_| unit(next()) as f32).collect()),
        DataType::Fp64 => Tensor::from_vec(shape, (0..n).map(|_| unit(next())).collect()),
        DataType::Bool => Tensor::from_vec(shape, (0..n).map(|_| next() & 1 == 1).collect()),
        DataType::Int32 => Tensor::from_vec(shape, (0..n).map(|_| (next() % 100) as i32).collect()),
        DataType::Int64 => Tensor::from_vec(shape, (0..n).map(|_| (next() % 100) as i64).collect()),
        DataType::Uint8 => Tensor::from_vec(shape, (0..n).map(|_| (next() % 100) as u8).collect()),
        // Other types: zeros.
        _ => Ok(crate::engine::sequence::zeros(dtype, shape)),
    };
    t.map_err(|e| e.to_string())
}

/// Runs the samples against `version` (each on its method, else
/// `method`), each `count` times; the first failure names its sample.
/// Blocking (called where the version loads).
pub(crate) fn run(
    version: &ServableVersion,
    method: &str,
    samples: &[Sample],
) -> Result<(), String> {
    let run_all = async {
        for s in samples {
            let method = s.method.as_deref().unwrap_or(method);
            for _ in 0..s.count {
                let job = JobRequest {
                    inputs: s.inputs.clone(),
                    ..Default::default()
                };
                let answer = version
                    .submit(method, vec![job])
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| {
                        a.pop()
                            .unwrap_or(Err(crate::engine::EngineError::Unavailable))
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = answer {
                    return Err(format!("model_warmup sample '{}' failed: {e}", s.name));
                }
            }
            tracing::info!(model = %version.name, version = version.version, sample = %s.name, count = s.count, "warm-up sample run");
        }
        Ok(())
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(run_all),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("model_warmup: cannot start a runtime: {e}"))?
            .block_on(run_all),
    }
}
