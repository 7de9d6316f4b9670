//! What QEMU 10.0.2 does with an image, predicted from its bytes: `qemu-img info` (a read-only
//! open) and `qemu-img check`. (What ploop does is [`crate::predict_ploop`]'s answer.)
//!
//! QEMU checks less than [`crate::validate`] does, in its own order, with 32- and 64-bit
//! wrap-arounds of its own; this module follows what the QEMU 10.0.2 binary was seen to do on
//! a catalogue of crafted images (see `spec/qemu.md`), down to the message text. Where QEMU reads
//! past its own buffer the outcome is reported as [`QemuOutcome::Undefined`].

use crate::error::{Error, Violation};
use crate::extension::Extension;
use crate::header::Variant;
use crate::image::Image;
use crate::raw::bitmap::BITMAP_HEADER_SIZE;
use crate::raw::extension::EXT_MAGIC;
use crate::raw::feature::{FEATURE_DIRTY_BITMAP, FEATURE_HEADER_SIZE};
use crate::raw::header::INUSE_OPEN;
use crate::raw::padded;
use crate::source::Source;

/// QEMU's largest byte offset (`BDRV_MAX_LENGTH`).
const MAX_LENGTH: u64 = (1 << 63) - (1 << 30);
/// QEMU's largest single read request.
const MAX_REQUEST: u64 = 2_147_483_136;
/// QEMU reads the header and BAT rounded up to the host's memory alignment (the page size).
const MEM_ALIGN: u64 = 4096;
/// Largest disk size in sectors a QEMU bitmap can cover.
const MAX_BITMAP_SECTORS: i64 = (1 << 54) - 1;

/// Assertion text when a bitmap granularity is not a power of two.
pub const ABORT_GRANULARITY: &str = "block/dirty-bitmap.c:107: bdrv_create_dirty_bitmap: Assertion `is_power_of_2(granularity) && granularity >= BDRV_SECTOR_SIZE' failed.";
/// Assertion text when a bitmap is loaded on a disk of 0 sectors.
pub const ABORT_EMPTY_DISK: &str = "util/hbitmap.c:176: hbitmap_iter_init: Assertion `pos < hb->size' failed.";
/// Assertion text of `qemu-img check` for a BAT entry it cannot index.
pub const ABORT_CHECK_DUPLICATE: &str =
    "block/parallels.c:830: parallels_check_duplicate: Assertion `ret != -E2BIG' failed.";

/// What a read-only open (`qemu-img info`) does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuOutcome {
    /// The image opens (exit 0) with these bitmaps loaded, in record order.
    Opens {
        /// Bitmap names.
        bitmaps: Vec<String>,
    },
    /// Exit 1 with `qemu-img: Could not open 'PATH': MESSAGE`.
    Rejects {
        /// The message after the path.
        message: String,
    },
    /// Exit 1 with `qemu-img: Could not open 'PATH': Could not open 'PATH': Input/output error`
    /// (the header and BAT are too large for one read).
    RejectsBatRead,
    /// `qemu-img info` only: exit 1 with `qemu-img: Can't get image size 'PATH'SUFFIX` (the
    /// disk size is negative as a signed 64-bit number).
    NoImageSize {
        /// Empty, or `: ` and an error text.
        suffix: String,
    },
    /// Exit 134 with `qemu-img: ASSERTION`.
    Aborts {
        /// The assertion text.
        assertion: String,
    },
    /// QEMU reads past its buffer: the outcome depends on memory layout.
    Undefined {
        /// Where and why.
        reason: String,
    },
}

impl QemuOutcome {
    /// `"opens"`, `"rejects"`, `"aborts"` or `"undefined"`.
    pub fn kind(&self) -> &'static str {
        match self {
            QemuOutcome::Opens { .. } => "opens",
            QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead | QemuOutcome::NoImageSize { .. } => "rejects",
            QemuOutcome::Aborts { .. } => "aborts",
            QemuOutcome::Undefined { .. } => "undefined",
        }
    }

    /// The exit status of `qemu-img info`, if predictable.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            QemuOutcome::Opens { .. } => Some(0),
            QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead | QemuOutcome::NoImageSize { .. } => Some(1),
            QemuOutcome::Aborts { .. } => Some(134),
            QemuOutcome::Undefined { .. } => None,
        }
    }

    /// The message QEMU gives after `Could not open 'PATH': ` (or the assertion), with `path`
    /// as typed on the command line.
    pub fn message(&self, path: &str) -> Option<String> {
        match self {
            QemuOutcome::Opens { .. } | QemuOutcome::Undefined { .. } => None,
            QemuOutcome::Rejects { message } => Some(message.clone()),
            QemuOutcome::RejectsBatRead => Some(format!("Could not open '{path}': Input/output error")),
            QemuOutcome::NoImageSize { suffix } => Some(format!("Can't get image size '{path}'{suffix}")),
            QemuOutcome::Aborts { assertion } => Some(assertion.clone()),
        }
    }

    /// The line `qemu-img info -f parallels PATH` prints on stderr, if any.
    pub fn stderr_line(&self, path: &str) -> Option<String> {
        match self {
            QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead => {
                Some(format!("qemu-img: Could not open '{path}': {}", self.message(path)?))
            }
            QemuOutcome::NoImageSize { .. } | QemuOutcome::Aborts { .. } => {
                Some(format!("qemu-img: {}", self.message(path)?))
            }
            _ => None,
        }
    }
}

/// What `qemu-img check -f parallels` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuCheck {
    /// The open fails as `info`'s would (never [`QemuOutcome::NoImageSize`]).
    OpenFails(QemuOutcome),
    /// The check runs to the end.
    Completes(CheckCounts),
    /// `qemu-img: Check failed: Device or resource busy`, exit 1, no report (the last allocated
    /// BAT entry is a duplicate).
    Fails,
    /// The duplicate scan hits an assertion (exit 134) after printing the earlier errors.
    Aborts {
        /// The assertion text.
        assertion: String,
    },
}

impl QemuCheck {
    /// The exit status of `qemu-img check`, if predictable.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            QemuCheck::OpenFails(o) => o.exit_code(),
            QemuCheck::Completes(c) => Some(if c.corruptions > 0 {
                2
            } else if c.leaks > 0 {
                3
            } else {
                0
            }),
            QemuCheck::Fails => Some(1),
            QemuCheck::Aborts { .. } => Some(134),
        }
    }
}

/// The counters of a completed `qemu-img check`, as in its JSON output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// `corruptions`.
    pub corruptions: u64,
    /// `leaks` (in clusters).
    pub leaks: u64,
    /// `image-end-offset`.
    pub image_end_offset: u64,
    /// `total-clusters`.
    pub total_clusters: u64,
    /// `allocated-clusters`.
    pub allocated_clusters: u64,
    /// `fragmented-clusters`.
    pub fragmented_clusters: u64,
    /// The first [`MAX_ERROR_LINES`] `ERROR …` lines, in order.
    pub errors: Vec<String>,
    /// How many more `ERROR …` lines QEMU prints.
    pub errors_omitted: u64,
}

/// How many of QEMU's error lines a [`CheckCounts`] keeps (QEMU prints one per bad BAT entry,
/// which for a hostile header is hundreds of millions).
pub const MAX_ERROR_LINES: usize = 1000;

impl CheckCounts {
    fn error(&mut self, line: impl FnOnce() -> String) {
        if self.errors.len() < MAX_ERROR_LINES {
            self.errors.push(line());
        } else {
            self.errors_omitted += 1;
        }
    }
}

/// Predictions for the reference implementations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// What `qemu-img info` does.
    pub info: QemuOutcome,
    /// What `qemu-img check` does.
    pub check: QemuCheck,
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(padded(b, at))
}
fn u64_at(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(padded(b, at))
}

fn errno_suffix(total: u64) -> String {
    let e = (total.wrapping_neg() & 0xffff_ffff) as u32 as i32;
    if e == 0 {
        return String::new();
    }
    let text = std::io::Error::from_raw_os_error(e).to_string();
    let text = match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    format!(": {text}")
}

/// Predicts what QEMU 10.0.2 does with the image in `source`.
pub fn predict(source: &dyn Source) -> std::io::Result<Prediction> {
    // QEMU's header checks are rules R1-R6 of this crate, in the same order. The BAT is read
    // through a buffer, keeping only its allocated entries.
    let image = match Image::parse_compact(source, crate::image::Mode::Strict) {
        Ok(image) => image,
        Err(Error::Io(e)) => return Err(e),
        Err(Error::Invalid(v)) => return Ok(predict_unparsable(&v)),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    Ok(predict_image(&image))
}

/// Predicts what QEMU 10.0.2 does with an image whose header failed `violation`, one of
/// the checks every parse makes (rules R1–R6, which are QEMU's own header checks in its order).
pub fn predict_unparsable(violation: &Violation) -> Prediction {
    let o = reject(header_message(violation));
    Prediction {
        info: o.clone(),
        check: QemuCheck::OpenFails(o),
    }
}

/// Predicts what QEMU 10.0.2 does with an image already parsed (its header passed
/// rules R1–R6; in either [`crate::Mode`]): [`predict`] without reading the metadata again.
pub fn predict_image(image: &Image<'_>) -> Prediction {
    let total = image.header().nb_sectors;
    let open = open_outcome(image);
    let info = match &open {
        QemuOutcome::Opens { .. } if (total as i64) < 0 => QemuOutcome::NoImageSize {
            suffix: errno_suffix(total),
        },
        // A size whose byte count wrapped past the block layer's check (e.g. 2^55 sectors):
        // the length query refuses more than INT64_MAX / 512 sectors.
        QemuOutcome::Opens { .. } if total > i64::MAX as u64 / 512 => QemuOutcome::NoImageSize {
            suffix: ": File too large".into(),
        },
        o => o.clone(),
    };
    let check = match open {
        QemuOutcome::Opens { .. } => check_outcome(image),
        o => QemuCheck::OpenFails(o),
    };
    Prediction { info, check }
}

fn header_message(v: &Violation) -> String {
    match v {
        Violation::BadMagic { .. } | Violation::BadVersion { .. } => "Image not in Parallels format",
        Violation::ZeroTracks => "Invalid image: Zero sectors per track",
        Violation::ClusterTooBig { .. } => "Invalid image: Too big cluster",
        Violation::CatalogTooLarge { .. } => "Catalog too large",
        _ => "Invalid image: Too big offset",
    }
    .into()
}

fn reject(message: impl Into<String>) -> QemuOutcome {
    QemuOutcome::Rejects {
        message: message.into(),
    }
}

/// The rest of the driver open and the block layer's size refresh.
fn open_outcome(image: &Image<'_>) -> QemuOutcome {
    let h = image.header();
    if (64 + 4 * u64::from(h.bat_entries)).next_multiple_of(MEM_ALIGN) > MAX_REQUEST {
        return QemuOutcome::RejectsBatRead;
    }
    let mut bitmaps = Vec::new();
    if let Some(ext) = image.extension() {
        if let Some(failure) = extension_outcome(ext, h.nb_sectors, &mut bitmaps) {
            return failure;
        }
    }
    if h.nb_sectors.wrapping_mul(512) > MAX_LENGTH {
        return reject("Could not refresh total sector count: File too large");
    }
    QemuOutcome::Opens { bitmaps }
}

/// The Format Extension as QEMU parses it; `Some` when the open fails there. The names of the
/// bitmaps QEMU loads are pushed onto `names` (empty when called).
fn extension_outcome(ext: &Extension<'_>, total: u64, names: &mut Vec<String>) -> Option<QemuOutcome> {
    let cs = ext.cluster_size;
    let off = ext.file_offset;
    if off + cs > MAX_LENGTH {
        return Some(reject("Failed to read Format Extension cluster: Input/output error"));
    }
    let c = ext.bytes();
    let magic = ext.magic();
    if magic != EXT_MAGIC {
        return Some(reject(format!(
            "Wrong parallels Format Extension magic: {magic:#x}, expected: {EXT_MAGIC:#x}"
        )));
    }
    if ext.stored_checksum() != ext.computed_checksum() {
        return Some(reject(
            "Wrong checksum in Format Extension header. Format extension is corrupted.",
        ));
    }
    let hdr = FEATURE_HEADER_SIZE as u64;
    let bh = BITMAP_HEADER_SIZE as u64;
    // QEMU's count of what is left drops by a header per record and never by the data.
    let (mut pos, mut rem) = (24u64, cs as i64 - 24);
    let mut seen = std::collections::HashSet::new();
    loop {
        if rem < hdr as i64 {
            return Some(reject(format!(
                "Can not read feature header, as remaining bytes ({rem}) in Format Extension is less than Feature header size ({hdr})"
            )));
        }
        if pos + hdr > cs {
            return Some(undefined(format!(
                "a feature header at byte {pos} of a {cs}-byte extension cluster"
            )));
        }
        let (magic, flags, ds) = (u64_at(c, pos), u64_at(c, pos + 8), u32_at(c, pos + 16));
        pos += hdr;
        rem -= hdr as i64;
        if flags != 0 {
            return Some(reject("Flags for extension feature are unsupported"));
        }
        if i64::from(ds) > rem {
            return Some(reject("Feature data_size exceedes Format Extension cluster"));
        }
        if magic == 0 {
            return None;
        }
        if magic != FEATURE_DIRTY_BITMAP {
            return Some(reject(format!("Unknown feature: {magic:#x}")));
        }
        if u64::from(ds) < bh {
            return Some(reject(format!(
                "Too small Bitmap Feature area in Parallels Format Extension: {ds} bytes, expected at least {bh} bytes"
            )));
        }
        if pos + bh > cs {
            return Some(undefined(format!(
                "a bitmap header at byte {pos} of a {cs}-byte extension cluster"
            )));
        }
        let size = u64_at(c, pos);
        let id: [u8; 16] = padded(c, pos + 8);
        let gran = u32_at(c, pos + 24);
        let l1 = u32_at(c, pos + 28);
        if size != total {
            return Some(reject(format!(
                "Bitmap size (in sectors) {} differs from disk size in sectors {}",
                size as i64, total as i64
            )));
        }
        if u64::from(l1) * 8 > u64::from(ds) - bh {
            return Some(reject(
                "Bitmaps feature corrupted: l1 table exceeds extension data_size",
            ));
        }
        let g = gran.wrapping_shl(9);
        if !g.is_power_of_two() {
            return Some(QemuOutcome::Aborts {
                assertion: ABORT_GRANULARITY.into(),
            });
        }
        let name = uuid::Uuid::from_bytes(id).hyphenated().to_string();
        // Names are the ids spelled out, so a set of ids finds a repeat in one probe (searching
        // the list per bitmap was quadratic: 60 ms for the 5 698 bitmaps a 1 MiB cluster holds).
        if !seen.insert(id) {
            return Some(reject(format!("Bitmap already exists: {name}")));
        }
        let t = total as i64;
        if t < 0 {
            return Some(reject(format!("could not get length of device{}", errno_suffix(total))));
        }
        if t > MAX_BITMAP_SECTORS {
            return Some(reject("could not get length of device: File too large"));
        }
        let tab = (t as u64 * 512).div_ceil(u64::from(g)).div_ceil(8 * cs);
        if u64::from(l1) != tab {
            return Some(reject(format!(
                "Bitmap table size {l1} does not correspond to bitmap size and cluster size. Expected {tab}"
            )));
        }
        if pos + bh + 8 * u64::from(l1) > cs {
            return Some(undefined(format!(
                "the L1 table of the bitmap at byte {pos} runs past the cluster"
            )));
        }
        for i in 0..u64::from(l1) {
            let e = u64_at(c, pos + bh + 8 * i);
            if e <= 1 {
                continue;
            }
            let o = e.wrapping_mul(512) as i64;
            if o < 0 || o as u64 + cs > MAX_LENGTH {
                return Some(reject("Failed to read bitmap data cluster: Input/output error"));
            }
        }
        if t == 0 {
            return Some(QemuOutcome::Aborts {
                assertion: ABORT_EMPTY_DISK.into(),
            });
        }
        names.push(name);
        pos = (pos + u64::from(ds)).next_multiple_of(8);
    }
}

fn undefined(reason: String) -> QemuOutcome {
    QemuOutcome::Undefined {
        reason: format!("QEMU reads past its buffer: {reason}"),
    }
}

/// `qemu-img check` after a successful open.
fn check_outcome(image: &Image<'_>) -> QemuCheck {
    let h = image.header();
    // The block layer sees the file's length rounded up to a whole sector.
    let file_len = image.file_len().div_ceil(512) * 512;
    let tracks = u64::from(h.cluster_sectors);
    let cs = h.cluster_size();
    let v1 = h.variant == Variant::V1;
    let mult = if v1 { 1 } else { tracks };
    let n = h.bat_entries;
    let mut c = CheckCounts {
        total_clusters: u64::from(n),
        ..Default::default()
    };

    let mut min_off = h.bat_end().div_ceil(512);
    if !v1 {
        // QEMU rounds with a bit mask, which is exact only for a power of two.
        min_off = (min_off + tracks - 1) & tracks.wrapping_neg();
    }
    let data_off = u64::from(h.raw.data_off.get());
    let v1_default = v1 && data_off == 0;
    let data_off_ok = v1_default || (data_off >= min_off && data_off <= file_len / 512);
    let data_start = if data_off_ok && !v1_default { data_off } else { min_off };
    // Entries past the end of the file within the table read as 0 (unallocated).
    let mut max_entry = 0u64;

    if h.raw.inuse.get() == INUSE_OPEN {
        c.error(|| "ERROR image was not closed correctly".into());
        c.corruptions += 1;
    }
    if !data_off_ok {
        c.error(|| "ERROR data_off field has incorrect value".into());
        c.corruptions += 1;
    }
    let mut high = 0u64;
    if cs > file_len {
        // Every entry is outside, unallocated ones and those past the end of the file included
        // (they read as 0). Counted, not walked: there may be half a billion.
        for (_, e) in image.allocated_entries() {
            max_entry = max_entry.max(u64::from(e));
        }
        for i in 0..n {
            if c.errors.len() >= MAX_ERROR_LINES {
                c.errors_omitted += u64::from(n - i);
                break;
            }
            c.error(|| format!("ERROR cluster {i} is outside image"));
        }
        c.corruptions += u64::from(n);
    } else {
        // Unallocated entries (offset 0) are inside and do not move `high`.
        for (i, e) in image.allocated_entries() {
            max_entry = max_entry.max(u64::from(e));
            let off = u64::from(e) * mult * 512;
            if off + cs > file_len {
                c.error(|| format!("ERROR cluster {i} is outside image"));
                c.corruptions += 1;
            } else {
                high = high.max(off);
            }
        }
    }
    let data_end = data_start.max(max_entry * mult + tracks);
    let image_end = if high != 0 { high + cs } else { data_end * 512 };
    c.image_end_offset = image_end;
    if file_len > image_end {
        let leaked = file_len - image_end;
        c.error(|| format!("ERROR space leaked at the end of the image {leaked}"));
        c.leaks += leaked.div_ceil(cs);
    }

    // Duplicates, with QEMU's truncating division and 32-bit index.
    let base = (data_start * 512) as i64;
    let shift = cs.is_power_of_two().then(|| cs.trailing_zeros());
    let div = |x: i64| -> i64 {
        match shift {
            Some(s) if x >= 0 => x >> s,
            _ => x / cs as i64,
        }
    };
    let idx = |o: u64| -> u64 { u64::from(div(o as i64 - base) as u32) };
    let mut count = idx(image_end);
    if image_end % cs != 0 {
        count += 1;
    }
    if count != 0 {
        let index_of = |e: u32| -> Option<u64> {
            let k = idx(u64::from(e) * mult * 512);
            (k < count).then_some(k)
        };
        let aborts = || QemuCheck::Aborts {
            assertion: ABORT_CHECK_DUPLICATE.into(),
        };
        // A bit set over QEMU's index range when it is no larger than the BAT (plus 1 MiB),
        // else the (index, entry) pairs sorted: memory follows the metadata either way.
        let words = count.div_ceil(64);
        let mut last_dup = false;
        if words <= u64::from(image.bat_entries_in_file()) / 2 + (1 << 17) {
            let mut seen = vec![0u64; words as usize];
            for (i, e) in image.allocated_entries() {
                let Some(k) = index_of(e) else { return aborts() };
                let (w, bit) = (&mut seen[(k / 64) as usize], 1u64 << (k % 64));
                last_dup = *w & bit != 0;
                *w |= bit;
                if last_dup {
                    c.error(|| format!("ERROR duplicate offset in BAT entry {i}"));
                    c.corruptions += 1;
                }
            }
        } else {
            // k < count <= 2^32 and i < 2^29: one u64 per allocated entry.
            let mut pairs = Vec::new();
            let mut last = None;
            for (i, e) in image.allocated_entries() {
                let Some(k) = index_of(e) else { return aborts() };
                pairs.push(k << 32 | i as u64);
                last = Some(i as u64);
            }
            pairs.sort_unstable();
            let mut dups: Vec<u64> = pairs
                .windows(2)
                .filter(|w| w[0] >> 32 == w[1] >> 32)
                .map(|w| w[1] & 0xffff_ffff)
                .collect();
            drop(pairs);
            dups.sort_unstable();
            for &i in &dups {
                c.error(|| format!("ERROR duplicate offset in BAT entry {i}"));
                c.corruptions += 1;
            }
            last_dup = last.is_some() && dups.last() == last.as_ref();
        }
        if last_dup {
            return QemuCheck::Fails;
        }
    }

    (c.allocated_clusters, c.fragmented_clusters) = image.cluster_counts(image_end);
    QemuCheck::Completes(c)
}
