//! Round trips through the Open Inference Protocol codecs: gRPC with raw and
//! typed contents, REST with JSON and with the binary extension, for every
//! type the protocol carries and random shapes, including empty and scalar.

mod common;

use bytes::Bytes;
use common::{EXACT, Limits, all_but, any_tensor};
use proptest::prelude::*;
use prost::Message;
use serving_proto::DataType;
use serving_proto::oip::grpc::{self as oip_grpc, Contents};
use serving_proto::oip::rest as oip_rest;
use serving_proto::oip::{InferRequest, InferResponse, NamedTensor, Parameter, RequestedOutput};
use serving_proto::pb::inference as pb;

const JSON: Limits = Limits {
    finite: true,
    utf8: true,
    zero_only_last: false,
    single_string: false,
};

fn oip_types() -> Vec<DataType> {
    all_but(&[DataType::String])
}

fn tensors(limits: Limits) -> impl Strategy<Value = Vec<NamedTensor>> {
    prop::collection::vec(any_tensor(&oip_types(), limits), 0..4).prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .map(|(i, t)| NamedTensor::new(format!("t{i}"), t))
            .collect()
    })
}

fn request(limits: Limits) -> impl Strategy<Value = InferRequest> {
    (tensors(limits), ".{0,8}", any::<bool>()).prop_map(|(inputs, id, ask)| InferRequest {
        model_name: String::new(),
        model_version: String::new(),
        id,
        parameters: [("priority".to_string(), Parameter::Int64(3))].into(),
        outputs: if ask {
            vec![RequestedOutput {
                name: "y".into(),
                parameters: [("binary_data".to_string(), Parameter::Bool(true))].into(),
            }]
        } else {
            vec![]
        },
        inputs,
    })
}

fn response(limits: Limits) -> impl Strategy<Value = InferResponse> {
    (tensors(limits), ".{0,8}").prop_map(|(outputs, id)| InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id,
        parameters: Default::default(),
        outputs,
    })
}

proptest! {
    #[test]
    fn grpc_request_round_trips(mut req in request(EXACT), typed in any::<bool>()) {
        req.model_name = "identity".into();
        let contents = if typed { Contents::Typed } else { Contents::Raw };
        let msg = oip_grpc::encode_request(&req, contents).unwrap();
        let wire = Bytes::from(msg.encode_to_vec());
        let decoded = oip_grpc::decode_request(pb::ModelInferRequest::decode(wire).unwrap()).unwrap();
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn grpc_response_round_trips(resp in response(EXACT), typed in any::<bool>()) {
        let contents = if typed { Contents::Typed } else { Contents::Raw };
        let msg = oip_grpc::encode_response(&resp, contents).unwrap();
        let decoded = oip_grpc::decode_response(pb::ModelInferResponse::decode(msg.encode_to_vec().as_slice()).unwrap()).unwrap();
        prop_assert_eq!(decoded, resp);
    }

    #[test]
    fn rest_json_request_round_trips(req in request(JSON)) {
        let body = oip_rest::encode_request(&req, false).unwrap();
        prop_assert_eq!(body.header_len, None);
        let decoded = oip_rest::decode_request(body.to_bytes(), None).unwrap();
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn rest_binary_request_round_trips(req in request(EXACT)) {
        let body = oip_rest::encode_request(&req, true).unwrap();
        prop_assert_eq!(serving_proto::size::oip_rest_request(&req, true).unwrap(), body.len() as u64);
        let header = body.header_len.map(|n| n.to_string());
        let header_len = header.map(|h| oip_rest::parse_header_length(&h, body.len()).unwrap());
        let decoded = oip_rest::decode_request(body.to_bytes(), header_len).unwrap();
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn rest_response_round_trips(resp in response(JSON), binary_mask in any::<u8>()) {
        let names: Vec<String> = resp.outputs.iter().map(|o| o.name.clone()).collect();
        let binary = |name: &str| names.iter().position(|n| n == name).is_some_and(|i| binary_mask & (1 << i) != 0);
        let body = oip_rest::encode_response(&resp, binary).unwrap();
        let decoded = oip_rest::decode_response(body.to_bytes(), body.header_len).unwrap();
        prop_assert_eq!(decoded, resp);
    }

    #[test]
    fn rest_decoders_are_total(body in prop::collection::vec(any::<u8>(), 0..256), header in prop::option::of(0usize..300)) {
        let _ = oip_rest::decode_request(Bytes::from(body.clone()), header.filter(|&h| h <= body.len()));
        let _ = oip_rest::decode_response(Bytes::from(body), None);
    }
}
