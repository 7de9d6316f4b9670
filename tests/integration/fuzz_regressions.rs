//! Inputs the fuzz targets (`fuzz/`) found, each with the exact outcome it must have now.
//!
//! Each test holds the input bytes inline and rebuilds what the target's harness builds from them.

use std::borrow::Cow;

use binrw::BinRead;
use parallels_image::raw::extension::{checksum, ExtensionCluster, RawExtHeader, EXT_MAGIC};
use parallels_image::{Extension, ListEnd};

/// The `extension` target's harness: magic, the MD5 of the rest, the body, zero padding.
fn extension_cluster(body: &[u8], cluster_size: usize) -> Vec<u8> {
    crate::fixtures::ext_cluster_of(body, cluster_size as u64)
}

/// fuzz target `extension`, crash-93c73688a2a2ef745e2b45a6c8bd426983513492: an end record (magic
/// 0) whose `data_size` is 0xfffffff9. The walk (like QEMU) ends the list at the magic; the binrw
/// model read the end record's "data" and failed. It now ends at the magic too.
#[test]
fn end_record_with_huge_data_size_ends_the_list_in_both_parsers() {
    let body = [
        0, 0, 0, 0, 0, 0, 0, 0, // magic 0: end of features
        0, 0, 0, 0, 0, 0, 0, 0, // flags
        0xf9, 0xff, 0xff, 0xff, // data_size
        0x00, 0x41, 0x0a, // 3 of the 4 unused bytes
    ];
    let cluster = extension_cluster(&body, 4096);
    let ext = Extension::new(0, 4096, Cow::Borrowed(&cluster));
    assert!(ext.features().is_empty());
    assert_eq!(ext.end(), ListEnd::EndRecord { offset: 24 });

    let model = ExtensionCluster::read(&mut binrw::io::Cursor::new(&cluster[..])).expect("the cluster reads");
    let expected_sum: [u8; 16] = cluster[8..24].try_into().unwrap();
    assert_eq!(
        model,
        ExtensionCluster {
            header: RawExtHeader {
                magic: EXT_MAGIC.into(),
                checksum: expected_sum
            },
            features: Vec::new(),
        }
    );
    // Written back, the end record is canonical: all zeros.
    let written = model.to_cluster(4096).unwrap();
    assert_eq!(&written[..8], &EXT_MAGIC.to_le_bytes());
    assert!(written[24..].iter().all(|&b| b == 0));
    assert_eq!(&written[8..24], &checksum(&[0u8; 4096 - 24]));
}
