//! The BAT rules: a valid-ish header chosen by the first bytes, then arbitrary BAT bytes, then a
//! data area of a chosen length.
//!
//! Input: `[flags, cluster, clusters, tail, data_off lo, data_off hi, BAT bytes...]`.
//!
//! Oracle: an independent statement of the BAT rules (below the data area, unaligned for v1,
//! past the end of the file, duplicate) gives exactly the BAT findings, in order.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use parallels_image::raw::header::{RawHeader, MAGIC_V1, MAGIC_V2, VERSION};
use parallels_image::{Image, Variant, Violation};

/// At most this many BAT entries (the rest of a long input is ignored).
const MAX_ENTRIES: usize = 8192;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (ctl, bat_bytes) = data.split_at(6);
    let variant = if ctl[0] & 1 == 0 { Variant::V2 } else { Variant::V1 };
    let tracks: u32 = [1, 2, 3, 8][usize::from(ctl[1] & 3)];
    let cs = u64::from(tracks) * 512;
    let bat_entries = (bat_bytes.len() / 4).min(MAX_ENTRIES);
    let bat_end = 64 + 4 * bat_entries as u64;
    let min_start = match variant {
        Variant::V1 => bat_end.next_multiple_of(512),
        Variant::V2 => bat_end.next_multiple_of(cs),
    };
    let data_off: u32 = match ctl[0] >> 1 & 3 {
        0 => (min_start / 512) as u32,
        1 if variant == Variant::V1 => 0,
        _ => u32::from(u16::from_le_bytes([ctl[4], ctl[5]])) % 512,
    };
    let clusters = u64::from(ctl[2] & 63);
    let file_len = (min_start.max(u64::from(data_off) * 512) + clusters * cs + u64::from(ctl[3])) as usize;
    let file_len = file_len.max(bat_end as usize);

    let header = RawHeader {
        magic: match variant {
            Variant::V1 => MAGIC_V1,
            Variant::V2 => MAGIC_V2,
        },
        version: VERSION.into(),
        heads: 16.into(),
        cylinders: 0.into(),
        tracks: tracks.into(),
        bat_entries: (bat_entries as u32).into(),
        nb_sectors: (bat_entries as u64 * u64::from(tracks)).into(),
        inuse: 0.into(),
        data_off: data_off.into(),
        flags: 0.into(),
        ext_off: 0.into(),
    };
    let mut file = vec![0u8; file_len];
    file[..64].copy_from_slice(zerocopy::IntoBytes::as_bytes(&header));
    file[64..bat_end as usize].copy_from_slice(&bat_bytes[..4 * bat_entries]);

    let image = Image::parse(&file).expect("the header is valid");
    let h = *image.header();
    assert_eq!(image.bat().len(), bat_entries);
    let report = parallels_image::validate(&image).expect("validate");
    let got: Vec<Violation> = report
        .findings
        .iter()
        .map(|f| f.violation.clone())
        .filter(|v| {
            matches!(
                v,
                Violation::BatEntryBelowData { .. }
                    | Violation::BatEntryUnaligned { .. }
                    | Violation::BatEntryPastEof { .. }
                    | Violation::BatEntryDuplicate { .. }
            )
        })
        .collect();

    let data_start = h.data_start();
    let file_len = file_len as u64;
    let mut want = Vec::new();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut dups = Vec::new();
    for (i, e) in image.bat().iter().enumerate() {
        let (index, entry) = (i as u32, e);
        if entry == 0 {
            continue;
        }
        let offset = match variant {
            Variant::V1 => u64::from(entry) * 512,
            Variant::V2 => u64::from(entry) * cs,
        };
        if offset < data_start {
            want.push(Violation::BatEntryBelowData {
                index,
                entry,
                offset,
                data_start,
            });
        } else if variant == Variant::V1 && (offset - data_start) % cs != 0 {
            want.push(Violation::BatEntryUnaligned {
                index,
                entry,
                offset,
                data_start,
                cluster_size: cs,
            });
        } else if offset + cs > file_len {
            want.push(Violation::BatEntryPastEof {
                index,
                entry,
                offset,
                end: offset + cs,
                file_len,
            });
        } else if let Some(&first) = seen.get(&offset) {
            dups.push(Violation::BatEntryDuplicate {
                index,
                entry,
                offset,
                first,
            });
        } else {
            seen.insert(offset, index);
        }
    }
    want.extend(dups);
    assert_eq!(got, want);
    if want.is_empty() && data_off == (min_start / 512) as u32 {
        // Nothing wrong with the BAT or the header: only a leak may remain (at the end, R20, or
        // a hole in the middle, R46), and the note that a v1 data_off of 0 or 1 is valid but
        // refused by ploop (R47).
        assert!(
            report.findings.iter().all(|f| matches!(
                f.violation,
                Violation::Leak { .. } | Violation::Unreferenced { .. } | Violation::V1DataOffUnset { .. }
            )),
            "{:?}",
            report.findings
        );
    }
});
