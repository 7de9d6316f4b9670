//! Header rules R1–R15: what every reader checks before it can interpret anything (R1–R6, in
//! QEMU's order), then the fields the validator checks.

use parallels_image::raw::header::{INUSE_CLOSED_V21, INUSE_OPEN, MAX_BAT_ENTRIES, MAX_EXT_OFF, MAX_TRACKS};
use parallels_image::Rule;
use parallels_image::{GuestData, ImageBuilder};
use parallels_image::{Image, RuleMode, Severity, Variant, Violation};

use crate::helpers::*;

/// A valid v2 image: 1 MiB, 64 KiB clusters, guest cluster 0 written (BAT[0] = 1), 128 KiB long.
fn base() -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 4096, byte: 0x5a }),
    );
    assert_eq!(layout.bat, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(img.len(), 128 << 10);
    img
}

/// The same in v1: BAT[0] = 128 sectors.
fn base_v1() -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .variant(Variant::V1)
            .data(0, GuestData::Fill { len: 4096, byte: 0x5a }),
    );
    assert_eq!(layout.bat[0], 128);
    assert_eq!(img.len(), 128 << 10);
    img
}

/// Just a header: v2, 64 KiB clusters, no BAT entries, data at cluster 1, nothing else.
fn lone_header() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..16].copy_from_slice(b"WithouFreSpacExt");
    put_u32(&mut h, 16, 2);
    put_u32(&mut h, 28, 128);
    put_u32(&mut h, 48, 128);
    h
}

#[test]
fn valid_v1_and_v2_open() {
    for img in [base(), base_v1()] {
        assert_clean(&img);
        let image = parallels_image::open(&img).expect("valid");
        let mut buf = vec![0u8; 8192];
        image.read_guest(0, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0x5a));
        assert!(buf[4096..].iter().all(|&b| b == 0));
    }
}

/// A header field set to a value: 32 or 64 bits little-endian at an offset, or bytes.
#[derive(Clone, Copy, Debug)]
enum Set {
    U32(u64, u32),
    U64(u64, u64),
    Bytes(usize, &'static [u8]),
}

fn apply(img: &mut [u8], sets: &[Set]) {
    for s in sets {
        match *s {
            Set::U32(at, v) => put_u32(img, at, v),
            Set::U64(at, v) => put_u64(img, at, v),
            Set::Bytes(at, b) => img[at..at + b.len()].copy_from_slice(b),
        }
    }
}

/// R1–R6: the header fields that stop the parse, in QEMU's order. Cases that also set a later
/// field wrong show that the earlier rule is the one named.
#[test]
fn r1_to_r6_header_fields_refuse_the_image() {
    use Set::*;
    assert_eq!(MAX_TRACKS, 4_186_127);
    assert_eq!(MAX_BAT_ENTRIES, 536_870_911);
    assert_eq!(MAX_EXT_OFF, 18_014_398_509_481_983);
    type Case = (String, fn() -> Vec<u8>, Vec<Set>, Violation, Rule);
    let mut cases: Vec<Case> = vec![
        (
            "r1 bad magic".into(),
            base,
            vec![Bytes(15, b"X")],
            Violation::BadMagic {
                found: *b"WithouFreSpacExX",
            },
            Rule::R1,
        ),
        // QEMU tests the version first, but gives the same message for both; we name the magic.
        (
            "r1 bad magic wins over bad version".into(),
            base,
            vec![Bytes(0, b"w"), U32(16, 3)],
            Violation::BadMagic {
                found: *b"withouFreSpacExt",
            },
            Rule::R1,
        ),
        (
            "r2 bad version before tracks".into(),
            base,
            vec![U32(16, 1), U32(28, 0)],
            Violation::BadVersion { found: 1 },
            Rule::R2,
        ),
        (
            "r3 zero tracks".into(),
            base,
            vec![U32(28, 0)],
            Violation::ZeroTracks,
            Rule::R3,
        ),
        (
            "r3 zero tracks before catalog size".into(),
            base,
            vec![U32(28, 0), U32(32, u32::MAX)],
            Violation::ZeroTracks,
            Rule::R3,
        ),
        (
            "r5 catalog too large".into(),
            lone_header,
            vec![U32(32, 536_870_912)],
            Violation::CatalogTooLarge {
                bat_entries: 536_870_912,
                max: 536_870_911,
            },
            Rule::R5,
        ),
        (
            "r5 catalog too large before ext_off".into(),
            lone_header,
            vec![U32(32, u32::MAX), U64(56, u64::MAX)],
            Violation::CatalogTooLarge {
                bat_entries: u32::MAX,
                max: 536_870_911,
            },
            Rule::R5,
        ),
    ];
    for version in [0u32, 1, 3, 0x0200_0000] {
        let name = format!("r2 bad version {version:#x}");
        cases.push((
            name,
            base,
            vec![U32(16, version)],
            Violation::BadVersion { found: version },
            Rule::R2,
        ));
    }
    for tracks in [4_186_128, u32::MAX] {
        let v = Violation::ClusterTooBig { tracks, max: 4_186_127 };
        cases.push((
            format!("r4 cluster too big {tracks}"),
            lone_header,
            vec![U32(28, tracks)],
            v,
            Rule::R4,
        ));
    }
    for ext_off in [MAX_EXT_OFF, MAX_EXT_OFF + 1, u64::MAX] {
        let v = Violation::ExtOffTooBig {
            ext_off,
            max: 18_014_398_509_481_983,
        };
        cases.push((
            format!("r6 ext_off {ext_off}"),
            lone_header,
            vec![U64(56, ext_off)],
            v,
            Rule::R6,
        ));
    }
    assert_eq!(cases.len(), 16);
    for (name, base, sets, want, rule) in cases {
        let mut img = base();
        apply(&mut img, &sets);
        let v = parse_err(&img);
        assert_eq!(v, want, "{name}");
        assert_eq!(v.rule(), rule, "{name}");
        assert_eq!(v.severity(), Severity::Corruption, "{name}");
    }
}

#[test]
fn r4_largest_cluster_parses() {
    let mut img = lone_header();
    put_u32(&mut img, 28, 4_186_127);
    let image = Image::parse(&img).expect("4186127 sectors per cluster is accepted");
    assert_eq!(image.header().cluster_size(), 4_186_127 * 512);
}

#[test]
fn r6_largest_ext_off_parses() {
    let mut img = lone_header();
    put_u64(&mut img, 56, MAX_EXT_OFF - 1);
    let image = Image::parse(&img).expect("the largest ext_off parses");
    assert_eq!(image.header().ext_offset(), Some((MAX_EXT_OFF - 1) * 512));
}

#[test]
fn short_file_header_reads_as_zero_padded() {
    // 20 bytes: magic and version; tracks reads as 0.
    let img = lone_header()[..20].to_vec();
    assert_eq!(parse_err(&img), Violation::ZeroTracks);
    // An empty file is no image at all (`not_a_parallels_image_is_an_error_not_r1`); 16 bytes
    // of magic with nothing after it read as a damaged Parallels header.
    assert!(matches!(Image::parse(&&[][..]), Err(parallels_image::Error::EmptyFile)));
    assert_eq!(parse_err(&img[..16]), Violation::BadVersion { found: 0 });
}

/// R7–R15: header fields the validator flags, each alone (one finding, of its rule and
/// severity).
#[test]
fn r7_to_r15_header_fields_flagged_alone() {
    use Set::*;
    type Case = (String, fn() -> Vec<u8>, Vec<Set>, Violation, Rule, Severity);
    let mut cases: Vec<Case> = vec![
        // b"Ynot"
        (
            "r7 unclean".into(),
            base,
            vec![U32(44, INUSE_OPEN)],
            Violation::Unclean,
            Rule::R7,
            Severity::Corruption,
        ),
        (
            "r8 unknown inuse".into(),
            base,
            vec![U32(44, 0x1234_5678)],
            Violation::UnknownInuse { found: 0x1234_5678 },
            Rule::R8,
            Severity::NonCanonical,
        ),
        // v2 reads all 64 bits of the size, which the BAT then does not cover.
        (
            "r10 v2 uses all 64 bits".into(),
            base,
            vec![U64(36, (1u64 << 32) | 2048)],
            Violation::SizeBeyondBat {
                nb_sectors: (1 << 32) | 2048,
                covered: 2048,
            },
            Rule::R11,
            Severity::Corruption,
        ),
        (
            "r15 v1 data_off past eof".into(),
            base_v1,
            vec![U32(48, 257), U32(64, 0)],
            Violation::DataOffPastEof {
                data_start: 257 * 512,
                file_len: 131072,
            },
            Rule::R15,
            Severity::Corruption,
        ),
    ];
    for found in [4u32, 0x8000_0001, u32::MAX] {
        let v = Violation::UnknownFlags { found };
        let case = (
            format!("r9 flags {found:#x}"),
            base as fn() -> Vec<u8>,
            vec![U32(52, found)],
        );
        cases.push((case.0, case.1, case.2, v, Rule::R9, Severity::NonCanonical));
    }
    assert_eq!(cases.len(), 7);
    assert_eq!(&INUSE_OPEN.to_le_bytes(), b"Ynot");
    for (name, base, sets, want, rule, severity) in cases {
        let mut img = base();
        apply(&mut img, &sets);
        assert_only_named(&name, &img, want, rule, severity);
    }
}

#[test]
fn r7_builder_inuse_open() {
    let (img, _) = build(&ImageBuilder::new(1 << 20).cluster_size(CS).inuse(INUSE_OPEN));
    assert_only(&img, Violation::Unclean, Rule::R7, Severity::Corruption);
}

#[test]
fn r8_known_inuse_values_are_clean() {
    let mut img = base();
    put_u32(&mut img, 44, INUSE_CLOSED_V21);
    assert_eq!(&img[44..48], b"v2.1");
    assert_clean(&img);
    // Parallels Desktop's tags, as its images carry them.
    for tag in [b"pd17", b"pd22"] {
        img[44..48].copy_from_slice(tag);
        assert_clean(&img);
        let name = parallels_image::raw::header::inuse_name(get_u32(&img, 44));
        assert_eq!(name.map(str::as_bytes), Some(&tag[..]));
    }
    assert_eq!(parallels_image::raw::header::inuse_name(0x1234_5678), None);
}

#[test]
fn r9_known_flags_are_clean() {
    for flags in [1u32, 2, 3] {
        let mut img = base();
        put_u32(&mut img, 52, flags);
        assert_clean(&img);
    }
}

#[test]
fn r10_v1_size_high_bits() {
    let mut img = base_v1();
    let nb_sectors = (1u64 << 32) | 2048;
    put_u64(&mut img, 36, nb_sectors);
    assert_only(
        &img,
        Violation::V1SizeHighBits { nb_sectors },
        Rule::R10,
        Severity::NonCanonical,
    );
    // Readers use the low 32 bits only.
    let image = parallels_image::open(&img).unwrap();
    assert_eq!(image.header().nb_sectors, 2048);
    assert_eq!(image.header().virtual_size(), 1 << 20);
}

#[test]
fn r11_size_beyond_bat() {
    let mut img = base();
    put_u64(&mut img, 36, 2049);
    assert_only(
        &img,
        Violation::SizeBeyondBat {
            nb_sectors: 2049,
            covered: 16 * 128,
        },
        Rule::R11,
        Severity::Corruption,
    );
    // A size below what the BAT covers is fine.
    put_u64(&mut img, 36, 2047);
    assert_clean(&img);
}

#[test]
fn r12_v2_data_off_zero() {
    let (mut img, _) = build(&ImageBuilder::new(1 << 20).cluster_size(CS));
    put_u32(&mut img, 48, 0);
    img.truncate(128);
    assert_only(&img, Violation::DataOffZero, Rule::R12, Severity::Corruption);
}

#[test]
fn r12_v2_data_off_zero_untruncated_leaks_the_padding() {
    let (mut img, _) = build(&ImageBuilder::new(1 << 20).cluster_size(CS));
    put_u32(&mut img, 48, 0);
    assert_findings(
        &img,
        parallels_image::RuleMode::Strict,
        &[
            (Violation::DataOffZero, Severity::Corruption),
            (
                Violation::Leak {
                    offset: 128,
                    len: 65536 - 128,
                },
                Severity::Leak,
            ),
        ],
    );
}

#[test]
fn r12_v1_data_off_zero_means_end_of_bat() {
    // A compact v1 image has its data right after the BAT, rounded up to a sector: data_off 0
    // says the same thing.
    let (mut img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .variant(Variant::V1)
            .compact_v1(true)
            .data(0, GuestData::Fill { len: 4096, byte: 0x5a }),
    );
    assert_eq!(layout.data_start, 512);
    assert_eq!(get_u32(&img, 48), 1);
    // Valid; ploop refuses data_off 0 and 1 in v1, so each is a note (R47).
    let note = |data_off| [(Violation::V1DataOffUnset { data_off }, Severity::Note)];
    assert_findings(&img, RuleMode::Strict, &note(1));
    put_u32(&mut img, 48, 0);
    assert_findings(&img, RuleMode::Strict, &note(0));
    let image = parallels_image::open(&img).unwrap();
    assert_eq!(image.header().data_start(), 512);
}

#[test]
fn r13_data_off_unaligned() {
    // An image with an extension cluster at 64 KiB, so that the data area may start inside it.
    let (mut img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[])),
    );
    assert_eq!(layout.ext_offset, Some(65536));
    assert_clean(&img);
    put_u32(&mut img, 48, 129);
    assert_only(
        &img,
        Violation::DataOffUnaligned {
            data_off: 129,
            tracks: 128,
        },
        Rule::R13,
        Severity::Corruption,
    );
}

#[test]
fn r13_v1_data_off_need_not_be_aligned() {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .variant(Variant::V1)
            .compact_v1(true),
    );
    assert_eq!(get_u32(&img, 48), 1);
    assert_eq!(layout.file_len, 512);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[(Violation::V1DataOffUnset { data_off: 1 }, Severity::Note)],
    );
}

/// R14 in both units: 64 MiB in 4 KiB clusters, data_off 8 (sectors) puts the data area at
/// 4096, inside the BAT (16384 entries end at byte 65600), whose end rounds up to a sector (v1)
/// or a cluster (v2).
#[test]
fn r14_data_off_inside_bat() {
    for (variant, bat0, min_start) in [(Variant::V1, 136, 66048), (Variant::V2, 17, 69632)] {
        let (mut img, layout) = build(
            &ImageBuilder::new(64 << 20)
                .cluster_size(4096)
                .variant(variant)
                .data(0, GuestData::Fill { len: 4096, byte: 1 }),
        );
        assert_eq!(layout.data_start, 69632, "{variant:?}");
        assert_eq!(layout.bat[0], bat0, "{variant:?}");
        put_u32(&mut img, 48, 8);
        let v = Violation::DataOffInsideBat {
            data_off: 8,
            data_start: 4096,
            min_start,
        };
        assert_only_named(&format!("{variant:?}"), &img, v, Rule::R14, Severity::Corruption);
    }
}

#[test]
fn r15_data_off_past_eof() {
    let (mut img, _) = build(&ImageBuilder::new(1 << 20).cluster_size(CS));
    img.truncate(128);
    assert_only(
        &img,
        Violation::DataOffPastEof {
            data_start: 65536,
            file_len: 128,
        },
        Rule::R15,
        Severity::Corruption,
    );
}

#[test]
fn not_a_parallels_image_is_an_error_not_r1() {
    use parallels_image::Error;
    // Empty: a typed error of its own.
    assert!(matches!(Image::parse(&&[][..]), Err(Error::EmptyFile)));
    // qcow2, XML, a raw disk's MBR, random bytes: far from both magics, version not 2.
    let mut qcow2 = vec![0u8; 512];
    qcow2[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Parallels_disk_image/>".to_vec();
    let mut mbr = vec![0u8; 512];
    mbr[..16].copy_from_slice(&[
        0xeb, 0x63, 0x90, 0x10, 0x8e, 0xd0, 0xbc, 0, 0xb0, 0xb8, 0, 0, 0x8e, 0xd8, 0x8e, 0xc0,
    ]);
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, bytes) in [("qcow2", &qcow2), ("xml", &xml), ("mbr", &mbr), ("random", &random)] {
        let mut found = [0u8; 16];
        let n = bytes.len().min(16);
        found[..n].copy_from_slice(&bytes[..n]);
        let version = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        match Image::parse(&&bytes[..]) {
            Err(Error::NotParallels { found: f, version: v }) => assert_eq!((f, v), (found, version), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The line: a magic one byte off, or any magic with version 2, is a damaged Parallels image.
    let mut img = base();
    img[3] = b'x';
    assert!(matches!(parse_err(&img), Violation::BadMagic { .. }));
    img[..16].copy_from_slice(b"ABCDEFGHIJKLMNOP");
    assert!(matches!(parse_err(&img), Violation::BadMagic { .. }));
    put_u32(&mut img, 16, 3);
    assert!(matches!(
        Image::parse(&&img[..]),
        Err(Error::NotParallels { version: 3, .. })
    ));
}
