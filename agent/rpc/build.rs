//! Compiles `proto/quiver.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/quiver.proto");
    let fds = protox::compile(["quiver.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::StrictCodec")
        // Raft payloads pass through without a copy.
        .bytes(".quiver.v1.RaftMessage.message")
        .compile_fds(fds)?;
    Ok(())
}
