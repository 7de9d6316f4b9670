//! `Prediction::render`, the text `prlimg check` prints under its summary (issue 12, items 4
//! and 5): "undefined" is not "cannot open", and the predicted ERROR lines are shown, capped
//! with the count of the rest.

use parallels_image::qemu::{self, CheckLine, QemuCheck, SHOWN_ERROR_LINES};
use parallels_image::{GuestData, ImageBuilder};

use crate::catalogue::cases;
use crate::fixtures::needs;
use crate::harness::{compare_with_qemu, Img};

const NOT_A_PROMISE: &str = "the result depends on memory past QEMU's buffer; what it did on one machine is no promise";

/// A feature list with no end record: QEMU reads past its buffer. The text says so, for the
/// open and for `qemu-img check`, and never "cannot open".
#[test]
fn undefined_is_not_cannot_open() {
    let (_, _, bytes) = cases().into_iter().find(|c| c.1 == "ext_no_end_full").unwrap();
    let p = qemu::predict(&bytes.as_slice()).unwrap();
    let lines = p.render("x.hds");
    assert!(lines[0].starts_with("QEMU 10: undefined: "), "{lines:?}");
    assert!(lines[0].ends_with(&format!("; {NOT_A_PROMISE}")), "{lines:?}");
    assert_eq!(
        lines[1],
        format!("qemu-img check: undefined, as the open ({NOT_A_PROMISE})")
    );
    assert!(!lines.iter().any(|l| l.contains("cannot open")), "{lines:?}");
}

/// Eighteen duplicate BAT entries: the first ten ERROR lines are shown, then the count of the
/// other eight; the prediction holds every line (QEMU prints them all).
#[test]
fn error_lines_are_shown_and_capped() {
    // v2, 64 KiB clusters, 2 MiB: data in guest clusters 0 and 1 (host clusters 1 and 2).
    let (mut bytes, _) = ImageBuilder::new(2 << 20)
        .cluster_size(64 << 10)
        .data(0, GuestData::Fill { len: 512, byte: 1 })
        .data(64 << 10, GuestData::Fill { len: 512, byte: 2 })
        .to_vec()
        .unwrap();
    // Entries 1..=18 point at host cluster 1 too; entry 19, the last, at host cluster 2.
    let put = |b: &mut Vec<u8>, i: usize, v: u32| b[64 + 4 * i..68 + 4 * i].copy_from_slice(&v.to_le_bytes());
    for i in 1..=18 {
        put(&mut bytes, i, 1);
    }
    put(&mut bytes, 19, 2);
    let p = qemu::predict(&bytes.as_slice()).unwrap();
    let QemuCheck::Completes(c) = &p.check else {
        panic!("{:?}", p.check)
    };
    let all: Vec<CheckLine> = (1..=18).map(|index| CheckLine::Duplicate { index }).collect();
    assert_eq!(all[17].to_string(), "ERROR duplicate offset in BAT entry 18");
    assert_eq!((&c.errors, c.errors_omitted, c.corruptions), (&all, 0, 18));
    let mut want = vec![
        "QEMU 10: opens the image".to_string(),
        "qemu-img check: exit 2 (18 corruptions, 0 leaked clusters)".to_string(),
    ];
    want.extend(all[..SHOWN_ERROR_LINES].iter().map(|l| format!("    {l}")));
    want.push("    ... and 8 more ERROR lines".into());
    want.push("QEMU 10 read-write: repairs it in place".into());
    assert_eq!(p.render("x.hds"), want);

    if !needs::tools("error_lines_are_shown_and_capped", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = Img::write(dir.path(), "dups.hds", bytes);
    assert_eq!(compare_with_qemu(&img), Vec::<String>::new());
}
