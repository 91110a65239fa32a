//! Compiles bench-rpc's echo service (`../proto/bench.proto`) with protox: pure Rust, no system
//! `protoc`. Only the generated client and server, not tonic's TCP transport.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/bench.proto");
    let fds = protox::compile(["bench.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
