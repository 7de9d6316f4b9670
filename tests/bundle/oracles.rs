//! The real readers: ploop's descriptor and chain check (`pchain`, built from
//! `../shared/oracles/ploop/`), and QEMU reading a chain through its own backing support.
//! Both are run read-only on the inputs. Missing tools skip (fail under CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;

use parallels_image::{bundle::Bundle, bundle::BundleBuilder, bundle::BundleDefect};

use crate::common::*;
use crate::fixtures::needs;

/// The folder of the ploop drivers, built (or reused) by the oracle's build script.
fn ploop_drivers(test: &str) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/oracles/ploop/build.sh");
    if !script.is_file() {
        return needs::missing(test, &format!("ploop oracle {}", script.display()));
    }
    let out = Command::new(&script).output().expect("the build script runs");
    if !out.status.success() {
        return needs::missing(
            test,
            &format!("ploop oracle build ({})", String::from_utf8_lossy(&out.stderr)),
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(PathBuf::from(stdout.lines().last().unwrap().trim()))
}

/// `pchain DiskDescriptor.xml`: everything it printed (stdout then stderr).
fn pchain(drivers: &Path, bundle: &Path) -> String {
    let out = Command::new(drivers.join("pchain"))
        .arg(bundle.join("DiskDescriptor.xml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "pchain crashed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn ploop_accepts_our_chain_bundle() {
    let Some(drivers) = ploop_drivers("ploop_accepts_our_chain_bundle") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let out = pchain(&drivers, &dir);
    let abs = std::path::absolute(&dir).unwrap();
    let d = |i: usize, g: u128| format!("delta[{i}] {}/c.hdd.0.{{{}}}.hds", abs.display(), guid(g).hyphenated());
    let expected = format!(
        "{}\n{}\n{}\nCHAIN rc=0 blocksize=128 cbt_allowed=1\n",
        d(0, 1),
        d(1, 2),
        d(2, 3)
    );
    assert_eq!(out, expected);
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn ploop_accepts_a_converted_bundle() {
    let Some(drivers) = ploop_drivers("ploop_accepts_a_converted_bundle") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("in.raw");
    let mut bytes = vec![0u8; 8 << 20];
    bytes[3 << 20..(3 << 20) + 4096].fill(0x5a);
    std::fs::write(&raw, &bytes).unwrap();
    let dir = tmp.path().join("one.hdd");
    let st = Command::new(env!("CARGO_BIN_EXE_prlimg"))
        .arg("convert")
        .arg(&raw)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = pchain(&drivers, &dir);
    assert!(out.ends_with("CHAIN rc=0 blocksize=2048 cbt_allowed=1\n"), "{out}");
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn ploop_reads_neither_split_nor_plain_bundles() {
    // What ploop does not support (it is not the format's limit): a split disk is refused when
    // the descriptor is read; a Plain base fails its image check.
    let Some(drivers) = ploop_drivers("ploop_reads_neither_split_nor_plain_bundles") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("s.hdd");
    chain_builder().split_at(vec![2 * MIB]).create(&split, false).unwrap();
    let out = pchain(&drivers, &split);
    assert!(
        out.contains("Invalid disk descriptor file format: splitted disk is not supported"),
        "{out}"
    );
    assert!(out.contains("OPEN_DD rc=-1"), "{out}");
    let plain = tmp.path().join("p.hdd");
    chain_builder().plain_root(true).create(&plain, false).unwrap();
    let out = pchain(&drivers, &plain);
    assert!(out.contains("CHAIN rc=11 "), "{out}");
    assert!(out.contains("Wrong signature in image"), "{out}");
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn ploop_refuses_our_descriptor_defects_where_it_checks_them() {
    let Some(drivers) = ploop_drivers("ploop_refuses_our_descriptor_defects_where_it_checks_them") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let source = Bundle::open(&dir).unwrap();
    // (defect, what ploop says; None = ploop accepts the chain).
    let table: &[(BundleDefect, Option<&str>)] = &[
        (BundleDefect::NotXml, Some("OPEN_DD rc=-1")),
        (BundleDefect::WrongBlocksize, Some("CHAIN rc=38 ")),
        (BundleDefect::MissingFile, Some("CHAIN rc=4 ")),
        (BundleDefect::FileOutside, Some("CHAIN rc=4 ")),
        (
            BundleDefect::BadGuid,
            Some("invalid top delta 11110000-0000-4000-8000-000000000003"),
        ),
        (BundleDefect::DuplicateGuid, Some("OPEN_DD rc=-1")),
        (BundleDefect::MissingImage, Some("OPEN_DD rc=-1")),
        (
            BundleDefect::MissingParent,
            Some("Can't find snapshot by uuid {0bad0bad-0bad-4bad-8bad-0bad0bad0bad}"),
        ),
        (
            BundleDefect::ParentCycle,
            Some("Inconsistency detected, base image not found"),
        ),
        (
            BundleDefect::MissingTop,
            Some("top delta {0bad0bad-0bad-4bad-8bad-0bad0bad0bad} is not found"),
        ),
        // ploop does not check these: it reads the chain from the top and nothing else.
        (BundleDefect::MissingElement, None),
        (BundleDefect::BadVersion, None),
        (BundleDefect::GeometryMismatch, None),
        (BundleDefect::Padding, None),
        (BundleDefect::SizeMismatch, None),
        (BundleDefect::ImageTooSmall, None),
        (BundleDefect::SharedFile, None),
        (BundleDefect::TwoRoots, None),
        (BundleDefect::PlainOverlay, None),
        (BundleDefect::MissingMarker, None),
    ];
    for &(defect, says) in table {
        let out_dir = tmp.path().join(format!("{}.hdd", defect.name()));
        defect.apply(&source, &out_dir, false).unwrap();
        let out = pchain(&drivers, &out_dir);
        match says {
            Some(text) => {
                assert!(out.contains(text), "{}: expected {text:?} in\n{out}", defect.name());
                assert!(!out.contains("CHAIN rc=0 "), "{}: ploop accepted\n{out}", defect.name());
            }
            None => assert!(out.contains("CHAIN rc=0 "), "{}: ploop refused\n{out}", defect.name()),
        }
    }
}

/// `driver=parallels` over the chain's files, newest first, each layer the backing of the one
/// before, every node read-only (the root has no backing).
fn image_opts(files: &[PathBuf]) -> String {
    let mut opts = Vec::new();
    let mut prefix = String::new();
    for f in files {
        let name = f.display().to_string().replace(',', ",,");
        opts.push(format!(
            "{prefix}driver=parallels,{prefix}file.driver=file,{prefix}file.filename={name},{prefix}read-only=on"
        ));
        prefix.push_str("backing.");
    }
    opts.join(",")
}

#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn qemu_reads_our_chains_through_its_backing_support() {
    let Some(qemu_img) = needs::tool("qemu_reads_our_chains_through_its_backing_support", "qemu-img") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for levels in [2usize, 3] {
        let dir = tmp.path().join(format!("c{levels}.hdd"));
        let mut b = BundleBuilder::new(4 * MIB).cluster_size(64 << 10);
        let all = [
            snap(guid(1), None, vec![fill(0, MIB, 0x11), fill(2 * MIB, MIB, 0x12)]),
            snap(
                guid(2),
                Some(guid(1)),
                vec![fill(512 << 10, (512 << 10) + (64 << 10), 0x22)],
            ),
            snap(
                guid(3),
                Some(guid(2)),
                vec![
                    fill(64 << 10, 64 << 10, 0x33),
                    fill(3 * MIB + (32 << 10), 64 << 10, 0x34),
                ],
            ),
        ];
        for s in &all[..levels] {
            b = b.snapshot(s.clone());
        }
        b.create(&dir, false).unwrap();
        let disk = Bundle::open(&dir).unwrap().disk(None).unwrap();
        let opts = image_opts(disk.files());

        let ours = tmp.path().join(format!("ours{levels}.raw"));
        let st = Command::new(env!("CARGO_BIN_EXE_prlimg"))
            .arg("convert")
            .arg(&dir)
            .arg(&ours)
            .status()
            .unwrap();
        assert!(st.success());
        let theirs = tmp.path().join(format!("qemu{levels}.raw"));
        let out = Command::new(&qemu_img)
            .args(["convert", "-O", "raw", "--image-opts", &opts])
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (a, b) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
        assert!(a == b, "{levels} levels: prlimg and QEMU read different bytes");
        assert!(a == chain_expected(levels as u32));

        // The map: QEMU's JSON for the same chain, byte for byte.
        let out = Command::new(&qemu_img)
            .args(["map", "--output", "json", "--image-opts", &opts])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ours = Command::new(env!("CARGO_BIN_EXE_prlimg"))
            .args(["map", "--output", "json"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&out.stdout),
            "{levels} levels"
        );
    }
}
