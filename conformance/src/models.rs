//! The conformance model set: the models every target must host, and the
//! repository layouts that the reference server, Triton and MLServer load.
//!
//! | model | inputs -> outputs | used by |
//! |---|---|---|
//! | `identity_<dtype>` (13 numeric types) | `x0` `[]`, `x1` `[-1]`, `x2` `[-1,-1]`, `x3` `[-1,-1,-1]` -> `y0`..`y3` | round trips, concurrency |
//! | `identity_bytes` | as above, BYTES (ONNX string) | OIP round trips |
//! | `identity_string` | `x` `[1]` STRING -> `y` | MindSpore round trips of `str` |
//! | `add` | `x1`, `x2` FP32 `[2,2]` -> `y` (methods `add_common`, `add_cast` with INT32 inputs) | errors, health, metadata |
//! | `add_batch` | `x1`, `x2` FP32 `[-1,2]` -> `y`, batch dimension | MindSpore instances |
//! | `multi_output` | `x` FP32 `[-1]` -> `double`, `negated` | requested outputs |
//! | `size_probe` | `x` UINT8 `[-1]` -> `n` INT64 `[1]` (its length) | message-size limits |
//! | `sequence_sum` | `INPUT` FP32 `[-1,1]` -> `OUTPUT`, the running sum of its sequence (Triton layouts only: `sequence_batching`) | the `sequence` extension |
//! | `ensemble_add` | `A`, `B` FP32 `[-1,2]` -> `OUT` = 2 (A + B): an ensemble running `add_batch` twice (Triton layouts only) | ensembles |
//! | `add_cached` | `add_batch` with `response_cache { enable: true }` (Triton layouts only) | the response cache |
//!
//! Every model is written by our own ONNX writer (`reference_server::onnx`,
//! feature `reference`); the set's names and signatures need no feature.

#[cfg(feature = "reference")]
use std::fmt::Write as _;
#[cfg(feature = "reference")]
use std::path::Path;

#[cfg(feature = "reference")]
use reference_server::onnx::{Dim, ModelBuilder};
use serving_proto::DataType;

/// A tensor of a model's signature; -1 marks a variable dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub dtype: DataType,
    /// Shape.
    pub shape: Vec<i64>,
}

fn spec(name: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.to_owned(),
        dtype,
        shape: shape.to_vec(),
    }
}

/// One model of the set.
#[derive(Clone, Debug)]
pub struct Model {
    /// The model (and servable) name.
    pub name: String,
    /// The MindSpore method that runs it.
    pub method: String,
    /// Inputs.
    pub inputs: Vec<TensorSpec>,
    /// Outputs.
    pub outputs: Vec<TensorSpec>,
    /// Dim 0 is a batch dimension (MindSpore `with_batch_dim`).
    pub with_batch_dim: bool,
    /// How its ONNX graph is made.
    #[cfg_attr(not(feature = "reference"), allow(dead_code))]
    graph: Graph,
}

/// A model's ONNX graph: operators over the signature's tensors, or the
/// demo's `add`.
#[derive(Clone, Debug)]
enum Graph {
    /// (operator, inputs, outputs) in order.
    #[cfg_attr(not(feature = "reference"), allow(dead_code))]
    Nodes(Vec<(&'static str, Vec<String>, Vec<String>)>),
    /// `reference_server::demo::add_model`.
    DemoAdd,
}

impl Model {
    /// The ONNX model.
    #[cfg(feature = "reference")]
    pub fn onnx(&self) -> Vec<u8> {
        let nodes = match &self.graph {
            Graph::DemoAdd => return reference_server::demo::add_model(),
            Graph::Nodes(nodes) => nodes,
        };
        let mut b = ModelBuilder::new(&self.name);
        for t in &self.inputs {
            b = b.input(&t.name, t.dtype, &dims(&t.shape, &DIM_NAMES));
        }
        for t in &self.outputs {
            b = b.output(&t.name, t.dtype, &dims(&t.shape, &DIM_NAMES));
        }
        for (op, ins, outs) in nodes {
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
            b = b.node(op, &ins, &outs, vec![]);
        }
        b.build()
    }
}

impl Model {
    /// The model as Triton can declare it: Triton has no scalar tensors in
    /// a model without a batch dimension ("cannot have empty reshape for
    /// non-batching model as scalar tensors are not supported"), so each
    /// scalar becomes `[1]`, in the ONNX graph and the configuration alike.
    /// Clients then send `[1]` (the suite reads the shape from the
    /// metadata: [`crate::call::scalar_shape`]).
    pub fn for_triton(&self) -> Model {
        let one = |specs: &[TensorSpec]| -> Vec<TensorSpec> {
            specs
                .iter()
                .map(|s| TensorSpec {
                    shape: if s.shape.is_empty() {
                        vec![1]
                    } else {
                        s.shape.clone()
                    },
                    ..s.clone()
                })
                .collect()
        };
        Model {
            inputs: one(&self.inputs),
            outputs: one(&self.outputs),
            ..self.clone()
        }
    }

    /// A model (MindSpore method `predict`, no batch dimension) whose ONNX
    /// graph declares exactly `inputs` and `outputs` (variable dimensions
    /// named by position) and runs `nodes`: (operator, inputs, outputs).
    fn graph(
        name: &str,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        nodes: &[(&'static str, &[&str], &[&str])],
    ) -> Model {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        Model {
            name: name.into(),
            method: "predict".into(),
            inputs,
            outputs,
            with_batch_dim: false,
            graph: Graph::Nodes(
                nodes
                    .iter()
                    .map(|(op, ins, outs)| (*op, owned(ins), owned(outs)))
                    .collect(),
            ),
        }
    }
}

/// The numeric types every OIP target must round-trip: every fixed-size
/// type, in declaration order.
pub const NUMERIC: [DataType; 13] = {
    let mut out = [DataType::Bool; 13];
    let mut i = 0;
    while i < 13 {
        out[i] = DataType::ALL[i];
        i += 1;
    }
    out
};

/// The identity model of a type: `identity_fp32`, `identity_bytes`.
pub fn identity_name(dtype: DataType) -> String {
    if dtype == DataType::String {
        return "identity_string".into();
    }
    let oip = dtype.oip_name().unwrap_or("BYTES");
    format!("identity_{}", oip.to_ascii_lowercase())
}

#[cfg(feature = "reference")]
fn dims(shape: &[i64], names: &'static [&'static str]) -> Vec<Dim> {
    shape
        .iter()
        .zip(names)
        .map(|(&d, n)| {
            if d < 0 {
                Dim::Dynamic(n)
            } else {
                Dim::Fixed(d)
            }
        })
        .collect()
}

#[cfg(feature = "reference")]
const DIM_NAMES: [&str; 3] = ["a", "b", "c"];

fn identity4(dtype: DataType) -> Model {
    let shapes: [&[i64]; 4] = [&[], &[-1], &[-1, -1], &[-1, -1, -1]];
    let (mut inputs, mut outputs, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
    for (k, shape) in shapes.iter().enumerate() {
        let (x, y) = (format!("x{k}"), format!("y{k}"));
        inputs.push(spec(&x, dtype, shape));
        outputs.push(spec(&y, dtype, shape));
        nodes.push(("Identity", vec![x], vec![y]));
    }
    Model {
        name: identity_name(dtype),
        method: "predict".into(),
        inputs,
        outputs,
        with_batch_dim: false,
        graph: Graph::Nodes(nodes),
    }
}

/// A feed for `identity_<type>` that carries `x1` (rank 1) and zeros of its
/// type in the other inputs (`x0` `[]`, `x2` `[1,1]`, `x3` `[1,1,1]`): the
/// way to send one tensor through an identity model, whose answer is `y1`.
pub fn identity_feed(x1: serving_proto::Tensor) -> Vec<(String, serving_proto::Tensor)> {
    identity_feed_with(x1, &[])
}

/// As [`identity_feed`], with the scalar `x0` in `scalar` (`[]`, or `[1]`
/// for a server that takes scalars in Triton's way: see
/// [`crate::call::scalar_shape`]).
pub fn identity_feed_with(
    x1: serving_proto::Tensor,
    scalar: &[i64],
) -> Vec<(String, serving_proto::Tensor)> {
    let dtype = x1.dtype();
    let zeros = |shape: Vec<i64>| {
        let n = shape.iter().product::<i64>() as usize * dtype.item_size().unwrap_or(1);
        serving_proto::Tensor::from_raw(dtype, shape, bytes::Bytes::from(vec![0u8; n]))
            .expect("zeros of a numeric type")
    };
    vec![
        ("x0".into(), zeros(scalar.to_vec())),
        ("x1".into(), x1),
        ("x2".into(), zeros(vec![1, 1])),
        ("x3".into(), zeros(vec![1, 1, 1])),
    ]
}

/// Every model of the set.
pub fn model_set() -> Vec<Model> {
    let mut set: Vec<Model> = NUMERIC.iter().map(|&d| identity4(d)).collect();
    set.push(identity4(DataType::Bytes));
    set.push(Model::graph(
        "identity_string",
        vec![spec("x", DataType::String, &[1])],
        vec![spec("y", DataType::String, &[1])],
        &[("Identity", &["x"], &["y"])],
    ));
    let square = [2, 2];
    set.push(Model {
        name: "add".into(),
        method: "add_common".into(),
        inputs: vec![
            spec("x1", DataType::Fp32, &square),
            spec("x2", DataType::Fp32, &square),
        ],
        outputs: vec![spec("y", DataType::Fp32, &square)],
        with_batch_dim: false,
        graph: Graph::DemoAdd,
    });
    set.push(Model {
        with_batch_dim: true,
        ..Model::graph(
            "add_batch",
            vec![
                spec("x1", DataType::Fp32, &[-1, 2]),
                spec("x2", DataType::Fp32, &[-1, 2]),
            ],
            vec![spec("y", DataType::Fp32, &[-1, 2])],
            &[("Add", &["x1", "x2"], &["y"])],
        )
    });
    set.push(Model::graph(
        "multi_output",
        vec![spec("x", DataType::Fp32, &[-1])],
        vec![
            spec("double", DataType::Fp32, &[-1]),
            spec("negated", DataType::Fp32, &[-1]),
        ],
        &[
            ("Add", &["x", "x"], &["double"]),
            ("Neg", &["x"], &["negated"]),
        ],
    ));
    set.push(Model::graph(
        "size_probe",
        vec![spec("x", DataType::Uint8, &[-1])],
        vec![spec("n", DataType::Int64, &[1])],
        &[("Shape", &["x"], &["n"])],
    ));
    set
}

/// A repository layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum Layout {
    /// This project's reference server: `servable.toml` and version folders.
    Reference,
    /// Triton: `config.pbtxt` and version folders, ONNX models (scalars
    /// as `[1]`, as Triton declares them).
    Triton,
    /// Triton's Python backend: the same configurations with
    /// `backend: "python"` and a `model.py` computing what each ONNX graph
    /// does, for a Triton without an ONNX Runtime backend (the one on
    /// PyPI, `nvidia-pytriton`).
    TritonPython,
    /// Seldon MLServer: `model-settings.json` and a Python runtime over
    /// the `onnxruntime` package.
    Mlserver,
}

/// The suite's sequence model: a running sum per sequence (Triton's
/// `sequence_batching`), outside [`model_set`] since only servers with
/// Triton's configuration serve it.
pub const SEQUENCE_MODEL: &str = "sequence_sum";

/// `sequence_sum` for Triton's Python backend, which hands a model its
/// control inputs but keeps no implicit state for it: the sums are kept
/// per correlation ID (`request.correlation_id()`) in the instance.
pub const SEQUENCE_PYTHON_MODEL: &str = r#"import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        out = []
        for r in requests:
            get = lambda n: pb_utils.get_input_tensor_by_name(r, n).as_numpy()
            x, start, ready = get("INPUT"), get("START"), get("READY")
            y = np.zeros((1, 1), np.float32)
            if ready[0][0]:
                # An integer or a text ID (the CORRID control carries only
                # one kind).
                key = r.correlation_id()
                if start[0][0]:
                    self.sums[key] = 0.0
                self.sums[key] = self.sums.get(key, 0.0) + float(x[0][0])
                y[0][0] = self.sums[key]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
        return out
"#;

/// The Python-backend model every `triton-python` model folder carries.
pub const TRITON_PYTHON_MODEL: &str = include_str!("../triton/model.py");

/// The MLServer runtime every model folder carries.
pub const MLSERVER_RUNTIME: &str = include_str!("../mlserver/onnx_runtime.py");

/// Options of the reference layout that only a server the suite controls
/// uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceOptions {
    /// Replicas of `identity_fp32` (the multi-replica checks); 0 means one.
    pub identity_replicas: usize,
}

#[cfg(feature = "reference")]
/// Writes the model set as a repository of `layout` under `out`.
pub fn write(layout: Layout, out: &Path, options: ReferenceOptions) -> std::io::Result<()> {
    for model in model_set() {
        let dir = out.join(&model.name);
        match layout {
            Layout::Reference => {
                std::fs::create_dir_all(dir.join("1"))?;
                std::fs::write(dir.join("1/model.onnx"), model.onnx())?;
                let mut toml = reference_toml(&model);
                if model.name == "identity_fp32" && options.identity_replicas > 1 {
                    let devices = vec!["\"cpu\""; options.identity_replicas].join(", ");
                    toml.push_str(&format!(
                        "\n[deployment]\ndevices = [{devices}]\nintra_op_threads = 1\n"
                    ));
                }
                std::fs::write(dir.join("servable.toml"), toml)?;
                if model.name == "add" {
                    std::fs::write(
                        dir.join("1/add_cast.onnx"),
                        reference_server::demo::add_cast_model(),
                    )?;
                }
            }
            Layout::Triton => {
                let model = model.for_triton();
                std::fs::create_dir_all(dir.join("1"))?;
                std::fs::write(dir.join("1/model.onnx"), model.onnx())?;
                std::fs::write(dir.join("config.pbtxt"), triton_config(&model, None))?;
            }
            Layout::TritonPython => {
                let model = model.for_triton();
                std::fs::create_dir_all(dir.join("1"))?;
                std::fs::write(dir.join("1/model.py"), TRITON_PYTHON_MODEL)?;
                std::fs::write(
                    dir.join("config.pbtxt"),
                    triton_config(&model, Some("python")),
                )?;
            }
            Layout::Mlserver => {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("model.onnx"), model.onnx())?;
                std::fs::write(dir.join("onnx_runtime.py"), MLSERVER_RUNTIME)?;
                std::fs::write(dir.join("model-settings.json"), mlserver_settings(&model))?;
            }
        }
    }
    write_sequence_model(layout, &out.join(SEQUENCE_MODEL))?;
    write_config_models(layout, out)
}

/// The suite's ensemble: `add_batch` twice, `OUT = 2 (A + B)`.
pub const ENSEMBLE_MODEL: &str = "ensemble_add";
/// The suite's cached model: `add_batch` with the response cache on.
pub const CACHED_MODEL: &str = "add_cached";

/// `ensemble_add` and `add_cached`, for the layouts whose servers read
/// Triton's configuration (ours reads a `config.pbtxt` directory beside
/// `servable.toml` ones).
#[cfg(feature = "reference")]
fn write_config_models(layout: Layout, out: &Path) -> std::io::Result<()> {
    let python = match layout {
        Layout::Reference | Layout::Triton => false,
        Layout::TritonPython => true,
        Layout::Mlserver => return Ok(()),
    };
    let dir = out.join(ENSEMBLE_MODEL);
    std::fs::create_dir_all(dir.join("1"))?;
    std::fs::write(
        dir.join("config.pbtxt"),
        format!(
            r#"name: "{ENSEMBLE_MODEL}"
platform: "ensemble"
max_batch_size: 0
input [ {{ name: "A" data_type: TYPE_FP32 dims: [ -1, 2 ] }}, {{ name: "B" data_type: TYPE_FP32 dims: [ -1, 2 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ -1, 2 ] }} ]
ensemble_scheduling {{
  step [
    {{ model_name: "add_batch" model_version: -1
      input_map {{ key: "x1" value: "A" }} input_map {{ key: "x2" value: "B" }}
      output_map {{ key: "y" value: "sum" }} }},
    {{ model_name: "add_batch" model_version: -1
      input_map {{ key: "x1" value: "sum" }} input_map {{ key: "x2" value: "sum" }}
      output_map {{ key: "y" value: "OUT" }} }}
  ]
}}
"#
        ),
    )?;
    let add = model_set()
        .into_iter()
        .find(|m| m.name == "add_batch")
        .expect("add_batch is in the set");
    let cached = Model {
        name: CACHED_MODEL.into(),
        ..add.for_triton()
    };
    let dir = out.join(CACHED_MODEL);
    std::fs::create_dir_all(dir.join("1"))?;
    if python {
        std::fs::write(dir.join("1/model.py"), TRITON_PYTHON_MODEL)?;
    } else {
        std::fs::write(dir.join("1/model.onnx"), cached.onnx())?;
    }
    let mut config = triton_config(&cached, python.then_some("python"));
    config.push_str("response_cache { enable: true }\n");
    std::fs::write(dir.join("config.pbtxt"), config)
}

/// `sequence_sum` in `layout`: the ONNX running sum with implicit state
/// (the reference and Triton layouts; our server reads a `config.pbtxt`
/// directory beside `servable.toml` ones), or the Python model keeping
/// sums by correlation ID (Triton's Python backend); none for MLServer,
/// which has no sequences.
#[cfg(feature = "reference")]
fn write_sequence_model(layout: Layout, dir: &Path) -> std::io::Result<()> {
    use reference_server::onnx::{running_sum, running_sum_config};
    let strategy = "oldest { max_candidate_sequences: 16 max_queue_delay_microseconds: 1000 }";
    match layout {
        Layout::Reference | Layout::Triton => {
            std::fs::create_dir_all(dir.join("1"))?;
            std::fs::write(dir.join("1/model.onnx"), running_sum())?;
            std::fs::write(
                dir.join("config.pbtxt"),
                running_sum_config(SEQUENCE_MODEL, strategy, 5_000_000),
            )
        }
        Layout::TritonPython => {
            std::fs::create_dir_all(dir.join("1"))?;
            std::fs::write(dir.join("1/model.py"), SEQUENCE_PYTHON_MODEL)?;
            let config = format!(
                r#"name: "{SEQUENCE_MODEL}"
backend: "python"
max_batch_size: 4
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
sequence_batching {{
  max_sequence_idle_microseconds: 5000000
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] }} ] }}
  ]
}}
"#
            );
            std::fs::write(dir.join("config.pbtxt"), config)
        }
        Layout::Mlserver => Ok(()),
    }
}

#[cfg(feature = "reference")]
fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(feature = "reference")]
fn reference_toml(m: &Model) -> String {
    let mut t = format!(
        "# Conformance model {name}.\n[[model]]\nname = \"{name}\"\nfile = \"model.onnx\"\nwith_batch_dim = {batch}\n\n[[method]]\nname = \"{method}\"\ninputs = [{i}]\noutputs = [{o}]\n\n[[method.stage]]\nmodel = \"{name}\"\ninputs = [{i}]\noutputs = [{o}]\n",
        name = m.name,
        batch = m.with_batch_dim,
        method = m.method,
        i = names(&m.inputs),
        o = names(&m.outputs),
    );
    if m.name == "add" {
        t.push_str("\n[[model]]\nname = \"add_cast\"\nfile = \"add_cast.onnx\"\n\n[[method]]\nname = \"add_cast\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"add_cast\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n");
    }
    t
}

#[cfg(feature = "reference")]
fn triton_tensors(out: &mut String, key: &str, specs: &[TensorSpec]) {
    let _ = writeln!(out, "{key} [");
    for (i, s) in specs.iter().enumerate() {
        let comma = if i + 1 < specs.len() { "," } else { "" };
        let dims = s
            .shape
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "  {{ name: \"{}\" data_type: {} dims: [ {dims} ] }}{comma}",
            s.name,
            serving_proto::model_config::triton_type(s.dtype).as_str_name()
        );
    }
    let _ = writeln!(out, "]");
}

#[cfg(feature = "reference")]
fn triton_config(m: &Model, backend: Option<&str>) -> String {
    let engine = match backend {
        Some(b) => format!("backend: \"{b}\""),
        None => "platform: \"onnxruntime_onnx\"".to_owned(),
    };
    let mut out = format!("name: \"{}\"\n{engine}\nmax_batch_size: 0\n", m.name);
    triton_tensors(&mut out, "input", &m.inputs);
    triton_tensors(&mut out, "output", &m.outputs);
    out
}

#[cfg(feature = "reference")]
fn mlserver_settings(m: &Model) -> String {
    let tensors = |specs: &[TensorSpec]| -> Vec<serde_json::Value> {
        specs
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "datatype": s.dtype.oip_name().unwrap_or("BYTES"), "shape": s.shape}))
            .collect()
    };
    let settings = serde_json::json!({
        "name": m.name,
        "implementation": "onnx_runtime.OnnxModel",
        "parameters": {"uri": "./model.onnx", "version": "1"},
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    });
    serde_json::to_string_pretty(&settings).expect("JSON values serialize")
}

#[cfg(all(test, feature = "reference"))]
mod tests {
    use super::*;

    #[test]
    fn every_layout_is_written() {
        for layout in [
            Layout::Reference,
            Layout::Triton,
            Layout::TritonPython,
            Layout::Mlserver,
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(layout, dir.path(), ReferenceOptions::default()).unwrap();
            for m in model_set() {
                let d = dir.path().join(&m.name);
                let expected = match layout {
                    Layout::Reference => d.join("servable.toml"),
                    Layout::Triton | Layout::TritonPython => d.join("config.pbtxt"),
                    _ => d.join("model-settings.json"),
                };
                assert!(expected.is_file(), "{}", expected.display());
            }
        }
        // Scalars as Triton has them: [1], no empty reshape.
        let cfg = triton_config(&identity4(DataType::Fp16).for_triton(), None);
        assert!(
            cfg.contains("{ name: \"x0\" data_type: TYPE_FP16 dims: [ 1 ] },"),
            "{cfg}"
        );
        let py = triton_config(&identity4(DataType::Fp16).for_triton(), Some("python"));
        assert!(py.contains("backend: \"python\""), "{py}");
        assert!(
            cfg.contains("{ name: \"y3\" data_type: TYPE_FP16 dims: [ -1, -1, -1 ] }"),
            "{cfg}"
        );
    }
}
