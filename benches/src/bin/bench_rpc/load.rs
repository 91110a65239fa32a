//! Unary load at a fixed number of calls in flight: the same harness for every transport.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_benches::Samples;

/// One transport's unary echo call.
pub trait Echo: Send + Sync + 'static {
    fn echo(&self, payload: Bytes) -> impl Future<Output = anyhow::Result<Bytes>> + Send;
}

/// Latencies of every call, and how long the calls took together.
#[derive(Clone, Default)]
pub struct LoadResult {
    pub latencies: Samples,
    pub elapsed: Duration,
}

impl LoadResult {
    /// Adds another run at the same level (runs of several rounds are pooled).
    pub fn merge(&mut self, other: &LoadResult) {
        self.latencies.extend(&other.latencies);
        self.elapsed += other.elapsed;
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `calls` echo calls of `payload`, `in_flight` at a time (each of `in_flight` tasks
/// calls in a loop), after `warmup` calls that are not counted. Every reply is checked.
pub async fn run<E: Echo>(
    echo: Arc<E>,
    payload: Bytes,
    in_flight: usize,
    calls: usize,
    warmup: usize,
) -> anyhow::Result<LoadResult> {
    for _ in 0..warmup {
        check(&payload, &echo.echo(payload.clone()).await?)?;
    }
    let per_task = calls.div_ceil(in_flight);
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let echo = Arc::clone(&echo);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                for _ in 0..per_task {
                    let sent = Instant::now();
                    let reply = echo.echo(payload.clone()).await?;
                    samples.push(sent.elapsed());
                    check(&payload, &reply)?;
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut latencies = Samples::default();
    for task in tasks {
        latencies.extend(&task.await??);
    }
    Ok(LoadResult {
        latencies,
        elapsed: started.elapsed(),
    })
}

fn check(sent: &Bytes, reply: &Bytes) -> anyhow::Result<()> {
    anyhow::ensure!(
        sent == reply,
        "echo returned {} bytes that differ from the {} sent",
        reply.len(),
        sent.len()
    );
    Ok(())
}
