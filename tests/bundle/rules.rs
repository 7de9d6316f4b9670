//! The D rules of `spec/bundles.md`, one test each (named `dN_…`): a valid bundle is built,
//! exactly one rule is broken, and the exact violation is asserted.

use std::fs;
use std::path::{Path, PathBuf};

use parallels_image::{
    bundle::Bundle, bundle::BundleError, bundle::BundleFinding, bundle::BundleRule, bundle::BundleViolation,
    bundle::Descriptor, bundle::ImageType, Severity, Verdict,
};

use crate::common::*;

/// A valid bundle: two snapshots (root guid(1), top guid(2)), two storages split at 1 MiB,
/// 2 MiB disk, 64 KiB clusters.
fn valid(tmp: &Path) -> PathBuf {
    let dir = tmp.join("v.hdd");
    parallels_image::bundle::BundleBuilder::new(2 * MIB)
        .cluster_size(64 << 10)
        .split_at(vec![MIB])
        .snapshot(snap(guid(1), None, vec![fill(0, 2 * MIB, 0x11)]))
        .snapshot(snap(guid(2), Some(guid(1)), vec![fill(MIB, 64 << 10, 0x22)]))
        .create(&dir, false)
        .unwrap();
    dir
}

fn file(g: u128, seg: usize) -> String {
    format!("v.hdd.{seg}.{{{}}}.hds", guid(g).hyphenated())
}

fn edit_xml(dir: &Path, f: impl FnOnce(&mut Descriptor)) {
    let mut d = Bundle::open(dir).unwrap().descriptor().clone();
    f(&mut d);
    fs::write(dir.join("DiskDescriptor.xml"), d.to_xml()).unwrap();
}

/// The descriptor findings after `f` edits a valid bundle's descriptor.
fn findings_after(f: impl FnOnce(&mut Descriptor)) -> Vec<BundleViolation> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    edit_xml(&dir, f);
    descriptor_findings(&dir)
}

fn descriptor_findings(dir: &Path) -> Vec<BundleViolation> {
    Bundle::open(dir)
        .unwrap()
        .validate()
        .findings
        .into_iter()
        .filter_map(|f| match f {
            BundleFinding::Descriptor(v) => Some(v),
            BundleFinding::Image { .. } => None,
        })
        .collect()
}

fn open_error(text: &str) -> BundleViolation {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    fs::write(dir.join("DiskDescriptor.xml"), text).unwrap();
    match Bundle::open(&dir) {
        Err(BundleError::Invalid { violation, .. }) => violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

/// A labelled case of a descriptor rule: an edit of a valid bundle's descriptor and the exact
/// findings it leads to.
type Case = (&'static str, fn(&mut Descriptor), Vec<BundleViolation>);

/// Each case's edit gives exactly its findings, every one breaking `rule`.
fn assert_cases(rule: BundleRule, cases: Vec<Case>) {
    for (name, edit, want) in cases {
        let got = findings_after(edit);
        assert_eq!(got, want, "{rule} {name}");
        for v in &got {
            assert_eq!(v.rule(), rule, "{rule} {name}: {v:?}");
        }
    }
}

#[test]
fn valid_bundle_has_no_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    assert_eq!(Bundle::open(&dir).unwrap().validate().findings, vec![]);
}

#[test]
fn verdict_is_the_worst_severity_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    let verdict = || Bundle::open(&dir).unwrap().validate().verdict();
    assert_eq!(verdict(), Verdict::Clean);
    // Non-canonical only (D5): still clean.
    edit_xml(&dir, |d| d.disk.padding = Some(1));
    assert_eq!(verdict(), Verdict::Clean);
    // A leak in one image (R20, a trailing cluster nothing references).
    let image = dir.join(file(1, 0));
    let len = fs::metadata(&image).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(len + (64 << 10))
        .unwrap();
    assert_eq!(verdict(), Verdict::Leaks);
    // And a corruption (D7) over both.
    edit_xml(&dir, |d| {
        d.disk.disk_size = 8192;
        d.disk.cylinders = 16;
    });
    assert_eq!(verdict(), Verdict::Corrupt);
}

#[test]
fn d1_not_xml() {
    let v = open_error("<Parallels_disk_image Version=\"1.0\"><Disk_Parameters>");
    assert!(matches!(v, BundleViolation::NotXml { line: 1, .. }), "{v:?}");
    assert_eq!(v.rule(), BundleRule::D1);
    assert!(matches!(open_error("\u{0}\u{ff}"), BundleViolation::NotXml { .. }));
}

#[test]
fn d2_required_elements() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    let xml = fs::read_to_string(dir.join("DiskDescriptor.xml")).unwrap();
    let v = open_error(&xml.replace("<Sectors>32</Sectors>", ""));
    assert_eq!(
        v,
        BundleViolation::MissingElement {
            path: "Parallels_disk_image/Disk_Parameters/Sectors".into()
        }
    );
    assert_eq!(v.rule(), BundleRule::D2);
    let v = open_error(&xml.replacen("<Type>Compressed</Type>", "<Type>Sparse</Type>", 1));
    assert_eq!(
        v,
        BundleViolation::BadValue {
            path: "Parallels_disk_image/StorageData/Storage[0]/Image[0]/Type".into(),
            found: "Sparse".into(),
            expected: "Plain or Compressed"
        }
    );
    let v = open_error(&xml.replace("<Start>0</Start>", "<Start>-1</Start>"));
    assert!(
        matches!(v, BundleViolation::BadValue { ref path, .. } if path == "Parallels_disk_image/StorageData/Storage[0]/Start"),
        "{v:?}"
    );
    assert_eq!(
        open_error("<disk/>"),
        BundleViolation::WrongRoot { found: "disk".into() }
    );
}

#[test]
fn d3_version() {
    assert_cases(
        BundleRule::D3,
        vec![
            (
                "version 2.0",
                |d| d.version = Some("2.0".into()),
                vec![BundleViolation::BadVersion {
                    found: Some("2.0".into()),
                }],
            ),
            (
                "no version",
                |d| d.version = None,
                vec![BundleViolation::BadVersion { found: None }],
            ),
        ],
    );
}

#[test]
fn d4_geometry() {
    assert_cases(
        BundleRule::D4,
        vec![(
            "heads 15",
            |d| d.disk.heads = 15,
            vec![BundleViolation::GeometryMismatch {
                cylinders: 8,
                heads: 15,
                sectors: 32,
                product: 3840,
                disk_size: 4096,
            }],
        )],
    );
}

#[test]
fn d5_padding() {
    assert_eq!(BundleRule::D5.severity(), Severity::NonCanonical);
    assert_cases(
        BundleRule::D5,
        vec![(
            "padding 1",
            |d| d.disk.padding = Some(1),
            vec![BundleViolation::Padding { found: 1 }],
        )],
    );
}

#[test]
fn d6_storages_contiguous() {
    assert_cases(
        BundleRule::D6,
        vec![
            (
                "gap (the second storage starts one cluster late)",
                |d| d.storages[1].start = 2176,
                vec![BundleViolation::StorageNotContiguous {
                    storage: 1,
                    start: 2176,
                    expected: 2048,
                }],
            ),
            (
                "first not at 0",
                |d| d.storages[0].start = 128,
                vec![BundleViolation::StorageNotContiguous {
                    storage: 0,
                    start: 128,
                    expected: 0,
                }],
            ),
        ],
    );
}

#[test]
fn d7_storages_end_at_disk_size() {
    assert_cases(
        BundleRule::D7,
        vec![(
            "disk_size 8192 (geometry kept consistent so only D7 breaks)",
            |d| {
                d.disk.disk_size = 8192;
                d.disk.cylinders = 16;
            },
            vec![BundleViolation::StoragesEnd {
                end: 4096,
                disk_size: 8192,
            }],
        )],
    );
}

#[test]
fn d8_blocksize() {
    let mismatch = |file| BundleViolation::BlocksizeMismatch {
        storage: 0,
        file,
        tracks: 128,
        blocksize: 256,
    };
    assert_cases(
        BundleRule::D8,
        vec![
            (
                "blocksize 256 against tracks 128",
                |d| d.storages[0].blocksize = 256,
                vec![mismatch(file(1, 0)), mismatch(file(2, 0))],
            ),
            (
                "blocksize 0",
                |d| d.storages[1].blocksize = 0,
                vec![BundleViolation::ZeroBlocksize { storage: 1 }],
            ),
        ],
    );
}

#[test]
fn d9_expanding_image_covers_storage() {
    let too_small = |file| BundleViolation::ImageTooSmall {
        storage: 1,
        file,
        nb_sectors: 2048,
        needed: 4096,
    };
    assert_cases(
        BundleRule::D9,
        vec![(
            "storage 1 and the disk grown by 1 MiB: its images hold only 1 MiB",
            |d| {
                d.storages[1].end = 6144;
                d.disk.disk_size = 6144;
                d.disk.cylinders = 12;
            },
            vec![too_small(file(1, 1)), too_small(file(2, 1))],
        )],
    );
}

#[test]
fn d10_plain_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p.hdd");
    parallels_image::bundle::BundleBuilder::new(2 * MIB)
        .plain_root(true)
        .create(&dir, false)
        .unwrap();
    let raw = dir.join(format!(
        "p.hdd.0.{{{}}}.hds",
        parallels_image::bundle::DEFAULT_TOP_GUID.hyphenated()
    ));
    fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    assert_eq!(
        descriptor_findings(&dir),
        vec![BundleViolation::PlainSizeMismatch {
            storage: 0,
            file: raw.file_name().unwrap().to_string_lossy().into_owned(),
            len: MIB,
            expected: 2 * MIB
        }]
    );
}

#[test]
fn d11_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    fs::remove_file(dir.join(file(2, 1))).unwrap();
    assert_eq!(
        descriptor_findings(&dir),
        vec![BundleViolation::MissingFile {
            storage: 1,
            image: 1,
            file: file(2, 1),
            reason: "No such file or directory".into()
        }]
    );
}

#[test]
fn d12_shared_file() {
    assert_cases(
        BundleRule::D12,
        vec![(
            "storage 1 names storage 0's file",
            |d| d.storages[1].images[0].file = file(1, 0),
            vec![BundleViolation::SharedFile {
                storage: 1,
                image: 0,
                file: file(1, 0),
                first_storage: 0,
                first_image: 0,
            }],
        )],
    );
}

#[test]
fn d13_outside_bundle() {
    assert_cases(
        BundleRule::D13,
        vec![(
            "an absolute path",
            |d| d.storages[1].images[0].file = "/etc/hostname".into(),
            vec![BundleViolation::OutsideBundle {
                storage: 1,
                image: 0,
                file: "/etc/hostname".into(),
            }],
        )],
    );
}

#[test]
fn d14_guid_well_formed() {
    let v = findings_after(|d| {
        d.snapshots.shots[1].guid = "11110000-0000-4000-8000-000000000002".into();
    });
    // The top's GUID no longer parses, so the top (TopGUID) is missing too, and each storage's
    // image for it names no snapshot.
    assert_eq!(
        v[0],
        BundleViolation::BadGuid {
            path: "Snapshots/Shot[1]/GUID".into(),
            found: "11110000-0000-4000-8000-000000000002".into()
        }
    );
    assert_eq!(v[0].rule(), BundleRule::D14);
}

#[test]
fn d15_guids_unique() {
    let v = findings_after(|d| {
        let s = d.snapshots.shots[1].clone();
        d.snapshots.shots.push(s);
    });
    assert_eq!(
        v,
        vec![BundleViolation::DuplicateGuid {
            path: "Snapshots/Shot[2]/GUID".into(),
            guid: format!("{{{}}}", guid(2).hyphenated()),
            first: "Snapshots/Shot[1]/GUID".into()
        }]
    );
}

#[test]
fn d16_one_image_per_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    edit_xml(&dir, |d| {
        d.storages[1].images.pop();
    });
    fs::remove_file(dir.join(file(2, 1))).unwrap();
    assert_eq!(
        descriptor_findings(&dir),
        vec![BundleViolation::NoImageForSnapshot {
            storage: 1,
            snapshot: format!("{{{}}}", guid(2).hyphenated())
        }]
    );
}

#[test]
fn d17_exactly_one_root() {
    let null = format!("{{{}}}", uuid::Uuid::nil().hyphenated());
    let v = findings_after(|d| d.snapshots.shots[1].parent = null.clone());
    assert_eq!(
        v,
        vec![BundleViolation::RootCount {
            roots: vec![
                format!("{{{}}}", guid(1).hyphenated()),
                format!("{{{}}}", guid(2).hyphenated())
            ]
        }]
    );
}

#[test]
fn d18_parent_exists() {
    let v = findings_after(|d| d.snapshots.shots[1].parent = format!("{{{}}}", guid(7).hyphenated()));
    assert_eq!(
        v,
        vec![BundleViolation::MissingParent {
            shot: format!("{{{}}}", guid(2).hyphenated()),
            parent: format!("{{{}}}", guid(7).hyphenated())
        }]
    );
}

#[test]
fn d19_no_cycles() {
    // Root -> 2, and 2's parent is 3, 3's parent is 2: a cycle beside the root.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v.hdd");
    parallels_image::bundle::BundleBuilder::new(MIB)
        .cluster_size(64 << 10)
        .snapshot(snap(guid(1), None, vec![]))
        .snapshot(snap(guid(2), Some(guid(3)), vec![]))
        .snapshot(snap(guid(3), Some(guid(2)), vec![]))
        .create(&dir, false)
        .unwrap();
    let g = |n| format!("{{{}}}", guid(n).hyphenated());
    assert_eq!(
        descriptor_findings(&dir),
        vec![BundleViolation::Cycle {
            cycle: vec![g(2), g(3), g(2)]
        }]
    );
    match Bundle::open(&dir).unwrap().disk(None) {
        Err(BundleError::Invalid { violation, .. }) => assert_eq!(
            violation,
            BundleViolation::Cycle {
                cycle: vec![g(3), g(2), g(3)]
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn d20_top_exists() {
    let v = findings_after(|d| d.snapshots.top_guid = None);
    assert_eq!(
        v,
        vec![BundleViolation::MissingTop {
            top: "{5fbaabe3-6958-40ff-92a7-860e329aab41}".into(),
            from_top_guid: false
        }]
    );
    let v = findings_after(|d| d.snapshots.top_guid = Some("{704718e1-2314-44c8-9087-d78ed36b0f4e}".into()));
    assert_eq!(v, vec![BundleViolation::BackupTop]);
}

#[test]
fn d21_only_root_plain() {
    let v = findings_after(|d| d.storages[0].images[1].kind = ImageType::Plain);
    assert_eq!(
        v[0],
        BundleViolation::PlainOverlay {
            storage: 0,
            image: 1,
            guid: format!("{{{}}}", guid(2).hyphenated())
        }
    );
    assert_eq!(v[0].rule(), BundleRule::D21);
}

#[test]
fn d22_marker_present() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    fs::remove_file(dir.join("v.hdd")).unwrap();
    assert_eq!(
        descriptor_findings(&dir),
        vec![BundleViolation::MissingMarker { name: "v.hdd".into() }]
    );
}

#[test]
fn image_findings_say_which_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path());
    // Mark the top image of segment 1 as not closed (R7).
    let path = dir.join(file(2, 1));
    let mut bytes = fs::read(&path).unwrap();
    bytes[44..48].copy_from_slice(&0x746F_6E59u32.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let report = Bundle::open(&dir).unwrap().validate();
    assert_eq!(report.codes(), vec!["R7"]);
    match &report.findings[..] {
        [f @ BundleFinding::Image {
            storage: 1, image: 1, ..
        }] => {
            assert_eq!(f.file().unwrap(), std::path::absolute(&path).unwrap());
            assert_eq!(f.severity(), Severity::Corruption);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spec_lists_every_d_rule_with_a_test() {
    let spec = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/bundles.md")).unwrap();
    let tests = include_str!("rules.rs");
    for r in BundleRule::ALL {
        let head = format!("### {} ", r.code());
        assert!(spec.contains(&head), "spec/bundles.md has no section {head}");
        let test = format!("{}_", r.code().to_lowercase());
        assert!(tests.contains(&format!("fn {test}")), "no test fn {test}…");
        assert!(
            spec.contains(&format!("rules::{test}")),
            "spec/bundles.md names no test for {r}"
        );
    }
}
