//! Health and metadata (Open Inference Protocol).

use crate::check::{Cases, Check, OIP, Outcome, Suite, describe};
use crate::models::model_set;
use crate::profile::Role;
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
            summary: "every model of the set that the server serves is ready (each failing model listed; models it does not serve named); the first version add's metadata names is ready; an unknown model is not (false, or a 4xx / NOT_FOUND)",
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
    // Every model of the set that the server serves must be ready; one it
    // does not serve (no metadata either) is left out and named. Each
    // failing model is listed.
    // The models of every role, as the target names them (its own or
    // the profile's); those it does not serve are named, not failed.
    let mut names = Vec::new();
    let mut absent = Vec::new();
    for role in Role::all() {
        match suite.model(target, role).await {
            Ok(name) if !names.contains(&name) => names.push(name),
            Ok(_) => {}
            Err(_) => absent.push(role.key()),
        }
    }
    let mut cases = Cases::default();
    for name in &names {
        match client.model_ready(name, None).await {
            Ok(true) => cases.pass(),
            Ok(false) => cases.fail(format!("{name}: ready is false")),
            Err(e) => cases.fail(format!("{name}: {}", describe(&e))),
        }
    }
    if cases.ran == 0 {
        return Outcome::NotApplicable(format!(
            "the server serves none of the conformance models ({} absent); load them with `conformance models`",
            absent.len()
        ));
    }
    // A version the server names in the metadata (KServe names none: the
    // version check does not apply there).
    let mut versions_note = String::new();
    let first = names.first().cloned().unwrap_or_default();
    match client.model_metadata(&first, None).await {
        Ok(meta) => match meta.versions.first() {
            Some(v) => match client.model_ready(&first, Some(v)).await {
                Ok(true) => cases.pass(),
                other => cases.fail(format!(
                    "{first} version {v}, named in its metadata, is not ready: {other:?}"
                )),
            },
            None => {
                versions_note = format!("; {first} names no versions, so no version was checked")
            }
        },
        Err(e) => cases.fail(format!("{first}: metadata: {}", describe(&e))),
    }
    match client.model_ready("no_such_model", None).await {
        Ok(false)
        | Err(
            serving_client::Error::NotFound { .. } | serving_client::Error::InvalidArgument { .. },
        ) => cases.pass(),
        other => cases.fail(format!("an unknown model: {other:?}")),
    }
    let absent_note = if absent.is_empty() {
        String::new()
    } else {
        format!("; not served here: {}", absent.join(", "))
    };
    let ready = names.len();
    // A model of the set that the repository holds but could not load is
    // the server's limit, not a protocol failure: a warning, with why.
    let caps = suite.capabilities(target).await;
    let unloadable: Vec<String> = absent
        .iter()
        .filter_map(|name| caps.unavailable(name))
        .map(|m| format!("{} is {} ({})", m.name, m.state, m.reason))
        .collect();
    match cases.outcome(format!(
        "{ready} models ready, an unknown one not{versions_note}{absent_note}"
    )) {
        Outcome::Pass(text) if !unloadable.is_empty() => Outcome::Warn(format!(
            "{text}; in the repository but not loaded: {}",
            unloadable.join("; ")
        )),
        other => other,
    }
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
    // The suite's own models are compared with the signatures it wrote;
    // another model playing a role, with what the role needs.
    let set = model_set();
    let mut checked = Vec::new();
    for role in [
        Role::Add,
        Role::MultiOutput,
        Role::Identity(serving_proto::DataType::Fp16),
    ] {
        let Ok(name) = suite.model(target, role).await else {
            continue;
        };
        let meta = match client.model_metadata(&name, None).await {
            Ok(meta) => meta,
            Err(e) => return Outcome::Fail(format!("{name}: {}", describe(&e))),
        };
        if meta.name != name {
            return Outcome::Fail(format!("metadata of {name} names {}", meta.name));
        }
        checked.push(name.clone());
        let Some(m) = set.iter().find(|m| m.name == name) else {
            if let Role::Identity(_) = role
                && crate::discovery::IdentityModel::of(&meta).is_none()
            {
                return Outcome::Fail(format!("{name} is not an identity: {meta:?}"));
            }
            continue;
        };
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
    if checked.is_empty() {
        return Outcome::Pass(format!(
            "server {} {}; none of add, multi_output, identity_fp16 is served, so no model signature was checked",
            server.name, server.version
        ));
    }
    Outcome::Pass(format!(
        "server {} {}; signatures of {} as declared",
        server.name,
        server.version,
        checked.join(", ")
    ))
}
