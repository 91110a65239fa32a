use super::*;

/// A qcow2 v3 header (104 bytes) with an optional backing file and backing format, as
/// `qemu-img create -f qcow2 -b <backing> -F <format>` writes one.
fn qcow2(backing: Option<&str>, format: Option<&str>, incompatible: u64) -> Vec<u8> {
    let mut h = vec![0u8; 104];
    h[..4].copy_from_slice(QCOW2_MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[72..80].copy_from_slice(&incompatible.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    if let Some(f) = format {
        h.extend(EXT_BACKING_FORMAT.to_be_bytes());
        h.extend(u32::try_from(f.len()).expect("short").to_be_bytes());
        h.extend(f.as_bytes());
        h.resize(h.len().div_ceil(8) * 8, 0);
    }
    h.extend([0u8; 8]);
    if let Some(b) = backing {
        let offset = h.len() as u64;
        h[8..16].copy_from_slice(&offset.to_be_bytes());
        h[16..20].copy_from_slice(&u32::try_from(b.len()).expect("short").to_be_bytes());
        h.extend(b.as_bytes());
    }
    h
}

struct Roots {
    dir: tempfile::TempDir,
}

impl Roots {
    fn new() -> Self {
        Roots {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn roots(&self) -> ImageRoots {
        ImageRoots::new(vec![self.dir.path().to_path_buf()])
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path.display().to_string()
    }

    fn check(&self, path: &str) -> std::result::Result<PathBuf, String> {
        self.roots()
            .resolve_image("spec.disks[0].image", path, DiskFormat::Qcow2)
            .map_err(|e| match e {
                Error::InvalidArgument { field, reason } => {
                    assert_eq!(field, "spec.disks[0].image");
                    reason
                }
                other => panic!("not an invalid argument: {other:?}"),
            })
    }
}

#[test]
fn qcow2_without_backing_file_is_accepted() {
    let r = Roots::new();
    let image = r.write("plain.qcow2", &qcow2(None, None, 0));
    r.check(&image).expect("accepted");
}

#[test]
fn qcow2_backing_file_inside_the_roots_is_followed() {
    let r = Roots::new();
    r.write("base.raw", b"raw bytes");
    let middle = r.write("middle.qcow2", &qcow2(Some("base.raw"), Some("raw"), 0));
    let top = r.write("top.qcow2", &qcow2(Some(&middle), Some("qcow2"), 0));
    r.check(&top).expect("a chain inside the roots is accepted");
}

#[test]
fn qcow2_backing_file_outside_the_roots_is_refused() {
    let r = Roots::new();
    let image = r.write("evil.qcow2", &qcow2(Some("/etc/passwd"), Some("raw"), 0));
    let reason = r.check(&image).expect_err("refused");
    assert!(reason.contains("outside the image roots"), "{reason}");
    let relative = r.write(
        "evil2.qcow2",
        &qcow2(Some("../../../etc/passwd"), Some("raw"), 0),
    );
    r.check(&relative).expect_err("relative escape refused");
    // The escape may hide one level down.
    let top = r.write("top.qcow2", &qcow2(Some("evil.qcow2"), Some("qcow2"), 0));
    r.check(&top)
        .expect_err("escape deeper in the chain refused");
}

#[test]
fn qcow2_backing_without_explicit_format_or_with_a_protocol_is_refused() {
    let r = Roots::new();
    r.write("base.raw", b"x");
    let probed = r.write("probed.qcow2", &qcow2(Some("base.raw"), None, 0));
    assert!(r.check(&probed).expect_err("refused").contains("format"));
    let vmdk = r.write("vmdk.qcow2", &qcow2(Some("base.raw"), Some("vmdk"), 0));
    r.check(&vmdk)
        .expect_err("only raw and qcow2 backing files");
    let nbd = r.write(
        "nbd.qcow2",
        &qcow2(Some("nbd://10.0.0.1/x"), Some("raw"), 0),
    );
    assert!(r.check(&nbd).expect_err("refused").contains("protocol"));
}

#[test]
fn qcow2_with_external_data_file_or_looping_chain_is_refused() {
    let r = Roots::new();
    let data = r.write(
        "data.qcow2",
        &qcow2(None, None, INCOMPAT_EXTERNAL_DATA_FILE),
    );
    assert!(
        r.check(&data)
            .expect_err("refused")
            .contains("external data file")
    );
    let looped = r.write("loop.qcow2", &qcow2(Some("loop.qcow2"), Some("qcow2"), 0));
    assert!(r.check(&looped).expect_err("refused").contains("deeper"));
}

#[test]
fn garbage_and_truncated_headers_are_refused_without_panicking() {
    let r = Roots::new();
    for (i, bytes) in [
        b"not qcow2 at all".to_vec(),
        QCOW2_MAGIC.to_vec(),
        qcow2(None, None, 0)[..90].to_vec(),
        {
            let mut h = qcow2(None, None, 0);
            h[4..8].copy_from_slice(&9u32.to_be_bytes());
            h
        },
        {
            // An extension whose length runs past the file.
            let mut h = qcow2(None, None, 0);
            h.truncate(104);
            h.extend(0x1234u32.to_be_bytes());
            h.extend(u32::MAX.to_be_bytes());
            h
        },
        {
            let mut h = qcow2(Some("x"), Some("raw"), 0);
            h[16..20].copy_from_slice(&5000u32.to_be_bytes());
            h
        },
    ]
    .into_iter()
    .enumerate()
    {
        let image = r.write(&format!("bad-{i}.qcow2"), &bytes);
        r.check(&image).expect_err("refused");
    }
}

#[test]
fn images_made_by_qemu_img_parse_as_expected() {
    let r = Roots::new();
    let base = r.write("base.raw", &[0; 4096]);
    let top = r.dir.path().join("top.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &base])
        .arg(&top)
        .status();
    let Ok(status) = made else {
        panic!("qemu-img is needed (scripts/guest-image.sh installs it)");
    };
    assert!(status.success());
    let header = Qcow2Header::read(&top).expect("parse");
    assert_eq!(header.backing_file.as_deref(), Some(base.as_str()));
    assert_eq!(header.backing_format.as_deref(), Some("raw"));
    assert_eq!(qcow2_backing_file(&top).as_deref(), Some(base.as_str()));
    assert_eq!(qcow2_backing_file(Path::new(&base)), None, "raw has none");
    r.check(&top.display().to_string()).expect("accepted");
    let outside = ImageRoots::new(vec![PathBuf::from("/nonexistent-root")]);
    assert!(
        outside
            .resolve_image(
                "spec.disks[0].image",
                &top.display().to_string(),
                DiskFormat::Qcow2
            )
            .is_err()
    );
}
