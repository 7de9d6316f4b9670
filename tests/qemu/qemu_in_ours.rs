//! Images QEMU writes (`qemu-img create`, `qemu-io` writes, `qemu-img convert -O parallels`),
//! read by the crate: they parse, validate without corruption or leaks, and read the same guest
//! as `qemu-img convert -O raw`. QEMU writes only to images it created here (no extension).

use parallels_image::{FileSource, Severity};
use parallels_image::{GuestData, ImageBuilder};

use crate::fixtures::needs;
use crate::harness::{self, compare_with_qemu, Img};

/// Runs a command that writes (only on images QEMU created for this test); must succeed.
fn write_cmd(prog: &str, args: &[&str]) {
    let out = std::process::Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The crate's reading of the image at `path` equals `qemu-img convert -f parallels -O raw`,
/// the image validates clean, and QEMU's verdicts are as predicted.
fn agree(name: &str, path: &std::path::Path, dir: &std::path::Path) {
    let img = Img::existing(path);
    let src = FileSource::open(path).unwrap();
    let image = parallels_image::open(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
    let report = parallels_image::validate(&image).unwrap();
    assert_eq!(report.count(Severity::Corruption), 0, "{name}: {report:?}");
    assert_eq!(report.count(Severity::Leak), 0, "{name}: {report:?}");

    let raw_path = dir.join(format!("{name}.raw"));
    let r = harness::to_raw(&img, &raw_path);
    assert_eq!(r.code, 0, "{name}: {:?}", r.stderr);
    let raw = std::fs::read(&raw_path).unwrap();
    assert_eq!(raw.len() as u64, image.header().virtual_size(), "{name}: size");
    let mut ours = vec![0u8; raw.len()];
    image.read_guest(0, &mut ours).unwrap();
    assert!(ours == raw, "{name}: read_guest differs from qemu-img convert");

    let problems = compare_with_qemu(&img);
    assert!(problems.is_empty(), "{name}: {problems:#?}");
}

/// A `qemu-io` write: (pattern byte, offset, length).
type Write = (u8, u64, u64);

/// `qemu-img create` with several cluster and disk sizes, then `qemu-io` writes.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn qemu_created_and_written() {
    if !needs::tools("qemu_created_and_written", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[Write])] = &[
        (
            "512",
            "1000003",
            &[(0x11, 0, 512), (0x22, 700, 5000), (0x33, 999_424, 512)],
        ),
        ("4K", "1M", &[]),
        ("4K", "3M", &[(0x44, 4096, 4096), (0x55, 2 << 20, 70_000)]),
        (
            "64K",
            "10M",
            &[(0xaa, 0, 4096), (0xbb, 5 << 20, 65536), (0xcc, 9 << 20, 1)],
        ),
        ("1M", "20M", &[(0x66, 10 << 20, 3 << 20), (0x77, 0, 512)]),
        ("1M", "40000001", &[(0x88, (30 << 20) + 12345, 100_000)]),
    ];
    for (i, (cs, size, writes)) in cases.iter().enumerate() {
        let name = format!("q{i}_{cs}_{size}");
        let path = dir.path().join(format!("{name}.hds"));
        let p = path.to_str().unwrap();
        write_cmd(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "parallels",
                "-o",
                &format!("cluster_size={cs}"),
                p,
                size,
            ],
        );
        if !writes.is_empty() {
            let mut args = vec!["-f".to_string(), "parallels".into()];
            for (b, off, len) in writes.iter() {
                args.extend(["-c".into(), format!("write -P {b:#x} {off} {len}")]);
            }
            args.push(p.into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            write_cmd("qemu-io", &args);
        }
        agree(&name, &path, dir.path());
    }
}

/// `qemu-img convert -O parallels` from a raw file.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn qemu_converted_from_raw() {
    if !needs::tools("qemu_converted_from_raw", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut raw = vec![0u8; 3 << 20];
    for (i, b) in raw.iter_mut().enumerate().skip(100_000).take(600_000) {
        *b = (i % 251) as u8;
    }
    raw[(2 << 20) + 7] = 0xee;
    let raw_path = dir.path().join("in.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    for cs in ["4K", "64K", "1M"] {
        let name = format!("conv_{cs}");
        let path = dir.path().join(format!("{name}.hds"));
        write_cmd(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "parallels",
                "-o",
                &format!("cluster_size={cs}"),
                raw_path.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        agree(&name, &path, dir.path());
        let src = FileSource::open(&path).unwrap();
        let image = parallels_image::open(&src).unwrap();
        let mut ours = vec![0u8; raw.len()];
        image.read_guest(0, &mut ours).unwrap();
        assert!(ours == raw, "{name}: guest differs from the raw input");
    }
}

/// The oracle's v2 base (`qemu-img create -o cluster_size=64K 10M` + `write -P 0xaa 0 4k`) is
/// byte for byte what `ImageBuilder` writes for the same disk.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn builder_base_equals_qemu_base() {
    if !needs::tools("builder_base_equals_qemu_base", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.hds");
    let p = path.to_str().unwrap();
    write_cmd(
        "qemu-img",
        &["create", "-q", "-f", "parallels", "-o", "cluster_size=64K", p, "10M"],
    );
    write_cmd("qemu-io", &["-f", "parallels", "-c", "write -P 0xaa 0 4k", p]);
    let (ours, _) = ImageBuilder::new(10 << 20)
        .cluster_size(64 << 10)
        .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
        .to_vec()
        .unwrap();
    assert!(std::fs::read(&path).unwrap() == ours, "builder and QEMU differ");
    assert!(ours == crate::catalogue::v2().0);
}
