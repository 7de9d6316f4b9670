//! Guest data through snapshot chains and split storages, built by `BundleBuilder`.

use parallels_image::{
    bundle::Bundle, bundle::BundleError, bundle::BundleViolation, bundle::GuestDisk, bundle::Mapping,
};

use crate::common::*;

#[test]
fn chain_reads_newest_delta_then_parent_at_each_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    assert_eq!(bundle.validate().findings, vec![]);
    assert_eq!(bundle.chain(None).unwrap(), vec![guid(3), guid(2), guid(1)]);
    for (upto, g) in [(3, guid(3)), (2, guid(2)), (1, guid(1))] {
        let disk = bundle.disk(Some(g)).unwrap();
        assert!(read_all(&disk) == chain_expected(upto), "snapshot {upto}");
    }
    assert!(read_all(&bundle.disk(None).unwrap()) == chain_expected(3));
}

/// An extent as (start, length, depth, (file, offset)).
type Row = (u64, u64, usize, Option<(usize, u64)>);

#[test]
fn chain_map_names_depth_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let disk = Bundle::open(&dir).unwrap().disk(None).unwrap();
    let names: Vec<String> = disk
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let n = |g: u128| format!("c.hdd.0.{{{}}}.hds", guid(g).hyphenated());
    assert_eq!(names, [n(3), n(2), n(1)]);
    // Each image: header and BAT in cluster 0, data clusters from 64K in guest order.
    let k = 64u64 << 10;
    let ext: Vec<Row> = disk
        .extents()
        .into_iter()
        .map(|e| {
            (
                e.start,
                e.length,
                e.depth,
                e.data.map(|Mapping { file, offset }| (file, offset)),
            )
        })
        .collect();
    assert_eq!(
        ext,
        vec![
            (0, k, 2, Some((2, k))),                // root cluster 0
            (k, k, 0, Some((0, k))),                // top cluster 1
            (2 * k, 6 * k, 2, Some((2, 3 * k))),    // root clusters 2..8
            (8 * k, 9 * k, 1, Some((1, k))),        // middle clusters 8..17
            (17 * k, 15 * k, 2, None),              // nothing until 2M
            (32 * k, 16 * k, 2, Some((2, 17 * k))), // root [2M, 3M)
            (48 * k, 2 * k, 0, Some((0, 2 * k))),   // top clusters 48, 49
            (50 * k, 14 * k, 2, None),
        ]
    );
}

#[test]
fn split_storages_are_stitched_by_start_and_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s.hdd");
    chain_builder()
        .split_at(vec![MIB + (512 << 10), 3 * MIB])
        .create(&dir, false)
        .unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    let d = bundle.descriptor();
    let ranges: Vec<(u64, u64)> = d.storages.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(ranges, [(0, 3072), (3072, 6144), (6144, 8192)]);
    assert_eq!(bundle.validate().findings, vec![]);
    for (upto, g) in [(3, guid(3)), (2, guid(2)), (1, guid(1))] {
        assert!(
            read_all(&bundle.disk(Some(g)).unwrap()) == chain_expected(upto),
            "snapshot {upto}"
        );
    }
    // The second segment's root image holds [2M, 3M) at its own offset 512K.
    let disk = bundle.disk(None).unwrap();
    let e = disk.extents().into_iter().find(|e| e.start == 2 * MIB).unwrap();
    assert_eq!(e.length, MIB);
    let m = e.data.unwrap();
    assert!(disk.files()[m.file]
        .to_string_lossy()
        .ends_with(&format!("s.hdd.1.{{{}}}.hds", guid(1).hyphenated())));
}

#[test]
fn plain_root_under_expanding_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p.hdd");
    chain_builder()
        .plain_root(true)
        .split_at(vec![2 * MIB])
        .create(&dir, false)
        .unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    assert_eq!(bundle.validate().findings, vec![]);
    for (upto, g) in [(3, guid(3)), (2, guid(2)), (1, guid(1))] {
        assert!(
            read_all(&bundle.disk(Some(g)).unwrap()) == chain_expected(upto),
            "snapshot {upto}"
        );
    }
    // Nothing reads as unallocated through a plain root.
    assert!(bundle.disk(None).unwrap().extents().iter().all(|e| e.data.is_some()));
}

#[test]
fn unknown_snapshot_and_lone_image_snapshot_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    match Bundle::open(&dir).unwrap().disk(Some(guid(9))) {
        Err(BundleError::UnknownSnapshot { guid: g, .. }) => assert_eq!(g, guid(9)),
        other => panic!("{other:?}"),
    }
    let hds = dir.join(format!("c.hdd.0.{{{}}}.hds", guid(1).hyphenated()));
    assert!(matches!(
        GuestDisk::open(&hds, Some(guid(1)), Default::default()),
        Err(BundleError::NotABundle { .. })
    ));
    // A lone image is a one-layer disk.
    let lone = GuestDisk::open(&hds, None, Default::default()).unwrap();
    assert!(read_all(&lone) == chain_expected(1));
}

#[test]
fn outside_path_is_reported_not_followed_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    // Move the root image out of the bundle and point the descriptor at it with "..".
    let name = format!("c.hdd.0.{{{}}}.hds", guid(1).hyphenated());
    std::fs::rename(dir.join(&name), tmp.path().join(&name)).unwrap();
    let xml = std::fs::read_to_string(dir.join("DiskDescriptor.xml")).unwrap();
    let xml = xml.replace(&format!("<File>{name}</File>"), &format!("<File>../{name}</File>"));
    std::fs::write(dir.join("DiskDescriptor.xml"), xml).unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    match bundle.disk(None) {
        Err(BundleError::Invalid { violation, .. }) => assert_eq!(
            violation,
            BundleViolation::OutsideBundle {
                storage: 0,
                image: 0,
                file: format!("../{name}")
            }
        ),
        other => panic!("{other:?}"),
    }
    let followed = Bundle::open_with(&dir, parallels_image::bundle::BundleOptions { follow_outside: true }).unwrap();
    assert!(read_all(&followed.disk(None).unwrap()) == chain_expected(3));
    // A symbolic link out of the folder is outside too.
    std::os::unix::fs::symlink(tmp.path().join(&name), dir.join(&name)).unwrap();
    let xml = std::fs::read_to_string(dir.join("DiskDescriptor.xml"))
        .unwrap()
        .replace("../", "");
    std::fs::write(dir.join("DiskDescriptor.xml"), xml).unwrap();
    assert!(matches!(
        Bundle::open(&dir).unwrap().disk(None),
        Err(BundleError::Invalid {
            violation: BundleViolation::OutsideBundle { .. },
            ..
        })
    ));
}

/// Reads that start, end or cross the boundaries between runs of adjacent clusters (one read
/// call per run) give exactly the bytes of the same disk as a single image, at any offset and
/// length.
#[test]
fn chain_reads_across_run_boundaries_equal_the_single_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let chain = Bundle::open(&dir).unwrap().disk(None).unwrap();
    let expected = chain_expected(3);
    let single_path = tmp.path().join("single.hds");
    parallels_image::ImageBuilder::new(4 * MIB)
        .cluster_size(64 << 10)
        .data(0, parallels_image::GuestData::Bytes(expected.clone()))
        .create_file(&single_path, false)
        .unwrap();
    let single = GuestDisk::open_image(&single_path).unwrap();
    assert!(read_all(&single) == expected);
    let k = 64u64 << 10;
    // Every boundary of the chain's extents, and a cluster boundary inside a run.
    let mut points: Vec<u64> = chain.extents().iter().map(|e| e.start).collect();
    points.extend([3 * k, 4 * MIB]);
    for &p in &points {
        for start in [p.saturating_sub(1), p, p + 1, p.saturating_sub(k + 7)] {
            for len in [1u64, 4095, k, k + 1, 3 * k - 5, MIB + 3, 5 * MIB] {
                let mut got = vec![0xAAu8; len as usize];
                chain.read_at(start, &mut got).unwrap();
                let mut want = vec![0u8; len as usize];
                single.read_at(start, &mut want).unwrap();
                assert!(got == want, "chain and single differ at {start} + {len}");
                let end = (start + len).min(4 * MIB);
                if start < end {
                    assert!(
                        got[..(end - start) as usize] == expected[start as usize..end as usize],
                        "at {start} + {len}"
                    );
                }
                assert!(got[(end.max(start) - start) as usize..].iter().all(|&b| b == 0));
            }
        }
    }
}
