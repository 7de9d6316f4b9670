//! Errors: I/O failures, invalid builder input, defects that cannot be planned, repairs that
//! cannot be made, outputs that may not be written. A broken rule of the format is a
//! [`Violation`] (in `violation.rs`, beside the rules), carried by [`Error::Invalid`].

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::violation::{hex16, text16};
pub use crate::violation::{Location, Region, Violation};

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
        /// The defect.
        defect: crate::defect::DefectKind,
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
