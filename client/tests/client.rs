//! The client against real reference servers: both protocols on both
//! transports, sizes, errors, several endpoints, deadlines and TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reference_server::server::{self, Config, Running};
use serving_client::{
    Balance, Client, Error, NamedTensors, Protocol, SizeSide, Tensor, TransportKind,
};

fn config() -> Config {
    Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        poll_interval: None,
        ..Config::default()
    }
}

async fn demo() -> Running {
    server::start(config()).await.expect("server starts")
}

fn grpc(s: &Running) -> String {
    format!("grpc://{}", s.grpc_address)
}

fn http(s: &Running) -> String {
    format!("http://{}", s.rest_address)
}

fn square(v: f32) -> Tensor {
    Tensor::from_slice(&[2, 2], &[v; 4]).unwrap()
}

fn instance(a: f32, b: f32) -> NamedTensors {
    [("x1".to_string(), square(a)), ("x2".to_string(), square(b))].into()
}

#[tokio::test]
async fn mindspore_on_grpc_and_rest() {
    let server = demo().await;
    for url in [grpc(&server), http(&server)] {
        let client = Client::mindspore(&url).unwrap();
        let results = client
            .predict(
                "add",
                "add_common",
                &[instance(1.0, 2.0), instance(3.0, 4.0)],
            )
            .await
            .unwrap();
        // JSON carries no types: REST floats come back as FP64.
        assert_eq!(
            results[0].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
            vec![3.0; 4],
            "{url}"
        );
        assert_eq!(
            results[1].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
            vec![7.0; 4],
            "{url}"
        );
        // A per-instance failure stays in its place.
        let bad: NamedTensors = [
            ("x1".to_string(), square(1.0)),
            (
                "x2".to_string(),
                Tensor::from_slice(&[3], &[1f32; 3]).unwrap(),
            ),
        ]
        .into();
        let results = client
            .predict_version("add", "add_common", 1, &[instance(1.0, 1.0), bad])
            .await
            .unwrap();
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().message,
            "Given model input 1 size 12 not match the size 16 defined in model"
        );
        // A whole-request failure is an in-band servable error with its text.
        let e = client
            .predict("nope", "add_common", &[instance(1.0, 1.0)])
            .await
            .unwrap_err();
        let Error::Servable(s) = &e else {
            panic!("{url}: {e:?}")
        };
        assert_eq!(
            s.message,
            "Request servable(nope) method(add_common) , servable is not available"
        );
        assert!(!e.is_retryable());
        // The other protocol's call is refused locally.
        assert!(matches!(
            client.infer("add").send().await,
            Err(Error::Config(_))
        ));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn mindspore_rest_refuses_names_its_path_cannot_carry() {
    // MindSpore servers do not percent-decode /model/{servable}:{method}:
    // "add/version/1" would reach version 1 of add, "add:x" would call x.
    let (url, connections) = counting_port().await;
    let client = Client::mindspore(&format!("http://{url}")).unwrap();
    for (servable, method) in [
        ("add/version/1", "add_common"),
        ("add:add_common", "add_common"),
        ("add", "add common"),
        ("add", "add_common?x=1"),
        ("add%2F", "add_common"),
        ("", "add_common"),
        ("..", "add_common"),
        ("add", "."),
        ("ädd", "add_common"),
    ] {
        let e = client
            .predict(servable, method, &[instance(1.0, 2.0)])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Request(m) if m.contains("cannot be sent in a MindSpore REST path")),
            "{servable}:{method}: {e:?}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "refused before connecting"
    );
    let server = demo().await;
    let client = Client::mindspore(&http(&server)).unwrap();
    let results = client
        .predict("add", "add_common", &[instance(1.0, 2.0)])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn open_inference_on_grpc_and_rest_json_and_binary() {
    let server = demo().await;
    for url in [grpc(&server), http(&server)] {
        let client = Client::new(&url).unwrap();
        assert!(client.server_live().await.unwrap());
        assert!(client.server_ready().await.unwrap());
        assert!(client.model_ready("add", None).await.unwrap());
        assert!(client.model_ready("add", Some("1")).await.unwrap());
        let meta = client.model_metadata("add", None).await.unwrap();
        assert_eq!(
            (meta.inputs.len(), meta.outputs[0].datatype.as_str()),
            (2, "FP32")
        );
        assert_eq!(
            client.server_metadata().await.unwrap().name,
            "serving-reference-server"
        );
        let resp = client
            .infer("add")
            .id("7")
            .input("x1", square(1.5))
            .input("x2", square(2.0))
            .output("y")
            .send()
            .await
            .unwrap();
        assert_eq!((resp.id.as_str(), resp.model_version.as_str()), ("7", "1"));
        assert_eq!(
            resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
            vec![3.5; 4],
            "{url}"
        );
        let e = client
            .infer("nope")
            .input("x", square(1.0))
            .send()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{url}: {e:?}");
        let e = client
            .infer("add")
            .input("x1", square(1.0))
            .send()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{url}: {e:?}");
    }
    // REST: a tensor over the binary threshold travels binary both ways.
    let client = Client::builder()
        .endpoint(http(&server))
        .binary_threshold(8)
        .build()
        .unwrap();
    let resp = client
        .infer("add")
        .input("x1", square(1.0))
        .input("x2", square(1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
        vec![2.0; 4]
    );
    // gRPC with typed contents.
    let client = Client::builder()
        .endpoint(grpc(&server))
        .typed_contents(true)
        .build()
        .unwrap();
    let resp = client
        .infer("add")
        .input("x1", square(1.0))
        .input("x2", square(1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
        vec![2.0; 4]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn infer_stats_count_completed_calls_their_encoding_and_decoding() {
    let server = demo().await;
    for url in [grpc(&server), http(&server)] {
        let client = Client::new(&url).unwrap();
        assert_eq!(client.infer_stats().completed_requests, 0);
        let before = client.infer_stats();
        for _ in 0..5 {
            client
                .infer("add")
                .input("x1", square(1.0))
                .input("x2", square(2.0))
                .send()
                .await
                .unwrap();
        }
        // A refused call is not counted.
        client
            .infer("add")
            .input("x1", square(1.0))
            .send()
            .await
            .unwrap_err();
        let w = client.clone().infer_stats().since(&before);
        assert_eq!(w.completed_requests, 5, "{url}: {w:?}");
        assert!(w.send_ns > 0 && w.receive_ns > 0, "{url}: {w:?}");
        assert!(
            w.send_ns + w.receive_ns < w.total_request_ns,
            "{url}: encoding and decoding are parts of the calls: {w:?}"
        );
        assert!(w.mean_total().unwrap() > w.mean_send().unwrap());
    }
    server.shutdown().await;
}

/// A TCP port that accepts and counts connections, and answers nothing.
async fn counting_port() -> (String, Arc<AtomicUsize>) {
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

/// The error of an Open Inference call of `model` with `x` as its one input.
async fn infer_err(client: &Client, model: &str, input: &str, x: &Tensor) -> Error {
    client
        .infer(model)
        .input(input, x.clone())
        .send()
        .await
        .unwrap_err()
}

/// A size refusal's size, limit and side, if `e` is one with both numbers.
fn size_refusal(e: &Error) -> Option<(u64, u64, SizeSide)> {
    match *e {
        Error::MessageTooLarge {
            size: Some(size),
            limit: Some(limit),
            side,
        } => Some((size, limit, side)),
        _ => None,
    }
}

#[tokio::test]
async fn the_send_cap_is_checked_before_a_byte_is_sent() {
    let (addr, connections) = counting_port().await;
    let big = Tensor::from_slice(&[4096], &vec![0u8; 4096]).unwrap();
    for (url, protocol) in [
        (format!("grpc://{addr}"), Protocol::MindSpore),
        (format!("http://{addr}"), Protocol::MindSpore),
        (format!("grpc://{addr}"), Protocol::OpenInference),
        (format!("http://{addr}"), Protocol::OpenInference),
    ] {
        let client = Client::builder()
            .endpoint(&url)
            .protocol(protocol)
            .max_send_size(1024)
            .build()
            .unwrap();
        let e = match protocol {
            Protocol::MindSpore => client
                .predict("s", "m", &[[("x".to_string(), big.clone())].into()])
                .await
                .unwrap_err(),
            _ => infer_err(&client, "m", "x", &big).await,
        };
        let Some((size, 1024, SizeSide::Client)) = size_refusal(&e) else {
            panic!("{url} {protocol:?}: {e:?}")
        };
        assert!(size > 4096);
        assert!(
            e.to_string()
                .starts_with(&format!("Sent message larger than max ({size} vs. 1024)"))
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");
    // The cap cannot be raised past 512 MiB.
    assert!(matches!(
        Client::builder()
            .endpoint("grpc://h:1")
            .max_send_size(513 << 20)
            .build(),
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn requests_over_4_gib_fail_cleanly() {
    // Zeroed pages are not touched: this costs no memory.
    let size = (4u64 << 30) + 16;
    let huge = Tensor::from_raw(
        serving_client::DataType::Uint8,
        vec![size as i64],
        bytes::Bytes::from(vec![0u8; size as usize]),
    )
    .unwrap();
    let (addr, connections) = counting_port().await;
    for url in [format!("grpc://{addr}"), format!("http://{addr}")] {
        let client = Client::new(&url).unwrap();
        let e = infer_err(&client, "m", "x", &huge).await;
        let Some((s, limit, SizeSide::Client)) = size_refusal(&e) else {
            panic!("{e:?}")
        };
        assert!(
            s > size && limit == serving_client::MAX_MESSAGE_SIZE,
            "{s} {limit}"
        );
    }
    let client = Client::mindspore(&format!("grpc://{addr}")).unwrap();
    let e = client
        .predict("s", "m", &[[("x".to_string(), huge)].into()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageTooLarge {
                side: SizeSide::Client,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_servers_size_refusal_is_typed_with_its_numbers() {
    let server = server::start(Config {
        max_msg_mb_size: 1,
        ..config()
    })
    .await
    .unwrap();
    let big = Tensor::from_slice(&[2 << 20], &vec![1u8; 2 << 20]).unwrap();
    for url in [grpc(&server), http(&server)] {
        let client = Client::new(&url).unwrap();
        let e = infer_err(&client, "add", "x1", &big).await;
        let Some((size, limit, SizeSide::Server)) = size_refusal(&e) else {
            panic!("{url}: {e:?}")
        };
        assert_eq!(limit, 1 << 20, "{url}");
        assert!(size > 2 << 20, "{url}: {size}");
        assert!(!e.is_retryable());
        let client = Client::mindspore(&url).unwrap();
        let e = client
            .predict(
                "add",
                "add_common",
                &[[("x1".to_string(), big.clone())].into()],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::MessageTooLarge {
                    limit: Some(1048576),
                    side: SizeSide::Server,
                    ..
                }
            ),
            "{url}: {e:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_busy_server_is_a_retryable_error() {
    let server = demo().await;
    server.state.set_ready(false);
    for url in [grpc(&server), http(&server)] {
        let client = Client::builder().endpoint(&url).retries(0).build().unwrap();
        let e = client
            .infer("add")
            .input("x1", square(1.0))
            .input("x2", square(1.0))
            .send()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{url}: {e:?}");
        assert!(e.is_retryable());
    }
    let client = Client::mindspore(&grpc(&server)).unwrap();
    let e = client
        .predict("add", "add_common", &[instance(1.0, 1.0)])
        .await
        .unwrap_err();
    assert_eq!(e.servable_code(), Some(5));
    assert!(e.is_retryable());
    server.state.set_ready(true);
    server.shutdown().await;
}

#[tokio::test]
async fn several_endpoints_survive_a_dead_one_and_a_stopped_server() {
    let a = demo().await;
    let b = demo().await;
    let (dead, _) = counting_port().await;
    let client = Client::builder()
        .endpoints([format!("grpc://{dead}"), grpc(&a), http(&b)])
        .protocol(Protocol::MindSpore)
        .balance(Balance::LeastLoaded)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..20 {
        let r = client
            .predict("add", "add_common", &[instance(i as f32, 1.0)])
            .await
            .unwrap();
        assert_eq!(
            r[0].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
            vec![f64::from(i) + 1.0; 4]
        );
    }
    // One server goes away: every request still succeeds on the other.
    a.shutdown().await;
    for i in 0..20 {
        let r = client
            .predict("add", "add_common", &[instance(i as f32, 2.0)])
            .await
            .unwrap();
        assert_eq!(
            r[0].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
            vec![f64::from(i) + 2.0; 4]
        );
    }
    b.shutdown().await;
}

#[tokio::test]
async fn deadlines_reach_the_server_and_end_the_call() {
    // One replica holding batches open for 500 ms.
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\n\n[[method]]\nname = \"add_common\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[deployment]\nmax_batch_size = 8\nbatch_timeout_us = 500000\n";
    std::fs::create_dir_all(dir.path().join("slow/1")).unwrap();
    std::fs::write(dir.path().join("slow/servable.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("slow/1/m.onnx"),
        reference_server::demo::add_model(),
    )
    .unwrap();
    let server = server::start(Config {
        model_repository: Some(dir.path().to_owned()),
        ..config()
    })
    .await
    .unwrap();
    for url in [grpc(&server), http(&server)] {
        let client = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let e = client
            .predict("slow", "add_common", &[instance(1.0, 1.0)])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DeadlineExceeded { .. }), "{url}: {e:?}");
        assert!(e.is_timeout() && !e.is_connect(), "{url}: {e:?}");
    }
    server.shutdown().await;
}

/// The kind of the first I/O error among `e`'s causes.
fn io_kind_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

/// Whether an error of type `T` is among `e`'s causes (also inside the
/// I/O errors, whose `source` skips what they wrap).
fn chain_has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<T>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| chain_has::<T>(inner))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn pki(dir: &std::path::Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    for (stem, names) in [
        ("server", vec!["models.internal".to_string()]),
        ("client", vec!["client".to_string()]),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
}

#[tokio::test]
async fn tls_with_a_custom_ca_a_client_identity_and_a_server_name_override() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let server = server::start(Config {
        tls: Some(reference_server::tls::TlsFiles {
            certificate: dir.path().join("server.crt"),
            private_key: dir.path().join("server.key"),
            client_ca: Some(dir.path().join("ca.crt")),
        }),
        ..config()
    })
    .await
    .unwrap();
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    for url in [
        format!("grpcs://127.0.0.1:{}", server.grpc_address.port()),
        format!("https://127.0.0.1:{}", server.rest_address.port()),
    ] {
        let client = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .ca_certificate_pem(read("ca.crt"))
            .identity_pem(read("client.crt"), read("client.key"))
            .server_name("models.internal")
            .build()
            .unwrap();
        let r = client
            .predict("add", "add_common", &[instance(1.0, 1.0)])
            .await
            .unwrap();
        assert!(r[0].is_ok(), "{url}");
        // TLS worked with no process-wide rustls provider, and the client
        // installed none: that choice is the program's.
        assert!(
            rustls::crypto::CryptoProvider::get_default().is_none(),
            "{url}: the client installed a default provider"
        );
        // Without the identity, mutual TLS refuses the client.
        let anonymous = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .ca_certificate_pem(read("ca.crt"))
            .server_name("models.internal")
            .retries(0)
            .build()
            .unwrap();
        assert!(
            anonymous
                .predict("add", "add_common", &[instance(1.0, 1.0)])
                .await
                .is_err(),
            "{url}"
        );
        // Without the override, the certificate's name does not match.
        let wrong_name = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .ca_certificate_pem(read("ca.crt"))
            .identity_pem(read("client.crt"), read("client.key"))
            .retries(0)
            .build()
            .unwrap();
        let e = wrong_name
            .predict("add", "add_common", &[instance(1.0, 1.0)])
            .await
            .unwrap_err();
        assert_eq!(e.transport_kind(), Some(TransportKind::Tls), "{url}: {e:?}");
        assert!(e.is_connect() && !e.is_retryable(), "{url}: {e:?}");
        assert!(
            chain_has::<rustls::Error>(&e),
            "{url}: the rustls error is kept as a cause: {e:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_send_cap_admits_cap_minus_one_and_refuses_cap_plus_one() {
    use prost::Message;
    use serving_proto::oip::{InferRequest, NamedTensor};
    let server = demo().await;
    let ms_instances = [instance(1.0, 2.0)];
    let oip_request = InferRequest {
        model_name: "add".into(),
        inputs: vec![
            NamedTensor::new("x1", square(1.0)),
            NamedTensor::new("x2", square(2.0)),
        ],
        ..Default::default()
    };
    // The exact encoded size of each request, as the client computes it.
    let sizes = [
        (
            grpc(&server),
            Protocol::MindSpore,
            serving_proto::mindspore::grpc::encode_request("add", "add_common", 0, &ms_instances)
                .unwrap()
                .encoded_len() as u64,
        ),
        (
            http(&server),
            Protocol::MindSpore,
            serving_proto::mindspore::rest::encode_request(&ms_instances)
                .unwrap()
                .len() as u64,
        ),
        (
            grpc(&server),
            Protocol::OpenInference,
            serving_proto::oip::grpc::encode_request(
                &oip_request,
                serving_proto::oip::grpc::Contents::Raw,
            )
            .unwrap()
            .encoded_len() as u64,
        ),
        (
            http(&server),
            Protocol::OpenInference,
            serving_proto::oip::rest::encode_request(&oip_request, false)
                .unwrap()
                .len() as u64,
        ),
    ];
    for (url, protocol, size) in sizes {
        for cap in [size + 1, size - 1] {
            let client = Client::builder()
                .endpoint(&url)
                .protocol(protocol)
                .max_send_size(cap)
                .build()
                .unwrap();
            let result = match protocol {
                Protocol::MindSpore => client
                    .predict("add", "add_common", &ms_instances)
                    .await
                    .map(|_| ()),
                _ => client.infer_request(&oip_request).await.map(|_| ()),
            };
            if cap > size {
                result.unwrap_or_else(|e| {
                    panic!("{url} {protocol:?}: {size} bytes under a cap of {cap}: {e}")
                });
            } else {
                let e = result.unwrap_err();
                assert!(
                    matches!(e, Error::MessageTooLarge { size: Some(s), limit: Some(l), side: SizeSide::Client } if s == size && l == cap),
                    "{url} {protocol:?}: {e:?}"
                );
                assert_eq!(
                    e.to_string().split(';').next().unwrap(),
                    format!("Sent message larger than max ({size} vs. {cap})")
                );
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("serving.sock");
    let server = server::start(Config {
        grpc_unix: Some(socket.clone()),
        ..config()
    })
    .await
    .unwrap();
    let url = format!("unix:{}", socket.display());
    let ms = Client::mindspore(&url).unwrap();
    let r = ms
        .predict("add", "add_common", &[instance(1.0, 2.0)])
        .await
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![3.0; 4]
    );
    let oip = Client::new(&url).unwrap();
    assert!(oip.server_ready().await.unwrap());
    let resp = oip
        .infer("add")
        .input("x1", square(2.0))
        .input("x2", square(2.0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
        vec![4.0; 4]
    );
    server.shutdown().await;
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn bearer_tokens_and_unauthenticated_calls() {
    let server = server::start(Config {
        auth_token: Some("s3cret".into()),
        ..config()
    })
    .await
    .unwrap();
    for url in [grpc(&server), http(&server)] {
        let anonymous = Client::new(&url).unwrap();
        let e = anonymous
            .infer("add")
            .input("x1", square(1.0))
            .input("x2", square(1.0))
            .send()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated { .. }), "{url}: {e:?}");
        assert!(!e.is_retryable());
        let wrong = Client::builder()
            .endpoint(&url)
            .bearer_token("guess")
            .build()
            .unwrap();
        assert!(
            matches!(
                wrong.model_ready("add", None).await,
                Err(Error::Unauthenticated { .. })
            ),
            "{url}"
        );
        let ok = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .bearer_token("s3cret")
            .build()
            .unwrap();
        assert!(
            ok.predict("add", "add_common", &[instance(1.0, 1.0)])
                .await
                .unwrap()[0]
                .is_ok(),
            "{url}"
        );
    }
    assert!(matches!(
        Client::builder()
            .endpoint("grpc://h:1")
            .header("bad name", "v")
            .build(),
        Err(Error::Config(_))
    ));
    server.shutdown().await;
}

/// A one-shot HTTP/1.1 server that answers every request with `response`.
async fn canned_http(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the Content-Length body before answering.
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn every_other_error_variant() {
    // Transport: nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for url in [format!("grpc://{closed}"), format!("http://{closed}")] {
        let client = Client::builder().endpoint(&url).retries(0).build().unwrap();
        let e = client.server_live().await.unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{url}: {e:?}");
        assert!(e.is_retryable());
        // The kind comes from the typed causes, which the error keeps.
        assert!(e.is_connect(), "{url}: {e:?}");
        assert_eq!(e.transport_kind(), Some(TransportKind::Connect), "{url}");
        assert_eq!(
            io_kind_in_chain(&e),
            Some(std::io::ErrorKind::ConnectionRefused),
            "{url}: {e}"
        );
        // And its text says what happened on both transports.
        assert!(e.to_string().contains("Connection refused"), "{url}: {e}");
    }
    // Protocol: a reply the protocol does not allow.
    let garbage = canned_http("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"outputs\":7").await;
    let e = Client::new(&garbage)
        .unwrap()
        .infer("m")
        .input("x", square(1.0))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    let e = Client::mindspore(&garbage)
        .unwrap()
        .predict("s", "m", &[instance(1.0, 1.0)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    // Server: an internal failure.
    let failing = canned_http("HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"error\":\"boom\"}").await;
    let e = Client::new(&failing)
        .unwrap()
        .infer("m")
        .input("x", square(1.0))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Server { message, .. } if message.contains("boom")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    // Request: a value the protocol cannot carry, refused before sending.
    let strings = Tensor::from_strings(&[2], &["a", "b"]).unwrap();
    let e = Client::mindspore(&garbage)
        .unwrap()
        .predict("s", "m", &[[("x".to_string(), strings)].into()])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Request(_)), "{e:?}");
    let bf16 = Tensor::from_vec(&[1], vec![half::bf16::from_f32(1.0)]).unwrap();
    let e = Client::mindspore(&format!("grpc://{closed}"))
        .unwrap()
        .predict("s", "m", &[[("x".to_string(), bf16)].into()])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Request(_)), "{e:?}");
    // Config: bad URLs and caps.
    assert!(matches!(
        Client::mindspore("ftp://h:1"),
        Err(Error::Config(_))
    ));
    assert!(matches!(Client::builder().build(), Err(Error::Config(_))));
}

#[tokio::test]
async fn values_of_every_dtype_round_trip_through_the_server() {
    // The demo's add_cast takes int32; every dtype is checked against the
    // codecs in serving-proto; here the client's constructors meet a server.
    let server = demo().await;
    let client = Client::mindspore(&grpc(&server)).unwrap();
    let x: NamedTensors = [
        (
            "x1".to_string(),
            Tensor::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap(),
        ),
        (
            "x2".to_string(),
            Tensor::from_slice(&[2, 2], &[10i32, 20, 30, 40]).unwrap(),
        ),
    ]
    .into();
    let r = client.predict("add", "add_cast", &[x]).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![11.0, 22.0, 33.0, 44.0]
    );
    server.shutdown().await;
}

#[cfg(feature = "ndarray")]
#[tokio::test]
async fn ndarray_in_and_out() {
    use serving_client::array::{from_array, to_array};
    let server = demo().await;
    let client = Client::new(&http(&server)).unwrap();
    let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
    let resp = client
        .infer("add")
        .input("x1", from_array(&a))
        .input("x2", from_array(&a.t()))
        .send()
        .await
        .unwrap();
    let y = to_array::<f32>(&resp.outputs[0].tensor).unwrap();
    assert_eq!(y, ndarray::array![[2.0f32, 5.0], [5.0, 8.0]].into_dyn());
    server.shutdown().await;
}

#[cfg(feature = "blocking")]
#[test]
fn the_blocking_facade_outside_any_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(demo());
    let client = serving_client::blocking::Client::mindspore(&grpc(&server)).unwrap();
    let r = client
        .predict("add", "add_common", &[instance(1.0, 2.0)])
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![3.0; 4]
    );
    let oip =
        serving_client::blocking::Client::from_builder(Client::builder().endpoint(http(&server)))
            .unwrap();
    assert!(oip.server_live().unwrap());
    assert_eq!(oip.model_metadata("add", None).unwrap().name, "add");
    let request = serving_client::InferRequest {
        model_name: "add".into(),
        inputs: vec![
            serving_client::NamedTensor::new("x1", square(1.0)),
            serving_client::NamedTensor::new("x2", square(1.0)),
        ],
        ..Default::default()
    };
    assert_eq!(
        oip.infer(&request).unwrap().outputs[0]
            .tensor
            .to_vec::<f32>()
            .unwrap(),
        vec![2.0; 4]
    );
    runtime.block_on(server.shutdown());
}

/// Set in the environment of the server processes the failover test starts.
const CHILD: &str = "SERVING_CLIENT_TEST_SERVER_PROCESS";

/// Not a test: the body of the server processes that
/// `killed_server_processes_lose_no_call` starts from this same executable.
#[test]
#[ignore = "a helper run as a child process by killed_server_processes_lose_no_call"]
fn server_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(demo());
    println!("READY {} {}", server.grpc_address, server.rest_address);
    runtime.block_on(std::future::pending::<()>());
}

async fn spawn_server_process() -> (tokio::process::Child, String, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "server_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints "test server_process ... " before it.
            if let Some(at) = line.find("READY ") {
                return line[at + 6..].to_owned();
            }
        }
        panic!("the server process ended before it was ready");
    })
    .await
    .expect("the server process starts");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (g, r) = ready.split_once(' ').unwrap();
    (child, format!("grpc://{g}"), format!("http://{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_processes_lose_no_call() {
    let (mut a, a_grpc, a_http) = spawn_server_process().await;
    let (mut b, b_grpc, b_http) = spawn_server_process().await;
    let client = Client::builder()
        .endpoints([&a_grpc, &a_http, &b_grpc, &b_http])
        .protocol(Protocol::MindSpore)
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(30))
        .set_aside_for(Duration::from_secs(2))
        .retries(4)
        .build()
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let client = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                for i in 0..80 {
                    let (x, y) = (task as f32, i as f32);
                    let r = client.predict("add", "add_common", &[instance(x, y)]).await;
                    let r = r.unwrap_or_else(|e| panic!("call {task}/{i} failed: {e:?}"));
                    assert_eq!(
                        r[0].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
                        vec![f64::from(x + y); 4]
                    );
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Kill one server process in the middle of the run, calls in flight.
    while done.load(Ordering::SeqCst) < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.start_kill().unwrap();
    let status = a.wait().await.unwrap();
    let at_kill = done.load(Ordering::SeqCst);
    for t in tasks {
        t.await.expect("no call failed");
    }
    assert!(!status.success());
    assert!(
        at_kill < 8 * 80,
        "the kill happened mid-run ({at_kill} calls done)"
    );
    assert_eq!(done.load(Ordering::SeqCst), 8 * 80);
    b.start_kill().unwrap();
    let _ = b.wait().await;
}
