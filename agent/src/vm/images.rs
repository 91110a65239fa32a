//! Image roots: the only host directories whose files a guest may be given.
//!
//! Anyone allowed to create a VM names its kernel, initrd and disk images. Without a limit that
//! is a way to hand a guest any host file (`/etc/shadow`, another VM's disk). So every image
//! path is resolved (symlinks included) and must then lie under one of the agent's configured
//! roots; a qcow2 image must not point outside them either (backing files are followed, with
//! their formats; external data files are refused). The resolved path is what QEMU is given.
//!
//! A root is canonicalized at check time, so it may be created after the agent starts. Whoever
//! can write into a root decides what guests may read: roots are for the host's administrator.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::spec::DiskFormat;
use crate::{Error, Result};

/// The image dir of the test guest and of `scripts/guest-image.sh`.
pub const DEFAULT_GUEST_DIR: &str = "/var/lib/quiver/guest";
/// Where operators put disk images by convention.
pub const DEFAULT_IMAGES_DIR: &str = "/var/lib/quiver/images";

/// How deep a chain of qcow2 backing files may go.
const MAX_BACKING_DEPTH: usize = 8;
/// Bytes of a qcow2 image read to find its header extensions (they live in the first cluster).
const MAX_HEADER_BYTES: usize = 64 * 1024;
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const INCOMPAT_EXTERNAL_DATA_FILE: u64 = 1 << 2;

/// The directories guests may read images from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRoots {
    roots: Vec<PathBuf>,
}

impl ImageRoots {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        ImageRoots { roots }
    }

    /// `$QUIVER_GUEST_DIR` (or [`DEFAULT_GUEST_DIR`]) and [`DEFAULT_IMAGES_DIR`].
    pub fn default_roots() -> Vec<PathBuf> {
        let guest = std::env::var_os("QUIVER_GUEST_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_GUEST_DIR), PathBuf::from);
        vec![guest, PathBuf::from(DEFAULT_IMAGES_DIR)]
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves `path` to a canonical regular file under a root; errors name `field`.
    pub fn resolve(&self, field: &str, path: &str) -> Result<PathBuf> {
        if path.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(Error::invalid(field, "must be an absolute path"));
        }
        self.resolve_path(field, p)
    }

    fn resolve_path(&self, field: &str, path: &Path) -> Result<PathBuf> {
        let shown = path.display();
        let real = std::fs::canonicalize(path)
            .map_err(|e| Error::invalid(field, format!("{shown}: {e}")))?;
        if !self.contains(&real) {
            let roots = self.describe();
            let reason = if real == path {
                format!("{shown} is outside the image roots ({roots})")
            } else {
                let real = real.display();
                format!("{shown} resolves to {real}, outside the image roots ({roots})")
            };
            return Err(Error::invalid(field, reason));
        }
        // QEMU splits option values on ',' and the cmdline on newlines.
        if real.to_str().is_none_or(|s| s.contains([',', '\n', '\0'])) {
            let reason = format!(
                "{} is not valid UTF-8 or contains ',' or a newline",
                real.display()
            );
            return Err(Error::invalid(field, reason));
        }
        match std::fs::metadata(&real) {
            Ok(m) if m.is_file() => Ok(real),
            Ok(_) => Err(Error::invalid(
                field,
                format!("{shown} is not a regular file"),
            )),
            Err(e) => Err(Error::invalid(field, format!("{shown}: {e}"))),
        }
    }

    /// Whether the canonical `path` lies under a root (component-wise, not by string prefix).
    fn contains(&self, path: &Path) -> bool {
        self.roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|root| path.starts_with(root))
    }

    fn describe(&self) -> String {
        let list: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        if list.is_empty() {
            "none configured".to_owned()
        } else {
            list.join(", ")
        }
    }

    /// Resolves a disk image and, for qcow2, checks that its backing chain stays in the roots.
    pub fn resolve_image(&self, field: &str, path: &str, format: DiskFormat) -> Result<PathBuf> {
        let real = self.resolve(field, path)?;
        if format == DiskFormat::Qcow2 {
            self.check_qcow2(field, &real, 0)?;
        }
        Ok(real)
    }

    fn check_qcow2(&self, field: &str, image: &Path, depth: usize) -> Result<()> {
        let shown = image.display();
        let header = Qcow2Header::read(image)
            .map_err(|reason| Error::invalid(field, format!("{shown}: {reason}")))?;
        if header.incompatible & INCOMPAT_EXTERNAL_DATA_FILE != 0 {
            let reason = format!("{shown}: qcow2 images with an external data file are refused");
            return Err(Error::invalid(field, reason));
        }
        let Some(backing) = header.backing_file else {
            return Ok(());
        };
        if depth >= MAX_BACKING_DEPTH {
            let reason = format!("{shown}: backing chain deeper than {MAX_BACKING_DEPTH}");
            return Err(Error::invalid(field, reason));
        }
        // A ':' may select a QEMU protocol (`nbd:`, `json:`, `file:`), which no path check covers.
        if backing.contains(':') {
            let reason = format!("{shown}: backing file {backing:?} names a protocol");
            return Err(Error::invalid(field, reason));
        }
        let format = match header.backing_format.as_deref() {
            Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            // Without a recorded format QEMU would probe the backing file's contents, and some
            // probed formats (vmdk descriptors) name further files.
            other => {
                let reason = format!(
                    "{shown}: backing file {backing:?} has format {other:?}; only an explicit \
                     raw or qcow2 is accepted"
                );
                return Err(Error::invalid(field, reason));
            }
        };
        // QEMU resolves a relative backing file against the directory of the image naming it.
        let dir = image.parent().unwrap_or(Path::new("/"));
        let backing_path = dir.join(&backing);
        let real = self
            .resolve_path(field, &backing_path)
            .map_err(|e| match e {
                Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                    field,
                    reason: format!("backing file of {shown}: {reason}"),
                },
                other => other,
            })?;
        if format == DiskFormat::Qcow2 {
            self.check_qcow2(field, &real, depth + 1)?;
        }
        Ok(())
    }
}

/// The backing file a qcow2 image names (as written in its header), if it is a readable qcow2
/// image with one.
pub fn qcow2_backing_file(path: &Path) -> Option<String> {
    Qcow2Header::read(path).ok()?.backing_file
}

/// The parts of a qcow2 header that can make QEMU open other files.
#[derive(Debug, Default, PartialEq, Eq)]
struct Qcow2Header {
    incompatible: u64,
    backing_file: Option<String>,
    backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Qcow2Header {
    fn read(path: &Path) -> std::result::Result<Self, String> {
        let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(MAX_HEADER_BYTES);
        (&mut file)
            .take(MAX_HEADER_BYTES as u64)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        let mut header = Self::parse(&buf)?;
        if let Some((offset, len)) = header.backing_location(&buf)? {
            let mut name = vec![0; len];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut name))
                .map_err(|e| format!("reading the backing file name: {e}"))?;
            let name = String::from_utf8(name).map_err(|_| "backing file name is not UTF-8")?;
            header.backing_file = Some(name);
        }
        Ok(header)
    }

    /// Parses the fixed header and its extensions from the first bytes of the file.
    fn parse(b: &[u8]) -> std::result::Result<Self, String> {
        if b.get(..4) != Some(QCOW2_MAGIC) {
            return Err("not a qcow2 image (spec says format qcow2)".into());
        }
        let short = || "truncated qcow2 header".to_owned();
        let version = be32(b, 4).ok_or_else(short)?;
        let (incompatible, extensions_at) = match version {
            2 => (0, 72),
            3 => {
                let len = be32(b, 100).ok_or_else(short)?;
                (be64(b, 72).ok_or_else(short)?, len as usize)
            }
            v => return Err(format!("unsupported qcow2 version {v}")),
        };
        let mut header = Qcow2Header {
            incompatible,
            ..Qcow2Header::default()
        };
        let mut at = extensions_at;
        loop {
            let kind = be32(b, at).ok_or("qcow2 header extensions run past the first 64 KiB")?;
            let len = be32(b, at + 4).ok_or_else(short)? as usize;
            if kind == EXT_END {
                return Ok(header);
            }
            let data = b
                .get(at + 8..at + 8 + len)
                .ok_or("qcow2 header extension runs past the first 64 KiB")?;
            if kind == EXT_BACKING_FORMAT {
                let format = String::from_utf8_lossy(data)
                    .trim_end_matches('\0')
                    .to_owned();
                header.backing_format = Some(format);
            }
            at += 8 + len.div_ceil(8) * 8;
        }
    }

    /// Offset and length of the backing file name, if there is one.
    fn backing_location(&self, b: &[u8]) -> std::result::Result<Option<(u64, usize)>, String> {
        let short = || "truncated qcow2 header".to_owned();
        let offset = be64(b, 8).ok_or_else(short)?;
        let len = be32(b, 16).ok_or_else(short)? as usize;
        match (offset, len) {
            (0, _) | (_, 0) => Ok(None),
            (_, len) if len > 1023 => Err("backing file name longer than 1023 bytes".into()),
            (offset, len) => Ok(Some((offset, len))),
        }
    }
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
