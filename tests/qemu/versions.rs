//! QEMU 7.2 beside QEMU 10.0 (spec/qemu.md, "QEMU 7.2 and 10.0"): every behaviour that differs
//! between the versions has a reproducer here, whose predictions for the two versions differ as
//! the table says and which runs through both real `qemu-img`s (`harness::compare_with`); then
//! `prlimg check --qemu` and `prlimg differential --qemu-dir` against the real 7.2.

use std::process::Command;

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::qemu::{self, QemuCheck, QemuOutcome, Version};
use parallels_image::ImageBuilder;
use serde_json::Value;

use crate::fixtures::needs;
use crate::harness::{self, Img};

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");

/// What a version does with a reproducer: `qemu-img info`'s outcome kind and exit status, and
/// `qemu-img check`'s exit status.
type Does = (&'static str, i32, i32);

/// A reproducer: its name (as in the spec's table), its bytes, and what 7.2 and 10.0 do.
struct Repro {
    name: &'static str,
    bytes: Vec<u8>,
    v7_2: Does,
    v10_0: Does,
}

fn base(name: &str) -> Vec<u8> {
    crate::defects::bases()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no base {name}"))
        .1
}

fn damaged(base_name: &str, defect: DefectKind, seed: u64) -> Vec<u8> {
    let mut bytes = base(base_name);
    let src = bytes.clone();
    let src = src.as_slice();
    let image = parallels_image::open(&src).unwrap();
    let patch = corrupt::plan(&image, defect, seed).unwrap_or_else(|e| panic!("{defect} on {base_name}: {e}"));
    patch.apply_to_vec(&mut bytes);
    bytes
}

fn set_u64(mut bytes: Vec<u8>, at: usize, v: u64) -> Vec<u8> {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    bytes
}

/// Every reproducer of the spec's table.
fn reproducers() -> Vec<Repro> {
    let ext = base("v2_ext");
    let ext_off = u64::from_le_bytes(ext[56..64].try_into().unwrap());
    let cut = {
        let mut b = base("v2_plain");
        b.truncate(b.len() - 512);
        b
    };
    let r = |name, bytes, v7_2, v10_0| Repro {
        name,
        bytes,
        v7_2,
        v10_0,
    };
    vec![
        r(
            "ext-off-too-big",
            damaged("v2_ext", DefectKind::ExtOffTooBig, 0),
            ("rejects", 1, 1),
            ("rejects", 1, 1),
        ),
        r(
            "ext_off + 2^55",
            set_u64(ext.clone(), 56, ext_off + (1 << 55)),
            ("opens", 0, 3),
            ("rejects", 1, 1),
        ),
        r(
            "ext_off 2^54",
            set_u64(ext.clone(), 56, 1 << 54),
            ("aborts", 134, 134),
            ("rejects", 1, 1),
        ),
        r(
            "bat-too-large-to-read",
            damaged("v2_empty", DefectKind::BatTooLargeToRead, 0),
            ("opens", 0, 0),
            ("rejects", 1, 1),
        ),
        r(
            "granularity-not-power-of-two",
            damaged("v2_ext", DefectKind::GranularityNotPowerOfTwo, 0),
            ("aborts", 134, 134),
            ("aborts", 134, 134),
        ),
        r(
            "bitmap-on-empty-disk",
            damaged("v2_ext", DefectKind::BitmapOnEmptyDisk, 0),
            ("aborts", 134, 134),
            ("aborts", 134, 134),
        ),
        r(
            "data-off-past-eof",
            damaged("v2_plain", DefectKind::DataOffPastEof, 0),
            ("opens", 0, 3),
            ("opens", 0, 2),
        ),
        r(
            "data-off-zero",
            damaged("v2_plain", DefectKind::DataOffZero, 0),
            ("opens", 0, 0),
            ("opens", 0, 2),
        ),
        r(
            "data-off-inside-bat",
            damaged("v2_plain", DefectKind::DataOffInsideBat, 0),
            ("opens", 0, 0),
            ("opens", 0, 134),
        ),
        r(
            "bat-entry-duplicate",
            damaged("v2_plain", DefectKind::BatEntryDuplicate, 0),
            ("opens", 0, 0),
            ("opens", 0, 2),
        ),
        r(
            "bat-entry-duplicate (last entry)",
            damaged("v1_plain", DefectKind::BatEntryDuplicate, 1),
            ("opens", 0, 0),
            ("opens", 0, 1),
        ),
        r(
            "bat-entry-past-eof",
            damaged("v2_plain", DefectKind::BatEntryPastEof, 0),
            ("opens", 0, 0),
            ("opens", 0, 134),
        ),
        r(
            "file cut inside its last cluster",
            cut,
            ("opens", 0, 0),
            ("opens", 0, 134),
        ),
        r(
            "empty BAT over one cluster",
            ImageBuilder::new(4 << 20).cluster_size(4096).to_vec().unwrap().0,
            ("opens", 0, 3),
            ("opens", 0, 0),
        ),
    ]
}

fn does(p: &qemu::Prediction) -> Does {
    (
        p.info.kind(),
        p.info.exit_code().unwrap_or(-1),
        p.check.exit_code().unwrap_or(-1),
    )
}

/// Each reproducer: the two predictions differ (outcome, message, assertion, check exit,
/// counters or ERROR lines), each is what the table says, and each version's real `qemu-img`
/// does exactly what its prediction says.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn version_differences_reproduced_in_both_qemus() {
    let mut problems = Vec::new();
    for r in reproducers() {
        let p72 = qemu::predict_for(&r.bytes.as_slice(), Version::V7_2).unwrap();
        let p10 = qemu::predict_for(&r.bytes.as_slice(), Version::V10_0).unwrap();
        assert_eq!(p10, qemu::predict(&r.bytes.as_slice()).unwrap(), "{}", r.name);
        if (&p72.info, &p72.check) == (&p10.info, &p10.check) {
            problems.push(format!("{}: both versions predicted alike: {:?}", r.name, p10.info));
        }
        for (v, p, want) in [(Version::V7_2, &p72, r.v7_2), (Version::V10_0, &p10, r.v10_0)] {
            if does(p) != want {
                problems.push(format!(
                    "{} QEMU {v}: predicted {:?}, the table says {want:?}",
                    r.name,
                    does(p)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The assertion texts and messages that differ, exactly.
    let by_name = |name: &str| reproducers().into_iter().find(|r| r.name == name).unwrap().bytes;
    let info = |name: &str, v| qemu::predict_for(&by_name(name).as_slice(), v).unwrap().info;
    assert_eq!(
        info("ext-off-too-big", Version::V7_2).message("x"),
        Some("Failed to read Format Extension cluster: Input/output error".into())
    );
    assert_eq!(
        info("ext-off-too-big", Version::V10_0).message("x"),
        Some("Invalid image: Too big offset".into())
    );
    assert_eq!(
        info("ext_off 2^54", Version::V7_2).message("x").as_deref(),
        Some(qemu::ABORT_EXT_OFF_7_2)
    );
    assert_eq!(
        info("granularity-not-power-of-two", Version::V7_2)
            .message("x")
            .as_deref(),
        Some(qemu::ABORT_GRANULARITY_7_2)
    );
    assert_eq!(
        info("bitmap-on-empty-disk", Version::V7_2).message("x").as_deref(),
        Some(qemu::ABORT_EMPTY_DISK_7_2)
    );
    let QemuOutcome::Opens { bitmaps } = info("ext_off + 2^55", Version::V7_2) else {
        panic!("7.2 opens an ext_off that wraps to the extension")
    };
    assert_eq!(bitmaps.len(), 2);

    if !needs::tools("version_differences_reproduced_in_both_qemus", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imgs = harness::qemu_imgs();
    let mut mismatches = Vec::new();
    for (i, r) in reproducers().into_iter().enumerate() {
        let img = Img::write(dir.path(), &format!("repro{i}.hds"), r.bytes);
        for q in &imgs {
            for p in harness::compare_with(q, &img) {
                mismatches.push(format!("{} QEMU {}: {p}", r.name, q.version()));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// QEMU 7.2's read-write open (never run: the tests open images read-only): it refuses an
/// unclean image that QEMU 10 repairs, and cuts the file at its own data end.
#[test]
fn read_write_differs_on_an_unclean_image() {
    let bytes = damaged("v2_plain", DefectKind::InuseSet, 0);
    let p72 = qemu::predict_for(&bytes.as_slice(), Version::V7_2).unwrap();
    let p10 = qemu::predict_for(&bytes.as_slice(), Version::V10_0).unwrap();
    assert_eq!(
        p72.read_write,
        qemu::ReadWrite::Refused {
            reason: qemu::QemuReason::Unclean
        }
    );
    assert!(
        matches!(p10.read_write, qemu::ReadWrite::Opens { repairs: true, .. }),
        "{:?}",
        p10.read_write
    );
    assert_eq!(
        p72.render("x").last().map(String::as_str),
        Some("QEMU 7.2 read-write: refuses the image [W1]")
    );
    // Both check exit 2 with "not closed correctly" first.
    for p in [&p72, &p10] {
        let QemuCheck::Completes(c) = &p.check else {
            panic!("{:?}", p.check)
        };
        assert_eq!(c.errors[0], qemu::CheckLine::NotClosed);
    }
}

fn prlimg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `prlimg check --qemu 7.2 --output json` gives the real 7.2's message and `qemu-img check`
/// exit, `--output json` alone the real 10.0's, and `--qemu all` both under `qemu_versions`.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn check_qemu_flag_predicts_each_real_version() {
    if !needs::tools("check_qemu_flag_predicts_each_real_version", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imgs = harness::qemu_imgs();
    for (i, r) in reproducers().into_iter().enumerate() {
        let img = Img::write(dir.path(), &format!("cli{i}.hds"), r.bytes);
        let arg = img.arg();
        let (_, all, _) = prlimg(&["check", "--qemu", "all", "--output", "json", &arg]);
        let all: Value = serde_json::from_str(&all).unwrap();
        assert_eq!(all["qemu"]["version"], "10.0", "{}", r.name);
        for q in &imgs {
            let v = q.version();
            let (_, out, err) = prlimg(&["check", "--qemu", v.name(), "--output", "json", &arg]);
            let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
            assert_eq!(json["qemu"]["version"], v.name());
            assert_eq!(json.get("qemu_versions"), None);
            for key in ["qemu", "qemu_check", "qemu_read_write"] {
                assert_eq!(all["qemu_versions"][v.name()][key], json[key], "{} {v} {key}", r.name);
            }
            let info = q.info(&img.path, harness::TIMEOUT).unwrap();
            let check = q.check(&img.path, harness::TIMEOUT).unwrap();
            let code = |e: parallels_image::oracle::End| e.shell_status().map(i64::from);
            assert_eq!(json["qemu"]["exit_code"].as_i64(), code(info.end), "{} {v}", r.name);
            assert_eq!(
                json["qemu_check"]["exit_code"].as_i64(),
                code(check.end),
                "{} {v}",
                r.name
            );
            // The message after "Could not open 'PATH': ", or the assertion.
            let said = info.stderr.head.first().map(|l| {
                let l = l.strip_prefix("qemu-img: ").unwrap_or(l);
                l.strip_prefix(&format!("Could not open '{arg}': "))
                    .unwrap_or(l)
                    .to_string()
            });
            assert_eq!(
                json["qemu"]["message"].as_str().map(str::to_string),
                said,
                "{} {v}",
                r.name
            );
        }
        if r.name == "data-off-past-eof" {
            let (_, human, _) = prlimg(&["check", "--qemu", "all", &arg]);
            assert!(
                human.contains("qemu-img 7.2 check: exit 3 (0 corruptions, 3 leaked clusters)"),
                "{human}"
            );
            assert!(human.contains("qemu-img check: exit 2 ("), "{human}");
        }
    }
    let (code, _, err) = prlimg(&["check", "--qemu", "8.0", "x.hds"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("QEMU version \"8.0\" is not predicted (expected 7.2 or 10.0), or all"),
        "{err}"
    );
}

/// `prlimg differential --qemu-dir` runs QEMU 7.2 (its version read from `qemu-img --version`)
/// and compares it with the 7.2 prediction: a small campaign agrees.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn differential_campaign_against_qemu_7_2_agrees() {
    let Some(q) = harness::qemu_7_2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let qemu_dir = q.program().parent().unwrap().to_str().unwrap().to_string();
    let (code, _, err) = prlimg(&[
        "differential",
        "--qemu-dir",
        &qemu_dir,
        "--seed",
        "72",
        "--count",
        "60",
        "-j",
        "2",
        "--timeout",
        "120",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("predicted as QEMU 7.2"), "{err}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["programs"]["qemu_version"], "7.2");
    assert_eq!(report["verdicts"], serde_json::json!({ "agrees": 60 }));
    // A folder without QEMU is refused, naming it.
    let (code, _, err) = prlimg(&[
        "differential",
        "--qemu-dir",
        dir.path().to_str().unwrap(),
        "--count",
        "1",
        "--out",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--qemu-dir: cannot run"), "{err}");
}
