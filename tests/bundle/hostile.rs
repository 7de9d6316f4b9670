//! Hostile descriptors: no panic, no hang, no allocation beyond what the input justifies; each
//! rejection typed.

use std::fs;
use std::time::Instant;

use parallels_image::{bundle::Bundle, bundle::BundleError, bundle::BundleViolation, bundle::Descriptor};
use proptest::prelude::*;

use crate::common::*;

fn g(n: u128) -> String {
    format!("{{{}}}", guid(n).hyphenated())
}

fn descriptor_with_shots(shots: &[(String, String)], top: &str, disk_sectors: u64, images: &str) -> String {
    let mut x =
        String::from("<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\"><Disk_Parameters>");
    x.push_str(&format!("<Disk_size>{disk_sectors}</Disk_size><Cylinders>{disk_sectors}</Cylinders><Heads>1</Heads><Sectors>1</Sectors><Padding>0</Padding>"));
    x.push_str("</Disk_Parameters><StorageData><Storage><Start>0</Start>");
    x.push_str(&format!("<End>{disk_sectors}</End><Blocksize>2048</Blocksize>{images}</Storage></StorageData><Snapshots><TopGUID>{top}</TopGUID>"));
    for (s, p) in shots {
        x.push_str(&format!("<Shot><GUID>{s}</GUID><ParentGUID>{p}</ParentGUID></Shot>"));
    }
    x.push_str("</Snapshots></Parallels_disk_image>\n");
    x
}

#[test]
fn long_chains_and_cycles_are_linear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("h.hdd");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("h.hdd"), b"").unwrap();
    let n = 20_000u128;
    // A chain of n snapshots, whose storage has a single image: n-1 D16 findings, fast.
    let null = "{00000000-0000-0000-0000-000000000000}".to_string();
    let mut shots: Vec<(String, String)> = (1..=n)
        .map(|i| (g(i), if i == 1 { null.clone() } else { g(i - 1) }))
        .collect();
    let plain = format!(
        "<Image><GUID>{}</GUID><Type>Plain</Type><File>h.hdd.raw</File></Image>",
        g(1)
    );
    fs::write(dir.join("h.hdd.raw"), vec![0u8; 512]).unwrap();
    fs::write(
        dir.join("DiskDescriptor.xml"),
        descriptor_with_shots(&shots, &g(n), 1, &plain),
    )
    .unwrap();
    let t = Instant::now();
    let bundle = Bundle::open(&dir).unwrap();
    assert_eq!(bundle.chain(None).unwrap().len(), n as usize);
    let report = bundle.validate();
    assert_eq!(report.findings.len(), n as usize - 1);
    assert!(report.codes() == vec!["D16"]);
    // A cycle through all of them (the root's parent is the top): one D19, one D17.
    shots[0].1 = g(n);
    fs::write(
        dir.join("DiskDescriptor.xml"),
        descriptor_with_shots(&shots, &g(n), 1, &plain),
    )
    .unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    let report = bundle.validate();
    let cycles: Vec<_> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            parallels_image::bundle::BundleFinding::Descriptor(BundleViolation::Cycle { cycle }) => Some(cycle.len()),
            _ => None,
        })
        .collect();
    assert_eq!(cycles, vec![n as usize + 1]);
    assert!(matches!(
        bundle.disk(None),
        Err(BundleError::Invalid {
            violation: BundleViolation::Cycle { .. },
            ..
        })
    ));
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
}

#[test]
fn huge_disk_over_a_tiny_plain_file_maps_in_two_extents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("h.hdd");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("h.raw"), vec![7u8; 4096]).unwrap();
    let sectors = 1u64 << 50;
    let plain = format!(
        "<Image><GUID>{}</GUID><Type>Plain</Type><File>h.raw</File></Image>",
        g(1)
    );
    let shots = vec![(g(1), "{00000000-0000-0000-0000-000000000000}".to_string())];
    fs::write(
        dir.join("DiskDescriptor.xml"),
        descriptor_with_shots(&shots, &g(1), sectors, &plain),
    )
    .unwrap();
    let disk = Bundle::open(&dir).unwrap().disk(None).unwrap();
    let e = disk.extents();
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].length, e[1].length, e[1].data.clone()),
        (4096, (sectors << 9) - 4096, None)
    );
    let mut buf = [1u8; 8];
    disk.read_at(4092, &mut buf).unwrap();
    assert_eq!(buf, [7, 7, 7, 7, 0, 0, 0, 0]);
    // Sector counts whose byte count overflows are refused at open (D2).
    let xml = descriptor_with_shots(&shots, &g(1), u64::MAX / 256, &plain);
    assert!(matches!(Descriptor::parse(&xml), Err(BundleViolation::BadValue { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any text put in place of any element's value (or markup) parses or fails with a typed
    /// D1/D2 violation, and what parses validates without panicking.
    #[test]
    fn mutated_descriptors_never_panic(which in 0usize..64, junk in "[<>{}/a-f0-9&;-]{0,40}") {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c.hdd");
        chain_builder().split_at(vec![MIB]).create(&dir, false).unwrap();
        let xml = fs::read_to_string(dir.join("DiskDescriptor.xml")).unwrap();
        // Replace the text of the which-th element that has text.
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let b = xml.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'>' {
                if let Some(end) = xml[i + 1..].find('<') {
                    if end > 0 && !xml[i + 1..i + 1 + end].trim().is_empty() {
                        pieces.push((i + 1, i + 1 + end));
                    }
                }
            }
            i += 1;
        }
        let (s, e) = pieces[which % pieces.len()];
        let mutated = format!("{}{}{}", &xml[..s], junk, &xml[e..]);
        fs::write(dir.join("DiskDescriptor.xml"), &mutated).unwrap();
        match Bundle::open(&dir) {
            Ok(bundle) => {
                let _ = bundle.validate();
                if let Ok(disk) = bundle.disk(None) {
                    let _ = disk.extents();
                }
            }
            Err(BundleError::Invalid { violation, .. }) => {
                prop_assert!(matches!(violation.rule(), parallels_image::bundle::BundleRule::D1 | parallels_image::bundle::BundleRule::D2));
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}
