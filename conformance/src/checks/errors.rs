//! Error classes: every one the spec names, with MindSpore's exact texts
//! and the Open Inference Protocol's class and status; after each, the
//! server must still be live and correct.

use serving_client::{Error, NamedTensors, Tensor};
use serving_proto::pb::inference::{
    self as oip_pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;

use crate::check::{Cases, Check, MS, OIP, Outcome, Suite, describe};
use crate::profile::Role;
use crate::target::{Target, Transport};

fn square(v: f32) -> Tensor {
    Tensor::from_vec(&[2, 2], vec![v; 4]).expect("4 values")
}

fn good() -> NamedTensors {
    [
        ("x1".to_string(), square(1.0)),
        ("x2".to_string(), square(2.0)),
    ]
    .into()
}

/// A MindSpore request whose whole-request error text is checked exactly.
macro_rules! ms_request_error {
    ($name:literal, $summary:literal, $spec:literal, |$client:ident| $call:expr, $text:expr) => {
        Check {
            name: $name,
            families: MS,
            summary: $summary,
            spec: $spec,
            run: |s, t| {
                Box::pin(async move {
                    let $client = match s.client(t) {
                        Ok(c) => c,
                        Err(e) => return Outcome::Fail(e),
                    };
                    let expected: String = $text;
                    let outcome = match $call.await {
                        Err(Error::Servable(e)) if e.message == expected && e.code != 0 => {
                            Ok(format!("code {}: {}", e.code, e.message))
                        }
                        Err(Error::Servable(e)) => Err(format!(
                            "expected '{expected}', got code {} '{}'",
                            e.code, e.message
                        )),
                        Err(e) => Err(format!(
                            "expected the in-band error '{expected}', got {}",
                            describe(&e)
                        )),
                        Ok(r) => Err(format!("expected '{expected}', got a success: {r:?}")),
                    };
                    after(s, t, outcome).await
                })
            },
        }
    };
}

async fn after(suite: &Suite, target: &Target, outcome: Result<String, String>) -> Outcome {
    let still = suite.still_correct(target).await;
    outcome.and_then(|d| still.map(|()| d)).into()
}

/// MindSpore REST bodies and the exact `error_msg` each gets (spec §3.3-3.5).
pub const MS_REST_BODIES: &[(&str, &str)] = &[
    ("", "http message invalid"),
    (
        r#"{"instance": {"x1": 1}}"#,
        "Parser request failed, key 'instances' expects to exist once, but actually 0 times",
    ),
    (
        r#"{"instances": 1}"#,
        "Parser request failed, instances no key mode is not supported",
    ),
    (
        r#"{"instances": []}"#,
        "Parser request failed, instances value is array type, but no value",
    ),
    (
        r#"{"instances": [{"x1": 1}, {}]}"#,
        "Parser request failed, json array, instance is object type, but no value",
    ),
    (
        r#"{"instances": {"x1": null}}"#,
        "Parser request failed, json value is null, it is not supported",
    ),
    (
        r#"{"instances": {"x1": [[1.1, 1]]}}"#,
        "Parser request failed, json array, elements type is not equal",
    ),
    (
        r#"{"instances": {"x1": ["ABC", "ABC"]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x1": [[false, true], [true]]}}"#,
        "Parser request failed, invalid json array: json size is 1, the dim 1 expected to be 2",
    ),
    (
        r#"{"instances": {"x1": {"b64": "AA==", "type1": "str"}}}"#,
        "Parser request failed, json object, key is not ['b64', 'type', 'shape'], fail key:type1",
    ),
    (
        r#"{"instances": {"x1": {"type": "str"}}}"#,
        "Parser request failed, json object, 'b64' should be specified only one time",
    ),
];

/// MindSpore REST URLs and the exact `error_msg` each gets (spec §3.1).
pub const MS_REST_URLS: &[(&str, &str)] = &[
    (
        "/model/add",
        "please check url, the keyword:[service method] must contain.",
    ),
    (
        "/model:add_common",
        "please check url, the keyword:[model] must contain.",
    ),
    (
        "/model/add/version/abc:add_common",
        "please check url, the keyword:[version] value invalid, request version number abc",
    ),
    (
        "/model/add/version/-1:add_common",
        "please check url, version number range failed, request version number -1",
    ),
];

pub(crate) fn checks() -> Vec<Check> {
    vec![
        ms_request_error!(
            "errors.unknown_servable",
            "predict on a servable the server does not have",
            "mindspore-serving.md §2.7: `Request servable({name}) method({method}) , servable is not available`",
            |c| c.predict("no_such_servable", "predict", &[good()]),
            "Request servable(no_such_servable) method(predict) , servable is not available".into()
        ),
        ms_request_error!(
            "errors.unknown_version",
            "predict on version 99 of add",
            "mindspore-serving.md §2.7: `... method({method})  version({N}) , servable is not available` (double space)",
            |c| c.predict_version("add", "add_common", 99, &[good()]),
            "Request servable(add) method(add_common)  version(99) , servable is not available"
                .into()
        ),
        ms_request_error!(
            "errors.unknown_method",
            "predict on a method add does not have",
            "mindspore-serving.md §2.7: `Request servable({name}) method({method}) , method is not available`",
            |c| c.predict("add", "no_such_method", &[good()]),
            "Request servable(add) method(no_such_method) , method is not available".into()
        ),
        ms_request_error!(
            "errors.missing_input",
            "an instance without x2",
            "mindspore-serving.md §2.7: `Cannot find input {input} in instance input , servable {name}, method {method}`",
            |c| c.predict(
                "add",
                "add_common",
                &[[("x1".to_string(), square(1.0))].into()]
            ),
            "Cannot find input x2 in instance input , servable add, method add_common".into()
        ),
        ms_request_error!(
            "errors.collapse",
            "two instances failing with the same text: one error entry for the request",
            "mindspore-serving.md §2.5 (identical per-instance errors collapse into one)",
            |c| c.predict("add", "add_common", &[bad_size(), bad_size()]),
            "Given model input 1 size 12 not match the size 16 defined in model".into()
        ),
        Check {
            name: "errors.per_instance",
            families: MS,
            summary: "three instances: good, x2 of 12 bytes, x1 of INT32: the good one succeeds, the others carry their own exact texts, in order",
            spec: "mindspore-serving.md §2.5 (form 3: one entry per instance), §2.7 worker texts",
            run: |s, t| Box::pin(per_instance(s, t)),
        },
        Check {
            name: "errors.string_count",
            families: MS,
            summary: "gRPC: a STRING input with two bytes_val entries",
            spec: "mindspore-serving.md §2.7: `Instances input {input} check failed, detail: Instance tensor check failed: bytes or string type shape batch size can only be 1`",
            run: |s, t| Box::pin(string_count(s, t)),
        },
        Check {
            name: "errors.rest_body",
            families: MS,
            summary: "REST: malformed bodies (empty, no instances, nulls, mixed kinds, ragged arrays, bad b64 objects), each with its exact error_msg",
            spec: "mindspore-serving.md §3.2-3.5",
            run: |s, t| Box::pin(rest_table(s, t, MS_REST_BODIES, true)),
        },
        Check {
            name: "errors.rest_url",
            families: MS,
            summary: "REST: URLs without a method, without model, with a bad or negative version, each with its exact error_msg",
            spec: "mindspore-serving.md §3.1",
            run: |s, t| Box::pin(rest_table(s, t, MS_REST_URLS, false)),
        },
        Check {
            name: "errors.oip_classes",
            families: OIP,
            summary: "unknown model, unknown version, missing input, unknown input, wrong datatype, wrong shape, wrong data size, malformed body: each a client error (gRPC NOT_FOUND or INVALID_ARGUMENT; REST 4xx with {\"error\": text})",
            spec: "open-inference-protocol.md §1.1 (error format, status mapping), §1.2 (google.rpc.Status)",
            run: |s, t| Box::pin(oip_classes(s, t)),
        },
    ]
}

fn bad_size() -> NamedTensors {
    [
        ("x1".to_string(), square(1.0)),
        (
            "x2".to_string(),
            Tensor::from_vec(&[3], vec![1f32; 3]).expect("3"),
        ),
    ]
    .into()
}

async fn per_instance(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let bad_dtype: NamedTensors = [
        (
            "x1".to_string(),
            Tensor::from_vec(&[2, 2], vec![1i32; 4]).expect("4"),
        ),
        ("x2".to_string(), square(1.0)),
    ]
    .into();
    let outcome = match client
        .predict("add", "add_common", &[good(), bad_size(), bad_dtype])
        .await
    {
        Ok(r) if r.len() == 3 => {
            let texts: Vec<Result<(), String>> = r
                .iter()
                .map(|x| x.as_ref().map(|_| ()).map_err(|e| e.message.clone()))
                .collect();
            let expected = [
                Ok(()),
                Err("Given model input 1 size 12 not match the size 16 defined in model".to_string()),
                Err("Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model".to_string()),
            ];
            if texts == expected {
                Ok("good, size error, type error, in order".to_string())
            } else {
                Err(format!("expected {expected:?}, got {texts:?}"))
            }
        }
        Ok(r) => Err(format!("3 instances, {} results", r.len())),
        Err(e) => Err(describe(&e)),
    };
    after(suite, target, outcome).await
}

async fn string_count(suite: &Suite, target: &Target) -> Outcome {
    if target.transport != Transport::Grpc {
        return Outcome::NotApplicable("REST cannot express two strings in one input (its own text is checked by errors.rest_body)".into());
    }
    let channel = match suite.channel(target).await {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let two = Tensor::from_strings(&[1], &["a"]).expect("one string");
    let mut request = serving_proto::mindspore::grpc::encode_request(
        "identity_string",
        "predict",
        0,
        &[[("x".to_string(), two)].into()],
    )
    .expect("encodes");
    if let Some(t) = request.instances[0].items.get_mut("x") {
        t.bytes_val.push(bytes::Bytes::from_static(b"b"));
    }
    let expected = "Instances input x check failed, detail: Instance tensor check failed: bytes or string type shape batch size can only be 1";
    let outcome = match MsServiceClient::new(channel).predict(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.error_msg.as_slice() {
                [e] if e.error_msg == expected.as_bytes() && e.error_code != 0 => {
                    Ok(format!("code {}: {expected}", e.error_code))
                }
                other => Err(format!(
                    "expected one entry '{expected}', got {:?}",
                    other
                        .iter()
                        .map(|e| (
                            e.error_code,
                            String::from_utf8_lossy(&e.error_msg).into_owned()
                        ))
                        .collect::<Vec<_>>()
                )),
            }
        }
        Err(s) => Err(format!(
            "expected an in-band error, got gRPC {:?}: {}",
            s.code(),
            s.message()
        )),
    };
    after(suite, target, outcome).await
}

async fn rest_table(
    suite: &Suite,
    target: &Target,
    table: &[(&str, &str)],
    bodies: bool,
) -> Outcome {
    if target.transport != Transport::Http {
        return Outcome::NotApplicable("a REST grammar check".into());
    }
    let http = match suite.http() {
        Ok(h) => h,
        Err(e) => return Outcome::Fail(e),
    };
    for (input, expected) in table {
        let (url, body) = if bodies {
            (
                format!("{}/model/add:add_common", target.http_base()),
                (*input).to_owned(),
            )
        } else {
            (format!("{}{input}", target.http_base()), serde_json::json!({"instances": [{"x1": [[1.0, 1.0], [1.0, 1.0]], "x2": [[1.0, 1.0], [1.0, 1.0]]}]}).to_string())
        };
        let reply = match http.post(&url).body(body).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Fail(format!("{input}: {e}")),
        };
        let text = reply.text().await.unwrap_or_default();
        let got = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("error_msg")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned)
            });
        if got.as_deref() != Some(expected) {
            return Outcome::Fail(format!(
                "{input}: expected error_msg '{expected}', got {text}"
            ));
        }
    }
    after(
        suite,
        target,
        Ok(format!("{} cases, every error_msg exact", table.len())),
    )
    .await
}

/// One OIP negative case: a name and the request.
struct OipCase {
    name: &'static str,
    model: String,
    version: &'static str,
    inputs: Vec<(&'static str, &'static str, Vec<i64>, Vec<f32>)>,
}

/// The cases, on the target's add model `add`.
fn oip_cases(add: &str) -> Vec<OipCase> {
    let input =
        |name, datatype, shape: &[i64], values: Vec<f32>| (name, datatype, shape.to_vec(), values);
    let x1 = input("x1", "FP32", &[2, 2], vec![1.0; 4]);
    let x2 = input("x2", "FP32", &[2, 2], vec![1.0; 4]);
    let case = |name, model: &str, version, inputs| OipCase {
        name,
        model: model.to_owned(),
        version,
        inputs,
    };
    vec![
        case(
            "unknown model",
            "no_such_model",
            "",
            vec![x1.clone(), x2.clone()],
        ),
        case("unknown version", add, "99", vec![x1.clone(), x2.clone()]),
        case("missing input", add, "", vec![x1.clone()]),
        case(
            "unknown input",
            add,
            "",
            vec![
                x1.clone(),
                x2.clone(),
                input("x9", "FP32", &[2, 2], vec![1.0; 4]),
            ],
        ),
        case(
            "wrong datatype",
            add,
            "",
            vec![input("x1", "INT32", &[2, 2], vec![1.0; 4]), x2.clone()],
        ),
        case(
            "wrong shape",
            add,
            "",
            vec![input("x1", "FP32", &[4, 1], vec![1.0; 4]), x2.clone()],
        ),
        case(
            "wrong data size",
            add,
            "",
            vec![input("x1", "FP32", &[2, 2], vec![1.0; 3]), x2],
        ),
    ]
}

async fn oip_classes(suite: &Suite, target: &Target) -> Outcome {
    // Every case runs, and each failing one is reported: a wrong class
    // after an earlier failure is not hidden behind it.
    let add = match suite.model(target, Role::Add).await {
        Ok(add) => add,
        Err(why) => return Outcome::NotApplicable(why),
    };
    // A server whose metadata names no versions (KServe) has no version
    // to be unknown: that case does not apply there.
    let versioned = suite
        .capabilities(target)
        .await
        .models
        .get(&add)
        .is_none_or(|m| !m.versions.is_empty());
    let mut cases = Cases::default();
    let mut seen = Vec::new();
    for case in oip_cases(&add)
        .into_iter()
        .filter(|c| versioned || c.version.is_empty())
    {
        let result = match target.transport {
            Transport::Grpc => grpc_class(suite, target, add_request(&case)).await,
            Transport::Http => oip_rest_case(suite, target, &case).await,
        };
        match result {
            Ok(class) => {
                seen.push(format!("{}: {class}", case.name));
                cases.pass();
            }
            Err(e) => cases.fail(format!("{}: {e}", case.name)),
        }
        if let Err(e) = suite.still_correct(target).await {
            cases.fail(format!("after {}: {e}", case.name));
        }
    }
    // A malformed message of the transport.
    let malformed = match target.transport {
        Transport::Http => {
            let url = format!("{}/v2/models/{add}/infer", target.http_base());
            match suite.http() {
                Ok(h) => match h
                    .post(url)
                    .header("content-type", "application/json")
                    .body("{\"inputs\": [")
                    .send()
                    .await
                {
                    Ok(r) => rest_class(r).await,
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            }
        }
        Transport::Grpc => {
            // Typed and raw contents in one request.
            let mut req = add_request(&oip_cases(&add)[0]);
            req.model_name = add.clone();
            req.inputs[0].contents = Some(oip_pb::InferTensorContents {
                fp32_contents: vec![1.0; 4],
                ..Default::default()
            });
            grpc_class(suite, target, req).await
        }
    };
    match malformed {
        Ok(class) => {
            seen.push(format!("malformed: {class}"));
            cases.pass();
        }
        Err(e) => cases.fail(format!("malformed: {e}")),
    }
    if !cases.all_passed() {
        return cases.outcome("");
    }
    if !versioned {
        seen.push("unknown version: not checked, the metadata names no versions".into());
    }
    after(suite, target, Ok(seen.join("; "))).await
}

fn add_request(case: &OipCase) -> oip_pb::ModelInferRequest {
    oip_pb::ModelInferRequest {
        model_name: case.model.clone(),
        model_version: case.version.into(),
        inputs: case
            .inputs
            .iter()
            .map(
                |(name, dt, shape, _)| oip_pb::model_infer_request::InferInputTensor {
                    name: (*name).into(),
                    datatype: (*dt).into(),
                    shape: shape.clone(),
                    ..Default::default()
                },
            )
            .collect(),
        raw_input_contents: case
            .inputs
            .iter()
            .map(|(_, _, _, v)| {
                bytes::Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            })
            .collect(),
        ..Default::default()
    }
}

async fn grpc_class(
    suite: &Suite,
    target: &Target,
    req: oip_pb::ModelInferRequest,
) -> Result<String, String> {
    let mut client = GrpcInferenceServiceClient::new(suite.channel(target).await?);
    match client.model_infer(req).await {
        Ok(_) => Err("accepted".into()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) =>
        {
            Ok(format!("{:?}", s.code()))
        }
        Err(s) => Err(format!(
            "expected NOT_FOUND or INVALID_ARGUMENT, got {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}

async fn rest_class(reply: reqwest::Response) -> Result<String, String> {
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap_or_default();
    if !(400..500).contains(&status) {
        return Err(format!("expected a 4xx, got {status}: {text}"));
    }
    let error = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    match error {
        Some(_) => Ok(status.to_string()),
        None => Err(format!(
            "{status} without an {{\"error\": text}} body: {text}"
        )),
    }
}

async fn oip_rest_case(suite: &Suite, target: &Target, case: &OipCase) -> Result<String, String> {
    let inputs: Vec<serde_json::Value> = case
        .inputs
        .iter()
        .map(|(name, dt, shape, v)| {
            // Values written as the datatype's JSON (integers for INT32), so
            // that a wrong datatype is refused by the type check, not by
            // JSON parsing of floats as integers.
            let data: serde_json::Value = if dt.starts_with("INT") || dt.starts_with("UINT") {
                v.iter().map(|&x| x as i64).collect::<Vec<_>>().into()
            } else {
                v.clone().into()
            };
            serde_json::json!({"name": name, "datatype": dt, "shape": shape, "data": data})
        })
        .collect();
    let body = serde_json::json!({ "inputs": inputs }).to_string();
    let path = if case.version.is_empty() {
        format!("/v2/models/{}/infer", case.model)
    } else {
        format!("/v2/models/{}/versions/{}/infer", case.model, case.version)
    };
    let reply = suite
        .http()?
        .post(format!("{}{path}", target.http_base()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    rest_class(reply).await
}
