//! Compiles the ONNX subset in `proto/onnx.proto` with protox (no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/onnx.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
