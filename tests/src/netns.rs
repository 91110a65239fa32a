//! Network namespaces for tests that change addresses, drop packets or block paths.
//!
//! Everything here has a name unique to the test process and is removed when its guard drops,
//! also when the test fails: [`Netns`] deletes its namespace (which takes its veth ends and
//! nftables tables with it), [`NftTable`] deletes its table. Code runs inside a namespace as a
//! process (`Netns::command`, `ip netns exec`) or on a thread of this process that has entered it
//! (`Netns::spawn`: every socket that thread opens lives in the namespace).
//!
//! Needs root (namespaces, veths, nftables): [`root_or_skip`] says SKIPPED otherwise.

use std::ffi::OsStr;
use std::future::Future;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;

/// The namespace end of [`Link`]'s veth pair in `a`, and in `b`.
pub const VETH_A: &str = "qv-a";
pub const VETH_B: &str = "qv-b";

/// Whether the test can run: true as root, else prints why it is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("SKIPPED: {test} needs root (network namespaces, veth pairs, nftables)");
    }
    root
}

/// Runs a command to completion, failing with its stderr.
fn run(command: &mut Command, stdin: Option<&str>) -> anyhow::Result<()> {
    let described = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {described}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("writing to {described}"))?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{described}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace with only `lo` (up), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named after `tag`, this process and a counter.
    ///
    /// # Errors
    /// `ip netns add` failed (not root?).
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("qv-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]), None)?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip <args>` inside the namespace.
    ///
    /// # Errors
    /// The command failed.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            None,
        )
    }

    /// Sets a sysctl of the namespace (`key` as in `/proc/sys`, dotted: `net.ipv4.ip_forward`).
    ///
    /// # Errors
    /// The namespace could not be entered or the key written.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        std::thread::spawn(move || {
            enter_netns(&path)?;
            std::fs::write(&file, value).with_context(|| format!("writing {file}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sysctl thread panicked"))?
    }

    /// `program` to be run inside the namespace.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// A table `inet <unique name> { body }` in the namespace's nftables, deleted on drop.
    ///
    /// # Errors
    /// `nft` is missing or rejected the rules.
    pub fn nft_table(&self, body: &str) -> anyhow::Result<NftTable<'_>> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let table = format!("quiver_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let script = format!("table inet {table} {{\n{body}\n}}\n");
        run(self.command("nft").args(["-f", "-"]), Some(&script))
            .context("nftables (install the nftables package)")?;
        Ok(NftTable { ns: self, table })
    }

    /// Drops `percent` % of the packets of every protocol that leave through `dev`, and as many
    /// of those that arrive on it, each packet at random (nftables `numgen`: this kernel has no
    /// netem).
    ///
    /// # Errors
    /// As [`Netns::nft_table`].
    pub fn random_loss(&self, dev: &str, percent: u32) -> anyhow::Result<NftTable<'_>> {
        let rule = format!("numgen random mod 100 < {percent} drop");
        self.nft_table(&format!(
            "chain out {{ type filter hook output priority 0; oifname \"{dev}\" {rule}; }}\n\
             chain in {{ type filter hook input priority 0; iifname \"{dev}\" {rule}; }}"
        ))
    }

    /// A TCP listener bound to `addr` inside the namespace (a socket keeps the namespace it was
    /// made in, whichever thread uses it later).
    ///
    /// # Errors
    /// The namespace could not be entered or the address bound.
    pub fn tcp_listener(&self, addr: &str) -> anyhow::Result<std::net::TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        let addr = addr.to_owned();
        std::thread::spawn(move || {
            enter_netns(&path)?;
            let listener = std::net::TcpListener::bind(&addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the listener thread panicked"))?
    }

    /// Runs `task` on a new thread that has entered the namespace, in a current-thread tokio
    /// runtime of its own (so every task it spawns, and every socket, stays in the namespace).
    pub fn spawn<T, F, Fut>(&self, task: F) -> InNetns<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let result = enter(&path).and_then(|runtime| runtime.block_on(task()));
            let _ = tx.send(result);
        });
        InNetns {
            result: rx,
            thread: Some(thread),
        }
    }
}

/// Moves this thread into the namespace at `path`.
fn enter_netns(path: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))
}

/// Moves this thread into the namespace at `path` and builds its runtime.
fn enter(path: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    enter_netns(path)?;
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("ip").args(["netns", "del", &self.name]), None) {
            eprintln!("cleanup: {error}");
        }
    }
}

/// A thread running inside a namespace ([`Netns::spawn`]).
#[derive(Debug)]
pub struct InNetns<T> {
    result: oneshot::Receiver<anyhow::Result<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T> InNetns<T> {
    /// The task's result; a panic on the thread is resumed here.
    ///
    /// # Errors
    /// The task failed, or the namespace could not be entered.
    pub async fn join(mut self) -> anyhow::Result<T> {
        match (&mut self.result).await {
            Ok(result) => result,
            Err(_) => {
                let thread = self.thread.take().expect("joined once");
                let joined = tokio::task::spawn_blocking(move || thread.join()).await?;
                match joined {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => bail!("the namespace thread ended without a result"),
                }
            }
        }
    }
}

/// An nftables table in a namespace, deleted on drop.
#[derive(Debug)]
pub struct NftTable<'a> {
    ns: &'a Netns,
    table: String,
}

impl NftTable<'_> {
    /// The table as `nft list` prints it (with its counters).
    ///
    /// # Errors
    /// `nft` failed.
    pub fn list(&self) -> anyhow::Result<String> {
        let output = self
            .ns
            .command("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .context("nft list")?;
        if !output.status.success() {
            bail!(
                "nft list: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let deleted = run(
            self.ns
                .command("nft")
                .args(["delete", "table", "inet", &self.table]),
            None,
        );
        if let Err(error) = deleted {
            eprintln!("cleanup: {error}");
        }
    }
}

/// Two namespaces joined by a veth pair: `a` holds [`VETH_A`] with `a_ip`/24, `b` holds
/// [`VETH_B`] with `b_ip`/24. The namespaces see nothing else, so the fixed private addresses
/// collide with nothing.
#[derive(Debug)]
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

impl Link {
    /// # Errors
    /// Creating the namespaces or the veth pair failed.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let a = Netns::new(&format!("{tag}-a"))?;
        let b = Netns::new(&format!("{tag}-b"))?;
        let (a_ip, b_ip) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
        a.ip(&[
            "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns", &b.name,
        ])?;
        for (ns, dev, ip) in [(&a, VETH_A, a_ip), (&b, VETH_B, b_ip)] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Self { a, b, a_ip, b_ip })
    }
}
