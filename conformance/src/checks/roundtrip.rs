//! Round trips: random tensors of every type the family carries, through
//! identity models, come back exactly.

use serving_client::{NamedTensors, Parameter, Tensor};
use serving_proto::DataType;

use super::values::{Carrier, compare, draw, runner, shape, tensor};
use crate::call::{self, Failed};
use crate::check::{BOTH, Check, MS, OIP, Outcome, Suite, describe};
use crate::models::{NUMERIC, identity_feed_with, identity_name};
use crate::target::{Family, Target};

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "roundtrip.identity",
            families: BOTH,
            summary: "for every type the family carries, random tensors of rank 0 to 3 (empty dims included) through identity_<type>, `cases` times: every output equals its input in type, shape and bytes (MindSpore REST: shape and numbers)",
            spec: "mindspore-serving.md §2.3-2.5, §3.4-3.6; open-inference-protocol.md §1.1, §1.2, §1.3",
            run: |s, t| Box::pin(identity(s, t)),
        },
        Check {
            name: "roundtrip.special_floats",
            families: BOTH,
            summary: "NaN (with a payload), ±infinity, -0.0 and subnormals in FP16, BF16, FP32 and FP64 through the identity models over binary transports (gRPC; REST with the binary tensor extension): bit-exact",
            spec: "open-inference-protocol.md §1.2 (raw contents are the tensor's bytes), §1.4; mindspore-serving.md §2.3 (data is the raw bytes)",
            run: |s, t| Box::pin(special_floats(s, t)),
        },
        Check {
            name: "roundtrip.instances",
            families: MS,
            summary: "1 to 5 instances of random rows through add_batch (a batch dimension): one result per instance, in order, each x1 + x2",
            spec: "mindspore-serving.md §2.4 (with_batch_dim), §2.5 (reply instances in request order)",
            run: |s, t| Box::pin(instances(s, t)),
        },
        Check {
            name: "roundtrip.outputs_and_id",
            families: OIP,
            summary: "multi_output with one requested output and an id: only that output comes back, with the id; with none requested, both",
            spec: "open-inference-protocol.md §1.1 (the response must return the id; outputs requested)",
            run: |s, t| Box::pin(outputs_and_id(s, t)),
        },
    ]
}

fn types(family: Family) -> Vec<DataType> {
    match family {
        Family::MindSpore => NUMERIC
            .iter()
            .copied()
            .filter(|&d| d != DataType::Bf16)
            .chain([DataType::String])
            .collect(),
        Family::OpenInference => NUMERIC.iter().copied().chain([DataType::Bytes]).collect(),
    }
}

async fn identity(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let carrier = Carrier::of(target);
    let mut runner = runner();
    let (mut sent, mut failures) = (0, Vec::new());
    // Every type is tried, whatever fails before it.
    for dtype in types(target.family) {
        match identity_type(&client, target, dtype, carrier, suite.cases, &mut runner).await {
            Ok(n) => sent += n,
            Err(e) => failures.push(format!("{}: {e}", dtype)),
        }
    }
    if failures.is_empty() {
        Outcome::Pass(format!(
            "{sent} random requests over {} types came back exactly",
            types(target.family).len()
        ))
    } else {
        Outcome::Fail(failures.join(" | "))
    }
}

async fn identity_type(
    client: &serving_client::Client,
    target: &Target,
    dtype: DataType,
    carrier: Carrier,
    cases: u32,
    runner: &mut proptest::test_runner::TestRunner,
) -> Result<u32, String> {
    let model = identity_name(dtype);
    let scalar = call::scalar_shape(client, target.family, &model).await;
    for case in 0..cases {
        // MindSpore strings: one element per input (spec §2.4).
        let inputs: Vec<(String, Tensor)> = if dtype == DataType::String {
            vec![("x".into(), draw(runner, &tensor(dtype, vec![1], carrier)))]
        } else {
            (0..4)
                .map(|rank| {
                    let s = if rank == 0 {
                        scalar.clone()
                    } else {
                        draw(runner, &shape(rank, carrier))
                    };
                    (format!("x{rank}"), draw(runner, &tensor(dtype, s, carrier)))
                })
                .collect()
        };
        let shapes: Vec<_> = inputs.iter().map(|(_, t)| t.shape().to_vec()).collect();
        let outputs = match call::run(client, target.family, &model, "predict", &inputs, None).await
        {
            Ok(outputs) => outputs,
            Err(Failed::Instance(e)) => {
                return Err(format!(
                    "{model} case {case}, shapes {shapes:?}: instance error {}: {}",
                    e.code, e.message
                ));
            }
            Err(Failed::NoResult) => return Err(format!("{model}: no result")),
            Err(Failed::Call(e)) => {
                return Err(format!(
                    "{model} case {case}, shapes {shapes:?}: {}",
                    describe(&e)
                ));
            }
        };
        for (name, input) in &inputs {
            let out_name = name.replacen('x', "y", 1);
            let Some((_, got)) = outputs.iter().find(|(n, _)| *n == out_name) else {
                return Err(format!("{model} case {case}: no output {out_name}"));
            };
            compare(input, got, carrier)
                .map_err(|e| format!("{model} case {case}, {name}: {e}"))?;
        }
    }
    Ok(cases)
}

async fn instances(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let mut runner = runner();
    let carrier = Carrier {
        untyped: false,
        zero_last: true,
    };
    let mut total = 0;
    for case in 0..suite.cases {
        let n = (case as usize % 5) + 1;
        let rows: Vec<(Tensor, Tensor)> = (0..n)
            .map(|_| {
                (
                    draw(&mut runner, &tensor(DataType::Fp32, vec![2], carrier)),
                    draw(&mut runner, &tensor(DataType::Fp32, vec![2], carrier)),
                )
            })
            .collect();
        let instances: Vec<NamedTensors> = rows
            .iter()
            .map(|(a, b)| [("x1".to_string(), a.clone()), ("x2".to_string(), b.clone())].into())
            .collect();
        let results = match client.predict("add_batch", "predict", &instances).await {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(format!("{n} instances: {}", describe(&e))),
        };
        if results.len() != n {
            return Outcome::Fail(format!("{n} instances sent, {} results", results.len()));
        }
        for (i, ((a, b), r)) in rows.iter().zip(results).enumerate() {
            let y = match r {
                // An untyped JSON number is the FP32 sum at FP32's width.
                Ok(map) => match map.get("y").map(Tensor::to_f64_vec) {
                    Some(Ok(v)) => v
                        .into_iter()
                        .map(|v| super::values::at_width(DataType::Fp32, v))
                        .collect::<Vec<f64>>(),
                    _ => return Outcome::Fail(format!("instance {i}: no FP y in {map:?}")),
                },
                Err(e) => {
                    return Outcome::Fail(format!("instance {i}: {} ({})", e.message, e.code));
                }
            };
            let want: Vec<f64> = a
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .zip(b.to_vec::<f32>().unwrap())
                .map(|(p, q)| f64::from(p + q))
                .collect();
            if y != want {
                return Outcome::Fail(format!(
                    "instance {i} of {n}: y = {y:?}, expected {want:?} (order or cross-talk)"
                ));
            }
        }
        total += n;
    }
    Outcome::Pass(format!(
        "{total} instances in {} requests, each its own sum, in order",
        suite.cases
    ))
}

async fn outputs_and_id(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let x = Tensor::from_vec(&[3], vec![1f32, -2.0, 0.5]).expect("3 values");
    let one = client
        .infer("multi_output")
        .id("conformance-17")
        .parameter("conformance", Parameter::Bool(true))
        .input("x", x.clone())
        .output("negated")
        .send()
        .await;
    let one = match one {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    if one.id != "conformance-17" {
        return Outcome::Fail(format!("id 'conformance-17' came back as '{}'", one.id));
    }
    let names: Vec<&str> = one.outputs.iter().map(|o| o.name.as_str()).collect();
    if names != ["negated"] {
        return Outcome::Fail(format!("requested only 'negated', got {names:?}"));
    }
    if one.outputs[0].tensor.to_vec::<f32>().ok() != Some(vec![-1.0, 2.0, -0.5]) {
        return Outcome::Fail(format!("negated = {:?}", one.outputs[0].tensor));
    }
    let all = match client.infer("multi_output").input("x", x).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    let mut names: Vec<&str> = all.outputs.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    if names != ["double", "negated"] {
        return Outcome::Fail(format!(
            "no outputs requested: expected both, got {names:?}"
        ));
    }
    Outcome::Pass(
        "the requested output only, with the id; all outputs when none is requested".into(),
    )
}

async fn special_floats(suite: &Suite, target: &Target) -> Outcome {
    use crate::target::Transport;
    let mut builder = suite.builder(target);
    if target.transport == Transport::Http {
        if target.family == Family::MindSpore {
            return Outcome::NotApplicable(
                "MindSpore REST replies are JSON numbers, which cannot carry NaN or infinity"
                    .into(),
            );
        }
        let client = match suite.client(target) {
            Ok(c) => c,
            Err(e) => return Outcome::Fail(e),
        };
        match client.server_metadata().await {
            Ok(m) if m.extensions.iter().any(|e| e == "binary_tensor_data") => {}
            Ok(m) => {
                return Outcome::NotApplicable(format!(
                    "the server does not advertise binary_tensor_data (extensions {:?}), and JSON cannot carry NaN or infinity",
                    m.extensions
                ));
            }
            Err(e) => return Outcome::Fail(describe(&e)),
        }
        builder = builder.binary_threshold(0);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let f32s = [
        f32::from_bits(0x7fc4_642f),
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::from_bits(1),
        f32::MIN_POSITIVE,
    ];
    let f64s = [
        f64::from_bits(0x7ff8_0000_dead_beef),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::from_bits(1),
        f64::MIN_POSITIVE,
    ];
    let halfs: Vec<u16> = vec![0x7e01, 0x7c00, 0xfc00, 0x8000, 0x0001, 0x0400];
    let bf16s: Vec<u16> = vec![0x7fc1, 0x7f80, 0xff80, 0x8000, 0x0001, 0x0080];
    let raw16 =
        |v: &[u16]| bytes::Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let mut cases = vec![
        (DataType::Fp32, Tensor::from_slice(&[6], &f32s).expect("6")),
        (DataType::Fp64, Tensor::from_slice(&[6], &f64s).expect("6")),
        (
            DataType::Fp16,
            Tensor::from_raw(DataType::Fp16, vec![6], raw16(&halfs)).expect("6"),
        ),
    ];
    if target.family == Family::OpenInference {
        cases.push((
            DataType::Bf16,
            Tensor::from_raw(DataType::Bf16, vec![6], raw16(&bf16s)).expect("6"),
        ));
    }
    for (dtype, x) in cases {
        let model = identity_name(dtype);
        let scalar = call::scalar_shape(&client, target.family, &model).await;
        let inputs = identity_feed_with(x.clone(), &scalar);
        let y1 = match call::run(
            &client,
            target.family,
            &model,
            "predict",
            &inputs,
            Some("y1"),
        )
        .await
        {
            Ok(outputs) => call::output(outputs, "y1"),
            Err(Failed::Instance(e)) => return Outcome::Fail(format!("{model}: {}", e.message)),
            Err(Failed::NoResult) => None,
            Err(Failed::Call(e)) => return Outcome::Fail(format!("{model}: {}", describe(&e))),
        };
        match y1 {
            Some(y) if y == x => {}
            Some(y) => {
                return Outcome::Fail(format!("{model}: {:?} came back as {:?}", x.raw(), y.raw()));
            }
            None => return Outcome::Fail(format!("{model}: no y1")),
        }
    }
    Outcome::Pass("NaN payloads, infinities, -0.0 and subnormals came back bit for bit".into())
}
