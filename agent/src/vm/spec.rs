//! The VM spec as the agent runs it, and its validation from the wire form.
//!
//! Validation happens before anything touches the disk, so a rejected put leaves nothing behind.
//! Field names in errors follow the `MicroVM` CRD (`spec.memoryMiB`), so a user sees the same name
//! in `kubectl` and in agent errors. Image paths are resolved and confined to the image roots
//! (`vm::images`); the spec keeps the resolved paths, which are what QEMU opens.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::images::ImageRoots;
use super::network::{self, Network};
use crate::{Error, Result};
use quiver_rpc::proto;

/// Hard ceiling on guest memory whatever the host has: a spec above this is a typo.
pub const MAX_MEMORY_MIB: u64 = 256 * 1024;
pub const MAX_CMDLINE_BYTES: usize = 4096;
const MAX_UID_BYTES: usize = 128;
const MAX_NAME_BYTES: usize = 253;
const MAX_MARKER_BYTES: usize = 256;
const MAX_DISKS: usize = 16;
const MAX_LABEL_BYTES: usize = 63;
/// An hour: a guest that needs longer to boot is better watched some other way.
pub const MAX_READINESS_TIMEOUT_SECS: u32 = 3600;

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
    /// QEMU drive id and overlay file name (a label, see [`check_label`]).
    pub name: String,
    /// Resolved path inside the image roots.
    pub image: PathBuf,
    pub format: DiskFormat,
    /// Attach `image` itself read-only instead of an overlay.
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessSpec {
    pub marker: String,
    /// How long after QEMU starts the marker may take before the status says so.
    pub timeout: Option<Duration>,
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
    pub network: Network,
    pub readiness: Option<ReadinessSpec>,
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
pub fn validate(
    req: &proto::PutVmRequest,
    limits: Limits,
    roots: &ImageRoots,
) -> Result<(VmMeta, VmSpec)> {
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
    Ok((meta, validate_spec(spec, limits, roots)?))
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

/// A name that becomes a QEMU id and part of a file name: a lowercase letter, then lowercase
/// letters, digits and '-', not ending in '-', at most 63 bytes (QEMU ids must start with a
/// letter).
pub(crate) fn check_label(field: &str, value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        return Ok(());
    }
    Err(Error::invalid(
        field,
        format!(
            "must be 1 to {MAX_LABEL_BYTES} lowercase letters, digits or '-', start with a \
             letter and not end with '-'"
        ),
    ))
}

fn validate_spec(spec: &proto::VmSpec, limits: Limits, roots: &ImageRoots) -> Result<VmSpec> {
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
    check_cmdline(&spec.cmdline)?;
    let network = network::validate(spec.network.as_ref())?;
    let readiness = spec
        .readiness
        .as_ref()
        .map(validate_readiness)
        .transpose()?
        .flatten();
    if spec.disks.len() > MAX_DISKS {
        return Err(Error::invalid(
            "spec.disks",
            format!("more than {MAX_DISKS} disks"),
        ));
    }
    // Paths last: they touch the file system, and every cheaper check should fail first.
    let kernel = roots.resolve("spec.kernel", &spec.kernel)?;
    let initrd = match spec.initrd.as_str() {
        "" => None,
        path => Some(roots.resolve("spec.initrd", path)?),
    };
    let mut disks: Vec<DiskSpec> = Vec::with_capacity(spec.disks.len());
    for (i, d) in spec.disks.iter().enumerate() {
        let disk = validate_disk(i, d, roots)?;
        if disks.iter().any(|o| o.name == disk.name) {
            let field = format!("spec.disks[{i}].name");
            return Err(Error::invalid(&field, "repeats an earlier disk's name"));
        }
        disks.push(disk);
    }
    Ok(VmSpec {
        run_strategy,
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        kernel,
        initrd,
        cmdline: spec.cmdline.clone(),
        disks,
        network,
        readiness,
    })
}

/// `None` for an empty marker (no readiness check).
fn validate_readiness(r: &proto::Readiness) -> Result<Option<ReadinessSpec>> {
    let m = r.serial_marker.as_str();
    if m.len() > MAX_MARKER_BYTES || m.contains(['\n', '\r', '\0']) {
        let reason = format!("at most {MAX_MARKER_BYTES} bytes on one line");
        return Err(Error::invalid("spec.readiness.serialMarker", reason));
    }
    if r.timeout_seconds > MAX_READINESS_TIMEOUT_SECS {
        let reason = format!("at most {MAX_READINESS_TIMEOUT_SECS} (0 = no timeout)");
        return Err(Error::invalid("spec.readiness.timeoutSeconds", reason));
    }
    if m.is_empty() {
        return Ok(None);
    }
    let timeout = (r.timeout_seconds > 0).then(|| Duration::from_secs(r.timeout_seconds.into()));
    Ok(Some(ReadinessSpec {
        marker: m.to_owned(),
        timeout,
    }))
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

fn validate_disk(index: usize, disk: &proto::Disk, roots: &ImageRoots) -> Result<DiskSpec> {
    let field = |name: &str| format!("spec.disks[{index}].{name}");
    check_label(&field("name"), &disk.name)?;
    let format = match disk.format.as_str() {
        "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        _ => {
            let reason = "must be \"raw\" or \"qcow2\" (formats are never guessed)";
            return Err(Error::invalid(&field("format"), reason));
        }
    };
    let image = roots.resolve_image(&field("image"), &disk.image, format)?;
    Ok(DiskSpec {
        name: disk.name.clone(),
        image,
        format,
        read_only: disk.read_only,
    })
}

/// Checks the spec's images again right before a launch: a file in a root may have been
/// replaced (by a symlink leading out, say) since the put was accepted.
pub fn recheck_images(spec: &VmSpec, roots: &ImageRoots) -> Result<()> {
    let path = |p: &PathBuf| p.display().to_string();
    roots.resolve("spec.kernel", &path(&spec.kernel))?;
    if let Some(initrd) = &spec.initrd {
        roots.resolve("spec.initrd", &path(initrd))?;
    }
    for (i, d) in spec.disks.iter().enumerate() {
        roots.resolve_image(&format!("spec.disks[{i}].image"), &path(&d.image), d.format)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
