//! Hot reload: versions added and removed while clients are sending, broken
//! versions ignored, and the repository endpoints.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::{NamedTensors, Tensor};

async fn serve(dir: &std::path::Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: Some(Duration::from_millis(100)),
        ..common::config()
    })
    .await
}

/// Adds a version atomically: written under a hidden name, then renamed.
fn add_version(repo: &std::path::Path, servable: &str, version: u64, model: &[u8]) {
    let hidden = repo.join(servable).join(format!(".{version}"));
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::write(hidden.join("m.onnx"), model).unwrap();
    std::fs::rename(&hidden, repo.join(servable).join(version.to_string())).unwrap();
}

fn inputs() -> NamedTensors {
    [
        (
            "x1".to_string(),
            Tensor::from_slice(&[2, 2], &[6f32; 4]).unwrap(),
        ),
        (
            "x2".to_string(),
            Tensor::from_slice(&[2, 2], &[2f32; 4]).unwrap(),
        ),
    ]
    .into()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn newest_answer(server: &Running) -> f32 {
    let mut c = common::ms(server).await;
    let req = mindspore::grpc::encode_request("math", "calc", 0, &[inputs()]).unwrap();
    let reply = c.predict(req).await.unwrap().into_inner();
    let out = mindspore::grpc::decode_reply(reply, 1)
        .unwrap()
        .instance(0)
        .unwrap()
        .unwrap();
    out["y"].to_vec::<f32>().unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_come_and_go_while_32_clients_send() {
    let repo = common::repository();
    let server = Arc::new(serve(repo.path()).await);
    // Version 2 (x1 - x2) is the newest: 4.
    assert_eq!(newest_answer(&server).await, 4.0);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (server, stop, served) = (server.clone(), stop.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut c = common::ms(&server).await;
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let req = mindspore::grpc::encode_request("math", "calc", 0, &[inputs()]).unwrap();
                let reply = c.predict(req).await.expect("transport").into_inner();
                let Outcome::Instances(mut r) = mindspore::grpc::decode_reply(reply, 1).unwrap()
                else {
                    panic!("a request failed during reload")
                };
                let y = r
                    .remove(0)
                    .expect("instance succeeds")
                    .remove("y")
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap()[0];
                assert!(
                    [4.0, 12.0].contains(&y),
                    "an answer of version 2 or 3, got {y}"
                );
                seen.push(y);
                served.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Version 3: x1 * x2 = 12.
    add_version(repo.path(), "math", 3, &common::binary_op("Mul"));
    wait_for("version 3 to serve", async || {
        newest_answer(&server).await == 12.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Remove it again: version 2 is the newest once more.
    std::fs::remove_dir_all(repo.path().join("math/3")).unwrap();
    wait_for("version 3 to go", async || {
        newest_answer(&server).await == 4.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut saw_v3 = false;
    for c in clients {
        saw_v3 |= c.await.expect("no client saw a failure").contains(&12.0);
    }
    assert!(saw_v3, "clients were served by the new version");
    println!(
        "requests served during reloads: {}",
        served.load(Ordering::Relaxed)
    );
    let r = common::http()
        .post(common::rest(&server, "/model/math/version/3:calc"))
        .json(
            &json!({"instances": {"x1": [[1.0, 1.0], [1.0, 1.0]], "x2": [[1.0, 1.0], [1.0, 1.0]]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn broken_versions_and_servables_are_ignored_and_new_servables_load() {
    let repo = common::repository();
    let server = serve(repo.path()).await;
    add_version(repo.path(), "math", 5, b"not an onnx model");
    // A new servable directory: a copy of math as "math2".
    let toml = std::fs::read(repo.path().join("math/servable.toml")).unwrap();
    common::write(repo.path(), ".math2/servable.toml", &toml);
    common::write(repo.path(), ".math2/1/m.onnx", &common::binary_op("Mul"));
    std::fs::rename(repo.path().join(".math2"), repo.path().join("math2")).unwrap();
    wait_for("math2 to load", async || {
        server.state.registry.get("math2", 0).is_ok()
    })
    .await;
    // The broken version 5 was reported and ignored: version 2 still serves.
    assert_eq!(server.state.registry.versions("math"), vec![1, 2]);
    assert_eq!(newest_answer(&server).await, 4.0);
    server.shutdown().await;
}

#[tokio::test]
async fn repository_endpoints_unload_and_load() {
    let repo = common::repository();
    let server = common::start(Config {
        model_repository: Some(repo.path().to_owned()),
        poll_interval: None,
        ..common::config()
    })
    .await;
    let http = common::http();
    let post = |path: &str| http.post(common::rest(&server, path)).send();
    let index: Value = post("/v2/repository/index")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        index
            .as_array()
            .unwrap()
            .contains(&json!({"name": "math", "version": "2", "state": "READY"}))
    );
    assert_eq!(
        post("/v2/repository/models/math/unload")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(common::rest(&server, "/v2/models/math/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    add_version(repo.path(), "math", 3, &common::binary_op("Mul"));
    assert_eq!(
        post("/v2/repository/models/math/load")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.state.registry.versions("math"), vec![1, 2, 3]);
    let r = post("/v2/repository/models/nope/load").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        post("/v2/repository/models/nope/unload")
            .await
            .unwrap()
            .status(),
        404
    );
    server.shutdown().await;
}
