//! A whole image from arbitrary bytes: parse in both modes, validate, decode every decodable
//! bitmap, map every BAT entry in the file, read some guest bytes.
//!
//! Oracles: the serialized bitmap has exactly the bits of the dirty runs for its granules; the
//! dirty extents are those runs in bytes, clipped to the disk; `open` fails exactly when the
//! report has corruption (on tables of at most [`MAX_CROSS_CHECKED`](limits::MAX_CROSS_CHECKED) entries, as lenient mode).
//!
//! Shared by the `image` target and its `image_mutator` variant.

#[path = "limits.rs"]
mod limits;

use limits::{costly_checksum, MAX_CROSS_CHECKED};
use parallels_image::{Error, Image, RuleMode, Severity};

/// Largest serialized bitmap this target builds in memory (2 Mi granules; see fuzz/README.md).
const MAX_SERIALIZED: u64 = 256 << 10;

/// One run of the target on `data`.
pub fn run(data: &[u8]) {
    if costly_checksum(data) {
        return;
    }
    for mode in [RuleMode::Strict, RuleMode::Lenient] {
        let image = match Image::parse_with(&data, mode) {
            Ok(image) => image,
            Err(Error::Invalid(v)) => {
                assert_eq!(v.severity(), Severity::Corruption);
                // Open fails the same way.
                assert!(matches!(parallels_image::open_with(&data, mode), Err(Error::Invalid(w)) if w == v));
                return;
            }
            Err(Error::EmptyFile | Error::NotParallels { .. }) => {
                // Not a Parallels image at all: open refuses it the same way.
                assert!(matches!(
                    parallels_image::open_with(&data, mode),
                    Err(Error::EmptyFile | Error::NotParallels { .. })
                ));
                return;
            }
            Err(e) => panic!("parsing a slice failed with {e}"),
        };
        // A long table only repeats the entries' paths: lenient mode, whose rules differ from
        // strict mode's only on features, is run on tables of at most MAX_CROSS_CHECKED entries.
        if mode == RuleMode::Lenient && image.bat_entries_in_file() > MAX_CROSS_CHECKED {
            return;
        }
        let _ = format!("{image:?}");
        let h = *image.header();
        assert_eq!(image.mode(), mode);
        assert_eq!(image.file_len(), data.len() as u64);

        let report = parallels_image::validate(&image).expect("validating a slice does no failing I/O");
        // Messages of the first 16 findings and of the first of each rule after them (formatting
        // thousands of the same kind would dominate the run).
        let mut shown = [false; 64];
        for (i, f) in report.findings.iter().enumerate() {
            let rule = f.violation.rule();
            if i < 16 || !std::mem::replace(&mut shown[rule as usize % 64], true) {
                let _ = (f.violation.to_string(), rule, f.violation.location());
            }
        }
        let _ = report.rules();
        let first_corruption = report.findings.iter().find(|f| f.severity == Severity::Corruption);
        // `open_with` validates again: compared on tables of at most MAX_CROSS_CHECKED entries.
        if image.bat_entries_in_file() <= MAX_CROSS_CHECKED {
            match (parallels_image::open_with(&data, mode), first_corruption) {
                (Ok(_), None) => {}
                (Err(Error::Invalid(v)), Some(f)) => assert_eq!(v, f.violation),
                (got, want) => panic!(
                    "open gave {:?}, the report's first corruption is {want:?}",
                    got.map(|_| ())
                ),
            }
        }

        // BAT entries in the file, and the first one past it. The allocated entries are listed
        // in one pass; the per-entry lookups (`bat_entry`, `cluster_offset`) are made for some
        // entries only: under the fuzzer's instrumentation each costs about a microsecond, and
        // all of a 64 KiB table (16 Ki entries) made this target spend 30 ms a run here. The
        // first and last 64, the first 128 allocated ones and 128 spread over the table (whose
        // unallocated entries all take the same path) are looked up.
        let bat = image.bat();
        assert!(bat.len() as u64 <= u64::from(h.bat_entries));
        let want: Vec<(u32, u32)> = bat
            .iter()
            .enumerate()
            .filter(|&(_, e)| e != 0)
            .map(|(i, e)| (i as u32, e))
            .collect();
        let stride = (bat.len() / 128).max(1);
        let ends = (0..bat.len().min(64)).chain(bat.len().saturating_sub(64).max(64)..bat.len());
        let spread = (0..bat.len()).step_by(stride);
        let allocated = want.iter().take(128).map(|&(i, _)| i as usize);
        for i in ends.chain(spread).chain(allocated) {
            let e = bat.get(i).expect("an index in the table");
            assert_eq!(image.bat_entry(i as u32), e);
            assert_eq!(image.cluster_offset(i as u32), h.bat_entry_offset(e));
        }
        if (bat.len() as u64) < u64::from(h.bat_entries) {
            assert_eq!(image.cluster_offset(bat.len() as u32), None);
            assert_eq!(image.cluster_offset(h.bat_entries - 1), None);
        }
        assert_eq!(image.allocated_clusters(), want.len() as u64);
        assert_eq!(image.bat_entries_in_file() as usize, bat.len());
        // The same entries when only the allocated ones are kept.
        let compact = Image::parse_compact(&data, mode).expect("compact parses what parse_with parses");
        let allocated: Vec<(u32, u32)> = compact.allocated_entries().collect();
        assert_eq!(allocated, want);
        assert_eq!(compact.allocated_clusters(), allocated.len() as u64);
        // By index: stepping an iterator walks every entry it skips.
        for i in (0..bat.len()).step_by((bat.len() / 64).max(1)) {
            assert_eq!(compact.bat_entry(i as u32), bat.get(i).expect("an index in the table"));
        }

        // A few guest reads: the first and last bytes of the disk.
        let mut buf = vec![0u8; 4096];
        image.read_guest(0, &mut buf).expect("guest read");
        let size = h.virtual_size();
        image
            .read_guest(size.saturating_sub(4096), &mut buf)
            .expect("guest read");

        for (i, b) in image.bitmaps().into_iter().enumerate() {
            let _ = (format!("{b:?}"), b.name(), b.granularity_bytes(), b.expected_l1_size());
            // `bitmap(name)` walks every bitmap: only for the first few (quadratic otherwise).
            if i < 4 {
                assert_eq!(
                    image.bitmap_named(&b.name()).map(|x| x.feature <= b.feature),
                    Some(true)
                );
            }
            let _ = b.trailing_bits().expect("trailing bits");
            if b.decodable().is_err() {
                assert!(b.dirty_extents().is_err());
                continue;
            }
            let mut runs = Vec::new();
            b.for_each_dirty_run(|s, l| runs.push((s, l))).expect("decode");
            let g = b.granules();
            let mut prev_end = None;
            for &(s, l) in &runs {
                assert!(l > 0 && s + l <= g, "run {s}+{l} past {g} granules");
                if let Some(p) = prev_end {
                    assert!(s > p, "runs not merged or not in order");
                }
                prev_end = Some(s + l);
            }
            let gb = b.granularity_bytes();
            let expected: Vec<(u64, u64)> = runs
                .iter()
                .filter_map(|&(s, l)| {
                    let start = s.saturating_mul(gb);
                    let end = (s + l).saturating_mul(gb).min(size);
                    (end > start).then(|| (start, end - start))
                })
                .collect();
            let extents = b.dirty_extents().expect("decode");
            assert_eq!(extents, expected);
            assert_eq!(b.dirty_bytes().unwrap(), expected.iter().map(|e| e.1).sum::<u64>());
            if b.serialized_len() <= MAX_SERIALIZED {
                let ser = b.serialized().expect("serialize");
                assert_eq!(ser.len() as u64, b.serialized_len());
                let mut want = vec![0u8; ser.len()];
                for &(s, l) in &runs {
                    set_bits(&mut want, s, s + l);
                }
                // Bits of granules past the last one keep what the image holds (as QEMU hashes
                // them): only the first `g` bits are compared.
                let whole = (g / 8) as usize;
                assert_eq!(
                    ser[..whole],
                    want[..whole],
                    "serialized bits differ from the dirty runs"
                );
                if g % 8 != 0 {
                    let mask = (1u8 << (g % 8)) - 1;
                    assert_eq!(
                        ser[whole] & mask,
                        want[whole],
                        "serialized bits differ from the dirty runs"
                    );
                }
            }
        }
    }
}

fn set_bits(bits: &mut [u8], s: u64, e: u64) {
    let mut i = s;
    while i < e {
        if i % 8 == 0 && e - i >= 8 {
            let n = (e - i) / 8;
            bits[(i / 8) as usize..(i / 8 + n) as usize].fill(0xff);
            i += n * 8;
        } else {
            bits[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}
