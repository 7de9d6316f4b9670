//! The catalogue of the format's rules as values: a [`Violation`] is one broken rule, with what
//! was found and what was expected.
//!
//! Every [`Violation`] names the spec rule it breaks ([`Violation::rule`], see `rule.rs`), how
//! bad it is ([`Violation::severity`]) and where it is ([`Violation::location`]); its message
//! says what was found and what was expected.

use std::fmt;

use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::rule::{Rule, Severity};

/// A field of the 64-byte header: the one table of the fields' names, byte offsets and widths,
/// shared by [`crate::Location`], the violations' messages, repair and the mutator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum HeaderField {
    /// `magic`, the 16 bytes at byte 0: `WithoutFreeSpace` (v1) or `WithouFreSpacExt` (v2).
    Magic,
    /// `version`, the u32 at byte 16 (2 in every image readers accept).
    Version,
    /// `heads`, the u32 at byte 20 (geometry, not checked by readers).
    Heads,
    /// `cylinders`, the u32 at byte 24 (geometry).
    Cylinders,
    /// `tracks`, the u32 at byte 28: sectors per cluster.
    Tracks,
    /// `bat_entries`, the u32 at byte 32: the number of BAT entries.
    BatEntries,
    /// `nb_sectors`, the u64 at byte 36: the disk size in sectors.
    NbSectors,
    /// `inuse`, the u32 at byte 44: 0 closed, `0x746f6e59` open, `0x312e3276` closed with a CBT.
    Inuse,
    /// `data_off`, the u32 at byte 48: the first data sector.
    DataOff,
    /// `flags`, the u32 at byte 52 (bit 0: empty, bit 1: format conversion).
    Flags,
    /// `ext_off`, the u64 at byte 56: the extension cluster's sector (0: none).
    ExtOff,
}

impl HeaderField {
    /// The field's name in the on-disk header (`tracks`, `nb_sectors`…).
    pub const fn name(self) -> &'static str {
        self.entry().0
    }

    /// The field's byte offset in the header (and the file).
    pub const fn offset(self) -> u64 {
        self.entry().1
    }

    /// The field's width in bytes.
    pub const fn width(self) -> u64 {
        self.entry().2
    }

    /// `(offset, width)`: the bytes of the file the field holds.
    pub const fn span(self) -> (u64, u64) {
        (self.offset(), self.width())
    }

    /// "header NAME at byte OFFSET", the way messages name the field.
    pub(crate) const fn at(self) -> FieldAt {
        FieldAt(self)
    }

    /// The table: name, byte offset, width (the layout of [`crate::raw::RawHeader`]).
    const fn entry(self) -> (&'static str, u64, u64) {
        match self {
            HeaderField::Magic => ("magic", 0, 16),
            HeaderField::Version => ("version", 16, 4),
            HeaderField::Heads => ("heads", 20, 4),
            HeaderField::Cylinders => ("cylinders", 24, 4),
            HeaderField::Tracks => ("tracks", 28, 4),
            HeaderField::BatEntries => ("bat_entries", 32, 4),
            HeaderField::NbSectors => ("nb_sectors", 36, 8),
            HeaderField::Inuse => ("inuse", 44, 4),
            HeaderField::DataOff => ("data_off", 48, 4),
            HeaderField::Flags => ("flags", 52, 4),
            HeaderField::ExtOff => ("ext_off", 56, 8),
        }
    }
}

impl std::fmt::Display for HeaderField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A header field as messages name it: "header NAME at byte OFFSET" ([`HeaderField::at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldAt(HeaderField);

impl std::fmt::Display for FieldAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "header {} at byte {}", self.0.name(), self.0.offset())
    }
}

/// 16 bytes as lower-case hex.
pub(crate) fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 16 bytes as text in double quotes, what is not printable ASCII escaped (`"hello\n\x00..."`).
pub(crate) fn text16(b: &[u8; 16]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// A region of the file, for overlap reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum Region {
    /// The header and the BAT, up to the start of the data area.
    HeaderAndBat,
    /// The data cluster of a BAT entry.
    DataCluster {
        /// BAT index.
        bat_index: u32,
    },
    /// The Format Extension cluster.
    Extension,
    /// A cluster that holds bitmap bits.
    BitmapCluster {
        /// Feature number of the bitmap.
        feature: usize,
        /// L1 index.
        l1_index: u32,
    },
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::HeaderAndBat => write!(f, "the header and BAT area"),
            Region::DataCluster { bat_index } => write!(f, "the data cluster of BAT[{bat_index}]"),
            Region::Extension => write!(f, "the extension cluster"),
            Region::BitmapCluster { feature, l1_index } => {
                write!(f, "the bitmap cluster of feature #{feature} L1[{l1_index}]")
            }
        }
    }
}

/// Where a violation is. As JSON (feature `serde`): `kind` (`header`, `bat`, `file`,
/// `extension`, `feature`, `l1`) and the fields that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum Location {
    /// A header field.
    Header {
        /// The field.
        field: HeaderField,
        /// Byte offset of the field in the file.
        offset: u64,
    },
    /// A BAT entry.
    Bat {
        /// BAT index.
        index: u32,
        /// Byte offset of the entry in the file.
        offset: u64,
    },
    /// A byte range of the file.
    File {
        /// Byte offset in the file.
        offset: u64,
    },
    /// The extension cluster (offset in the file).
    Extension {
        /// Byte offset in the file.
        offset: u64,
    },
    /// A feature record.
    Feature {
        /// Feature number, from 0.
        index: usize,
        /// Byte offset of the record in the file.
        offset: u64,
    },
    /// An L1 entry of a bitmap.
    L1 {
        /// Feature number of the bitmap.
        feature: usize,
        /// L1 index.
        index: u32,
    },
}

impl Location {
    /// The header field `field`, at its offset.
    pub const fn header(field: HeaderField) -> Location {
        Location::Header {
            field,
            offset: field.offset(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Header { field, offset } => write!(f, "header.{field} @{offset}"),
            Location::Bat { index, offset } => write!(f, "BAT[{index}] @{offset}"),
            Location::File { offset } => write!(f, "file @{offset}"),
            Location::Extension { offset } => write!(f, "extension @{offset}"),
            Location::Feature { index, offset } => write!(f, "feature #{index} @{offset}"),
            Location::L1 { feature, index } => write!(f, "feature #{feature} L1[{index}]"),
        }
    }
}

/// A broken rule of the format. The variant names the rule; [`Violation::rule`] gives its code
/// in `spec/`. Field names follow the spec: `found`/`expected` values, `index` (BAT index,
/// feature number or L1 index) and `offset` (byte offset in the file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "violation", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Violation {
    /// R1: the magic is neither `WithoutFreeSpace` nor `WithouFreSpacExt`.
    #[error(
        "{} is {} (hex {}), expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\"", HeaderField::Magic.at(),
        text16(found),
        hex16(found)
    )]
    BadMagic {
        /// The 16 magic bytes as stored.
        found: [u8; 16],
    },
    /// R2: version is not 2.
    #[error("{} is {found}, expected 2", HeaderField::Version.at())]
    BadVersion {
        /// The `version` field as stored.
        found: u32,
    },
    /// R3: tracks (sectors per cluster) is 0.
    #[error("{} is 0, expected a cluster size of at least 1 sector", HeaderField::Tracks.at())]
    ZeroTracks,
    /// R4: tracks is above 4186127.
    #[error("{} is {tracks}, expected at most {max} (cluster too big)", HeaderField::Tracks.at())]
    ClusterTooBig {
        /// `tracks` as stored: the cluster size in sectors.
        tracks: u32,
        /// The largest value readers accept.
        max: u32,
    },
    /// R5: bat_entries is above 536870911.
    #[error("{} is {bat_entries}, expected at most {max} (catalog too large)", HeaderField::BatEntries.at())]
    CatalogTooLarge {
        /// `bat_entries` as stored.
        bat_entries: u32,
        /// The largest value readers accept.
        max: u32,
    },
    /// R6: ext_off is not below INT64_MAX >> 9.
    #[error("{} is {ext_off} sectors, expected below {max}", HeaderField::ExtOff.at())]
    ExtOffTooBig {
        /// `ext_off` as stored, in sectors.
        ext_off: u64,
        /// The largest value readers accept.
        max: u64,
    },
    /// R7: inuse says the image is open or was not closed cleanly.
    #[error("{} is 0x746f6e59 (\"Ynot\"): the image was not closed cleanly", HeaderField::Inuse.at())]
    Unclean,
    /// R8: inuse holds a value no implementation writes.
    #[error("{} is {found:#010x}, expected 0, a writer's tag (\"v2.1\", \"pd17\", \"pd22\") or 0x746f6e59 (\"Ynot\")", HeaderField::Inuse.at())]
    UnknownInuse {
        /// The `inuse` field as stored.
        found: u32,
    },
    /// R9: flags has bits with no known meaning.
    #[error("{} is {found:#010x}, expected only bits 0 and 1", HeaderField::Flags.at())]
    UnknownFlags {
        /// The `flags` field as stored.
        found: u32,
    },
    /// R10: v1 image with nb_sectors above 32 bits (readers use only the low 32 bits).
    #[error("{} is {nb_sectors}, but a v1 image uses only the low 32 bits ({})", HeaderField::NbSectors.at(), nb_sectors & 0xffff_ffff)]
    V1SizeHighBits {
        /// `nb_sectors` (the disk size) in sectors.
        nb_sectors: u64,
    },
    /// R11: the virtual size is beyond what the BAT covers.
    #[error("{} is {nb_sectors}, expected at most bat_entries * tracks = {covered}", HeaderField::NbSectors.at())]
    SizeBeyondBat {
        /// `nb_sectors` (the disk size) in sectors.
        nb_sectors: u64,
        /// `bat_entries * tracks`: the sectors the BAT can address.
        covered: u64,
    },
    /// R12: a v2 image has data_off 0.
    #[error("{} is 0, expected a non-zero sector offset in a v2 image", HeaderField::DataOff.at())]
    DataOffZero,
    /// R13: a v2 image's data_off is not a multiple of the cluster size.
    #[error("{} is {data_off} sectors, expected a multiple of tracks ({tracks})", HeaderField::DataOff.at())]
    DataOffUnaligned {
        /// `data_off` as stored, in sectors.
        data_off: u32,
        /// `tracks` as stored: the cluster size in sectors.
        tracks: u32,
    },
    /// R14: the data area starts inside the header and BAT.
    #[error("{} is {data_off} sectors (byte {data_start}), expected at least {min_start} (end of the BAT, rounded up)", HeaderField::DataOff.at())]
    DataOffInsideBat {
        /// `data_off` as stored, in sectors.
        data_off: u32,
        /// Byte offset where the data area starts.
        data_start: u64,
        /// The smallest data start allowed: the end of the BAT rounded up, in bytes.
        min_start: u64,
    },
    /// R15: the data area starts past the end of the file.
    #[error("{} puts the data area at byte {data_start}, past the end of the file ({file_len} bytes)", HeaderField::DataOff.at())]
    DataOffPastEof {
        /// Byte offset where the data area starts.
        data_start: u64,
        /// The length of the file in bytes.
        file_len: u64,
    },
    /// R16: a BAT entry points into the header and BAT area.
    #[error(
        "BAT[{index}] = {entry} points at byte {offset}, inside the header and BAT area (data starts at {data_start})"
    )]
    BatEntryBelowData {
        /// BAT index.
        index: u32,
        /// The BAT entry as stored (sectors for v1, clusters for v2).
        entry: u32,
        /// Byte offset in the file the entry points at.
        offset: u64,
        /// Byte offset where the data area starts.
        data_start: u64,
    },
    /// R17: a v1 BAT entry is not a whole number of clusters from the data area start.
    #[error("BAT[{index}] = {entry} points at byte {offset}, expected data start {data_start} plus a multiple of the cluster size {cluster_size}")]
    BatEntryUnaligned {
        /// BAT index.
        index: u32,
        /// The BAT entry as stored (sectors for v1, clusters for v2).
        entry: u32,
        /// Byte offset in the file the entry points at.
        offset: u64,
        /// Byte offset where the data area starts.
        data_start: u64,
        /// The cluster size in bytes.
        cluster_size: u64,
    },
    /// R18: a BAT entry's cluster ends past the end of the file.
    #[error("BAT[{index}] = {entry} points at byte {offset}; its cluster ends at {end}, past the end of the file ({file_len} bytes)")]
    BatEntryPastEof {
        /// BAT index.
        index: u32,
        /// The BAT entry as stored (sectors for v1, clusters for v2).
        entry: u32,
        /// Byte offset in the file the entry points at.
        offset: u64,
        /// Byte offset where the cluster ends.
        end: u64,
        /// The length of the file in bytes.
        file_len: u64,
    },
    /// R19: two BAT entries point at the same cluster.
    #[error("BAT[{index}] = {entry} points at byte {offset}, already used by BAT[{first}]")]
    BatEntryDuplicate {
        /// BAT index.
        index: u32,
        /// The BAT entry as stored (sectors for v1, clusters for v2).
        entry: u32,
        /// Byte offset in the file the entry points at.
        offset: u64,
        /// The earlier one that holds it: a BAT index (R19) or feature number (R41).
        first: u32,
    },
    /// R20: bytes after the last referenced cluster.
    #[error("{len} bytes at {offset} after the last referenced cluster are leaked")]
    Leak {
        /// Byte offset where the leaked tail starts (the end of the last referenced byte).
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// R21: the extension cluster is not on a cluster boundary of the data area (multiples of
    /// the cluster size from byte 0 for v2, from the data area start for v1).
    #[error("{} is {ext_off} sectors (byte {offset}), expected a cluster boundary of the data area (cluster size {cluster_size})", HeaderField::ExtOff.at())]
    ExtOffUnaligned {
        /// `ext_off` as stored, in sectors.
        ext_off: u64,
        /// Byte offset of the extension cluster in the file.
        offset: u64,
        /// The cluster size in bytes.
        cluster_size: u64,
    },
    /// R22: the extension cluster ends past the end of the file.
    #[error("the extension cluster at byte {offset} ends at {end}, past the end of the file ({file_len} bytes)")]
    ExtPastEof {
        /// Byte offset of the extension cluster in the file.
        offset: u64,
        /// Byte offset where the cluster ends.
        end: u64,
        /// The length of the file in bytes.
        file_len: u64,
    },
    /// R23: the extension cluster overlaps another region.
    #[error("the extension cluster at byte {offset} overlaps {with}")]
    ExtOverlap {
        /// Byte offset of the extension cluster in the file.
        offset: u64,
        /// The region it overlaps.
        with: Region,
    },
    /// R24: the extension magic is wrong (the rest of the cluster is not interpreted).
    #[error("extension magic at byte {offset} is {found:#018x}, expected 0xab234cef23dcea87; the cluster is not interpreted (no feature or bitmap is checked)")]
    ExtBadMagic {
        /// Byte offset of the extension cluster in the file.
        offset: u64,
        /// The extension magic as stored.
        found: u64,
    },
    /// R25: the extension checksum does not match.
    #[error(
        "extension checksum at byte {offset} is {}, expected the MD5 of the cluster's bytes 24.. = {}",
        hex16(found),
        hex16(expected)
    )]
    ExtBadChecksum {
        /// Byte offset of the extension cluster in the file.
        offset: u64,
        /// The MD5 stored in the cluster (bytes 8..24).
        found: [u8; 16],
        /// The MD5 of the cluster's bytes 24.. as computed.
        expected: [u8; 16],
    },
    /// R26: fewer bytes than a feature header are left in the cluster.
    #[error("feature #{index} at byte {offset}: only {remaining} bytes left in the extension cluster, expected at least 24 for a feature header")]
    FeatureTruncated {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// Bytes left in the extension cluster after the record's start (R26) or header (R28).
        remaining: u64,
    },
    /// R27: a feature has non-zero flags.
    #[error("feature #{index} at byte {offset} (magic {magic:#018x}) has flags {flags:#x}, expected 0")]
    FeatureFlags {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The record's magic.
        magic: u64,
        /// The record's flags.
        flags: u64,
    },
    /// R28: a feature's data runs past the end of the cluster.
    #[error("feature #{index} at byte {offset}: data_size {data_size} is more than the {remaining} bytes left in the extension cluster")]
    FeatureDataOverflow {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The record's `data_size`, in bytes.
        data_size: u32,
        /// Bytes left in the extension cluster after the record's start (R26) or header (R28).
        remaining: u64,
    },
    /// R29: a feature's magic is unknown.
    #[error("feature #{index} at byte {offset} has unknown magic {magic:#018x}")]
    UnknownFeature {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The record's magic.
        magic: u64,
    },
    /// R30: the feature list has no end record.
    #[error("the feature list has no end record: the cluster ends at byte {offset} after {count} features")]
    MissingEndRecord {
        /// Byte offset in the file where the cluster ends.
        offset: u64,
        /// How many: feature records before the end of the cluster (R30), set bits (R42).
        count: usize,
    },
    /// R31: padding or the end record has non-zero bytes.
    #[error("extension byte {offset} is {found:#04x}, expected 0 (padding, end record or the rest of the cluster)")]
    NonZeroPadding {
        /// Byte offset in the file of the non-zero byte.
        offset: u64,
        /// The first non-zero byte found.
        found: u8,
    },
    /// R32: a bitmap feature's data is too short for its header and L1 table.
    #[error("feature #{index} at byte {offset}: data_size {data_size}, expected {expected} (32-byte bitmap header plus 8 bytes per L1 entry)")]
    BitmapDataTooShort {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The record's `data_size`, in bytes.
        data_size: u32,
        /// Bytes the bitmap header and its L1 table need.
        expected: u64,
    },
    /// R33: a bitmap feature's data is longer than its header and L1 table.
    #[error("feature #{index} at byte {offset}: data_size {data_size}, expected {expected}; {} extra bytes", *data_size as u64 - expected)]
    BitmapExtraData {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The record's `data_size`, in bytes.
        data_size: u32,
        /// Bytes the bitmap header and its L1 table need.
        expected: u64,
    },
    /// R34: a bitmap's size is not the disk's size.
    #[error("bitmap feature #{index} at byte {offset}: size {found} sectors, expected nb_sectors = {expected}")]
    BitmapSizeMismatch {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The bitmap's `size`, in sectors.
        found: u64,
        /// The disk's `nb_sectors` (as readers use it), in sectors.
        expected: u64,
    },
    /// R35: a bitmap's granularity is 0 or not a power of two.
    #[error("bitmap feature #{index} at byte {offset}: granularity {found} sectors, expected a non-zero power of two")]
    BitmapGranularityInvalid {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The granularity as stored, in sectors.
        found: u32,
    },
    /// R36: a bitmap's granularity in bytes does not fit in 32 bits.
    #[error("bitmap feature #{index} at byte {offset}: granularity {found} sectors is {} bytes, expected at most 2^31 bytes (it must fit in u32)", *found as u64 * 512)]
    BitmapGranularityTooBig {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The granularity as stored, in sectors.
        found: u32,
    },
    /// R37: a bitmap's l1_size does not match the disk size, granularity and cluster size.
    #[error("bitmap feature #{index} at byte {offset}: l1_size {found}, expected {expected} (one entry per {cluster_bits} granules)")]
    BitmapL1Size {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// `l1_size` as stored, in entries.
        found: u32,
        /// The `l1_size` the disk size, granularity and cluster size call for, in entries.
        expected: u64,
        /// Granules one bitmap cluster holds: `8 * cluster_size`.
        cluster_bits: u64,
    },
    /// R38: an L1 entry is not on a cluster boundary of the data area (as for R21).
    #[error("bitmap feature #{feature} L1[{index}] = {entry} (byte {offset}), expected a cluster boundary of the data area (cluster size {cluster_size})")]
    L1EntryUnaligned {
        /// Feature number of the bitmap, from 0, in record order.
        feature: usize,
        /// L1 index.
        index: u32,
        /// The L1 entry as stored, in sectors.
        entry: u64,
        /// Byte offset in the file the L1 entry points at (`entry * 512`).
        offset: u64,
        /// The cluster size in bytes.
        cluster_size: u64,
    },
    /// R39: an L1 entry's cluster ends past the end of the file.
    #[error("bitmap feature #{feature} L1[{index}] = {entry} points at byte {offset}, its cluster ends past the end of the file ({file_len} bytes)")]
    L1EntryPastEof {
        /// Feature number of the bitmap, from 0, in record order.
        feature: usize,
        /// L1 index.
        index: u32,
        /// The L1 entry as stored, in sectors.
        entry: u64,
        /// Byte offset in the file the L1 entry points at (`entry * 512`).
        offset: u64,
        /// The length of the file in bytes.
        file_len: u64,
    },
    /// R40: an L1 entry's cluster overlaps another region.
    #[error("bitmap feature #{feature} L1[{index}] = {entry} points at byte {offset}, which overlaps {with}")]
    L1EntryOverlap {
        /// Feature number of the bitmap, from 0, in record order.
        feature: usize,
        /// L1 index.
        index: u32,
        /// The L1 entry as stored, in sectors.
        entry: u64,
        /// Byte offset in the file the L1 entry points at (`entry * 512`).
        offset: u64,
        /// The region it overlaps.
        with: Region,
    },
    /// R41: two bitmaps have the same id.
    #[error("bitmap feature #{index} at byte {offset} has id {id}, already used by feature #{first}")]
    DuplicateBitmapId {
        /// Feature number, from 0, in record order.
        index: usize,
        /// Byte offset in the file of the feature record.
        offset: u64,
        /// The earlier one that holds it: a BAT index (R19) or feature number (R41).
        first: usize,
        /// The id as QEMU prints it (a lower-case UUID).
        id: String,
    },
    /// R42: bits past the last granule of the last chunk are set.
    #[error("bitmap feature #{feature} L1[{index}]: bits past the last granule are set ({count} bits)")]
    BitmapTrailingBits {
        /// Feature number of the bitmap, from 0, in record order.
        feature: usize,
        /// L1 index of the last chunk.
        index: u32,
        /// How many: feature records before the end of the cluster (R30), set bits (R42).
        count: u64,
    },
    /// R43: an allocated BAT entry for a cluster past the end of the disk.
    #[error(
        "BAT[{index}] = {entry} is allocated, but the disk ends in cluster {last} (nb_sectors / tracks, rounded up)"
    )]
    BatEntryPastDisk {
        /// BAT index of the entry.
        index: u32,
        /// The BAT entry as stored.
        entry: u32,
        /// The number of clusters the disk covers: `ceil(nb_sectors / tracks)`.
        last: u64,
    },
    /// R44: the slots between the end of the BAT and the data area hold non-zero bytes (ploop
    /// reads every slot up to the data area as a BAT entry).
    #[error("byte {offset} between the end of the BAT and the data area is {found:#04x}, expected 0 ({count} non-zero 4-byte slots there)")]
    BatSlackNonZero {
        /// Byte offset of the first non-zero byte in the file.
        offset: u64,
        /// That byte.
        found: u8,
        /// How many 4-byte slots between the BAT and the data area are non-zero.
        count: u64,
    },
    /// R45: the extension or a bitmap cluster starts between the end of the BAT and the data
    /// area.
    #[error("{what} at byte {offset} is between the end of the BAT ({bat_end}) and the data area ({data_start})")]
    MetadataBeforeData {
        /// Byte offset of the cluster in the file.
        offset: u64,
        /// What the cluster is.
        what: Region,
        /// Byte offset where the BAT ends.
        bat_end: u64,
        /// Byte offset where the data area starts.
        data_start: u64,
    },
    /// R46: bytes inside the image (before the last referenced cluster) that nothing references.
    #[error("{len} bytes at {offset}, before the last referenced cluster, are referenced by nothing")]
    Unreferenced {
        /// Byte offset of the first unreferenced byte in the file.
        offset: u64,
        /// Length of the unreferenced run in bytes.
        len: u64,
    },
    /// R47: a v1 image's data_off is 0 or 1 (ploop refuses both).
    #[error("{} is {data_off} in a v1 image: valid, but ploop refuses it (it wants the data area's sector)", HeaderField::DataOff.at())]
    V1DataOffUnset {
        /// `data_off` as stored, in sectors.
        data_off: u32,
    },
    /// R48: the header and BAT are too large for QEMU's one read.
    #[error("{} is {bat_entries}, expected at most {max} (QEMU reads the header and BAT in one request of at most 2147483136 bytes)", HeaderField::BatEntries.at())]
    BatTooLargeToRead {
        /// `bat_entries` as stored.
        bat_entries: u32,
        /// The most entries QEMU's single read of the header and BAT can hold.
        max: u32,
    },
    /// R49: a bitmap on a disk of 0 sectors.
    #[error("bitmap feature #{index} at byte {offset} is on a disk of 0 sectors")]
    BitmapOnEmptyDisk {
        /// Feature number of the bitmap, from 0, in record order.
        index: usize,
        /// Byte offset of the feature record in the file.
        offset: u64,
    },
}

impl Violation {
    /// The rule it breaks.
    pub fn rule(&self) -> Rule {
        use Violation::*;
        match self {
            BadMagic { .. } => Rule::R1,
            BadVersion { .. } => Rule::R2,
            ZeroTracks => Rule::R3,
            ClusterTooBig { .. } => Rule::R4,
            CatalogTooLarge { .. } => Rule::R5,
            ExtOffTooBig { .. } => Rule::R6,
            Unclean => Rule::R7,
            UnknownInuse { .. } => Rule::R8,
            UnknownFlags { .. } => Rule::R9,
            V1SizeHighBits { .. } => Rule::R10,
            SizeBeyondBat { .. } => Rule::R11,
            DataOffZero => Rule::R12,
            DataOffUnaligned { .. } => Rule::R13,
            DataOffInsideBat { .. } => Rule::R14,
            DataOffPastEof { .. } => Rule::R15,
            BatEntryBelowData { .. } => Rule::R16,
            BatEntryUnaligned { .. } => Rule::R17,
            BatEntryPastEof { .. } => Rule::R18,
            BatEntryDuplicate { .. } => Rule::R19,
            Leak { .. } => Rule::R20,
            ExtOffUnaligned { .. } => Rule::R21,
            ExtPastEof { .. } => Rule::R22,
            ExtOverlap { .. } => Rule::R23,
            ExtBadMagic { .. } => Rule::R24,
            ExtBadChecksum { .. } => Rule::R25,
            FeatureTruncated { .. } => Rule::R26,
            FeatureFlags { .. } => Rule::R27,
            FeatureDataOverflow { .. } => Rule::R28,
            UnknownFeature { .. } => Rule::R29,
            MissingEndRecord { .. } => Rule::R30,
            NonZeroPadding { .. } => Rule::R31,
            BitmapDataTooShort { .. } => Rule::R32,
            BitmapExtraData { .. } => Rule::R33,
            BitmapSizeMismatch { .. } => Rule::R34,
            BitmapGranularityInvalid { .. } => Rule::R35,
            BitmapGranularityTooBig { .. } => Rule::R36,
            BitmapL1Size { .. } => Rule::R37,
            L1EntryUnaligned { .. } => Rule::R38,
            L1EntryPastEof { .. } => Rule::R39,
            L1EntryOverlap { .. } => Rule::R40,
            DuplicateBitmapId { .. } => Rule::R41,
            BitmapTrailingBits { .. } => Rule::R42,
            BatEntryPastDisk { .. } => Rule::R43,
            BatSlackNonZero { .. } => Rule::R44,
            MetadataBeforeData { .. } => Rule::R45,
            Unreferenced { .. } => Rule::R46,
            V1DataOffUnset { .. } => Rule::R47,
            BatTooLargeToRead { .. } => Rule::R48,
            BitmapOnEmptyDisk { .. } => Rule::R49,
        }
    }

    /// How serious the violation is: its rule's [`Rule::severity`]. Unknown features and
    /// feature flags are corruption here; the validator lowers them to notes in lenient mode.
    pub fn severity(&self) -> Severity {
        self.rule().severity()
    }

    /// Where the violation is.
    pub fn location(&self) -> Location {
        use Violation::*;
        let h = Location::header;
        match *self {
            BadMagic { .. } => h(HeaderField::Magic),
            BadVersion { .. } => h(HeaderField::Version),
            ZeroTracks | ClusterTooBig { .. } => h(HeaderField::Tracks),
            CatalogTooLarge { .. } | BatTooLargeToRead { .. } => h(HeaderField::BatEntries),
            ExtOffTooBig { .. } | ExtOffUnaligned { .. } => h(HeaderField::ExtOff),
            Unclean | UnknownInuse { .. } => h(HeaderField::Inuse),
            UnknownFlags { .. } => h(HeaderField::Flags),
            V1SizeHighBits { .. } | SizeBeyondBat { .. } => h(HeaderField::NbSectors),
            DataOffZero
            | DataOffUnaligned { .. }
            | DataOffInsideBat { .. }
            | DataOffPastEof { .. }
            | V1DataOffUnset { .. } => h(HeaderField::DataOff),
            BatEntryBelowData { index, .. }
            | BatEntryUnaligned { index, .. }
            | BatEntryPastEof { index, .. }
            | BatEntryDuplicate { index, .. }
            | BatEntryPastDisk { index, .. } => Location::Bat {
                index,
                offset: BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index),
            },
            Leak { offset, .. }
            | NonZeroPadding { offset, .. }
            | BatSlackNonZero { offset, .. }
            | MetadataBeforeData { offset, .. }
            | Unreferenced { offset, .. } => Location::File { offset },
            ExtPastEof { offset, .. }
            | ExtOverlap { offset, .. }
            | ExtBadMagic { offset, .. }
            | ExtBadChecksum { offset, .. }
            | MissingEndRecord { offset, .. } => Location::Extension { offset },
            FeatureTruncated { index, offset, .. }
            | FeatureFlags { index, offset, .. }
            | FeatureDataOverflow { index, offset, .. }
            | UnknownFeature { index, offset, .. }
            | BitmapDataTooShort { index, offset, .. }
            | BitmapExtraData { index, offset, .. }
            | BitmapSizeMismatch { index, offset, .. }
            | BitmapGranularityInvalid { index, offset, .. }
            | BitmapGranularityTooBig { index, offset, .. }
            | BitmapL1Size { index, offset, .. } => Location::Feature { index, offset },
            DuplicateBitmapId { index, offset, .. } | BitmapOnEmptyDisk { index, offset, .. } => {
                Location::Feature { index, offset }
            }
            L1EntryUnaligned { feature, index, .. }
            | L1EntryPastEof { feature, index, .. }
            | L1EntryOverlap { feature, index, .. }
            | BitmapTrailingBits { feature, index, .. } => Location::L1 { feature, index },
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod json_tests {
    use super::*;

    #[test]
    fn locations_as_json() {
        let j = |l: Location| serde_json::to_value(l).unwrap();
        assert_eq!(
            j(Location::header(HeaderField::Inuse)),
            serde_json::json!({"kind": "header", "field": "inuse", "offset": 44})
        );
        assert_eq!(
            j(Location::L1 { feature: 1, index: 2 }),
            serde_json::json!({"kind": "l1", "feature": 1, "index": 2})
        );
        assert_eq!(
            j(Location::Bat { index: 3, offset: 76 }),
            serde_json::json!({"kind": "bat", "index": 3, "offset": 76})
        );
    }

    #[test]
    fn violations_as_json_name_their_variant_and_fields() {
        let v = Violation::BatEntryDuplicate {
            index: 5,
            entry: 3,
            offset: 196608,
            first: 2,
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"violation": "bat_entry_duplicate", "index": 5, "entry": 3, "offset": 196608, "first": 2})
        );
        assert_eq!(
            serde_json::to_value(Violation::Unclean).unwrap(),
            serde_json::json!({"violation": "unclean"})
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::header::{RawHeader, HEADER_SIZE};
    use core::mem::offset_of;

    #[test]
    fn the_header_field_table_is_the_raw_layout() {
        let table = [
            (HeaderField::Magic, offset_of!(RawHeader, magic), 16),
            (HeaderField::Version, offset_of!(RawHeader, version), 4),
            (HeaderField::Heads, offset_of!(RawHeader, heads), 4),
            (HeaderField::Cylinders, offset_of!(RawHeader, cylinders), 4),
            (HeaderField::Tracks, offset_of!(RawHeader, tracks), 4),
            (HeaderField::BatEntries, offset_of!(RawHeader, bat_entries), 4),
            (HeaderField::NbSectors, offset_of!(RawHeader, nb_sectors), 8),
            (HeaderField::Inuse, offset_of!(RawHeader, inuse), 4),
            (HeaderField::DataOff, offset_of!(RawHeader, data_off), 4),
            (HeaderField::Flags, offset_of!(RawHeader, flags), 4),
            (HeaderField::ExtOff, offset_of!(RawHeader, ext_off), 8),
        ];
        let mut end = 0;
        for (field, offset, width) in table {
            assert_eq!(field.offset(), offset as u64, "{field}");
            assert_eq!(field.width(), width, "{field}");
            assert_eq!(field.offset(), end, "{field} follows the previous field");
            end = field.offset() + field.width();
        }
        assert_eq!(end, HEADER_SIZE as u64);
        assert_eq!(HeaderField::NbSectors.at().to_string(), "header nb_sectors at byte 36");
        assert_eq!(HeaderField::BatEntries.span(), (32, 4));
    }
}
