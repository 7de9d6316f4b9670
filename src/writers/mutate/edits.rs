//! The edits a variant gets, as its manifest records them: which field or entry, from what to
//! what, and where an entry was pointed.

use std::fmt;

use crate::raw::header::RawHeader;

/// A header field [`Edit::Header`] sets: the format's table of header fields.
pub use crate::violation::HeaderField;

impl HeaderField {
    pub(super) const ALL: [HeaderField; 10] = [
        HeaderField::Version,
        HeaderField::Heads,
        HeaderField::Cylinders,
        HeaderField::Tracks,
        HeaderField::BatEntries,
        HeaderField::NbSectors,
        HeaderField::Inuse,
        HeaderField::DataOff,
        HeaderField::Flags,
        HeaderField::ExtOff,
    ];

    pub(super) fn get(self, h: &RawHeader) -> u64 {
        match self {
            // Not an integer: never among `ALL` (the magic is edited by name, `MagicName`).
            HeaderField::Magic => 0,
            HeaderField::Version => h.version.get().into(),
            HeaderField::Heads => h.heads.get().into(),
            HeaderField::Cylinders => h.cylinders.get().into(),
            HeaderField::Tracks => h.tracks.get().into(),
            HeaderField::BatEntries => h.bat_entries.get().into(),
            HeaderField::NbSectors => h.nb_sectors.get(),
            HeaderField::Inuse => h.inuse.get().into(),
            HeaderField::DataOff => h.data_off.get().into(),
            HeaderField::Flags => h.flags.get().into(),
            HeaderField::ExtOff => h.ext_off.get(),
        }
    }

    /// Sets the field; a value wider than a 32-bit field keeps its low 32 bits.
    pub(super) fn set(self, h: &mut RawHeader, v: u64) {
        let w = v as u32;
        match self {
            // Not an integer: never among `ALL` (the magic is edited by name, `MagicName`).
            HeaderField::Magic => {}
            HeaderField::Version => h.version.set(w),
            HeaderField::Heads => h.heads.set(w),
            HeaderField::Cylinders => h.cylinders.set(w),
            HeaderField::Tracks => h.tracks.set(w),
            HeaderField::BatEntries => h.bat_entries.set(w),
            HeaderField::NbSectors => h.nb_sectors.set(v),
            HeaderField::Inuse => h.inuse.set(w),
            HeaderField::DataOff => h.data_off.set(w),
            HeaderField::Flags => h.flags.set(w),
            HeaderField::ExtOff => h.ext_off.set(v),
        }
    }

    pub(super) fn max(self) -> u64 {
        match self {
            HeaderField::NbSectors | HeaderField::ExtOff => u64::MAX,
            _ => u32::MAX.into(),
        }
    }
}

/// A field of a feature record's header that [`Edit::Feature`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum FeatureField {
    /// The record's u64 magic (which feature it is).
    Magic,
    /// The record's u64 flags (necessary, transit).
    Flags,
    /// The u32 length of the record's data.
    DataSize,
    /// The u32 after `data_size`, zero in written images.
    Unused,
}

impl FeatureField {
    /// The field's name in the record header.
    pub fn name(self) -> &'static str {
        match self {
            FeatureField::Magic => "magic",
            FeatureField::Flags => "flags",
            FeatureField::DataSize => "data_size",
            FeatureField::Unused => "unused",
        }
    }
}

/// A field of a dirty bitmap's header that [`Edit::Bitmap`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum BitmapField {
    /// `size`: the disk size the bitmap covers, in sectors.
    Size,
    /// `granularity`: sectors per bit.
    Granularity,
    /// `l1_size`: the number of L1 entries.
    L1Size,
}

impl BitmapField {
    /// The field's name in the bitmap header.
    pub fn name(self) -> &'static str {
        match self {
            BitmapField::Size => "size",
            BitmapField::Granularity => "granularity",
            BitmapField::L1Size => "l1_size",
        }
    }
}

/// Where an [`Edit::Bat`] points a BAT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum BatTarget {
    /// Unallocated (0).
    Free,
    /// A cluster past the end of the file.
    PastEof,
    /// Into the header and BAT (below the data area).
    IntoHeader,
    /// The same cluster as another allocated entry.
    Duplicate,
    /// The extension cluster.
    Extension,
    /// Off the cluster grid (v1), or the same number read in the other magic's unit (v2).
    Unaligned,
    /// A value at a boundary of the 32-bit field (`u32::MAX`, `2^31`…), far beyond the disk.
    Huge,
    /// An entry past the guest disk (beyond `nb_sectors`, or just past `bat_entries`) set to
    /// an allocated cluster.
    BeyondDisk,
}

/// Where an [`Edit::L1`] points an L1 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum L1Target {
    /// The clean marker, 0.
    Clean,
    /// The all-dirty marker, 1.
    Dirty,
    /// A sector off the cluster grid.
    Unaligned,
    /// A cluster past the end of the file.
    PastEof,
    /// The header and BAT.
    Bat,
    /// The extension cluster.
    Extension,
    /// A data cluster.
    Data,
    /// Another L1 entry's bitmap cluster.
    OtherL1,
    /// A value at a boundary of the 64-bit field (its byte offset overflows or passes QEMU's
    /// largest offset).
    Huge,
}

/// What a feature record inserted by [`Edit::FeatureInsert`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum Inserted {
    /// A copy of a dirty bitmap with a new random id.
    BitmapCopy,
    /// A dirty bitmap with `l1_size` 0 and only its 32-byte header.
    EmptyBitmap,
    /// A record of an unknown feature with a few bytes of data.
    Unknown,
    /// An end record (magic 0), hiding the records after it.
    End,
}

/// One edit a variant got, in the order made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "snake_case")
)]
pub enum Edit {
    /// A header field set to a boundary value (0, 1, the maximum, the right value off by one,
    /// QEMU's limits, the value in the other magic's unit…).
    Header {
        /// Which field.
        field: HeaderField,
        /// Its value before.
        from: u64,
        /// Its value after (32-bit fields hold the low 32 bits).
        to: u64,
    },
    /// The header magic swapped for the other variant's: BAT entries and `nb_sectors` are then
    /// read in the other unit and width.
    Magic {
        /// The variant the magic now says.
        to: MagicName,
    },
    /// A BAT entry changed.
    Bat {
        /// Entry index.
        index: u32,
        /// Value before.
        from: u32,
        /// Value after.
        to: u32,
        /// What it now points at.
        target: BatTarget,
    },
    /// The extension cluster's magic changed.
    ExtensionMagic {
        /// Value before.
        from: u64,
        /// Value after.
        to: u64,
    },
    /// A field of a feature record's header changed.
    Feature {
        /// Feature number (from 0) in the list as it was.
        feature: usize,
        /// Which field.
        field: FeatureField,
        /// Value before.
        from: u64,
        /// Value after.
        to: u64,
    },
    /// A record inserted into the feature list (the list is written again, aligned, with its
    /// end record).
    FeatureInsert {
        /// Its position in the new list.
        at: usize,
        /// What it is.
        record: Inserted,
    },
    /// A record removed from the list.
    FeatureDrop {
        /// Which.
        feature: usize,
    },
    /// Two records swapped.
    FeatureSwap {
        /// One.
        a: usize,
        /// The other.
        b: usize,
    },
    /// A record written twice in a row.
    FeatureDuplicate {
        /// Which.
        feature: usize,
    },
    /// A record's data cut short (`data_size` and the bytes), the records after it moved up.
    FeatureTruncate {
        /// Which.
        feature: usize,
        /// Bytes of data before.
        from: u32,
        /// Bytes of data kept.
        to: u32,
    },
    /// A field of a dirty bitmap's header changed.
    Bitmap {
        /// Feature number of the bitmap's record.
        feature: usize,
        /// Which field.
        field: BitmapField,
        /// Value before.
        from: u64,
        /// Value after.
        to: u64,
    },
    /// An L1 entry changed.
    L1 {
        /// Feature number of the bitmap's record.
        feature: usize,
        /// Entry index.
        index: u32,
        /// Value before (sectors, or a marker).
        from: u64,
        /// Value after.
        to: u64,
        /// What it now points at.
        target: L1Target,
    },
    /// A byte of a bitmap cluster changed.
    BitmapByte {
        /// File offset.
        offset: u64,
        /// Value before.
        from: u8,
        /// Value after.
        to: u8,
    },
    /// The file cut or extended with zeros.
    FileLength {
        /// Length before.
        from: u64,
        /// Length after.
        to: u64,
    },
}

/// The header magic an [`Edit::Magic`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum MagicName {
    /// `WithoutFreeSpace`.
    WithoutFreeSpace,
    /// `WithouFreSpacExt`.
    WithouFreSpacExt,
}

/// The kind of an [`Edit`], without its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EditKind {
    /// [`Edit::Header`].
    Header,
    /// [`Edit::Magic`].
    Magic,
    /// [`Edit::Bat`].
    Bat,
    /// [`Edit::ExtensionMagic`].
    ExtensionMagic,
    /// [`Edit::Feature`].
    Feature,
    /// [`Edit::FeatureInsert`].
    FeatureInsert,
    /// [`Edit::FeatureDrop`].
    FeatureDrop,
    /// [`Edit::FeatureSwap`].
    FeatureSwap,
    /// [`Edit::FeatureDuplicate`].
    FeatureDuplicate,
    /// [`Edit::FeatureTruncate`].
    FeatureTruncate,
    /// [`Edit::Bitmap`].
    Bitmap,
    /// [`Edit::L1`].
    L1,
    /// [`Edit::BitmapByte`].
    BitmapByte,
    /// [`Edit::FileLength`].
    FileLength,
}

impl EditKind {
    /// Every kind, in declaration order.
    pub const ALL: [EditKind; 14] = [
        EditKind::Header,
        EditKind::Magic,
        EditKind::Bat,
        EditKind::ExtensionMagic,
        EditKind::Feature,
        EditKind::FeatureInsert,
        EditKind::FeatureDrop,
        EditKind::FeatureSwap,
        EditKind::FeatureDuplicate,
        EditKind::FeatureTruncate,
        EditKind::Bitmap,
        EditKind::L1,
        EditKind::BitmapByte,
        EditKind::FileLength,
    ];

    /// How often a kind is drawn, out of the sum over the kinds that apply. Edits that stop
    /// every reader at the header or the extension magic are drawn rarely, so that most
    /// variants reach the feature walk and the bitmap loader.
    pub(super) fn weight(self) -> u32 {
        match self {
            EditKind::Header => 14,
            EditKind::Magic => 2,
            EditKind::Bat => 12,
            EditKind::ExtensionMagic => 1,
            EditKind::Feature => 12,
            EditKind::FeatureInsert => 6,
            EditKind::FeatureDrop => 3,
            EditKind::FeatureSwap => 3,
            EditKind::FeatureDuplicate => 4,
            EditKind::FeatureTruncate => 4,
            EditKind::Bitmap => 14,
            EditKind::L1 => 14,
            EditKind::BitmapByte => 5,
            EditKind::FileLength => 4,
        }
    }
}

impl Edit {
    /// The edit's kind.
    pub fn kind(&self) -> EditKind {
        match self {
            Edit::Header { .. } => EditKind::Header,
            Edit::Magic { .. } => EditKind::Magic,
            Edit::Bat { .. } => EditKind::Bat,
            Edit::ExtensionMagic { .. } => EditKind::ExtensionMagic,
            Edit::Feature { .. } => EditKind::Feature,
            Edit::FeatureInsert { .. } => EditKind::FeatureInsert,
            Edit::FeatureDrop { .. } => EditKind::FeatureDrop,
            Edit::FeatureSwap { .. } => EditKind::FeatureSwap,
            Edit::FeatureDuplicate { .. } => EditKind::FeatureDuplicate,
            Edit::FeatureTruncate { .. } => EditKind::FeatureTruncate,
            Edit::Bitmap { .. } => EditKind::Bitmap,
            Edit::L1 { .. } => EditKind::L1,
            Edit::BitmapByte { .. } => EditKind::BitmapByte,
            Edit::FileLength { .. } => EditKind::FileLength,
        }
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Header { field, from, to } => write!(f, "header {}: {from} -> {to}", field.name()),
            Edit::Magic { to } => write!(f, "header magic -> {to:?}"),
            Edit::Bat {
                index,
                from,
                to,
                target,
            } => write!(f, "BAT entry {index}: {from} -> {to} ({target:?})"),
            Edit::ExtensionMagic { from, to } => write!(f, "extension magic: {from:#x} -> {to:#x}"),
            Edit::Feature {
                feature,
                field,
                from,
                to,
            } => {
                write!(f, "feature {feature} {}: {from:#x} -> {to:#x}", field.name())
            }
            Edit::FeatureInsert { at, record } => write!(f, "insert a feature record at {at}: {record:?}"),
            Edit::FeatureDrop { feature } => write!(f, "drop feature {feature}"),
            Edit::FeatureSwap { a, b } => write!(f, "swap features {a} and {b}"),
            Edit::FeatureDuplicate { feature } => write!(f, "duplicate feature {feature}"),
            Edit::FeatureTruncate { feature, from, to } => {
                write!(f, "truncate feature {feature}'s data: {from} -> {to} bytes")
            }
            Edit::Bitmap {
                feature,
                field,
                from,
                to,
            } => write!(f, "bitmap of feature {feature} {}: {from} -> {to}", field.name()),
            Edit::L1 {
                feature,
                index,
                from,
                to,
                target,
            } => write!(f, "L1 entry {index} of feature {feature}: {from} -> {to} ({target:?})"),
            Edit::BitmapByte { offset, from, to } => {
                write!(f, "bitmap byte at {offset}: {from:#04x} -> {to:#04x}")
            }
            Edit::FileLength { from, to } => write!(f, "file length: {from} -> {to}"),
        }
    }
}
