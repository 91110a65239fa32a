//! One task per VM: feeds events to its [`Lifecycle`] and executes the commands it returns.
//!
//! Long operations (launch, shutdown, readiness, restart timers) run in their own tasks and
//! report back as messages, so a delete is handled while a launch is still in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::driver::Launched;
use super::lifecycle::{Command, Event, Phase};
use super::network::bind_forwards;
use super::record::{SpecFile, StateFile, now_ms, status};
use super::rundir::RunDir;
use super::shared::Shared;
use super::spec::{VmMeta, VmSpec, recheck_images};
use quiver_rpc::proto;

/// Console logs above this are rotated at the next boot.
const MAX_CONSOLE_BYTES: u64 = 8 << 20;

pub(crate) enum Msg {
    Put {
        put: Box<Put>,
        reply: oneshot::Sender<proto::VmStatus>,
    },
    Event(Event),
    /// QEMU is up after a launch.
    Up {
        launched: Launched,
    },
    /// The first message after an agent restart: the VM's QEMU if it was found alive.
    Recovered {
        launched: Option<Launched>,
    },
    RestartDue {
        token: u64,
    },
}

pub(crate) struct Put {
    pub meta: VmMeta,
    pub spec: VmSpec,
    pub respec: bool,
}

pub(crate) struct Actor {
    shared: Arc<Shared>,
    dir: RunDir,
    meta: VmMeta,
    spec: VmSpec,
    state: StateFile,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    ready: Option<AbortHandle>,
    restart_token: u64,
}

impl Actor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dir: RunDir,
        file: SpecFile,
        state: StateFile,
    ) -> (Self, mpsc::UnboundedSender<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = Actor {
            shared,
            dir,
            meta: file.meta,
            spec: file.spec,
            state,
            tx: tx.clone(),
            rx,
            ready: None,
            restart_token: 0,
        };
        (actor, tx)
    }

    pub(crate) fn status(&self) -> proto::VmStatus {
        status(&self.meta, &self.state, &self.shared.host)
    }

    pub(crate) async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            let mut reply = None;
            let event = match msg {
                Msg::Put { put, reply: r } => {
                    reply = Some(r);
                    let Put { meta, spec, respec } = *put;
                    let strategy = spec.run_strategy;
                    // A new VM's first put is what the manager just wrote; a repeated put
                    // changes nothing on disk either.
                    let changed = self.meta != meta || self.spec != spec;
                    self.meta = meta;
                    self.spec = spec;
                    if changed {
                        let file = SpecFile {
                            meta: self.meta.clone(),
                            spec: self.spec.clone(),
                        };
                        if let Err(e) = self.dir.write_json(&self.dir.spec_file(), &file) {
                            tracing::error!(uid = %self.meta.uid, error = %e, "cannot persist spec");
                        }
                    }
                    Event::Apply { strategy, respec }
                }
                Msg::Event(event) => event,
                Msg::Up { launched } => {
                    self.state.started_at_ms = launched.spawned_at_ms;
                    self.watch_exit(launched);
                    Event::Launched
                }
                Msg::Recovered { launched } => {
                    let alive = launched.is_some();
                    if let Some(launched) = launched {
                        self.watch_exit(launched);
                    }
                    Event::Recovered { alive }
                }
                Msg::RestartDue { token } if token == self.restart_token => Event::RestartDue,
                Msg::RestartDue { .. } => continue,
            };
            if self.step(event).await {
                return;
            }
            if let Some(reply) = reply {
                let _ = reply.send(self.status());
            }
        }
    }

    /// Handles one event; true once the VM is removed.
    async fn step(&mut self, event: Event) -> bool {
        let was_ready = self.state.lifecycle.guest_ready;
        let exited = matches!(
            event,
            Event::Exited { .. } | Event::Recovered { alive: false }
        );
        let commands = self.state.lifecycle.handle(event);
        let (ready, phase) = (self.state.lifecycle.guest_ready, self.state.lifecycle.phase);
        if ready && !was_ready {
            self.state.guest_ready_at_ms = now_ms();
        }
        if exited && !phase.has_process() {
            self.state.pid = 0;
            self.stop_readiness();
            if phase == Phase::Failed {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        for command in commands {
            if self.execute(command).await {
                self.shared.forget(&self.meta, &self.state);
                return true;
            }
        }
        // Strictly increasing per VM: readers order a VM's reports by it (a PutVm reply that a
        // streamed update overtook is recognised as older).
        self.state.updated_at_ms = now_ms().max(self.state.updated_at_ms + 1);
        if let Err(e) = self.dir.write_json(&self.dir.state_file(), &self.state) {
            tracing::error!(uid = %self.meta.uid, error = %e, "cannot persist state");
        }
        self.shared.publish(self.status());
        false
    }

    /// Records the QEMU's pid and reports its exit as an event.
    fn watch_exit(&mut self, launched: Launched) {
        self.state.pid = launched.pid;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let exit = launched.exit.await;
            let _ = tx.send(Msg::Event(Event::Exited {
                clean: exit.clean,
                message: exit.message,
            }));
        });
    }

    /// Executes one command; true when the VM has been removed.
    async fn execute(&mut self, command: Command) -> bool {
        let uid = self.meta.uid.clone();
        match command {
            Command::Launch => {
                tracing::info!(%uid, "launching");
                self.stop_readiness();
                self.dir.rotate_console(MAX_CONSOLE_BYTES);
                self.state.console_offset = self.dir.console_len();
                self.state.guest_ready_at_ms = 0;
                self.shared.starts.fetch_add(1, Ordering::Relaxed);
                self.launch();
            }
            Command::WatchReadiness => self.watch_readiness(),
            Command::Shutdown => {
                let (driver, dir) = (self.shared.driver.clone(), self.dir.clone());
                let (pid, grace) = (self.state.pid, self.shared.stop_grace);
                if self.shared.fenced.load(Ordering::SeqCst) {
                    tracing::warn!(%uid, pid, "fenced: killing");
                    tokio::spawn(async move { driver.kill(&dir, pid).await });
                } else {
                    tracing::info!(%uid, pid, "stopping");
                    tokio::spawn(async move { driver.shutdown(&dir, pid, grace).await });
                }
            }
            Command::ScheduleRestart { after } => {
                tracing::info!(%uid, ?after, "restart scheduled");
                self.restart_token += 1;
                let (token, tx) = (self.restart_token, self.tx.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Msg::RestartDue { token });
                });
            }
            Command::Remove => {
                tracing::info!(%uid, "removing");
                self.stop_readiness();
                if let Err(e) = self.shared.driver.remove(&self.dir).await {
                    tracing::error!(%uid, error = %e, "cannot remove run dir");
                }
                return true;
            }
        }
        false
    }

    /// Checks the images again, gives port forwards their host ports, then starts QEMU in a
    /// task that answers with `Up` or `LaunchFailed`.
    fn launch(&mut self) {
        if self.shared.fenced.load(Ordering::SeqCst) {
            let message = "fenced: this host's Raft lease lapsed; no VM may start here".into();
            let _ = self.tx.send(Msg::Event(Event::LaunchFailed { message }));
            return;
        }
        let forwards = recheck_images(&self.spec, &self.shared.image_roots).and_then(|()| {
            let (wanted, addr) = (self.spec.network.forwards(), self.shared.forward_address);
            bind_forwards(wanted, addr, &self.state.forwards).map_err(|e| crate::Error::Launch {
                message: format!("cannot pick host ports for port forwards on {addr}: {e}"),
            })
        });
        let forwards = match forwards {
            Ok(forwards) => forwards,
            Err(e) => {
                let _ = self.tx.send(Msg::Event(Event::LaunchFailed {
                    message: launch_message(e),
                }));
                return;
            }
        };
        self.state.forwards.clone_from(&forwards);
        let (driver, dir, spec, tx) = (
            self.shared.driver.clone(),
            self.dir.clone(),
            self.spec.clone(),
            self.tx.clone(),
        );
        tokio::spawn(async move {
            let msg = match driver.launch(&dir, &spec, &forwards).await {
                Ok(launched) => Msg::Up { launched },
                Err(e) => Msg::Event(Event::LaunchFailed {
                    message: launch_message(e),
                }),
            };
            let _ = tx.send(msg);
        });
    }

    /// Watches the console for the marker, and reports a timeout counted from this boot's
    /// start (for a re-adopted VM, what is left of it) while still waiting for a late marker.
    fn watch_readiness(&mut self) {
        self.stop_readiness();
        let Some(readiness) = self.spec.readiness.clone() else {
            return;
        };
        let (driver, dir, tx) = (
            self.shared.driver.clone(),
            self.dir.clone(),
            self.tx.clone(),
        );
        let from = self.state.console_offset;
        // Unknown start (a QEMU adopted from a launch the agent never saw finish): full timeout.
        let started = self.state.started_at_ms;
        let elapsed_ms = if started > 0 {
            now_ms().saturating_sub(started)
        } else {
            0
        };
        let elapsed = Duration::from_millis(u64::try_from(elapsed_ms).unwrap_or(0));
        let task = tokio::spawn(async move {
            let wait = driver.wait_ready(&dir, &readiness.marker, from);
            tokio::pin!(wait);
            if let Some(after) = readiness.timeout {
                let left = after.saturating_sub(elapsed);
                if tokio::time::timeout(left, &mut wait).await.is_err() {
                    let _ = tx.send(Msg::Event(Event::ReadinessTimedOut { after }));
                    wait.await;
                }
            } else {
                wait.await;
            }
            let _ = tx.send(Msg::Event(Event::GuestReady));
        });
        self.ready = Some(task.abort_handle());
    }

    fn stop_readiness(&mut self) {
        if let Some(task) = self.ready.take() {
            task.abort();
        }
    }
}

/// A launch error as the status message: QEMU's own words when there are some.
fn launch_message(e: crate::Error) -> String {
    match e {
        crate::Error::Launch { message } => message,
        other => other.to_string(),
    }
}
