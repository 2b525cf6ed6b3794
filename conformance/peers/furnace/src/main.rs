//! `furnace-peer --http-port P --grpc-port G`: furnace-server serving `add`
//! (`y = x1 + x2`, FP32 [2, 2] each), computed in plain Rust, as the
//! reference server's demo computes it with ONNX Runtime. Dynamic batching
//! off (furnace's default), as the reference server's demo.

use furnace::{HostTensor, IoSpec, Model, Server, TensorModel, Values};

#[derive(Debug)]
struct Add;

impl TensorModel for Add {
    fn name(&self) -> &str {
        "add"
    }

    fn backend(&self) -> &str {
        "cpu"
    }

    fn inputs(&self) -> Vec<IoSpec> {
        vec![IoSpec::fp32("x1", &[2, 2]), IoSpec::fp32("x2", &[2, 2])]
    }

    fn outputs(&self) -> Vec<IoSpec> {
        vec![IoSpec::fp32("y", &[2, 2])]
    }

    fn run(&self, inputs: Vec<HostTensor>) -> furnace::Result<Vec<HostTensor>> {
        let [a, b] = <[HostTensor; 2]>::try_from(inputs).expect("furnace checks the inputs");
        let (Values::F32(x1), Values::F32(x2)) = (&a.values, &b.values) else {
            unreachable!("furnace checks the types against IoSpec::fp32");
        };
        let y = x1.iter().zip(x2).map(|(p, q)| p + q).collect();
        Ok(vec![HostTensor {
            shape: a.shape.clone(),
            values: Values::F32(y),
        }])
    }
}

fn port(args: &[String], flag: &str) -> u16 {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!("usage: furnace-peer --http-port P --grpc-port G ({flag} missing)")
        })
}

#[tokio::main]
async fn main() -> furnace::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (http, grpc) = (port(&args, "--http-port"), port(&args, "--grpc-port"));
    Server::new()
        .host("127.0.0.1")
        .port(http)
        .configure(|c| {
            c.grpc_port = Some(grpc);
            c.max_body_bytes = 512 << 20;
        })
        .model(Model::custom(Add))
        .serve()
        .await
}
