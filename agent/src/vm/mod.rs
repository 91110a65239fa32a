//! The VM runtime: pure lifecycle engine, drivers (QEMU, simulated), and the manager that
//! connects them.

pub mod console;
pub mod driver;
pub mod images;
pub mod lifecycle;
pub mod manager;
pub mod network;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod rundir;
pub mod serial;
pub mod simulated;
pub mod spec;
pub mod sweep;

mod actor;
mod record;
mod recovery;
mod shared;
mod streams;

pub use images::ImageRoots;
pub use lifecycle::{Command, Event, Lifecycle, Phase};
pub use manager::{ManagerConfig, VmManager};
pub use record::{now_ms, phase_to_proto, strategy_to_proto};
pub use spec::{RunStrategy, VmMeta, VmSpec};
