//! SIGTERM under load: the server stops accepting, reports not ready, and
//! answers every request it had accepted before exiting 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reference_server::onnx::{Dim, ModelBuilder};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;
use serving_proto::{DataType, NamedTensors, Tensor};

/// `y = x1 + x2` over rows of 4 whose replica holds each batch open 150 ms,
/// so that requests are in flight when the signal arrives.
fn slow_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rows = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    let model = ModelBuilder::new("add_rows")
        .input("x1", DataType::Fp32, &rows)
        .input("x2", DataType::Fp32, &rows)
        .output("y", DataType::Fp32, &rows)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build();
    let toml = "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nwith_batch_dim = true\n\n[[method]]\nname = \"add\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[deployment]\ndevices = [\"cpu\"]\nmax_batch_size = 64\nbatch_timeout_us = 150000\n";
    common::write(dir.path(), "rows/servable.toml", toml.as_bytes());
    common::write(dir.path(), "rows/1/m.onnx", &model);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_every_accepted_request() {
    let repo = slow_repo();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--rest-address",
            "127.0.0.1:0",
            "--drain-timeout",
            "20",
        ])
        .arg("--model-repository")
        .arg(repo.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|l| {
            l.ok()?
                .strip_prefix("reference-server ready: gRPC ")
                .map(str::to_owned)
        })
        .expect("ready");
    let grpc = ready.split(' ').next().unwrap().to_owned();
    let started = Instant::now();
    let signal_at = Duration::from_millis(400);
    let mut clients = Vec::new();
    for c in 0..16u32 {
        let grpc = grpc.clone();
        clients.push(tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = MsServiceClient::new(channel);
            let mut log = Vec::new();
            let mut r = 0u32;
            while started.elapsed() < Duration::from_millis(1500) {
                let seed = (c * 1000 + r) as f32;
                r += 1;
                let instance: NamedTensors = [
                    (
                        "x1".to_string(),
                        Tensor::from_slice(&[4], &[seed; 4]).unwrap(),
                    ),
                    (
                        "x2".to_string(),
                        Tensor::from_slice(&[4], &[1f32; 4]).unwrap(),
                    ),
                ]
                .into();
                let sent = started.elapsed();
                let req = mindspore::grpc::encode_request("rows", "add", 0, &[instance]).unwrap();
                match client.predict(req).await {
                    Ok(reply) => {
                        let Outcome::Instances(mut out) =
                            mindspore::grpc::decode_reply(reply.into_inner(), 1).unwrap()
                        else {
                            panic!("client {c}: a request failed in-band during the drain")
                        };
                        let y = out
                            .remove(0)
                            .unwrap()
                            .remove("y")
                            .unwrap()
                            .to_vec::<f32>()
                            .unwrap();
                        assert_eq!(y, vec![seed + 1.0; 4], "client {c}: wrong answer");
                        log.push((sent, true));
                    }
                    Err(status) => {
                        // Refused after the signal: never accepted.
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ),
                            "client {c}: {status:?}"
                        );
                        log.push((sent, false));
                        break;
                    }
                }
            }
            log
        }));
    }
    tokio::time::sleep(signal_at).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let child = Arc::new(std::sync::Mutex::new(child));
    let mut answered = 0;
    for c in clients {
        for (sent, ok) in c.await.unwrap() {
            // Everything sent well before the signal was accepted and must be answered.
            if sent + Duration::from_millis(50) < signal_at {
                assert!(
                    ok,
                    "a request sent at {sent:?}, before SIGTERM, was not answered"
                );
            }
            answered += usize::from(ok);
        }
    }
    assert!(answered > 16, "the load ran: {answered} answered");
    let status = child.lock().unwrap().wait().unwrap();
    assert!(status.success(), "drained and exited 0: {status}");
}
