//! A driver that runs no processes, with configurable delays. For control-plane scale
//! benchmarks and tests only: never the default, and the Status service reports
//! `driver = "simulated"`. A simulated guest whose command line holds [`NEVER_READY`] never
//! reports readiness, as a real guest with a broken command line would not (for rehearsing a
//! MicroVM rollout's rollback). What is typed into a running simulated VM's console is echoed to
//! its console log, as a terminal would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::driver::{Driver, ExitInfo, Launched};
use super::network::ActiveForward;
use super::record::now_ms;
use super::rundir::RunDir;
use super::spec::VmSpec;
use crate::config::SimulatedConfig;
use crate::{Error, Result};

/// A command-line word that keeps a simulated guest from ever becoming ready.
pub const NEVER_READY: &str = "quiver.simulated.ready=never";

pub struct SimulatedDriver {
    config: SimulatedConfig,
    /// Stop switches of the "running" VMs, by run dir.
    running: Mutex<HashMap<PathBuf, oneshot::Sender<()>>>,
    /// Run dirs of running VMs whose command line holds [`NEVER_READY`].
    never_ready: Mutex<std::collections::HashSet<PathBuf>>,
}

impl SimulatedDriver {
    pub fn new(config: SimulatedConfig) -> Self {
        SimulatedDriver {
            config,
            running: Mutex::new(HashMap::new()),
            never_ready: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// The simulated VM in `dir` exits now.
    fn end(&self, dir: &RunDir) {
        let tx = self
            .running
            .lock()
            .ok()
            .and_then(|mut m| m.remove(dir.root()));
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

impl Driver for SimulatedDriver {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn accel(&self) -> &'static str {
        "none"
    }

    fn launch<'a>(
        &'a self,
        dir: &'a RunDir,
        spec: &'a VmSpec,
        _forwards: &'a [ActiveForward],
    ) -> BoxFuture<'a, Result<Launched>> {
        async move {
            let spawned_at_ms = now_ms();
            tokio::time::sleep(Self::ms(self.config.launch_ms)).await;
            let never = spec.cmdline.split_whitespace().any(|w| w == NEVER_READY);
            if let Ok(mut set) = self.never_ready.lock() {
                if never {
                    set.insert(dir.root().to_path_buf());
                } else {
                    set.remove(dir.root());
                }
            }
            let (tx, rx) = oneshot::channel();
            if let Ok(mut map) = self.running.lock() {
                map.insert(dir.root().to_path_buf(), tx);
            }
            let exit = async move {
                let _ = rx.await;
                ExitInfo {
                    clean: false,
                    message: "simulated VM stopped".into(),
                }
            };
            Ok(Launched {
                pid: 0,
                spawned_at_ms,
                exit: exit.boxed(),
            })
        }
        .boxed()
    }

    fn adopt<'a>(&'a self, _dir: &'a RunDir) -> BoxFuture<'a, Option<Launched>> {
        async { None }.boxed()
    }

    fn shutdown<'a>(&'a self, dir: &'a RunDir, _pid: u32, _grace: Duration) -> BoxFuture<'a, ()> {
        async move {
            tokio::time::sleep(Self::ms(self.config.stop_ms)).await;
            self.end(dir);
        }
        .boxed()
    }

    fn kill<'a>(&'a self, dir: &'a RunDir, _pid: u32) -> BoxFuture<'a, ()> {
        async move { self.end(dir) }.boxed()
    }

    fn wait_ready<'a>(
        &'a self,
        dir: &'a RunDir,
        _marker: &'a str,
        _from: u64,
    ) -> BoxFuture<'a, ()> {
        let never = self
            .never_ready
            .lock()
            .is_ok_and(|set| set.contains(dir.root()));
        if never {
            return futures::future::pending().boxed();
        }
        tokio::time::sleep(Self::ms(self.config.ready_ms)).boxed()
    }

    fn write_console<'a>(&'a self, dir: &'a RunDir, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        async move {
            use std::io::Write as _;
            let running = self
                .running
                .lock()
                .is_ok_and(|m| m.contains_key(dir.root()));
            if !running {
                return Err(Error::FailedPrecondition(
                    "the simulated VM is not running".into(),
                ));
            }
            let path = dir.console_log();
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut log| log.write_all(data))
                .map_err(|e| Error::io(&path, e))
        }
        .boxed()
    }

    fn remove<'a>(&'a self, dir: &'a RunDir) -> BoxFuture<'a, Result<()>> {
        async move { dir.remove() }.boxed()
    }
}
