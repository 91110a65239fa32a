//! Iroh and gRPC under random packet loss.
//!
//! A real `quiver-agent --transport dual` (mutual TLS on gRPC) runs in one network namespace;
//! from another, joined to it by a veth pair, the same calls go to it over gRPC and over Iroh
//! while nftables drops 1 %, then 5 %, of the packets each way at random. Every call must
//! succeed within its deadline on both transports; the success rates and latencies are
//! printed, never asserted on (`bench-netns` measures them for docs/benchmarks.md).
//!
//! Run (as root; SKIPPED otherwise): `cargo test -p quiver-tests --test netns_loss`.

use quiver_rpc::Wire;
use quiver_rpc::iroh::SecretKey;
use quiver_tests::netns::{Link, root_or_skip};
use quiver_tests::netns_agent::{NsAgent, run_calls};

const CALLS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_succeeds_over_grpc_and_iroh_under_packet_loss() -> anyhow::Result<()> {
    if !root_or_skip("every_call_succeeds_over_grpc_and_iroh_under_packet_loss") {
        return Ok(());
    }
    let link = Link::new("loss")?;
    let key = SecretKey::generate();
    let agent = NsAgent::start(&link, key.public()).await?;
    for loss in [1, 5] {
        for wire in [Wire::Grpc, Wire::Iroh] {
            let run = run_calls(&link, &agent, &key, wire, loss, CALLS).await?;
            eprintln!(
                "{} at {loss}% loss: {}/{} succeeded, p50 {:?}, p99 {:?}",
                wire.as_str(),
                run.succeeded(),
                run.calls,
                run.percentile(50.0),
                run.percentile(99.0)
            );
            assert_eq!(
                run.succeeded(),
                CALLS,
                "{} at {loss}% loss: {:?}\nagent log:\n{}",
                wire.as_str(),
                run.errors,
                agent.log()
            );
        }
    }
    Ok(())
}
