//! MindSpore Serving servables as their users have them: a
//! `servable_config.py` beside the version directories, unchanged, with the
//! MindIR model's ONNX export beside it. Python pre- and post-processing
//! stages around an ONNX model stage, batched Python stages, the deprecated
//! `declare_servable`/`call_preprocess`/`call_servable` form of MindSpore's
//! own example, a failing stage with MindSpore's text, `Model.call` from a
//! Python stage (one instance, several, and its errors); called by MindSpore's
//! protocol clients (grpcio on ms_service.proto as MindSpore's client calls
//! it, requests on MindSpore's REST) and by NVIDIA's tritonclient, all
//! in tests/compat/mindspore_servables.py. Bad configurations fail the load
//! with clear errors.

mod common;

use reference_server::onnx::{Dim, ModelBuilder};
use serving_proto::DataType;

const TEXT_ADD: &str = r#"
import numpy as np
from mindspore_serving.server import register

model = register.declare_model(model_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=True)


def preprocess(text, scale):
    # MindSpore's MS_STRING arrives as str, the OIP's BYTES as a uint8 array.
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    x1 = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    return x1, x1 * np.float32(scale.reshape(-1)[0])


def postprocess(instances):
    for instance in instances:
        y = instance[0]
        yield "sum=%g" % float(y.sum()), y.max(), np.int32(len(instances))


def boom(x):
    raise ValueError("bad value %d" % int(x.reshape(-1)[0]))


@register.register_method(output_names=["label", "y", "peak", "batch"])
def add_text(text, scale):
    x1, x2 = register.add_stage(preprocess, text, scale, outputs_count=2, tag="Preprocess")
    y = register.add_stage(model, x1, x2, outputs_count=1)
    label, peak, batch = register.add_stage(postprocess, y, outputs_count=3, batch_size=4)
    return label, y, peak, batch


@register.register_method(output_names=["y"])
def add_common(x1, x2):
    y = register.add_stage(model, x1, x2, outputs_count=1)
    return y


@register.register_method(output_names=["y", "same"])
def fails(x):
    y = register.add_stage(boom, x, outputs_count=1)
    return y, x


def call_model(x1, x2):
    # One instance: the output itself; several: a list of output tuples.
    y = model.call(x1, x2)
    pair = model.call([(x1, x2), (y, y)])
    return y, pair[1][0]


def call_errors(x):
    texts = []
    for attempt in (lambda: model.call(), lambda: model.call([]), lambda: model.call([x1 for x1 in x]),
                    lambda: model.call(x, x, x), lambda: model.call(x, x, subgraph=1),
                    lambda: model.call(x.astype(np.int32), x), lambda: model.call(x[:2], x[:2])):
        try:
            attempt()
            texts.append("no error")
        except RuntimeError as e:
            texts.append(str(e))
    return "\n".join(texts)


@register.register_method(output_names=["y", "doubled"])
def add_by_call(x1, x2):
    y, doubled = register.add_stage(call_model, x1, x2, outputs_count=2)
    return y, doubled


@register.register_method(output_names=["errors"])
def call_errors_method(x):
    errors = register.add_stage(call_errors, x, outputs_count=1)
    return errors
"#;

/// MindSpore's own `add` example in its deprecated form.
const ADD: &str = r#"
import numpy as np
from mindspore_serving.server import register

register.declare_servable(servable_file="tensor_add.mindir", model_format="MindIR", with_batch_dim=False)


def add_trans_datatype(x1, x2):
    return x1.astype(np.float32), x2.astype(np.float32)


@register.register_method(output_names=["y"])
def add_common(x1, x2):
    y = register.call_servable(x1, x2)
    return y


@register.register_method(output_names=["y"])
def add_cast(x1, x2):
    x1, x2 = register.call_preprocess(add_trans_datatype, x1, x2)
    y = register.call_servable(x1, x2)
    return y


@register.register_method(output_names=["x"])
def echo(x):
    return x
"#;

fn add_rows() -> Vec<u8> {
    let dims = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    ModelBuilder::new("add")
        .input("x1", DataType::Fp32, &dims)
        .input("x2", DataType::Fp32, &dims)
        .output("y", DataType::Fp32, &dims)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build()
}

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write(d, "text_add/servable_config.py", TEXT_ADD.as_bytes());
    common::write(
        d,
        "text_add/1/tensor_add.mindir",
        b"a MindIR graph the server does not read",
    );
    common::write(d, "text_add/1/tensor_add.onnx", &add_rows());
    common::write(d, "add/servable_config.py", ADD.as_bytes());
    common::write(d, "add/1/tensor_add.onnx", &common::binary_op("Add"));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mindspore_servables_run_unchanged_for_mindspore_and_triton_clients() {
    let repo = repository();
    let server = common::with_python_models(repo.path())
        .await
        .expect("the servables load");
    let args = common::compat_args(&server);
    common::run_compat(
        "mindspore_servables.py",
        args,
        "all MindSpore servable checks pass",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_servable_configs_fail_the_load_clearly() {
    let cases: [(&str, &str); 5] = [
        (
            "from mindspore_serving.server import register\nm = register.declare_model(model_file='net.mindir', model_format='MindIR')\n@register.register_method(output_names=['y'])\ndef predict(x1, x2):\n    return register.add_stage(m, x1, x2, outputs_count=1)\n",
            "runs from its ONNX export 'net.onnx', which is missing from version 1",
        ),
        (
            "from mindspore_serving.server import register\n",
            "There is no method registered for servable bad",
        ),
        (
            "from mindspore_serving.server import register\nm = register.declare_model(model_file='tensor_add.mindir', model_format='MindIR')\n@register.register_method(output_names=['y'])\ndef predict(x1, x2, *more):\n    return register.add_stage(m, x1, x2, outputs_count=1)\n",
            "'predict' input more cannot be VAR_POSITIONAL !",
        ),
        (
            "from mindspore_serving.server import distributed\ndistributed.declare_servable(rank_size=8, stage_size=1)\n",
            "distributed (model-parallel) servables are not served",
        ),
        (
            "from mindspore_serving.server import register\nm = register.declare_model(model_file='tensor_add.mindir', model_format='MindIR')\n@register.register_method(output_names=['y', 'z'])\ndef predict(x1, x2):\n    return register.add_stage(m, x1, x2, outputs_count=1)\n",
            "Method return output size 1 not match registered 2",
        ),
    ];
    for (config, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "bad/servable_config.py", config.as_bytes());
        common::write(
            dir.path(),
            "bad/1/tensor_add.onnx",
            &common::binary_op("Add"),
        );
        let e = common::with_python_models(dir.path())
            .await
            .expect_err("the servable must not load")
            .to_string();
        assert!(e.contains(expected), "expected '{expected}' in: {e}");
        assert!(
            e.contains("servable_config.py") || e.contains("net.onnx"),
            "{e}"
        );
    }
}
