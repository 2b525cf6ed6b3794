//! Triton's protocol extensions, each checked where the server advertises
//! it in its metadata (`extensions`), n/a where it does not: binary tensor
//! data, model configuration, statistics, the model repository,
//! classification, system shared memory and streaming.

use futures_util::StreamExt;
use serving_client::{Client, Error, InferRequest, NamedTensor, Parameter, Tensor};
use serving_proto::DataType;

use crate::check::{Cases, Check, OIP, Outcome, Suite, describe};
use crate::discovery::{IdentityModel, fill};
use crate::profile::Role;
use crate::target::{Target, Transport};

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "extensions.binary_data",
            families: OIP,
            summary: "REST, where binary_tensor_data is advertised: 64 KiB of random FP32 through the FP32 identity as binary input, asking for binary output: bit-exact, with the Inference-Header-Content-Length framing",
            spec: "Triton binary_tensor_data extension (binary_data_size, binary_data_output, Inference-Header-Content-Length)",
            run: |s, t| Box::pin(binary_data(s, t)),
        },
        Check {
            name: "extensions.model_config",
            families: OIP,
            summary: "where model_configuration is advertised: the configuration of each role model served names it and declares the inputs and outputs its metadata lists, with the same datatypes (TYPE_FP32 for FP32, ...) and shapes (the batch dimension added where max_batch_size > 0)",
            spec: "Triton model_configuration extension; open-inference-protocol.md §1.1 model metadata",
            run: |s, t| Box::pin(model_config(s, t)),
        },
        Check {
            name: "extensions.statistics",
            families: OIP,
            summary: "where statistics is advertised: 3 inferences on a model raise its success count by exactly 3 and its inference_count by 3 times the rows each carries, and a refused one raises fail",
            spec: "Triton statistics extension (inference_count, inference_stats.success, fail)",
            run: |s, t| Box::pin(statistics(s, t)),
        },
        Check {
            name: "extensions.repository",
            families: OIP,
            summary: "where model_repository is advertised: the index lists the served models; after unloading the FP32 identity its metadata is not found and it is not ready; after loading it again it is ready and answers",
            spec: "Triton model_repository extension (index, load, unload)",
            run: |s, t| Box::pin(repository(s, t)),
        },
        Check {
            name: "extensions.classification",
            families: OIP,
            summary: "where classification is advertised: the FP32 identity's output asked with classification=2 comes back as BYTES `<value>:<index>` strings, the two highest first",
            spec: "Triton classification extension",
            run: |s, t| Box::pin(classification(s, t)),
        },
        Check {
            name: "extensions.shared_memory",
            families: OIP,
            summary: "where system_shared_memory is advertised and the server is on this host: a region registered, 1 MiB through the UINT8 identity in and out of shared memory bit-exact, status listing it, an overrunning placement refused, unregistered",
            spec: "Triton system_shared_memory extension",
            run: |s, t| Box::pin(shared_memory(s, t)),
        },
        Check {
            name: "extensions.streaming",
            families: OIP,
            summary: "gRPC: 20 requests with ids on one ModelStreamInfer stream, one of them bad: answers in request order with their ids, the bad one an in-band error, the stream going on",
            spec: "Triton's ModelStreamInfer (decoupled off: one response per request, in order; errors in error_message)",
            run: |s, t| Box::pin(streaming(s, t)),
        },
    ]
}

/// The extension's n/a when the server does not advertise it.
async fn advertised(suite: &Suite, target: &Target, extension: &str) -> Result<(), Outcome> {
    let caps = suite.capabilities(target).await;
    if caps.advertises(extension) {
        Ok(())
    } else {
        Err(Outcome::NotApplicable(format!(
            "the server does not advertise {extension} (extensions {:?})",
            caps.extensions
        )))
    }
}

/// The FP32 identity and a client, or the check's outcome.
async fn fp32(suite: &Suite, target: &Target) -> Result<(Client, IdentityModel), Outcome> {
    let identity = suite
        .identity(target, DataType::Fp32)
        .await
        .map_err(Outcome::NotApplicable)?;
    let client = suite.client(target).map_err(Outcome::Fail)?;
    Ok((client, identity))
}

/// Inputs of `n` FP32 values (or as many as its dims hold) for `identity`.
fn fp32_inputs(identity: &IdentityModel, n: usize) -> Vec<NamedTensor> {
    identity
        .pairs
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let fixed: i64 = p.dims.iter().filter(|&&d| d >= 0).product();
            let rows = identity.rows((n as i64 / fixed.max(1)).max(1));
            let shape = fill(&p.dims, rows, 1);
            let count = shape.iter().product::<i64>() as usize;
            let values: Vec<f32> = (0..count)
                .map(|i| (i * 7 + k) as f32 * 0.25 - 3.0)
                .collect();
            NamedTensor::new(&p.input, Tensor::from_vec(&shape, values).expect("sized"))
        })
        .collect()
}

fn request(identity: &IdentityModel, n: usize) -> InferRequest {
    InferRequest {
        model_name: identity.name.clone(),
        inputs: fp32_inputs(identity, n),
        ..Default::default()
    }
}

/// Each output of `response` is its input of `sent`.
fn echoed(
    identity: &IdentityModel,
    sent: &InferRequest,
    got: &serving_client::InferResponse,
) -> Result<(), String> {
    for (input, pair) in sent.inputs.iter().zip(&identity.pairs) {
        match got.tensor(&pair.output) {
            Some(t) if *t == input.tensor => {}
            Some(t) => {
                return Err(format!(
                    "{} came back as {:?} {:?}, not as sent",
                    pair.output,
                    t.dtype(),
                    t.shape()
                ));
            }
            None => return Err(format!("no output {}", pair.output)),
        }
    }
    Ok(())
}

async fn binary_data(suite: &Suite, target: &Target) -> Outcome {
    if target.transport != Transport::Http {
        return Outcome::NotApplicable("a REST extension".into());
    }
    if let Err(o) = advertised(suite, target, "binary_tensor_data").await {
        return o;
    }
    let (_, identity) = match fp32(suite, target).await {
        Ok(x) => x,
        Err(o) => return o,
    };
    // Binary from the first byte on: input and output both binary.
    let client = match suite.builder(target).binary_threshold(0).build() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let sent = request(&identity, 16 << 10);
    match client.infer_request(&sent).await {
        Ok(got) => match echoed(&identity, &sent, &got) {
            Ok(()) => Outcome::Pass(format!(
                "{} binary inputs of {} came back bit-exact as binary outputs",
                sent.inputs.len(),
                identity.name
            )),
            Err(e) => Outcome::Fail(e),
        },
        Err(e) => Outcome::Fail(describe(&e)),
    }
}

async fn model_config(suite: &Suite, target: &Target) -> Outcome {
    if let Err(o) = advertised(suite, target, "model_configuration").await {
        return o;
    }
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let caps = suite.capabilities(target).await;
    let mut cases = Cases::default();
    let mut names = Vec::new();
    for role in Role::all() {
        let Ok(name) = suite.model(target, role).await else {
            continue;
        };
        let Some(meta) = caps.models.get(&name) else {
            continue;
        };
        if names.contains(&name) {
            continue;
        }
        names.push(name.clone());
        let config = match client.model_config(&name, None).await {
            Ok(c) => c,
            Err(e) => {
                cases.fail(format!("{name}: {}", describe(&e)));
                continue;
            }
        };
        let mut problems = Vec::new();
        if config.name != name {
            problems.push(format!("names itself {}", config.name));
        }
        let batch = config.max_batch_size > 0;
        let declared = |dims: &[i64]| -> Vec<i64> {
            if batch {
                std::iter::once(-1).chain(dims.iter().copied()).collect()
            } else {
                dims.to_vec()
            }
        };
        for (what, listed, configured) in [
            (
                "input",
                &meta.inputs,
                config
                    .input
                    .iter()
                    .map(|i| {
                        (
                            i.name.clone(),
                            i.data_type,
                            declared(&i.dims),
                            i.reshape.is_some(),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            (
                "output",
                &meta.outputs,
                config
                    .output
                    .iter()
                    .map(|o| {
                        (
                            o.name.clone(),
                            o.data_type,
                            declared(&o.dims),
                            o.reshape.is_some(),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
        ] {
            for t in listed {
                let Some((_, data_type, dims, reshaped)) =
                    configured.iter().find(|(n, ..)| *n == t.name)
                else {
                    problems.push(format!("no {what} {}", t.name));
                    continue;
                };
                let type_name = serving_proto::pb::inference::DataType::try_from(*data_type)
                    .map(|d| d.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("{data_type}"));
                let expected = DataType::from_oip_name(&t.datatype)
                    .map(|d| serving_proto::model_config::triton_type(d) as i32);
                if expected != Some(*data_type) {
                    problems.push(format!(
                        "{what} {}: metadata {}, configuration {type_name}",
                        t.name, t.datatype
                    ));
                }
                // A reshaped tensor's metadata shows the model's shape.
                if !reshaped && *dims != t.shape {
                    problems.push(format!(
                        "{what} {}: metadata shape {:?}, configuration dims {dims:?}",
                        t.name, t.shape
                    ));
                }
            }
        }
        if problems.is_empty() {
            cases.pass();
        } else {
            cases.fail(format!("{name}: {}", problems.join(", ")));
        }
    }
    if cases.ran == 0 {
        return Outcome::NotApplicable("the target serves none of the role models".into());
    }
    cases.outcome(format!(
        "the configurations of {} agree with their metadata",
        names.join(", ")
    ))
}

async fn statistics(suite: &Suite, target: &Target) -> Outcome {
    if let Err(o) = advertised(suite, target, "statistics").await {
        return o;
    }
    let (client, identity) = match fp32(suite, target).await {
        Ok(x) => x,
        Err(o) => return o,
    };
    let counts = |s: &[serving_client::ModelStatistics]| {
        s.iter().fold((0, 0, 0), |(n, ok, fail), v| {
            let stats = v.inference_stats.as_ref();
            (
                n + v.inference_count,
                ok + stats.and_then(|i| i.success).map_or(0, |d| d.count),
                fail + stats.and_then(|i| i.fail).map_or(0, |d| d.count),
            )
        })
    };
    let read = || client.model_statistics(Some(&identity.name), None);
    let before = match read().await {
        Ok(s) => counts(&s),
        Err(e) => {
            return Outcome::Fail(format!("statistics of {}: {}", identity.name, describe(&e)));
        }
    };
    // Triton counts each row of a batched request as an inference, and
    // each request as one success.
    let sent = request(&identity, 6);
    let rows_each = if identity.batched() {
        sent.inputs[0].tensor.shape().first().copied().unwrap_or(1) as u64
    } else {
        1
    };
    for _ in 0..3 {
        if let Err(e) = client.infer_request(&sent).await {
            return Outcome::Fail(describe(&e));
        }
    }
    // One the model's checks refuse: a wrong shape.
    let mut bad = request(&identity, 6);
    bad.inputs[0].tensor = Tensor::from_vec(&[1, 1, 1, 1, 7], vec![0f32; 7]).expect("7");
    let refused = client.infer_request(&bad).await.is_err();
    // Triton updates a model's statistics after the response is sent: a
    // read right after the last answer may miss it, so the counts are
    // read again for up to 2 s until they have grown as sent.
    let mut tries = 0;
    let grew = loop {
        let after = match read().await {
            Ok(s) => counts(&s),
            Err(e) => return Outcome::Fail(describe(&e)),
        };
        let grew = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        tries += 1;
        if (grew.0 >= 3 * rows_each && grew.1 >= 3) || tries >= 40 {
            break grew;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if grew.0 != 3 * rows_each || grew.1 != 3 {
        return Outcome::Fail(format!(
            "3 requests of {rows_each} rows on {} raised inference_count by {} (expected {}) and success by {} (expected 3)",
            identity.name,
            grew.0,
            3 * rows_each,
            grew.1
        ));
    }
    // Whether a request refused before it reached the model is a failed
    // inference is the server's choice: Triton 2.51 does not count it (nor
    // does the reference server), the extension's text allows either.
    let wrong = if refused {
        "refused"
    } else {
        "answered (not refused)"
    };
    Outcome::Pass(format!(
        "3 requests of {rows_each} rows: inference_count grew by {}, success by 3; a wrong shape, {wrong}, raised fail by {}",
        grew.0, grew.2
    ))
}

async fn repository(suite: &Suite, target: &Target) -> Outcome {
    if let Err(o) = advertised(suite, target, "model_repository").await {
        return o;
    }
    let (client, identity) = match fp32(suite, target).await {
        Ok(x) => x,
        Err(o) => return o,
    };
    let name = identity.name.clone();
    let index = match client.repository_index(false).await {
        Ok(i) => i,
        Err(e) => return Outcome::Fail(format!("index: {}", describe(&e))),
    };
    if !index.iter().any(|m| m.name == name) {
        return Outcome::Fail(format!("the index does not list {name}"));
    }
    if let Err(e) = client.unload_model(&name).await {
        return Outcome::Fail(format!("unload {name}: {}", describe(&e)));
    }
    let gone = client.model_metadata(&name, None).await;
    let ready = client.model_ready(&name, None).await;
    // Load it again whatever the answers were: later checks need it.
    let loaded = client.load_model(&name).await;
    if !matches!(gone, Err(Error::NotFound { .. })) {
        return Outcome::Fail(format!("after unload, metadata of {name}: {gone:?}"));
    }
    if matches!(ready, Ok(true)) {
        return Outcome::Fail(format!("after unload, {name} is still ready"));
    }
    if let Err(e) = loaded {
        return Outcome::Fail(format!("load {name}: {}", describe(&e)));
    }
    match client.model_ready(&name, None).await {
        Ok(true) => {}
        other => return Outcome::Fail(format!("after load, {name} ready: {other:?}")),
    }
    let sent = request(&identity, 6);
    match client.infer_request(&sent).await {
        Ok(got) => {
            if let Err(e) = echoed(&identity, &sent, &got) {
                return Outcome::Fail(format!("after load: {e}"));
            }
        }
        Err(e) => return Outcome::Fail(format!("after load: {}", describe(&e))),
    }
    Outcome::Pass(format!(
        "{} models indexed; {name} unloaded (metadata not found, not ready), loaded, answering",
        index.len()
    ))
}

async fn classification(suite: &Suite, target: &Target) -> Outcome {
    if let Err(o) = advertised(suite, target, "classification").await {
        return o;
    }
    let (client, identity) = match fp32(suite, target).await {
        Ok(x) => x,
        Err(o) => return o,
    };
    if identity.batched() {
        return Outcome::NotApplicable(format!(
            "{} batches: classification is checked on an unbatched FP32 identity",
            identity.name
        ));
    }
    let mut sent = request(&identity, 6);
    // An input that holds several values (not a scalar).
    let index = identity
        .pairs
        .iter()
        .position(|p| p.dims.contains(&-1))
        .unwrap_or(0);
    let pair = &identity.pairs[index];
    let values = sent.inputs[index]
        .tensor
        .to_vec::<f32>()
        .unwrap_or_default();
    sent.outputs = vec![serving_proto::oip::RequestedOutput {
        name: pair.output.clone(),
        parameters: [("classification".to_string(), Parameter::Int64(2))].into(),
    }];
    let got = match client.infer_request(&sent).await {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    let Some(t) = got.tensor(&pair.output) else {
        return Outcome::Fail(format!("no output {}", pair.output));
    };
    let Some(elements) = t.elements() else {
        return Outcome::Fail(format!(
            "{} came back as {:?}, not BYTES",
            pair.output,
            t.dtype()
        ));
    };
    let classes: Vec<String> = elements
        .iter()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let want: Vec<usize> = order.into_iter().take(2).collect();
    let indices: Vec<Option<usize>> = classes
        .iter()
        .map(|c| c.rsplit(':').next().and_then(|i| i.parse().ok()))
        .collect();
    if indices != want.iter().map(|&i| Some(i)).collect::<Vec<_>>() {
        return Outcome::Fail(format!(
            "classification=2 of {values:?}: {classes:?}, expected the classes {want:?}"
        ));
    }
    Outcome::Pass(format!("top 2 as value:index: {classes:?}"))
}

async fn shared_memory(suite: &Suite, target: &Target) -> Outcome {
    if let Err(o) = advertised(suite, target, "system_shared_memory").await {
        return o;
    }
    let host = target.authority.rsplit_once(':').map_or("", |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Outcome::NotApplicable(format!(
            "{host} is not this host: shared memory needs a server on the same host"
        ));
    }
    shared_memory_local(suite, target).await
}

#[cfg(unix)]
async fn shared_memory_local(suite: &Suite, target: &Target) -> Outcome {
    use serving_client::shared_memory::SharedMemoryRegion;
    let identity = match suite.identity(target, DataType::Uint8).await {
        Ok(m) => m,
        Err(why) => return Outcome::NotApplicable(why),
    };
    // 1 MiB in one input: [N] unbatched, one row of [N] batched.
    let flat: &[i64] = if identity.batched() { &[-1, -1] } else { &[-1] };
    let Some(pair) = identity.pairs.iter().find(|p| p.dims == flat) else {
        return Outcome::NotApplicable(format!(
            "{} has no input of dims {flat:?} to place 1 MiB in",
            identity.name
        ));
    };
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    const N: usize = 1 << 20;
    let key = |what: &str| {
        format!(
            "/conformance-{}-{}-{what}",
            std::process::id(),
            match target.transport {
                Transport::Grpc => "grpc",
                Transport::Http => "http",
            }
        )
    };
    let (input, output) = match (
        SharedMemoryRegion::create(&key("in"), N),
        SharedMemoryRegion::create(&key("out"), N),
    ) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return Outcome::Fail(format!("creating the regions: {e}")),
    };
    let data: Vec<u8> = (0..N).map(|i| (i * 131 % 251) as u8).collect();
    if let Err(e) = input.write(0, &data) {
        return Outcome::Fail(e.to_string());
    }
    let mut cases = Cases::default();
    for region in [&input, &output] {
        cases.case(
            client
                .register_region(region)
                .await
                .map_err(|e| describe(&e)),
        );
    }
    if !cases.all_passed() {
        return cases.outcome("");
    }
    match client.system_shared_memory_status(Some(input.name())).await {
        Ok(s) if s.len() == 1 && s[0].key == input.key() && s[0].byte_size == N as u64 => {
            cases.pass()
        }
        other => cases.fail(format!("status of {}: {other:?}", input.name())),
    }
    // Other inputs of the identity, if any, travel in the message.
    let others = other_inputs(&identity, pair);
    let placed = client
        .infer(&identity.name)
        .input_in_region(
            &pair.input,
            DataType::Uint8,
            &shape_u8(&identity, N),
            &input,
            0,
        )
        .and_then(|b| b.output_in_region(&pair.output, &output, 0, N));
    let placed = others
        .iter()
        .cloned()
        .fold(placed, |b, t| b.map(|b| b.input(t.name, t.tensor)));
    match placed {
        Ok(b) => match b.send().await {
            Ok(r) => match r.tensor(&pair.output).and_then(|t| t.raw()) {
                Some(raw) if raw[..] == data[..] => cases.pass(),
                Some(_) => cases.fail("the output region does not hold the input's bytes"),
                None => cases.fail(format!("no output {}", pair.output)),
            },
            Err(e) => cases.fail(format!(
                "1 MiB in and out of shared memory: {}",
                describe(&e)
            )),
        },
        Err(e) => cases.fail(e.to_string()),
    }
    // A placement past the end of a registered region of 16 bytes, sent
    // by hand. The region is an object of its own: Triton refuses a second
    // registration of a key already registered ("Invalid shared memory
    // region"), so the overrun is not checked through a second name for
    // `input`'s.
    let small_region = match SharedMemoryRegion::create(&key("small"), 16) {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("creating the small region: {e}")),
    };
    let small = small_region.name().to_owned();
    let overrun = match client.register_region(&small_region).await {
        Ok(()) => {
            // With every other input present, so that only the placement
            // can be what is refused.
            let mut sent = request_u8(&identity, pair, 64);
            sent.inputs.extend(others);
            for (k, v) in [
                (
                    serving_proto::oip::shared_memory::REGION,
                    Parameter::String(small.clone()),
                ),
                (
                    serving_proto::oip::shared_memory::BYTE_SIZE,
                    Parameter::Int64(64),
                ),
            ] {
                sent.inputs[0].parameters.insert(k.into(), v);
            }
            client.infer_request(&sent).await
        }
        Err(e) => Err(e),
    };
    match overrun {
        Err(Error::InvalidArgument { .. }) => cases.pass(),
        other => cases.fail(format!("64 bytes placed in a 16-byte region: {other:?}")),
    }
    // Only this check's regions: the target may have others' registered.
    let ours = [input.name(), output.name(), small.as_str()];
    for name in ours {
        cases.case(
            client
                .unregister_system_shared_memory(Some(name))
                .await
                .map_err(|e| format!("unregistering {name}: {}", describe(&e))),
        );
    }
    match client.system_shared_memory_status(None).await {
        Ok(s) if !s.iter().any(|r| ours.contains(&r.name.as_str())) => cases.pass(),
        other => cases.fail(format!("after unregistering {ours:?}: {other:?}")),
    }
    cases.outcome(format!(
        "1 MiB in and out of shared memory through {}, bit-exact; status, overrun and unregister as specified",
        identity.name
    ))
}

#[cfg(not(unix))]
async fn shared_memory_local(_: &Suite, _: &Target) -> Outcome {
    Outcome::NotApplicable("system shared memory is checked on Unix only".into())
}

/// Zeros for every input of `identity` but `pair`'s, at their smallest
/// shapes.
fn other_inputs(identity: &IdentityModel, pair: &crate::discovery::Pair) -> Vec<NamedTensor> {
    identity
        .pairs
        .iter()
        .filter(|p| p.input != pair.input)
        .map(|p| {
            let shape = fill(&p.dims, 1, 1);
            let n = shape.iter().product::<i64>() as usize;
            NamedTensor::new(
                &p.input,
                Tensor::from_vec(&shape, vec![0u8; n]).expect("sized"),
            )
        })
        .collect()
}

/// The shape of `n` bytes in one input: `[n]`, or one row of them where
/// the identity batches (as its other inputs get one row).
fn shape_u8(identity: &IdentityModel, n: usize) -> Vec<i64> {
    if identity.batched() {
        vec![1, n as i64]
    } else {
        vec![n as i64]
    }
}

/// A request of `n` zero bytes for `pair` (placed by the caller).
fn request_u8(identity: &IdentityModel, pair: &crate::discovery::Pair, n: usize) -> InferRequest {
    InferRequest {
        model_name: identity.name.clone(),
        inputs: vec![NamedTensor::new(
            &pair.input,
            Tensor::from_vec(&shape_u8(identity, n), vec![0u8; n]).expect("n bytes"),
        )],
        ..Default::default()
    }
}

async fn streaming(suite: &Suite, target: &Target) -> Outcome {
    if target.transport != Transport::Grpc {
        return Outcome::NotApplicable("ModelStreamInfer is a gRPC method".into());
    }
    let (client, identity) = match fp32(suite, target).await {
        Ok(x) => x,
        Err(o) => return o,
    };
    let (requests, mut answers) = match client.stream().await {
        Ok(s) => s,
        Err(Error::Unimplemented { message, .. }) => {
            return Outcome::NotApplicable(format!("ModelStreamInfer is not served: {message}"));
        }
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    let mut sent = Vec::new();
    for i in 0..20 {
        let mut r = request(&identity, 6 + i);
        r.id = format!("s{i}");
        if i == 7 {
            r.inputs[0].name = "no_such_input".into();
        }
        if let Err(e) = requests.send(&r).await {
            return Outcome::Fail(format!("sending s{i}: {}", describe(&e)));
        }
        sent.push(r);
    }
    requests.finish();
    let mut cases = Cases::default();
    let mut i = 0;
    // The stream has no deadline of its own: a server that stops
    // answering is a failure after this long, not a hang.
    let patience = std::time::Duration::from_secs(20);
    loop {
        let answer = match tokio::time::timeout(patience, answers.next()).await {
            Ok(Some(answer)) => answer,
            Ok(None) => break,
            Err(_) => {
                cases.fail(format!(
                    "no answer within {patience:?} after {i} answers (the stream was half-closed after 20 requests)"
                ));
                break;
            }
        };
        let Some(r) = sent.get(i) else {
            cases.fail(format!("answer {i} beyond the 20 sent: {answer:?}"));
            break;
        };
        match (i, answer) {
            // The call itself is not served (its status ends the stream).
            (0, Err(Error::Unimplemented { message, .. })) => {
                return Outcome::NotApplicable(format!(
                    "ModelStreamInfer is not served: {message}"
                ));
            }
            (7, Err(Error::Stream { id, .. })) if id == "s7" => cases.pass(),
            (7, other) => cases.fail(format!("s7 (bad): {other:?}")),
            (_, Ok(got)) if got.id == r.id => {
                cases.case(echoed(&identity, r, &got).map_err(|e| format!("{}: {e}", r.id)))
            }
            (_, Ok(got)) => cases.fail(format!("answer {i} has id {}, expected {}", got.id, r.id)),
            (_, Err(e)) => cases.fail(format!("{}: {}", r.id, describe(&e))),
        }
        i += 1;
    }
    if i < sent.len() {
        cases.fail(format!("{} answers for {} requests", i, sent.len()));
    }
    cases.outcome(
        "20 answers in request order with their ids; the bad one in-band, the stream went on",
    )
}
