//! Every error text of spec §3 (MindSpore REST), asserted byte for byte.

use serving_proto::mindspore::rest::{self, RestError};
use serving_proto::mindspore::url;

fn err(body: &str) -> String {
    rest::decode_request(body.as_bytes(), 1 << 20)
        .expect_err(body)
        .to_string()
}

/// (request body, exact `error_msg`) for the body-content grammar of §3.3-§3.5.
const CASES: &[(&str, &str)] = &[
    // §3.3 request grammar
    (
        r#"{"instance": {"x": 1}}"#,
        "Parser request failed, key 'instances' expects to exist once, but actually 0 times",
    ),
    (
        r#"[1, 2]"#,
        "Parser request failed, key 'instances' expects to exist once, but actually 0 times",
    ),
    (
        r#"{"instances": 1}"#,
        "Parser request failed, instances no key mode is not supported",
    ),
    (
        r#"{"instances": [1, {"x": 1}]}"#,
        "Parser request failed, instances no key mode is not supported",
    ),
    (
        r#"{"instances": []}"#,
        "Parser request failed, instances value is array type, but no value",
    ),
    (
        r#"{"instances": {}}"#,
        "Parser request failed, json object, value is empty",
    ),
    (
        r#"{"instances": [{"x": 1}, 2]}"#,
        "Parser request failed, json array, instance is not object type",
    ),
    (
        r#"{"instances": [{"x": 1}, {}]}"#,
        "Parser request failed, json array, instance is object type, but no value",
    ),
    (
        r#"{"instances": {"": 1}}"#,
        "Parser request failed, string key is empty",
    ),
    (
        r#"{"instances": {"x": null}}"#,
        "Parser request failed, json value is null, it is not supported",
    ),
    // §3.4 arrays
    (
        r#"{"instances": {"x": []}}"#,
        "Parser request failed, json array, shape is empty",
    ),
    (
        r#"{"instances": {"x": [[]]}}"#,
        "Parser request failed, json array, data type is unknown",
    ),
    (
        r#"{"instances": {"x": [[1.1, 1]]}}"#,
        "Parser request failed, json array, elements type is not equal",
    ),
    (
        r#"{"instances": {"x": [[1, 1.2]]}}"#,
        "Parser request failed, json array, elements type is not equal",
    ),
    (
        r#"{"instances": {"x": [[false, 1]]}}"#,
        "Parser request failed, json array, elements type is not equal",
    ),
    (
        r#"{"instances": {"x": [1.1, "abc"]}}"#,
        "Parser request failed, json array, elements type is not equal",
    ),
    (
        r#"{"instances": {"x": ["ABC", "ABC"]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x": ["ABC", ["ABC"]]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x": ["abc", 1.1]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x": [{"b64": "AA=="}, "abc"]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x": [{"b64": "AA==", "type": "str"}, {"b64": "AA==", "type": "str"}]}}"#,
        "Parser request failed, json array, string or bytes type only support one item",
    ),
    (
        r#"{"instances": {"x": [{"b64": "AAAAAA==", "type": "int32"}]}}"#,
        "Parser request failed, json array, item is object type, object only support string or bytes type",
    ),
    (
        r#"{"instances": {"x": [[false], true]}}"#,
        "Parser request failed, invalid json array: json type is not array",
    ),
    (
        r#"{"instances": {"x": [false, [true]]}}"#,
        "Parser request failed, json array, data should be number, bool, string or bytes",
    ),
    (
        r#"{"instances": {"x": [true, {"b64": "AA=="}]}}"#,
        "Parser request failed, json array, data should be number, bool, string or bytes",
    ),
    (
        r#"{"instances": {"x": [[false, true], [true]]}}"#,
        "Parser request failed, invalid json array: json size is 1, the dim 1 expected to be 2",
    ),
    (
        r#"{"instances": {"x": [[[false, true]], [[true]]]}}"#,
        "Parser request failed, invalid json array: json size is 1, the dim 2 expected to be 2",
    ),
    // §3.5 b64 objects
    (
        r#"{"instances": {"x": {"b64": "", "type": "str", "shape": [1], "extra": 1}}}"#,
        "Parser request failed, json object, items size is more than 3, only support specified ['b64', 'type', 'shape']",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type1": "str"}}}"#,
        "Parser request failed, json object, key is not ['b64', 'type', 'shape'], fail key:type1",
    ),
    (
        r#"{"instances": {"x": {"base64": "AA=="}}}"#,
        "Parser request failed, json object, key is not ['b64', 'type', 'shape'], fail key:base64",
    ),
    (
        r#"{"instances": {"x": {"type": "str"}}}"#,
        "Parser request failed, json object, 'b64' should be specified only one time",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": 1}}}"#,
        "Parser request failed, json object, key is 'type', value should be string type",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": "dtype_unknow"}}}"#,
        "Parser request failed, json object, specified type:'dtype_unknow' is illegal",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": ""}}}"#,
        "Parser request failed, json object, specified type:'' is illegal",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": "INt"}}}"#,
        "Parser request failed, json object, specified type:'INt' is illegal",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": 3}}}"#,
        "Parser request failed, json object, key is 'shape', value should be array type",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": [[]]}}}"#,
        "Parser request failed, json object, key is 'shape', array value should be unsigned integer",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": ["abc"]}}}"#,
        "Parser request failed, json object, key is 'shape', array value should be unsigned integer",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": [1.1]}}}"#,
        "Parser request failed, json object, key is 'shape', array value should be unsigned integer",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": [-1]}}}"#,
        "Parser request failed, json object, key is 'shape', array value should be unsigned integer",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": "int8", "shape": [1,2,0,1]}}}"#,
        "Parser request failed, json object, key is 'shape', invalid shape value [1,2,0,1]",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": "str", "shape": [0]}}}"#,
        "Parser request failed, json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "type": "str", "shape": [2]}}}"#,
        "Parser request failed, json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'",
    ),
    (
        r#"{"instances": {"x": {"b64": "AA==", "shape": [0]}}}"#,
        "Parser request failed, json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'",
    ),
    (
        r#"{"instances": {"x": {"b64": 123}}}"#,
        "Parser request failed, get scalar data failed, type is string, but json is not string type",
    ),
    (
        r#"{"instances": {"x": {"b64": "AAA"}}}"#,
        "Parser request failed, 'AAA' is illegal b64 encode string",
    ),
    (
        r#"{"instances": {"x": {"b64": "A*A="}}}"#,
        "Parser request failed, 'A*A=' is illegal b64 encode string",
    ),
    (
        r#"{"instances": {"x": {"b64": "", "type": "fp16", "shape": [1,1]}}}"#,
        "Parser request failed, size is not matched, decode base64 size:0; Given info: type:float16; type size:2; element nums:1",
    ),
    (
        r#"{"instances": {"x": {"b64": "AAAAAA==", "type": "fp32", "shape": [2]}}}"#,
        "Parser request failed, size is not matched, decode base64 size:4; Given info: type:float32; type size:4; element nums:2",
    ),
    (
        r#"{"instances": {"x": {"b64": "AAAAAAAAAAA=", "type": "int32"}}}"#,
        "Parser request failed, size is not matched, decode base64 size:8; Given info: type:int32; type size:4; element nums:1",
    ),
    // Where MindSpore narrows silently, we name the value.
    (
        r#"{"instances": {"x": 3000000000}}"#,
        "Parser request failed, json integer 3000000000 is out of the int32 range; send it in a b64 object with an explicit 'type' such as int64",
    ),
    (
        r#"{"instances": {"x": [1, -2147483649]}}"#,
        "Parser request failed, json integer -2147483649 is out of the int32 range; send it in a b64 object with an explicit 'type' such as int64",
    ),
    (
        r#"{"instances": {"x": 1e300}}"#,
        "Parser request failed, json number 1e+300 is out of the float32 range; send it in a b64 object with 'type' fp64",
    ),
];

#[test]
fn every_body_error_text_is_mindspores() {
    for (body, expected) in CASES {
        assert_eq!(err(body), *expected, "body: {body}");
    }
}

#[test]
fn body_error_texts_snapshot() {
    let table: Vec<String> = CASES
        .iter()
        .map(|(body, _)| format!("{body}\n  => {}", err(body)))
        .collect();
    insta::assert_snapshot!(table.join("\n"));
}

#[test]
fn http_phase_errors_have_no_prefix() {
    assert_eq!(
        rest::decode_request(b"", 100).unwrap_err().to_string(),
        "http message invalid"
    );
    let big = vec![b' '; 1_048_577];
    assert_eq!(
        rest::decode_request(&big, 1_048_576)
            .unwrap_err()
            .to_string(),
        "http message is bigger than 1048576"
    );
    // Exactly at the limit is not "bigger": it goes on to the JSON parser.
    let at = vec![b' '; 1_048_576];
    assert!(matches!(
        rest::decode_request(&at, 1_048_576),
        Err(RestError::IllegalJson(_))
    ));
    let raw_floats: Vec<u8> = 3.2f32.to_le_bytes().repeat(4);
    assert!(
        rest::decode_request(&raw_floats, 100)
            .unwrap_err()
            .to_string()
            .starts_with("Illegal JSON format.")
    );
    assert_eq!(
        RestError::OnlyPost.to_string(),
        "http message only support POST right now"
    );
}

#[test]
fn url_errors_have_no_prefix() {
    let e: RestError = url::parse("/x/:add_common").unwrap_err().into();
    assert_eq!(
        e.to_string(),
        "please check url, the keyword:[model] must contain."
    );
    let e: RestError = url::parse("/model/add").unwrap_err().into();
    assert_eq!(
        e.to_string(),
        "please check url, the keyword:[service method] must contain."
    );
    let e: RestError = url::parse("/model/add/version/-1:add_common")
        .unwrap_err()
        .into();
    assert_eq!(
        e.to_string(),
        "please check url, version number range failed, request version number -1"
    );
}

#[test]
fn reply_construction_errors() {
    use serving_proto::mindspore::Outcome;
    use serving_proto::{NamedTensors, Tensor};
    let mut outputs = NamedTensors::new();
    outputs.insert("y".into(), Tensor::from_strings(&[1, 1], &["a"]).unwrap());
    let e = rest::encode_response(&Outcome::Instances(vec![Ok(outputs)])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Failed to construct the response: reply string or bytes, shape should be 1, given shape size:2"
    );
    let e = rest::encode_response(&Outcome::Instances(vec![Ok(NamedTensors::new())])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Failed to construct the response: reply instance items is empty"
    );
}
