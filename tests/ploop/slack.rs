//! ploop's check reads every 4-byte slot from the end of the BAT up to the data area as a BAT
//! entry (issue 13, item 5). A non-zero slot there is reported by this crate's check (R44,
//! `BatSlackNonZero`) and by ploop's, and the prediction says what ploop does.

use parallels_image::{ploop::predict_ploop, validate, GuestData, Image, ImageBuilder, Violation};

use crate::corpus::{KIB, MIB};
use crate::fixtures::needs;
use crate::harness::{differences, observe, scratch};

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn nonzero_slots_before_the_data_area_are_flagged_here_and_by_ploop() {
    let Some(bin) = needs::ploop_drivers("nonzero_slots_before_the_data_area_are_flagged_here_and_by_ploop") else {
        return;
    };
    let dir = scratch();
    // v2, 64 KiB clusters, a 1 MiB disk: 16 entries end at byte 128, the data area starts at
    // 64 KiB; BAT[0] = 1 (the first data cluster).
    let (base, _) = ImageBuilder::new(MIB)
        .cluster_size(64 * KIB)
        .data(0, GuestData::Fill { len: 4096, byte: 0x5a })
        .to_vec()
        .unwrap();
    let findings = |bytes: &[u8]| validate(&Image::parse(&bytes).unwrap()).unwrap().findings;
    assert_eq!(findings(&base), vec![]);
    let path = dir.path().join("slack.hds");
    std::fs::write(&path, &base).unwrap();
    let o = observe(&bin, &path);
    assert_eq!((o.check.rc, o.check.messages.len()), (Some(0), 0), "the base");

    // (slot offset, value, ploop's check rc, its first messages): a copy of BAT[0] (ploop: a
    // block used twice), an entry past the end of the file, a value in the last slot before the
    // data area (ploop: clusters past the disk).
    let cases: [(u64, u32, Option<i32>, &[&str]); 3] = [
        (
            128,
            1,
            Some(11),
            &["Block 1 is used more than once, vsec=16... ", "FATAL"],
        ),
        (
            464,
            1000,
            Some(11),
            &["Data cluster (100) beyond block device size... ", "Skipped"],
        ),
        (
            64 * KIB - 4,
            0x0100_0000,
            Some(11),
            &["Data cluster (16367) beyond block device size... ", "Skipped"],
        ),
    ];
    for (at, value, rc, first) in cases {
        let mut bytes = base.clone();
        bytes[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
        let v: Vec<Violation> = findings(&bytes).into_iter().map(|f| f.violation).collect();
        assert_eq!(
            v,
            vec![Violation::BatSlackNonZero {
                offset: at + value.trailing_zeros() as u64 / 8,
                found: (value >> (value.trailing_zeros() / 8 * 8)) as u8,
                count: 1,
            }],
            "slot at {at}"
        );
        std::fs::write(&path, &bytes).unwrap();
        let o = observe(&bin, &path);
        eprintln!(
            "slot {at} = {value}: ploop check {:?} {:?}",
            o.check.rc, o.check.messages
        );
        assert_eq!(o.check.rc, rc, "slot at {at}: {:?}", o.check.messages);
        assert!(
            o.check.messages.iter().zip(first).all(|(m, f)| m == f),
            "slot at {at}: {:?}",
            o.check.messages
        );
        let predicted = predict_ploop(&bytes, &path.display().to_string()).unwrap();
        assert_eq!(differences(&predicted, &o), Vec::<String>::new(), "slot at {at}");
    }
}
