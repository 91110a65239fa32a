//! The manager's streams: VM status changes for watchers, console bytes for readers, and the
//! console's input.

use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;

use super::console;
use super::manager::VmManager;
use super::rundir::RunDir;
use crate::{Error, Result};
use quiver_rpc::proto;

/// How often a following console stream looks for new bytes.
const CONSOLE_POLL: Duration = Duration::from_millis(50);

impl VmManager {
    /// Every VM's current status, then every change. After falling behind, a fresh full list.
    pub fn watch(&self) -> impl Stream<Item = proto::VmStatus> + Send + use<> {
        let mut rx = self.shared.subscribe();
        let initial = self.shared.list();
        let shared = self.shared.clone();
        async_stream::stream! {
            for s in initial {
                yield s;
            }
            loop {
                match rx.recv().await {
                    Ok(s) => yield s,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for s in shared.list() {
                            yield s;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }

    /// The VM's console from `offset`; with `follow`, until the VM is removed.
    pub fn console(
        &self,
        uid: &str,
        offset: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<proto::ConsoleChunk>> + Send + use<>> {
        self.get(uid)?;
        let path = RunDir::new(&self.shared.data_dir, uid).console_log();
        let (shared, uid) = (self.shared.clone(), uid.to_owned());
        Ok(async_stream::stream! {
            let mut offset = offset;
            loop {
                match console::read_chunk(&path, offset).await {
                    Ok(data) if !data.is_empty() => {
                        let len = data.len() as u64;
                        yield Ok(proto::ConsoleChunk { offset, data });
                        offset += len;
                    }
                    Ok(_) if follow && shared.vms().contains_key(&uid) => {
                        tokio::time::sleep(CONSOLE_POLL).await;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        yield Err(Error::io(&path, e));
                        break;
                    }
                }
            }
        })
    }

    /// Types `data` into the VM's serial console; the VM must be running on this host.
    pub async fn write_console(&self, uid: &str, data: &[u8]) -> Result<()> {
        let status = self.get(uid)?;
        if data.len() > quiver_rpc::MAX_CONSOLE_INPUT {
            return Err(Error::InvalidArgument {
                field: "data".into(),
                reason: format!(
                    "{} bytes; at most {} may be typed in one call",
                    data.len(),
                    quiver_rpc::MAX_CONSOLE_INPUT
                ),
            });
        }
        if status.phase != proto::Phase::Running as i32 {
            let phase = proto::Phase::try_from(status.phase)
                .map_or("in an unknown phase", |p| p.as_str_name());
            return Err(Error::FailedPrecondition(format!(
                "vm {uid} is not running ({phase}): its console takes input only while it runs"
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let dir = RunDir::new(&self.shared.data_dir, uid);
        self.shared.driver.write_console(&dir, data).await
    }
}
