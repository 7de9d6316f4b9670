//! Structure-aware mutation: variants of an image made by editing its header fields, BAT
//! entries, feature records, bitmap headers, L1 entries, bitmap clusters and length, with the
//! extension checksum put right afterwards (by default) so that a reader gets past it.
//!
//! Every variant is a pure function of the input bytes, the options and a seed (ChaCha8, as for
//! [`crate::BitmapSpec::random`]), and carries the list of [`Edit`]s that made it. The structures
//! are found again after each edit, through the raw views ([`crate::raw`]) and the extension
//! walk, so edits compose: a record dropped by one edit is not edited by the next, a header
//! edited to a smaller cluster moves the extension the next edit sees.
//!
//! Work and memory follow the input: a variant is a copy of it plus at most
//! [`MutateOptions::max_len`] bytes, and only the part of the BAT and of the extension cluster
//! that lies in the file is edited.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::Result;
use crate::extension::{Extension, ExtensionDigest, FeatureEntry};
use crate::header::{Header, Variant};
use crate::image::{Image, Mode};
use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE, L1_ENTRY_SIZE};
use crate::raw::extension::{checksum_padded, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{
    RawFeatureHeader, FEATURE_ALIGN, FEATURE_DIRTY_BITMAP, FEATURE_FLAG_NECESSARY, FEATURE_FLAG_TRANSIT,
    FEATURE_HEADER_SIZE,
};
use crate::raw::header::{
    RawHeader, FLAG_EMPTY, FLAG_FORMAT_CONVERSION, HEADER_SIZE, INUSE_CLOSED_V21, INUSE_OPEN, MAX_BAT_ENTRIES,
    MAX_EXT_OFF, MAX_TRACKS,
};
use crate::raw::SECTOR_SIZE;

/// The checksum is recomputed only over clusters up to this size (hashing QEMU's largest,
/// 2 GiB, takes seconds; a fuzzer wants thousands of variants a second).
const MAX_REHASH: u64 = 64 << 20;

/// How a [`Mutator`] edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutateOptions {
    /// Recompute the extension's MD5 after the edits (the default), so that a reader gets past
    /// its checksum test to the feature walk; `false` leaves it as the edits leave it.
    pub fix_checksum: bool,
    /// How many edits each variant gets, drawn uniformly from this range (default `1..=3`).
    pub edits: RangeInclusive<usize>,
    /// No variant is longer than this many bytes: edits that would grow the file past it are
    /// not made (a fuzzer's `max_size`). A variant of a longer input keeps its length unless an
    /// edit shortens it. `None` (the default): twice the input's length plus 1 MiB.
    pub max_len: Option<u64>,
}

impl Default for MutateOptions {
    fn default() -> Self {
        MutateOptions {
            fix_checksum: true,
            edits: 1..=3,
            max_len: None,
        }
    }
}

/// A header field [`Edit::Header`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum HeaderField {
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
    const ALL: [HeaderField; 10] = [
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

    /// The field's name in the on-disk header (`tracks`, `nb_sectors`…).
    pub fn name(self) -> &'static str {
        match self {
            HeaderField::Version => "version",
            HeaderField::Heads => "heads",
            HeaderField::Cylinders => "cylinders",
            HeaderField::Tracks => "tracks",
            HeaderField::BatEntries => "bat_entries",
            HeaderField::NbSectors => "nb_sectors",
            HeaderField::Inuse => "inuse",
            HeaderField::DataOff => "data_off",
            HeaderField::Flags => "flags",
            HeaderField::ExtOff => "ext_off",
        }
    }

    fn get(self, h: &RawHeader) -> u64 {
        match self {
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
    fn set(self, h: &mut RawHeader, v: u64) {
        let w = v as u32;
        match self {
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

    fn max(self) -> u64 {
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
    fn weight(self) -> u32 {
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

/// What became of the extension checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum ChecksumState {
    /// Recomputed over the extension cluster the header points at after the edits (bytes past
    /// the end of the file counted as zeros, as readers do).
    Fixed,
    /// Left as the edits left it ([`MutateOptions::fix_checksum`] false, or the cluster is
    /// larger than this module hashes).
    LeftAsIs,
    /// The header points at no extension cluster in the file.
    NoExtension,
}

/// One variant of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutant {
    /// The variant's bytes.
    pub bytes: Vec<u8>,
    /// The edits, in the order made (may be fewer than asked when nothing applied).
    pub edits: Vec<Edit>,
    /// What became of the extension checksum.
    pub checksum: ChecksumState,
    /// The MD5 the checksum was fixed to, with the cluster it covers in these bytes: `Some`
    /// exactly when [`Mutant::checksum`] is [`ChecksumState::Fixed`]. A reader of the variant that
    /// would hash the same cluster may take it instead ([`ExtensionDigest`]).
    pub digest: Option<ExtensionDigest>,
}

/// Makes variants of one image ([`Mutator::mutant`]).
///
/// ```
/// use parallels_image::{BitmapSpec, ImageBuilder, mutate::MutateOptions, mutate::Mutator};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20)
///     .cluster_size(4096)
///     .bitmap(BitmapSpec { id: [7; 16], granularity: 4096, extents: vec![(0, 8192)] })
///     .to_vec()?;
/// let mutator = Mutator::new(&bytes, MutateOptions::default())?;
/// let a = mutator.mutant(42);
/// assert_eq!(a, mutator.mutant(42));
/// assert!((1..=3).contains(&a.edits.len()));
/// // Not a Parallels image: a typed error, not a panic.
/// assert!(Mutator::new(b"hello", MutateOptions::default()).is_err());
/// # Ok::<(), parallels_image::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mutator<'a> {
    input: &'a [u8],
    options: MutateOptions,
}

impl<'a> Mutator<'a> {
    /// A mutator of `input`, whose header must pass the checks every reader makes first (rules
    /// R1–R6: magic, version, tracks, BAT size, `ext_off`): otherwise the error opening it
    /// gives ([`crate::Error::EmptyFile`], [`crate::Error::NotParallels`], [`crate::Error::Invalid`] with the
    /// violation). Nothing else need be valid: variants of variants are made the same way.
    pub fn new(input: &'a [u8], options: MutateOptions) -> Result<Mutator<'a>> {
        Image::parse_without_bat(&input, Mode::Lenient)?;
        Ok(Mutator { input, options })
    }

    /// The variant for `seed`.
    pub fn mutant(&self, seed: u64) -> Mutant {
        let mut buffer = self.buffer();
        buffer.mutate(seed);
        Mutant {
            bytes: buffer.bytes,
            edits: buffer.edits,
            checksum: buffer.checksum,
            digest: buffer.digest,
        }
    }

    /// A buffer that makes variant after variant of this input ([`MutantBuffer::mutate`])
    /// without copying the whole input each time: the same variants as [`Mutator::mutant`].
    pub fn buffer(&self) -> MutantBuffer<'_> {
        MutantBuffer {
            mutator: self,
            bytes: Vec::new(),
            touched: Vec::new(),
            low: 0,
            fresh: true,
            edits: Vec::new(),
            checksum: ChecksumState::NoExtension,
            digest: None,
        }
    }
}

/// Variants of one [`Mutator`]'s input made one after another in one buffer
/// ([`Mutator::buffer`]).
///
/// [`Mutator::mutant`] copies the whole input into a new vector for each variant; a campaign
/// writing thousands of variants of an image of 1 MiB clusters would spend more time copying
/// megabytes than editing them. The buffer instead remembers the byte ranges the last variant's
/// edits wrote (and how short it was cut) and copies back only those from the input before
/// making the next: a variant then costs its edits and the extension's MD5. Each variant is
/// exactly what [`Mutator::mutant`] gives for the same seed.
///
/// ```
/// use parallels_image::{BitmapSpec, ImageBuilder, mutate::MutateOptions, mutate::Mutator};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20)
///     .cluster_size(4096)
///     .bitmap(BitmapSpec { id: [7; 16], granularity: 4096, extents: vec![(0, 8192)] })
///     .to_vec()?;
/// let mutator = Mutator::new(&bytes, MutateOptions::default())?;
/// let mut buffer = mutator.buffer();
/// for seed in 0..10 {
///     let variant = buffer.mutate(seed).to_vec();
///     assert_eq!(variant, mutator.mutant(seed).bytes);
///     assert_eq!(buffer.edits(), &mutator.mutant(seed).edits[..]);
/// }
/// # Ok::<(), parallels_image::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MutantBuffer<'m> {
    mutator: &'m Mutator<'m>,
    /// The last variant (empty before the first).
    bytes: Vec<u8>,
    /// Byte ranges the last variant's edits wrote (some may lie past the input's end).
    touched: Vec<(usize, usize)>,
    /// The shortest the last variant was while it was made: bytes from here on are the input's
    /// again only after a copy.
    low: usize,
    /// No variant made yet: `bytes` does not hold the input.
    fresh: bool,
    edits: Vec<Edit>,
    checksum: ChecksumState,
    digest: Option<ExtensionDigest>,
}

impl MutantBuffer<'_> {
    /// Makes the variant for `seed` (the one [`Mutator::mutant`] makes) in place of the last
    /// one, and returns its bytes.
    pub fn mutate(&mut self, seed: u64) -> &[u8] {
        self.restore();
        let options = &self.mutator.options;
        let input = self.mutator.input;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (lo, hi) = (*options.edits.start(), *options.edits.end());
        let want = if lo >= hi { lo } else { rng.random_range(lo..=hi) };
        self.edits.clear();
        self.touched.clear();
        let mut m = Work {
            bytes: std::mem::take(&mut self.bytes),
            touched: std::mem::take(&mut self.touched),
            low: input.len(),
            max_len: (options.max_len)
                .unwrap_or(2 * input.len() as u64 + (1 << 20))
                .max(input.len() as u64),
            rng,
            edits: std::mem::take(&mut self.edits),
        };
        for _ in 0..want {
            // A drawn kind may find nothing to edit (a bitmap edit on a variant whose records
            // are gone): draw again, a bounded number of times.
            for _ in 0..16 {
                let view = View::of(&m.bytes);
                let kind = m.draw_kind(&view);
                if let Some(edit) = m.apply(kind, &view) {
                    m.edits.push(edit);
                    break;
                }
            }
        }
        (self.checksum, self.digest) = if options.fix_checksum {
            m.fix_checksum()
        } else {
            let state = match ext_place(&m.bytes) {
                Some(_) => ChecksumState::LeftAsIs,
                None => ChecksumState::NoExtension,
            };
            (state, None)
        };
        self.bytes = m.bytes;
        self.touched = m.touched;
        self.low = m.low;
        self.edits = m.edits;
        &self.bytes
    }

    /// Puts the input's bytes back where the last variant changed them.
    fn restore(&mut self) {
        let input = self.mutator.input;
        if std::mem::take(&mut self.fresh) {
            self.bytes = input.to_vec();
            return;
        }
        let keep = self.low.min(input.len());
        self.bytes.truncate(keep);
        for &(s, e) in &self.touched {
            let e = e.min(keep);
            if s < e {
                self.bytes[s..e].copy_from_slice(&input[s..e]);
            }
        }
        self.bytes.extend_from_slice(&input[keep..]);
    }

    /// The last variant's bytes (empty before the first [`MutantBuffer::mutate`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The last variant's edits, in the order made.
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// What became of the last variant's extension checksum.
    pub fn checksum(&self) -> ChecksumState {
        self.checksum
    }

    /// The MD5 the last variant's checksum was fixed to, with the cluster it covers
    /// ([`Mutant::digest`]).
    pub fn digest(&self) -> Option<ExtensionDigest> {
        self.digest
    }
}

/// `(file offset, cluster size)` of the extension cluster, when the header passes R1–R6 and
/// points at a cluster whose 24-byte header is in the file.
fn ext_place(bytes: &[u8]) -> Option<(u64, u64)> {
    let h = Header::decode(&RawHeader::read_padded(bytes)).ok()?;
    let off = h.ext_offset()?;
    let cs = h.cluster_size();
    (off + (EXT_HEADER_SIZE as u64) <= bytes.len() as u64 && cs >= EXT_HEADER_SIZE as u64).then_some((off, cs))
}

/// A bitmap record as found in the current bytes.
#[derive(Clone, Copy, Debug)]
struct BitmapAt {
    feature: usize,
    /// File offset of the bitmap header (the record's data).
    data: u64,
    /// L1 entries whose 8 bytes are in the record's data, the cluster and the file.
    l1_len: u32,
}

/// The extension cluster as found in the current bytes.
#[derive(Clone, Debug)]
struct ExtAt {
    off: u64,
    cs: u64,
    features: Vec<FeatureEntry>,
    bitmaps: Vec<BitmapAt>,
}

/// Where the structures are in the current bytes.
#[derive(Clone, Debug)]
struct View {
    raw: RawHeader,
    header: Option<Header>,
    len: u64,
    /// BAT entries in the file (and in the table).
    bat_len: u32,
    ext: Option<ExtAt>,
    /// `(bitmap, L1 index, entry)` of the L1 entries that point at a cluster starting in the
    /// file.
    l1_clusters: Vec<(BitmapAt, u32, u64)>,
}

impl View {
    fn of(bytes: &[u8]) -> View {
        let raw = RawHeader::read_padded(bytes);
        let header = Header::decode(&raw).ok();
        let len = bytes.len() as u64;
        let bat_len = header.map_or(0, |h| {
            let room = len.saturating_sub(BAT_OFFSET) / BAT_ENTRY_SIZE;
            room.min(u64::from(h.bat_entries)) as u32
        });
        let ext = ext_place(bytes).map(|(off, cs)| {
            let end = (off + cs).min(len);
            let ext = Extension::new(off, cs, Cow::Borrowed(&bytes[off as usize..end as usize]));
            let features = ext.features().to_vec();
            let bitmaps = features
                .iter()
                .filter(|f| f.is_bitmap())
                .map(|f| {
                    let data = off + f.offset + FEATURE_HEADER_SIZE as u64;
                    let head: [u8; BITMAP_HEADER_SIZE] = crate::raw::padded(bytes, data);
                    let l1_size = u64::from(RawBitmapHeader::read_from_bytes(&head).map_or(0, |h| h.l1_size.get()));
                    let room_data = (u64::from(f.header.data_size.get()) - BITMAP_HEADER_SIZE as u64) / 8;
                    let room_file = end.saturating_sub(data + BITMAP_HEADER_SIZE as u64) / 8;
                    BitmapAt {
                        feature: f.index,
                        data,
                        l1_len: l1_size.min(room_data).min(room_file) as u32,
                    }
                })
                .collect();
            ExtAt {
                off,
                cs,
                features,
                bitmaps,
            }
        });
        let mut l1_clusters = Vec::new();
        for b in ext.iter().flat_map(|e| &e.bitmaps) {
            for i in 0..b.l1_len {
                let e = l1_get(bytes, b, i);
                if e > 1 && e.checked_mul(SECTOR_SIZE).is_some_and(|o| o < len) {
                    l1_clusters.push((*b, i, e));
                }
            }
        }
        View {
            raw,
            header,
            len,
            bat_len,
            ext,
            l1_clusters,
        }
    }

    fn applies(&self, kind: EditKind) -> bool {
        let ext = self.ext.as_ref();
        let features = ext.map_or(0, |e| e.features.len());
        let bitmaps = ext.map_or(&[][..], |e| &e.bitmaps[..]);
        match kind {
            EditKind::Header | EditKind::Magic | EditKind::FileLength => true,
            EditKind::Bat => self.bat_len > 0 || self.header.is_some(),
            EditKind::ExtensionMagic | EditKind::FeatureInsert => ext.is_some(),
            EditKind::Feature | EditKind::FeatureDrop | EditKind::FeatureDuplicate | EditKind::FeatureTruncate => {
                features > 0
            }
            EditKind::FeatureSwap => features > 1,
            EditKind::Bitmap => !bitmaps.is_empty(),
            EditKind::L1 => bitmaps.iter().any(|b| b.l1_len > 0),
            EditKind::BitmapByte => !self.l1_clusters.is_empty(),
        }
    }
}

/// L1 entry `index` of bitmap `b` (whose entries are all in `bytes`).
fn l1_get(bytes: &[u8], b: &BitmapAt, index: u32) -> u64 {
    let at = (b.data + (BITMAP_HEADER_SIZE + L1_ENTRY_SIZE * index as usize) as u64) as usize;
    U64::read_from_bytes(&bytes[at..at + 8]).map_or(0, |e| e.get())
}

struct Work {
    bytes: Vec<u8>,
    /// `(start, end)` of every byte range written ([`MutantBuffer`] copies them back).
    touched: Vec<(usize, usize)>,
    /// The shortest `bytes` has been.
    low: usize,
    max_len: u64,
    rng: ChaCha8Rng,
    edits: Vec<Edit>,
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

impl Work {
    /// Notes that `len` bytes from `at` are about to be written.
    fn touch(&mut self, at: usize, len: usize) {
        self.touched.push((at, at + len));
    }

    /// Cuts or extends (with zeros) the bytes to `len`.
    fn resize(&mut self, len: usize) {
        self.low = self.low.min(len);
        self.bytes.resize(len, 0);
    }

    /// Recomputes the MD5 of the extension cluster the header points at, if the header passes
    /// R1–R6 and the cluster starts in the file; with the digest when it did. (The sum is
    /// written outside the bytes it covers, and this is the last write to the variant.)
    fn fix_checksum(&mut self) -> (ChecksumState, Option<ExtensionDigest>) {
        let Some((off, cs)) = ext_place(&self.bytes) else {
            return (ChecksumState::NoExtension, None);
        };
        if cs > MAX_REHASH {
            return (ChecksumState::LeftAsIs, None);
        }
        let len = self.bytes.len() as u64;
        let end = (off + cs).min(len);
        let (o, e) = (off as usize, end as usize);
        let sum = checksum_padded(&self.bytes[o + EXT_HEADER_SIZE..e], off + cs - end);
        self.touch(o + 8, EXT_HEADER_SIZE - 8);
        self.bytes[o + 8..o + EXT_HEADER_SIZE].copy_from_slice(&sum);
        let digest = ExtensionDigest {
            offset: off,
            cluster_size: cs,
            file_len: len,
            md5: sum,
        };
        (ChecksumState::Fixed, Some(digest))
    }

    fn draw_kind(&mut self, view: &View) -> EditKind {
        let total: u32 = EditKind::ALL
            .iter()
            .filter(|k| view.applies(**k))
            .map(|k| k.weight())
            .sum();
        let mut r = self.rng.random_range(0..total);
        for k in EditKind::ALL {
            if !view.applies(k) {
                continue;
            }
            if r < k.weight() {
                return k;
            }
            r -= k.weight();
        }
        unreachable!("the draw is below the sum of the weights")
    }

    fn apply(&mut self, kind: EditKind, view: &View) -> Option<Edit> {
        match kind {
            EditKind::Header => self.header(view),
            EditKind::Magic => self.magic(view),
            EditKind::Bat => self.bat(view),
            EditKind::ExtensionMagic => self.ext_magic(view),
            EditKind::Feature => self.feature_field(view),
            EditKind::FeatureInsert => self.insert(view),
            EditKind::FeatureDrop => self.drop_feature(view),
            EditKind::FeatureSwap => self.swap(view),
            EditKind::FeatureDuplicate => self.duplicate(view),
            EditKind::FeatureTruncate => self.truncate(view),
            EditKind::Bitmap => self.bitmap_field(view),
            EditKind::L1 => self.l1(view),
            EditKind::BitmapByte => self.bitmap_byte(view),
            EditKind::FileLength => self.file_length(view),
        }
    }

    /// A value from `candidates` other than `cur`, or `None` when there is none.
    fn other(&mut self, cur: u64, candidates: &[u64]) -> Option<u64> {
        let c: Vec<u64> = candidates.iter().copied().filter(|&v| v != cur).collect();
        (!c.is_empty()).then(|| pick(&mut self.rng, &c))
    }

    fn write_header(&mut self, raw: &RawHeader) {
        if self.bytes.len() < HEADER_SIZE {
            self.resize(HEADER_SIZE);
        }
        self.touch(0, HEADER_SIZE);
        self.bytes[..HEADER_SIZE].copy_from_slice(raw.as_bytes());
    }

    fn header(&mut self, view: &View) -> Option<Edit> {
        let field = pick(&mut self.rng, &HeaderField::ALL);
        let raw = view.raw;
        let cur = field.get(&raw);
        let tracks = u64::from(raw.tracks.get()).max(1);
        let len_sectors = view.len.div_ceil(SECTOR_SIZE);
        let mut c = vec![0, 1, field.max(), cur.wrapping_add(1), cur.wrapping_sub(1)];
        // The value the other fields call for, off by one, and values in the other magic's unit.
        let right = match field {
            HeaderField::BatEntries => raw.nb_sectors.get().div_ceil(tracks),
            HeaderField::NbSectors => u64::from(raw.bat_entries.get()).wrapping_mul(tracks),
            HeaderField::DataOff => {
                (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(raw.bat_entries.get())).div_ceil(SECTOR_SIZE)
            }
            HeaderField::ExtOff => len_sectors,
            _ => cur,
        };
        c.extend([
            right,
            right.wrapping_add(1),
            right.wrapping_sub(1),
            cur.wrapping_mul(2),
            cur / 2,
        ]);
        c.extend(match field {
            HeaderField::Version => vec![2, 3],
            HeaderField::Tracks => vec![u64::from(MAX_TRACKS), u64::from(MAX_TRACKS) + 1, 8, 128, 2048, 3],
            HeaderField::BatEntries => vec![u64::from(MAX_BAT_ENTRIES), u64::from(MAX_BAT_ENTRIES) + 1],
            HeaderField::NbSectors => vec![
                cur | 1 << 32,
                1 << 54,
                i64::MAX as u64,
                1 << 63,
                cur.wrapping_add(tracks),
            ],
            HeaderField::Inuse => vec![u64::from(INUSE_OPEN), u64::from(INUSE_CLOSED_V21), 0xdead_beef],
            HeaderField::DataOff => vec![
                cur.wrapping_mul(tracks),
                cur / tracks,
                len_sectors,
                len_sectors + 1,
                tracks,
            ],
            HeaderField::Flags => vec![
                FLAG_EMPTY.into(),
                FLAG_FORMAT_CONVERSION.into(),
                4,
                (FLAG_EMPTY | FLAG_FORMAT_CONVERSION).into(),
            ],
            HeaderField::ExtOff => vec![
                MAX_EXT_OFF,
                MAX_EXT_OFF - 1,
                cur / tracks,
                cur.wrapping_mul(tracks),
                cur.wrapping_add(tracks),
                1,
            ],
            _ => vec![],
        });
        let c: Vec<u64> = c.into_iter().map(|v| v & field.max()).collect();
        let to = self.other(cur, &c)?;
        let mut raw = raw;
        field.set(&mut raw, to);
        self.write_header(&raw);
        Some(Edit::Header {
            field,
            from: cur,
            to: field.get(&raw),
        })
    }

    fn magic(&mut self, view: &View) -> Option<Edit> {
        let mut raw = view.raw;
        let to = if raw.magic == Variant::V1.magic() {
            raw.magic = Variant::V2.magic();
            MagicName::WithouFreSpacExt
        } else {
            raw.magic = Variant::V1.magic();
            MagicName::WithoutFreeSpace
        };
        self.write_header(&raw);
        Some(Edit::Magic { to })
    }

    fn bat_get(&self, index: u32) -> u32 {
        let at = (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index)) as usize;
        U32::read_from_bytes(&self.bytes[at..at + 4]).map_or(0, |e| e.get())
    }

    fn bat(&mut self, view: &View) -> Option<Edit> {
        let h = view.header?;
        let unit = match h.variant {
            Variant::V1 => SECTOR_SIZE,
            Variant::V2 => h.cluster_size(),
        };
        let allocated: Vec<u32> = (0..view.bat_len).filter(|&i| self.bat_get(i) != 0).collect();
        let target = pick(
            &mut self.rng,
            &[
                BatTarget::Free,
                BatTarget::PastEof,
                BatTarget::IntoHeader,
                BatTarget::Duplicate,
                BatTarget::Extension,
                BatTarget::Unaligned,
                BatTarget::Huge,
                BatTarget::BeyondDisk,
            ],
        );
        let disk_clusters = h.nb_sectors.div_ceil(u64::from(h.cluster_sectors));
        let index = if target == BatTarget::BeyondDisk {
            // Past the guest disk, within the table; else the entry just past the table (in the
            // padding before the data area, if the file has it).
            let first = disk_clusters.min(u64::from(h.bat_entries));
            let index = if first < u64::from(view.bat_len) {
                self.rng.random_range(first..u64::from(view.bat_len))
            } else {
                u64::from(h.bat_entries)
            };
            let at = BAT_OFFSET + BAT_ENTRY_SIZE * index;
            if at + BAT_ENTRY_SIZE > view.len || index > u64::from(u32::MAX) {
                return None;
            }
            index as u32
        } else if !allocated.is_empty() && (view.bat_len == 0 || self.rng.random_bool(0.7)) {
            pick(&mut self.rng, &allocated)
        } else if view.bat_len > 0 {
            self.rng.random_range(0..view.bat_len)
        } else {
            return None;
        };
        let from = self.bat_get(index);
        let in_units = |off: u64| u32::try_from(off / unit).ok();
        let to = match target {
            BatTarget::Free => 0,
            BatTarget::PastEof => in_units(view.len.next_multiple_of(unit) + unit * self.rng.random_range(0..4))?,
            BatTarget::IntoHeader => match h.variant {
                Variant::V1 => self.rng.random_range(1..=h.data_start().div_ceil(SECTOR_SIZE).max(1)) as u32,
                Variant::V2 => 1,
            },
            BatTarget::Duplicate => {
                let others: Vec<u32> = allocated.iter().copied().filter(|&i| i != index).collect();
                if others.is_empty() {
                    return None;
                }
                let o = pick(&mut self.rng, &others);
                self.bat_get(o)
            }
            BatTarget::Extension => in_units(view.ext.as_ref()?.off)?,
            BatTarget::Unaligned => match h.variant {
                Variant::V1 => from.wrapping_add(1),
                Variant::V2 => u32::try_from(u64::from(from) * u64::from(h.cluster_sectors)).unwrap_or(from / 2),
            },
            BatTarget::Huge => pick(
                &mut self.rng,
                &[
                    u32::MAX,
                    1 << 31,
                    i32::MAX as u32,
                    (u64::from(u32::MAX) / u64::from(h.cluster_sectors)) as u32,
                ],
            ),
            BatTarget::BeyondDisk => match allocated.first() {
                Some(&i) => self.bat_get(i),
                None => in_units(h.data_start().next_multiple_of(unit))?.max(1),
            },
        };
        if to == from {
            return None;
        }
        let at = (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index)) as usize;
        self.touch(at, 4);
        self.bytes[at..at + 4].copy_from_slice(&to.to_le_bytes());
        Some(Edit::Bat {
            index,
            from,
            to,
            target,
        })
    }

    fn ext_magic(&mut self, view: &View) -> Option<Edit> {
        let off = view.ext.as_ref()?.off as usize;
        let from = U64::read_from_bytes(&self.bytes[off..off + 8]).ok()?.get();
        let to = self.other(
            from,
            &[
                0,
                EXT_MAGIC ^ 1,
                EXT_MAGIC.swap_bytes(),
                FEATURE_DIRTY_BITMAP,
                EXT_MAGIC,
            ],
        )?;
        self.touch(off, 8);
        self.bytes[off..off + 8].copy_from_slice(&to.to_le_bytes());
        Some(Edit::ExtensionMagic { from, to })
    }

    /// The feature header of `entry`, in the file, for editing.
    fn feature_header(&mut self, ext: &ExtAt, entry: &FeatureEntry) -> Option<&mut RawFeatureHeader> {
        let at = (ext.off + entry.offset) as usize;
        self.touch(at, FEATURE_HEADER_SIZE);
        RawFeatureHeader::mut_at(&mut self.bytes, at)
    }

    fn feature_field(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let entry = pick(&mut self.rng, &ext.features);
        let field = pick(
            &mut self.rng,
            &[
                FeatureField::Magic,
                FeatureField::Flags,
                FeatureField::DataSize,
                FeatureField::DataSize,
                FeatureField::Unused,
            ],
        );
        let h = entry.header;
        let left = ext.cs.saturating_sub(entry.offset + FEATURE_HEADER_SIZE as u64);
        let (from, candidates) = match field {
            FeatureField::Magic => (
                h.magic.get(),
                vec![
                    0,
                    FEATURE_DIRTY_BITMAP,
                    FEATURE_DIRTY_BITMAP + 1,
                    EXT_MAGIC,
                    self.rng.random::<u64>() | 1,
                ],
            ),
            FeatureField::Flags => (
                h.flags.get(),
                vec![
                    FEATURE_FLAG_NECESSARY,
                    FEATURE_FLAG_TRANSIT,
                    FEATURE_FLAG_NECESSARY | FEATURE_FLAG_TRANSIT,
                    1 << 63,
                    u64::MAX,
                ],
            ),
            FeatureField::DataSize => {
                let d = u64::from(h.data_size.get());
                (
                    d,
                    vec![
                        0,
                        1,
                        FEATURE_HEADER_SIZE as u64 - 1,
                        BITMAP_HEADER_SIZE as u64 - 1,
                        BITMAP_HEADER_SIZE as u64,
                        d + 1,
                        d.saturating_sub(1),
                        d + 8,
                        d.saturating_sub(8),
                        left,
                        left + 1,
                        left.saturating_sub(FEATURE_HEADER_SIZE as u64 - 8),
                        i32::MAX as u64,
                        u32::MAX.into(),
                    ],
                )
            }
            FeatureField::Unused => (h.unused.get().into(), vec![0, 1, u32::MAX.into()]),
        };
        let to = self.other(from, &candidates)?;
        let fh = self.feature_header(ext, &entry)?;
        match field {
            FeatureField::Magic => fh.magic.set(to),
            FeatureField::Flags => fh.flags.set(to),
            FeatureField::DataSize => fh.data_size.set(to.min(u32::MAX.into()) as u32),
            FeatureField::Unused => fh.unused.set(to as u32),
        }
        Some(Edit::Feature {
            feature: entry.index,
            field,
            from,
            to,
        })
    }

    /// The records as `(header, data)`, the data cut to what is in the cluster and the file.
    fn records(&self, ext: &ExtAt) -> Vec<(RawFeatureHeader, Vec<u8>)> {
        let end = (ext.off + ext.cs).min(self.bytes.len() as u64);
        ext.features
            .iter()
            .map(|f| {
                let r = f.data_range();
                let s = (ext.off + r.start).min(end) as usize;
                let e = (ext.off + r.end).min(end) as usize;
                (f.header, self.bytes[s..e].to_vec())
            })
            .collect()
    }

    /// Writes the feature list again from byte 24 of the cluster: each record at the next
    /// multiple of 8, an end record, zeros to the end of the cluster's part in the file. The
    /// file grows to hold the list if it must and may; `None` when the list does not fit.
    fn write_records(&mut self, ext: &ExtAt, records: &[(RawFeatureHeader, Vec<u8>)]) -> Option<()> {
        let mut list = Vec::new();
        let mut pos = EXT_HEADER_SIZE as u64;
        for (head, data) in records {
            let at = pos.next_multiple_of(FEATURE_ALIGN);
            list.resize((at - EXT_HEADER_SIZE as u64) as usize, 0);
            list.extend_from_slice(head.as_bytes());
            list.extend_from_slice(data);
            pos = at + (FEATURE_HEADER_SIZE + data.len()) as u64;
        }
        let at = pos.next_multiple_of(FEATURE_ALIGN);
        let end_record = at + FEATURE_HEADER_SIZE as u64;
        if end_record > ext.cs {
            return None;
        }
        let need = ext.off + end_record;
        let len = self.bytes.len() as u64;
        if need > len {
            if need > self.max_len {
                return None;
            }
            self.resize(need as usize);
        }
        let start = (ext.off as usize) + EXT_HEADER_SIZE;
        let stop = (ext.off + ext.cs).min(self.bytes.len() as u64) as usize;
        let region = &mut self.bytes[start..stop];
        // The same list (a swap of equal records, an end record after the last): no edit.
        if region[..list.len()] == list[..] && region[list.len()..].iter().all(|&b| b == 0) {
            return None;
        }
        region.fill(0);
        region[..list.len()].copy_from_slice(&list);
        self.touch(start, stop - start);
        Some(())
    }

    fn insert(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let bitmaps: Vec<usize> = ext.bitmaps.iter().map(|b| b.feature).collect();
        let record = if bitmaps.is_empty() {
            pick(
                &mut self.rng,
                &[Inserted::EmptyBitmap, Inserted::Unknown, Inserted::End],
            )
        } else {
            pick(
                &mut self.rng,
                &[
                    Inserted::BitmapCopy,
                    Inserted::BitmapCopy,
                    Inserted::EmptyBitmap,
                    Inserted::Unknown,
                    Inserted::End,
                ],
            )
        };
        let nb_sectors = view.header.map_or(0, |h| h.nb_sectors);
        let new = match record {
            Inserted::BitmapCopy => {
                let f = pick(&mut self.rng, &bitmaps);
                let (head, mut data) = records[f].clone();
                if data.len() >= 24 {
                    self.rng.fill_bytes(&mut data[8..24]);
                }
                (head, data)
            }
            Inserted::EmptyBitmap => {
                let mut data = vec![0u8; BITMAP_HEADER_SIZE];
                data[..8].copy_from_slice(&nb_sectors.to_le_bytes());
                self.rng.fill_bytes(&mut data[8..24]);
                data[24..28].copy_from_slice(&128u32.to_le_bytes());
                (
                    RawFeatureHeader::new(FEATURE_DIRTY_BITMAP, BITMAP_HEADER_SIZE as u32),
                    data,
                )
            }
            Inserted::Unknown => {
                let n = pick(&mut self.rng, &[0usize, 8, 13, 64]);
                let mut data = vec![0u8; n];
                self.rng.fill_bytes(&mut data);
                (RawFeatureHeader::new(self.rng.random::<u64>() | 2, n as u32), data)
            }
            Inserted::End => (RawFeatureHeader::new(0, 0), Vec::new()),
        };
        let at = self.rng.random_range(0..=records.len());
        records.insert(at, new);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureInsert { at, record })
    }

    fn drop_feature(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        records.remove(feature);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureDrop { feature })
    }

    fn swap(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let n = records.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        records.swap(a, b);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureSwap {
            a: a.min(b),
            b: a.max(b),
        })
    }

    fn duplicate(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        records.insert(feature + 1, records[feature].clone());
        self.write_records(ext, &records)?;
        Some(Edit::FeatureDuplicate { feature })
    }

    fn truncate(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        let from = records[feature].0.data_size.get();
        let len = records[feature].1.len();
        if len == 0 {
            return None;
        }
        let keep = pick(
            &mut self.rng,
            &[0, len / 2, len - 1, BITMAP_HEADER_SIZE.min(len - 1), (len - 1) / 8 * 8],
        );
        records[feature].1.truncate(keep);
        records[feature].0.data_size.set(keep as u32);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureTruncate {
            feature,
            from,
            to: keep as u32,
        })
    }

    fn bitmap_field(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let b = pick(&mut self.rng, &ext.bitmaps);
        let field = pick(
            &mut self.rng,
            &[BitmapField::Size, BitmapField::Granularity, BitmapField::L1Size],
        );
        let at = b.data as usize;
        let nb = view.header.map_or(0, |h| h.nb_sectors);
        self.touch(at, BITMAP_HEADER_SIZE);
        let h = RawBitmapHeader::mut_in(self.bytes.get_mut(at..)?)?;
        let (from, candidates) = match field {
            BitmapField::Size => {
                let s = h.size.get();
                (
                    s,
                    vec![
                        0,
                        1,
                        nb.wrapping_add(1),
                        nb.wrapping_sub(1),
                        nb.wrapping_mul(2),
                        1 << 54,
                        i64::MAX as u64,
                        u64::MAX,
                        nb | 1 << 63,
                    ],
                )
            }
            BitmapField::Granularity => {
                let g = u64::from(h.granularity.get());
                (
                    g,
                    vec![
                        0,
                        1,
                        3,
                        g * 2,
                        g / 2,
                        g * 3,
                        1 << 22,
                        1 << 23,
                        u32::MAX.into(),
                        1 << 31,
                        g + 1,
                    ],
                )
            }
            BitmapField::L1Size => {
                let l = u64::from(h.l1_size.get());
                (
                    l,
                    vec![0, 1, l + 1, l.saturating_sub(1), l * 2, u32::MAX.into(), 1 << 28],
                )
            }
        };
        let to = candidates.into_iter().filter(|&v| v != from).collect::<Vec<_>>();
        let to = pick(&mut self.rng, &to);
        match field {
            BitmapField::Size => h.size.set(to),
            BitmapField::Granularity => h.granularity.set(to as u32),
            BitmapField::L1Size => h.l1_size.set(to as u32),
        }
        let to = match field {
            BitmapField::Size => to,
            _ => u64::from(to as u32),
        };
        Some(Edit::Bitmap {
            feature: b.feature,
            field,
            from,
            to,
        })
    }

    fn l1(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let with: Vec<BitmapAt> = ext.bitmaps.iter().copied().filter(|b| b.l1_len > 0).collect();
        let b = pick(&mut self.rng, &with);
        let index = self.rng.random_range(0..b.l1_len);
        let from = l1_get(&self.bytes, &b, index);
        let h = view.header?;
        let cs_sectors = u64::from(h.cluster_sectors);
        let target = pick(
            &mut self.rng,
            &[
                L1Target::Clean,
                L1Target::Dirty,
                L1Target::Unaligned,
                L1Target::PastEof,
                L1Target::Bat,
                L1Target::Extension,
                L1Target::Data,
                L1Target::OtherL1,
                L1Target::Huge,
            ],
        );
        let to = match target {
            L1Target::Clean => 0,
            L1Target::Dirty => 1,
            L1Target::Unaligned => {
                if from > 1 {
                    from.wrapping_add(1)
                } else {
                    view.len.div_ceil(SECTOR_SIZE).saturating_sub(cs_sectors).max(2) | 1
                }
            }
            L1Target::PastEof => {
                view.len.div_ceil(SECTOR_SIZE).next_multiple_of(cs_sectors) + cs_sectors * self.rng.random_range(0..3)
            }
            // Sector 2 or the first cluster: inside the header and BAT.
            L1Target::Bat => pick(&mut self.rng, &[2, cs_sectors.max(2)]),
            L1Target::Extension => ext.off / SECTOR_SIZE,
            L1Target::Data => {
                let allocated: Vec<u64> = (0..view.bat_len)
                    .map(|i| self.bat_get(i))
                    .filter_map(|e| h.bat_entry_offset(e))
                    .collect();
                if allocated.is_empty() {
                    return None;
                }
                pick(&mut self.rng, &allocated) / SECTOR_SIZE
            }
            L1Target::OtherL1 => {
                let others: Vec<u64> = view
                    .l1_clusters
                    .iter()
                    .copied()
                    .filter(|&(o, i, _)| !(o.feature == b.feature && i == index))
                    .map(|(_, _, e)| e)
                    .collect();
                if others.is_empty() {
                    return None;
                }
                pick(&mut self.rng, &others)
            }
            L1Target::Huge => pick(&mut self.rng, &[u64::MAX, 1 << 55, (i64::MAX as u64 >> 9) + 1, 1 << 63]),
        };
        if to == from {
            return None;
        }
        let at = (b.data + (BITMAP_HEADER_SIZE + L1_ENTRY_SIZE * index as usize) as u64) as usize;
        self.touch(at, 8);
        self.bytes[at..at + 8].copy_from_slice(&to.to_le_bytes());
        Some(Edit::L1 {
            feature: b.feature,
            index,
            from,
            to,
            target,
        })
    }

    fn bitmap_byte(&mut self, view: &View) -> Option<Edit> {
        let clusters = &view.l1_clusters;
        if clusters.is_empty() {
            return None;
        }
        let cs = view.header?.cluster_size();
        let (_, _, e) = pick(&mut self.rng, clusters);
        let start = e * SECTOR_SIZE;
        let end = (start + cs).min(view.len);
        let offset = self.rng.random_range(start..end);
        let from = self.bytes[offset as usize];
        let to = match self.rng.random_range(0..4) {
            0 => 0,
            1 => 0xff,
            2 => from ^ (1 << self.rng.random_range(0..8)),
            _ => self.rng.random::<u8>(),
        };
        if to == from {
            return None;
        }
        self.touch(offset as usize, 1);
        self.bytes[offset as usize] = to;
        Some(Edit::BitmapByte { offset, from, to })
    }

    fn file_length(&mut self, view: &View) -> Option<Edit> {
        let from = view.len;
        let cs = view.header.map_or(SECTOR_SIZE, |h| h.cluster_size());
        let mut c = vec![
            from.saturating_sub(1),
            from + 1,
            from + cs,
            from.saturating_sub(cs),
            from / 2,
            from + SECTOR_SIZE,
        ];
        if let Some(h) = view.header {
            c.push(h.data_start());
            c.push(h.bat_end());
        }
        if let Some(ext) = &view.ext {
            // Inside the extension cluster (what is cut reads as zeros) and just before it.
            c.extend([ext.off, ext.off + ext.cs / 2, ext.off + ext.cs - 1]);
        }
        let c: Vec<u64> = c.into_iter().filter(|&v| v <= self.max_len).collect();
        let to = self.other(from, &c)?;
        self.resize(usize::try_from(to).ok()?);
        Some(Edit::FileLength { from, to })
    }
}

/// What a seed-corpus file is ([`seed_corpus`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "kebab-case")
)]
pub enum CorpusKind {
    /// A valid image of some shape.
    Valid {
        /// The shape, in words.
        shape: String,
    },
    /// A valid base with one defect of the catalogue ([`crate::corrupt`]).
    Defect {
        /// The defect's name.
        defect: &'static str,
        /// The base it was planned on (the name of a valid entry).
        base: String,
    },
    /// A variant of a valid base made by [`Mutator`].
    Mutant {
        /// The base (the name of a valid entry).
        base: String,
        /// The mutator's seed.
        seed: u64,
        /// Its edits.
        edits: Vec<Edit>,
    },
}

/// One file of a seed corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusEntry {
    /// A file name (`valid-v2-bitmaps.hds`, `defect-bat-entry-duplicate.hds`, `mutant-000007.hds`).
    pub name: String,
    /// What it is.
    pub kind: CorpusKind,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// How many mutants [`seed_corpus`] adds.
pub const CORPUS_MUTANTS: usize = 48;

/// A reproducible seed corpus for fuzzers of Parallels readers: valid images of many shapes
/// (both magics, cluster sizes from 512 bytes to 64 KiB, no extension, empty, clean, dirty and
/// all-dirty bitmaps, several L1 entries, `inuse` "v2.1", a compact v1 image), every defect of the catalogue
/// ([`crate::corrupt::DefectKind::ALL`]) on the first base it applies to, and
/// [`CORPUS_MUTANTS`] variants. Clusters are small so that a fuzzer's run stays cheap; no file
/// is larger than 1 MiB. The same `seed` gives the same files.
pub fn seed_corpus(seed: u64) -> Result<Vec<CorpusEntry>> {
    use crate::builder::{BitmapSpec, Data, ImageBuilder};
    use crate::corrupt::{plan, DefectKind};

    const MIB: u64 = 1 << 20;
    let random = |k: u64, size: u64, g: u64, d: f64| BitmapSpec::random(seed.wrapping_add(k), size, g, d);
    let fill = |len, byte| Data::Fill { len, byte };
    // 60 MiB of 4 KiB clusters, three data clusters, two bitmaps of several L1 entries each.
    let two_bitmaps = |variant| {
        ImageBuilder::new(60 * MIB)
            .variant(variant)
            .cluster_size(4096)
            .data(0, fill(8192, 0x11))
            .data(MIB, fill(4096, 0x22))
            .data(59 * MIB, fill(4096, 0x33))
            .bitmap(BitmapSpec {
                id: [0xa1; 16],
                granularity: 512,
                extents: vec![(0, 512), (16 * MIB, 512), (32 * MIB, 512), (48 * MIB, 512)],
            })
            .bitmap(BitmapSpec {
                id: [0xb2; 16],
                granularity: 65536,
                extents: vec![(65536, 65536), (10 * MIB, 65536)],
            })
    };
    let shapes: Vec<(&str, ImageBuilder)> = vec![
        ("v2-empty-512", ImageBuilder::new(MIB).cluster_size(512)),
        (
            "v2-data-4k",
            ImageBuilder::new(4 * MIB).cluster_size(4096).data(0, fill(4096, 0xaa)),
        ),
        (
            "v1-data-4k",
            ImageBuilder::new(4 * MIB)
                .variant(Variant::V1)
                .cluster_size(4096)
                .data(MIB, fill(8192, 0x5a)),
        ),
        (
            "v2-bitmap-4k",
            ImageBuilder::new(8 * MIB)
                .cluster_size(4096)
                .data(0, fill(4096, 0x11))
                .bitmap(random(1, 8 * MIB, 4096, 0.3)?),
        ),
        ("v2-two-bitmaps-multi-l1", two_bitmaps(Variant::V2)),
        ("v1-two-bitmaps-multi-l1", two_bitmaps(Variant::V1)),
        (
            "v2-clean-and-all-dirty-bitmaps-64k",
            ImageBuilder::new(16 * MIB)
                .cluster_size(65536)
                .bitmap(random(2, 16 * MIB, 65536, 0.0)?)
                .bitmap(random(3, 16 * MIB, 65536, 1.0)?),
        ),
        (
            "v2-bitmap-512-inuse-v21",
            ImageBuilder::new(2 * MIB)
                .cluster_size(512)
                .inuse(crate::raw::header::INUSE_CLOSED_V21)
                .data(512, fill(512, 0x77))
                .bitmap(random(4, 2 * MIB, 512, 0.5)?),
        ),
        // The two other bases the defect catalogue needs: a disk with nothing after the BAT, a
        // v1 image whose data area starts right after the BAT.
        ("v2-empty-1m-cluster", ImageBuilder::new(MIB)),
        (
            "v1-compact-64k",
            ImageBuilder::new(20 * MIB)
                .variant(Variant::V1)
                .cluster_size(65536)
                .compact_v1(true)
                .data(0, fill(4096, 0x99)),
        ),
    ];
    let mut valid = Vec::new();
    for (shape, builder) in shapes {
        let (bytes, _) = builder.to_vec()?;
        valid.push((format!("valid-{shape}.hds"), shape, bytes));
    }
    let mut out: Vec<CorpusEntry> = valid
        .iter()
        .map(|(name, shape, bytes)| CorpusEntry {
            name: name.clone(),
            kind: CorpusKind::Valid {
                shape: shape.to_string(),
            },
            bytes: bytes.clone(),
        })
        .collect();
    // Defects on the two catalogue bases (the shapes `prlimg corrupt`'s tests use).
    let bases: Vec<&(String, &str, Vec<u8>)> = valid
        .iter()
        .filter(|v| v.1.ends_with("multi-l1") || v.1 == "v2-empty-1m-cluster" || v.1 == "v1-compact-64k")
        .collect();
    for &defect in DefectKind::ALL.iter() {
        for (name, _, bytes) in &bases {
            let image = Image::parse(bytes)?;
            let Ok(patch) = plan(&image, defect, seed) else {
                continue;
            };
            let mut damaged = bytes.clone();
            patch.apply_to_vec(&mut damaged);
            out.push(CorpusEntry {
                name: format!("defect-{}.hds", defect.name()),
                kind: CorpusKind::Defect {
                    defect: defect.name(),
                    base: name.clone(),
                },
                bytes: damaged,
            });
            break;
        }
    }
    let mutable: Vec<&(String, &str, Vec<u8>)> = valid.iter().filter(|v| v.2.len() as u64 <= MIB / 2).collect();
    for k in 0..CORPUS_MUTANTS {
        let (name, _, bytes) = mutable[k % mutable.len()];
        let m = Mutator::new(bytes, MutateOptions::default())?;
        let s = seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
        let v = m.mutant(s);
        out.push(CorpusEntry {
            name: format!("mutant-{k:06}.hds"),
            kind: CorpusKind::Mutant {
                base: name.clone(),
                seed: s,
                edits: v.edits,
            },
            bytes: v.bytes,
        });
    }
    Ok(out)
}
