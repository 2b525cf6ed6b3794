//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler), so no
//! `protoc` is needed on any machine, and generates prost messages with every
//! `bytes` field as `bytes::Bytes` (zero-copy decoding of large tensors) and
//! every map as a `BTreeMap` (deterministic order). The tonic stubs are
//! generated only with the `grpc` feature. The compiled descriptors are kept
//! too (`descriptors.bin`), for reading Triton's `config.pbtxt` text format
//! by reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ms_service.proto",
        "proto/grpc_predict_v2.proto",
        "proto/model_config.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .build_transport(false)
        .generate_default_stubs(true)
        .bytes(".")
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
