//! Disk bundles: a `NAME.hdd` folder holding `DiskDescriptor.xml`, one storage file per
//! snapshot (and per segment of a split disk) and an empty marker file named like the folder.
//!
//! ```text
//!  NAME.hdd/
//!  ├── DiskDescriptor.xml             disk size, storages (segments), images, snapshots
//!  ├── NAME.hdd                       empty marker file
//!  ├── NAME.hdd.0.{5fbaabe3-…}.hds    segment 0, top snapshot (Compressed: an .hds image)
//!  └── NAME.hdd.0.{GUID}.hds          segment 0, an older snapshot (its parent)
//! ```
//!
//! - [`Descriptor`]: the XML as a model (unknown elements kept), read and written.
//! - [`Bundle`]: a descriptor with its folder: paths resolved inside it, snapshot chains,
//!   [`Bundle::validate`] (the `D` rules of `spec/bundles.md`, and the `R` rules on each image).
//! - [`GuestDisk`]: the guest's bytes through a chain of snapshots and split storages, with
//!   the allocation map ([`GuestDisk::extents`]).
//! - [`BundleBuilder`] and [`write_expanding`]: writing bundles and images from guest data.
//! - [`write_raw`], [`write_expanding_ranges`], [`file_data_ranges`]: guest data in bulk (large
//!   batched reads and writes, holes for zeros, early writeback).
//! - [`BundleDefect`]: descriptor defects for test bundles.

mod copy;
pub(crate) use copy::read_some;
mod defect;
mod descriptor;
mod disk;
mod pio;
mod recipe;
mod repair;
mod rule;
mod validate;
mod violation;
mod write;

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use uuid::Uuid;

use descriptor::Guids;

pub use copy::{file_data_ranges, write_raw, GuestReader};
pub use defect::BundleDefect;
pub use descriptor::{
    format_guid, parse_guid, parse_guid_loose, Descriptor, DiskParameters, ImageEntry, ImageType, SnapshotEntry,
    Snapshots, Storage, XmlElement, BACKUP_GUID, DEFAULT_TOP_GUID, NULL_GUID,
};
pub use disk::{Extent, GuestDisk, Mapping};
pub use recipe::{BundleRecipe, SnapshotRecipe};
pub use repair::{
    plan_bundle_repair, BundleRepairAction, BundleRepairError, BundleRepairKind, BundleRepairPlan, ImageRepair,
};
pub use rule::BundleRule;
pub use validate::{BundleFinding, BundleReport};
pub use violation::BundleViolation;
pub use write::{
    image_file_name, write_bundle_dir, write_expanding, write_expanding_ranges, BundleBuilder, SnapshotSpec, WriteStats,
};

use crate::error::Error;
use crate::raw::Sectors;

/// The descriptor's file name inside a bundle.
pub const DESCRIPTOR_NAME: &str = "DiskDescriptor.xml";

/// The descriptor is read whole; one larger than this is refused rather than read.
pub const MAX_DESCRIPTOR_LEN: u64 = 16 << 20;

/// Why a bundle could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The descriptor breaks a rule that stops reading it (D1, D2), or one that stops reading
    /// the guest's data (a missing snapshot, a cycle, a file outside the bundle…).
    #[error("{}: {violation} [{}]", path.display(), violation.rule())]
    Invalid {
        /// The descriptor.
        path: PathBuf,
        /// The broken rule.
        violation: BundleViolation,
    },
    /// A storage file could not be parsed as a Parallels image.
    #[error("{}: {source}", path.display())]
    Image {
        /// The storage file.
        path: PathBuf,
        /// What is wrong with it.
        source: Error,
    },
    /// No snapshot has the GUID asked for.
    #[error("{}: no snapshot {}", path.display(), format_guid(*guid))]
    UnknownSnapshot {
        /// The descriptor.
        path: PathBuf,
        /// The GUID asked for.
        guid: Uuid,
    },
    /// A snapshot was asked of a lone image, which has none.
    #[error("{}: a lone image has no snapshots (--snapshot needs a bundle)", path.display())]
    NotABundle {
        /// The image.
        path: PathBuf,
    },
}

impl BundleError {
    /// The violated rule, if the error is one.
    pub fn rule(&self) -> Option<BundleRule> {
        match self {
            BundleError::Invalid { violation, .. } => Some(violation.rule()),
            _ => None,
        }
    }
}

/// How to open a bundle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BundleOptions {
    /// Follow image paths that leave the bundle's folder (refused by default: D13).
    pub follow_outside: bool,
}

/// A bundle: its folder and its descriptor.
#[derive(Clone, Debug)]
pub struct Bundle {
    dir: PathBuf,
    descriptor_path: PathBuf,
    descriptor: Descriptor,
    /// The descriptor's GUIDs, read once.
    guids: Guids,
    options: BundleOptions,
}

/// Where an image's `File` leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedPath {
    /// A path inside the bundle's folder.
    Inside(PathBuf),
    /// A path that leaves it (through `..`, an absolute path or a symbolic link).
    Outside(PathBuf),
}

/// Whether `path` names a bundle: a folder, a file named `*.xml`, or a file whose text starts
/// like XML (a `DiskDescriptor.xml`), rather than a Parallels image.
pub fn is_bundle(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")) {
        return true;
    }
    // Only a regular file is sniffed: reading a pipe, a FIFO or a device would take bytes the
    // image reader needs.
    if !fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(mut f) = fs::File::open(path) else { return false };
    let mut head = [0u8; 64];
    let n = io::Read::read(&mut f, &mut head).unwrap_or(0);
    let head = &head[..n];
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

impl Bundle {
    /// Opens a bundle from its folder or its `DiskDescriptor.xml`, refusing image paths that
    /// leave the folder.
    pub fn open(path: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        Self::open_with(path, BundleOptions::default())
    }

    /// [`Bundle::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, options: BundleOptions) -> Result<Bundle, BundleError> {
        let path = path.as_ref();
        let (dir, descriptor_path) = if path.is_dir() {
            (path.to_path_buf(), path.join(DESCRIPTOR_NAME))
        } else {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (dir, path.to_path_buf())
        };
        let io_err = |source| BundleError::Io {
            path: descriptor_path.clone(),
            source,
        };
        let file = fs::File::open(&descriptor_path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > MAX_DESCRIPTOR_LEN {
            return Err(BundleError::Invalid {
                path: descriptor_path.clone(),
                violation: BundleViolation::NotXml {
                    line: 1,
                    column: 1,
                    reason: format!("the file is {len} bytes, more than a descriptor's {MAX_DESCRIPTOR_LEN}"),
                },
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        io::Read::read_to_end(&mut io::Read::take(file, MAX_DESCRIPTOR_LEN), &mut bytes).map_err(io_err)?;
        let text = String::from_utf8(bytes).map_err(|e| BundleError::Invalid {
            path: descriptor_path.clone(),
            violation: BundleViolation::NotXml {
                line: 0,
                column: 0,
                reason: format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
            },
        })?;
        let descriptor = Descriptor::parse(&text).map_err(|violation| BundleError::Invalid {
            path: descriptor_path.clone(),
            violation,
        })?;
        Ok(Bundle {
            dir,
            descriptor_path,
            guids: descriptor.guids(),
            descriptor,
            options,
        })
    }

    /// A bundle made of a descriptor in memory, for the folder `dir`.
    pub fn from_descriptor(dir: impl Into<PathBuf>, descriptor: Descriptor) -> Bundle {
        let dir = dir.into();
        Bundle {
            descriptor_path: dir.join(DESCRIPTOR_NAME),
            dir,
            guids: descriptor.guids(),
            descriptor,
            options: BundleOptions::default(),
        }
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The descriptor's GUIDs, parsed when it was read.
    pub(crate) fn guids(&self) -> &Guids {
        &self.guids
    }

    /// The bundle's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor's path.
    pub fn descriptor_path(&self) -> &Path {
        &self.descriptor_path
    }

    /// The options the bundle was opened with.
    pub fn options(&self) -> BundleOptions {
        self.options
    }

    /// The disk's size in bytes (`Disk_size` sectors).
    pub fn disk_size(&self) -> u64 {
        Sectors(self.descriptor.disk.disk_size).saturating_bytes().get()
    }

    /// The top snapshot: `TopGUID` if present (and well-formed), else the predefined top GUID.
    pub fn top(&self) -> Result<Uuid, BundleError> {
        match (&self.descriptor.snapshots.top_guid, self.guids.top) {
            (Some(t), Some(None)) => Err(self.invalid(BundleViolation::BadGuid {
                path: "Snapshots/TopGUID".into(),
                found: t.clone(),
            })),
            (_, Some(Some(g))) => Ok(g),
            _ => Ok(DEFAULT_TOP_GUID),
        }
    }

    fn invalid(&self, violation: BundleViolation) -> BundleError {
        BundleError::Invalid {
            path: self.descriptor_path.clone(),
            violation,
        }
    }

    /// Where an image's `File` leads: relative paths are taken from the bundle's folder. A path
    /// is inside when it stays under the folder both as written (after `.` and `..`) and, if it
    /// exists, after symbolic links are followed.
    pub fn resolve(&self, file: &str) -> ResolvedPath {
        let dir = normalize(&std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone()));
        let joined = normalize(&dir.join(file));
        let lexical_inside = joined.starts_with(&dir) && joined != dir;
        let real_inside = match (fs::canonicalize(&joined), fs::canonicalize(&dir)) {
            (Ok(real), Ok(real_dir)) => real.starts_with(&real_dir) && real != real_dir,
            _ => true,
        };
        if lexical_inside && real_inside {
            ResolvedPath::Inside(joined)
        } else {
            ResolvedPath::Outside(joined)
        }
    }

    /// The path to open for storage `storage`'s image `image`: refused (D13) when it leaves the
    /// folder, unless the bundle was opened with [`BundleOptions::follow_outside`].
    pub fn image_path(&self, storage: usize, image: usize) -> Result<PathBuf, BundleError> {
        let entry = &self.descriptor.storages[storage].images[image];
        match self.resolve(&entry.file) {
            ResolvedPath::Inside(p) => Ok(p),
            ResolvedPath::Outside(p) if self.options.follow_outside => Ok(p),
            ResolvedPath::Outside(_) => Err(self.invalid(BundleViolation::OutsideBundle {
                storage,
                image,
                file: entry.file.clone(),
            })),
        }
    }

    /// The snapshot chain from `snapshot` (the top if `None`) down to the root, newest first.
    pub fn chain(&self, snapshot: Option<Uuid>) -> Result<Vec<Uuid>, BundleError> {
        let shots = &self.descriptor.snapshots.shots;
        let mut parsed = Vec::with_capacity(shots.len());
        for (i, (s, &(g, p))) in shots.iter().zip(&self.guids.shots).enumerate() {
            let g = g.ok_or_else(|| {
                self.invalid(BundleViolation::BadGuid {
                    path: format!("Snapshots/Shot[{i}]/GUID"),
                    found: s.guid.clone(),
                })
            })?;
            let p = p.ok_or_else(|| {
                self.invalid(BundleViolation::BadGuid {
                    path: format!("Snapshots/Shot[{i}]/ParentGUID"),
                    found: s.parent.clone(),
                })
            })?;
            parsed.push((g, p));
        }
        let start = match snapshot {
            Some(g) => {
                if !parsed.iter().any(|(s, _)| *s == g) {
                    return Err(BundleError::UnknownSnapshot {
                        path: self.descriptor_path.clone(),
                        guid: g,
                    });
                }
                g
            }
            None => {
                let top = self.top()?;
                if top == BACKUP_GUID {
                    return Err(self.invalid(BundleViolation::BackupTop));
                }
                if !parsed.iter().any(|(s, _)| *s == top) {
                    return Err(self.invalid(BundleViolation::MissingTop {
                        top: format_guid(top),
                        from_top_guid: self.descriptor.snapshots.top_guid.is_some(),
                    }));
                }
                top
            }
        };
        // The first Shot of a GUID counts (a second one is D15).
        let mut parent_of = std::collections::HashMap::with_capacity(parsed.len());
        for (g, p) in &parsed {
            parent_of.entry(*g).or_insert(*p);
        }
        let mut chain = vec![start];
        let mut in_chain = std::collections::HashSet::from([start]);
        let mut cur = start;
        loop {
            let parent = parent_of[&cur];
            if parent == NULL_GUID {
                return Ok(chain);
            }
            if !parent_of.contains_key(&parent) {
                return Err(self.invalid(BundleViolation::MissingParent {
                    shot: format_guid(cur),
                    parent: format_guid(parent),
                }));
            }
            if in_chain.contains(&parent) {
                let k = chain.iter().position(|g| *g == parent).expect("in the chain");
                let mut cycle: Vec<String> = chain[k..].iter().map(|g| format_guid(*g)).collect();
                cycle.push(format_guid(parent));
                return Err(self.invalid(BundleViolation::Cycle { cycle }));
            }
            chain.push(parent);
            in_chain.insert(parent);
            cur = parent;
        }
    }

    /// The guest's disk at `snapshot` (the top if `None`).
    pub fn disk(&self, snapshot: Option<Uuid>) -> Result<GuestDisk, BundleError> {
        GuestDisk::from_bundle(self, snapshot)
    }

    /// The guest view at `snapshot` (the top if `None`) as SVG: which guest ranges are allocated
    /// and from which snapshot of the chain (the newest one holding any byte of a cell colours
    /// it; the legend names each snapshot by GUID and its image files).
    pub fn guest_svg(&self, snapshot: Option<Uuid>) -> Result<String, BundleError> {
        let chain = self.chain(snapshot)?;
        let disk = self.disk(snapshot)?;
        let extents = disk.extents();
        let mut files: Vec<Vec<String>> = vec![Vec::new(); chain.len()];
        for e in &extents {
            if let (Some(m), Some(names)) = (&e.data, files.get_mut(e.depth)) {
                let name = disk.files()[m.file]
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let layers: Vec<String> = chain
            .iter()
            .zip(&files)
            .map(|(g, names)| match names.len() {
                0 => descriptor::format_guid(*g),
                _ => format!("{} ({})", descriptor::format_guid(*g), names.join(", ")),
            })
            .collect();
        let runs = extents
            .iter()
            .map(|e| (e.start, e.length, e.data.as_ref().map(|_| e.depth)));
        let title = format!("guest view at snapshot {}", descriptor::format_guid(chain[0]));
        Ok(crate::picture::origin_svg(&title, disk.size(), &layers, runs))
    }

    /// Runs every `D` rule, and the `R` rules on each expanding image.
    pub fn validate(&self) -> BundleReport {
        validate::validate(self, crate::image::RuleMode::Strict)
    }

    /// [`Bundle::validate`], reading the images in `mode` (lenient: unknown features are notes).
    pub fn validate_with(&self, mode: crate::image::RuleMode) -> BundleReport {
        validate::validate(self, mode)
    }

    /// The marker file's expected name: the folder's name.
    pub fn marker_name(&self) -> Option<String> {
        let dir = std::path::absolute(&self.dir).ok()?;
        normalize(&dir).file_name().map(|n| n.to_string_lossy().into_owned())
    }
}

/// `path` with `.` removed and `..` applied, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The message of an I/O error without Rust's " (os error N)".
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
