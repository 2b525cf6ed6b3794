//! Triton's control extensions through the client, on both transports,
//! against a real reference server with a repository: model configuration,
//! statistics that grow by exactly the requests sent, the repository index,
//! load and unload, and system shared memory (64 MiB through the identity
//! model, bit-exact, and the refusals).

use std::path::Path;

use reference_server::onnx::{self, Dim};
use reference_server::server::{self, Config, Running};
use serving_client::{Client, DataType, Error, Tensor};

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `identity` (float32 `[-1]`) and `bytes` (uint8 `[-1]`), neither
/// batched, and `bare` (float32 `[-1, 4]`), a bare ONNX directory that the
/// server completes (batched).
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "identity/config.pbtxt",
        br#"
name: "identity"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#,
    );
    write(
        d,
        "identity/1/model.onnx",
        &onnx::identity(serving_proto::DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    write(
        d,
        "bytes/config.pbtxt",
        br#"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_UINT8 dims: [ -1 ] } ]
"#,
    );
    write(
        d,
        "bare/1/model.onnx",
        &onnx::identity(
            serving_proto::DataType::Fp32,
            &[Dim::Dynamic("batch"), Dim::Fixed(4)],
        ),
    );
    write(
        d,
        "bytes/1/model.onnx",
        &onnx::identity(serving_proto::DataType::Uint8, &[Dim::Dynamic("n")]),
    );
    dir
}

async fn serve(dir: &Path, shared_memory: bool) -> Running {
    server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        allow_shared_memory: shared_memory,
        ..Config::default()
    })
    .await
    .expect("server starts")
}

fn urls(s: &Running) -> [String; 2] {
    [
        format!("grpc://{}", s.grpc_address),
        format!("http://{}", s.rest_address),
    ]
}

/// A model name is one path segment on REST: `identity/versions/1` or
/// `identity?x` name no model (unescaped, they addressed `identity`'s own
/// routes and succeeded), and a name the server knows arrives intact.
#[tokio::test]
async fn names_with_path_characters_address_no_other_route() {
    let dir = repository();
    let server = serve(dir.path(), false).await;
    let client = Client::new(&format!("http://{}", server.rest_address)).unwrap();
    for name in [
        "identity/versions/1",
        "identity?x=1",
        "identity#y",
        "identity/config",
        "../identity",
        "identity%2F",
    ] {
        let e = client.model_metadata(name, None).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{name}: {e:?}");
        let e = client.model_config(name, None).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{name}: {e:?}");
        let e = client
            .infer(name)
            .input("x", Tensor::from_slice(&[1], &[1f32]).unwrap())
            .send()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{name}: {e:?}");
        assert!(
            !client.model_ready(name, None).await.unwrap_or(false),
            "{name}"
        );
    }
    // The same calls with the plain name still work.
    assert_eq!(
        client
            .model_metadata("identity", Some("1"))
            .await
            .unwrap()
            .name,
        "identity"
    );
    server.shutdown().await;
}

/// CUDA shared memory against a server without it: no regions, clean-up
/// succeeds (what tools do at exit), a registration is refused as
/// unimplemented with the server's reason, on both transports.
#[tokio::test]
async fn cuda_shared_memory_calls_on_both_transports() {
    let dir = repository();
    let server = serve(dir.path(), true).await;
    for url in urls(&server) {
        let client = Client::new(&url).unwrap();
        assert_eq!(
            client.cuda_shared_memory_status(None).await.unwrap(),
            vec![]
        );
        client.unregister_cuda_shared_memory(None).await.unwrap();
        client
            .unregister_cuda_shared_memory(Some("gpu0"))
            .await
            .unwrap();
        let e = client
            .register_cuda_shared_memory("gpu0", &[7u8; 64], 0, 1024)
            .await
            .unwrap_err();
        match &e {
            Error::Unimplemented { message, .. } => assert!(
                message.contains("CUDA shared memory is not supported"),
                "{url}: {message}"
            ),
            other => panic!("{url}: {other:?}"),
        }
        assert_eq!(
            client.cuda_shared_memory_status(None).await.unwrap(),
            vec![]
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn config_statistics_and_repository_on_both_transports() {
    let dir = repository();
    let server = serve(dir.path(), false).await;
    for url in urls(&server) {
        let client = Client::new(&url).unwrap();

        let config = client.model_config("identity", None).await.unwrap();
        assert_eq!(config.name, "identity", "{url}");
        assert_eq!(config.platform, "onnxruntime_onnx", "{url}");
        assert_eq!(config.input[0].name, "x", "{url}");
        assert_eq!(config.input[0].dims, vec![-1], "{url}");
        // Completed by the server as Triton's ORT backend does.
        let bare = client.model_config("bare", Some("1")).await.unwrap();
        assert_eq!(bare.input[0].dims, vec![4], "{url}");
        assert!(bare.max_batch_size > 0, "{url}");
        let e = client.model_config("nope", None).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{url}: {e:?}");

        // Statistics grow by exactly the requests sent.
        let before = client
            .model_statistics(Some("identity"), None)
            .await
            .unwrap();
        assert_eq!(before.len(), 1, "{url}");
        for i in 0..3 {
            client
                .infer("identity")
                .input("x", Tensor::from_slice(&[2], &[i as f32, 1.0]).unwrap())
                .send()
                .await
                .unwrap();
        }
        let after = client
            .model_statistics(Some("identity"), Some("1"))
            .await
            .unwrap();
        let success = |s: &serving_client::ModelStatistics| {
            s.inference_stats
                .as_ref()
                .and_then(|i| i.success)
                .map_or(0, |d| d.count)
        };
        assert_eq!(success(&after[0]) - success(&before[0]), 3, "{url}");
        assert_eq!(
            after[0].inference_count - before[0].inference_count,
            3,
            "{url}"
        );
        let all = client.model_statistics(None, None).await.unwrap();
        assert!(all.iter().any(|s| s.name == "bytes"), "{url}");

        // The index, an unload, a load.
        let index = client.repository_index(false).await.unwrap();
        let names: Vec<(&str, &str, &str)> = index
            .iter()
            .map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str()))
            .collect();
        assert!(
            names.contains(&("identity", "1", "READY")),
            "{url}: {names:?}"
        );
        assert!(names.contains(&("bytes", "1", "READY")), "{url}: {names:?}");
        client.unload_model("bytes").await.unwrap();
        assert!(!client.model_ready("bytes", None).await.unwrap(), "{url}");
        let e = client.model_metadata("bytes", None).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{url}: {e:?}");
        let ready = client.repository_index(true).await.unwrap();
        assert!(ready.iter().all(|m| m.name != "bytes"), "{url}: {ready:?}");
        client.load_model("bytes").await.unwrap();
        assert!(client.model_ready("bytes", None).await.unwrap(), "{url}");
        // A configuration given with the load is used (an empty one is
        // completed from the model, as Triton completes it)...
        client
            .load_model_with("bytes", &serving_client::LoadOptions::new().config("{}"))
            .await
            .unwrap();
        assert!(client.model_ready("bytes", None).await.unwrap(), "{url}");
        // Model files given with the load need their configuration...
        let e = client
            .load_model_with(
                "bytes",
                &serving_client::LoadOptions::new().file("1/model.onnx", &b"onnx"[..]),
            )
            .await
            .unwrap_err();
        match e {
            Error::InvalidArgument { message } => {
                assert!(message.contains("'config'"), "{message}")
            }
            e => panic!("{url}: {e:?}"),
        }
        // ... and with it they stand for the repository's files (base64
        // over REST, bytes over gRPC).
        let model = onnx::identity(serving_proto::DataType::Bytes, &[Dim::Dynamic("n")]);
        client
            .load_model_with(
                "bytes",
                &serving_client::LoadOptions::new()
                    .config("{}")
                    .file("1/model.onnx", model),
            )
            .await
            .unwrap();
        assert!(client.model_ready("bytes", None).await.unwrap(), "{url}");
        let e = client.unload_model("nope").await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{url}: {e:?}");
    }
    server.shutdown().await;
}

#[cfg(all(unix, feature = "shared-memory"))]
mod shared_memory {
    use super::*;
    use serving_client::shared_memory::SharedMemoryRegion;

    fn key(what: &str) -> String {
        format!("/serving-client-test-{}-{what}", std::process::id())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixty_four_mib_through_shared_memory_bit_exact_on_both_transports() {
        const N: usize = 64 << 20;
        let dir = repository();
        let server = serve(dir.path(), true).await;
        for (t, url) in urls(&server).into_iter().enumerate() {
            // Far below the payload: only the placements travel.
            let client = Client::builder()
                .endpoint(&url)
                .max_send_size(1 << 20)
                .max_receive_size(1 << 20)
                .build()
                .unwrap();
            let input = SharedMemoryRegion::create(&key(&format!("in{t}")), N).unwrap();
            let output = SharedMemoryRegion::create(&key(&format!("out{t}")), N).unwrap();
            let data: Vec<u8> = (0..N).map(|i| (i * 31 % 251) as u8).collect();
            input.write(0, &data).unwrap();
            client.register_region(&input).await.unwrap();
            client.register_region(&output).await.unwrap();
            let status = client.system_shared_memory_status(None).await.unwrap();
            assert_eq!(status.len(), 2, "{url}: {status:?}");
            assert!(status.iter().all(|r| r.byte_size == N as u64), "{url}");
            let one = client
                .system_shared_memory_status(Some(input.name()))
                .await
                .unwrap();
            assert_eq!(one[0].key, input.key(), "{url}");

            let builder = client
                .infer("bytes")
                .input_in_region("x", DataType::Uint8, &[N as i64], &input, 0)
                .unwrap()
                .output_in_region("y", &output, 0, N)
                .unwrap();
            // Offsets and sizes travel as `int64_param`, the only form
            // Triton takes (tritonclient's).
            {
                use serving_proto::oip::Parameter;
                use serving_proto::oip::shared_memory::{BYTE_SIZE, OFFSET};
                let request = builder.request();
                for parameters in [
                    &request.inputs[0].parameters,
                    &request.outputs[0].parameters,
                ] {
                    assert_eq!(parameters[OFFSET], Parameter::Int64(0), "{url}");
                    assert_eq!(parameters[BYTE_SIZE], Parameter::Int64(N as i64), "{url}");
                }
            }
            let response = builder.send().await.unwrap();
            let y = response.tensor("y").unwrap();
            assert_eq!(y.shape(), &[N as i64], "{url}");
            assert!(y.raw().unwrap()[..] == data[..], "{url}: not bit-exact");
            assert!(output.bytes(0, N).unwrap()[..] == data[..], "{url}");

            // An input that runs past its region is refused here, before
            // anything is sent.
            let e = client
                .infer("bytes")
                .input_in_region("x", DataType::Uint8, &[N as i64], &input, 1)
                .unwrap_err();
            assert!(matches!(e, Error::SharedMemory { .. }), "{url}: {e:?}");
            // And by the server, for a region registered smaller than the
            // placement asks.
            client
                .register_system_shared_memory("small", input.key(), 0, 16)
                .await
                .unwrap();
            let mut request = client
                .infer("bytes")
                .input_in_region("x", DataType::Uint8, &[64], &input, 0)
                .unwrap()
                .request()
                .clone();
            request.inputs[0].parameters.insert(
                serving_proto::oip::shared_memory::REGION.into(),
                serving_proto::oip::Parameter::String("small".into()),
            );
            let e = client.infer_request(&request).await.unwrap_err();
            match &e {
                Error::InvalidArgument { message } => {
                    assert!(message.contains("runs past the end"), "{url}: {message}")
                }
                e => panic!("{url}: {e:?}"),
            }
            // A region the server cannot open is a typed error.
            let e = client
                .register_system_shared_memory("ghost", &key("never-created"), 0, 16)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::SharedMemory { .. }), "{url}: {e:?}");

            client
                .unregister_system_shared_memory(Some("small"))
                .await
                .unwrap();
            client.unregister_system_shared_memory(None).await.unwrap();
            assert!(
                client
                    .system_shared_memory_status(None)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        server.shutdown().await;
    }

    #[test]
    fn a_write_under_a_live_view_is_refused_and_views_never_change() {
        let region = SharedMemoryRegion::create(&key("overlap"), 64).unwrap();
        region.write(0, &(0..64).collect::<Vec<u8>>()).unwrap();
        let view = region.bytes(4, 16).unwrap();
        let before = view.to_vec();
        // The write of a view over its own bytes.
        let e = region.write(0, &view).unwrap_err();
        match &e {
            Error::SharedMemory { message, .. } => {
                assert!(message.contains("live view"), "{message}")
            }
            e => panic!("{e:?}"),
        }
        // A slice outliving the view holds the view's bytes (4..20),
        // through every clone of the region.
        let slice = view.slice(8..12);
        drop(view);
        assert!(region.clone().write(19, &[0]).is_err());
        assert!(region.clone().write(0, &[0; 5]).is_err());
        // Next to it, and from it to elsewhere, writes copy.
        region.write(3, &[0]).unwrap();
        region.write(20, &[0]).unwrap();
        region.write(32, &slice).unwrap();
        assert_eq!(slice[..], before[8..12]);
        assert_eq!(region.bytes(32, 4).unwrap()[..], before[8..12]);
        // A tensor is a view too.
        let t = region.tensor(DataType::Uint8, &[8], 40).unwrap();
        assert!(region.write(47, &[1]).is_err());
        assert_eq!(t.raw().unwrap()[..], [40, 41, 42, 43, 44, 45, 46, 47]);
        drop((t, slice));
        region.write(0, &[7; 64]).unwrap();
        assert_eq!(region.bytes(0, 64).unwrap()[..], [7; 64]);
    }

    #[tokio::test]
    async fn an_output_still_viewed_is_never_overwritten_by_the_next_request() {
        let dir = repository();
        let server = serve(dir.path(), true).await;
        for (t, url) in urls(&server).into_iter().enumerate() {
            let client = Client::new(&url).unwrap();
            let input = SharedMemoryRegion::create(&key(&format!("live-in{t}")), 64).unwrap();
            let output = SharedMemoryRegion::create(&key(&format!("live-out{t}")), 64).unwrap();
            client.register_region(&input).await.unwrap();
            client.register_region(&output).await.unwrap();
            let send = || {
                client
                    .infer("bytes")
                    .input_in_region("x", DataType::Uint8, &[64], &input, 0)
                    .unwrap()
                    .output_in_region("y", &output, 0, 64)
                    .unwrap()
            };
            let request = send().request().clone();
            let regions = [output.clone()];
            input.write(0, &[1; 64]).unwrap();
            let first = client
                .infer_request_placed(&request, &regions)
                .await
                .unwrap();
            let y = first.tensor("y").unwrap().clone();
            assert_eq!(y.raw().unwrap()[..], [1; 64], "{url}");
            // The request holds no view of its input: it may be rewritten
            // between sends.
            input.write(0, &[2; 64]).unwrap();
            // The output's bytes are viewed: neither the next request nor
            // a write may change them.
            for e in [
                client
                    .infer_request_placed(&request, &regions)
                    .await
                    .unwrap_err(),
                send().send().await.unwrap_err(),
                output.write(0, &[3]).unwrap_err(),
            ] {
                assert!(matches!(e, Error::SharedMemory { .. }), "{url}: {e:?}");
            }
            assert_eq!(y.raw().unwrap()[..], [1; 64], "{url}: changed under a view");
            drop((first, y));
            // While a request is in flight, its output bytes are not
            // viewed; once it returns, its output is.
            let mut call = std::pin::pin!(send().send());
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(call.as_mut().poll(cx).is_pending())
            })
            .await;
            assert!(polled, "{url}: answered without a round trip");
            assert!(output.bytes(0, 4).is_err(), "{url}");
            let second = call.await.unwrap();
            assert_eq!(
                second.tensor("y").unwrap().raw().unwrap()[..],
                [2; 64],
                "{url}"
            );
            assert_eq!(output.bytes(0, 64).unwrap()[..], [2; 64], "{url}");
            drop(second);
            // A call cancelled in flight (dropped after its first poll, as a
            // timeout or a select! drops it) leaves no claim behind.
            {
                let mut call = std::pin::pin!(client.infer_request_placed(&request, &regions));
                let polled = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(call.as_mut().poll(cx).is_pending())
                })
                .await;
                assert!(polled, "{url}");
                assert!(output.write(0, &[0; 64]).is_err(), "{url}");
            }
            output.write(0, &[0; 64]).unwrap();
            client.unregister_system_shared_memory(None).await.unwrap();
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_server_without_shared_memory_refuses_registration_as_a_region_error() {
        let dir = repository();
        let server = serve(dir.path(), false).await;
        let region = SharedMemoryRegion::create(&key("off"), 64).unwrap();
        for url in urls(&server) {
            let client = Client::new(&url).unwrap();
            match client.register_region(&region).await.unwrap_err() {
                Error::SharedMemory { message, .. } => {
                    assert!(
                        message.contains("--allow-shared-memory"),
                        "{url}: {message}"
                    )
                }
                e => panic!("{url}: {e:?}"),
            }
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn log_settings_are_read_and_changed_on_both_transports() {
    use serving_client::LogSetting;
    let dir = repository();
    let s = serve(dir.path(), false).await;
    for url in urls(&s) {
        let client = Client::builder().endpoint(&url).build().unwrap();
        let before = client.log_settings().await.unwrap();
        assert_eq!(before["log_info"], LogSetting::Bool(true), "{url}");
        let changes = [("log_warning".to_owned(), LogSetting::Bool(false))].into();
        let after = client.update_log_settings(&changes).await.unwrap();
        assert_eq!(after["log_warning"], LogSetting::Bool(false), "{url}");
        assert!(after.contains_key("log_verbose_level"), "{url}: {after:?}");
        let back = [("log_warning".to_owned(), LogSetting::Bool(true))].into();
        client.update_log_settings(&back).await.unwrap();
        let bad = [("log_file".to_owned(), LogSetting::Text("/tmp/x".into()))].into();
        let e = client.update_log_settings(&bad).await.unwrap_err();
        assert!(
            matches!(e, serving_client::Error::InvalidArgument { .. }),
            "{url}: {e:?}"
        );
    }
    s.shutdown().await;
}
