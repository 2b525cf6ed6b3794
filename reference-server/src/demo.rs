//! The built-in demo, MindSpore Serving's canonical example: servable `add`,
//! version 1, method `add_common` (`y = x1 + x2` over float32 [2, 2]) and
//! method `add_cast` (int32 inputs cast to float32, then added). The models
//! are written in memory by [`crate::onnx`].

use std::sync::Arc;

use serving_proto::DataType;

use crate::engine::config::ServableSpec;
use crate::engine::{Backends, LoadError};
use crate::engine::{LoadOptions, ServableVersion};
use crate::onnx::{Dim, ModelBuilder, cast_to};
use crate::repository::config::ServableConfig;

/// The demo's servable name.
pub const SERVABLE: &str = "add";

const CONFIG: &str = r#"
[[model]]
name = "add"
file = "add.onnx"

[[model]]
name = "add_cast"
file = "add_cast.onnx"

[[method]]
name = "add_common"
inputs = ["x1", "x2"]
outputs = ["y"]

[[method.stage]]
model = "add"
inputs = ["x1", "x2"]
outputs = ["y"]

[[method]]
name = "add_cast"
inputs = ["x1", "x2"]
outputs = ["y"]

[[method.stage]]
model = "add_cast"
inputs = ["x1", "x2"]
outputs = ["y"]
"#;

const SQUARE: [Dim; 2] = [Dim::Fixed(2), Dim::Fixed(2)];

/// `y = x1 + x2`, float32 [2, 2].
pub fn add_model() -> Vec<u8> {
    ModelBuilder::new("add")
        .input("x1", DataType::Fp32, &SQUARE)
        .input("x2", DataType::Fp32, &SQUARE)
        .output("y", DataType::Fp32, &SQUARE)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build()
}

/// `y = float(x1) + float(x2)`, int32 [2, 2] in, float32 [2, 2] out.
pub fn add_cast_model() -> Vec<u8> {
    ModelBuilder::new("add_cast")
        .input("x1", DataType::Int32, &SQUARE)
        .input("x2", DataType::Int32, &SQUARE)
        .output("y", DataType::Fp32, &SQUARE)
        .node("Cast", &["x1"], &["c1"], vec![cast_to(DataType::Fp32)])
        .node("Cast", &["x2"], &["c2"], vec![cast_to(DataType::Fp32)])
        .node("Add", &["c1", "c2"], &["y"], vec![])
        .build()
}

/// The demo's configuration.
pub fn config() -> ServableConfig {
    ServableConfig::parse(CONFIG).expect("the demo configuration is valid")
}

/// The demo as the engine runs it.
pub fn spec() -> ServableSpec {
    config().spec().expect("the demo configuration is valid")
}

/// Loads the demo servable, version 1.
pub fn load(backends: &Arc<Backends>, options: &LoadOptions) -> Result<ServableVersion, LoadError> {
    ServableVersion::load(
        backends,
        SERVABLE,
        1,
        spec(),
        vec![add_model(), add_cast_model()],
        options,
    )
}
