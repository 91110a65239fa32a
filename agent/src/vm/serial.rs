//! Console input: what a user types, written to a VM's serial port.
//!
//! QEMU's serial chardev is a unix socket server (`serial.sock`) that also logs everything the
//! guest writes to `console.log`, whether a client is connected or not; the console streams
//! read that log. For input the agent holds one connection per VM, made at the first write and
//! made again once QEMU closed it (the VM restarted). QEMU drops what is still unread when its
//! client hangs up, so the connection stays open between writes; a task drains (discards) what
//! the guest writes to it, which the log already has, so that the guest never waits on it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;

use crate::{Error, Result};

/// How long a write may wait for the guest to take its bytes (a guest that reads nothing, e.g.
/// one still booting, leaves QEMU's input queue full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

type Slot = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

/// The open input connections, by serial socket path.
#[derive(Debug, Default)]
pub struct SerialInputs {
    connections: Mutex<HashMap<PathBuf, Slot>>,
}

impl SerialInputs {
    /// Writes `data` to the serial port behind `socket`. Writes to one VM are serialized, so
    /// two users typing at once interleave whole writes, never parts of them.
    ///
    /// # Errors
    /// `FailedPrecondition` when QEMU has no such socket (a QEMU started without console
    /// input); `Unavailable` when the guest did not take the bytes in time.
    pub async fn write(&self, socket: &Path, data: &[u8]) -> Result<()> {
        let slot = self.slot(socket);
        let mut connection = slot.lock().await;
        if let Some(writer) = connection.as_mut() {
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(data)).await {
                Ok(Ok(())) => return Ok(()),
                // QEMU closed the connection (the VM restarted): connect again below. A
                // write to a closed connection fails whole (EPIPE), so nothing is typed twice.
                Ok(Err(_)) => *connection = None,
                Err(_) => {
                    *connection = None;
                    return Err(not_taken());
                }
            }
        }
        let mut writer = connect(socket).await?;
        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(data)).await {
            Ok(Ok(())) => {
                *connection = Some(writer);
                Ok(())
            }
            Ok(Err(e)) => Err(Error::Unavailable(format!(
                "serial console input at {}: {e}",
                socket.display()
            ))),
            Err(_) => Err(not_taken()),
        }
    }

    /// Closes the VM's input connection, if any (the VM is gone).
    pub fn forget(&self, socket: &Path) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(socket);
        }
    }

    fn slot(&self, socket: &Path) -> Slot {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connections.entry(socket.to_owned()).or_default().clone()
    }
}

fn not_taken() -> Error {
    Error::Unavailable(format!(
        "the guest did not take console input within {}s (is it reading its serial port?)",
        WRITE_TIMEOUT.as_secs()
    ))
}

/// Connects and starts draining what the guest writes, until QEMU hangs up.
async fn connect(socket: &Path) -> Result<OwnedWriteHalf> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::FailedPrecondition(format!(
                "this VM's QEMU takes no console input ({} is missing: it was started by an \
                 older agent); restart the VM to type into its console",
                socket.display()
            ))
        } else {
            Error::io(socket, e)
        }
    })?;
    let (mut reader, writer) = stream.into_split();
    tokio::spawn(async move {
        let mut discard = vec![0u8; 4096];
        while matches!(reader.read(&mut discard).await, Ok(n) if n > 0) {}
    });
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A stand-in for QEMU's serial socket: accepts connections one after another and
    /// reports what each one carried, and writes some "guest output" to each.
    async fn serial_server(path: &Path) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
        let listener = UnixListener::bind(path).expect("bind");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                stream.write_all(&[b'x'; 100_000]).await.ok();
                let mut buf = vec![0u8; 64];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                // Hang up, as QEMU does when the VM restarts, then report.
                drop(stream);
                tx.send(buf[..n].to_vec()).await.ok();
            }
        });
        rx
    }

    #[tokio::test]
    async fn writes_reach_the_socket_and_a_closed_connection_is_made_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("serial.sock");
        let mut seen = serial_server(&path).await;
        let inputs = SerialInputs::default();
        inputs.write(&path, b"ls\n").await.expect("first write");
        assert_eq!(seen.recv().await.expect("first"), b"ls\n");
        // The server hung up after the first write; the next one connects again.
        inputs.write(&path, b"pwd\n").await.expect("second write");
        let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("reconnected")
            .expect("second");
        assert_eq!(got, b"pwd\n");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_failed_precondition_that_says_why() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = SerialInputs::default()
            .write(&tmp.path().join("serial.sock"), b"x")
            .await
            .expect_err("no socket");
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("restart the VM")),
            "{err}"
        );
    }
}
