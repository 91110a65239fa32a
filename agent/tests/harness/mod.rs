//! Test harness: runs the real `quiver-agent` binary on a temp data dir and cleans up every
//! QEMU it started, even when a test fails (guards with `Drop`, killing by pid file).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use quiver_agent::vm::process;
use quiver_rpc::iroh::{EndpointAddr, EndpointId, SecretKey};
use quiver_rpc::proto;
use quiver_rpc::{AgentClient, ClientConfig, EndpointOptions, IrohRoute, RpcClient};

pub const MARKER: &str = "QUIVER_GUEST_READY";
/// Under TCG the microvm guest has no HPET/PM timer to calibrate the TSC against; on a busy host
/// the calibration fails and the boot hangs. A fixed TSC frequency skips it.
pub const CMDLINE: &str = "console=ttyS0 edd=off quiet panic=-1 reboot=t \
                           tsc=reliable tsc_early_khz=2000000 no_timer_check";
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the guest image lives (`$QUIVER_GUEST_DIR`, default `/var/lib/quiver/guest`).
pub fn guest_dir() -> PathBuf {
    std::env::var_os("QUIVER_GUEST_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/quiver/guest"), PathBuf::from)
}

/// The guest image, or `None` (test skipped) when it is missing and not required.
pub fn guest() -> Option<(PathBuf, PathBuf)> {
    let dir = guest_dir();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.gz"));
    if kernel.is_file() && initrd.is_file() {
        return Some((kernel, initrd));
    }
    if std::env::var_os("QUIVER_REQUIRE_GUEST").is_some() {
        panic!(
            "QUIVER_REQUIRE_GUEST is set but {} has no vmlinuz/initrd.gz",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: guest image missing in {} (run scripts/guest-image.sh, or set QUIVER_GUEST_DIR)",
        dir.display()
    );
    None
}

/// A running agent process plus its data dir. Dropping it kills the agent and every QEMU
/// recorded under the data dir.
pub struct Agent {
    pub data: tempfile::TempDir,
    child: Option<Child>,
    pub endpoint: String,
    extra_args: Vec<String>,
}

impl Agent {
    pub async fn start() -> Agent {
        Agent::start_with(&[]).await
    }

    /// Starts with extra command-line flags (kept across restarts).
    pub async fn start_with(extra: &[&str]) -> Agent {
        let data = tempfile::tempdir().expect("tempdir");
        let extra_args = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut agent = Agent {
            data,
            child: None,
            endpoint: String::new(),
            extra_args,
        };
        agent.restart().await;
        agent
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// An image root of this agent (next to, not above, its run dirs): tests put the kernels
    /// and disk images they make here.
    pub fn images_dir(&self) -> PathBuf {
        let dir = self.data_dir().join("images");
        std::fs::create_dir_all(&dir).expect("images dir");
        dir
    }

    /// Writes `bytes` to `name` in [`Agent::images_dir`] and returns the path as a string.
    pub fn image(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.images_dir().join(name);
        std::fs::write(&path, bytes).expect("write image");
        path.display().to_string()
    }

    /// (Re)starts the agent process on the same data dir.
    pub async fn restart(&mut self) {
        let addr_file = self.data_dir().join("grpc.addr");
        let _ = std::fs::remove_file(&addr_file);
        let config = self.data_dir().join("agent.yaml");
        std::fs::write(&config, "stopGraceSecs: 3\n").expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir().join("agent.log"))
            .expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_quiver-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--iroh-listen",
                "127.0.0.1:0",
                "--accel",
                "tcg",
                "--host-name",
                "test-host",
            ])
            .args(["--capacity-cpus", "4", "--capacity-memory-mib", "4096"])
            .args(&self.extra_args)
            .args(self.image_root_flags())
            .args(self.plaintext_flag())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn quiver-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                self.endpoint = format!("http://{}", addr.trim());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The guest image dir and [`Agent::images_dir`], unless the test sets its own roots.
    fn image_root_flags(&self) -> Vec<String> {
        if self.extra_args.iter().any(|a| a == "--image-root") {
            return vec![];
        }
        let images = self.images_dir();
        let roots = [guest_dir(), images];
        roots
            .iter()
            .flat_map(|r| ["--image-root".to_owned(), r.display().to_string()])
            .collect()
    }

    /// Tests that do not test TLS talk plain gRPC on loopback, which the agent serves only
    /// when asked to.
    fn plaintext_flag(&self) -> Option<&'static str> {
        let tls = ["--dev-tls", "--tls-ca"];
        let wants_tls = self.extra_args.iter().any(|a| tls.contains(&a.as_str()));
        (!wants_tls).then_some("--insecure-plaintext")
    }

    /// SIGKILL the agent (VMs must survive).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the agent and wait for it to exit; returns how long that took.
    pub fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(mut child) = self.child.take() {
            process::sigterm(child.id());
            let _ = child.wait();
        }
        start.elapsed()
    }

    pub async fn client(&self) -> AgentClient {
        AgentClient::connect(self.endpoint.clone())
            .await
            .expect("connect to agent")
    }

    /// The agent's Iroh endpoint id and bound address, from its `iroh.addr` file.
    pub fn iroh_addr(&self) -> EndpointAddr {
        let text = std::fs::read_to_string(self.data_dir().join("iroh.addr")).expect("iroh.addr");
        let mut lines = text.lines();
        let id: EndpointId = lines.next().expect("endpoint id").parse().expect("id");
        lines
            .filter_map(|l| l.parse::<std::net::SocketAddr>().ok())
            .fold(EndpointAddr::new(id), EndpointAddr::with_ip_addr)
    }

    /// The Iroh route to this agent from a client endpoint with `key` (which the agent admits
    /// only with `--trust-endpoint-id`).
    pub async fn iroh_route(&self, key: SecretKey) -> IrohRoute {
        let endpoint = EndpointOptions::new(key)
            .bind_addr("127.0.0.1:0".parse().expect("addr"))
            .bind()
            .await
            .expect("client endpoint");
        IrohRoute::new(
            RpcClient::new(endpoint, ClientConfig::default()),
            self.iroh_addr(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("agent.log")).unwrap_or_default()
    }

    pub fn run_dir(&self, uid: &str) -> PathBuf {
        self.data_dir().join("vms").join(uid)
    }

    /// Pids of QEMUs started under this data dir that are still alive.
    pub fn live_qemus(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("vms")) else {
            return vec![];
        };
        let needle = self.data_dir().display().to_string();
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("qemu.pid")).ok())
            .filter_map(|p| p.trim().parse::<u32>().ok())
            .filter(|pid| process::alive(*pid) && process::cmdline_contains(*pid, &needle))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for pid in self.live_qemus() {
            process::sigkill(pid);
        }
    }
}

pub fn put_request(
    uid: &str,
    generation: i64,
    strategy: proto::RunStrategy,
) -> proto::PutVmRequest {
    let (kernel, initrd) = guest().unwrap_or_default();
    proto::PutVmRequest {
        uid: uid.into(),
        namespace: "default".into(),
        name: format!("vm-{uid}"),
        generation,
        epoch: 1,
        node_selector: Default::default(),
        spec: Some(proto::VmSpec {
            run_strategy: strategy as i32,
            cpus: 1,
            memory_mib: 256,
            kernel: kernel.display().to_string(),
            initrd: initrd.display().to_string(),
            cmdline: CMDLINE.into(),
            disks: vec![],
            network: None,
            readiness: Some(proto::Readiness {
                serial_marker: MARKER.into(),
                timeout_seconds: 0,
            }),
        }),
    }
}

pub fn spec_mut(req: &mut proto::PutVmRequest) -> &mut proto::VmSpec {
    req.spec.as_mut().expect("request has a spec")
}

pub fn phase(s: &proto::VmStatus) -> proto::Phase {
    proto::Phase::try_from(s.phase).unwrap_or_default()
}

pub fn is_running_ready(s: &proto::VmStatus) -> bool {
    phase(s) == proto::Phase::Running && s.guest_ready
}

/// Polls GetVm until `pred` holds; panics with the last status and agent log on timeout.
pub async fn wait_for(
    agent: &Agent,
    uid: &str,
    what: &str,
    pred: impl Fn(&proto::VmStatus) -> bool,
) -> proto::VmStatus {
    let client = agent.client().await;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(s) = client.get_vm(uid).await {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {uid} to be {what}; last {last:?}\nagent log:\n{}",
        agent.log()
    );
}

pub async fn wait_gone(agent: &Agent, uid: &str) {
    let client = agent.client().await;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while client.get_vm(uid).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{uid} not removed\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collects watch updates for `uid` until `done` holds for one of them.
pub async fn watch_until(
    client: &AgentClient,
    uid: &str,
    done: impl Fn(&proto::VmStatus) -> bool,
) -> Vec<proto::VmStatus> {
    let mut stream = Box::pin(client.watch().await.expect("watch"));
    let mut seen = Vec::new();
    let collect = async {
        while let Some(Ok(s)) = stream.next().await {
            if s.uid != uid {
                continue;
            }
            let finished = done(&s);
            seen.push(s);
            if finished {
                return;
            }
        }
    };
    if tokio::time::timeout(BOOT_TIMEOUT, collect).await.is_err() {
        panic!("watch timed out for {uid}; seen {seen:?}");
    }
    seen
}
