//! The VM spec as the agent runs it, and its validation from the wire form.
//!
//! Validation happens before anything touches the disk, so a rejected put leaves nothing behind.
//! Field names in errors follow the `MicroVM` CRD (`spec.memoryMiB`), so a user sees the same name
//! in `kubectl` and in agent errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, proto};

/// Hard ceiling on guest memory whatever the host has: a spec above this is a typo.
pub const MAX_MEMORY_MIB: u64 = 256 * 1024;
pub const MAX_CMDLINE_BYTES: usize = 4096;
const MAX_UID_BYTES: usize = 128;
const MAX_NAME_BYTES: usize = 253;
const MAX_MARKER_BYTES: usize = 256;
const MAX_DISKS: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStrategy {
    #[default]
    Always,
    Halted,
    RerunOnFailure,
    Once,
}

impl RunStrategy {
    /// Whether the VM should be started when it is not running and has not run yet.
    pub fn wants_running(self) -> bool {
        !matches!(self, RunStrategy::Halted)
    }

    /// Whether a VM that crashed (or died while the agent was away) is started again.
    pub fn restarts_on_failure(self) -> bool {
        matches!(self, RunStrategy::Always | RunStrategy::RerunOnFailure)
    }

    /// Whether a guest that powered itself off cleanly is started again.
    pub fn restarts_on_success(self) -> bool {
        matches!(self, RunStrategy::Always)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub image: PathBuf,
    pub format: DiskFormat,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub run_strategy: RunStrategy,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub disks: Vec<DiskSpec>,
    pub readiness_marker: Option<String>,
}

/// Identity and versioning of a put, next to its spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub epoch: u64,
}

/// What this host can give a single VM.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_cpus: u32,
    pub max_memory_mib: u64,
}

/// Checks a put request and turns it into the agent's types; errors name the offending field.
pub fn validate(req: &proto::PutVmRequest, limits: Limits) -> Result<(VmMeta, VmSpec)> {
    validate_uid(&req.uid)?;
    check_name("namespace", &req.namespace)?;
    check_name("name", &req.name)?;
    if req.generation < 0 {
        return Err(Error::invalid("generation", "must not be negative"));
    }
    let spec = req
        .spec
        .as_ref()
        .ok_or_else(|| Error::invalid("spec", "is required"))?;
    let meta = VmMeta {
        uid: req.uid.clone(),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        generation: req.generation,
        epoch: req.epoch,
    };
    Ok((meta, validate_spec(spec, limits)?))
}

/// A uid names a directory under the agent's data dir, so it must be a plain file name.
pub fn validate_uid(uid: &str) -> Result<()> {
    if uid.is_empty() {
        return Err(Error::invalid("uid", "is required"));
    }
    if uid.len() > MAX_UID_BYTES {
        return Err(Error::invalid(
            "uid",
            format!("longer than {MAX_UID_BYTES} bytes"),
        ));
    }
    let ok = uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok || uid.starts_with('.') {
        return Err(Error::invalid(
            "uid",
            "may hold only [A-Za-z0-9._-] and not start with '.'",
        ));
    }
    Ok(())
}

fn check_name(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn validate_spec(spec: &proto::VmSpec, limits: Limits) -> Result<VmSpec> {
    let run_strategy = match proto::RunStrategy::try_from(spec.run_strategy) {
        Ok(proto::RunStrategy::Always | proto::RunStrategy::Unspecified) => RunStrategy::Always,
        Ok(proto::RunStrategy::Halted) => RunStrategy::Halted,
        Ok(proto::RunStrategy::RerunOnFailure) => RunStrategy::RerunOnFailure,
        Ok(proto::RunStrategy::Once) => RunStrategy::Once,
        Err(_) => return Err(Error::invalid("spec.runStrategy", "unknown value")),
    };
    if spec.cpus == 0 {
        return Err(Error::invalid("spec.cpus", "must be at least 1"));
    }
    if spec.cpus > limits.max_cpus {
        let max = limits.max_cpus;
        return Err(Error::invalid(
            "spec.cpus",
            format!("exceeds host capacity ({max})"),
        ));
    }
    let max_mem = limits.max_memory_mib.min(MAX_MEMORY_MIB);
    if spec.memory_mib < 16 || spec.memory_mib > max_mem {
        return Err(Error::invalid(
            "spec.memoryMiB",
            format!("must be in 16..={max_mem} MiB"),
        ));
    }
    let kernel = existing_file("spec.kernel", &spec.kernel)?;
    let initrd = match spec.initrd.as_str() {
        "" => None,
        path => Some(existing_file("spec.initrd", path)?),
    };
    check_cmdline(&spec.cmdline)?;
    if !matches!(spec.network.as_str(), "" | "none") {
        return Err(Error::invalid("spec.network", "only \"none\" is supported"));
    }
    if spec.disks.len() > MAX_DISKS {
        return Err(Error::invalid(
            "spec.disks",
            format!("more than {MAX_DISKS} disks"),
        ));
    }
    let disks = spec
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| validate_disk(i, d))
        .collect::<Result<Vec<_>>>()?;
    let readiness_marker = match spec.readiness.as_ref().map(|r| r.serial_marker.as_str()) {
        None | Some("") => None,
        Some(m) if m.len() > MAX_MARKER_BYTES || m.contains(['\n', '\r', '\0']) => {
            let reason = format!("at most {MAX_MARKER_BYTES} bytes on one line");
            return Err(Error::invalid("spec.readiness.serialMarker", reason));
        }
        Some(m) => Some(m.to_owned()),
    };
    Ok(VmSpec {
        run_strategy,
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        kernel,
        initrd,
        cmdline: spec.cmdline.clone(),
        disks,
        readiness_marker,
    })
}

fn check_cmdline(cmdline: &str) -> Result<()> {
    if cmdline.len() > MAX_CMDLINE_BYTES {
        let reason = format!("longer than {MAX_CMDLINE_BYTES} bytes");
        return Err(Error::invalid("spec.cmdline", reason));
    }
    if cmdline.contains(['\0', '\n', '\r']) {
        return Err(Error::invalid(
            "spec.cmdline",
            "contains NUL or newline characters",
        ));
    }
    Ok(())
}

fn validate_disk(index: usize, disk: &proto::Disk) -> Result<DiskSpec> {
    let format = match disk.format.as_str() {
        "" | "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        _ => {
            let field = format!("spec.disks[{index}].format");
            return Err(Error::invalid(&field, "must be \"raw\" or \"qcow2\""));
        }
    };
    let image = existing_file(&format!("spec.disks[{index}].image"), &disk.image)?;
    Ok(DiskSpec { image, format })
}

/// QEMU is given these paths verbatim, so they must be absolute, plain and present now.
fn existing_file(field: &str, path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if path.contains(['\0', '\n', ',']) {
        return Err(Error::invalid(field, "contains NUL, newline or ','"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Error::invalid(field, "must be an absolute path"));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(p.to_path_buf()),
        Ok(_) => Err(Error::invalid(
            field,
            format!("{path} is not a regular file"),
        )),
        Err(e) => Err(Error::invalid(field, format!("{path}: {e}"))),
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
