//! The Format Extension cluster: the zero-copy walk and the binrw grammar on the same bytes.
//!
//! The input is the cluster body after the 24-byte header. The harness completes the cluster
//! (magic, the correct MD5, zero padding) so that every input reaches the feature grammar. The
//! cluster is 4096 bytes, or 65536 for longer inputs.
//!
//! Oracles:
//! - walking only the bytes present (the rest reading as zeros, as past the end of a file) gives
//!   the same result as walking the zero-padded cluster;
//! - binrw reads the cluster exactly when the walk ends on an end record and every bitmap record
//!   holds its header and L1 table, and then both see the same records at the same offsets;
//! - a canonical cluster (zero end record, zero padding) is written back byte for byte.
#![no_main]

use std::borrow::Cow;

use binrw::BinRead;
use libfuzzer_sys::fuzz_target;
use parallels_image::raw::bitmap::BITMAP_HEADER_SIZE;
use parallels_image::raw::extension::{checksum, ExtensionCluster, EXT_HEADER_SIZE, EXT_MAGIC};
use parallels_image::raw::feature::{FeatureBody, FEATURE_DIRTY_BITMAP, FEATURE_HEADER_SIZE};
use parallels_image::{Extension, ListEnd};

fuzz_target!(|body: &[u8]| {
    let cs = if body.len() <= 4096 - EXT_HEADER_SIZE {
        4096
    } else {
        65536
    };
    let body = &body[..body.len().min(cs - EXT_HEADER_SIZE)];
    let mut cluster = vec![0u8; cs];
    cluster[..8].copy_from_slice(&EXT_MAGIC.to_le_bytes());
    cluster[EXT_HEADER_SIZE..EXT_HEADER_SIZE + body.len()].copy_from_slice(body);
    let sum = checksum(&cluster[EXT_HEADER_SIZE..]);
    cluster[8..24].copy_from_slice(&sum);

    let file_offset = 3 * cs as u64;
    let full = Extension::new(file_offset, cs as u64, Cow::Borrowed(&cluster));
    assert_eq!(full.magic(), EXT_MAGIC);
    assert_eq!(full.stored_checksum(), sum);
    assert_eq!(full.computed_checksum(), sum);
    assert_eq!(full.bytes(), &cluster[..]);

    // The same cluster cut short: the missing bytes are zeros, so nothing may change.
    let present = EXT_HEADER_SIZE + body.len();
    let short = Extension::new(file_offset, cs as u64, Cow::Borrowed(&cluster[..present]));
    assert_eq!(short.features(), full.features());
    assert_eq!(short.end(), full.end());
    assert_eq!(short.computed_checksum(), sum);
    assert_eq!(short.list_end(), full.list_end());

    // The walk's own invariants.
    let mut prev_end = EXT_HEADER_SIZE as u64;
    for (i, f) in full.features().iter().enumerate() {
        assert_eq!(f.index, i);
        assert!(f.offset >= prev_end && f.offset % 8 == 0 && f.offset - prev_end < 8);
        assert!(f.data_range().end <= cs as u64);
        assert_ne!(f.header.magic.get(), 0);
        prev_end = f.data_range().end;
    }
    assert!(full.list_end() <= cs as u64);

    let read = ExtensionCluster::read(&mut binrw::io::Cursor::new(&cluster[..]));
    let sound_bitmaps = full.features().iter().all(|f| {
        f.header.magic.get() != FEATURE_DIRTY_BITMAP
            || f.header.flags.get() != 0
            || (f.header.data_size.get() as usize >= BITMAP_HEADER_SIZE && {
                let data = full.slice(f.data_range());
                let l1_size = u32::from_le_bytes(data[28..32].try_into().unwrap());
                u64::from(f.header.data_size.get()) >= BITMAP_HEADER_SIZE as u64 + 8 * u64::from(l1_size)
            })
    });
    let end_record = match full.end() {
        ListEnd::EndRecord { offset } => Some(offset),
        _ => None,
    };
    let expect_ok = end_record.is_some() && sound_bitmaps;
    let model = match read {
        Ok(model) if expect_ok => model,
        Err(_) if !expect_ok => return,
        other => panic!(
            "binrw read gave {other:?}, the walk ended {:?} (bitmaps sound: {sound_bitmaps})",
            full.end()
        ),
    };
    let end = end_record.unwrap();

    assert_eq!(model.header.magic.get(), EXT_MAGIC);
    assert_eq!(model.header.checksum, sum);
    assert_eq!(model.features.len(), full.features().len());
    for (rec, entry) in model.features.iter().zip(full.features()) {
        assert_eq!(rec.header, entry.header);
        let data = full.slice(entry.data_range());
        match &rec.body {
            FeatureBody::DirtyBitmap(b) => {
                assert_eq!(entry.header.magic.get(), FEATURE_DIRTY_BITMAP);
                assert_eq!(entry.header.flags.get(), 0);
                assert_eq!(zerocopy::IntoBytes::as_bytes(&b.header), &data[..BITMAP_HEADER_SIZE]);
                assert_eq!(b.l1.len(), b.header.l1_size.get() as usize);
                let table = &data[BITMAP_HEADER_SIZE..BITMAP_HEADER_SIZE + 8 * b.l1.len()];
                for (e, bytes) in b.l1.iter().zip(table.chunks_exact(8)) {
                    assert_eq!(*e, u64::from_le_bytes(bytes.try_into().unwrap()));
                }
                assert_eq!(&b.extra[..], &data[BITMAP_HEADER_SIZE + 8 * b.l1.len()..]);
            }
            FeatureBody::Opaque(bytes) => {
                assert!(entry.header.magic.get() != FEATURE_DIRTY_BITMAP || entry.header.flags.get() != 0);
                assert_eq!(&bytes[..], data);
            }
        }
    }

    // Canonical: an all-zero end record and zero bytes wherever no record is.
    let mut canonical = cluster[end as usize..].iter().all(|&b| b == 0);
    let mut pos = EXT_HEADER_SIZE as u64;
    for f in full.features() {
        canonical &= cluster[pos as usize..f.offset as usize].iter().all(|&b| b == 0);
        pos = f.data_range().end;
    }
    canonical &= cluster[pos as usize..end as usize].iter().all(|&b| b == 0);
    let written = model.to_cluster(cs).expect("a cluster that was read fits its own size");
    if canonical {
        assert_eq!(written, cluster, "write(read(b)) differs from a canonical b");
    } else {
        // Writing canonicalises: reading it back gives the same model.
        let again = ExtensionCluster::read(&mut binrw::io::Cursor::new(&written[..])).expect("re-read");
        assert_eq!(again.features, model.features);
    }
    assert_eq!(
        ExtensionCluster::encoded_len(&model.features),
        end + FEATURE_HEADER_SIZE as u64
    );
});
