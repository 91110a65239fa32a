//! Every replica applies every committed command, so one command that panics `Ledger::apply`
//! would stop the whole group, and again at every restart as the log replays. This test feeds
//! the ledger seeded random sequences of commands with hostile fields (extreme numbers, empty,
//! long and unknown names, stale generations) and checks after each one:
//! - `apply` returns (no panic, no overflow);
//! - every assignment names a VM the ledger holds and a host that exists and is not down;
//! - a VM's epoch only grows while the VM exists: no epoch is given twice;
//! - a second ledger applying the same commands is identical (replicas agree), and the ledger
//!   survives a snapshot round trip (JSON, as the state machine stores it).
//!
//! A failure names its seed; `QUIVER_SEED=<n>` replays that one sequence.

use std::collections::{BTreeMap, HashMap};

use quiver_raft::ledger::DesiredVm;
use quiver_raft::{Command, Ledger};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 300;
const COMMANDS: usize = 150;

/// Numbers honest peers send, and the extremes a hostile or broken one could.
fn number(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX / 2 + 1,
        3 => u64::from(u32::MAX),
        4 => rng.random(),
        _ => rng.random_range(1..4096),
    }
}

fn small(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => u32::MAX,
        _ => rng.random_range(1..16),
    }
}

fn name(rng: &mut StdRng, prefix: &str) -> String {
    match rng.random_range(0..10) {
        0 => String::new(),
        1 => prefix.repeat(300),
        2 => format!("{prefix}-é\u{0}"),
        _ => format!("{prefix}{}", rng.random_range(0..4)),
    }
}

fn labels(rng: &mut StdRng) -> BTreeMap<String, String> {
    (0..rng.random_range(0..3))
        .map(|_| (name(rng, "k"), name(rng, "v")))
        .collect()
}

fn command(rng: &mut StdRng) -> Command {
    match rng.random_range(0..11) {
        0 => Command::RegisterHost {
            name: name(rng, "h"),
            cpus: small(rng),
            memory_mib: number(rng),
            labels: labels(rng),
        },
        1 => Command::RemoveHost {
            name: name(rng, "h"),
        },
        2 => Command::RenewLease {
            host: name(rng, "h"),
            now_ms: number(rng),
            ttl_ms: number(rng),
        },
        3 => Command::HostDown {
            host: name(rng, "h"),
            now_ms: number(rng),
            renewals: rng.random_range(0..4),
        },
        4 => Command::Schedule {
            host: name(rng, "h"),
            unschedulable: rng.random(),
            drain: rng.random(),
        },
        5 => Command::Released {
            uid: name(rng, "vm"),
            host: name(rng, "h"),
        },
        6 => Command::DeleteVm {
            uid: name(rng, "vm"),
        },
        7 => Command::Rebalance,
        8 => Command::SetTransports {
            host: name(rng, "h"),
            services: labels(rng),
        },
        _ => Command::PutVm(DesiredVm {
            uid: name(rng, "vm"),
            generation: match rng.random_range(0..5) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => rng.random_range(-2..6),
            },
            cpus: small(rng),
            memory_mib: number(rng),
            node_selector: labels(rng),
            request: vec![0; rng.random_range(0..16)],
        }),
    }
}

fn check(ledger: &Ledger, epochs: &mut HashMap<String, u64>, command: &Command) {
    for (uid, a) in &ledger.assignments {
        assert!(
            ledger.vms.contains_key(uid),
            "{uid} is assigned but not desired"
        );
        let host = ledger.hosts.get(&a.host);
        assert!(
            host.is_some_and(|h| !h.down),
            "{uid} is assigned to {}, which is gone or down",
            a.host
        );
        let last = epochs.entry(uid.clone()).or_insert(0);
        assert!(
            a.epoch >= *last,
            "{uid}'s epoch went back from {last} to {}",
            a.epoch
        );
        *last = a.epoch;
    }
    if let Command::DeleteVm { uid } = command {
        epochs.remove(uid);
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut ledger, mut replica) = (Ledger::default(), Ledger::default());
    let mut epochs = HashMap::new();
    let mut moved_epochs: HashMap<String, u64> = HashMap::new();
    for step in 0..COMMANDS {
        let command = command(&mut rng);
        let outcome = ledger.apply(&command);
        assert_eq!(outcome, replica.apply(&command), "step {step}: {command:?}");
        // A move always carries an epoch never given to this VM before.
        for (uid, assignment) in &outcome.moved {
            if let Some(a) = assignment {
                let last = moved_epochs.insert(uid.clone(), a.epoch);
                assert!(
                    last.is_none_or(|last| a.epoch > last),
                    "step {step}: {uid} moved under epoch {} again ({command:?})",
                    a.epoch
                );
            }
        }
        if let Command::DeleteVm { uid } = &command {
            moved_epochs.remove(uid);
        }
        check(&ledger, &mut epochs, &command);
        // The derived index (each host's VMs, versions and memory), kept by every command, is
        // what a rebuild from the stored fields gives.
        let snapshot = serde_json::to_vec(&ledger).expect("a ledger serializes");
        let restored: Ledger = serde_json::from_slice(&snapshot).expect("a snapshot reads back");
        assert_eq!(restored, ledger, "step {step}: {command:?}");
    }
    assert_eq!(ledger, replica);
}

#[test]
fn no_command_breaks_the_ledger() {
    let seeds: Vec<u64> = match std::env::var("QUIVER_SEED") {
        Ok(seed) => vec![seed.parse().expect("QUIVER_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        assert!(
            result.is_ok(),
            "seed {seed} failed: replay with QUIVER_SEED={seed}"
        );
    }
}
