//! `vm console`: the VM's serial console, from the agent of its host.
//!
//! Output is the agent's console stream (`Vm.StreamConsole`); what is typed goes to the guest's
//! serial port (`Vm.WriteConsole`), where the guest's shell echoes it. On a terminal it runs in
//! raw mode, so every key (Ctrl-C included) reaches the guest as typed, and Ctrl-] ends the
//! console, as in `virtctl console`; the terminal is restored on every way out. From a pipe,
//! the piped bytes are typed and the console stays open after the pipe ends.
//!
//! The agent is reached like the operator reaches it: gRPC with mutual TLS at the Host's
//! `spec.grpcAddress`, presenting a client certificate from the cluster CA and accepting only
//! an agent certificate that names the Host.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use quiver_crds::{Host, MicroVM};
use quiver_rpc::pki::TlsFiles;
use quiver_rpc::{AgentClient, GrpcRoute};
use tokio::sync::mpsc;

use crate::context::Session;
use crate::term::RawMode;
use crate::vm::describe;
use crate::{Error, Result};

/// Ctrl-]: ends the console, as in telnet and virtctl.
pub const ESCAPE: u8 = 0x1d;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client certificate under `pki_dir` (`operator/ca.pem`, `operator/client.pem`,
/// `operator/client-key.pem`, as the operator writes them), checked to exist.
///
/// # Errors
/// One of the three files is missing.
pub fn client_files(pki_dir: &Path) -> Result<TlsFiles> {
    let files = TlsFiles::named(&pki_dir.join("operator"), "client");
    for path in [&files.ca, &files.cert, &files.key] {
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "client certificate file {} (--pki-dir)",
                path.display()
            )));
        }
    }
    Ok(files)
}

/// Where the console comes from: the VM's uid and its host's agent.
pub struct Source {
    pub uid: String,
    pub host: String,
    pub address: String,
}

/// Finds the VM's host and the agent's address.
///
/// # Errors
/// The VM or its Host does not exist, or the VM has no host yet.
pub async fn locate(session: &Session, name: &str) -> Result<Source> {
    let what = describe(&session.namespace, name);
    let vms: Api<MicroVM> = Api::namespaced(session.client.clone(), &session.namespace);
    let vm = vms.get(name).await.map_err(|e| Error::api(&what, e))?;
    let uid = vm.metadata.uid.clone().unwrap_or_default();
    let Some(host) = vm.status.and_then(|s| s.host) else {
        return Err(Error::Invalid(format!(
            "{what} has no host yet (status.host is empty)"
        )));
    };
    let hosts: Api<Host> = Api::all(session.client.clone());
    let registered = hosts
        .get(&host)
        .await
        .map_err(|e| Error::api(format!("Host {host} (the host of {what})"), e))?;
    Ok(Source {
        uid,
        host,
        address: registered.spec.grpc_address,
    })
}

/// Connects to the agent over gRPC with mutual TLS.
///
/// # Errors
/// The agent does not answer, or TLS fails.
pub async fn connect(source: &Source, tls: &TlsFiles) -> Result<AgentClient> {
    let endpoint = format!("https://{}", source.address);
    let unreachable = |e: String| {
        Error::Unreachable(format!(
            "agent of Host {} at {} unreachable: {e}",
            source.host, source.address
        ))
    };
    let route = tokio::time::timeout(
        CONNECT_TIMEOUT,
        GrpcRoute::connect(endpoint, Some((tls, &source.host)), false),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
    .map_err(|e| unreachable(e.to_string()))?;
    Ok(AgentClient::grpc(route))
}

/// Why the console ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Ctrl-].
    Escape,
    /// The agent ended the stream (the VM was deleted or left the host), or `follow` was off
    /// and everything written so far was shown.
    StreamEnded,
    /// SIGINT or SIGTERM.
    Signal,
}

/// Streams the console to stdout and types stdin into it, until the stream ends, Ctrl-] is
/// read from stdin, or a signal arrives. stdin may be a terminal (raw mode) or a pipe.
///
/// # Errors
/// The stream could not be opened or broke.
pub async fn run(name: &str, source: &Source, agent: &AgentClient, follow: bool) -> Result<End> {
    let unreachable = |e: quiver_rpc::ClientError| {
        Error::Unreachable(format!(
            "console of VM {name} on Host {} at {}: {e}",
            source.host, source.address
        ))
    };
    let mut stream = agent
        .console(&source.uid, 0, follow)
        .await
        .map_err(unreachable)?;
    let raw = RawMode::enter().map_err(|e| Error::Io {
        what: "setting the terminal to raw mode".to_owned(),
        source: e,
    })?;
    let tty = raw.is_some();
    let eol = if tty { "\r\n" } else { "\n" };
    if follow {
        eprint!(
            "Connected to the serial console of {name} on {}. Escape: ^]{eol}",
            source.host
        );
    }
    let mut keys = stdin_keys();
    let mut keys_open = true;
    let mut last_refusal = None;
    let (mut interrupt, mut terminate) = signals()?;
    let mut stdout = std::io::stdout().lock();
    let end = loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(chunk)) => {
                    let written = stdout.write_all(&chunk.data).and_then(|()| stdout.flush());
                    if let Err(e) = written {
                        break Err(Error::Io { what: "writing the console to stdout".to_owned(), source: e });
                    }
                }
                Some(Err(e)) => break Err(unreachable(e)),
                None => break Ok(End::StreamEnded),
            },
            key = keys.recv(), if keys_open => {
                let Some(bytes) = key else {
                    // stdin ended: keep showing the console.
                    keys_open = false;
                    continue;
                };
                let escape = bytes.iter().position(|&b| b == ESCAPE);
                let typed = &bytes[..escape.unwrap_or(bytes.len())];
                if let Err(e) = type_into(agent, &source.uid, typed).await {
                    // Say why input is not taken (the VM stopped, say), once per reason.
                    let refusal = e.to_string();
                    if last_refusal.as_ref() != Some(&refusal) {
                        eprint!("{eol}[input not sent: {refusal}]{eol}");
                        last_refusal = Some(refusal);
                    }
                }
                if escape.is_some() {
                    break Ok(End::Escape);
                }
            },
            _ = interrupt.recv() => break Ok(End::Signal),
            _ = terminate.recv() => break Ok(End::Signal),
        }
    };
    drop(raw);
    if tty && end.is_ok() {
        eprintln!();
    }
    end
}

/// Types `bytes` into the console, in pieces the agent takes.
async fn type_into(
    agent: &AgentClient,
    uid: &str,
    bytes: &[u8],
) -> std::result::Result<(), quiver_rpc::ClientError> {
    for piece in bytes.chunks(quiver_rpc::MAX_CONSOLE_INPUT) {
        agent.write_console(uid, piece.to_vec()).await?;
    }
    Ok(())
}

/// stdin's bytes, read on a plain thread (a blocked read must not hold up the runtime's
/// shutdown); the channel closes at end of input.
fn stdin_keys() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn signals() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| Error::Io {
        what: "listening for SIGINT and SIGTERM".to_owned(),
        source,
    };
    Ok((
        signal(SignalKind::interrupt()).map_err(io)?,
        signal(SignalKind::terminate()).map_err(io)?,
    ))
}

/// The dev cluster's PKI dir (`quiver-operator dev` writes it under its state dir).
#[must_use]
pub fn default_pki_dir() -> PathBuf {
    PathBuf::from(".quiver/pki")
}
