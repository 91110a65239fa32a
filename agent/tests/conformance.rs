//! One conformance suite for every service, run over each transport: gRPC, Iroh, and an agent
//! serving both (dual) with a client preferring either. The same calls must give the same
//! answers, codes and messages whichever wire carries them; then the switches between
//! transports on a live agent, and Iroh's access control.

mod harness;

use std::time::Duration;

use futures::StreamExt as _;
use harness::{Agent, put_request, spec_mut};
use quiver_rpc::iroh::SecretKey;
use quiver_rpc::proto::{self, RunStrategy};
use quiver_rpc::{AgentClient, ClientError, Code, GrpcRoute, Wire};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Setup {
    Grpc,
    Iroh,
    Dual(Wire),
}

impl Setup {
    fn mode(self) -> &'static str {
        match self {
            Setup::Grpc => "grpc",
            Setup::Iroh => "iroh",
            Setup::Dual(_) => "dual",
        }
    }

    /// The wire the client's calls travel on.
    fn wire(self) -> Wire {
        match self {
            Setup::Grpc => Wire::Grpc,
            Setup::Iroh => Wire::Iroh,
            Setup::Dual(prefer) => prefer,
        }
    }
}

/// An agent on the simulated driver serving every service on `setup`'s transport, and a
/// client as `setup` says. The agent trusts the client's endpoint id.
async fn subject(setup: Setup, extra: &[&str]) -> (Agent, AgentClient) {
    let key = SecretKey::generate();
    let trusted = key.public().to_string();
    let mut args = vec!["--transport", setup.mode(), "--trust-endpoint-id", &trusted];
    args.extend_from_slice(extra);
    let agent = Agent::start_with(&args).await;
    let grpc = GrpcRoute::connect(agent.endpoint.clone(), None, false)
        .await
        .expect("gRPC connect");
    let iroh = agent.iroh_route(key).await;
    let client = match setup {
        Setup::Grpc => AgentClient::grpc(grpc),
        Setup::Iroh => AgentClient::iroh(iroh),
        Setup::Dual(prefer) => AgentClient::dual(grpc, iroh, prefer),
    };
    (agent, client.with_deadline(WAIT))
}

/// Everything the VM's console holds now (the stream without `follow`).
async fn console_so_far(client: &AgentClient, uid: &str) -> String {
    let mut console = client.console(uid, 0, false).await.expect("console");
    let mut bytes = Vec::new();
    while let Some(chunk) = console.next().await {
        bytes.extend(chunk.expect("chunk").data);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn remote_code(result: Result<impl std::fmt::Debug, ClientError>) -> (Code, String) {
    match result {
        Err(ClientError::Remote { code, message }) => (code, message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

async fn conformance(setup: Setup) {
    let (agent, client) = subject(setup, &["--driver", "simulated", "--log-json"]).await;

    // Health and Status.
    let health = client.health().await.expect("health");
    assert_eq!(
        health.status,
        proto::health_check_response::ServingStatus::Serving as i32
    );
    let status = client.status().await.expect("status");
    assert_eq!(status.endpoint_id, agent.iroh_addr().id.to_string());
    assert_eq!(status.driver, "simulated");
    assert!(!status.iroh_addresses.is_empty());
    let mode = quiver_rpc::TransportMode::from_proto(status.transports[0].mode);
    assert_eq!(mode.map(|m| m.as_str()), Some(setup.mode()));
    assert_eq!(status.transports.len(), quiver_rpc::ServiceName::ALL.len());

    // Vm: put (idempotent), get, list, watch, delete.
    let mut watch = client.watch().await.expect("watch");
    let mut req = put_request("c-1", 1, RunStrategy::Always);
    spec_mut(&mut req).kernel = agent.image("vmlinuz", b"kernel");
    spec_mut(&mut req).initrd = String::new();
    let put = client.put_vm(req.clone()).await.expect("put");
    assert!(put.changed);
    assert_eq!(put.status.as_ref().map(|s| s.uid.as_str()), Some("c-1"));
    // A call made as part of an operation carries its trace id: the agent logs its work for
    // the call with that id (here the repeated put, a no-op).
    let trace = quiver_rpc::trace::random();
    let again = quiver_rpc::trace::scope(Some(trace), client.put_vm(req.clone()))
        .await
        .expect("put again");
    assert!(!again.changed, "the same generation is a no-op");
    let log = agent.log();
    let traced: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["span"]["trace_id"] == trace.to_string())
        .collect();
    assert!(
        traced
            .iter()
            .any(|line| line["fields"]["message"] == "put applied"
                && line["fields"]["uid"] == "c-1"
                && line["span"]["method"] == "quiver.v1.Vm/PutVm"),
        "no log line of the put with trace id {trace}:\n{log}"
    );
    assert_eq!(client.get_vm("c-1").await.expect("get").name, "vm-c-1");
    let listed = client.list_vms().await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.uid.as_str()).collect::<Vec<_>>(),
        ["c-1"]
    );
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(update) = watch.next().await {
            if update.expect("watch item").uid == "c-1" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen.ok(), Some(true), "the watch reports the new VM");

    // Console input: a simulated guest echoes what is typed into its console log.
    tokio::time::timeout(WAIT, async {
        while client.get_vm("c-1").await.expect("get").phase != proto::Phase::Running as i32 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the simulated VM runs");
    client
        .write_console("c-1", b"typed over the wire\n".to_vec())
        .await
        .expect("write console");
    let echoed = console_so_far(&client, "c-1").await;
    assert!(echoed.contains("typed over the wire"), "{echoed:?}");
    let too_much = vec![b'x'; quiver_rpc::MAX_CONSOLE_INPUT + 1];
    let (code, message) = remote_code(client.write_console("c-1", too_much).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("invalid argument: data: 4097 bytes"),
        "{message}"
    );
    let (code, _) = remote_code(client.write_console("nope", b"x".to_vec()).await);
    assert_eq!(code, Code::NotFound);

    // The same refusals, with the same codes and messages, on every wire.
    let mut bad = req.clone();
    bad.uid = "c-bad".into();
    spec_mut(&mut bad).cpus = 0;
    let (code, message) = remote_code(client.put_vm(bad).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("invalid argument: spec.cpus"),
        "{message}"
    );
    let (code, message) = remote_code(client.get_vm("nope").await);
    assert_eq!(
        (code, message.as_str()),
        (Code::NotFound, "vm nope not found")
    );
    let mut stale = req.clone();
    stale.generation = 2;
    stale.epoch = 0;
    let (code, _) = remote_code(client.put_vm(stale).await);
    assert_eq!(code, Code::FailedPrecondition, "a stale epoch is fenced");

    // Monitoring: the calls above are counted under the wire that carried them.
    let metrics = client.metrics().await.expect("metrics");
    let puts = metrics
        .methods
        .iter()
        .find(|m| m.method == "PutVm" && m.transport == setup.wire().as_str())
        .unwrap_or_else(|| panic!("no PutVm metrics for {:?}: {metrics:?}", setup.wire()));
    assert!(puts.requests >= 3 && puts.errors >= 2, "{puts:?}");
    if let Some(route) = client.iroh_route().filter(|_| setup.wire() == Wire::Iroh) {
        let me = route.client().endpoint().id().to_string();
        let peer = metrics
            .iroh_peers
            .iter()
            .find(|p| p.endpoint_id == me)
            .unwrap_or_else(|| panic!("this client is not among the Iroh peers: {metrics:?}"));
        assert!(peer.connected && peer.path == "direct", "{peer:?}");
        assert!(peer.remote_address.starts_with("ip:127.0.0.1:"), "{peer:?}");
        assert!(peer.rtt_ms > 0.0, "{peer:?}");
        assert_eq!(peer.reconnects, 0);
        let access = metrics.iroh_access.unwrap_or_default();
        assert!(access.accepted >= 1 && access.refused == 0, "{access:?}");
    }
    let summary = client.resource_summary().await.expect("summary");
    assert_eq!(summary.vms_total, 1);

    // Admin: setting what is already served changes nothing and reports every service.
    let same = proto::ServiceTransport {
        service: "vm".into(),
        mode: status.transports[0].mode,
    };
    let after = client.set_transports(vec![same]).await.expect("admin");
    assert_eq!(after, status.transports);
    let unknown = proto::ServiceTransport {
        service: "dns".into(),
        mode: 1,
    };
    let (code, message) = remote_code(client.set_transports(vec![unknown]).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("services[0].service"), "{message}");

    assert!(client.delete_vm("c-1").await.expect("delete"));
    tokio::time::timeout(WAIT, async {
        while client.get_vm("c-1").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the VM is removed");
    assert!(!client.delete_vm("c-1").await.expect("delete again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_over_grpc() {
    conformance(Setup::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_over_iroh() {
    conformance(Setup::Iroh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_over_dual_preferring_iroh() {
    conformance(Setup::Dual(Wire::Iroh)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_over_dual_preferring_grpc() {
    conformance(Setup::Dual(Wire::Grpc)).await;
}

/// A real guest over Iroh: put, the status stream up to GuestReady, the console stream with
/// the guest's marker, a command typed into its console and answered, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_boots_and_streams_its_console_over_iroh() {
    if harness::guest().is_none() {
        return;
    }
    let (agent, client) = subject(Setup::Iroh, &[]).await;
    let mut watch = client.watch().await.expect("watch");
    client
        .put_vm(put_request("g-1", 1, RunStrategy::Always))
        .await
        .expect("put");
    let ready = tokio::time::timeout(harness::BOOT_TIMEOUT, async {
        while let Some(update) = watch.next().await {
            let update = update.expect("watch item");
            if update.uid == "g-1" && update.guest_ready {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        ready.ok(),
        Some(true),
        "GuestReady over Iroh\n{}",
        agent.log()
    );
    let text = console_so_far(&client, "g-1").await;
    assert!(text.contains(harness::MARKER), "console over Iroh:\n{text}");
    // Typed into the guest's shell: its echo and the command's answer come back.
    let mut console = client
        .console("g-1", text.len() as u64, true)
        .await
        .expect("console");
    client
        .write_console("g-1", b"echo $((6 * 7))-answered\n".to_vec())
        .await
        .expect("write console");
    let answered = tokio::time::timeout(harness::BOOT_TIMEOUT, async {
        let mut seen = Vec::new();
        while let Some(chunk) = console.next().await {
            seen.extend(chunk.expect("chunk").data);
            let text = String::from_utf8_lossy(&seen);
            if text.contains("echo $((6 * 7))-answered") && text.contains("\n42-answered") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        answered.ok(),
        Some(true),
        "the shell's echo and answer over Iroh"
    );
    assert!(client.delete_vm("g-1").await.expect("delete"));
    harness::wait_gone(&agent, "g-1").await;
}

/// Moving the Vm service from dual to Iroh on a live agent: a gRPC stream opened before the
/// switch keeps delivering, new gRPC calls are answered UNIMPLEMENTED, and a dual client that
/// prefers gRPC moves to Iroh without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_transports_keeps_calls_in_flight_and_moves_new_ones() {
    let (agent, dual) = subject(Setup::Dual(Wire::Grpc), &["--driver", "simulated"]).await;
    let grpc_only = dual.only(Wire::Grpc).expect("gRPC route");
    let mut grpc_watch = grpc_only.watch().await.expect("gRPC watch");

    let to_iroh = proto::ServiceTransport {
        service: "vm".into(),
        mode: proto::TransportMode::Iroh as i32,
    };
    let after = dual.set_transports(vec![to_iroh]).await.expect("switch");
    assert!(
        after
            .iter()
            .any(|s| s.service == "vm" && s.mode == proto::TransportMode::Iroh as i32)
    );

    let (code, message) = remote_code(grpc_only.list_vms().await);
    assert_eq!(code, Code::Unimplemented);
    assert_eq!(
        message,
        "vm is served over iroh only on this agent, not over grpc"
    );
    let mut req = put_request("s-1", 1, RunStrategy::Always);
    spec_mut(&mut req).kernel = agent.image("vmlinuz", b"kernel");
    spec_mut(&mut req).initrd = String::new();
    dual.put_vm(req)
        .await
        .expect("the dual client falls back to Iroh");

    let delivered = tokio::time::timeout(WAIT, async {
        while let Some(update) = grpc_watch.next().await {
            if update.expect("the open gRPC stream keeps going").uid == "s-1" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        delivered.ok(),
        Some(true),
        "the gRPC stream opened before the switch"
    );

    let metrics = dual.metrics().await.expect("metrics");
    let over = |transport: &str| {
        metrics
            .methods
            .iter()
            .any(|m| m.method == "PutVm" && m.transport == transport && m.requests > m.errors)
    };
    assert!(over("iroh") && !over("grpc"), "{metrics:?}");
    let refused = metrics
        .methods
        .iter()
        .find(|m| m.method == "ListVms" && m.transport == "grpc")
        .expect("the refused gRPC call is counted");
    assert_eq!(refused.errors, 1);
}

/// Iroh admits only trusted (or registered) endpoint ids, at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_endpoint_id_is_refused() {
    let (agent, trusted) = subject(Setup::Iroh, &["--driver", "simulated"]).await;
    trusted.health().await.expect("the trusted client gets in");
    let stranger =
        AgentClient::iroh(agent.iroh_route(SecretKey::generate()).await).with_deadline(WAIT);
    match stranger.list_vms().await {
        Err(ClientError::Refused { peer, reason }) => {
            assert_eq!(peer, agent.iroh_addr().id.to_string());
            assert!(reason.contains("allowlist"), "{reason}");
        }
        other => panic!("an unknown endpoint id must be refused, got {other:?}"),
    }
    let access = trusted.metrics().await.expect("metrics").iroh_access;
    assert_eq!(
        access.map(|a| (a.accepted, a.refused)),
        Some((1, 1)),
        "counted"
    );
}
