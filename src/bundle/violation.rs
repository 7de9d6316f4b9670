//! What a broken bundle rule looks like: [`BundleViolation`], one variant per way to break a
//! `D` rule, each saying what was found, what was expected and where (the element's path in
//! the descriptor, `Storage[1]/Image[0]`, or the file).

use super::rule::BundleRule;

/// A broken rule of a disk bundle. [`BundleViolation::rule`] names the rule; the message says
/// what was found, what was expected and where. Storage and image numbers count from 0 in
/// descriptor order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleViolation {
    /// D1: the descriptor is not well-formed XML (or not UTF-8).
    #[error("DiskDescriptor.xml is not well-formed XML at line {line}, column {column}: {reason}")]
    NotXml {
        /// The line of the error, from 1.
        line: u32,
        /// The column of the error, from 1.
        column: u32,
        /// Why: the parser's or the system's reason.
        reason: String,
    },
    /// D2: the root element is not `Parallels_disk_image`.
    #[error("the descriptor's root element is <{found}>, expected <Parallels_disk_image>")]
    WrongRoot {
        /// The root element's name.
        found: String,
    },
    /// D2: a required element is missing.
    #[error("{path} is missing, expected it in every descriptor")]
    MissingElement {
        /// The missing element's path.
        path: String,
    },
    /// D2: an element holds a value of the wrong kind.
    #[error("{path} is {found:?}, expected {expected}")]
    BadValue {
        /// The element's path in the descriptor (`Storage[1]/Image[0]/GUID`).
        path: String,
        /// The text found.
        found: String,
        /// The kind of value expected.
        expected: &'static str,
    },
    /// D3: the root's `Version` is not `1.0`.
    #[error("Parallels_disk_image Version is {}, expected \"1.0\"", found.as_deref().map_or("absent".to_string(), |v| format!("{v:?}")))]
    BadVersion {
        /// The `Version` attribute, if any.
        found: Option<String>,
    },
    /// D4: `Cylinders` × `Heads` × `Sectors` is not `Disk_size`.
    #[error("Disk_Parameters: Cylinders x Heads x Sectors = {cylinders} x {heads} x {sectors} = {product}, expected Disk_size = {disk_size}")]
    GeometryMismatch {
        /// `Cylinders`.
        cylinders: u64,
        /// `Heads`.
        heads: u64,
        /// `Sectors`.
        sectors: u64,
        /// `Cylinders` × `Heads` × `Sectors`.
        product: u128,
        /// `Disk_size`, in sectors.
        disk_size: u64,
    },
    /// D5: `Padding` is not 0.
    #[error("Disk_Parameters/Padding is {found}, expected 0")]
    Padding {
        /// The value of `Padding`.
        found: u64,
    },
    /// D6: a storage does not start where the previous one ends (or the first at 0).
    #[error("StorageData/Storage[{storage}] starts at sector {start}, expected {expected} ({})", if *storage == 0 { "the start of the disk" } else if start > expected { "a gap after the previous storage" } else { "it overlaps the previous storage" })]
    StorageNotContiguous {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The storage's `Start`, in sectors.
        start: u64,
        /// Where it should start: 0, or the previous storage's `End`.
        expected: u64,
    },
    /// D6: a storage is empty or reversed.
    #[error("StorageData/Storage[{storage}] spans sectors {start}..{end}, expected Start < End")]
    EmptyStorage {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The storage's `Start`, in sectors.
        start: u64,
        /// The `End`, in sectors.
        end: u64,
    },
    /// D7: the last storage does not end at `Disk_size`.
    #[error("the last storage ends at sector {end}, expected Disk_size = {disk_size}")]
    StoragesEnd {
        /// The last storage's `End`, in sectors.
        end: u64,
        /// `Disk_size`, in sectors.
        disk_size: u64,
    },
    /// D8: a storage's `Blocksize` is 0.
    #[error("StorageData/Storage[{storage}]/Blocksize is 0, expected a cluster size in sectors")]
    ZeroBlocksize {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
    },
    /// D8: an expanding image's `tracks` differs from its storage's `Blocksize`.
    #[error("{file}: header tracks is {tracks} sectors, expected Storage[{storage}]/Blocksize = {blocksize}")]
    BlocksizeMismatch {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
        /// The header's `tracks` (sectors per cluster).
        tracks: u32,
        /// The storage's `Blocksize`, in sectors.
        blocksize: u64,
    },
    /// D9: an expanding image is smaller than its storage.
    #[error("{file}: header nb_sectors is {nb_sectors}, expected at least Storage[{storage}]'s {needed} sectors")]
    ImageTooSmall {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
        /// The header's `nb_sectors`.
        nb_sectors: u64,
        /// The sectors the storage spans (its `End`).
        needed: u64,
    },
    /// D10: a plain image's length is not its storage's size.
    #[error("{file}: a Plain image of {len} bytes, expected Storage[{storage}]'s {expected} bytes")]
    PlainSizeMismatch {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
        /// The file's length in bytes.
        len: u64,
        /// The storage's size in bytes.
        expected: u64,
    },
    /// D11: an image's file does not exist (or is not a regular file).
    #[error("Storage[{storage}]/Image[{image}]/File {file:?}: {reason}, expected a regular file")]
    MissingFile {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's number within its storage, from 0.
        image: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
        /// Why: the parser's or the system's reason.
        reason: String,
    },
    /// D12: two images name the same file.
    #[error("Storage[{storage}]/Image[{image}]/File {file:?} is also Storage[{first_storage}]/Image[{first_image}]'s file, expected one file per image")]
    SharedFile {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's number within its storage, from 0.
        image: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
        /// The storage of the first image naming the file.
        first_storage: usize,
        /// The first image naming the file, within its storage.
        first_image: usize,
    },
    /// D13: an image's file is outside the bundle's folder.
    #[error("Storage[{storage}]/Image[{image}]/File {file:?} resolves outside the bundle, expected a file inside it (not followed)")]
    OutsideBundle {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's number within its storage, from 0.
        image: usize,
        /// The image's `File`, as written in the descriptor.
        file: String,
    },
    /// D14: a GUID is not a UUID in braces.
    #[error("{path} is {found:?}, expected a GUID like {{5fbaabe3-6958-40ff-92a7-860e329aab41}}")]
    BadGuid {
        /// The element's path in the descriptor (`Storage[1]/Image[0]/GUID`).
        path: String,
        /// The text found.
        found: String,
    },
    /// D15: a GUID is used twice where it must be unique (two snapshots, or two images of one storage).
    #[error("{path} is {guid}, already used by {first}; expected unique GUIDs")]
    DuplicateGuid {
        /// The path of the element that repeats it.
        path: String,
        /// The GUID.
        guid: String,
        /// The path of the element that used it first.
        first: String,
    },
    /// D16: a snapshot has no image in a storage.
    #[error(
        "snapshot {snapshot} has no image in Storage[{storage}], expected one image per snapshot in every storage"
    )]
    NoImageForSnapshot {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The snapshot's GUID.
        snapshot: String,
    },
    /// D16: an image's GUID names no snapshot.
    #[error("Storage[{storage}]/Image[{image}] has GUID {guid}, expected the GUID of a Shot")]
    ImageWithoutSnapshot {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's number within its storage, from 0.
        image: usize,
        /// The image's GUID.
        guid: String,
    },
    /// D17: not exactly one snapshot has the null parent.
    #[error("{} snapshots have the null ParentGUID{}, expected exactly one root", roots.len(), if roots.is_empty() { String::new() } else { format!(" ({})", roots.join(", ")) })]
    RootCount {
        /// The GUIDs of the snapshots with the null parent.
        roots: Vec<String>,
    },
    /// D18: a snapshot's parent is not a snapshot.
    #[error("Shot {shot} has ParentGUID {parent}, which is no Shot's GUID")]
    MissingParent {
        /// The snapshot's GUID.
        shot: String,
        /// Its `ParentGUID`.
        parent: String,
    },
    /// D19: following parents from a snapshot comes back to it.
    #[error("the parents of Shot {} form a cycle: {}", cycle[0], cycle.join(" -> "))]
    Cycle {
        /// The GUIDs met, from the snapshot back to it.
        cycle: Vec<String>,
    },
    /// D20: the top snapshot is not among the snapshots.
    #[error("the top snapshot is {top}{}, but no Shot has that GUID", if *from_top_guid { " (TopGUID)" } else { " (the default, no TopGUID)" })]
    MissingTop {
        /// The top snapshot's GUID.
        top: String,
        /// Whether the descriptor's `TopGUID` names it (otherwise it is the default).
        from_top_guid: bool,
    },
    /// D20: the top is the GUID reserved for backup software.
    #[error("the top snapshot is {{704718e1-2314-44c8-9087-d78ed36b0f4e}}, reserved for backup software")]
    BackupTop,
    /// D21: a snapshot that has a parent is stored as a Plain image.
    #[error("Storage[{storage}]/Image[{image}] ({guid}) is Plain but its snapshot has a parent, expected Compressed (overlays are expanding images)")]
    PlainOverlay {
        /// The storage's number, from 0 in descriptor order.
        storage: usize,
        /// The image's number within its storage, from 0.
        image: usize,
        /// The image's GUID (its snapshot's).
        guid: String,
    },
    /// D22: the empty marker file named like the folder is missing.
    #[error("marker file {name:?} is missing from the bundle, expected an empty file named like the folder")]
    MissingMarker {
        /// The marker's file name.
        name: String,
    },
}

impl BundleViolation {
    /// The rule this breaks.
    pub fn rule(&self) -> BundleRule {
        use BundleRule as R;
        use BundleViolation as V;
        match self {
            V::NotXml { .. } => R::D1,
            V::WrongRoot { .. } | V::MissingElement { .. } | V::BadValue { .. } => R::D2,
            V::BadVersion { .. } => R::D3,
            V::GeometryMismatch { .. } => R::D4,
            V::Padding { .. } => R::D5,
            V::StorageNotContiguous { .. } | V::EmptyStorage { .. } => R::D6,
            V::StoragesEnd { .. } => R::D7,
            V::ZeroBlocksize { .. } | V::BlocksizeMismatch { .. } => R::D8,
            V::ImageTooSmall { .. } => R::D9,
            V::PlainSizeMismatch { .. } => R::D10,
            V::MissingFile { .. } => R::D11,
            V::SharedFile { .. } => R::D12,
            V::OutsideBundle { .. } => R::D13,
            V::BadGuid { .. } => R::D14,
            V::DuplicateGuid { .. } => R::D15,
            V::NoImageForSnapshot { .. } | V::ImageWithoutSnapshot { .. } => R::D16,
            V::RootCount { .. } => R::D17,
            V::MissingParent { .. } => R::D18,
            V::Cycle { .. } => R::D19,
            V::MissingTop { .. } | V::BackupTop => R::D20,
            V::PlainOverlay { .. } => R::D21,
            V::MissingMarker { .. } => R::D22,
        }
    }
}
