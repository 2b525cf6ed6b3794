//! `reference-server` command line.

fn main() {
    println!(
        "reference-server {}: the wire layer is built; the ONNX Runtime server that this \
         command will start is the next piece of work (see docs/roadmap.md).",
        env!("CARGO_PKG_VERSION")
    );
}
