//! Several endpoints: requests spread over them, a failing endpoint is set
//! aside, and retryable failures are retried on another endpoint within the
//! call's deadline. Run two servers and stop one while this runs:
//!
//! ```sh
//! cargo run -p reference-server                                   # terminal 1
//! cargo run -p reference-server -- --grpc-address 127.0.0.1:5501 --rest-address 127.0.0.1:1501   # terminal 2
//! cargo run -p serving-client --example several_endpoints
//! ```
//!
//! With only the first server running it still succeeds: the missing one is
//! set aside after its first refused connection.

use std::time::{Duration, Instant};

use serving_client::{Balance, Client, Error, NamedTensors, Protocol, Tensor};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoints: Vec<String> = match std::env::args().skip(1).collect::<Vec<_>>() {
        given if !given.is_empty() => given,
        _ => vec![
            "grpc://127.0.0.1:5500".into(),
            "grpc://127.0.0.1:5501".into(),
            "http://127.0.0.1:1500".into(),
            "http://127.0.0.1:1501".into(),
        ],
    };
    let client = Client::builder()
        .endpoints(&endpoints)
        .protocol(Protocol::MindSpore)
        .balance(Balance::LeastLoaded)
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .retries(3)
        .set_aside_for(Duration::from_secs(2))
        .build()?;

    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let x = Tensor::from_vec(&[2, 2], vec![i as f32; 4]).expect("4 values");
            let instance: NamedTensors =
                [("x1".to_string(), x.clone()), ("x2".to_string(), x)].into();
            client.predict("add", "add_common", &[instance]).await
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for call in calls {
        match call.await.expect("the task ran") {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                eprintln!("failed: {e} (retryable: {})", e.is_retryable());
            }
        }
    }
    println!(
        "{ok} calls succeeded, {failed} failed, in {:?} over {} endpoints",
        started.elapsed(),
        endpoints.len()
    );
    Ok(())
}
