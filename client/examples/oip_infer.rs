//! Open Inference Protocol (KServe v2): health, metadata and inference on the
//! demo model `add`, over gRPC or REST. Works against Triton, KServe and
//! MLServer too: pass their URL and use a model they serve.
//!
//! ```sh
//! cargo run -p reference-server            # in one terminal
//! cargo run -p serving-client --example oip_infer
//! cargo run -p serving-client --example oip_infer -- http://127.0.0.1:1500
//! ```

use std::time::Duration;

use serving_client::{Client, Error, Parameter, Tensor};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "grpc://127.0.0.1:5500".into());
    let client = Client::builder()
        .endpoint(&url)
        .timeout(Duration::from_secs(5))
        .build()?;

    println!(
        "live: {}, ready: {}",
        client.server_live().await?,
        client.server_ready().await?
    );
    let server = client.server_metadata().await?;
    println!(
        "server: {} {} extensions {:?}",
        server.name, server.version, server.extensions
    );
    let model = client.model_metadata("add", None).await?;
    for t in model.inputs.iter().chain(&model.outputs) {
        println!("  {} {} {:?}", t.name, t.datatype, t.shape);
    }

    let response = client
        .infer("add")
        .id("example-1")
        .input(
            "x1",
            Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4 values"),
        )
        .input(
            "x2",
            Tensor::from_vec(&[2, 2], vec![0.5f32; 4]).expect("4 values"),
        )
        .output("y")
        .parameter("priority", Parameter::Int64(1))
        .send()
        .await?;
    for output in &response.outputs {
        println!(
            "{} (id {}, version {}): {} {:?} = {:?}",
            output.name,
            response.id,
            response.model_version,
            output.tensor.dtype(),
            output.tensor.shape(),
            output.tensor.to_vec::<f32>()
        );
    }

    // Errors are typed: match on what you can handle.
    match client
        .infer("no_such_model")
        .input("x", Tensor::scalar(1f32))
        .send()
        .await
    {
        Err(Error::NotFound { message }) => println!("as expected, not found: {message}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
