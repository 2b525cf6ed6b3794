//! Hostile repositories: configurations that point outside their model
//! directory or set numbers far past anything real, each against the real
//! server. Each fails its own load, naming the field, the value and the
//! bound, quickly; the server stays up and the other models serve, at
//! start (`--exit-on-error false`) and on hot reload; and what the
//! repository index says never depends on what exists outside the
//! repository.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::DataType;

/// `y = x1 + x2` over float32 rows of 4, batch dimension dynamic.
fn rows_model() -> Vec<u8> {
    let rows = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    ModelBuilder::new("add_rows")
        .input("x1", DataType::Fp32, &rows)
        .input("x2", DataType::Fp32, &rows)
        .output("y", DataType::Fp32, &rows)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build()
}

/// A server that keeps going past models that fail (`--exit-on-error
/// false`), its repository polled only by hand.
async fn tolerant(dir: &Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        exit_on_error: false,
        poll_interval: None,
        ..common::config()
    })
    .await
}

async fn index(server: &Running) -> Vec<Value> {
    common::http()
        .post(common::rest(server, "/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The reason the index gives for model `name` (which must be failing).
async fn reason(server: &Running, name: &str) -> String {
    let index = index(server).await;
    let entry = index
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the index: {index:?}"));
    assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
    entry["reason"].as_str().unwrap().to_owned()
}

async fn ready(server: &Running, name: &str) -> u16 {
    common::http()
        .get(common::rest(server, &format!("/v2/models/{name}/ready")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `POST /v2/repository/models/{name}/load`: the status and the body.
async fn load(server: &Running, name: &str) -> (u16, Value) {
    let r = common::http()
        .post(common::rest(
            server,
            &format!("/v2/repository/models/{name}/load"),
        ))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The good model `math` of [`common::repository`] still answers exactly
/// (version 2: `y = x1 - x2`).
async fn math_serves(server: &Running) {
    let r = common::http()
        .post(common::rest(server, "/v2/models/math/infer"))
        .body(r#"{"inputs":[{"name":"x1","shape":[2,2],"datatype":"FP32","data":[6,6,6,6]},{"name":"x2","shape":[2,2],"datatype":"FP32","data":[2,2,2,2]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outputs"][0]["data"], json!([4.0, 4.0, 4.0, 4.0]));
}

/// Polls the repository by hand (twice: a new directory loads once two
/// polls agree) and returns what failed.
fn poll_twice(server: &Running) -> Vec<String> {
    let watcher = server.state.watcher.as_ref().unwrap();
    let mut failed = watcher.lock().unwrap().poll(&server.state.registry).failed;
    failed.extend(watcher.lock().unwrap().poll(&server.state.registry).failed);
    failed
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn model_files_outside_the_model_directory_are_refused_alike_whether_or_not_they_exist() {
    let repo = common::repository();
    let r = repo.path();
    // Beside the repository (both in the temporary directory): a valid
    // model, a version directory holding one, and a configuration.
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path();
    let out_name = out.file_name().unwrap().to_str().unwrap();
    common::write(out, "x.onnx", &rows_model());
    common::write(out, "v/model.onnx", &rows_model());
    common::write(out, "config.pbtxt", b"max_batch_size: 4\n");
    // Each hostile model twice: leading to something that exists (`_e`),
    // and to something that does not (`_m`).
    let mut hostile = Vec::new();
    for (suffix, file, dir, conf) in [
        ("e", "x.onnx", "v", "config.pbtxt"),
        ("m", "none.onnx", "none", "none.pbtxt"),
    ] {
        // default_model_filename up and out of the model directory.
        let m = format!("up_{suffix}");
        let text = format!("default_model_filename: \"../../../{out_name}/{file}\"\n");
        common::write(r, &format!("{m}/config.pbtxt"), text.as_bytes());
        std::fs::create_dir_all(r.join(&m).join("1")).unwrap();
        hostile.push(m);
        // ... or absolute.
        let m = format!("abs_{suffix}");
        let text = format!("default_model_filename: \"{}\"\n", out.join(file).display());
        common::write(r, &format!("{m}/config.pbtxt"), text.as_bytes());
        std::fs::create_dir_all(r.join(&m).join("1")).unwrap();
        hostile.push(m);
        // The model file a symbolic link outside (absolute, and relative).
        let m = format!("link_{suffix}");
        symlink(&out.join(file), &r.join(&m).join("1/model.onnx"));
        hostile.push(m);
        let m = format!("rlink_{suffix}");
        symlink(
            &Path::new("../../..").join(out_name).join(file),
            &r.join(&m).join("1/model.onnx"),
        );
        hostile.push(m);
        // The version directory a symbolic link outside.
        let m = format!("vlink_{suffix}");
        std::fs::create_dir_all(r.join(&m)).unwrap();
        symlink(&out.join(dir), &r.join(&m).join("1"));
        hostile.push(m);
        // The configuration a symbolic link outside.
        let m = format!("conf_{suffix}");
        symlink(&out.join(conf), &r.join(&m).join("config.pbtxt"));
        common::write(r, &format!("{m}/1/model.onnx"), &rows_model());
        hostile.push(m);
        // servable.toml: its model file a symbolic link outside.
        let m = format!("toml_{suffix}");
        let toml = std::fs::read(r.join("math/servable.toml")).unwrap();
        common::write(r, &format!("{m}/servable.toml"), &toml);
        symlink(&out.join(file), &r.join(&m).join("1/m.onnx"));
        hostile.push(m);
    }
    // Links that stay inside the model directory are followed.
    common::write(r, "inside/shared/model.onnx", &rows_model());
    symlink(
        Path::new("../shared/model.onnx"),
        &r.join("inside/1/model.onnx"),
    );
    common::write(r, "inside_v/.v1/model.onnx", &rows_model());
    symlink(Path::new(".v1"), &r.join("inside_v/1"));
    common::write(r, "inside_abs/shared/model.onnx", &rows_model());
    symlink(
        &r.join("inside_abs/shared/model.onnx"),
        &r.join("inside_abs/1/model.onnx"),
    );

    let server = tolerant(r).await;
    math_serves(&server).await;
    for m in ["inside", "inside_v", "inside_abs"] {
        assert_eq!(
            ready(&server, m).await,
            200,
            "{m}: {:?}",
            index(&server).await
        );
    }
    let mut before = Vec::new();
    for m in &hostile {
        assert_eq!(ready(&server, m).await, 503, "{m} must not serve");
        let why = reason(&server, m).await;
        assert!(
            why.contains("leads outside the model directory")
                || why.contains("must be a path inside the version directory"),
            "{m}: {why}"
        );
        assert!(!why.contains("missing"), "{m}: {why}");
        before.push(why);
    }
    // The existing and the missing target read the same, but for the name.
    let same = |why: &str| {
        why.replace("_e/", "_X/")
            .replace("_m/", "_X/")
            .replace("none.onnx", "x.onnx")
    };
    let half = hostile.len() / 2;
    for i in 0..half {
        assert_eq!(
            same(&before[i]),
            same(&before[half + i]),
            "{} and {}",
            hostile[i],
            hostile[half + i]
        );
    }
    // And nothing changes once everything outside is gone: the loads fail
    // with the same reasons.
    std::fs::remove_dir_all(out).unwrap();
    for (m, why) in hostile.iter().zip(&before) {
        let (status, body) = load(&server, m).await;
        assert_eq!(status, 400, "{m}: {body}");
        assert_eq!(reason(&server, m).await, *why, "{m}");
    }
    math_serves(&server).await;
    server.shutdown().await;
}

/// A Triton model directory `m` in a fresh repository: `config` beside a
/// model of rows of 4 (or `model`).
fn triton_repo(config: &str, model: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "m/config.pbtxt", config.as_bytes());
    common::write(dir.path(), "m/1/model.onnx", model);
    dir
}

#[tokio::test]
async fn numbers_in_config_pbtxt_are_bounded_naming_field_value_and_bound() {
    let square = common::binary_op("Add");
    let rows = rows_model();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "dynamic_batching { priority_levels: 4000000000 }",
            &rows,
            "dynamic_batching.priority_levels 4000000000 is over the bound 1024",
        ),
        (
            "dynamic_batching { priority_levels: 2 default_priority_level: 5000000000 }",
            &rows,
            "dynamic_batching.default_priority_level 5000000000 is over the bound 1024",
        ),
        (
            "instance_group [ { count: 100000 kind: KIND_CPU } ]",
            &rows,
            "instance_group[0].count 100000 is over the bound 64",
        ),
        (
            "instance_group [ { count: 40 kind: KIND_CPU }, { count: 40 kind: KIND_CPU } ]",
            &rows,
            "instance_group: 80 replicas on cpu is over the bound 64 per device",
        ),
        (
            "instance_group [ { count: 1 kind: KIND_GPU gpus: [ -1 ] } ]",
            &rows,
            "instance_group[0].gpus holds -1; GPU ids are 0 to 1023",
        ),
        (
            "parameters { key: \"intra_op_thread_count\" value: { string_value: \"600\" } }",
            &rows,
            "parameters[\"intra_op_thread_count\"] 600 is over the bound 256",
        ),
        (
            "instance_group [ { count: 8 kind: KIND_CPU } ]\nparameters { key: \"intra_op_thread_count\" value: { string_value: \"200\" } }",
            &rows,
            "parameters[\"intra_op_thread_count\"] 200 times 8 replicas is 1600 threads, over the bound 1024",
        ),
        (
            "max_batch_size: 2000000000",
            &rows,
            "max_batch_size 2000000000 is over the bound 1048576",
        ),
        (
            "max_batch_size: 8\ndynamic_batching { preferred_batch_size: [ 4, 2000000000 ] }",
            &rows,
            "dynamic_batching.preferred_batch_size[1] 2000000000 is over the bound 1048576",
        ),
        (
            "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 18446744073709551615 }",
            &rows,
            "dynamic_batching.max_queue_delay_microseconds 18446744073709551615 is over the bound 3600000000",
        ),
        (
            "dynamic_batching { default_queue_policy { default_timeout_microseconds: 18446744073709551615 } }",
            &rows,
            "dynamic_batching.default_queue_policy.default_timeout_microseconds 18446744073709551615 is over the bound 3600000000",
        ),
        (
            "dynamic_batching { default_queue_policy { max_queue_size: 4000000000 } }",
            &rows,
            "dynamic_batching.default_queue_policy.max_queue_size 4000000000 is over the bound 1048576",
        ),
        // The product 4 * 4611686018427387905 wraps to 4, the element
        // count of [2, 2].
        (
            "input [ { name: \"x1\" data_type: TYPE_FP32 dims: [ 4, 4611686018427387905 ] reshape: { shape: [ 2, 2 ] } }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]",
            &square,
            "input 'x1' dims [4, 4611686018427387905] holds 4611686018427387905, over the bound 1099511627776",
        ),
        (
            "input [ { name: \"x1\" data_type: TYPE_FP32 dims: [ 2097152, 1048576, 0 ] reshape: { shape: [ 0 ] } }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]",
            &square,
            "input 'x1' dims [2097152, 1048576, 0]: the product of the dimensions is over the bound 1099511627776",
        ),
        (
            "input [ { name: \"x1\" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ -2, -2 ] } }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 2, 2 ] } ]",
            &square,
            "input 'x1' reshape.shape [-2, -2] holds -2; a dimension is -1 (any) or at least 0",
        ),
        (
            "default_model_filename: \"/etc/hostname\"",
            &rows,
            "default_model_filename \"/etc/hostname\" must be a path inside the version directory",
        ),
    ];
    for (config, model, want) in cases {
        let dir = triton_repo(config, model);
        let started = Instant::now();
        let e = common::start_error(dir.path()).await;
        assert!(
            e.contains(&format!("config.pbtxt: {want}")),
            "{config}\n  got: {e}\n  want: {want}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{config}: refused after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn numbers_in_servable_toml_are_bounded_naming_field_value_and_bound() {
    let cpus = |n: usize| format!("devices = [{}]", vec!["\"cpu\""; n].join(", "));
    let cases: Vec<(String, &str)> = vec![
        (
            "priority_levels = 4000000000".into(),
            "priority_levels 4000000000 is over the bound 1024",
        ),
        (
            cpus(65),
            "devices: 65 replicas on cpu is over the bound 64 per device",
        ),
        (
            "intra_op_threads = 600".into(),
            "intra_op_threads 600 is over the bound 256",
        ),
        (
            format!("{}\nintra_op_threads = 100", cpus(16)),
            "intra_op_threads 100 times 16 replicas is 1600 threads, over the bound 1024",
        ),
        (
            "max_batch_size = 2000000".into(),
            "max_batch_size 2000000 is over the bound 1048576",
        ),
        (
            "preferred_batch_sizes = [4, 2000000]".into(),
            "preferred_batch_sizes[1] 2000000 is over the bound 1048576",
        ),
        (
            "queue_limit = 2000000".into(),
            "queue_limit 2000000 is over the bound 1048576",
        ),
        (
            "batch_timeout_us = 9223372036854775807".into(),
            "batch_timeout_us 9223372036854775807 is over the bound 3600000000",
        ),
        (
            "default_queue_timeout_us = 9223372036854775807".into(),
            "default_queue_timeout_us 9223372036854775807 is over the bound 3600000000",
        ),
    ];
    for (deployment, want) in &cases {
        let dir = common::one_servable("m", &rows_model(), &["x1", "x2"], &["y"], deployment);
        let e = common::start_error(dir.path()).await;
        assert!(
            e.contains(&format!("servable.toml: {want}")),
            "{deployment}\n  got: {e}\n  want: {want}"
        );
    }
    // Right at the bounds, a configuration loads.
    let dir = common::one_servable(
        "m",
        &rows_model(),
        &["x1", "x2"],
        &["y"],
        "priority_levels = 1024\nmax_batch_size = 1048576\nqueue_limit = 1048576\nbatch_timeout_us = 0\ndefault_queue_timeout_us = 3600000000\nintra_op_threads = 1",
    );
    let server = common::with_repository(dir.path()).await;
    assert_eq!(ready(&server, "m").await, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_model_fails_alone_at_start_and_on_hot_reload() {
    let repo = common::repository();
    let r = repo.path();
    let hostile = [
        (
            "prio",
            "dynamic_batching { priority_levels: 4000000000 }",
            "dynamic_batching.priority_levels 4000000000 is over the bound 1024",
        ),
        (
            "instances",
            "instance_group [ { count: 100000 kind: KIND_CPU } ]",
            "instance_group[0].count 100000 is over the bound 64",
        ),
        (
            "threads",
            "parameters { key: \"intra_op_thread_count\" value: { string_value: \"600\" } }",
            "parameters[\"intra_op_thread_count\"] 600 is over the bound 256",
        ),
        (
            "dims",
            "max_batch_size: 4\ninput [ { name: \"x1\" data_type: TYPE_FP32 dims: [ 4, 4611686018427387905 ] reshape: { shape: [ 4 ] } }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 4 ] } ]",
            "input 'x1' dims [4, 4611686018427387905] holds 4611686018427387905, over the bound 1099511627776",
        ),
    ];
    // At start: the hostile models fail, the others serve.
    for (name, config, _) in &hostile {
        common::write(r, &format!("{name}/config.pbtxt"), config.as_bytes());
        common::write(r, &format!("{name}/1/model.onnx"), &rows_model());
    }
    common::write(
        r,
        "deep/servable.toml",
        format!(
            "{}\n[deployment]\npriority_levels = 4000000000\n",
            String::from_utf8(std::fs::read(r.join("math/servable.toml")).unwrap()).unwrap()
        )
        .as_bytes(),
    );
    common::write(r, "deep/1/m.onnx", &common::binary_op("Add"));
    let server = tolerant(r).await;
    math_serves(&server).await;
    for (name, _, want) in &hostile {
        assert_eq!(ready(&server, name).await, 503);
        let why = reason(&server, name).await;
        assert!(why.contains(want), "{name}: {why}");
    }
    assert!(
        reason(&server, "deep")
            .await
            .contains("servable.toml: priority_levels 4000000000 is over the bound 1024")
    );

    // Hot reload, polled: the same configurations copied in under new
    // names fail alone; math serves between the polls and after.
    for (name, config, _) in &hostile {
        common::write(r, &format!(".{name}2/config.pbtxt"), config.as_bytes());
        common::write(r, &format!(".{name}2/1/model.onnx"), &rows_model());
        std::fs::rename(r.join(format!(".{name}2")), r.join(format!("{name}2"))).unwrap();
    }
    let started = Instant::now();
    let failed = poll_twice(&server);
    assert!(started.elapsed() < Duration::from_secs(10));
    for (name, _, want) in &hostile {
        assert!(
            failed
                .iter()
                .any(|f| f.starts_with(&format!("{name}2")) && f.contains(want)),
            "{name}2: {failed:?}"
        );
        assert_eq!(ready(&server, &format!("{name}2")).await, 503);
    }
    math_serves(&server).await;

    // Hot reload, by the repository API: each load is refused at once,
    // naming the field, and other models' loads and unloads go on.
    for (name, _, want) in &hostile {
        let started = Instant::now();
        let (status, body) = load(&server, name).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(want), "{body}");
        let unload = common::http()
            .post(common::rest(&server, "/v2/repository/models/math/unload"))
            .send()
            .await
            .unwrap();
        assert_eq!(unload.status(), 200);
        assert_eq!(load(&server, "math").await.0, 200);
        math_serves(&server).await;
    }
    // A model that served and is given a hostile configuration keeps
    // serving what it loaded (an unusable configuration keeps what runs).
    common::write(r, "good/1/model.onnx", &rows_model());
    assert_eq!(load(&server, "good").await.0, 200);
    common::write(
        r,
        "good/config.pbtxt",
        b"instance_group [ { count: 100000 kind: KIND_CPU } ]",
    );
    let failed = poll_twice(&server);
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("good") && f.contains("instance_group[0].count 100000")),
        "{failed:?}"
    );
    assert_eq!(ready(&server, "good").await, 200);
    math_serves(&server).await;
    server.shutdown().await;
}
