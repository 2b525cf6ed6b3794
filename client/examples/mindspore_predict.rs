//! MindSpore Serving: `add_common` of the demo servable, over gRPC or REST.
//!
//! ```sh
//! cargo run -p reference-server            # in one terminal
//! cargo run -p serving-client --example mindspore_predict
//! cargo run -p serving-client --example mindspore_predict -- http://127.0.0.1:1500
//! ```

use serving_client::{Client, Error, NamedTensors, Tensor};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "grpc://127.0.0.1:5500".into());
    let client = Client::mindspore(&url)?;

    // Two instances in one request; each gets its own result.
    let instance = |a: f32, b: f32| -> NamedTensors {
        [
            (
                "x1".to_string(),
                Tensor::from_vec(&[2, 2], vec![a; 4]).expect("4 values for [2, 2]"),
            ),
            (
                "x2".to_string(),
                Tensor::from_vec(&[2, 2], vec![b; 4]).expect("4 values for [2, 2]"),
            ),
        ]
        .into()
    };
    let results = client
        .predict(
            "add",
            "add_common",
            &[instance(1.0, 2.0), instance(3.0, 4.0)],
        )
        .await?;
    for (i, result) in results.iter().enumerate() {
        match result {
            // gRPC keeps FP32; REST's JSON brings numbers back as FP64.
            Ok(outputs) => println!("instance {i}: y = {:?}", outputs["y"].to_f64_vec()),
            Err(e) => println!("instance {i}: error {} ({})", e.message, e.code),
        }
    }

    // A whole-request error arrives in-band, with MindSpore's text and code.
    match client
        .predict("no_such_servable", "add_common", &[instance(1.0, 1.0)])
        .await
    {
        Err(Error::Servable(e)) => println!("as expected: code {}: {}", e.code, e.message),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
