//! Byte patching and assertion helpers shared by the rule tests.

#![allow(dead_code)]

use parallels_image::raw::extension::checksum;
use parallels_image::raw::feature::FEATURE_DIRTY_BITMAP;
use parallels_image::Rule;
use parallels_image::{BuiltLayout, ImageBuilder};
use parallels_image::{Error, Finding, Image, RuleMode, Severity, Threads, Violation};

/// 64 KiB, the cluster size most tests use.
pub const CS: u64 = 64 << 10;
/// A bitmap id whose UUID form is easy to read.
pub const ID_A: [u8; 16] = [0xaa; 16];
/// A second bitmap id.
pub const ID_B: [u8; 16] = [0xbb; 16];
/// A third bitmap id.
pub const ID_C: [u8; 16] = [0xcc; 16];

pub use crate::fixtures::spec;

/// Builds an image, failing the test if the builder refuses.
pub fn build(b: &ImageBuilder) -> (Vec<u8>, BuiltLayout) {
    b.to_vec().expect("the builder accepts this image")
}

pub fn put_u32(buf: &mut [u8], at: u64, v: u32) {
    buf[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(buf: &mut [u8], at: u64, v: u64) {
    buf[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u32(buf: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(buf[at as usize..at as usize + 4].try_into().unwrap())
}

pub fn get_u64(buf: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(buf[at as usize..at as usize + 8].try_into().unwrap())
}

/// Byte offset of the extension cluster, from the header.
pub fn ext_at(buf: &[u8]) -> u64 {
    get_u64(buf, 56) * 512
}

/// Recomputes the MD5 of the extension cluster at `ext` (bytes [24, cs)) so that a patch of the
/// feature list breaks only the rule it is meant to break.
pub fn refresh_md5(buf: &mut [u8], ext: u64, cs: u64) {
    let sum = checksum(&buf[(ext + 24) as usize..(ext + cs) as usize]);
    buf[(ext + 8) as usize..(ext + 24) as usize].copy_from_slice(&sum);
}

/// A feature record for [`ext_cluster`].
pub struct Rec {
    pub magic: u64,
    pub flags: u64,
    pub data_size: u32,
    pub data: Vec<u8>,
}

impl Rec {
    /// A record whose `data_size` is the length of `data`.
    pub fn new(magic: u64, flags: u64, data: Vec<u8>) -> Rec {
        Rec {
            magic,
            flags,
            data_size: data.len() as u32,
            data,
        }
    }
}

/// Dirty-bitmap feature data: the 32-byte header and the L1 entries given (l1_size as stated).
pub fn bitmap_data(size: u64, id: [u8; 16], granularity: u32, l1_size: u32, l1: &[u64]) -> Vec<u8> {
    crate::fixtures::bitmap_data(size, id, granularity, l1, Some(l1_size))
}

/// A bitmap record with `l1_size` = the number of entries given.
pub fn bitmap_rec(size: u64, id: [u8; 16], granularity: u32, l1: &[u64]) -> Rec {
    Rec::new(
        FEATURE_DIRTY_BITMAP,
        0,
        bitmap_data(size, id, granularity, l1.len() as u32, l1),
    )
}

/// An extension cluster of `cs` bytes written record by record (each at the next multiple of 8),
/// the rest zero (so an end record follows when there is room), with a correct MD5.
pub fn ext_cluster(cs: u64, recs: &[Rec]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in recs {
        body.resize(body.len().next_multiple_of(8), 0);
        body.extend(r.magic.to_le_bytes());
        body.extend(r.flags.to_le_bytes());
        body.extend(r.data_size.to_le_bytes());
        body.extend(0u32.to_le_bytes());
        body.extend(&r.data);
    }
    crate::fixtures::ext_cluster_of(&body, cs)
}

/// A v2 image of `virtual_size` bytes with clusters of `cs` and an extension cluster (as the
/// builder places it) replaced by a hand-written one holding `recs`.
pub fn image_with_ext(virtual_size: u64, cs: u64, recs: &[Rec]) -> (Vec<u8>, u64) {
    use parallels_image::raw::FeatureRecord;
    let (mut img, layout) = build(
        &ImageBuilder::new(virtual_size)
            .cluster_size(cs)
            .feature(FeatureRecord::opaque(0x5eed, 0, Vec::new())),
    );
    let ext = layout.ext_offset.expect("an extension cluster");
    let c = ext_cluster(cs, recs);
    img[ext as usize..(ext + cs) as usize].copy_from_slice(&c);
    (img, ext)
}

/// The findings of the validator, in order.
/// Every way of reading the BAT (whole, read again at each walk, not at all until
/// validation) must find the same, with or without the helper thread.
pub fn findings(bytes: &[u8], mode: RuleMode) -> Vec<Finding> {
    let image = Image::parse_with(&bytes, mode).expect("the header parses");
    let got = parallels_image::validate(&image)
        .expect("validation does not fail on I/O")
        .findings;
    let alone = Image::parse_with(&bytes, mode).expect("the header parses");
    assert_eq!(
        parallels_image::validate_with(&alone, Threads::Caller)
            .expect("one thread")
            .findings,
        got,
        "without the helper thread"
    );
    let compact = Image::parse_compact(&bytes, mode).expect("the header parses");
    assert_eq!(
        parallels_image::validate(&compact).expect("compact").findings,
        got,
        "compact BAT"
    );
    assert_eq!(
        compact.allocated_entries().collect::<Vec<_>>(),
        image.allocated_entries().collect::<Vec<_>>()
    );
    let lean = Image::parse_without_bat(&bytes, mode).expect("the header parses");
    assert_eq!(
        parallels_image::validate(&lean).expect("without BAT").findings,
        got,
        "BAT not read"
    );
    got
}

/// The violation `Image::parse` fails with.
pub fn parse_err(bytes: &[u8]) -> Violation {
    match Image::parse(&bytes) {
        Err(Error::Invalid(v)) => v,
        other => panic!("expected a violation from parse, got {other:?}"),
    }
}

/// Asserts the exact findings (violation and severity, in order) of `bytes` in `mode`, and that
/// `Image::open_with` fails with the first corruption among them, or succeeds if there is none.
pub fn assert_findings(bytes: &[u8], mode: RuleMode, expected: &[(Violation, Severity)]) {
    assert_findings_named("", bytes, mode, expected);
}

/// [`assert_findings`] for the case `case` of a table, which a failure names.
pub fn assert_findings_named(case: &str, bytes: &[u8], mode: RuleMode, expected: &[(Violation, Severity)]) {
    let got = findings(bytes, mode);
    let want: Vec<Finding> = expected
        .iter()
        .map(|(v, s)| Finding {
            violation: v.clone(),
            severity: *s,
        })
        .collect();
    assert_eq!(got, want, "{case}");
    let first = expected.iter().find(|(_, s)| *s == Severity::Corruption);
    match (parallels_image::open_with(&bytes, mode), first) {
        (Ok(_), None) => {}
        (Err(Error::Invalid(v)), Some((w, _))) => assert_eq!(&v, w, "{case}"),
        (Ok(_), Some((w, _))) => panic!("{case}: open succeeded, expected it to fail with {w:?}"),
        (Err(e), None) => panic!("{case}: open failed with {e:?}, expected it to succeed"),
        (Err(e), Some((w, _))) => panic!("{case}: open failed with {e:?}, expected {w:?}"),
    }
}

/// Asserts that `bytes` (strict mode) break exactly one rule: `v`, with code `rule` and
/// severity `severity`.
pub fn assert_only(bytes: &[u8], v: Violation, rule: Rule, severity: Severity) {
    assert_only_named("", bytes, v, rule, severity);
}

/// [`assert_only`] for the case `case` of a table, which a failure names.
pub fn assert_only_named(case: &str, bytes: &[u8], v: Violation, rule: Rule, severity: Severity) {
    assert_eq!(v.rule(), rule, "{case}: {v:?}");
    assert_eq!(v.severity(), severity, "{case}: {v:?}");
    assert_findings_named(case, bytes, RuleMode::Strict, &[(v, severity)]);
}

/// Asserts that `bytes` are valid: no finding at all, and `Image::open` succeeds.
pub fn assert_clean(bytes: &[u8]) {
    assert_findings(bytes, RuleMode::Strict, &[]);
}
