//! What QEMU does with an image, predicted from its bytes: `qemu-img info` (a read-only
//! open) and `qemu-img check`, for QEMU 10.0.2 (the default) or QEMU 7.2 ([`Version`]; Debian
//! 12's `qemu-utils`). (What ploop does is [`crate::ploop::predict_ploop`]'s answer.)
//!
//! QEMU checks less than [`crate::validate`] does, in its own order, with 32- and 64-bit
//! wrap-arounds of its own; this module follows what the QEMU 10.0.2 binary was seen to do on
//! a catalogue of crafted images (see `spec/qemu.md`), down to the message text. Where QEMU reads
//! past its own buffer the outcome is reported as [`QemuOutcome::Undefined`].

use crate::error::{Error, Violation};
use crate::extension::{Extension, ExtensionDigest};
use crate::header::Variant;
use crate::image::{ClusterCounter, Image};
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE};
use crate::raw::extension::EXT_MAGIC;
use crate::raw::feature::{RawFeatureHeader, FEATURE_DIRTY_BITMAP, FEATURE_HEADER_SIZE};
use crate::raw::header::INUSE_OPEN;
use crate::source::Source;

mod v72;
pub(crate) use v72::CheckWalk72;
pub use v72::{ABORT_EMPTY_DISK_7_2, ABORT_EXT_OFF_7_2, ABORT_GRANULARITY_7_2};

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

/// Which of QEMU's checks decided an outcome: the rules of `spec/qemu.md` (H1–H6, E1–E4,
/// B1–B10, G1–G2, UB), one variant per check, so that callers need not recover them from the
/// message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum QemuReason {
    /// H1: unknown magic or `version != 2` (an empty file too).
    NotParallels,
    /// H2: `tracks == 0`.
    ZeroTracks,
    /// H3: `tracks > 4186127`.
    ClusterTooBig,
    /// H4: `bat_entries > 536870911`.
    CatalogTooLarge,
    /// H5: `ext_off` too big.
    OffsetTooBig,
    /// H6: the header and BAT do not fit one read request.
    BatRead,
    /// E1: the extension cluster ends past QEMU's largest offset.
    ExtensionRead,
    /// E2: wrong extension magic.
    ExtensionMagic,
    /// E3: wrong extension checksum.
    ExtensionChecksum,
    /// E4: fewer bytes left than a feature header.
    FeatureHeaderShort,
    /// E4: a feature record with flags.
    FeatureFlags,
    /// E4: a feature's `data_size` larger than QEMU's count of what is left.
    FeatureDataSize,
    /// E4: an unknown feature magic.
    UnknownFeature,
    /// B1: a bitmap record shorter than its 32-byte header.
    BitmapAreaTooSmall,
    /// B2: the bitmap's size differs from the disk's.
    BitmapSize,
    /// B3: the L1 table runs past the record.
    L1TableExceedsRecord,
    /// B4: the granularity is not a power of two (assertion).
    Granularity,
    /// B5: a bitmap name seen before.
    BitmapExists,
    /// B6: the disk size cannot be a bitmap's length.
    DeviceLength,
    /// B7: `l1_size` is not what the disk and cluster sizes give.
    L1Size,
    /// B8: an L1 entry's offset is out of QEMU's range.
    BitmapClusterRead,
    /// B9: a bitmap on a disk of 0 sectors (assertion).
    EmptyDisk,
    /// B10: a bitmap chunk's guest offset wraps past 2^64 (clusters of 256 MiB and more), and
    /// QEMU writes its bits far outside the bitmap.
    ChunkOffsetWraps,
    /// G1: the disk's byte size is too large.
    RefreshSize,
    /// G2: `qemu-img info`'s size query fails.
    ImageSize,
    /// UB: QEMU reads past its buffer.
    OverRead,
    /// W1 (QEMU 7.2, a read-write open only): the image is marked open (`inuse` is "Ynot"),
    /// and QEMU 7.2 opens such an image for writing only to repair it (`qemu-img check -r`).
    Unclean,
}

impl QemuReason {
    /// The rule of `spec/qemu.md`: `"H1"` … `"G2"`, `"UB"`, or `"W1"`.
    pub const fn code(self) -> &'static str {
        use QemuReason::*;
        match self {
            NotParallels => "H1",
            ZeroTracks => "H2",
            ClusterTooBig => "H3",
            CatalogTooLarge => "H4",
            OffsetTooBig => "H5",
            BatRead => "H6",
            ExtensionRead => "E1",
            ExtensionMagic => "E2",
            ExtensionChecksum => "E3",
            FeatureHeaderShort | FeatureFlags | FeatureDataSize | UnknownFeature => "E4",
            BitmapAreaTooSmall => "B1",
            BitmapSize => "B2",
            L1TableExceedsRecord => "B3",
            Granularity => "B4",
            BitmapExists => "B5",
            DeviceLength => "B6",
            L1Size => "B7",
            BitmapClusterRead => "B8",
            EmptyDisk => "B9",
            ChunkOffsetWraps => "B10",
            RefreshSize => "G1",
            ImageSize => "G2",
            OverRead => "UB",
            Unclean => "W1",
        }
    }
}

impl std::fmt::Display for QemuReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The signal that kills QEMU when it crashes (SIGSEGV).
pub const SIGSEGV: i32 = 11;

/// Which QEMU a prediction is of. The two differ in their `parallels` driver (`spec/qemu.md`,
/// "QEMU 7.2 and 10.0"): 7.2 has no `ext_off` bound (H5), no `data_off` and duplicate checks
/// in `qemu-img check`, other rules for "outside image" and the image end, and other assertion
/// texts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Version {
    /// QEMU 7.2 (7.2.0's driver, as Debian 12 ships it: 7.2.22).
    #[cfg_attr(feature = "serde", serde(rename = "7.2"))]
    V7_2,
    /// QEMU 10.0 (10.0.2).
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "10.0"))]
    V10_0,
}

impl Version {
    /// Every version predicted, oldest first.
    pub const ALL: [Version; 2] = [Version::V7_2, Version::V10_0];

    /// `"7.2"` or `"10.0"`.
    pub const fn name(self) -> &'static str {
        match self {
            Version::V7_2 => "7.2",
            Version::V10_0 => "10.0",
        }
    }

    /// How the human-readable prediction names this QEMU: `"7.2"` or `"10"`.
    pub const fn label(self) -> &'static str {
        match self {
            Version::V7_2 => "7.2",
            Version::V10_0 => "10",
        }
    }

    /// The version of a `qemu-img --version` banner's first line (`qemu-img version 7.2.22
    /// (Debian …)`), or of a plain version (`7.2`, `10.0.2`): major and minor must be one
    /// predicted.
    pub fn from_banner(text: &str) -> Option<Version> {
        let word = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .or_else(|| text.split_whitespace().next())?;
        let mut parts = word.split('.');
        match (parts.next()?, parts.next().unwrap_or("0")) {
            ("7", "2") => Some(Version::V7_2),
            ("10", "0") => Some(Version::V10_0),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A QEMU version this crate does not predict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl std::fmt::Display for UnknownVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QEMU version {:?} is not predicted (expected 7.2 or 10.0)", self.0)
    }
}

impl std::error::Error for UnknownVersion {}

impl std::str::FromStr for Version {
    type Err = UnknownVersion;

    /// `"7.2"` or `"10.0"` (also `"10"` and a full version such as `"7.2.22"` or `"10.0.2"`).
    fn from_str(s: &str) -> Result<Version, UnknownVersion> {
        let t = s.trim();
        if t == "10" {
            return Ok(Version::V10_0);
        }
        let mut parts = t.split('.');
        let v = match (parts.next(), parts.next()) {
            (Some("7"), Some("2")) => Version::V7_2,
            (Some("10"), Some("0")) => Version::V10_0,
            _ => return Err(UnknownVersion(s.to_string())),
        };
        if parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            Ok(v)
        } else {
            Err(UnknownVersion(s.to_string()))
        }
    }
}

/// Which QEMU versions to predict: one, or all of them (`prlimg check --qemu 7.2|10.0|all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// This one.
    One(Version),
    /// Every version predicted, 10.0 first.
    All,
}

impl Default for Versions {
    fn default() -> Self {
        Versions::One(Version::default())
    }
}

impl Versions {
    /// The versions, the one a report holds first (the default, 10.0, first for `All`).
    pub fn list(self) -> Vec<Version> {
        match self {
            Versions::One(v) => vec![v],
            Versions::All => {
                let mut all = vec![Version::default()];
                all.extend(Version::ALL.iter().copied().filter(|v| *v != Version::default()));
                all
            }
        }
    }

    /// How a report's title names them: `QEMU 10.0.2`, `QEMU 10 and 7.2`.
    pub fn title(self) -> String {
        match self {
            Versions::One(v) => format!("QEMU {}", v.label()),
            Versions::All => "QEMU 10 and 7.2".to_string(),
        }
    }
}

impl std::str::FromStr for Versions {
    type Err = String;

    /// `"all"`, or one version as [`Version`] reads it; the error says both.
    fn from_str(s: &str) -> Result<Versions, String> {
        if s == "all" {
            return Ok(Versions::All);
        }
        s.parse::<Version>()
            .map(Versions::One)
            .map_err(|e| format!("{e}, or all"))
    }
}

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
        /// The check that fired.
        reason: QemuReason,
        /// The message after the path.
        message: String,
    },
    /// Exit 1 with `qemu-img: Could not open 'PATH': Could not open 'PATH': Input/output error`
    /// (the header and BAT are too large for one read: [`QemuReason::BatRead`]).
    RejectsBatRead,
    /// `qemu-img info` only: exit 1 with `qemu-img: Can't get image size 'PATH'SUFFIX` (the
    /// disk size is negative as a signed 64-bit number: [`QemuReason::ImageSize`]).
    NoImageSize {
        /// Empty, or `: ` and an error text.
        suffix: String,
    },
    /// Exit 134 with `qemu-img: ASSERTION`.
    Aborts {
        /// The check that fired.
        reason: QemuReason,
        /// The assertion text.
        assertion: String,
    },
    /// QEMU is killed by a signal (exit status 128 + signal as a shell reports it) without a
    /// message of its own.
    Crashes {
        /// The check that fired.
        reason: QemuReason,
        /// The signal ([`SIGSEGV`]).
        signal: i32,
    },
    /// QEMU reads past its buffer: the outcome depends on memory layout ([`QemuReason::OverRead`]).
    Undefined {
        /// Where and why.
        detail: String,
    },
}

impl QemuOutcome {
    /// `"opens"`, `"rejects"`, `"aborts"`, `"crashes"` or `"undefined"`.
    pub fn kind(&self) -> &'static str {
        match self {
            QemuOutcome::Opens { .. } => "opens",
            QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead | QemuOutcome::NoImageSize { .. } => "rejects",
            QemuOutcome::Aborts { .. } => "aborts",
            QemuOutcome::Crashes { .. } => "crashes",
            QemuOutcome::Undefined { .. } => "undefined",
        }
    }

    /// The check of QEMU's that decided the outcome (`None` when the image opens).
    pub fn reason(&self) -> Option<QemuReason> {
        match self {
            QemuOutcome::Opens { .. } => None,
            QemuOutcome::Rejects { reason, .. }
            | QemuOutcome::Aborts { reason, .. }
            | QemuOutcome::Crashes { reason, .. } => Some(*reason),
            QemuOutcome::RejectsBatRead => Some(QemuReason::BatRead),
            QemuOutcome::NoImageSize { .. } => Some(QemuReason::ImageSize),
            QemuOutcome::Undefined { .. } => Some(QemuReason::OverRead),
        }
    }

    /// The exit status of `qemu-img info`, if predictable (128 + signal for a crash).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            QemuOutcome::Opens { .. } => Some(0),
            QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead | QemuOutcome::NoImageSize { .. } => Some(1),
            QemuOutcome::Aborts { .. } => Some(134),
            QemuOutcome::Crashes { signal, .. } => Some(128 + signal),
            QemuOutcome::Undefined { .. } => None,
        }
    }

    /// The message QEMU gives after `Could not open 'PATH': ` (or the assertion), with `path`
    /// as typed on the command line.
    pub fn message(&self, path: &str) -> Option<String> {
        match self {
            QemuOutcome::Opens { .. } | QemuOutcome::Undefined { .. } | QemuOutcome::Crashes { .. } => None,
            QemuOutcome::Rejects { message, .. } => Some(message.clone()),
            QemuOutcome::RejectsBatRead => Some(format!("Could not open '{path}': Input/output error")),
            QemuOutcome::NoImageSize { suffix } => Some(format!("Can't get image size '{path}'{suffix}")),
            QemuOutcome::Aborts { assertion, .. } => Some(assertion.clone()),
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
    pub errors: Vec<CheckLine>,
    /// How many more `ERROR …` lines QEMU prints.
    pub errors_omitted: u64,
}

/// How many of QEMU's error lines a [`CheckCounts`] keeps (QEMU prints one per bad BAT entry,
/// which for a hostile header is hundreds of millions).
pub const MAX_ERROR_LINES: usize = 1000;

impl CheckCounts {
    fn error(&mut self, line: CheckLine) {
        if self.errors.len() < MAX_ERROR_LINES {
            self.errors.push(line);
        } else {
            self.errors_omitted += 1;
        }
    }
}

/// One value of qemu-img's JSON: a number or a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuJsonValue<'a> {
    /// A number.
    Number(u64),
    /// A string.
    Text(&'a str),
}

#[cfg(feature = "serde")]
impl serde::Serialize for QemuJsonValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            QemuJsonValue::Number(n) => s.serialize_u64(*n),
            QemuJsonValue::Text(t) => s.serialize_str(t),
        }
    }
}

impl CheckCounts {
    /// The object `qemu-img check -f parallels --output json PATH` prints (QEMU 10.0.2, without
    /// `-r`), key by key in QEMU's order, for an image named `filename`: `check-errors` always
    /// (0: a read-only check that completes counts none), `filename` and `format`, and each of
    /// `image-end-offset`, `total-clusters`, `corruptions`, `leaks` (in clusters),
    /// `allocated-clusters` and `fragmented-clusters` only when it is not 0, as QEMU leaves out
    /// a zero counter. (`compressed-clusters`, `leaks-fixed` and `corruptions-fixed` are always
    /// 0 for this format without `-r`, so never printed.)
    pub fn qemu_img_json<'a>(&self, filename: &'a str) -> Vec<(&'static str, QemuJsonValue<'a>)> {
        use QemuJsonValue::{Number, Text};
        // QEMU's order is its dictionary's hash order, the same for every image.
        let all = [
            ("image-end-offset", Some(Number(self.image_end_offset))),
            ("total-clusters", Some(Number(self.total_clusters))),
            ("corruptions", Some(Number(self.corruptions))),
            ("check-errors", None),
            ("leaks", Some(Number(self.leaks))),
            ("allocated-clusters", Some(Number(self.allocated_clusters))),
            ("filename", Some(Text(filename))),
            ("format", Some(Text("parallels"))),
            ("fragmented-clusters", Some(Number(self.fragmented_clusters))),
        ];
        all.into_iter()
            .filter_map(|(key, value)| match value {
                None => Some((key, Number(0))),
                Some(Number(0)) => None,
                Some(v) => Some((key, v)),
            })
            .collect()
    }
}

/// One `ERROR …` line that `qemu-img check` prints on its standard error; its [`Display`] is
/// the line's exact text (FORMAT-NOTES §5). Kept as a value, not as text: a hostile header makes
/// QEMU print one per BAT entry, and only the lines shown need their text.
///
/// [`Display`]: std::fmt::Display
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckLine {
    /// `ERROR image was not closed correctly`: the `inuse` field says the image is open.
    NotClosed,
    /// `ERROR data_off field has incorrect value`.
    DataOff,
    /// `ERROR cluster N is outside image`: BAT entry `index` points (partly) past the end of
    /// the file.
    Outside {
        /// The BAT index.
        index: u32,
    },
    /// `ERROR space leaked at the end of the image N`: `bytes` past the image end.
    Leaked {
        /// The leaked bytes.
        bytes: u64,
    },
    /// `ERROR duplicate offset in BAT entry N`: entry `index` points where an earlier one does.
    Duplicate {
        /// The BAT index of the later entry.
        index: u32,
    },
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckLine::NotClosed => f.write_str("ERROR image was not closed correctly"),
            CheckLine::DataOff => f.write_str("ERROR data_off field has incorrect value"),
            CheckLine::Outside { index } => write!(f, "ERROR cluster {index} is outside image"),
            CheckLine::Leaked { bytes } => write!(f, "ERROR space leaked at the end of the image {bytes}"),
            CheckLine::Duplicate { index } => write!(f, "ERROR duplicate offset in BAT entry {index}"),
        }
    }
}

/// What a read-write open by QEMU 10 (`qemu-io` or `qemu-nbd` without `-r`, `qemu-img check
/// -r`, a VM) would do to the file, from FORMAT-NOTES §4–§5 (the tests run QEMU read-only only,
/// so this is not measured here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadWrite {
    /// The open fails as the read-only one does (a header QEMU refuses).
    Refused {
        /// The check that fired.
        reason: QemuReason,
    },
    /// QEMU opens the file for writing: it ignores the Format Extension (with a warning; no
    /// bitmap is loaded or kept), and when it closes the file it cuts it at the end of its data.
    Opens {
        /// An extension is present: it and its bitmap clusters are lost.
        drops_extension: bool,
        /// The image is marked unclean ("Ynot") or its check finds corruption: QEMU repairs it
        /// in place first.
        repairs: bool,
        /// The length QEMU leaves the file at, when it is shorter than now (`None`: unchanged,
        /// or not predictable because `qemu-img check` would not complete).
        truncates_to: Option<u64>,
    },
}

impl ReadWrite {
    /// What a read-write open does, in words (`prlimg check`'s `QEMU 10 read-write:` line
    /// after its prefix, and the JSON key `qemu_read_write`).
    pub fn describe(&self) -> String {
        match self {
            ReadWrite::Refused { reason } => format!("refuses the image [{reason}]"),
            ReadWrite::Opens {
                drops_extension,
                repairs,
                truncates_to,
            } => {
                let mut what = Vec::new();
                if *repairs {
                    what.push("repairs it in place".to_string());
                }
                if *drops_extension {
                    what.push("ignores the Format Extension, which is lost with its bitmaps".to_string());
                }
                if let Some(len) = truncates_to {
                    what.push(format!("cuts the file at byte {len}"));
                }
                if what.is_empty() {
                    "opens it; the file keeps its length".to_string()
                } else {
                    what.join("; ")
                }
            }
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
    /// What a read-write open by this QEMU would do to the file.
    pub read_write: ReadWrite,
    /// The QEMU predicted.
    pub version: Version,
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
    predict_knowing(source, None).map(|(prediction, _)| prediction)
}

/// Predicts what QEMU `version` does with the image in `source`.
pub fn predict_for(source: &dyn Source, version: Version) -> std::io::Result<Prediction> {
    predict_knowing_for(source, None, version).map(|(prediction, _)| prediction)
}

/// [`predict`], taking `known` as the MD5 of the extension cluster if it covers the very cluster
/// QEMU would hash (the caller vouches that it is the digest of `source`'s bytes) instead of
/// hashing it; with the digest of the cluster when the prediction hashed it or took `known`.
pub(crate) fn predict_knowing(
    source: &dyn Source,
    known: Option<&ExtensionDigest>,
) -> std::io::Result<(Prediction, Option<ExtensionDigest>)> {
    predict_knowing_for(source, known, Version::V10_0)
}

/// [`predict_knowing`] for QEMU `version`.
pub(crate) fn predict_knowing_for(
    source: &dyn Source,
    known: Option<&ExtensionDigest>,
    version: Version,
) -> std::io::Result<(Prediction, Option<ExtensionDigest>)> {
    if version == Version::V7_2 {
        if let Some(patched) = v72::ext_off_source(source)? {
            return match patched {
                v72::ExtOff::Decided(prediction) => Ok((*prediction, None)),
                v72::ExtOff::Wrapped(patched) => predict_knowing_for(&patched, known, version),
            };
        }
    }
    // QEMU's header checks are rules R1-R6 of this crate, in the same order. The BAT is read
    // again through a small buffer at each walk (nothing of it is held).
    let image = match Image::parse_compact(source, crate::image::RuleMode::Strict) {
        Ok(image) => image,
        Err(Error::Io(e)) => return Err(e),
        Err(Error::Invalid(v)) => return Ok((predict_unparsable_for(&v, version), None)),
        // Not a Parallels image at all: QEMU's H1, as for a bad magic.
        Err(Error::EmptyFile | Error::NotParallels { .. }) => {
            return Ok((
                predict_unparsable_for(&Violation::BadMagic { found: [0; 16] }, version),
                None,
            ))
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let extension = image.extension();
    if let (Some(ext), Some(known)) = (extension, known) {
        ext.take_digest(known, image.file_len());
    }
    let prediction = predict_image_for(&image, version);
    image.bat_status().map_err(|e| match e {
        Error::Io(e) => e,
        e => std::io::Error::other(e.to_string()),
    })?;
    Ok((prediction, extension.and_then(|e| e.digest(image.file_len()))))
}

/// Predicts what QEMU 10.0.2 does with an image whose header failed `violation`, one of
/// the checks every parse makes (rules R1–R6, which are QEMU's own header checks in its order).
pub fn predict_unparsable(violation: &Violation) -> Prediction {
    predict_unparsable_for(violation, Version::V10_0)
}

/// [`predict_unparsable`] for QEMU `version`. QEMU 7.2 has no `ext_off` bound (H5): for an
/// `ext_off` past it, what 7.2 does depends on the rest of the file, which
/// [`predict_for`] reads; here the answer is the outcome when the offset wraps to 0 or
/// below (an abort) or past QEMU's largest offset (a failed read), else
/// [`QemuOutcome::Undefined`].
pub fn predict_unparsable_for(violation: &Violation, version: Version) -> Prediction {
    if version == Version::V7_2 {
        if let Violation::ExtOffTooBig { ext_off, .. } = violation {
            return v72::unparsable_ext_off(*ext_off);
        }
    }
    let o = header_outcome(violation);
    Prediction {
        read_write: ReadWrite::Refused {
            reason: o.reason().unwrap_or(QemuReason::NotParallels),
        },
        info: o.clone(),
        check: QemuCheck::OpenFails(o),
        version,
    }
}

/// Predicts what QEMU 10.0.2 does with an image already parsed (its header passed
/// rules R1–R6; in either [`crate::RuleMode`]): [`predict`] without reading the metadata again.
pub fn predict_image(image: &Image<'_>) -> Prediction {
    predict_image_for(image, Version::V10_0)
}

/// [`predict_image`] for QEMU `version`. (For QEMU 7.2 an `ext_off` past QEMU 10's bound makes
/// the parse fail: [`predict_for`] handles that.)
pub fn predict_image_for(image: &Image<'_>, version: Version) -> Prediction {
    predict_image_walked(image, version, None)
}

/// [`predict_image_for`], with what QEMU 10's `qemu-img check` needs of the BAT already gathered
/// by `walk` on a walk of every allocated entry of `image` (shared with other consumers of the
/// table; QEMU 7.2's check walks the table itself). `dups`: the rules' duplicated entries (R19)
/// from the same walk, when they ran.
pub(crate) fn predict_image_walked(
    image: &Image<'_>,
    version: Version,
    walk: Option<(&CheckWalk<'_>, Option<&[u32]>)>,
) -> Prediction {
    let v72 = version == Version::V7_2;
    let check_outcome = |image: &Image<'_>| match walk {
        Some((w, dups)) => w.finish(image, dups),
        None => check_outcome(image),
    };
    let open = if v72 {
        v72::open_outcome(image)
    } else {
        open_outcome(image)
    };
    let info = info_of(image, &open);
    let check = match open {
        QemuOutcome::Opens { .. } if v72 => v72::check_outcome(image),
        QemuOutcome::Opens { .. } => check_outcome(image),
        o => QemuCheck::OpenFails(o),
    };
    let read_write = if v72 {
        v72::read_write(image)
    } else {
        read_write(image, &check, &check_outcome)
    };
    Prediction {
        info,
        check,
        read_write,
        version,
    }
}

/// What QEMU 10's `qemu-img info` does with an image already parsed ([`Prediction::info`])
/// alone: the BAT is not walked (only `qemu-img check` needs it).
pub fn predict_info(image: &Image<'_>) -> QemuOutcome {
    info_of(image, &open_outcome(image))
}

/// QEMU `version`'s read-only open of an image already parsed (the BAT is not walked).
pub(crate) fn open_outcome_for(image: &Image<'_>, version: Version) -> QemuOutcome {
    match version {
        Version::V7_2 => v72::open_outcome(image),
        _ => open_outcome(image),
    }
}

/// `qemu-img info`'s outcome once the open gave `open`.
pub(crate) fn info_of(image: &Image<'_>, open: &QemuOutcome) -> QemuOutcome {
    let total = image.header().nb_sectors;
    match open {
        QemuOutcome::Opens { .. } if (total as i64) < 0 => QemuOutcome::NoImageSize {
            suffix: errno_suffix(total),
        },
        // A size whose byte count wrapped past the block layer's check (e.g. 2^55 sectors):
        // the length query refuses more than INT64_MAX / 512 sectors.
        QemuOutcome::Opens { .. } if total > i64::MAX as u64 / 512 => QemuOutcome::NoImageSize {
            suffix: ": File too large".into(),
        },
        o => o.clone(),
    }
}

/// A read-write open skips the extension, so only the header and the block layer can refuse
/// it; the file is then cut where `qemu-img check` says the image ends.
fn read_write(image: &Image<'_>, check: &QemuCheck, check_outcome: &dyn Fn(&Image<'_>) -> QemuCheck) -> ReadWrite {
    let h = image.header();
    if (64 + 4 * u64::from(h.bat_entries)).next_multiple_of(MEM_ALIGN) > MAX_REQUEST {
        return ReadWrite::Refused {
            reason: QemuReason::BatRead,
        };
    }
    if h.nb_sectors.wrapping_mul(512) > MAX_LENGTH {
        return ReadWrite::Refused {
            reason: QemuReason::RefreshSize,
        };
    }
    // The read-write open skips the extension, so a check the read-only open kept from
    // running sees the image as the read-write open does.
    let unopened;
    let check = match check {
        QemuCheck::OpenFails(_) => {
            unopened = check_outcome(image);
            &unopened
        }
        c => c,
    };
    let (repairs, truncates_to) = match check {
        QemuCheck::Completes(c) => (
            c.corruptions > 0,
            (c.image_end_offset < image.file_len()).then_some(c.image_end_offset),
        ),
        _ => (false, None),
    };
    ReadWrite::Opens {
        drops_extension: image.extension().is_some(),
        repairs: repairs || h.raw.inuse.get() == INUSE_OPEN,
        truncates_to,
    }
}

/// How many predicted `qemu-img check` ERROR lines [`Prediction::render`] shows before it
/// gives the count of the rest.
pub const SHOWN_ERROR_LINES: usize = 10;

impl Prediction {
    /// The whole prediction as lines of text for people: what `qemu-img info` does (with the
    /// message, assertion or signal), what `qemu-img check` does with its first
    /// [`SHOWN_ERROR_LINES`] ERROR lines (indented) and the count of the others, what a
    /// read-write open would do to the file. `path` is
    /// the image's path as it would be typed to QEMU.
    pub fn render(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let q = format!("QEMU {}", self.version.label());
        // QEMU 10's lines say `qemu-img check`; another version's name it.
        let ck = match self.version {
            Version::V10_0 => "qemu-img check".to_string(),
            v => format!("qemu-img {v} check"),
        };
        let undefined = "the result depends on memory past QEMU's buffer; what it did on one machine is no promise";
        out.push(match &self.info {
            QemuOutcome::Opens { bitmaps } if bitmaps.is_empty() => format!("{q}: opens the image"),
            QemuOutcome::Opens { bitmaps } => format!("{q}: opens the image with bitmaps {}", bitmaps.join(", ")),
            QemuOutcome::Crashes { reason, signal } => format!(
                "{q}: crashes (signal {signal}{}, exit {}) [{reason}]",
                if *signal == SIGSEGV { ", SIGSEGV" } else { "" },
                128 + signal
            ),
            QemuOutcome::Undefined { detail } => format!("{q}: undefined: {detail}; {undefined}"),
            QemuOutcome::Aborts { reason, .. } => {
                format!(
                    "{q}: aborts (exit 134) [{reason}]: {}",
                    self.info.message(path).unwrap_or_default()
                )
            }
            o => format!(
                "{q}: rejects the image [{}]: {}",
                o.reason().map_or("", |r| r.code()),
                o.message(path).unwrap_or_default()
            ),
        });
        match &self.check {
            QemuCheck::Completes(c) => {
                out.push(format!(
                    "{ck}: exit {} ({} corruption{}, {} leaked cluster{})",
                    self.check.exit_code().unwrap_or(0),
                    c.corruptions,
                    if c.corruptions == 1 { "" } else { "s" },
                    c.leaks,
                    if c.leaks == 1 { "" } else { "s" }
                ));
                for line in c.errors.iter().take(SHOWN_ERROR_LINES) {
                    out.push(format!("    {line}"));
                }
                let more = (c.errors.len().saturating_sub(SHOWN_ERROR_LINES)) as u64 + c.errors_omitted;
                if more > 0 {
                    out.push(format!("    ... and {more} more ERROR lines"));
                }
            }
            QemuCheck::OpenFails(QemuOutcome::Undefined { .. }) => {
                out.push(format!("{ck}: undefined, as the open ({undefined})"));
            }
            QemuCheck::OpenFails(o) => {
                out.push(format!(
                    "{ck}: {} as qemu-img info does (exit {})",
                    match o {
                        QemuOutcome::Crashes { .. } => "crashes",
                        QemuOutcome::Aborts { .. } => "aborts",
                        _ => "cannot open the image,",
                    },
                    o.exit_code().map_or("?".into(), |c| c.to_string())
                ));
                if o.reason() == Some(QemuReason::NotParallels) {
                    // Only with -f parallels: QEMU's probe takes the file for raw.
                    out.push(
                        "    (with -f parallels; without -f, qemu-img probes the file as raw: `qemu-img check` \
                         exits 63, This image format does not support checks)"
                            .into(),
                    );
                }
            }
            QemuCheck::Fails => out.push(format!("{ck}: fails (Device or resource busy), exit 1")),
            QemuCheck::Aborts { assertion } => out.push(format!("{ck}: aborts (exit 134): {assertion}")),
        }
        out.push(format!("{q} read-write: {}", self.read_write.describe()));
        out
    }
}

fn header_outcome(v: &Violation) -> QemuOutcome {
    let (reason, message) = match v {
        Violation::BadMagic { .. } | Violation::BadVersion { .. } => {
            (QemuReason::NotParallels, "Image not in Parallels format")
        }
        Violation::ZeroTracks => (QemuReason::ZeroTracks, "Invalid image: Zero sectors per track"),
        Violation::ClusterTooBig { .. } => (QemuReason::ClusterTooBig, "Invalid image: Too big cluster"),
        Violation::CatalogTooLarge { .. } => (QemuReason::CatalogTooLarge, "Catalog too large"),
        _ => (QemuReason::OffsetTooBig, "Invalid image: Too big offset"),
    };
    reject(reason, message)
}

fn reject(reason: QemuReason, message: impl Into<String>) -> QemuOutcome {
    QemuOutcome::Rejects {
        reason,
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
        return reject(
            QemuReason::RefreshSize,
            "Could not refresh total sector count: File too large",
        );
    }
    QemuOutcome::Opens { bitmaps }
}

/// The Format Extension as QEMU parses it; `Some` when the open fails there. The names of the
/// bitmaps QEMU loads are pushed onto `names` (empty when called).
fn extension_outcome(ext: &Extension<'_>, total: u64, names: &mut Vec<String>) -> Option<QemuOutcome> {
    let cs = ext.cluster_size;
    let off = ext.file_offset;
    if off + cs > MAX_LENGTH {
        return Some(reject(
            QemuReason::ExtensionRead,
            "Failed to read Format Extension cluster: Input/output error",
        ));
    }
    let c = ext.bytes();
    let magic = ext.magic();
    if magic != EXT_MAGIC {
        return Some(reject(
            QemuReason::ExtensionMagic,
            format!("Wrong parallels Format Extension magic: {magic:#x}, expected: {EXT_MAGIC:#x}"),
        ));
    }
    if ext.stored_checksum() != ext.computed_checksum() {
        return Some(reject(
            QemuReason::ExtensionChecksum,
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
            return Some(reject(
                QemuReason::FeatureHeaderShort,
                format!("Can not read feature header, as remaining bytes ({rem}) in Format Extension is less than Feature header size ({hdr})"
            )));
        }
        if pos + hdr > cs {
            return Some(past_cluster("a feature header", pos, cs));
        }
        let feature = RawFeatureHeader::read_padded(c, pos);
        let (magic, flags, ds) = (feature.magic.get(), feature.flags.get(), feature.data_size.get());
        pos += hdr;
        rem -= hdr as i64;
        if flags != 0 {
            return Some(reject(
                QemuReason::FeatureFlags,
                "Flags for extension feature are unsupported",
            ));
        }
        if i64::from(ds) > rem {
            return Some(reject(
                QemuReason::FeatureDataSize,
                "Feature data_size exceedes Format Extension cluster",
            ));
        }
        if magic == 0 {
            return None;
        }
        if magic != FEATURE_DIRTY_BITMAP {
            return Some(reject(
                QemuReason::UnknownFeature,
                format!("Unknown feature: {magic:#x}"),
            ));
        }
        if u64::from(ds) < bh {
            return Some(reject(
                QemuReason::BitmapAreaTooSmall,
                format!("Too small Bitmap Feature area in Parallels Format Extension: {ds} bytes, expected at least {bh} bytes"
            )));
        }
        if pos + bh > cs {
            return Some(past_cluster("a bitmap header", pos, cs));
        }
        let bitmap = RawBitmapHeader::read_padded(c, pos);
        let (size, id) = (bitmap.size.get(), bitmap.id);
        let (gran, l1) = (bitmap.granularity.get(), bitmap.l1_size.get());
        if size != total {
            return Some(reject(
                QemuReason::BitmapSize,
                format!(
                    "Bitmap size (in sectors) {} differs from disk size in sectors {}",
                    size as i64, total as i64
                ),
            ));
        }
        if u64::from(l1) * 8 > u64::from(ds) - bh {
            return Some(reject(
                QemuReason::L1TableExceedsRecord,
                "Bitmaps feature corrupted: l1 table exceeds extension data_size",
            ));
        }
        let g = gran.wrapping_shl(9);
        if !g.is_power_of_two() {
            return Some(QemuOutcome::Aborts {
                reason: QemuReason::Granularity,
                assertion: ABORT_GRANULARITY.into(),
            });
        }
        let name = uuid::Uuid::from_bytes(id).hyphenated().to_string();
        // Names are the ids spelled out, so a set of ids finds a repeat in one probe (searching
        // the list per bitmap was quadratic: 60 ms for the 5 698 bitmaps a 1 MiB cluster holds).
        if !seen.insert(id) {
            return Some(reject(
                QemuReason::BitmapExists,
                format!("Bitmap already exists: {name}"),
            ));
        }
        let t = total as i64;
        if t < 0 {
            return Some(reject(
                QemuReason::DeviceLength,
                format!("could not get length of device{}", errno_suffix(total)),
            ));
        }
        if t > MAX_BITMAP_SECTORS {
            return Some(reject(
                QemuReason::DeviceLength,
                "could not get length of device: File too large",
            ));
        }
        let tab = (t as u64 * 512).div_ceil(u64::from(g)).div_ceil(8 * cs);
        if u64::from(l1) != tab {
            return Some(reject(
                QemuReason::L1Size,
                format!("Bitmap table size {l1} does not correspond to bitmap size and cluster size. Expected {tab}"),
            ));
        }
        if pos + bh + 8 * u64::from(l1) > cs {
            return Some(undefined(format!(
                "the L1 table of the bitmap at byte {pos} runs past the cluster"
            )));
        }
        let entries = (0..u64::from(l1)).map(|i| RawBitmapHeader::l1_entry_padded(c, pos, i));
        if let Some(failure) = load_bitmap_data(entries, cs, t as u64 * 512, u64::from(g)) {
            return Some(failure);
        }
        if t == 0 {
            return Some(QemuOutcome::Aborts {
                reason: QemuReason::EmptyDisk,
                assertion: ABORT_EMPTY_DISK.into(),
            });
        }
        names.push(name);
        pos = (pos + u64::from(ds)).next_multiple_of(8);
    }
}

/// QEMU's loading of a bitmap's chunks, entry by entry: the L1 entries' offsets (B8), and where
/// each chunk's bits land in QEMU's bitmap of `bytes` bytes (`granularity` bytes per bit).
///
/// QEMU computes the guest bytes a bitmap cluster covers as `granularity * (cluster_size << 3)`
/// with the shift done on a 32-bit `int`: from 256 MiB clusters on, the product wraps (to a
/// negative number, sign-extended to 64 bits, or to a small one). Chunk `i` starts at
/// `i * coverage` modulo 2^64; when that start is past the bitmap's words, setting its bits
/// writes far outside QEMU's bitmap and QEMU dies of SIGSEGV (B10). A chunk whose coverage
/// wrapped to 0 is skipped (its bits are lost, the image opens); a first chunk that covers the
/// whole disk makes QEMU copy more than a cluster out of its cluster buffer, which on this
/// machine reads the memory next to it (the loaded bits are not the file's; the image opens).
fn load_bitmap_data(entries: impl Iterator<Item = u64>, cs: u64, bytes: u64, granularity: u64) -> Option<QemuOutcome> {
    let coverage = granularity.wrapping_mul((cs as u32).wrapping_mul(8) as i32 as i64 as u64);
    let shift = granularity.trailing_zeros();
    let granules = bytes.div_ceil(granularity);
    let words = granules.div_ceil(64).max(1);
    for (i, entry) in entries.enumerate() {
        if entry == 0 {
            continue;
        }
        if entry != 1 {
            let o = entry.wrapping_mul(512) as i64;
            if o < 0 || o as u64 + cs > MAX_LENGTH {
                return Some(reject(
                    QemuReason::BitmapClusterRead,
                    "Failed to read bitmap data cluster: Input/output error",
                ));
            }
        }
        let start = (i as u64).wrapping_mul(coverage);
        let count = bytes.wrapping_sub(start).min(coverage);
        if count == 0 {
            continue;
        }
        let last = start.wrapping_add(count - 1);
        if last >> shift >= granules {
            // An assertion of QEMU's bitmap code; no image seen so far reaches it.
            return Some(undefined(format!(
                "bitmap chunk {i} ends past the bitmap (QEMU asserts; text not observed)"
            )));
        }
        let (first_word, last_word) = ((start >> shift) / 64, (last >> shift) / 64);
        if first_word > last_word || last_word >= words {
            return Some(QemuOutcome::Crashes {
                reason: QemuReason::ChunkOffsetWraps,
                signal: SIGSEGV,
            });
        }
    }
    None
}

/// [`undefined`]: a structure at byte `pos` of a `cs`-byte extension cluster runs past it.
fn past_cluster(what: &str, pos: u64, cs: u64) -> QemuOutcome {
    undefined(format!("{what} at byte {pos} of a {cs}-byte extension cluster"))
}

fn undefined(detail: String) -> QemuOutcome {
    QemuOutcome::Undefined {
        detail: format!("QEMU reads past its buffer: {detail}"),
    }
}

/// `qemu-img check` after a successful open, walking the BAT for it alone.
fn check_outcome(image: &Image<'_>) -> QemuCheck {
    let mut walk = CheckWalk::new(image);
    for (i, e) in image.allocated_entries() {
        walk.entry(i, e);
    }
    walk.finish(image, None)
}

/// What `qemu-img check` needs of the BAT, gathered on a walk of its allocated entries that
/// others share ([`crate::check`] reads the table once for the rules, this and ploop's check):
/// QEMU's own first pass (the largest entry, the clusters outside the image, the highest one
/// inside), and its statistics and duplicate scan as they come out when the image's end is where
/// the highest cluster inside puts it. QEMU walks the table again once it knows that end; so
/// does [`CheckWalk::finish`] when the end turns out elsewhere, or when the duplicates cannot be
/// taken from the rules' (R19): they can when every cluster lies inside the file on the grid
/// from the data area's start, which both QEMU and the rules take for the same, for then QEMU's
/// cluster indexes are equal exactly when the clusters' offsets are.
pub(crate) struct CheckWalk<'h> {
    header: &'h crate::header::Header,
    /// The file's length as the block layer sees it: rounded up to a whole sector.
    file_len: u64,
    /// The file's length.
    image_len: u64,
    cs: u64,
    mult: u64,
    /// The cluster is larger than the file: every entry is outside.
    all_outside: bool,
    max_entry: u64,
    high: u64,
    allocated: u64,
    /// The first indexes outside the image ([`MAX_ERROR_LINES`]), and how many in all.
    outside: Vec<u32>,
    outside_count: u64,
    /// QEMU's data area start in bytes (its cluster indexes count from there).
    base: i64,
    shift: Option<u32>,
    /// Every entry so far lies on the grid from `base`, at or after it, inside the file.
    on_grid: bool,
    max_k: u64,
    /// The last allocated index.
    last: Option<u32>,
    /// The statistics with the end of the file for the image's end (the same counts when the
    /// highest cluster inside sets it).
    counter: ClusterCounter<'h>,
    /// QEMU's duplicate scan run on the way ([`CheckWalk::new_scanning`]), while every entry is
    /// on the grid and the bit set stays within the bound of [`CheckWalk::duplicates`].
    scan: Option<DupScan>,
}

/// QEMU's duplicate scan over the clusters on the grid, on the first walk: a bit per cluster
/// index seen, and the indexes of the entries whose cluster was seen before, in order.
struct DupScan {
    seen: Vec<u64>,
    /// The most words `seen` may take (the bound of the scan's own bit set).
    max_words: u64,
    dups: Vec<u32>,
}

impl<'h> CheckWalk<'h> {
    pub(crate) fn new(image: &'h Image<'_>) -> Self {
        let h = image.header();
        let file_len = image.file_len().div_ceil(512) * 512;
        let tracks = u64::from(h.cluster_sectors);
        let cs = h.cluster_size();
        let v1 = h.variant == Variant::V1;
        let mult = if v1 { 1 } else { tracks };
        let data_start = qemu_data_start(h, file_len);
        let base = (data_start * 512) as i64;
        let shift = cs.is_power_of_two().then(|| cs.trailing_zeros());
        CheckWalk {
            header: h,
            file_len,
            image_len: image.file_len(),
            cs,
            mult,
            all_outside: cs > file_len,
            max_entry: 0,
            high: 0,
            allocated: 0,
            outside: Vec::new(),
            outside_count: 0,
            base,
            shift,
            // The rules' grid starts at byte 0 (v2) or at the data area (v1).
            on_grid: base >= 0 && base as u64 == h.data_start() && (v1 || (base as u64).is_multiple_of(cs)),
            max_k: 0,
            last: None,
            counter: ClusterCounter::new(h, file_len),
            scan: None,
        }
    }

    /// [`CheckWalk::new`] that also runs QEMU's duplicate scan on the walk, for callers that
    /// have no rules' duplicates (R19) to give [`CheckWalk::finish`]: the table is then read
    /// once unless an entry lies off the grid or the image ends elsewhere than the walk
    /// assumed (a corrupt image), where QEMU's own second walk is followed.
    pub(crate) fn new_scanning(image: &'h Image<'_>) -> Self {
        let mut walk = CheckWalk::new(image);
        walk.scan = Some(DupScan {
            seen: Vec::new(),
            max_words: u64::from(image.bat_entries_in_file()) / 2 + (1 << 17),
            dups: Vec::new(),
        });
        walk
    }

    /// [`CheckWalk::finish`] with the duplicates of the walk's own scan, when it ran to the end.
    pub(crate) fn finish_scanned(&self, image: &Image<'_>) -> QemuCheck {
        let dups = self.scan.as_ref().filter(|_| self.on_grid).map(|s| s.dups.as_slice());
        self.finish(image, dups)
    }

    /// Allocated entry `e` at index `i` (after every lower one).
    #[inline]
    pub(crate) fn entry(&mut self, i: u32, e: u32) {
        self.max_entry = self.max_entry.max(u64::from(e));
        self.allocated += 1;
        let off = u64::from(e) * self.mult * 512;
        if !self.all_outside {
            // Unallocated entries (offset 0) are inside and do not move `high`.
            if off + self.cs > self.file_len {
                if self.outside.len() < MAX_ERROR_LINES {
                    self.outside.push(i);
                }
                self.outside_count += 1;
            } else {
                self.high = self.high.max(off);
            }
        }
        self.counter.add(i, e);
        self.last = Some(i);
        if !self.on_grid {
            return;
        }
        let base = self.base as u64;
        if off < base || off.saturating_add(self.cs) > self.image_len || !(off - base).is_multiple_of(self.cs) {
            self.on_grid = false;
            self.scan = None;
            return;
        }
        let k = qemu_index(off, self.base, self.cs, self.shift);
        self.max_k = self.max_k.max(k);
        if let Some(scan) = &mut self.scan {
            let w = k / 64;
            if w >= scan.max_words {
                self.scan = None;
                return;
            }
            if w as usize >= scan.seen.len() {
                scan.seen.resize(w as usize + 1, 0);
            }
            let (word, bit) = (&mut scan.seen[w as usize], 1u64 << (k % 64));
            if *word & bit != 0 {
                scan.dups.push(i);
            }
            *word |= bit;
        }
    }

    /// QEMU's check from what the walk gathered, with `dups`, when given, the indexes of the
    /// entries the rules found duplicated (R19), in order; walks the BAT of `image` again only
    /// when the image's end is not where the walk assumed or those cannot stand for QEMU's.
    pub(crate) fn finish(&self, image: &Image<'_>, dups: Option<&[u32]>) -> QemuCheck {
        let mut c = CheckCounts {
            total_clusters: u64::from(self.header.bat_entries),
            ..Default::default()
        };
        let data_start = self.header_errors(&mut c);
        self.outside_errors(&mut c);
        let image_end = self.image_end(&mut c, data_start);
        // The statistics are counted on the duplicates' walk of the BAT (one walk fewer).
        let mut counter = ClusterCounter::new(self.header, image_end);
        let counted = match self.duplicates(image, dups, &mut c, (data_start, image_end), &mut counter) {
            Scan::Counted(counted) => counted,
            Scan::Ends(outcome) => return outcome,
        };
        (c.allocated_clusters, c.fragmented_clusters) = if counted {
            counter.counts()
        } else if self.allocated == 0 {
            // Nothing allocated: nothing to count, no walk needed.
            (0, 0)
        } else if self.high != 0 {
            // The image ends with its highest cluster inside: the clusters that end by it are
            // those that end by the end of the file, which the walk counted.
            self.counter.counts()
        } else {
            image.cluster_counts(image_end)
        };
        QemuCheck::Completes(c)
    }

    /// The header's errors (an image not closed, a `data_off` QEMU refuses); QEMU's data start,
    /// in sectors.
    fn header_errors(&self, c: &mut CheckCounts) -> u64 {
        let h = self.header;
        let (data_start, data_off_ok) = qemu_data_off(h, self.file_len);

        if h.raw.inuse.get() == INUSE_OPEN {
            c.error(CheckLine::NotClosed);
            c.corruptions += 1;
        }
        if !data_off_ok {
            c.error(CheckLine::DataOff);
            c.corruptions += 1;
        }
        data_start
    }

    /// The entries whose cluster is outside the image.
    fn outside_errors(&self, c: &mut CheckCounts) {
        let n = self.header.bat_entries;
        if self.all_outside {
            // Every entry is outside, unallocated ones and those past the end of the file
            // included (they read as 0). Counted, not walked: there may be half a billion.
            for i in 0..n {
                if c.errors.len() >= MAX_ERROR_LINES {
                    c.errors_omitted += u64::from(n - i);
                    break;
                }
                c.error(CheckLine::Outside { index: i });
            }
            c.corruptions += u64::from(n);
        } else {
            for &i in &self.outside {
                c.error(CheckLine::Outside { index: i });
            }
            c.errors_omitted += self.outside_count - self.outside.len() as u64;
            c.corruptions += self.outside_count;
        }
    }

    /// Where QEMU puts the image's end (in bytes), and the leak past it.
    fn image_end(&self, c: &mut CheckCounts, data_start: u64) -> u64 {
        let (n, tracks) = (self.header.bat_entries, u64::from(self.header.cluster_sectors));
        let (cs, mult, high, file_len) = (self.cs, self.mult, self.high, self.file_len);
        // Entries past the end of the file within the table read as 0 (unallocated).
        let max_entry = self.max_entry;
        // QEMU's open moves the data end past every entry, unallocated ones (sector 0) included;
        // with no entries at all it stays at the data start.
        let data_end = if n == 0 {
            data_start
        } else {
            data_start.max(max_entry * mult + tracks)
        };
        let image_end = if high != 0 { high + cs } else { data_end * 512 };
        c.image_end_offset = image_end;
        if file_len > image_end {
            let leaked = file_len - image_end;
            c.error(CheckLine::Leaked { bytes: leaked });
            c.leaks += leaked.div_ceil(cs);
        }
        image_end
    }

    /// QEMU's duplicate scan over the image from `data_start` (sectors) to `image_end` (bytes),
    /// counting the statistics on `counter` when it walks the BAT.
    fn duplicates(
        &self,
        image: &Image<'_>,
        dups: Option<&[u32]>,
        c: &mut CheckCounts,
        (data_start, image_end): (u64, u64),
        counter: &mut ClusterCounter<'_>,
    ) -> Scan {
        let (cs, mult, high) = (self.cs, self.mult, self.high);
        // Duplicates, with QEMU's truncating division and 32-bit index.
        let base = (data_start * 512) as i64;
        let shift = cs.is_power_of_two().then(|| cs.trailing_zeros());
        let idx = |o: u64| -> u64 { qemu_index(o, base, cs, shift) };
        let mut counted = false;
        // QEMU returns before the duplicate scan when the image end's index is 0, and only then
        // counts a partial last cluster, in 32 bits: an index of 2^32 - 1 becomes a bitmap of
        // 0 clusters, where every entry aborts.
        let end_index = idx(image_end) as u32;
        if end_index != 0 {
            let count = u64::from(if image_end % cs != 0 {
                end_index.wrapping_add(1)
            } else {
                end_index
            });
            let aborts = || QemuCheck::Aborts {
                assertion: ABORT_CHECK_DUPLICATE.into(),
            };
            // The walk's counts hold when the highest cluster inside set the end (so that the
            // statistics' end is the file's for every entry), the rules' duplicates when every
            // cluster was on the grid from the same data start.
            if let (true, true, Some(dups)) = (high != 0 && base == self.base, self.on_grid, dups) {
                if self.allocated > 0 && self.max_k >= count {
                    return Scan::Ends(aborts());
                }
                for &i in dups {
                    c.error(CheckLine::Duplicate { index: i });
                    c.corruptions += 1;
                }
                if dups.last().is_some() && dups.last() == self.last.as_ref() {
                    return Scan::Ends(QemuCheck::Fails);
                }
                (c.allocated_clusters, c.fragmented_clusters) = self.counter.counts();
                return Scan::Ends(QemuCheck::Completes(std::mem::take(c)));
            }
            let index_of = |e: u32| -> Option<u64> {
                let k = idx(u64::from(e) * mult * 512);
                (k < count).then_some(k)
            };
            // A bit set over QEMU's index range when it is no larger than the BAT (plus 1 MiB),
            // else the (index, entry) pairs sorted: memory follows the metadata either way.
            let words = count.div_ceil(64);
            let mut last_dup = false;
            if words <= u64::from(image.bat_entries_in_file()) / 2 + (1 << 17) {
                let mut seen = vec![0u64; words as usize];
                for (i, e) in image.allocated_entries() {
                    counter.add(i, e);
                    let Some(k) = index_of(e) else {
                        return Scan::Ends(aborts());
                    };
                    let (w, bit) = (&mut seen[(k / 64) as usize], 1u64 << (k % 64));
                    last_dup = *w & bit != 0;
                    *w |= bit;
                    if last_dup {
                        c.error(CheckLine::Duplicate { index: i });
                        c.corruptions += 1;
                    }
                }
                counted = true;
            } else {
                // k < count <= 2^32 and i < 2^29: one u64 per allocated entry.
                let mut pairs = Vec::new();
                let mut last = None;
                for (i, e) in image.allocated_entries() {
                    counter.add(i, e);
                    let Some(k) = index_of(e) else {
                        return Scan::Ends(aborts());
                    };
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
                counted = true;
                dups.sort_unstable();
                for &i in &dups {
                    c.error(CheckLine::Duplicate { index: i as u32 });
                    c.corruptions += 1;
                }
                last_dup = last.is_some() && dups.last() == last.as_ref();
            }
            if last_dup {
                return Scan::Ends(QemuCheck::Fails);
            }
        }
        Scan::Counted(counted)
    }
}

/// How [`CheckWalk::duplicates`] ended.
enum Scan {
    /// The scan ran to its end; whether it counted the statistics.
    Counted(bool),
    /// The check ends with this outcome (an abort, a failure, or the rules' duplicates standing
    /// for QEMU's).
    Ends(QemuCheck),
}

/// QEMU's data start, in sectors: `data_off` when it is valid, else the end of the BAT rounded
/// up to a cluster (v2) or a sector (v1).
fn qemu_data_start(h: &crate::header::Header, file_len: u64) -> u64 {
    qemu_data_off(h, file_len).0
}

/// QEMU's data start ([`qemu_data_start`]) and whether it takes `data_off` as valid (a v1
/// image's 0 is: it means the default); an invalid one is a corruption of its check.
fn qemu_data_off(h: &crate::header::Header, file_len: u64) -> (u64, bool) {
    let tracks = u64::from(h.cluster_sectors);
    let v1 = h.variant == Variant::V1;
    let mut min_off = h.bat_end().div_ceil(512);
    if !v1 {
        // QEMU rounds with a bit mask, which is exact only for a power of two.
        min_off = (min_off + tracks - 1) & tracks.wrapping_neg();
    }
    let data_off = u64::from(h.raw.data_off.get());
    let v1_default = v1 && data_off == 0;
    let data_off_ok = v1_default || (data_off >= min_off && data_off <= file_len / 512);
    let data_start = if data_off_ok && !v1_default { data_off } else { min_off };
    (data_start, data_off_ok)
}

/// QEMU's cluster index of byte `o` from `base`: a truncating division, cut to 32 bits.
#[inline]
fn qemu_index(o: u64, base: i64, cs: u64, shift: Option<u32>) -> u64 {
    let x = o as i64 - base;
    let q = match shift {
        Some(s) if x >= 0 => x >> s,
        _ => x / cs as i64,
    };
    u64::from(q as u32)
}

#[cfg(test)]
mod tests {
    use super::{Version, Versions};

    #[test]
    fn versions_read_all_or_one_and_say_both_when_wrong() {
        assert_eq!("all".parse::<Versions>(), Ok(Versions::All));
        assert_eq!("7.2".parse::<Versions>(), Ok(Versions::One(Version::V7_2)));
        assert_eq!(Versions::All.list(), vec![Version::V10_0, Version::V7_2]);
        assert_eq!(Versions::default().list(), vec![Version::V10_0]);
        assert_eq!(Versions::All.title(), "QEMU 10 and 7.2");
        assert_eq!(
            "8".parse::<Versions>(),
            Err("QEMU version \"8\" is not predicted (expected 7.2 or 10.0), or all".to_string())
        );
    }
}
