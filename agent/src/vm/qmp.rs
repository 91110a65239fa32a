//! A small typed async QMP client (QEMU Machine Protocol over a unix socket).
//!
//! Written here rather than using `qapi` 0.15: the agent needs four commands and the event
//! stream, and `qapi`'s generated QMP schema is a large extra compile for the 2-core dev hosts.
//! Lines are capped at [`MAX_LINE`] so a misbehaving peer cannot make the agent allocate without
//! bound.

use std::collections::VecDeque;
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Error, Result};

pub const MAX_LINE: u64 = 1 << 20;

/// One message from QEMU.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Greeting { version: String },
    Return(Value),
    Error { class: String, desc: String },
    Event(QmpEvent),
}

#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

impl QmpEvent {
    /// `SHUTDOWN` caused by the guest itself (poweroff inside the VM), not by the host.
    pub fn is_guest_shutdown(&self) -> bool {
        self.name == "SHUTDOWN" && self.data.get("guest").and_then(Value::as_bool) == Some(true)
    }
}

/// `query-status` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStatus {
    pub running: bool,
    pub status: String,
}

/// Parses one QMP line.
pub fn parse_message(line: &str) -> Result<Message> {
    let v: Value = serde_json::from_str(line).map_err(|e| Error::Qmp(format!("bad json: {e}")))?;
    if let Some(qmp) = v.get("QMP") {
        let ver = &qmp["version"]["qemu"];
        let version = format!("{}.{}.{}", ver["major"], ver["minor"], ver["micro"]);
        return Ok(Message::Greeting { version });
    }
    if let Some(ret) = v.get("return") {
        return Ok(Message::Return(ret.clone()));
    }
    if let Some(err) = v.get("error") {
        let class = err["class"].as_str().unwrap_or("GenericError").to_owned();
        let desc = err["desc"].as_str().unwrap_or_default().to_owned();
        return Ok(Message::Error { class, desc });
    }
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        return Ok(Message::Event(QmpEvent {
            name: name.to_owned(),
            data,
        }));
    }
    Err(Error::Qmp(format!("unrecognised message: {line}")))
}

/// Parses a `query-status` return value.
pub fn parse_run_status(v: &Value) -> Result<RunStatus> {
    let running = v["running"]
        .as_bool()
        .ok_or_else(|| Error::Qmp("no 'running'".into()))?;
    let status = v["status"].as_str().unwrap_or_default().to_owned();
    Ok(RunStatus { running, status })
}

pub struct QmpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events read while waiting for a command's reply.
    pending: VecDeque<QmpEvent>,
    pub version: String,
}

impl QmpClient {
    /// Connects, reads the greeting and enters command mode (`qmp_capabilities`).
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| Error::Qmp(format!("connect {}: {e}", path.display())))?;
        let (r, writer) = stream.into_split();
        let mut client = QmpClient {
            reader: BufReader::new(r),
            writer,
            pending: VecDeque::new(),
            version: String::new(),
        };
        match client.read_message().await? {
            Some(Message::Greeting { version }) => client.version = version,
            other => return Err(Error::Qmp(format!("expected greeting, got {other:?}"))),
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut req = json!({ "execute": command });
        if let Some(args) = arguments {
            req["arguments"] = args;
        }
        let mut line = req.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::Qmp(format!("write: {e}")))?;
        loop {
            match self.read_message().await? {
                Some(Message::Return(v)) => return Ok(v),
                Some(Message::Error { class, desc }) => {
                    return Err(Error::Qmp(format!("{command}: {class}: {desc}")));
                }
                Some(Message::Event(ev)) => self.pending.push_back(ev),
                Some(Message::Greeting { .. }) => {}
                None => return Err(Error::Qmp(format!("{command}: connection closed"))),
            }
        }
    }

    pub async fn query_status(&mut self) -> Result<RunStatus> {
        let v = self.execute("query-status", None).await?;
        parse_run_status(&v)
    }

    /// Sends the ACPI power button press; the guest decides whether to power off.
    pub async fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// Tells QEMU to exit now. The connection usually closes before or right after the reply.
    pub async fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(Error::Qmp(m)) if m.ends_with("connection closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next asynchronous event; `None` once QEMU closed the socket.
    pub async fn next_event(&mut self) -> Result<Option<QmpEvent>> {
        if let Some(ev) = self.pending.pop_front() {
            return Ok(Some(ev));
        }
        loop {
            match self.read_message().await? {
                Some(Message::Event(ev)) => return Ok(Some(ev)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    async fn read_message(&mut self) -> Result<Option<Message>> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| Error::Qmp(format!("read: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            if n as u64 >= MAX_LINE {
                return Err(Error::Qmp(format!("line longer than {MAX_LINE} bytes")));
            }
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&buf);
        parse_message(line.trim_end()).map(Some)
    }
}

#[cfg(test)]
#[path = "qmp_tests.rs"]
mod tests;
