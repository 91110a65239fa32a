//! The VM runtime: pure lifecycle engine, drivers (QEMU, simulated), and the manager that
//! connects them.

pub mod console;
pub mod driver;
pub mod lifecycle;
pub mod manager;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod rundir;
pub mod simulated;
pub mod spec;

mod actor;
mod record;

pub use lifecycle::{Command, Event, Lifecycle, Phase};
pub use manager::{ManagerConfig, VmManager};
pub use record::{now_ms, phase_to_proto, strategy_to_proto};
pub use spec::{RunStrategy, VmMeta, VmSpec};
