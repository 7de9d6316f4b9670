//! The 64-byte header: the zero-copy view and `Header::decode` on arbitrary bytes.
//!
//! Oracle: an independent statement of rules R1–R6 in QEMU's order. Decoding must fail with
//! exactly the first rule broken, and a decoded header must have consistent derived values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parallels_image::raw::header::{
    RawHeader, HEADER_SIZE, MAGIC_V1, MAGIC_V2, MAX_BAT_ENTRIES, MAX_EXT_OFF, MAX_TRACKS, VERSION,
};
use parallels_image::{Header, Variant, Violation};

fn u32_at(b: &[u8; 64], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8; 64], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    // The view needs 64 bytes and nothing more; the padded read accepts anything.
    let view = RawHeader::view(data);
    assert_eq!(view.is_some(), data.len() >= HEADER_SIZE);
    let raw = RawHeader::read_padded(data);
    if let Some(v) = view {
        assert_eq!(*v, raw);
    }
    let mut b = [0u8; 64];
    let n = data.len().min(64);
    b[..n].copy_from_slice(&data[..n]);
    assert_eq!(zerocopy::IntoBytes::as_bytes(&raw), &b[..]);

    let magic: [u8; 16] = b[..16].try_into().unwrap();
    let version = u32_at(&b, 16);
    let tracks = u32_at(&b, 28);
    let bat_entries = u32_at(&b, 32);
    let nb_sectors = u64_at(&b, 36);
    let data_off = u32_at(&b, 48);
    let ext_off = u64_at(&b, 56);
    let known = magic == MAGIC_V1 || magic == MAGIC_V2;

    let expected: Result<Variant, Violation> = if version != VERSION && !known {
        Err(Violation::BadMagic { found: magic })
    } else if version != VERSION {
        Err(Violation::BadVersion { found: version })
    } else if !known {
        Err(Violation::BadMagic { found: magic })
    } else if tracks == 0 {
        Err(Violation::ZeroTracks)
    } else if tracks > MAX_TRACKS {
        Err(Violation::ClusterTooBig {
            tracks,
            max: MAX_TRACKS,
        })
    } else if bat_entries > MAX_BAT_ENTRIES {
        Err(Violation::CatalogTooLarge {
            bat_entries,
            max: MAX_BAT_ENTRIES,
        })
    } else if ext_off >= MAX_EXT_OFF {
        Err(Violation::ExtOffTooBig {
            ext_off,
            max: MAX_EXT_OFF,
        })
    } else if magic == MAGIC_V1 {
        Ok(Variant::V1)
    } else {
        Ok(Variant::V2)
    };

    match (Header::decode(&raw), expected) {
        (Err(got), Err(want)) => {
            assert_eq!(got, want);
            // Header violations are always corruption and always located in the header.
            assert_eq!(got.severity(), parallels_image::Severity::Corruption);
            assert!(matches!(got.location(), parallels_image::Location::Header { .. }));
        }
        (Ok(h), Ok(variant)) => {
            assert_eq!(h.raw, raw);
            assert_eq!(h.variant, variant);
            assert_eq!(h.variant.magic(), magic);
            assert_eq!(h.cluster_sectors, tracks);
            assert_eq!(h.cluster_size(), u64::from(tracks) * 512);
            assert_eq!(h.bat_entries, bat_entries);
            let sectors = match variant {
                Variant::V1 => nb_sectors & 0xffff_ffff,
                Variant::V2 => nb_sectors,
            };
            assert_eq!(h.nb_sectors, sectors);
            assert_eq!(h.virtual_size(), sectors.saturating_mul(512));
            assert_eq!(h.ext_off, ext_off);
            assert_eq!(h.ext_offset(), (ext_off != 0).then(|| ext_off * 512));
            let bat_end = 64 + 4 * u64::from(bat_entries);
            assert_eq!(h.bat_end(), bat_end);
            let min = h.min_data_start();
            assert!(min >= bat_end && min % 512 == 0);
            match variant {
                Variant::V1 => assert!(min - bat_end < 512),
                Variant::V2 => assert!(min % h.cluster_size() == 0 && min - bat_end < h.cluster_size()),
            }
            let start = h.data_start();
            if variant == Variant::V1 && data_off == 0 {
                assert_eq!(start, min);
            } else {
                assert_eq!(start, u64::from(data_off) * 512);
            }
            assert_eq!(h.bat_entry_offset(0), None);
            for e in [1u32, 2, 0x80, u32::MAX] {
                let unit = match variant {
                    Variant::V1 => 512,
                    Variant::V2 => h.cluster_size(),
                };
                assert_eq!(h.bat_entry_offset(e), Some(u64::from(e) * unit));
            }
        }
        (got, want) => panic!("decode gave {got:?}, rules R1-R6 say {want:?}"),
    }
});
