//! Round trips: random tensors of every type the family carries, through
//! identity models, come back exactly.

use serving_client::{NamedTensors, Parameter, Tensor};
use serving_proto::DataType;

use super::values::{Carrier, compare, draw, identity_inputs, runner, tensor};
use crate::call::{self, Failed};
use crate::check::{BOTH, Cases, Check, MS, OIP, Outcome, Suite, describe};
use crate::discovery::{IdentityModel, fill};
use crate::models::NUMERIC;
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
    let (mut sent, mut failures, mut refused, mut absent) = (0, Vec::new(), Vec::new(), Vec::new());
    let mut types_run = 0;
    // Every type is tried, whatever fails before it.
    for dtype in types(target.family) {
        let model = match suite.identity(target, dtype).await {
            Ok(m) => m,
            Err(_) => {
                absent.push(format!("{dtype:?}"));
                continue;
            }
        };
        types_run += 1;
        match identity_type(&client, target, &model, carrier, suite.cases, &mut runner).await {
            Ok(n) => sent += n,
            Err(e) if refusable_in_json(target, dtype, &e) => refused.push(format!("{dtype:?}")),
            Err(e) => failures.push(format!("{}: {}", dtype, e.text)),
        }
    }
    if !failures.is_empty() {
        return Outcome::Fail(failures.join(" | "));
    }
    if types_run == 0 {
        return Outcome::NotApplicable(format!(
            "the target serves no identity model of any type the family carries ({}); name them with --model identity_<type>=NAME",
            absent.join(", ")
        ));
    }
    let absent = if absent.is_empty() {
        String::new()
    } else {
        format!("; no identity model for {}", absent.join(", "))
    };
    let refused = if refused.is_empty() {
        String::new()
    } else {
        format!(
            "; {} in JSON refused with a 400, which the OIP REST spec allows (FP16/BF16 in JSON are problematic, §1.1 tensor data)",
            refused.join(", ")
        )
    };
    Outcome::Pass(format!(
        "{sent} random requests over {types_run} types came back exactly{refused}{absent}"
    ))
}

/// Why one type's round trips failed, and whether the server refused the
/// request (rather than answering wrongly).
struct TypeFailure {
    text: String,
    refused: bool,
}

impl From<String> for TypeFailure {
    fn from(text: String) -> TypeFailure {
        TypeFailure {
            text,
            refused: false,
        }
    }
}

/// A refusal the spec allows: FP16 or BF16 in OIP REST JSON (the spec
/// calls them problematic in JSON and lets a server return an error).
fn refusable_in_json(target: &Target, dtype: DataType, e: &TypeFailure) -> bool {
    e.refused
        && target.family == Family::OpenInference
        && target.transport == crate::target::Transport::Http
        && matches!(dtype, DataType::Fp16 | DataType::Bf16)
}

async fn identity_type(
    client: &serving_client::Client,
    target: &Target,
    identity: &IdentityModel,
    carrier: Carrier,
    cases: u32,
    runner: &mut proptest::test_runner::TestRunner,
) -> Result<u32, TypeFailure> {
    let model = &identity.name;
    for case in 0..cases {
        // Each input in a shape its declared dims allow: variable ones
        // drawn, fixed ones (a batch of rows of 3) as declared.
        let inputs = identity_inputs(identity, runner, carrier);
        let shapes: Vec<_> = inputs.iter().map(|(_, t)| t.shape().to_vec()).collect();
        let outputs = match call::run(client, target.family, model, "predict", &inputs, None).await
        {
            Ok(outputs) => outputs,
            Err(Failed::Instance(e)) => {
                return Err(format!(
                    "{model} case {case}, shapes {shapes:?}: instance error {}: {}",
                    e.code, e.message
                )
                .into());
            }
            Err(Failed::NoResult) => return Err(format!("{model}: no result").into()),
            Err(Failed::Call(e)) => {
                return Err(TypeFailure {
                    refused: matches!(e, serving_client::Error::InvalidArgument { .. }),
                    text: format!("{model} case {case}, shapes {shapes:?}: {}", describe(&e)),
                });
            }
        };
        for ((name, input), pair) in inputs.iter().zip(&identity.pairs) {
            let out_name = &pair.output;
            let Some((_, got)) = outputs.iter().find(|(n, _)| n == out_name) else {
                return Err(format!("{model} case {case}: no output {out_name}").into());
            };
            compare(input, got, carrier)
                .map_err(|e| TypeFailure::from(format!("{model} case {case}, {name}: {e}")))?;
        }
    }
    Ok(cases)
}

async fn instances(suite: &Suite, target: &Target) -> Outcome {
    if !suite.ms_serves(target, "add_batch").await {
        return Outcome::NotApplicable(
            "the target serves no servable add_batch (it answers `servable is not available`)"
                .into(),
        );
    }
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
    let multi = match suite.model(target, crate::profile::Role::MultiOutput).await {
        Ok(m) => m,
        Err(why) => return Outcome::NotApplicable(why),
    };
    let x = Tensor::from_vec(&[3], vec![1f32, -2.0, 0.5]).expect("3 values");
    let one = client
        .infer(&multi)
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
    let all = match client.infer(&multi).input("x", x).send().await {
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
    let mut results = Cases::default();
    let mut absent = Vec::new();
    for (dtype, x) in cases {
        let Some((model, inputs, index, out)) = special_feed(suite, target, x).await else {
            absent.push(format!("{dtype:?}"));
            continue;
        };
        let x = inputs[index].1.clone();
        let y1 = match call::run(
            &client,
            target.family,
            &model,
            "predict",
            &inputs,
            Some(&out),
        )
        .await
        {
            Ok(outputs) => call::output(outputs, &out),
            Err(Failed::Instance(e)) => {
                results.fail(format!("{model}: {}", e.message));
                continue;
            }
            Err(Failed::NoResult) => None,
            Err(Failed::Call(e)) => {
                results.fail(format!("{model}: {}", describe(&e)));
                continue;
            }
        };
        match y1 {
            Some(y) if y == x => results.pass(),
            Some(y) => results.fail(format!("{model}: sent {:?}, got {:?}", x.raw(), y.raw())),
            None => results.fail(format!("{model}: no {out}")),
        }
    }
    if results.ran == 0 {
        return Outcome::NotApplicable(format!(
            "no identity model can carry the six values for {}",
            absent.join(", ")
        ));
    }
    let absent = if absent.is_empty() {
        String::new()
    } else {
        format!(" (no identity model for {})", absent.join(", "))
    };
    results.outcome(format!(
        "NaN payloads, infinities, -0.0 and subnormals came back bit for bit{absent}"
    ))
}

/// The identity model of `x`'s type with `x`'s six values in the first
/// input whose dims can hold them (a batch of rows too), zeros in the
/// others: the model, the inputs, the index of `x`'s and the output that
/// returns it; `None` without one.
async fn special_feed(
    suite: &Suite,
    target: &Target,
    x: Tensor,
) -> Option<(String, Vec<(String, Tensor)>, usize, String)> {
    let dtype = x.dtype();
    let identity = suite.identity(target, dtype).await.ok()?;
    let n = x.element_count() as i64;
    let (index, shape) = identity.pairs.iter().enumerate().find_map(|(i, p)| {
        holding(&p.dims, n)
            .filter(|s| identity.fits(s))
            .map(|s| (i, s))
    })?;
    // Where the identity batches, every input carries `x`'s rows.
    let rows = if identity.batched() {
        shape.first().copied().unwrap_or(1)
    } else {
        1
    };
    let zeros = |dims: &[i64]| {
        let shape = fill(dims, rows, 1);
        let len = serving_proto::tensor::byte_size(dtype, &shape)?;
        Tensor::from_raw(dtype, shape, bytes::Bytes::from(vec![0u8; len])).ok()
    };
    let inputs = identity
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = if i == index {
                x.clone().reshape(shape.clone()).ok()?
            } else {
                zeros(&p.dims)?
            };
            Some((p.input.clone(), t))
        })
        .collect::<Option<Vec<_>>>()?;
    let out = identity.pairs[index].output.clone();
    Some((identity.name, inputs, index, out))
}

/// A shape within `dims` of exactly `n` elements: the first variable
/// dimension takes what the fixed ones leave, other variable ones are 1.
fn holding(dims: &[i64], n: i64) -> Option<Vec<i64>> {
    let fixed: i64 = dims.iter().filter(|&&d| d >= 0).product();
    if dims.iter().all(|&d| d >= 0) {
        return (fixed == n).then(|| dims.to_vec());
    }
    (fixed > 0 && n % fixed == 0).then(|| fill(dims, n / fixed, 1))
}
