//! What a broken bundle rule looks like: [`BundleViolation`], one variant per way to break a
//! `D` rule, each saying what was found, what was expected and where (the element's path in
//! the descriptor, `Storage[1]/Image[0]`, or the file).

use super::rule::BundleRule;

/// A broken rule of a disk bundle. [`BundleViolation::rule`] names the rule; the message says
/// what was found, what was expected and where. Storage and image numbers count from 0 in
/// descriptor order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum BundleViolation {
    /// D1: the descriptor is not well-formed XML (or not UTF-8).
    #[error("DiskDescriptor.xml is not well-formed XML at line {line}, column {column}: {reason}")]
    NotXml { line: u32, column: u32, reason: String },
    /// D2: the root element is not `Parallels_disk_image`.
    #[error("the descriptor's root element is <{found}>, expected <Parallels_disk_image>")]
    WrongRoot { found: String },
    /// D2: a required element is missing.
    #[error("{path} is missing, expected it in every descriptor")]
    MissingElement { path: String },
    /// D2: an element holds a value of the wrong kind.
    #[error("{path} is {found:?}, expected {expected}")]
    BadValue {
        path: String,
        found: String,
        expected: &'static str,
    },
    /// D3: the root's `Version` is not `1.0`.
    #[error("Parallels_disk_image Version is {}, expected \"1.0\"", found.as_deref().map_or("absent".to_string(), |v| format!("{v:?}")))]
    BadVersion { found: Option<String> },
    /// D4: `Cylinders` × `Heads` × `Sectors` is not `Disk_size`.
    #[error("Disk_Parameters: Cylinders x Heads x Sectors = {cylinders} x {heads} x {sectors} = {product}, expected Disk_size = {disk_size}")]
    GeometryMismatch {
        cylinders: u64,
        heads: u64,
        sectors: u64,
        product: u128,
        disk_size: u64,
    },
    /// D5: `Padding` is not 0.
    #[error("Disk_Parameters/Padding is {found}, expected 0")]
    Padding { found: u64 },
    /// D6: a storage does not start where the previous one ends (or the first at 0).
    #[error("StorageData/Storage[{storage}] starts at sector {start}, expected {expected} ({})", if *storage == 0 { "the start of the disk" } else if start > expected { "a gap after the previous storage" } else { "it overlaps the previous storage" })]
    StorageNotContiguous { storage: usize, start: u64, expected: u64 },
    /// D6: a storage is empty or reversed.
    #[error("StorageData/Storage[{storage}] spans sectors {start}..{end}, expected Start < End")]
    EmptyStorage { storage: usize, start: u64, end: u64 },
    /// D7: the last storage does not end at `Disk_size`.
    #[error("the last storage ends at sector {end}, expected Disk_size = {disk_size}")]
    StoragesEnd { end: u64, disk_size: u64 },
    /// D8: a storage's `Blocksize` is 0.
    #[error("StorageData/Storage[{storage}]/Blocksize is 0, expected a cluster size in sectors")]
    ZeroBlocksize { storage: usize },
    /// D8: an expanding image's `tracks` differs from its storage's `Blocksize`.
    #[error("{file}: header tracks is {tracks} sectors, expected Storage[{storage}]/Blocksize = {blocksize}")]
    BlocksizeMismatch {
        storage: usize,
        file: String,
        tracks: u32,
        blocksize: u64,
    },
    /// D9: an expanding image is smaller than its storage.
    #[error("{file}: header nb_sectors is {nb_sectors}, expected at least Storage[{storage}]'s {needed} sectors")]
    ImageTooSmall {
        storage: usize,
        file: String,
        nb_sectors: u64,
        needed: u64,
    },
    /// D10: a plain image's length is not its storage's size.
    #[error("{file}: a Plain image of {len} bytes, expected Storage[{storage}]'s {expected} bytes")]
    PlainSizeMismatch {
        storage: usize,
        file: String,
        len: u64,
        expected: u64,
    },
    /// D11: an image's file does not exist (or is not a regular file).
    #[error("Storage[{storage}]/Image[{image}]/File {file:?}: {reason}, expected a regular file")]
    MissingFile {
        storage: usize,
        image: usize,
        file: String,
        reason: String,
    },
    /// D12: two images name the same file.
    #[error("Storage[{storage}]/Image[{image}]/File {file:?} is also Storage[{first_storage}]/Image[{first_image}]'s file, expected one file per image")]
    SharedFile {
        storage: usize,
        image: usize,
        file: String,
        first_storage: usize,
        first_image: usize,
    },
    /// D13: an image's file is outside the bundle's folder.
    #[error("Storage[{storage}]/Image[{image}]/File {file:?} resolves outside the bundle, expected a file inside it (not followed)")]
    OutsideBundle { storage: usize, image: usize, file: String },
    /// D14: a GUID is not a UUID in braces.
    #[error("{path} is {found:?}, expected a GUID like {{5fbaabe3-6958-40ff-92a7-860e329aab41}}")]
    BadGuid { path: String, found: String },
    /// D15: a GUID is used twice where it must be unique (two snapshots, or two images of one storage).
    #[error("{path} is {guid}, already used by {first}; expected unique GUIDs")]
    DuplicateGuid { path: String, guid: String, first: String },
    /// D16: a snapshot has no image in a storage.
    #[error(
        "snapshot {snapshot} has no image in Storage[{storage}], expected one image per snapshot in every storage"
    )]
    NoImageForSnapshot { storage: usize, snapshot: String },
    /// D16: an image's GUID names no snapshot.
    #[error("Storage[{storage}]/Image[{image}] has GUID {guid}, expected the GUID of a Shot")]
    ImageWithoutSnapshot { storage: usize, image: usize, guid: String },
    /// D17: not exactly one snapshot has the null parent.
    #[error("{} snapshots have the null ParentGUID{}, expected exactly one root", roots.len(), if roots.is_empty() { String::new() } else { format!(" ({})", roots.join(", ")) })]
    RootCount { roots: Vec<String> },
    /// D18: a snapshot's parent is not a snapshot.
    #[error("Shot {shot} has ParentGUID {parent}, which is no Shot's GUID")]
    MissingParent { shot: String, parent: String },
    /// D19: following parents from a snapshot comes back to it.
    #[error("the parents of Shot {} form a cycle: {}", cycle[0], cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    /// D20: the top snapshot is not among the snapshots.
    #[error("the top snapshot is {top}{}, but no Shot has that GUID", if *from_top_guid { " (TopGUID)" } else { " (the default, no TopGUID)" })]
    MissingTop { top: String, from_top_guid: bool },
    /// D20: the top is the GUID reserved for backup software.
    #[error("the top snapshot is {{704718e1-2314-44c8-9087-d78ed36b0f4e}}, reserved for backup software")]
    BackupTop,
    /// D21: a snapshot that has a parent is stored as a Plain image.
    #[error("Storage[{storage}]/Image[{image}] ({guid}) is Plain but its snapshot has a parent, expected Compressed (overlays are expanding images)")]
    PlainOverlay { storage: usize, image: usize, guid: String },
    /// D22: the empty marker file named like the folder is missing.
    #[error("marker file {name:?} is missing from the bundle, expected an empty file named like the folder")]
    MissingMarker { name: String },
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
