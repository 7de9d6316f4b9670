//! Errors: I/O failures, invalid builder input, and violations of the format's rules.
//!
//! Every [`Violation`] names the spec rule it breaks ([`Violation::rule`]), how bad it is
//! ([`Violation::severity`]) and where it is ([`Violation::location`]); its message says what
//! was found and what was expected.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::rule::{Rule, Severity};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The image breaks a rule of the format.
    #[error("{0}")]
    Invalid(#[from] Violation),
    /// A builder was asked for an image the format cannot express.
    #[error("cannot build this image: {0}")]
    Build(#[from] BuildError),
    /// A defect cannot be planned on this image.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// An image cannot be repaired (`crate::repair::plan_repair`).
    #[error("{0}")]
    Repair(#[from] RepairError),
    /// An image read from a stream needs more memory than the limit allows.
    #[error(
        "reading the image from a stream: holding its metadata needs more than {limit} bytes of memory \
         (the limit; reached at byte {offset} of the stream); save it to a file first"
    )]
    StreamTooLarge {
        /// The limit, in bytes held.
        limit: u64,
        /// Byte offset in the stream where it was passed.
        offset: u64,
    },
    /// An output path may not be written (it exists, or is not a regular file).
    #[error("{0}")]
    Output(#[from] OutputError),
    /// The file is empty: not a Parallels image (nor a damaged one).
    #[error("empty file: not a Parallels image")]
    EmptyFile,
    /// The file is not a Parallels image at all (a raw disk, qcow2, XML, random bytes…): its
    /// first 16 bytes are far from both magics and its version field is not 2. A file that
    /// is close to one magic, or whose version is 2, is a damaged Parallels image instead
    /// (rule R1, [`Violation::BadMagic`]).
    #[error(
        "not a Parallels image: bytes 0..16 are {} (hex {}), expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\", and the version at byte 16 is {version}, not 2",
        text16(found),
        hex16(found)
    )]
    NotParallels {
        /// Bytes 0..16.
        found: [u8; 16],
        /// The version field (byte 16).
        version: u32,
    },
}

/// Why an image cannot be repaired.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// The header cannot be interpreted and the field it needs cannot be inferred from the rest
    /// of the image (a cluster size of 0 or too big, a magic close to neither).
    #[error("cannot repair {rule}: {found}; no value of {field} can be inferred from the rest of the image")]
    Unrepairable {
        /// The rule broken.
        rule: crate::rule::Rule,
        /// The header field that would need a value.
        field: &'static str,
        /// What was found (the violation's message).
        found: String,
    },
}

/// Why a defect cannot be planned ([`crate::corrupt::plan`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No defect has this name.
    #[error("unknown defect {name}")]
    UnknownDefect {
        /// The name asked for.
        name: String,
    },
    /// The image lacks what the defect damages.
    #[error("defect {defect} needs an image with {needs}")]
    NotApplicable {
        /// The defect's name (`crate::corrupt::DefectKind::name`).
        defect: &'static str,
        /// What the image would need.
        needs: Requirement,
    },
}

macro_rules! requirements {
    ($($need:ident $text:literal;)*) => {
        /// A structure a defect needs and the image lacks (or a size the plan cannot express).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Requirement {
            $(
                #[doc = concat!("An image with ", $text, ".")]
                $need,
            )*
        }

        impl Requirement {
            /// What the image needs, as in "needs an image with …".
            pub const fn text(self) -> &'static str {
                match self { $(Requirement::$need => $text,)* }
            }
        }
    };
}

requirements! {
    V1Magic "the v1 magic";
    V2Magic "the v2 magic";
    LargeClusters "clusters larger than one sector";
    SmallFile "a file small enough for 32-bit BAT entries";
    BatEntry "a BAT entry";
    LowDataArea "a data area below 2^32 sectors";
    SmallBat "a BAT that covers fewer than 2^32-1 sectors";
    SteadyL1Size "bitmaps whose L1 size stays the same one sector further";
    DataAreaInFile "a data area inside the file";
    DataAreaAligned4 "a data area that starts on a 4-byte boundary";
    PlainFirstDataCluster "a data cluster (not the extension or a bitmap cluster) at the start of the data area";
    LowSlotOrCluster "a BAT larger than one cluster or an allocated cluster";
    TwoBatEntries "an allocated cluster and two BAT entries";
    Extension "a Format Extension cluster";
    ExtensionInFile "an extension cluster inside the file";
    ExtensionZeroTail "an extension cluster whose last sector is zero";
    ExtensionOnDataGrid "an extension cluster on the grid of the data clusters";
    ExtensionOnGrid "an extension cluster on the cluster grid";
    ExtensionRoom "room in the extension cluster";
    SmallExtension "an extension cluster below 4 GiB";
    FeatureRecord "a feature record";
    EndRecord "an end record in the extension cluster";
    RoomAfterEndRecord "room after the end record";
    Bitmap "a dirty bitmap";
    TwoBitmaps "two dirty bitmaps";
    RecordEndsInZero "a bitmap record that ends in a zero byte";
    NonEmptyDisk "a non-empty disk";
    WholeL1Table "a bitmap record that holds its whole L1 table";
    BitmapCluster "a bitmap cluster";
    BitmapClusterInFile "a bitmap cluster in the file";
    L1Entry "an L1 entry";
    InnerL1Entry "an L1 entry that is not a partial last chunk";
    GridClusterInBat "a cluster of the grid inside the BAT (a BAT longer than a cluster)";
    DataClusterOnGrid "a data cluster on the cluster grid";
    OtherBitmapCluster "a bitmap cluster of another L1 entry";
    PartialLastChunk "a bitmap whose last chunk is partial";
    RoomAfterBat "room for a 4-byte slot between the end of the BAT and the data area";
    InnerDataCluster "a data cluster with a referenced cluster after it";
    DataRightAfterBat "a data area right after the BAT (or at sector 1)";
    NothingAfterBat "nothing after the BAT (no data cluster, no extension) and data_off set";
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Why an image cannot be built as asked ([`crate::ImageBuilder`], [`crate::recipe::Recipe`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The cluster size is not a multiple of 512 between 512 and the largest QEMU accepts.
    #[error("cluster size {found} is not a multiple of 512 between 512 and {max}")]
    ClusterSize {
        /// Bytes asked for.
        found: u64,
        /// The largest cluster size, in bytes.
        max: u64,
    },
    /// The disk needs more BAT entries than readers accept.
    #[error("{clusters} clusters of {cluster_size} bytes need more than {max} BAT entries")]
    TooManyClusters {
        /// Clusters the disk needs.
        clusters: u64,
        /// Cluster size in bytes.
        cluster_size: u64,
        /// The most BAT entries readers accept.
        max: u32,
    },
    /// A v1 image's size does not fit its 32-bit sector count.
    #[error("a v1 image holds at most 2^32-1 sectors, not {sectors}")]
    V1TooLarge {
        /// Sectors asked for.
        sectors: u64,
    },
    /// Data placed past the end of the disk.
    #[error("data at {offset} of {len} bytes ends past the virtual size {virtual_size}")]
    DataPastDisk {
        /// Guest byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The disk size in bytes.
        virtual_size: u64,
    },
    /// A bitmap granularity no reader accepts.
    #[error("bitmap granularity {found} is not a power of two between 512 and 2^31")]
    Granularity {
        /// Bytes asked for.
        found: u64,
    },
    /// A cluster lands beyond what a 32-bit BAT entry or `data_off` can address.
    #[error("{what} at byte {offset} is beyond what a 32-bit {field} can address")]
    Unaddressable {
        /// What was placed there: "cluster" or "data area".
        what: &'static str,
        /// Its byte offset.
        offset: u64,
        /// The field that cannot hold it: "BAT entry" or "data_off".
        field: &'static str,
    },
    /// The feature records do not fit in one extension cluster.
    #[error("the extension cluster: {0}")]
    Extension(String),
    /// A random bitmap's dirty fraction is not in `0.0..=1.0`.
    #[error("bitmap density {found} is not a number from 0.0 to 1.0")]
    Density {
        /// The fraction asked for.
        found: f64,
    },
    /// A bitmap asked for on a disk of 0 sectors, which has no granule to track (R49: QEMU
    /// aborts on such a bitmap).
    #[error("{count} bitmap(s) asked for on a disk of 0 sectors; a bitmap needs a disk (R49)")]
    BitmapOnEmptyDisk {
        /// How many bitmaps were asked for.
        count: usize,
    },
    /// A bitmap to add has the id of one the image has.
    #[error("a bitmap named {name} already exists")]
    BitmapExists {
        /// The id, as a UUID.
        name: String,
    },
    /// A bitmap to remove is not in the image.
    #[error("there is no bitmap named {name}")]
    NoSuchBitmap {
        /// The id, as a UUID.
        name: String,
    },
    /// The image whose bitmaps are to change breaks a rule (corruption).
    #[error("the image is not valid ({rule} at {location}: {message})")]
    InvalidImage {
        /// The first corruption's rule.
        rule: crate::rule::Rule,
        /// Where it is.
        location: String,
        /// What it says.
        message: String,
    },
    /// The extension holds records that are not bitmaps (kept in lenient mode only).
    #[error("the extension holds features other than bitmaps")]
    OtherFeatures,
    /// A recipe names a bitmap whose id is not a UUID.
    #[error("bitmap id {id:?} is not a UUID: {reason}")]
    BitmapId {
        /// The id as written.
        id: String,
        /// Why it is not a UUID.
        reason: String,
    },
    /// A bundle's size is not a whole, non-zero number of sectors.
    #[error("a bundle's size is a non-zero multiple of 512, not {size}")]
    BundleSize {
        /// Bytes asked for.
        size: u64,
    },
    /// A split offset is not a sector boundary strictly inside the disk.
    #[error("split offset {offset} is not a multiple of 512 inside the disk of {size} bytes")]
    SplitOffset {
        /// The offset asked for.
        offset: u64,
        /// The disk size in bytes.
        size: u64,
    },
    /// A bundle's path has no folder name.
    #[error("{} does not name a folder", path.display())]
    NotAFolder {
        /// The path given.
        path: std::path::PathBuf,
    },
    /// A bundle recipe names a snapshot, parent or top that is not a GUID.
    #[error("{what} {text:?} is not a GUID")]
    Guid {
        /// "snapshot", "parent" or "top".
        what: &'static str,
        /// The text as written.
        text: String,
    },
    /// A bundle defect cannot be made in this bundle.
    #[error("defect {defect} needs a bundle with {needs}")]
    DefectNeeds {
        /// The defect's name.
        defect: &'static str,
        /// What the bundle lacks.
        needs: &'static str,
    },
    /// Two bitmaps have the same id (rule R41; QEMU refuses the image: "Bitmap already exists").
    #[error("bitmaps #{first} and #{second} have the same id {}; bitmap ids must be unique (R41)", uuid::Uuid::from_bytes(*.id).hyphenated())]
    DuplicateBitmapId {
        /// The id bytes, in stored order.
        id: [u8; 16],
        /// Index (from 0, in the order given) of the first bitmap with it.
        first: usize,
        /// Index of the second.
        second: usize,
    },
    /// A dirty range of a bitmap reaches past the end of the disk.
    #[error(
        "bitmap #{bitmap} ({}): dirty range {offset}+{len} ends at byte {}, past the end of the \
         disk at byte {disk_size}",
        uuid::Uuid::from_bytes(*.id).hyphenated(),
        *offset as u128 + *len as u128
    )]
    DirtyRangeOutsideDisk {
        /// Index of the bitmap (from 0, in the order given).
        bitmap: usize,
        /// Its id bytes.
        id: [u8; 16],
        /// Start of the range, in guest bytes.
        offset: u64,
        /// Length of the range, in bytes.
        len: u64,
        /// Size of the disk in bytes (`nb_sectors * 512`, the virtual size rounded up to a sector).
        disk_size: u64,
    },
}

/// Why an output path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// A regular file is there and `overwrite` was not asked for.
    #[error("{} already exists", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a regular file is there; it is never replaced.
    #[error("{} is a {kind}, not a regular file; it is never replaced", path.display())]
    NotRegular {
        /// The path (after following a symbolic link, if asked to).
        path: PathBuf,
        /// `"folder"`, `"block device"`, `"character device"`, `"FIFO"`, `"socket"`.
        kind: &'static str,
    },
    /// The path is a symbolic link and `follow_symlink` was not asked for.
    #[error("{} is a symbolic link (to {}); refusing to replace it", path.display(), target.display())]
    Symlink {
        /// The link.
        path: PathBuf,
        /// What it points to, as stored.
        target: PathBuf,
    },
    /// Symbolic links nest deeper than 40, or loop.
    #[error("{}: too many levels of symbolic links", path.display())]
    SymlinkLoop {
        /// The first link.
        path: PathBuf,
    },
    /// [`abandon_outputs`](crate::outfile::abandon_outputs) was called (the process is being interrupted).
    #[error("{}: interrupted before the file was put in place", path.display())]
    Interrupted {
        /// The output path.
        path: PathBuf,
    },
}

/// Whether a header whose magic is wrong still reads as a Parallels header (then it is damaged,
/// R1) rather than as something else: its 16 magic bytes agree with one of the two magics in at
/// least half of their positions, or its version field is 2.
pub(crate) fn parallels_shaped(magic: &[u8; 16], version: u32) -> bool {
    use crate::raw::header::{MAGIC_V1, MAGIC_V2};
    let same = |m: &[u8; 16]| magic.iter().zip(m).filter(|(a, b)| a == b).count();
    version == 2 || same(&MAGIC_V1).max(same(&MAGIC_V2)) >= 8
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
        /// Field name.
        field: &'static str,
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

fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 16 bytes as text in double quotes, what is not printable ASCII escaped (`"hello\n\x00..."`).
fn text16(b: &[u8; 16]) -> String {
    format!("\"{}\"", b.escape_ascii())
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
        "header magic at byte 0 is {} (hex {}), expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\"",
        text16(found),
        hex16(found)
    )]
    BadMagic {
        /// The 16 magic bytes as stored.
        found: [u8; 16],
    },
    /// R2: version is not 2.
    #[error("header version at byte 16 is {found}, expected 2")]
    BadVersion {
        /// The `version` field as stored.
        found: u32,
    },
    /// R3: tracks (sectors per cluster) is 0.
    #[error("header tracks at byte 28 is 0, expected a cluster size of at least 1 sector")]
    ZeroTracks,
    /// R4: tracks is above 4186127.
    #[error("header tracks at byte 28 is {tracks}, expected at most {max} (cluster too big)")]
    ClusterTooBig {
        /// `tracks` as stored: the cluster size in sectors.
        tracks: u32,
        /// The largest value readers accept.
        max: u32,
    },
    /// R5: bat_entries is above 536870911.
    #[error("header bat_entries at byte 32 is {bat_entries}, expected at most {max} (catalog too large)")]
    CatalogTooLarge {
        /// `bat_entries` as stored.
        bat_entries: u32,
        /// The largest value readers accept.
        max: u32,
    },
    /// R6: ext_off is not below INT64_MAX >> 9.
    #[error("header ext_off at byte 56 is {ext_off} sectors, expected below {max}")]
    ExtOffTooBig {
        /// `ext_off` as stored, in sectors.
        ext_off: u64,
        /// The largest value readers accept.
        max: u64,
    },
    /// R7: inuse says the image is open or was not closed cleanly.
    #[error("header inuse at byte 44 is 0x746f6e59 (\"Ynot\"): the image was not closed cleanly")]
    Unclean,
    /// R8: inuse holds a value no implementation writes.
    #[error("header inuse at byte 44 is {found:#010x}, expected 0, a writer's tag (\"v2.1\", \"pd17\", \"pd22\") or 0x746f6e59 (\"Ynot\")")]
    UnknownInuse {
        /// The `inuse` field as stored.
        found: u32,
    },
    /// R9: flags has bits with no known meaning.
    #[error("header flags at byte 52 is {found:#010x}, expected only bits 0 and 1")]
    UnknownFlags {
        /// The `flags` field as stored.
        found: u32,
    },
    /// R10: v1 image with nb_sectors above 32 bits (readers use only the low 32 bits).
    #[error("header nb_sectors at byte 36 is {nb_sectors}, but a v1 image uses only the low 32 bits ({})", nb_sectors & 0xffff_ffff)]
    V1SizeHighBits {
        /// `nb_sectors` (the disk size) in sectors.
        nb_sectors: u64,
    },
    /// R11: the virtual size is beyond what the BAT covers.
    #[error("header nb_sectors at byte 36 is {nb_sectors}, expected at most bat_entries * tracks = {covered}")]
    SizeBeyondBat {
        /// `nb_sectors` (the disk size) in sectors.
        nb_sectors: u64,
        /// `bat_entries * tracks`: the sectors the BAT can address.
        covered: u64,
    },
    /// R12: a v2 image has data_off 0.
    #[error("header data_off at byte 48 is 0, expected a non-zero sector offset in a v2 image")]
    DataOffZero,
    /// R13: a v2 image's data_off is not a multiple of the cluster size.
    #[error("header data_off at byte 48 is {data_off} sectors, expected a multiple of tracks ({tracks})")]
    DataOffUnaligned {
        /// `data_off` as stored, in sectors.
        data_off: u32,
        /// `tracks` as stored: the cluster size in sectors.
        tracks: u32,
    },
    /// R14: the data area starts inside the header and BAT.
    #[error("header data_off at byte 48 is {data_off} sectors (byte {data_start}), expected at least {min_start} (end of the BAT, rounded up)")]
    DataOffInsideBat {
        /// `data_off` as stored, in sectors.
        data_off: u32,
        /// Byte offset where the data area starts.
        data_start: u64,
        /// The smallest data start allowed: the end of the BAT rounded up, in bytes.
        min_start: u64,
    },
    /// R15: the data area starts past the end of the file.
    #[error("header data_off at byte 48 puts the data area at byte {data_start}, past the end of the file ({file_len} bytes)")]
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
    #[error("header ext_off at byte 56 is {ext_off} sectors (byte {offset}), expected a cluster boundary of the data area (cluster size {cluster_size})")]
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
    #[error("header data_off at byte 48 is {data_off} in a v1 image: valid, but ploop refuses it (it wants the data area's sector)")]
    V1DataOffUnset {
        /// `data_off` as stored, in sectors.
        data_off: u32,
    },
    /// R48: the header and BAT are too large for QEMU's one read.
    #[error("header bat_entries at byte 32 is {bat_entries}, expected at most {max} (QEMU reads the header and BAT in one request of at most 2147483136 bytes)")]
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
        let h = |field, offset| Location::Header { field, offset };
        match *self {
            BadMagic { .. } => h("magic", 0),
            BadVersion { .. } => h("version", 16),
            ZeroTracks | ClusterTooBig { .. } => h("tracks", 28),
            CatalogTooLarge { .. } | BatTooLargeToRead { .. } => h("bat_entries", 32),
            ExtOffTooBig { .. } | ExtOffUnaligned { .. } => h("ext_off", 56),
            Unclean | UnknownInuse { .. } => h("inuse", 44),
            UnknownFlags { .. } => h("flags", 52),
            V1SizeHighBits { .. } | SizeBeyondBat { .. } => h("nb_sectors", 36),
            DataOffZero
            | DataOffUnaligned { .. }
            | DataOffInsideBat { .. }
            | DataOffPastEof { .. }
            | V1DataOffUnset { .. } => h("data_off", 48),
            BatEntryBelowData { index, .. }
            | BatEntryUnaligned { index, .. }
            | BatEntryPastEof { index, .. }
            | BatEntryDuplicate { index, .. }
            | BatEntryPastDisk { index, .. } => Location::Bat {
                index,
                offset: 64 + 4 * u64::from(index),
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
mod tests {
    use super::*;

    #[test]
    fn locations_as_json() {
        let j = |l: Location| serde_json::to_value(l).unwrap();
        assert_eq!(
            j(Location::Header {
                field: "inuse",
                offset: 44
            }),
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
