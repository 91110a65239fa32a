//! `bench-rpc --smoke` runs every part of the RPC benchmark at a tiny size and leaves
//! `docs/benchmarks.md` alone: it keeps the harness from rotting between full runs.

use std::process::Command;

#[test]
fn bench_rpc_smoke_runs_every_part_and_writes_no_docs() {
    let docs = quiver_benches::docs_path();
    let json = quiver_benches::json_path("rpc");
    let before = (std::fs::read(&docs).ok(), std::fs::read(&json).ok());
    let out = Command::new(env!("CARGO_BIN_EXE_bench-rpc"))
        .arg("--smoke")
        .output()
        .expect("run bench-rpc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench-rpc --smoke failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "### Codec",
        "### Unary echo",
        "(a) quiver/rpc/1 over Iroh | 64 |",
        "(b) tonic, TCP + mTLS | 64 |",
        "(d) raw Iroh bi-stream echo | 64 |",
        "(c) irpc-iroh 0.17 | 64 |",
        "(e) raw TCP, loopback | 64 |",
        "### Bulk and connections",
        "### Priorities",
        "| 4 | on |",
        "| 4 | off |",
    ] {
        assert!(
            stdout.contains(part),
            "no {part:?} in the report:\n{stdout}"
        );
    }
    assert_eq!(
        (std::fs::read(&docs).ok(), std::fs::read(&json).ok()),
        before,
        "a smoke run rewrote the docs or the JSON"
    );
}
