//! What the tests of a node on a real database share.

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_raft::ledger::DesiredVm;
use quiver_raft::{Command, Timing};

/// Fast elections, for a group of one.
pub fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(200),
        election_max: Duration::from_millis(400),
    }
}

/// A put of the smallest VM.
pub fn vm(uid: &str) -> Command {
    Command::PutVm(DesiredVm {
        uid: uid.to_owned(),
        generation: 1,
        cpus: 1,
        memory_mib: 1,
        node_selector: BTreeMap::new(),
        request: Vec::new(),
    })
}
