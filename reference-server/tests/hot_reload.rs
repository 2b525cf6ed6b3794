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

/// A server whose repository is polled only when a test calls [`poll`].
async fn polled_by_hand(dir: &std::path::Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
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
    let server = polled_by_hand(repo.path()).await;
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
    // Unloaded, the model is known and not ready (Triton's answer), and
    // the index says why.
    assert_eq!(
        http.get(common::rest(&server, "/v2/models/math/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let index: Value = post("/v2/repository/index")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Each version it had, as Triton lists them.
    for version in ["1", "2"] {
        assert!(
            index.as_array().unwrap().contains(
                &json!({"name": "math", "version": version, "state": "UNAVAILABLE", "reason": "unloaded"})
            ),
            "{index}"
        );
    }
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

/// Polls the repository once by hand (the server polls nothing itself).
fn poll(server: &Running) -> reference_server::repository::watch::Changes {
    let watcher = server.state.watcher.as_ref().unwrap();
    watcher.lock().unwrap().poll(&server.state.registry)
}

#[tokio::test]
async fn a_version_copied_in_place_is_served_within_two_polls_of_its_last_write() {
    use std::io::Write;
    let repo = common::repository();
    let server = polled_by_hand(repo.path()).await;
    let model = common::binary_op("Mul");
    let (head, tail) = model.split_at(model.len() / 2);
    // `cp` into place: the directory, then the file in two writes, with
    // polls in between that see it half-written.
    let v3 = repo.path().join("math/3");
    std::fs::create_dir(&v3).unwrap();
    let mut file = std::fs::File::create(v3.join("m.onnx")).unwrap();
    file.write_all(head).unwrap();
    file.flush().unwrap();
    for _ in 0..4 {
        let changes = poll(&server);
        assert!(changes.loaded.is_empty(), "{changes:?}");
    }
    assert_eq!(server.state.registry.versions("math"), vec![1, 2]);
    // The running version was never touched.
    assert_eq!(newest_answer(&server).await, 4.0);
    file.write_all(tail).unwrap();
    file.flush().unwrap();
    drop(file);
    // The first poll after the last write sees a change, the second agrees.
    assert!(poll(&server).loaded.is_empty());
    assert_eq!(poll(&server).loaded, vec!["math/3".to_string()]);
    assert_eq!(newest_answer(&server).await, 12.0);

    // `rsync --inplace` order: the file first created empty, written in
    // three steps, the polls catching every step; also a second file.
    let v4 = repo.path().join("math/4");
    std::fs::create_dir(&v4).unwrap();
    std::fs::write(v4.join("m.onnx"), b"").unwrap();
    poll(&server);
    poll(&server);
    let add = common::binary_op("Add");
    let thirds = [
        &add[..add.len() / 3],
        &add[add.len() / 3..2 * add.len() / 3],
        &add[2 * add.len() / 3..],
    ];
    for (i, part) in thirds.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(v4.join("m.onnx"))
            .unwrap();
        f.write_all(part).unwrap();
        drop(f);
        if i < 2 {
            poll(&server);
            poll(&server);
            assert_eq!(server.state.registry.versions("math"), vec![1, 2, 3]);
        }
    }
    std::fs::write(v4.join("README"), b"notes").unwrap();
    assert!(poll(&server).loaded.is_empty());
    assert_eq!(poll(&server).loaded, vec!["math/4".to_string()]);
    assert_eq!(newest_answer(&server).await, 8.0);
    // Rewriting a loaded version's file in place does not reload it.
    std::fs::write(v4.join("m.onnx"), b"garbage").unwrap();
    for _ in 0..3 {
        let changes = poll(&server);
        assert!(
            changes.loaded.is_empty() && changes.unloaded.is_empty() && changes.failed.is_empty(),
            "{changes:?}"
        );
    }
    assert_eq!(newest_answer(&server).await, 8.0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_version_is_retried_when_anything_in_it_or_the_config_changes() {
    let repo = common::repository();
    let server = polled_by_hand(repo.path()).await;
    let v3 = repo.path().join("math/3");
    std::fs::create_dir(&v3).unwrap();
    std::fs::write(v3.join("wrong-name.onnx"), common::binary_op("Mul")).unwrap();
    poll(&server);
    let changes = poll(&server);
    assert_eq!(changes.failed.len(), 1, "{changes:?}");
    assert!(
        changes.failed[0].contains("model 'm' is missing from version 3"),
        "{changes:?}"
    );
    // Unchanged: not retried, not reported again.
    assert_eq!(poll(&server), Default::default());
    // A configuration naming the file it has is a change too.
    let toml_path = repo.path().join("math/servable.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        toml.replace("file = \"m.onnx\"", "file = \"wrong-name.onnx\""),
    )
    .unwrap();
    poll(&server);
    assert_eq!(poll(&server).loaded, vec!["math/3".to_string()]);
    std::fs::write(&toml_path, toml).unwrap();
    // So is a file renamed inside a version.
    let v4 = repo.path().join("math/4");
    std::fs::create_dir(&v4).unwrap();
    std::fs::write(v4.join("other.onnx"), common::binary_op("Mul")).unwrap();
    poll(&server);
    assert_eq!(poll(&server).failed.len(), 1);
    assert_eq!(poll(&server), Default::default());
    std::fs::rename(v4.join("other.onnx"), v4.join("m.onnx")).unwrap();
    poll(&server);
    assert_eq!(poll(&server).loaded, vec!["math/4".to_string()]);
    // The repository API rejects names that leave the repository.
    for name in ["a%2Fb", ".hidden", "a%5Cb", "a%00"] {
        let r = common::http()
            .post(common::rest(
                &server,
                &format!("/v2/repository/models/{name}/load"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
    }
    server.shutdown().await;
}
