//! QEMU 7.2's `parallels` driver (Debian 12's `qemu-utils` 7.2.22, whose `block/parallels.c` and
//! `block/parallels-ext.c` are 7.2.0's): where it differs from QEMU 10.0.2 (`spec/qemu.md`,
//! "QEMU 7.2 and 10.0").
//!
//! - No bound on `ext_off` (10.0's H5): the offset is shifted to bytes in 64 bits and used as a
//!   signed number; 0 or below aborts on an assertion, past QEMU's largest offset fails the
//!   read (E1), anything else is read as the extension cluster.
//! - The header and BAT read is rounded up to the page only when `data_off` (compared, as
//!   sectors, with the rounded size in bytes) is not below it.
//! - `qemu-img check` has no `data_off` check (C2) and no duplicate scan (C5); a cluster is
//!   "outside" only when it starts past the end of the file (not when it ends past it), and
//!   still counts as allocated; the image end is the highest allocated cluster's end, or one
//!   cluster when none is allocated.
//! - A read-write open refuses an unclean image instead of repairing it, and on close cuts (or
//!   grows) the file at the data end its open computed.
//! - Its assertion texts carry other line numbers and a `../../` prefix.

use super::*;
use crate::raw::header::RawHeader;

/// QEMU 7.2's assertion text when a bitmap granularity is not a power of two (B4).
pub const ABORT_GRANULARITY_7_2: &str = "../../block/dirty-bitmap.c:105: bdrv_create_dirty_bitmap: Assertion `is_power_of_2(granularity) && granularity >= BDRV_SECTOR_SIZE' failed.";
/// QEMU 7.2's assertion text when a bitmap is loaded on a disk of 0 sectors (B9).
pub const ABORT_EMPTY_DISK_7_2: &str =
    "../../util/hbitmap.c:176: hbitmap_iter_init: Assertion `pos < hb->size' failed.";
/// QEMU 7.2's assertion text when `ext_off * 512` wraps to 0 or a negative offset (H5 in 7.2).
pub const ABORT_EXT_OFF_7_2: &str =
    "../../block/parallels-ext.c:287: parallels_read_format_extension: Assertion `ext_off > 0' failed.";

/// What QEMU 7.2 makes of an `ext_off` at or past QEMU 10's bound (H5).
pub(super) enum ExtOff<'a> {
    /// The open ends before the extension is parsed (the BAT read fails, the offset wraps to 0
    /// or below, or ends past QEMU's largest offset).
    Decided(Box<Prediction>),
    /// The offset, wrapped to 64 bits, is an ordinary one: the file as QEMU 7.2 reads it.
    Wrapped(Patched<'a>),
}

/// Bytes `[EXT_OFF.start, EXT_OFF.end)` of the header: its `ext_off` field.
const EXT_OFF: std::ops::Range<u64> = {
    let at = std::mem::offset_of!(RawHeader, ext_off) as u64;
    at..at + 8
};

/// A source whose `ext_off` field ([`EXT_OFF`]) reads as another value.
pub(super) struct Patched<'a> {
    inner: &'a dyn Source,
    ext_off: [u8; 8],
}

impl Source for Patched<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, len: u64) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        let got = self.inner.read_at(offset, len)?;
        let end = offset.saturating_add(got.len() as u64);
        if end <= EXT_OFF.start || offset >= EXT_OFF.end {
            return Ok(got);
        }
        let mut bytes = got.into_owned();
        for (k, b) in self.ext_off.iter().enumerate() {
            let at = EXT_OFF.start + k as u64;
            if at >= offset && at < end {
                bytes[(at - offset) as usize] = *b;
            }
        }
        Ok(std::borrow::Cow::Owned(bytes))
    }
}

/// The size of QEMU 7.2's header and BAT read, and whether it is over one request.
fn bat_read_fails(bat_entries: u32, data_off: u32) -> bool {
    let size = 64 + 4 * u64::from(bat_entries);
    let rounded = size.next_multiple_of(MEM_ALIGN);
    // `data_end` is `data_off` in sectors, or the BAT's end rounded to a sector (in bytes),
    // compared with the rounded size in bytes.
    let data_end = match data_off {
        0 => size.next_multiple_of(512),
        d => u64::from(d),
    };
    let read = if data_end < rounded { size } else { rounded };
    read > MAX_REQUEST
}

/// For a header whose only fault (to QEMU 10) is an `ext_off` at or past its bound: QEMU 7.2's
/// reading of it. `None` for every other file.
pub(super) fn ext_off_source(source: &dyn Source) -> std::io::Result<Option<ExtOff<'_>>> {
    let head = source.read_at(0, 64)?;
    if head.is_empty() {
        return Ok(None);
    }
    let raw = RawHeader::read_padded(&head);
    let ext_off = match crate::header::Header::decode(&raw) {
        Err(Violation::ExtOffTooBig { ext_off, .. }) => ext_off,
        _ => return Ok(None),
    };
    let (bat_entries, data_off) = (raw.bat_entries.get(), raw.data_off.get());
    let patched = |value: u64| Patched {
        inner: source,
        ext_off: value.to_le_bytes(),
    };
    let info = if bat_read_fails(bat_entries, data_off) {
        QemuOutcome::RejectsBatRead
    } else {
        match ext_off_fate(ext_off) {
            Ok(sector) => return Ok(Some(ExtOff::Wrapped(patched(sector)))),
            Err(fails) => fails,
        }
    };
    // A read-write open skips the extension: the file as it would be without one.
    let without = patched(0);
    let read_write = match Image::parse_compact(&without, crate::image::RuleMode::Strict) {
        Ok(image) => match read_write(&image) {
            ReadWrite::Opens {
                repairs, truncates_to, ..
            } => ReadWrite::Opens {
                drops_extension: true,
                repairs,
                truncates_to,
            },
            refused => refused,
        },
        Err(Error::Io(e)) => return Err(e),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    Ok(Some(ExtOff::Decided(Box::new(Prediction {
        check: QemuCheck::OpenFails(info.clone()),
        info,
        read_write,
        version: Version::V7_2,
    }))))
}

/// What QEMU 7.2, which does not bound `ext_off`, makes of one: the sector it reads the
/// extension at (the byte offset `ext_off * 512` taken in 64 bits, wrapped), or how the open
/// fails: an assertion when that offset is 0 or negative, a failed read when no cluster fits
/// below QEMU's largest offset (2^63 - 512).
fn ext_off_fate(ext_off: u64) -> Result<u64, QemuOutcome> {
    let offset = ext_off.wrapping_shl(9) as i64;
    if offset <= 0 {
        Err(QemuOutcome::Aborts {
            reason: QemuReason::OffsetTooBig,
            assertion: ABORT_EXT_OFF_7_2.into(),
        })
    } else if offset as u64 / 512 >= crate::raw::header::MAX_EXT_OFF {
        Err(reject(
            QemuReason::ExtensionRead,
            "Failed to read Format Extension cluster: Input/output error",
        ))
    } else {
        Ok(offset as u64 / 512)
    }
}

/// [`super::predict_unparsable_for`] of an `ext_off` past QEMU 10's bound, knowing nothing else
/// of the file.
pub(super) fn unparsable_ext_off(ext_off: u64) -> Prediction {
    let info = match ext_off_fate(ext_off) {
        Ok(sector) => undefined(format!(
            "QEMU 7.2 reads the extension at byte {}, which only the whole file predicts",
            sector * 512
        )),
        Err(fails) => fails,
    };
    Prediction {
        check: QemuCheck::OpenFails(info.clone()),
        info,
        read_write: ReadWrite::Opens {
            drops_extension: true,
            repairs: false,
            truncates_to: None,
        },
        version: Version::V7_2,
    }
}

/// The driver's open and the block layer's size refresh, as QEMU 7.2 does them.
pub(super) fn open_outcome(image: &Image<'_>) -> QemuOutcome {
    let h = image.header();
    if bat_read_fails(h.bat_entries, h.raw.data_off.get()) {
        return QemuOutcome::RejectsBatRead;
    }
    let mut bitmaps = Vec::new();
    if let Some(ext) = image.extension() {
        if let Some(failure) = extension_outcome(ext, h.nb_sectors, &mut bitmaps) {
            return match failure {
                QemuOutcome::Aborts {
                    reason: QemuReason::Granularity,
                    ..
                } => QemuOutcome::Aborts {
                    reason: QemuReason::Granularity,
                    assertion: ABORT_GRANULARITY_7_2.into(),
                },
                QemuOutcome::Aborts {
                    reason: QemuReason::EmptyDisk,
                    ..
                } => QemuOutcome::Aborts {
                    reason: QemuReason::EmptyDisk,
                    assertion: ABORT_EMPTY_DISK_7_2.into(),
                },
                other => other,
            };
        }
    }
    if h.nb_sectors.wrapping_mul(512) > MAX_LENGTH {
        return reject(
            QemuReason::RefreshSize,
            "Could not refresh total sector count: File too large",
        );
    }
    QemuOutcome::Opens { bitmaps }
}

/// `qemu-img check` after a successful open, as QEMU 7.2 does it: C1, "outside" for a cluster
/// that starts past the end of the file, the leak after the highest allocated cluster; no C2, no C5.
pub(super) fn check_outcome(image: &Image<'_>) -> QemuCheck {
    let mut walk = CheckWalk72::new(image);
    for (i, e) in image.allocated_entries() {
        walk.entry(i, e);
    }
    walk.finish()
}

/// [`check_outcome`] fed one allocated entry at a time, in index order, by a walk of the table
/// that others share (`prlimg info` reads the table once for both versions' checks).
pub(crate) struct CheckWalk72 {
    size: u64,
    cs: u64,
    mult: u64,
    c: CheckCounts,
    high: u64,
    prev: u64,
    next_index: u32,
}

impl CheckWalk72 {
    pub(crate) fn new(image: &Image<'_>) -> Self {
        let h = image.header();
        let mut c = CheckCounts {
            total_clusters: u64::from(h.bat_entries),
            ..Default::default()
        };
        if h.raw.inuse.get() == INUSE_OPEN {
            c.error(CheckLine::NotClosed);
            c.corruptions += 1;
        }
        CheckWalk72 {
            size: image.file_len().div_ceil(512) * 512,
            cs: h.cluster_size(),
            mult: if h.variant == Variant::V1 {
                1
            } else {
                u64::from(h.cluster_sectors)
            },
            c,
            high: 0,
            prev: 0,
            next_index: 0,
        }
    }

    /// Allocated entry `e` at index `i` (after every lower one).
    #[inline]
    pub(crate) fn entry(&mut self, i: u32, e: u32) {
        if i != self.next_index {
            // An unallocated entry between: the run breaks.
            self.prev = 0;
        }
        self.next_index = i.wrapping_add(1);
        // Offsets are below 2^32 * 2^22 * 512 = 2^63: no wrap-around.
        let off = u64::from(e) * self.mult * 512;
        if off > self.size {
            self.c.error(CheckLine::Outside { index: i });
            self.c.corruptions += 1;
        }
        self.c.allocated_clusters += 1;
        self.high = self.high.max(off);
        if self.prev != 0 && self.prev + self.cs != off {
            self.c.fragmented_clusters += 1;
        }
        self.prev = off;
    }

    /// The check's outcome once every allocated entry was seen.
    pub(crate) fn finish(mut self) -> QemuCheck {
        let c = &mut self.c;
        c.image_end_offset = self.high + self.cs;
        if self.size > c.image_end_offset {
            let leaked = self.size - c.image_end_offset;
            c.error(CheckLine::Leaked { bytes: leaked });
            c.leaks += leaked.div_ceil(self.cs);
        }
        QemuCheck::Completes(self.c)
    }
}

/// What a read-write open by QEMU 7.2 does: it refuses an unclean image (only `qemu-img check
/// -r` may open one), ignores the extension, and on close sets the file's length to its data
/// end (the data start, moved past each BAT entry at or beyond it in BAT order).
pub(super) fn read_write(image: &Image<'_>) -> ReadWrite {
    let h = image.header();
    if bat_read_fails(h.bat_entries, h.raw.data_off.get()) {
        return ReadWrite::Refused {
            reason: QemuReason::BatRead,
        };
    }
    if h.raw.inuse.get() == INUSE_OPEN {
        return ReadWrite::Refused {
            reason: QemuReason::Unclean,
        };
    }
    if h.nb_sectors.wrapping_mul(512) > MAX_LENGTH {
        return ReadWrite::Refused {
            reason: QemuReason::RefreshSize,
        };
    }
    let tracks = u64::from(h.cluster_sectors);
    let mult = if h.variant == Variant::V1 { 1 } else { tracks };
    let mut data_end = match h.raw.data_off.get() {
        0 => h.bat_end().next_multiple_of(512),
        d => u64::from(d),
    };
    // An unallocated entry is sector 0, which moves no data end (`data_off` or the BAT's end
    // is never 0).
    for (_, e) in image.allocated_entries() {
        let off = u64::from(e) * mult;
        if off >= data_end {
            data_end = off + tracks;
        }
    }
    let end = data_end.saturating_mul(512);
    ReadWrite::Opens {
        drops_extension: h.ext_off != 0,
        repairs: false,
        truncates_to: (end < image.file_len()).then_some(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_print_and_come_from_banners() {
        assert_eq!("7.2".parse::<Version>(), Ok(Version::V7_2));
        assert_eq!("7.2.22".parse::<Version>(), Ok(Version::V7_2));
        assert_eq!("10.0".parse::<Version>(), Ok(Version::V10_0));
        assert_eq!("10".parse::<Version>(), Ok(Version::V10_0));
        assert_eq!("10.0.2".parse::<Version>(), Ok(Version::V10_0));
        for bad in ["8.0", "7", "7.2.", "10.1", "", "all", "7.2.x"] {
            assert_eq!(bad.parse::<Version>(), Err(UnknownVersion(bad.into())), "{bad:?}");
        }
        assert_eq!(
            UnknownVersion("8.0".into()).to_string(),
            "QEMU version \"8.0\" is not predicted (expected 7.2 or 10.0)"
        );
        assert_eq!(
            (Version::V7_2.to_string(), Version::V10_0.to_string()),
            ("7.2".into(), "10.0".into())
        );
        assert_eq!(Version::default(), Version::V10_0);
        assert_eq!(
            Version::from_banner("qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some(Version::V7_2)
        );
        assert_eq!(
            Version::from_banner("qemu-img version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some(Version::V10_0)
        );
        assert_eq!(Version::from_banner("qemu-img version 8.2.2"), None);
    }

    #[test]
    fn patched_source_reads_the_new_ext_off_only() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let p = Patched {
            inner: &bytes,
            ext_off: [0xee; 8],
        };
        assert_eq!(p.size(), 100);
        assert_eq!(
            &p.read_at(50, 10).unwrap()[..],
            &[50, 51, 52, 53, 54, 55, 0xee, 0xee, 0xee, 0xee]
        );
        assert_eq!(&p.read_at(62, 4).unwrap()[..], &[0xee, 0xee, 64, 65]);
        assert_eq!(&p.read_at(0, 8).unwrap()[..], &bytes[..8]);
        assert_eq!(&p.read_at(64, 4).unwrap()[..], &bytes[64..68]);
    }

    #[test]
    fn the_bat_read_is_rounded_only_when_data_off_is_not_below_it() {
        // 536869873 entries: 2147479556 bytes, 2147483648 rounded (over 2147483136).
        assert!(!bat_read_fails(536_869_873, 0));
        assert!(!bat_read_fails(536_869_873, 128));
        assert!(bat_read_fails(536_869_873, u32::MAX));
        // Over the request size even unrounded.
        assert!(bat_read_fails(536_870_769, 0));
        assert!(!bat_read_fails(536_870_768, 0));
        assert!(!bat_read_fails(536_869_872, u32::MAX));
    }

    #[test]
    fn an_ext_off_past_qemu_10s_bound_alone() {
        let abort = unparsable_ext_off(1 << 54);
        assert_eq!(abort.info.message("x").as_deref(), Some(ABORT_EXT_OFF_7_2));
        assert_eq!(abort.check.exit_code(), Some(134));
        let read = unparsable_ext_off(crate::raw::header::MAX_EXT_OFF);
        assert_eq!(
            read.info.message("x").as_deref(),
            Some("Failed to read Format Extension cluster: Input/output error")
        );
        assert_eq!(unparsable_ext_off((1 << 55) + 8).info.kind(), "undefined");
        assert_eq!(abort.version, Version::V7_2);
    }
}
