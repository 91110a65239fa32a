//! Property test: thousands of mutated `PutVm` requests over the agent's gRPC, typed and as raw
//! (possibly malformed) protobuf, interleaved with `GetVm`/`DeleteVm` on known and hostile uids. Every answer is OK or a clean refusal, never INTERNAL,
//! UNKNOWN or a dropped connection; the agent keeps serving; and afterwards every VM it lists
//! was accepted by some put, every run dir belongs to a listed VM, and deleting them all leaves
//! nothing. Runs the simulated driver (no QEMU).
//!
//! `QUIVER_FUZZ_SEED` replays a run (the seed is printed on failure); `QUIVER_FUZZ_CASES`
//! sets the number of requests (default 2000, a few seconds).
//!
//! Requests over the message limit go out raw: tonic's own client refuses to send them by
//! aborting the HTTP/2 stream, which is the client's doing, not an answer of the agent.

mod harness;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bytes::{Buf, BufMut};
use harness::{Agent, put_request, spec_mut, wait_gone};
use prost::Message;
use quiver_rpc::grpc::MAX_MESSAGE_BYTES;
use quiver_rpc::proto::{self, RunStrategy};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// splitmix64: tiny, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Files the generator points paths at: inside the roots, outside, and escaping by symlink.
struct Paths {
    kernel: String,
    raw: String,
    qcow2_escape: String,
    symlink_escape: String,
    dir: String,
}

impl Paths {
    fn new(agent: &Agent) -> Self {
        let raw = agent.image("data.raw", &[0; 4096]);
        let qcow2_escape = agent.images_dir().join("escape.qcow2");
        let status = std::process::Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                "/etc/passwd",
            ])
            .arg(&qcow2_escape)
            .status()
            .expect("qemu-img");
        assert!(status.success());
        let link = agent.images_dir().join("link");
        std::os::unix::fs::symlink("/etc/shadow", &link).expect("symlink");
        Paths {
            kernel: agent.image("vmlinuz", b"k"),
            raw,
            qcow2_escape: qcow2_escape.display().to_string(),
            symlink_escape: link.display().to_string(),
            dir: agent.images_dir().display().to_string(),
        }
    }
}

fn string(rng: &mut Rng, paths: &Paths) -> String {
    match rng.below(14) {
        0 => String::new(),
        1 if rng.chance(50) => "x".repeat(rng.below(200_000)),
        1 => format!("/{}", "y/".repeat(rng.below(100_000))),
        2 => "é☃\u{202e}𝄞".repeat(rng.below(500)),
        3 => format!("a\0b\n{}\r", rng.next()),
        4 => paths.kernel.clone(),
        5 => paths.raw.clone(),
        6 => paths.qcow2_escape.clone(),
        7 => paths.symlink_escape.clone(),
        8 => format!("{}/../../../etc/passwd", paths.dir),
        9 => (*rng.pick(&["/etc/shadow", "/dev/sda", "/proc/self/mem", "/", "relative"])).into(),
        10 => paths.dir.clone(),
        11 => format!("{},format=raw", paths.raw),
        12 => (*rng.pick(&["raw", "qcow2", "user", "none", "vmdk", "web", "0a", "A"])).into(),
        _ => (0..rng.below(64))
            .map(|_| char::from(u8::try_from(rng.below(95) + 32).unwrap_or(b'x')))
            .collect(),
    }
}

fn number(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::from(u32::MAX),
        4 => 1 << 63,
        5 => rng.next() % 70_000,
        6 => u64::from(u16::MAX) + 1,
        _ => rng.next(),
    }
}

fn truncating_u32(n: u64) -> u32 {
    u32::try_from(n & u64::from(u32::MAX)).unwrap_or(0)
}

fn enum_value(rng: &mut Rng) -> i32 {
    *rng.pick(&[0, 1, 2, 3, 4, 5, -1, i32::MAX, i32::MIN])
}

fn disk(rng: &mut Rng, paths: &Paths) -> proto::Disk {
    proto::Disk {
        name: if rng.chance(50) {
            format!("d{}", rng.below(4))
        } else {
            string(rng, paths)
        },
        image: if rng.chance(50) {
            paths.raw.clone()
        } else {
            string(rng, paths)
        },
        format: (*rng.pick(&["raw", "qcow2", "", "vmdk"])).into(),
        read_only: rng.chance(50),
    }
}

fn forward(rng: &mut Rng, paths: &Paths) -> proto::PortForward {
    proto::PortForward {
        name: if rng.chance(70) {
            String::new()
        } else {
            string(rng, paths)
        },
        protocol: enum_value(rng),
        guest_port: truncating_u32(number(rng)),
        host_port: if rng.chance(60) {
            0
        } else {
            truncating_u32(number(rng))
        },
    }
}

/// The spec to mutate; a removed spec comes back empty (all fields at their zero value).
fn spec(req: &mut proto::PutVmRequest) -> &mut proto::VmSpec {
    req.spec.get_or_insert_default()
}

/// One random change somewhere in the request.
fn mutate(rng: &mut Rng, paths: &Paths, req: &mut proto::PutVmRequest) {
    let n = number(rng);
    match rng.below(22) {
        0 => req.uid = string(rng, paths),
        1 => req.namespace = string(rng, paths),
        2 => req.name = string(rng, paths),
        3 => req.generation = i64::from_ne_bytes(n.to_ne_bytes()),
        4 => req.epoch = n,
        5 => req.spec = None,
        6 => spec(req).run_strategy = enum_value(rng),
        7 => spec(req).cpus = truncating_u32(n),
        8 => spec(req).memory_mib = n,
        9 => spec(req).kernel = string(rng, paths),
        10 => spec(req).initrd = string(rng, paths),
        11 => spec(req).cmdline = string(rng, paths),
        12 => {
            let count = *rng.pick(&[0, 1, 2, 3, 17, 1000]);
            spec(req).disks = (0..count).map(|_| disk(rng, paths)).collect();
        }
        13 => spec(req).disks.push(disk(rng, paths)),
        14 => spec(req).readiness = None,
        15 => {
            spec(req).readiness = Some(proto::Readiness {
                serial_marker: string(rng, paths),
                timeout_seconds: truncating_u32(n),
            });
        }
        16 => spec(req).network = None,
        17 => {
            let count = *rng.pick(&[0, 1, 2, 33, 500]);
            spec(req).network = Some(proto::Network {
                mode: (*rng.pick(&["user", "none", "", "bridge"])).into(),
                port_forwards: (0..count).map(|_| forward(rng, paths)).collect(),
            });
        }
        18 => {
            let mode = string(rng, paths);
            spec(req).network.get_or_insert_default().mode = mode;
        }
        19 => {
            let f = forward(rng, paths);
            let network = spec(req).network.get_or_insert_default();
            network.mode = "user".into();
            network.port_forwards.push(f);
        }
        20 => req.uid = format!("vm-{}", rng.below(6)),
        _ => spec(req).initrd = String::new(),
    }
}

/// A codec that sends bytes as they are: malformed protobuf on purpose.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Damages an encoded request: flipped bytes, a cut, bad UTF-8 spliced into a string field,
/// or an unknown field.
fn corrupt(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.below(4) {
        0 if !bytes.is_empty() => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= u8::try_from(rng.below(255) + 1).unwrap_or(1);
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        // Field 2 (namespace) as a length-delimited string holding invalid UTF-8.
        2 => bytes.extend([0x12, 0x03, 0xff, 0xfe, 0xc0]),
        _ => bytes.extend([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01]),
    }
    bytes
}

/// Codes a request may be answered with: success or the caller's mistake.
const CLEAN: &[Code] = &[
    Code::Ok,
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::NotFound,
    Code::OutOfRange,
    Code::ResourceExhausted,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_puts_get_clean_answers_and_leave_no_orphans() {
    let seed = std::env::var("QUIVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| {
                    u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(1)
                })
        });
    let cases: usize = std::env::var("QUIVER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let agent = Agent::start_with(&["--driver", "simulated"]).await;
    let paths = Paths::new(&agent);
    let client = agent.client().await;
    let channel = client.grpc_route().expect("a gRPC client").channel();
    let mut typed = quiver_rpc::proto::vm_client::VmClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let channel = tonic::transport::Endpoint::from_shared(agent.endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut raw = tonic::client::Grpc::new(channel);
    let mut rng = Rng(seed);
    let mut accepted = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut failures = String::new();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();

    for case in 0..cases {
        let mut req = put_request(&format!("vm-{}", rng.below(6)), 1, RunStrategy::Always);
        spec_mut(&mut req).kernel.clone_from(&paths.kernel);
        spec_mut(&mut req).initrd = String::new();
        req.generation = i64::try_from(rng.below(5)).unwrap_or(0);
        req.epoch = rng.next() % 3;
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &paths, &mut req);
        }
        let oversized = req.encoded_len() > MAX_MESSAGE_BYTES;
        let (code, message) = if oversized || rng.chance(15) {
            let mut bytes = req.encode_to_vec();
            if !oversized {
                bytes = corrupt(&mut rng, bytes);
            }
            raw.ready().await.expect("channel ready");
            let path = PathAndQuery::from_static("/quiver.v1.Vm/PutVm");
            match raw.unary(tonic::Request::new(bytes), path, RawCodec).await {
                Ok(reply) => {
                    // The agent decoded something; its reply says which VM that was.
                    let reply = proto::PutVmResponse::decode(reply.into_inner().as_slice())
                        .expect("the agent answers valid protobuf");
                    accepted.extend(reply.status.map(|s| s.uid));
                    (Code::Ok, String::new())
                }
                Err(s) => (s.code(), s.message().to_owned()),
            }
        } else {
            match typed.put_vm(req.clone()).await {
                Ok(reply) => {
                    if let Some(status) = reply.into_inner().status {
                        accepted.insert(status.uid);
                    }
                    (Code::Ok, String::new())
                }
                Err(s) => (s.code(), s.message().to_owned()),
            }
        };
        *tally.entry(format!("{code:?}")).or_default() += 1;
        if !CLEAN.contains(&code) {
            let size = req.encoded_len();
            let _ = writeln!(failures, "case {case} ({size} bytes): {code:?}: {message}");
        }
        if code == Code::InvalidArgument && message.is_empty() {
            let _ = writeln!(failures, "case {case}: InvalidArgument without a message");
        }
        // Deletes and gets interleaved, with known and hostile uids alike.
        if rng.chance(4) {
            let uid = if rng.chance(75) {
                format!("vm-{}", rng.below(6))
            } else {
                string(&mut rng, &paths)
            };
            let get = typed.get_vm(proto::GetVmRequest { uid: uid.clone() }).await;
            let delete = typed
                .delete_vm(proto::DeleteVmRequest { uid: uid.clone() })
                .await;
            for (what, code) in [
                (
                    "GetVm",
                    get.as_ref().err().map_or(Code::Ok, tonic::Status::code),
                ),
                (
                    "DeleteVm",
                    delete.as_ref().err().map_or(Code::Ok, tonic::Status::code),
                ),
            ] {
                if !CLEAN.contains(&code) {
                    let shown: String = uid.chars().take(40).collect();
                    let _ = writeln!(failures, "case {case}: {what}({shown:?}…): {code:?}");
                }
            }
            if delete.is_ok_and(|r| r.into_inner().existed) {
                accepted.remove(&uid);
                deleted.insert(uid);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed} (QUIVER_FUZZ_SEED={seed} replays it):\n{failures}\nagent log:\n{}",
        agent.log()
    );
    eprintln!("seed {seed}, {cases} puts: {tally:?}");

    client.health().await.expect("agent still serves");
    // Deletes finish in the background; then the agent must know exactly the accepted VMs,
    // each with its run dir, and nothing else.
    for uid in deleted.difference(&accepted) {
        wait_gone(&agent, uid).await;
    }
    let listed: BTreeSet<String> = client
        .list_vms()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.uid)
        .collect();
    assert_eq!(
        listed, accepted,
        "seed {seed}: listed VMs differ from accepted puts"
    );
    assert_eq!(
        run_dirs(&agent),
        accepted,
        "seed {seed}: run dirs differ from VMs"
    );
    for uid in &listed {
        client.delete_vm(uid).await.expect("delete");
    }
    for uid in &listed {
        wait_gone(&agent, uid).await;
    }
    assert!(run_dirs(&agent).is_empty(), "seed {seed}: run dirs left");
    assert!(
        !agent.log().contains("panicked"),
        "seed {seed}: a task of the agent panicked:\n{}",
        agent.log()
    );
    assert!(client.list_vms().await.expect("list").is_empty());
}

fn run_dirs(agent: &Agent) -> BTreeSet<String> {
    std::fs::read_dir(agent.data_dir().join("vms"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
