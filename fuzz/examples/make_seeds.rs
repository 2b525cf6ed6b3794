//! Writes the seed corpora of every target from the project's own valid
//! requests and replies: `cargo run --example make_seeds` (in `fuzz/`).
//! The seeds are committed under `seeds/<target>/`.

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use serving_proto::compression::{self, Encoding};
use serving_proto::mindspore::{self, Outcome, ServableError, StatusCode};
use serving_proto::oip::shared_memory;
use serving_proto::oip::{
    self, InferRequest, InferResponse, NamedTensor, Parameter, RequestedOutput,
};
use serving_proto::{NamedTensors, Tensor};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create the seed folder");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn instances() -> Vec<Vec<NamedTensors>> {
    let square = |v: f32| Tensor::from_slice(&[2, 2], &[v, v + 1.0, v + 2.0, v + 3.0]).unwrap();
    vec![
        vec![
            [
                ("x1".to_string(), square(1.0)),
                ("x2".to_string(), square(5.0)),
            ]
            .into(),
        ],
        vec![
            [(
                "x1".to_string(),
                Tensor::from_slice(&[2, 2], &[1i32, 2, 3, 4]).unwrap(),
            )]
            .into(),
            [(
                "x1".to_string(),
                Tensor::from_slice(&[2, 2], &[5i32, 6, 7, 8]).unwrap(),
            )]
            .into(),
        ],
        vec![
            [
                (
                    "text".to_string(),
                    Tensor::from_strings(&[1], &["hello"]).unwrap(),
                ),
                ("flag".to_string(), Tensor::scalar(true)),
                ("n".to_string(), Tensor::scalar(7i64)),
                (
                    "h".to_string(),
                    Tensor::from_slice(
                        &[2],
                        &[half::f16::from_f32(0.5), half::f16::from_f32(-2.0)],
                    )
                    .unwrap(),
                ),
            ]
            .into(),
        ],
        vec![
            [(
                "blob".to_string(),
                Tensor::from_byte_strings(&[1], &[b"\x00\x01\xff".as_slice()]).unwrap(),
            )]
            .into(),
        ],
    ]
}

fn oip_requests() -> Vec<InferRequest> {
    let mut parameters = oip::Parameters::new();
    parameters.insert("priority".into(), Parameter::Int64(1));
    parameters.insert("tag".into(), Parameter::String("seed".into()));
    vec![
        InferRequest {
            model_name: "add".into(),
            id: "1".into(),
            inputs: vec![
                NamedTensor::new(
                    "x1",
                    Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0]).unwrap(),
                ),
                NamedTensor::new("x2", Tensor::from_slice(&[2, 2], &[0.5f32; 4]).unwrap()),
            ],
            outputs: vec![RequestedOutput {
                name: "y".into(),
                parameters: Default::default(),
            }],
            ..Default::default()
        },
        InferRequest {
            model_name: "identity".into(),
            model_version: "3".into(),
            parameters,
            inputs: vec![
                NamedTensor::new(
                    "b",
                    Tensor::from_byte_strings(&[2], &[b"ab".as_slice(), b""]).unwrap(),
                ),
                NamedTensor::new("u", Tensor::from_slice(&[3], &[1u64, 2, u64::MAX]).unwrap()),
                NamedTensor::new("q", Tensor::from_slice(&[1, 2], &[true, false]).unwrap()),
                NamedTensor::new("e", Tensor::from_slice::<f64>(&[0, 3], &[]).unwrap()),
            ],
            ..Default::default()
        },
    ]
}

fn main() {
    for (i, inst) in instances().iter().enumerate() {
        let grpc = mindspore::grpc::encode_request("add", "add_common", i as u64, inst).unwrap();
        write(
            "ms_grpc_request",
            &format!("request-{i}"),
            &grpc.encode_to_vec(),
        );
        if let Ok(json) = mindspore::rest::encode_request(inst) {
            let url = if i % 2 == 0 {
                "/model/add:add_common".to_string()
            } else {
                format!("/model/add/version/{i}:add_cast")
            };
            write(
                "ms_rest_request",
                &format!("request-{i}"),
                format!("{url}\n{json}").as_bytes(),
            );
        }
        // Replies: all succeeded, one failure for all, mixed.
        let chunks = serving_proto::chunked::predict_request(grpc.clone(), u64::MAX).unwrap();
        let first = chunks[0].len().min(255) as u8;
        let mut seed = vec![0xff, 0xff, 3, first, first.saturating_add(7), 0xff];
        seed.extend(chunks.iter().flat_map(|c| c.iter().copied()));
        write("grpc_unary", &format!("ms-request-{i}"), &seed);
        let ok: Vec<_> = inst.iter().map(|x| Ok(x.clone())).collect();
        let mut mixed = ok.clone();
        mixed[0] = Err(ServableError::new(
            StatusCode::InvalidInputs,
            "Given model input 1 size 12 not match the size 16 defined in model",
        ));
        let failed = Outcome::Failed(ServableError::new(
            StatusCode::InvalidInputs,
            "servable is not available",
        ));
        for (k, outcome) in [Outcome::Instances(ok), Outcome::Instances(mixed), failed]
            .iter()
            .enumerate()
        {
            let sent = inst.len() as u8 - 1;
            if let Ok(reply) = mindspore::grpc::encode_reply(None, outcome) {
                let mut seed = vec![0, sent];
                seed.extend(reply.encode_to_vec());
                write("client_replies", &format!("ms-grpc-{i}-{k}"), &seed);
            }
            if let Ok(json) = mindspore::rest::encode_response(outcome) {
                let mut seed = vec![1, sent];
                seed.extend(json.as_bytes());
                write("client_replies", &format!("ms-rest-{i}-{k}"), &seed);
            }
        }
    }
    for (i, req) in oip_requests().iter().enumerate() {
        for contents in [oip::grpc::Contents::Raw, oip::grpc::Contents::Typed] {
            let m = oip::grpc::encode_request(req, contents).unwrap();
            write(
                "oip_grpc_request",
                &format!("request-{i}-{contents:?}"),
                &m.encode_to_vec(),
            );
            // The framed chunks both sides send, cut after the first chunk.
            let chunks = serving_proto::chunked::model_infer_request(m, u64::MAX).unwrap();
            let first = chunks[0].len().min(255) as u8;
            let mut seed = vec![0xff, 0xff, 1, first, first, first];
            seed.extend(chunks.iter().flat_map(|c| c.iter().copied()));
            write("grpc_unary", &format!("request-{i}-{contents:?}"), &seed);
        }
        let json = oip::rest::encode_request(req, false).unwrap();
        write(
            "oip_rest_request",
            &format!("request-{i}"),
            &json.to_bytes(),
        );
        // A stream of two messages, one plain and one compressed, as a
        // streaming call's body; the same bodies compressed alone.
        let m = oip::grpc::encode_request(req, oip::grpc::Contents::Raw)
            .unwrap()
            .encode_to_vec();
        for (e, control) in [(Encoding::Gzip, 16u8), (Encoding::Deflate, 33)] {
            let packed = compression::compress(e, &m);
            let mut seed = vec![control];
            for (flag, message) in [(0u8, &m), (1, &packed)] {
                seed.push(flag);
                seed.extend((message.len() as u32).to_be_bytes());
                seed.extend(message.iter());
            }
            write("stream_frames", &format!("request-{i}-{}", e.name()), &seed);
            write(
                "compressed_body",
                &format!("request-{i}-{}", e.name()),
                &compression::compress(e, &json.to_bytes()),
            );
        }
        // The request with its first input placed in shared memory.
        if let Some(first) = req.inputs.first() {
            let mut placed = req.clone();
            let size = serving_proto::oip::raw_contents(&first.tensor).len() as i64;
            placed.inputs[0].parameters.insert(
                shared_memory::REGION.into(),
                Parameter::String("region".into()),
            );
            placed.inputs[0]
                .parameters
                .insert(shared_memory::BYTE_SIZE.into(), Parameter::Int64(size));
            placed.inputs[0]
                .parameters
                .insert(shared_memory::OFFSET.into(), Parameter::Int64(8));
            // REST: the JSON without the input's data.
            let mut value: serde_json::Value = serde_json::from_slice(
                &oip::rest::encode_request(&placed, false)
                    .unwrap()
                    .to_bytes(),
            )
            .unwrap();
            value["inputs"][0].as_object_mut().unwrap().remove("data");
            let mut seed = vec![4u8];
            seed.extend(value.to_string().as_bytes());
            write("shared_memory_parameters", &format!("rest-{i}"), &seed);
            // gRPC: no raw entry for the placed input.
            let mut m = oip::grpc::encode_request(&placed, oip::grpc::Contents::Raw).unwrap();
            m.raw_input_contents.remove(0);
            let mut seed = vec![4u8];
            seed.extend(m.encode_to_vec());
            write("shared_memory_parameters", &format!("grpc-{i}"), &seed);
        }
        let binary = oip::rest::encode_request(req, true).unwrap();
        let mut seed = binary.header_len.unwrap_or(0).to_string().into_bytes();
        seed.push(b'\n');
        seed.extend_from_slice(&binary.to_bytes());
        write("oip_rest_binary", &format!("request-{i}"), &seed);
        let response = InferResponse {
            model_name: req.model_name.clone(),
            model_version: "1".into(),
            id: req.id.clone(),
            parameters: Default::default(),
            outputs: req.inputs.clone(),
        };
        let m = oip::grpc::encode_response(&response, oip::grpc::Contents::Raw).unwrap();
        let mut seed = vec![2, 0];
        seed.extend(m.encode_to_vec());
        write("client_replies", &format!("oip-grpc-{i}"), &seed);
        for binary in [false, true] {
            let body = oip::rest::encode_response(&response, |_| binary).unwrap();
            let mut seed = vec![3, 0];
            let len = body.header_len.map_or(u16::MAX, |n| n as u16);
            seed.extend(len.to_le_bytes());
            seed.extend_from_slice(&body.to_bytes());
            write("client_replies", &format!("oip-rest-{i}-{binary}"), &seed);
        }
    }
    write(
        "oip_rest_binary",
        "raw-input",
        b"0\n\x00\x00\x80\x3f\x00\x00\x00\x40",
    );
    // Frame headers: the limit (4 bytes LE), then a header and some payload.
    for (name, limit, header) in [
        ("small", 100u32 << 20, [0u8, 0, 0, 0, 16]),
        ("at-limit", 1 << 20, [0, 0, 0x10, 0, 0]),
        ("over", 1 << 20, [0, 0, 0x10, 0, 1]),
        ("compressed", 4 << 20, [1, 0, 0, 1, 0]),
    ] {
        let mut seed = limit.to_le_bytes().to_vec();
        seed.extend(header);
        seed.extend(Bytes::from_static(b"payload"));
        write("grpc_frame", name, &seed);
    }
    write(
        "grpc_frame",
        "text",
        b"\0\0\0\x01Received message larger than max (419429033 vs. 104857600)",
    );
    for (i, seed) in [
        [0u8, 2, 2, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0xff],
        [11, 1, 3, 4, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0],
    ]
    .iter()
    .enumerate()
    {
        write("tensor_structured", &format!("seed-{i}"), seed);
    }
    println!("seeds written under {}/seeds", env!("CARGO_MANIFEST_DIR"));
}
