//! Model repositories: several versions, `with_batch_dim` semantics, and
//! invalid repositories refused at start-up with the file and the reason.

mod common;

use std::path::Path;

use serde_json::{Value, json};

async fn post(server: &reference_server::server::Running, path: &str, body: Value) -> (u16, Value) {
    let r = common::http()
        .post(common::rest(server, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn versions_resolve_newest_and_explicit() {
    let repo = common::repository();
    let server = common::with_repository(repo.path()).await;
    let x = json!([[5.0, 5.0], [5.0, 5.0]]);
    let body = json!({"instances": {"x1": x, "x2": [[1.0, 2.0], [3.0, 4.0]]}});
    let newest = json!({"instances": [{"y": [[4.0, 3.0], [2.0, 1.0]]}]});
    let first = json!({"instances": [{"y": [[6.0, 7.0], [8.0, 9.0]]}]});
    assert_eq!(
        post(&server, "/model/math:calc", body.clone()).await,
        (200, newest.clone())
    );
    assert_eq!(
        post(&server, "/model/math/version/0:calc", body.clone()).await,
        (200, newest)
    );
    assert_eq!(
        post(&server, "/model/math/version/1:calc", body.clone()).await,
        (200, first)
    );
    assert_eq!(
        post(&server, "/model/math/version/3:calc", body).await,
        (
            404,
            json!({"error_msg": "Request servable(math) method(calc)  version(3) , servable is not available"})
        )
    );
    let v: Value = common::http()
        .get(common::rest(&server, "/v2/models/math"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["versions"], json!(["1", "2"]));
    server.shutdown().await;
}

#[tokio::test]
async fn batch_dim_instances_are_checked_by_size_and_batched() {
    let repo = common::repository();
    let server = common::with_repository(repo.path()).await;
    // Batch 2 of [2]-rows: 3 instances run as two padded batches; a [1,2]
    // instance is accepted (sizes, not shapes) and answered with shape [2].
    let body = json!({"instances": [
        {"x1": [1.0, 2.0], "x2": [10.0, 20.0]},
        {"x1": [[3.0, 4.0]], "x2": [30.0, 40.0]},
        {"x1": [5.0, 6.0], "x2": [50.0, 60.0]},
    ]});
    assert_eq!(
        post(&server, "/model/batch:add", body).await,
        (
            200,
            json!({"instances": [{"y": [11.0, 22.0]}, {"y": [33.0, 44.0]}, {"y": [55.0, 66.0]}]})
        )
    );
    let body = json!({"instances": [
        {"x1": [1.0, 2.0], "x2": [10.0, 20.0]},
        {"x1": [1.0, 2.0], "x2": [1.0, 2.0, 3.0]},
        {"x1": [1, 2], "x2": [1.0, 2.0]},
    ]});
    assert_eq!(
        post(&server, "/model/batch:add", body).await,
        (
            200,
            json!({"instances": [
                {"y": [11.0, 22.0]},
                {"error_msg": "Given model input 1 size 12 not match the size 8 defined in model"},
                {"error_msg": "Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model"},
            ]})
        )
    );
    server.shutdown().await;
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const TOML: &str = "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\n\n[[method]]\nname = \"f\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n";

#[tokio::test]
async fn invalid_repositories_name_the_file_and_the_reason() {
    let empty = tempfile::tempdir().unwrap();
    let e = common::start_error(empty.path()).await;
    assert!(
        e.ends_with("the model repository holds no model directory"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("s/1")).unwrap();
    let e = common::start_error(d.path()).await;
    assert!(
        e.contains("/s: neither servable.toml nor config.pbtxt, and no version directory (1/, 2/, ...) holds model.onnx; see docs/server.md"),
        "{e}"
    );

    write(d.path(), "s/servable.toml", b"[[method]\nname=");
    let e = common::start_error(d.path()).await;
    assert!(e.contains("s/servable.toml: TOML parse error"), "{e}");

    write(
        d.path(),
        "s/servable.toml",
        TOML.replace(
            "[\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]",
            "[\"x1\"]\noutputs = [\"y\"]\n\n[[method.stage]]",
        )
        .as_bytes(),
    );
    let e = common::start_error(d.path()).await;
    assert!(e.contains("method 'f' stage 1: input 'x2' is neither a method input nor an output of an earlier stage"), "{e}");

    write(d.path(), "s/servable.toml", TOML.as_bytes());
    let e = common::start_error(d.path()).await;
    assert!(
        e.contains("s/1/m.onnx: model 'm' is missing from version 1"),
        "{e}"
    );

    write(d.path(), "s/1/m.onnx", b"this is not an ONNX model");
    let e = common::start_error(d.path()).await;
    assert!(e.contains("s/1: cannot load model s/1/m.onnx"), "{e}");

    std::fs::remove_dir_all(d.path().join("s/1")).unwrap();
    let e = common::start_error(d.path()).await;
    assert!(
        e.contains("no version directory (1/, 2/, ...) holds the models"),
        "{e}"
    );
}

#[tokio::test]
async fn a_stage_must_fit_its_model() {
    let d = tempfile::tempdir().unwrap();
    let one_input = TOML.replace(
        "inputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n",
        "inputs = [\"x1\"]\noutputs = [\"y\"]\n",
    );
    write(d.path(), "s/servable.toml", one_input.as_bytes());
    write(d.path(), "s/1/m.onnx", &reference_server::demo::add_model());
    let e = common::start_error(d.path()).await;
    assert!(
        e.contains("model 'm' has 2 inputs and 1 outputs, the stage names 1 and 1"),
        "{e}"
    );
}
