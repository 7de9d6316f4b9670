//! Validation with the helper thread: a cluster of 256 KiB or more is hashed on the calling
//! thread while the helper runs the rules after the checksum. The findings must be those of one
//! thread, in the same order, and the helper must really be the one reading.

use std::borrow::Cow;
use std::io;
use std::sync::Mutex;

use parallels_image::raw::extension::checksum;
use parallels_image::raw::feature::FEATURE_DIRTY_BITMAP;
use parallels_image::raw::FeatureRecord;
use parallels_image::Rule;
use parallels_image::{Finding, Image, Report, RuleMode, Severity, Source, Threads, Violation};
use parallels_image::{GuestData, ImageBuilder};

use crate::helpers::*;

const MIB: u64 = 1 << 20;
/// 4 GiB + 1 MiB: with 512-byte granules a chunk of a 1 MiB cluster covers 4 GiB, so the L1
/// table has two entries, the second a partial chunk.
const SIZE: u64 = (4 << 30) + MIB;
const HELPER: &str = "parallels-image-validate";

/// 1 MiB clusters, data in the first cluster, one bitmap dirty at 4 KiB (chunk 0, mixed) and at
/// 4 GiB (chunk 1, partial and mixed, so validation reads its cluster for trailing bits), then
/// an unknown feature (magic 0x5eed, no data).
fn base() -> (Vec<u8>, u64, Vec<u64>) {
    let (img, layout) = build(
        &ImageBuilder::new(SIZE)
            .cluster_size(MIB)
            .data(0, GuestData::Fill { len: 4096, byte: 0x42 })
            .bitmap(spec(ID_A, 512, &[(4096, 4096), (4 << 30, 512)]))
            .feature(FeatureRecord::opaque(0x5eed, 0, Vec::new())),
    );
    let ext = layout.ext_offset.expect("an extension");
    let l1 = layout.l1[0].clone();
    assert_eq!(l1.len(), 2);
    assert!(l1.iter().all(|&e| e > 1), "both chunks in clusters: {l1:?}");
    (img, ext, l1)
}

/// Image bytes that note which thread asked for which range.
struct Recording {
    bytes: Vec<u8>,
    reads: Mutex<Vec<(String, u64, u64)>>,
}

impl Source for Recording {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.reads.lock().unwrap().push((name, offset, len));
        self.bytes.read_at(offset, len)
    }
}

/// Held by every test here: the helper serves one validation at a time, and these tests look at
/// who read what.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// With `Threads::Helper`, `bytes` breaks `rules` and validation reads only `MIB` bytes at
/// `at`, on the helper thread when the machine has more than one CPU. A validation in another
/// test (outside this module) may hold the helper for a moment, and then this one reads on its
/// own thread: such runs are retried, up to 100 times.
fn read_on_the_helper(bytes: &[u8], rules: Vec<Rule>, at: u64) {
    let me = std::thread::current().name().unwrap().to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let reader = if cpus > 1 { HELPER.to_string() } else { me.clone() };
    for _ in 0..100 {
        let got = validation_reads(bytes, Threads::Helper);
        if got.1 == vec![(me.clone(), at, MIB)] && reader != me {
            assert_eq!(got.0, rules);
            continue;
        }
        assert_eq!(got, (rules, vec![(reader, at, MIB)]));
        return;
    }
    panic!("the helper was busy for 100 validations in a row");
}

/// The findings and the reads made by validation alone, with `threads`, leaving out R44's scan
/// of the bytes between the BAT and the data area (always on the calling thread, before the
/// extension rules).
fn validate_recording(bytes: &[u8], threads: Threads) -> (Vec<Finding>, Vec<(String, u64, u64)>) {
    let src = Recording {
        bytes: bytes.to_vec(),
        reads: Mutex::new(Vec::new()),
    };
    let image = Image::parse(&src).unwrap();
    src.reads.lock().unwrap().clear();
    let findings = parallels_image::validate_with(&image, threads).unwrap().findings;
    let (bat_end, data_start) = (image.header().bat_end(), image.header().data_start());
    let mut reads = src.reads.into_inner().unwrap();
    reads.retain(|r| !(r.1 >= bat_end && r.1 + r.2 <= data_start));
    (findings, reads)
}

/// The rules broken and the reads made by validation alone, with `threads`.
fn validation_reads(bytes: &[u8], threads: Threads) -> (Vec<Rule>, Vec<(String, u64, u64)>) {
    let (findings, reads) = validate_recording(bytes, threads);
    let report = Report { findings };
    (report.rules(), reads)
}

#[test]
fn the_helper_reads_the_bitmap_cluster_while_the_caller_hashes() {
    let _serial = one_at_a_time();
    let (img, _, l1) = base();
    let last = l1[1] * 512;
    let me = std::thread::current().name().unwrap().to_string();
    assert_eq!(
        validation_reads(&img, Threads::Caller),
        (vec![Rule::R29], vec![(me, last, MIB)])
    );
    read_on_the_helper(&img, vec![Rule::R29], last);
}

#[test]
fn findings_after_the_checksum_keep_their_order() {
    let (mut img, ext, _) = base();
    let stored = img[ext as usize + 8..ext as usize + 24].to_vec();
    // The bitmap (record 0, at ext + 24) gets a size of one sector more, the MD5 is left stale,
    // and 512 bytes of junk follow the last cluster.
    let f0 = ext + 24;
    let f1 = f0 + 24 + 32 + 16;
    assert_eq!(get_u64(&img, f0), FEATURE_DIRTY_BITMAP);
    assert_eq!(get_u64(&img, f1), 0x5eed);
    let nb_sectors = SIZE / 512;
    put_u64(&mut img, f0 + 24, nb_sectors + 1);
    let expected_sum = checksum(&img[ext as usize + 24..(ext + MIB) as usize]);
    let old_len = img.len() as u64;
    img.extend_from_slice(&[0x77; 512]);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::ExtBadChecksum {
                    offset: ext,
                    found: stored.try_into().unwrap(),
                    expected: expected_sum,
                },
                Severity::Corruption,
            ),
            (
                Violation::UnknownFeature {
                    index: 1,
                    offset: f1,
                    magic: 0x5eed,
                },
                Severity::Corruption,
            ),
            (
                Violation::BitmapSizeMismatch {
                    index: 0,
                    offset: f0,
                    found: nb_sectors + 1,
                    expected: nb_sectors,
                },
                Severity::Corruption,
            ),
            (
                Violation::Leak {
                    offset: old_len,
                    len: 512,
                },
                Severity::Leak,
            ),
        ],
    );
}

#[test]
fn small_clusters_stay_on_the_caller() {
    // 64 KiB clusters: too little to hash for a helper to pay.
    let (img, layout) = build(&ImageBuilder::new(SIZE).cluster_size(CS).bitmap(spec(
        ID_A,
        512,
        &[(SIZE - 512, 512), (SIZE - 4096, 512)],
    )));
    let last = *layout.l1[0].last().unwrap() * 512;
    assert!(last > 0);
    let me = std::thread::current().name().unwrap().to_string();
    assert_eq!(validation_reads(&img, Threads::Helper), (vec![], vec![(me, last, CS)]));
}

#[test]
fn a_long_list_goes_to_the_helper_though_its_first_records_read_nothing() {
    let _serial = one_at_a_time();
    // 40 all-clean bitmaps (L1 entries 0) and, as record 41, a bitmap whose last chunk is in a
    // cluster: the first 32 records read nothing, but the list is long.
    let mut b = ImageBuilder::new(SIZE).cluster_size(MIB);
    for k in 0..40u8 {
        b = b.bitmap(spec([k; 16], 512, &[]));
    }
    let (img, layout) = build(&b.bitmap(spec(ID_A, 512, &[(4 << 30, 512)])));
    assert!(layout.l1[..40].iter().all(|l1| l1 == &[0, 0]));
    let last = layout.l1[40][1] * 512;
    assert!(last > 0);
    read_on_the_helper(&img, vec![], last);
}

#[test]
fn callers_side_by_side_share_the_helper_and_find_the_same() {
    let _serial = one_at_a_time();
    // Eight threads validate at once: whichever has the helper hands it the rules, the others
    // run them themselves. Each validation reads the last bitmap cluster once, on the helper or
    // on its own thread, and all find the same.
    let (img, _, l1) = base();
    let last = l1[1] * 512;
    let want = findings(&img, RuleMode::Strict);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|k| {
                let img = &img;
                std::thread::Builder::new()
                    .name(format!("caller-{k}"))
                    .spawn_scoped(s, move || {
                        (0..20)
                            .map(|_| validate_recording(img, Threads::Helper))
                            .collect::<Vec<_>>()
                    })
                    .unwrap()
            })
            .collect();
        for (k, w) in workers.into_iter().enumerate() {
            for (got, reads) in w.join().unwrap() {
                assert_eq!(got, want);
                assert_eq!(reads.len(), 1, "{reads:?}");
                let (who, at, len) = &reads[0];
                assert!(who == HELPER || *who == format!("caller-{k}"), "{who}");
                assert_eq!((*at, *len), (last, MIB));
            }
        }
    });
}
