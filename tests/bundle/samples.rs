//! The two Parallels Desktop bundles (`../shared/samples/parallels-desktop/`): they read back
//! to their known contents (MiB i holds byte i) and check clean.

use parallels_image::{bundle::Bundle, bundle::GuestDisk, bundle::ImageType, bundle::DEFAULT_TOP_GUID};

use crate::common::*;

#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples; with CI=true it runs and fails"
)]
fn pd_expanding_sample_reads_back_and_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(dir) = pd_sample(
        "pd_expanding_sample_reads_back_and_checks_clean",
        "expanding.hdd",
        tmp.path(),
    ) else {
        return;
    };
    let bundle = Bundle::open(&dir).unwrap();
    let d = bundle.descriptor();
    assert_eq!(d.disk.disk_size, 204800);
    assert_eq!((d.disk.cylinders, d.disk.heads, d.disk.sectors), (400, 16, 32));
    assert_eq!(d.storages.len(), 1);
    assert_eq!(
        (d.storages[0].start, d.storages[0].end, d.storages[0].blocksize),
        (0, 204800, 2048)
    );
    assert_eq!(d.storages[0].images[0].kind, ImageType::Compressed);
    // Unknown elements are kept: Encryption, UID, Name, Miscellaneous.
    let names: Vec<&str> = d.disk.extra.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["Encryption", "UID", "Name", "Miscellaneous"]);
    assert_eq!(d.disk.extra[3].children.len(), 13);
    assert_eq!(bundle.chain(None).unwrap(), vec![DEFAULT_TOP_GUID]);

    // Clean: the "pd17" inuse tag is a known writer's (Parallels Desktop), no finding at all.
    let report = bundle.validate();
    assert!(report.is_clean());
    assert_eq!(report.codes(), Vec::<&str>::new());
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    let disk = bundle.disk(None).unwrap();
    assert_eq!(disk.size(), 100 * MIB);
    assert!(read_all(&disk) == pd_expected());
    // 99 clusters of 1 MiB allocated, MiB 0 not.
    let ext = disk.extents();
    assert_eq!(ext[0].start, 0);
    assert_eq!(ext[0].length, MIB);
    assert_eq!(ext[0].data, None);
    let allocated: u64 = ext.iter().filter(|e| e.data.is_some()).map(|e| e.length).sum();
    assert_eq!(allocated, 99 * MIB);
    // The XML opens the same bundle.
    let via_xml = GuestDisk::open(dir.join("DiskDescriptor.xml"), None, Default::default()).unwrap();
    assert_eq!(via_xml.extents(), ext);
}

#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples; with CI=true it runs and fails"
)]
fn pd_plain_sample_reads_back_and_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(dir) = pd_sample("pd_plain_sample_reads_back_and_checks_clean", "plain.hdd", tmp.path()) else {
        return;
    };
    let bundle = Bundle::open(dir.join("DiskDescriptor.xml")).unwrap();
    assert_eq!(bundle.descriptor().storages[0].images[0].kind, ImageType::Plain);
    let report = bundle.validate();
    assert_eq!(report.findings, vec![]);
    let disk = bundle.disk(None).unwrap();
    assert!(read_all(&disk) == pd_expected());
    let ext = disk.extents();
    assert_eq!(ext.len(), 1);
    assert_eq!((ext[0].start, ext[0].length, ext[0].depth), (0, 100 * MIB, 0));
    assert_eq!(ext[0].data.as_ref().map(|m| m.offset), Some(0));
}

#[test]
#[cfg_attr(
    prlimg_no_samples,
    ignore = "needs the sample images in ../shared/samples; with CI=true it runs and fails"
)]
fn pd_descriptor_round_trips_with_unknown_elements() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(dir) = pd_sample(
        "pd_descriptor_round_trips_with_unknown_elements",
        "expanding.hdd",
        tmp.path(),
    ) else {
        return;
    };
    let bundle = Bundle::open(&dir).unwrap();
    let xml = bundle.descriptor().to_xml();
    let again = parallels_image::bundle::Descriptor::parse(&xml).unwrap();
    assert_eq!(&again, bundle.descriptor());
    assert!(xml.contains("<CompatLevel>level2</CompatLevel>"), "{xml}");
    assert!(xml.contains("<Data/>"), "{xml}");
}
