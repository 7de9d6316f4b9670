//! The three sample images from QEMU's test suite (`../shared/samples/qemu/*.bz2`), read from
//! the shared folder beside the repository and decompressed here; never copied into the repo.

use std::io::Read;

use parallels_image::{Image, Variant};

use crate::fixtures::needs;

/// The decompressed sample, or `None` (with a message) when the samples are not there. Under
/// CI=true a missing sample fails the test.
fn sample(name: &str) -> Option<Vec<u8>> {
    let path = needs::qemu_samples(name)?.join(format!("{name}.bz2"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    bzip2::read::BzDecoder::new(file)
        .read_to_end(&mut out)
        .expect("the sample decompresses");
    Some(out)
}

/// Asserts the 2 MiB, 64 KiB-cluster sample layout: four clusters at `offsets`, filled with
/// 0x11, 0x22, 0x33, 0x44, the rest of the disk unallocated.
fn check_four_clusters(img: &[u8], variant: Variant, bat: [u32; 4]) {
    assert_eq!(img.len(), 327680);
    let report = parallels_image::validate(&Image::parse(&img).unwrap()).unwrap();
    assert_eq!(report.findings, vec![]);
    let image = parallels_image::open(&img).expect("the sample is valid");
    let h = image.header();
    assert_eq!(h.variant, variant);
    assert_eq!(h.cluster_size(), 65536);
    assert_eq!(h.bat_entries, 32);
    assert_eq!(h.virtual_size(), 2 << 20);
    assert_eq!(h.data_start(), 65536);
    assert!(image.extension().is_none());
    assert_eq!(image.bat().iter().take(5).collect::<Vec<_>>()[..4], bat);
    assert!(image.bat().iter().skip(4).all(|e| e == 0));
    for (i, byte) in [0x11u8, 0x22, 0x33, 0x44].into_iter().enumerate() {
        let i = i as u32;
        assert_eq!(image.cluster_offset(i), Some(65536 * (u64::from(i) + 1)));
        let mut buf = vec![0u8; 65536];
        image.read_guest(u64::from(i) * 65536, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == byte), "guest cluster {i}");
    }
    let mut rest = vec![0xffu8; (2 << 20) - 4 * 65536];
    image.read_guest(4 * 65536, &mut rest).unwrap();
    assert!(rest.iter().all(|&b| b == 0));
}

#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn sample_v1() {
    let Some(img) = sample("parallels-v1") else { return };
    check_four_clusters(&img, Variant::V1, [0x80, 0x100, 0x180, 0x200]);
}

#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn sample_v2() {
    let Some(img) = sample("parallels-v2") else { return };
    check_four_clusters(&img, Variant::V2, [1, 2, 3, 4]);
}

/// Virtuozzo's image: v2, 64 GiB in 1 MiB clusters, empty BAT, inuse "v2.1", extension at
/// sector 4096 (2 MiB), one bitmap of 128-sector granules whose L1[0] = 2048 (1 MiB).
///
/// No finding, and each rule says why: data_off 2048 sectors is the end of the 65536-entry BAT
/// (byte 262208) rounded up to a cluster; "v2.1" is a known inuse value; the BAT is empty; the
/// extension cluster is aligned, after the BAT, and ends exactly at the end of the file (3 MiB),
/// so nothing leaks; its magic and MD5 hold; the bitmap record has data_size 40 = 32 + 8 * 1;
/// size 0x8000000 = nb_sectors; granularity 128 is a power of two; l1_size 1 = ceil(1048576
/// granules / 8388608 bits per cluster); L1[0] = 1 MiB is aligned, inside the file and overlaps
/// neither the BAT area nor the extension; the 1048576 bits fill 131072 bytes of that cluster and
/// the rest of it is zero (no trailing bits); one bitmap, so no duplicate id.
#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn sample_with_bitmap() {
    let Some(img) = sample("parallels-with-bitmap") else {
        return;
    };
    assert_eq!(img.len(), 3 << 20);
    let report = parallels_image::validate(&Image::parse(&img).unwrap()).unwrap();
    assert_eq!(report.findings, vec![]);
    let image = parallels_image::open(&img).expect("the sample is valid");
    let h = image.header();
    assert_eq!(h.variant, Variant::V2);
    assert_eq!(h.cluster_size(), 1 << 20);
    assert_eq!(h.virtual_size(), 64 << 30);
    assert_eq!(h.raw.inuse.get(), 0x312e_3276);
    assert_eq!(h.ext_offset(), Some(2 << 20));
    assert_eq!(image.allocated_clusters(), 0);
    let bitmaps = image.bitmaps();
    assert_eq!(bitmaps.len(), 1);
    let b = bitmaps[0];
    assert_eq!(b.name(), "e4f2eed0-37fe-4539-b50b-85d2e7fd235f");
    assert_eq!(b.granularity_bytes(), 65536);
    assert_eq!(b.granules(), 1 << 20);
    assert_eq!(b.l1().iter().collect::<Vec<_>>(), vec![2048]);
    assert_eq!(
        b.dirty_extents().unwrap(),
        vec![(327680, 131072), (655360, 196608), (1966080, 65536)]
    );
    assert_eq!(b.dirty_bytes().unwrap(), 6 * 65536);
    // Granules 5-6, 10-12 and 30 in LSB-first order.
    let ser = b.serialized().unwrap();
    assert_eq!(ser.len(), 131072);
    assert_eq!(ser[..4], [0x60, 0x1c, 0x00, 0x40]);
    assert!(ser[4..].iter().all(|&x| x == 0));
}
