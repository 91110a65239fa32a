//! Iroh vs gRPC under random packet loss, between two network namespaces.
//!
//! A real `quiver-agent --transport dual --dev-tls` in one namespace; from the other, over a
//! veth pair on which nftables drops 0, 1 and 5 % of the packets each way at random, the same
//! calls one after the other (Health, Status, ListVms, GetResourceSummary in turn) over gRPC
//! with mutual TLS and over Iroh, each with a 30 s deadline. Reports success rate and latency.
//!
//! Needs root. Run: `cargo run --release -p quiver-benches --bin bench-netns` (`-- --calls N`,
//! default 2000 per transport and loss rate; `-- --no-write` to leave docs/benchmarks.md alone).

use std::fmt::Write as _;

use quiver_benches::{docs_path, fmt_duration, write_section};
use quiver_rpc::Wire;
use quiver_rpc::iroh::SecretKey;
use quiver_tests::netns::{Link, root_or_skip};
use quiver_tests::netns_agent::{NsAgent, Run, run_calls};

const LOSS_PERCENT: [u32; 3] = [0, 1, 5];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let write = !args.iter().any(|a| a == "--no-write");
    let calls = match args.iter().position(|a| a == "--calls") {
        Some(i) => args.get(i + 1).map_or(Ok(2000), |n| n.parse())?,
        None => 2000,
    };
    if !root_or_skip("bench-netns") {
        return Ok(());
    }
    let link = Link::new("bench")?;
    let key = SecretKey::generate();
    let agent = NsAgent::start(&link, key.public()).await?;
    let mut runs = Vec::new();
    for loss in LOSS_PERCENT {
        for wire in [Wire::Grpc, Wire::Iroh] {
            let run = run_calls(&link, &agent, &key, wire, loss, calls).await?;
            eprintln!("{}", row(&run));
            runs.push(run);
        }
    }
    let body = table(&runs, calls);
    println!("{body}");
    if write {
        write_section(&docs_path(), "netns", &body)?;
        eprintln!("wrote {}", docs_path().display());
    }
    Ok(())
}

fn row(run: &Run) -> String {
    #[allow(clippy::cast_precision_loss)]
    let rate = 100.0 * run.succeeded() as f64 / run.calls as f64;
    format!(
        "| {} % | {} | {}/{} ({rate:.1} %) | {} | {} | {} |",
        run.loss_percent,
        match run.wire {
            Wire::Grpc => "gRPC (TCP, mTLS)",
            Wire::Iroh => "Iroh (`quiver/rpc/1`)",
        },
        run.succeeded(),
        run.calls,
        fmt_duration(run.percentile(50.0)),
        fmt_duration(run.percentile(99.0)),
        fmt_duration(run.percentile(100.0)),
    )
}

fn table(runs: &[Run], calls: usize) -> String {
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Iroh vs gRPC under packet loss (network namespaces)\n"
    );
    let _ = writeln!(
        out,
        "As root, `cargo run{profile} -p quiver-benches --bin bench-netns -- --calls {calls}`: a real \
         `quiver-agent --transport dual --dev-tls` (simulated driver) in one network namespace, \
         the client in another, joined by a veth pair; nftables drops the given share of packets \
         each way at random (`numgen random mod 100 < N drop`: this kernel has no netem). \
         {calls} calls per row, one at a time (Health, Status, ListVms, GetResourceSummary in \
         turn), 30 s deadline each, after one untimed call that opens the connection under the \
         same loss. Latency of the calls that succeeded. A lost packet delays a gRPC call until \
         TCP retransmits (after a tail-loss probe of a few round trips, or after the \
         retransmission timeout, 200 ms at least), an Iroh call until QUIC's probe timeout (a \
         few round trips plus the peer's ack delay): hence the p99s and maxima under loss.\n"
    );
    let _ = writeln!(
        out,
        "| loss each way | transport | succeeded | p50 | p99 | max |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for run in runs {
        let _ = writeln!(out, "{}", row(run));
    }
    let failures: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("{}: {e}", r.wire.as_str()))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFirst failures: {}", failures.join("; "));
    }
    out
}
