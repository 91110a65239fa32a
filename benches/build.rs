//! Compiles `proto/bench.proto` (the gRPC echo baseline of `bench-rpc`) with protox: pure Rust,
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/bench.proto");
    let fds = protox::compile(["bench.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
