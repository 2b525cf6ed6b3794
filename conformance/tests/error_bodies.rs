//! Snapshots of the reference server's error bodies: what a client of each
//! protocol reads when a request is wrong. A change to any text shows up
//! here as a snapshot diff.

use conformance::checks::{MS_REST_BODIES, MS_REST_URLS};

async fn start() -> (conformance::control::Control, String) {
    let (control, _) = conformance::control::start(None)
        .await
        .expect("the reference server starts");
    let base = format!("http://{}", control.running.rest_address);
    (control, base)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn mindspore_rest_error_bodies() {
    let (control, base) = start().await;
    let mut out = String::new();
    for (body, _) in MS_REST_BODIES {
        let r = http()
            .post(format!("{base}/model/add:add_common"))
            .body(*body)
            .send()
            .await
            .unwrap();
        out.push_str(&format!(
            "POST /model/add:add_common {body}\n  -> {} {}\n",
            r.status().as_u16(),
            r.text().await.unwrap()
        ));
    }
    for (url, _) in MS_REST_URLS {
        let r = http()
            .post(format!("{base}{url}"))
            .body(r#"{"instances":[{"x1":1}]}"#)
            .send()
            .await
            .unwrap();
        out.push_str(&format!(
            "POST {url}\n  -> {} {}\n",
            r.status().as_u16(),
            r.text().await.unwrap()
        ));
    }
    let r = http()
        .get(format!("{base}/model/add:add_common"))
        .send()
        .await
        .unwrap();
    out.push_str(&format!(
        "GET /model/add:add_common\n  -> {} {}\n",
        r.status().as_u16(),
        r.text().await.unwrap()
    ));
    insta::assert_snapshot!(out);
    control.running.shutdown().await;
}

#[tokio::test]
async fn open_inference_rest_error_bodies() {
    let (control, base) = start().await;
    let cases: &[(&str, &str)] = &[
        (
            "/v2/models/no_such_model/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/versions/99/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/infer",
            r#"{"inputs":[{"name":"x1","datatype":"INT32","shape":[2,2],"data":[1,2,3,4]},{"name":"x2","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[4,1],"data":[1,2,3,4]},{"name":"x2","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[2,2],"data":[1,2,3]},{"name":"x2","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]}]}"#,
        ),
        (
            "/v2/models/add/infer",
            r#"{"inputs":[{"name":"x1","datatype":"FP32","shape":[2,-2],"data":[1,2,3,4]}]}"#,
        ),
        ("/v2/models/add/infer", r#"{"inputs": ["#),
    ];
    let mut out = String::new();
    for (url, body) in cases {
        let r = http()
            .post(format!("{base}{url}"))
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .unwrap();
        out.push_str(&format!(
            "POST {url} {body}\n  -> {} {}\n",
            r.status().as_u16(),
            r.text().await.unwrap()
        ));
    }
    for url in ["/v2/models/no_such_model", "/v2/models/no_such_model/ready"] {
        let r = http().get(format!("{base}{url}")).send().await.unwrap();
        out.push_str(&format!(
            "GET {url}\n  -> {} {}\n",
            r.status().as_u16(),
            r.text().await.unwrap()
        ));
    }
    insta::assert_snapshot!(out);
    control.running.shutdown().await;
}
