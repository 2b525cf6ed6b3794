//! Where calls go on a client of several endpoints, against real reference
//! servers: a cancelled call does not leave its endpoint counted busy,
//! idempotent calls are retried on another endpoint, and calls that act on
//! one server (control, shared memory) are sent once, to the endpoint they
//! are meant for.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reference_server::onnx::{self, Dim};
use reference_server::server::{self, Config, Running};
use serving_client::{Balance, Client, DataType, Error, Tensor};

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `identity`: float32 `[-1]`; `bytes`: uint8 `[-1]`.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, dtype, triton) in [
        ("identity", DataType::Fp32, "TYPE_FP32"),
        ("bytes", DataType::Uint8, "TYPE_UINT8"),
    ] {
        write(
            dir.path(),
            &format!("{name}/config.pbtxt"),
            format!(
                "max_batch_size: 0\ninput [ {{ name: \"x\" data_type: {triton} dims: [ -1 ] }} ]\noutput [ {{ name: \"y\" data_type: {triton} dims: [ -1 ] }} ]\n"
            )
            .as_bytes(),
        );
        write(
            dir.path(),
            &format!("{name}/1/model.onnx"),
            &onnx::identity(dtype, &[Dim::Dynamic("n")]),
        );
    }
    dir
}

async fn serve(dir: &Path) -> Running {
    server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        allow_shared_memory: true,
        ..Config::default()
    })
    .await
    .expect("server starts")
}

/// A TCP port that accepts and counts connections, and answers nothing.
async fn dead_port() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr.to_string(), count)
}

fn x(v: f32) -> Tensor {
    Tensor::from_slice(&[4], &[v; 4]).unwrap()
}

/// The inferences `identity` has counted on the server of `client`.
async fn inferences(client: &Client) -> u64 {
    let stats = client
        .model_statistics(Some("identity"), None)
        .await
        .unwrap();
    stats.iter().map(|s| s.inference_count).sum()
}

#[tokio::test]
async fn a_cancelled_call_does_not_turn_least_loaded_away_from_its_endpoint() {
    let dir = repository();
    let (a, b) = (serve(dir.path()).await, serve(dir.path()).await);
    for (ea, eb) in [
        (
            format!("grpc://{}", a.grpc_address),
            format!("grpc://{}", b.grpc_address),
        ),
        (
            format!("http://{}", a.rest_address),
            format!("http://{}", b.rest_address),
        ),
    ] {
        let client = Client::builder()
            .endpoints([&ea, &eb])
            .balance(Balance::LeastLoaded)
            .build()
            .unwrap();
        let (a, b) = (client.endpoint(0).unwrap(), client.endpoint(1).unwrap());
        assert_eq!(a.endpoints(), [ea.as_str()]);
        let before = (inferences(&a).await, inferences(&b).await);
        // Cancelled in flight on the first endpoint: dropped after its
        // first poll (as a timeout drops it; the first call of the client
        // goes to its first endpoint), and by a select! that another branch
        // wins.
        {
            let mut call = std::pin::pin!(client.infer("identity").input("x", x(1.0)).send());
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(call.as_mut().poll(cx).is_pending())
            })
            .await;
            assert!(polled, "{ea}: answered without a round trip");
        }
        let call = a.infer("identity").input("x", x(1.0)).send();
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = call => panic!("answered before a yield"),
        }
        for i in 0..20 {
            let y: Vec<f32> = client
                .infer("identity")
                .input("x", x(i as f32))
                .send()
                .await
                .unwrap()
                .output("y")
                .unwrap();
            assert_eq!(y, vec![i as f32; 4]);
        }
        let after = (inferences(&a).await, inferences(&b).await);
        let (on_a, on_b) = (after.0 - before.0, after.1 - before.1);
        // Each endpoint idle between calls: they alternate.
        assert!(on_a >= 5 && on_b >= 5, "{ea}: {on_a} on a, {on_b} on b");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn control_calls_are_not_replayed_on_another_endpoint_and_inference_is() {
    let dir = repository();
    let server = serve(dir.path()).await;
    let (dead, connections) = dead_port().await;
    for (scheme, live) in [
        ("grpc", server.grpc_address.to_string()),
        ("http", server.rest_address.to_string()),
    ] {
        let client = Client::builder()
            .endpoints([format!("{scheme}://{dead}"), format!("{scheme}://{live}")])
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .retries(3)
            .build()
            .unwrap();
        let live = client.endpoint(1).unwrap();
        let ready = || async { live.model_ready("identity", None).await.unwrap() };
        assert!(ready().await);

        // Unsaid, the endpoint a control call is meant for is not guessed:
        // refused before anything is sent.
        let sent = connections.load(Ordering::SeqCst);
        for e in [
            client.unload_model("identity").await.unwrap_err(),
            client.load_model("identity").await.unwrap_err(),
            client
                .unregister_system_shared_memory(None)
                .await
                .unwrap_err(),
            client.system_shared_memory_status(None).await.unwrap_err(),
        ] {
            match e {
                Error::Config(m) => assert!(m.contains("Client::endpoint"), "{m}"),
                e => panic!("{scheme}: {e:?}"),
            }
        }
        assert_eq!(connections.load(Ordering::SeqCst), sent);
        assert!(ready().await, "{scheme}: unloaded by a replay");

        // Sent to the dead endpoint: its failure, and no replay on the
        // live one, whatever the retries.
        let dead = client.endpoint(0).unwrap();
        let e = dead.unload_model("identity").await.unwrap_err();
        assert!(e.is_retryable(), "{scheme}: {e:?}");
        assert!(connections.load(Ordering::SeqCst) > sent, "{scheme}");
        assert!(ready().await, "{scheme}: unloaded by a replay");
        // The endpoint meant does it.
        live.unload_model("identity").await.unwrap();
        assert!(!ready().await);
        live.load_model("identity").await.unwrap();
        assert!(ready().await);

        // Inference, idempotent, is retried on the live endpoint.
        for i in 0..6 {
            let y: Vec<f32> = client
                .infer("identity")
                .input("x", x(i as f32))
                .send()
                .await
                .unwrap()
                .output("y")
                .unwrap();
            assert_eq!(y, vec![i as f32; 4], "{scheme}");
        }
    }
    server.shutdown().await;
}

#[cfg(all(unix, feature = "shared-memory"))]
#[tokio::test]
async fn shared_memory_stays_on_the_endpoint_it_is_registered_with() {
    use serving_client::shared_memory::SharedMemoryRegion;
    let dir = repository();
    let (a, b) = (serve(dir.path()).await, serve(dir.path()).await);
    let key = |what: &str| format!("/serving-client-routing-{}-{what}", std::process::id());
    let input = SharedMemoryRegion::create(&key("in"), 64).unwrap();
    let output = SharedMemoryRegion::create(&key("out"), 64).unwrap();
    input.write(0, &[9; 64]).unwrap();
    let client = Client::builder()
        .endpoints([
            format!("grpc://{}", a.grpc_address),
            format!("http://{}", b.rest_address),
        ])
        .build()
        .unwrap();
    // Unsaid, refused: the region would be registered with one server and
    // used by requests balanced to the other.
    assert!(matches!(
        client.register_region(&input).await,
        Err(Error::Config(_))
    ));
    let b_only = client.endpoint(1).unwrap();
    b_only.register_region(&input).await.unwrap();
    b_only.register_region(&output).await.unwrap();
    let placed = |c: &Client| {
        c.infer("bytes")
            .input_in_region("x", DataType::Uint8, &[64], &input, 0)
            .unwrap()
            .output_in_region("y", &output, 0, 64)
            .unwrap()
            .request()
            .clone()
    };
    let regions = [output.clone()];
    match client
        .infer_request_placed(&placed(&client), &regions)
        .await
    {
        Err(Error::Config(m)) => assert!(m.contains("Client::endpoint"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Through the endpoint it is registered with, every time.
    for _ in 0..4 {
        let response = b_only
            .infer_request_placed(&placed(&b_only), &regions)
            .await
            .unwrap();
        assert_eq!(response.tensor("y").unwrap().raw().unwrap()[..], [9; 64]);
    }
    let status = |c: Client| async move { c.system_shared_memory_status(None).await.unwrap() };
    assert_eq!(status(b_only.clone()).await.len(), 2);
    assert!(status(client.endpoint(0).unwrap()).await.is_empty());
    b_only.unregister_system_shared_memory(None).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}
