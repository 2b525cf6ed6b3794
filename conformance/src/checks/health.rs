//! Health and metadata (Open Inference Protocol).

use crate::check::{Check, OIP, Outcome, Suite, describe};
use crate::models::{identity_name, model_set};
use crate::target::Target;

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "health.server",
            families: OIP,
            summary: "server live and server ready are true",
            spec: "open-inference-protocol.md §1.1 (v2/health/live, v2/health/ready: 200 is true), §1.2 (ServerLive, ServerReady)",
            run: |s, t| Box::pin(server(s, t)),
        },
        Check {
            name: "health.model_ready",
            families: OIP,
            summary: "every model of the set is ready; version 1 of add is ready; an unknown model is not (false, or a 4xx / NOT_FOUND)",
            spec: "open-inference-protocol.md §1.1 (model ready), §1.2 (ModelReady)",
            run: |s, t| Box::pin(model_ready(s, t)),
        },
        Check {
            name: "health.metadata",
            families: OIP,
            summary: "server metadata has a name and a version; model metadata of add, multi_output and identity_fp16 lists the set's inputs and outputs with their datatypes and shapes (-1 variable)",
            spec: "open-inference-protocol.md §1.1 (server and model metadata), §1.2",
            run: |s, t| Box::pin(metadata(s, t)),
        },
    ]
}

async fn server(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    match (client.server_live().await, client.server_ready().await) {
        (Ok(true), Ok(true)) => Outcome::Pass("live and ready".into()),
        (live, ready) => Outcome::Fail(format!("live: {live:?}, ready: {ready:?}")),
    }
}

async fn model_ready(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let set = model_set();
    let mut not_ready = Vec::new();
    for m in &set {
        match client.model_ready(&m.name, None).await {
            Ok(true) => {}
            Ok(false) => not_ready.push(format!("{}: false", m.name)),
            Err(e) => not_ready.push(format!("{}: {}", m.name, describe(&e))),
        }
    }
    if !not_ready.is_empty() {
        return Outcome::Fail(format!("not ready: {}", not_ready.join("; ")));
    }
    match client.model_ready("add", Some("1")).await {
        Ok(true) => {}
        other => return Outcome::Fail(format!("add version 1 not ready: {other:?}")),
    }
    match client.model_ready("no_such_model", None).await {
        Ok(false)
        | Err(
            serving_client::Error::NotFound { .. } | serving_client::Error::InvalidArgument { .. },
        ) => {}
        other => return Outcome::Fail(format!("an unknown model: {other:?}")),
    }
    Outcome::Pass(format!("{} models ready, an unknown one not", set.len()))
}

async fn metadata(suite: &Suite, target: &Target) -> Outcome {
    let client = match suite.client(target) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let server = match client.server_metadata().await {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(describe(&e)),
    };
    if server.name.is_empty() || server.version.is_empty() {
        return Outcome::Fail(format!(
            "server metadata without a name or version: {server:?}"
        ));
    }
    let fp16 = identity_name(serving_proto::DataType::Fp16);
    for m in model_set()
        .into_iter()
        .filter(|m| ["add", "multi_output", fp16.as_str()].contains(&m.name.as_str()))
    {
        let meta = match client.model_metadata(&m.name, None).await {
            Ok(meta) => meta,
            Err(e) => return Outcome::Fail(format!("{}: {}", m.name, describe(&e))),
        };
        if meta.name != m.name {
            return Outcome::Fail(format!("metadata of {} names {}", m.name, meta.name));
        }
        for (what, want, got) in [
            ("input", &m.inputs, &meta.inputs),
            ("output", &m.outputs, &meta.outputs),
        ] {
            for w in want {
                let Some(g) = got.iter().find(|g| g.name == w.name) else {
                    return Outcome::Fail(format!("{}: no {what} {}", m.name, w.name));
                };
                let dt = w.dtype.oip_name().unwrap_or("BYTES");
                // Triton declares a scalar as dims [1] (reshaped to []).
                let scalar_as_one = w.shape.is_empty() && g.shape == [1];
                if g.datatype != dt || (g.shape != w.shape && !scalar_as_one) {
                    return Outcome::Fail(format!(
                        "{} {what} {}: expected {dt} {:?}, got {} {:?}",
                        m.name, w.name, w.shape, g.datatype, g.shape
                    ));
                }
            }
        }
    }
    Outcome::Pass(format!(
        "server {} {}; model signatures as declared",
        server.name, server.version
    ))
}
