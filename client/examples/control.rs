//! Triton's control extensions against any OIP server: model configuration,
//! statistics, the repository index, unloading and loading a model, and a
//! compressed inference, each reported as offered or not (with the
//! server's answer). `--require a,b` makes the run fail unless those are
//! offered and behave: CI runs it against MLServer and Triton this way.
//!
//! ```sh
//! cargo run -p reference-server -- --model-repository my-models   # one terminal
//! cargo run -p serving-client --example control -- http://127.0.0.1:1500 add
//! cargo run -p serving-client --example control -- grpc://127.0.0.1:5500 add --require repository,compression
//! ```
//!
//! Features: `config`, `statistics`, `repository` (index, unload, load),
//! `compression` (gzip: the same outputs as without), `cuda_shared_memory`
//! (status, and unregistering every region, as tools do at exit).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use serving_client::{Client, Compression, DataType, Error, InferResponse, Tensor};

/// Zeros for each input of `model`, variable dimensions as 1.
async fn zeros(client: &Client, model: &str) -> Result<Vec<(String, Tensor)>, Error> {
    let metadata = client.model_metadata(model, None).await?;
    metadata
        .inputs
        .iter()
        .map(|t| {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d.max(1)).collect();
            let dtype = DataType::from_oip_name(&t.datatype).ok_or_else(|| {
                Error::Request(format!("input {} has datatype {}", t.name, t.datatype))
            })?;
            let size = serving_proto::tensor::byte_size(dtype, &shape)
                .ok_or_else(|| Error::Request(format!("input {} has no fixed size", t.name)))?;
            let zeros = bytes::Bytes::from(vec![0u8; size]);
            Ok((t.name.clone(), Tensor::from_raw(dtype, shape, zeros)?))
        })
        .collect()
}

async fn infer(client: &Client, model: &str) -> Result<InferResponse, Error> {
    let mut call = client.infer(model);
    for (name, tensor) in zeros(client, model).await? {
        call = call.input(name, tensor);
    }
    call.send().await
}

/// What one feature did: offered and behaving, or why not.
async fn try_feature(url: &str, model: &str, feature: &str) -> Result<String, String> {
    let build = |compression: Option<Compression>| {
        let mut b = Client::builder()
            .endpoint(url)
            .timeout(Duration::from_secs(30));
        if let Some(c) = compression {
            b = b.compression(c);
        }
        b.build().map_err(|e| e.to_string())
    };
    let client = build(None)?;
    let text = |e: Error| e.to_string();
    match feature {
        "config" => {
            let c = client.model_config(model, None).await.map_err(text)?;
            Ok(format!(
                "name {}, platform '{}', max_batch_size {}, {} inputs",
                c.name,
                c.platform,
                c.max_batch_size,
                c.input.len()
            ))
        }
        "statistics" => {
            let before = client
                .model_statistics(Some(model), None)
                .await
                .map_err(text)?;
            infer(&client, model).await.map_err(text)?;
            let count = |s: &[serving_client::ModelStatistics]| {
                s.iter().map(|v| v.inference_count).sum::<u64>()
            };
            // Triton's Python backend records an inference's statistics
            // after it has sent the reply, so a read straight after the
            // reply can still show the old count: read again for up to 5 s.
            let mut after;
            let mut tries = 0;
            loop {
                after = client
                    .model_statistics(Some(model), None)
                    .await
                    .map_err(text)?;
                tries += 1;
                if count(&after) != count(&before) || tries == 50 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if count(&after) != count(&before) + 1 {
                return Err(format!(
                    "one inference moved inference_count from {} to {}",
                    count(&before),
                    count(&after)
                ));
            }
            Ok(format!("inference_count grew by 1 to {}", count(&after)))
        }
        "repository" => {
            let index = client.repository_index(false).await.map_err(text)?;
            let names: BTreeSet<&str> = index.iter().map(|m| m.name.as_str()).collect();
            if !names.contains(model) {
                return Err(format!("the index does not list {model}: {names:?}"));
            }
            client.unload_model(model).await.map_err(text)?;
            let ready = client.model_ready(model, None).await.unwrap_or(false);
            client.load_model(model).await.map_err(text)?;
            if ready {
                return Err(format!("{model} is still ready after unload"));
            }
            if !client.model_ready(model, None).await.map_err(text)? {
                return Err(format!("{model} is not ready after load"));
            }
            Ok(format!(
                "{} entries; {model} unloaded (not ready) and loaded (ready)",
                index.len()
            ))
        }
        "compression" => {
            let plain = infer(&client, model).await.map_err(text)?;
            let gzip = infer(&build(Some(Compression::Gzip))?, model)
                .await
                .map_err(text)?;
            let raw = |r: &InferResponse| {
                r.outputs
                    .iter()
                    .map(|o| (o.name.clone(), o.tensor.to_f64_vec().ok()))
                    .collect::<Vec<_>>()
            };
            if raw(&plain) != raw(&gzip) {
                return Err("gzip requests answered differently".into());
            }
            Ok(format!(
                "gzip request and reply: the same {} outputs",
                plain.outputs.len()
            ))
        }
        "cuda_shared_memory" => {
            // What tools do at exit on a host without GPUs: read the status,
            // unregister everything.
            let regions = client.cuda_shared_memory_status(None).await.map_err(text)?;
            client
                .unregister_cuda_shared_memory(None)
                .await
                .map_err(text)?;
            Ok(format!(
                "status lists {} regions; unregistering every region succeeds",
                regions.len()
            ))
        }
        other => Err(format!("unknown feature {other}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(model)) = (args.first(), args.get(1)) else {
        eprintln!("usage: control URL MODEL [--require feature,feature]");
        return ExitCode::from(2);
    };
    let required: BTreeSet<String> = args
        .iter()
        .position(|a| a == "--require")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut failed = false;
    for feature in [
        "config",
        "statistics",
        "repository",
        "compression",
        "cuda_shared_memory",
    ] {
        match try_feature(url, model, feature).await {
            Ok(what) => println!("{url} {feature}: ok: {what}"),
            Err(why) if required.contains(feature) => {
                println!("{url} {feature}: FAILED (required): {why}");
                failed = true;
            }
            Err(why) => println!("{url} {feature}: not offered: {why}"),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
