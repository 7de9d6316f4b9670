//! Bundle repair: the descriptor repaired where the storage is intact, and each image of the
//! bundle repaired by the image repair at the same level ([`plan_bundle_repair`]).
//!
//! A plan is a list of typed [`BundleRepairAction`]s, each naming the `D` rule it fixes, and one
//! image plan ([`crate::repair::RepairPlan`]) per image file that needs one. What the descriptor
//! says is fixed only where the folder proves the right value: the images' cluster size
//! (`Blocksize`, D8), their length (`End`, `Disk_size`, D7, D9), the one snapshot nobody is the
//! parent of (`TopGUID`, D20), an image that is a Parallels image (`Type`, D21), a GUID written
//! without braces (D14), a Shot written twice alike (D15), the geometry (D4), the version (D3),
//! the padding (D5), the marker (D22). Where the storage is not intact (a missing image, two
//! images naming one file, a Plain file cut short) or the snapshot tree would have to be guessed
//! (two roots, a missing parent, a cycle), the plan is refused with a
//! [`BundleRepairError::Refused`] that says what was found and why it will not guess.
//!
//! [`RepairLevel::Leaks`] fixes only the non-canonical `D` rules (D5, D22) and repairs the images
//! at that level; the corruption it leaves is listed ([`BundleRepairPlan::unrepaired`]), not
//! refused.
//!
//! Writing: [`BundleRepairPlan::write_to`] writes a new bundle folder aside and renames it into
//! place; [`BundleRepairPlan::write_in_place`] replaces each repaired image and then
//! `DiskDescriptor.xml`, each written aside, flushed and renamed over.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::descriptor::{
    format_guid, parse_guid, parse_guid_loose, Descriptor, ImageType, DEFAULT_TOP_GUID, NULL_GUID,
};
use super::validate::BundleFinding;
use super::violation::BundleViolation;
use super::write::write_bundle_dir;
use super::{Bundle, BundleError, BundleRule, ResolvedPath, DESCRIPTOR_NAME, MAX_DESCRIPTOR_LEN};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::outfile::{write_atomically, OutputOptions};
use crate::raw::Bytes;
use crate::repair::{plan_repair, RepairLevel, RepairPlan};
use crate::rule::Severity;
use crate::source::FileSource;
use crate::validate::Verdict;

/// What one action does to the descriptor or the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum BundleRepairKind {
    /// An element's (or the root's `Version` attribute's) value set, added (`from` absent) or
    /// removed (`to` absent). `path` as the `D` rules' messages write it.
    SetValue {
        /// The element, `Disk_Parameters/Heads`, `StorageData/Storage[1]/Start`.
        path: String,
        /// The value found, if any.
        from: Option<String>,
        /// The value written, if any.
        to: Option<String>,
    },
    /// A Shot that repeats an earlier one exactly (GUID, parent and the rest) removed.
    RemoveShot {
        /// Its number in `Snapshots`, from 0.
        index: usize,
        /// Its GUID.
        guid: String,
    },
    /// The empty marker file named like the folder created.
    CreateMarker {
        /// Its name.
        name: String,
    },
}

/// One action of a bundle repair: the rule it fixes and what it does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BundleRepairAction {
    /// The `D` rule fixed.
    pub rule: BundleRule,
    /// What is done.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub kind: BundleRepairKind,
}

impl fmt::Display for BundleRepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.as_ref().map_or("(absent)".to_string(), |v| format!("{v:?}"));
        match &self.kind {
            BundleRepairKind::SetValue { path, from, to } => match to {
                Some(_) => write!(f, "{}: {path} {} -> {}", self.rule, show(from), show(to)),
                None => write!(f, "{}: {path} {} removed", self.rule, show(from)),
            },
            BundleRepairKind::RemoveShot { index, guid } => {
                write!(f, "{}: Snapshots/Shot[{index}] ({guid}, a repeat) removed", self.rule)
            }
            BundleRepairKind::CreateMarker { name } => write!(f, "{}: marker file {name:?} created", self.rule),
        }
    }
}

/// One image of the bundle and its repair plan (never empty: images that need nothing are not
/// listed).
#[derive(Clone, Debug)]
pub struct ImageRepair {
    /// The image's storage, from 0.
    pub storage: usize,
    /// Its number in the storage, from 0.
    pub image: usize,
    /// Its `File`, as the (repaired) descriptor writes it.
    pub file: String,
    /// The file, resolved.
    pub path: PathBuf,
    /// The image repair's plan.
    pub plan: RepairPlan,
}

/// A bundle repair: the descriptor's actions, the images' plans, what is left.
#[derive(Clone, Debug)]
pub struct BundleRepairPlan {
    /// What may be repaired.
    pub level: RepairLevel,
    /// `check`'s verdict of the bundle before.
    pub before: Verdict,
    /// The descriptor's and the folder's actions, in the order made.
    pub actions: Vec<BundleRepairAction>,
    /// The images repaired, in descriptor order.
    pub images: Vec<ImageRepair>,
    /// The rules (`"D3"`, `"R7"`) broken before and left as they are, without repeats.
    pub unrepaired: Vec<String>,
    /// The bundle's folder.
    dir: PathBuf,
    /// The repaired descriptor's text, when it changes.
    descriptor: Option<String>,
    /// The marker's name, when it is created.
    marker: Option<String>,
}

/// Why a bundle repair was not planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleRepairError {
    /// The bundle breaks a rule whose repair would have to guess: what was found, and why.
    #[error("{}: {violation} [{}]; not repaired: {why}", path.display(), violation.rule())]
    Refused {
        /// The descriptor.
        path: PathBuf,
        /// What was found.
        violation: BundleViolation,
        /// Why it is not repaired.
        why: &'static str,
    },
    /// The bundle could not be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// One of its images could not be planned (its repair was refused, or reading it failed).
    #[error("{}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The image repair's error.
        source: Error,
    },
}

impl BundleRepairError {
    /// The `D` rule of a refusal.
    pub fn rule(&self) -> Option<BundleRule> {
        match self {
            BundleRepairError::Refused { violation, .. } => Some(violation.rule()),
            BundleRepairError::Bundle(b) => b.rule(),
            BundleRepairError::Image { .. } => None,
        }
    }
}

/// Why each refused violation is not repaired.
fn refusal(v: &BundleViolation) -> Option<&'static str> {
    use BundleViolation as V;
    Some(match v {
        V::NotXml { .. } => {
            "the descriptor cannot be read; rebuilding the snapshot tree from the files would be a guess"
        }
        V::WrongRoot { .. } | V::MissingElement { .. } | V::BadValue { .. } => {
            "a required element is missing or unreadable and the folder does not prove its value"
        }
        V::EmptyStorage { .. } => "a storage with no sectors: where the segments end is not known",
        V::PlainSizeMismatch { .. } => {
            "the Plain file is not the storage's size: the storage is not intact (its missing bytes are not known)"
        }
        V::MissingFile { .. } => "an image file is missing: the storage is not intact",
        V::SharedFile { .. } => "two images name one file: which snapshot's file is missing is not known",
        V::OutsideBundle { .. } => {
            "the file outside the bundle is not followed, and no one file of its name in the bundle can replace it"
        }
        V::BadGuid { .. } => "the text is no GUID in any spelling",
        V::DuplicateGuid { .. } => "two entries share a GUID and differ: which one is right is not known",
        V::NoImageForSnapshot { .. } => "a snapshot has no image in a storage: the storage is not intact",
        V::ImageWithoutSnapshot { .. } => "an image belongs to no snapshot: where it goes in the tree is not known",
        V::RootCount { .. } => "not one root: which snapshot is the parent of which would be a guess",
        V::MissingParent { .. } => "a parent that is no snapshot: the real parent would be a guess",
        V::Cycle { .. } => "the parents form a cycle: where the chain really ends would be a guess",
        V::MissingTop { .. } | V::BackupTop => "not exactly one snapshot is nobody's parent: the top would be a guess",
        V::ZeroBlocksize { .. } | V::BlocksizeMismatch { .. } => {
            "the storage's images disagree on their cluster size (or it has none)"
        }
        V::ImageTooSmall { .. } => {
            "an image smaller than a storage that is not the last: shrinking it would move the storages after it"
        }
        V::PlainOverlay { .. } => "the file is not a Parallels image: it cannot be an overlay",
        V::StorageNotContiguous { .. } => "the storage's images do not cover it from where it should start",
        V::StoragesEnd { .. } => "the last storage's images do not prove the disk's size",
        _ => return None,
    })
}

/// Plans the repair of the bundle at `path` (its folder or its descriptor) at `level`.
pub fn plan_bundle_repair(path: &Path, level: RepairLevel) -> std::result::Result<BundleRepairPlan, BundleRepairError> {
    let (bundle, mut actions) = open_lenient(path, level)?;
    let lenient = !actions.is_empty();
    let descriptor_path = bundle.descriptor_path().to_path_buf();
    let refuse = |violation: BundleViolation| {
        let why = refusal(&violation).unwrap_or("it has no repair");
        BundleRepairError::Refused {
            path: descriptor_path.clone(),
            violation,
            why,
        }
    };
    let first = bundle.validate();
    let before = if actions.is_empty() {
        first.verdict()
    } else {
        Verdict::Corrupt
    };
    let original = bundle.descriptor().clone();
    let mut d = original.clone();
    let mut marker = None;
    let mut unrepaired: Vec<String> = Vec::new();
    // Each round fixes what the last validation found; a fix can reveal another (a storage's
    // start moved back shows whether its images cover it). A violation met twice was not fixed.
    let mut report = first.clone();
    let mut seen: Vec<BundleViolation> = Vec::new();
    for _round in 0..4 {
        let cur = Bundle::from_descriptor(bundle.dir(), d.clone());
        let mut changed = false;
        let mut size_changed = false;
        // A Plain entry that is an overlay's expanding image (D21) is not the storage's size
        // (D10) either: its type is fixed, not its size.
        let overlays: Vec<String> = report
            .findings
            .iter()
            .filter_map(|f| match f {
                BundleFinding::Descriptor(BundleViolation::PlainOverlay { storage, image, .. }) => {
                    Some(d.storages[*storage].images[*image].file.clone())
                }
                _ => None,
            })
            .collect();
        for f in &report.findings {
            let BundleFinding::Descriptor(v) = f else { continue };
            if matches!(v, BundleViolation::PlainSizeMismatch { file, .. } if overlays.contains(file)) {
                continue;
            }
            if matches!(v, BundleViolation::GeometryMismatch { .. }) {
                continue; // after the sizes
            }
            if let BundleViolation::MissingMarker { name } = v {
                if marker.is_none() {
                    actions.push(act(
                        BundleRule::D22,
                        BundleRepairKind::CreateMarker { name: name.clone() },
                    ));
                    marker = Some(name.clone());
                }
                continue;
            }
            if level == RepairLevel::Leaks && v.rule().severity() != Severity::NonCanonical {
                if !unrepaired.contains(&v.rule().code().to_string()) {
                    unrepaired.push(v.rule().code().to_string());
                }
                continue;
            }
            if seen.contains(v) {
                return Err(refuse(v.clone()));
            }
            seen.push(v.clone());
            match fix(&cur, &mut d, v) {
                Some(Fix::Done(a)) => {
                    actions.extend(a);
                    changed = true;
                }
                Some(Fix::Sized(a)) => {
                    actions.extend(a);
                    changed = true;
                    size_changed = true;
                }
                None => return Err(refuse(v.clone())),
            }
        }
        // D7 follows the storages; D4 the size.
        if level == RepairLevel::All {
            let end = d.storages.last().map_or(0, |s| s.end);
            if size_changed && end != d.disk.disk_size {
                actions.push(set(BundleRule::D7, "Disk_Parameters/Disk_size", d.disk.disk_size, end));
                d.disk.disk_size = end;
            }
            if let Some(a) = fix_geometry(&mut d, size_changed) {
                actions.extend(a);
                changed = true;
            }
        } else if report.findings.iter().any(|f| f.bundle_rule() == Some(BundleRule::D4))
            && !unrepaired.contains(&"D4".to_string())
        {
            unrepaired.push("D4".into());
        }
        if !changed {
            break;
        }
        report = Bundle::from_descriptor(bundle.dir(), d.clone()).validate();
    }
    let repaired = Bundle::from_descriptor(bundle.dir(), d.clone());
    let images = plan_images(&repaired, level)?;
    for f in &first.findings {
        if let BundleFinding::Image {
            storage,
            image,
            finding,
            ..
        } = f
        {
            let code = finding.violation.rule().code().to_string();
            let planned = images
                .iter()
                .find(|i| i.storage == *storage && i.image == *image)
                .is_some_and(|i| !i.plan.unrepaired.contains(&finding.violation.rule()));
            if !planned && finding.severity != Severity::Note && !unrepaired.contains(&code) {
                unrepaired.push(code);
            }
        }
    }
    let descriptor = (d != original || lenient).then(|| d.to_xml());
    Ok(BundleRepairPlan {
        level,
        before,
        actions,
        images,
        unrepaired,
        dir: bundle.dir().to_path_buf(),
        descriptor,
        marker,
    })
}

/// Opens the bundle; at the level All, a descriptor missing one of the geometry's elements
/// (D2) is read with it added as 0 (D4 then computes it).
fn open_lenient(
    path: &Path,
    level: RepairLevel,
) -> std::result::Result<(Bundle, Vec<BundleRepairAction>), BundleRepairError> {
    let err = match Bundle::open(path) {
        Ok(b) => return Ok((b, Vec::new())),
        Err(e) => e,
    };
    let BundleError::Invalid {
        path: descriptor_path,
        violation,
    } = err
    else {
        return Err(err.into());
    };
    let refused = |violation: BundleViolation| BundleRepairError::Refused {
        path: descriptor_path.clone(),
        why: refusal(&violation).unwrap_or("it has no repair"),
        violation,
    };
    let BundleViolation::MissingElement { path: missing } = &violation else {
        return Err(refused(violation));
    };
    let name = match missing.strip_prefix("Parallels_disk_image/Disk_Parameters/") {
        Some(n @ ("Cylinders" | "Heads" | "Sectors")) if level == RepairLevel::All => n,
        _ => return Err(refused(violation)),
    };
    let len = fs::metadata(&descriptor_path).map(|m| m.len()).unwrap_or(u64::MAX);
    let text = (len <= MAX_DESCRIPTOR_LEN)
        .then(|| fs::read_to_string(&descriptor_path).ok())
        .flatten();
    let close = "</Disk_Parameters>";
    let Some(text) = text.filter(|t| t.matches(close).count() == 1) else {
        return Err(refused(violation));
    };
    let patched = text.replacen(close, &format!("<{name}>0</{name}>{close}"), 1);
    let Ok(d) = Descriptor::parse(&patched) else {
        return Err(refused(violation));
    };
    let dir = match descriptor_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let action = BundleRepairAction {
        rule: BundleRule::D2,
        kind: BundleRepairKind::SetValue {
            path: format!("Disk_Parameters/{name}"),
            from: None,
            to: Some("0".into()),
        },
    };
    Ok((Bundle::from_descriptor(dir, d), vec![action]))
}

fn act(rule: BundleRule, kind: BundleRepairKind) -> BundleRepairAction {
    BundleRepairAction { rule, kind }
}

fn set(rule: BundleRule, path: &str, from: impl ToString, to: impl ToString) -> BundleRepairAction {
    act(
        rule,
        BundleRepairKind::SetValue {
            path: path.to_string(),
            from: Some(from.to_string()),
            to: Some(to.to_string()),
        },
    )
}

/// A fix: its actions, and whether it changed a storage's size (the disk's size follows).
enum Fix {
    Done(Vec<BundleRepairAction>),
    Sized(Vec<BundleRepairAction>),
}

/// The fix of one violation, applied to `d`; `None` where the repair would guess.
fn fix(b: &Bundle, d: &mut Descriptor, v: &BundleViolation) -> Option<Fix> {
    use BundleViolation as V;
    let one = |a: BundleRepairAction| Some(Fix::Done(vec![a]));
    match v {
        V::BadVersion { found } => {
            let a = act(
                BundleRule::D3,
                BundleRepairKind::SetValue {
                    path: "Parallels_disk_image/@Version".into(),
                    from: found.clone(),
                    to: Some(super::descriptor::VERSION.into()),
                },
            );
            d.version = Some(super::descriptor::VERSION.into());
            one(a)
        }
        V::Padding { found } => {
            d.disk.padding = Some(0);
            one(set(BundleRule::D5, "Disk_Parameters/Padding", found, 0))
        }
        V::StorageNotContiguous { .. }
        | V::StoragesEnd { .. }
        | V::ZeroBlocksize { .. }
        | V::BlocksizeMismatch { .. }
        | V::ImageTooSmall { .. } => fix_storage(b, d, v),
        V::OutsideBundle { storage, image, file } => {
            let name = Path::new(file).file_name()?.to_string_lossy().into_owned();
            let outside = b.dir().join(file);
            let inside = b.dir().join(&name);
            let named_elsewhere = d.storages.iter().flat_map(|s| &s.images).any(|im| im.file == name);
            if fs::symlink_metadata(&outside).is_ok()
                || !fs::symlink_metadata(&inside).is_ok_and(|m| m.is_file())
                || named_elsewhere
                || !matches!(b.resolve(&name), ResolvedPath::Inside(_))
            {
                return None;
            }
            d.storages[*storage].images[*image].file = name.clone();
            one(set(
                BundleRule::D13,
                &format!("StorageData/Storage[{storage}]/Image[{image}]/File"),
                file,
                name,
            ))
        }
        V::BadGuid { path, found } if path == "Snapshots/TopGUID" => {
            let g = parse_guid_loose(found)?;
            // The default top is named by no TopGUID, as Parallels Desktop writes it (libphdi
            // refuses a descriptor with a TopGUID).
            let to = (g != DEFAULT_TOP_GUID).then(|| format_guid(g));
            d.snapshots.top_guid = to.clone();
            one(act(
                BundleRule::D14,
                BundleRepairKind::SetValue {
                    path: path.clone(),
                    from: Some(found.clone()),
                    to,
                },
            ))
        }
        V::BadGuid { path, found } => {
            let g = parse_guid_loose(found)?;
            let text = format_guid(g);
            let slot = guid_slot(d, path)?;
            *slot = text.clone();
            one(set(BundleRule::D14, path, found, text))
        }
        V::DuplicateGuid { path, guid, first } => {
            // Only a Shot that repeats an earlier one exactly goes.
            let index = shot_index(path)?;
            let earlier = shot_index(first)?;
            let shots = &d.snapshots.shots;
            if index >= shots.len() || shots[index] != shots[earlier] {
                return None;
            }
            d.snapshots.shots.remove(index);
            one(act(
                BundleRule::D15,
                BundleRepairKind::RemoveShot {
                    index,
                    guid: guid.clone(),
                },
            ))
        }
        V::MissingTop { .. } | V::BackupTop => {
            let leaf = only_leaf(d)?;
            let from = d.snapshots.top_guid.clone();
            // The default top is named by no TopGUID, as above.
            let to = (leaf != DEFAULT_TOP_GUID).then(|| format_guid(leaf));
            d.snapshots.top_guid = to.clone();
            one(act(
                BundleRule::D20,
                BundleRepairKind::SetValue {
                    path: "Snapshots/TopGUID".into(),
                    from,
                    to,
                },
            ))
        }
        V::PlainOverlay { storage, image, .. } => {
            let path = b.image_path(*storage, *image).ok()?;
            let source = FileSource::open(&path).ok()?;
            Image::parse(&source).ok()?;
            d.storages[*storage].images[*image].kind = ImageType::Compressed;
            one(set(
                BundleRule::D21,
                &format!("StorageData/Storage[{storage}]/Image[{image}]/Type"),
                ImageType::Plain,
                ImageType::Compressed,
            ))
        }
        _ => None,
    }
}

/// The fix of a storage's violation (D6 to D9), applied to `d`: the values its images prove.
fn fix_storage(b: &Bundle, d: &mut Descriptor, v: &BundleViolation) -> Option<Fix> {
    use BundleViolation as V;
    let one = |a: BundleRepairAction| Some(Fix::Done(vec![a]));
    match v {
        V::StorageNotContiguous {
            storage,
            start,
            expected,
        } => {
            // The images must cover the storage from where it should start.
            let s = &d.storages[*storage];
            let cover = images_cover(b, *storage)?;
            if *expected >= s.end || s.end - expected > cover {
                return None;
            }
            d.storages[*storage].start = *expected;
            one(set(
                BundleRule::D6,
                &format!("StorageData/Storage[{storage}]/Start"),
                start,
                expected,
            ))
        }
        V::StoragesEnd { end, .. } => {
            // The last storage's images must be exactly its size: then they prove the disk's.
            let last = d.storages.len() - 1;
            let s = &d.storages[last];
            let cover = images_exact(b, last)?;
            if cover != s.end - s.start {
                return None;
            }
            let a = set(BundleRule::D7, "Disk_Parameters/Disk_size", d.disk.disk_size, end);
            d.disk.disk_size = *end;
            Some(Fix::Sized(vec![a]))
        }
        V::ZeroBlocksize { storage } | V::BlocksizeMismatch { storage, .. } => {
            let tracks = images_tracks(b, *storage)?;
            let s = &mut d.storages[*storage];
            if s.blocksize == tracks {
                return Some(Fix::Done(Vec::new()));
            }
            let a = set(
                BundleRule::D8,
                &format!("StorageData/Storage[{storage}]/Blocksize"),
                s.blocksize,
                tracks,
            );
            s.blocksize = tracks;
            one(a)
        }
        V::ImageTooSmall { storage, .. } => {
            if *storage + 1 != d.storages.len() {
                return None;
            }
            let cover = images_cover(b, *storage)?;
            let s = &mut d.storages[*storage];
            if s.end - s.start <= cover {
                return Some(Fix::Done(Vec::new()));
            }
            let end = s.start + cover;
            if end <= s.start {
                return None;
            }
            let a = set(
                BundleRule::D9,
                &format!("StorageData/Storage[{storage}]/End"),
                s.end,
                end,
            );
            s.end = end;
            Some(Fix::Sized(vec![a]))
        }
        _ => None,
    }
}

/// The element a GUID path names (`Snapshots/TopGUID`, `Snapshots/Shot[2]/ParentGUID`,
/// `StorageData/Storage[0]/Image[1]/GUID`).
fn guid_slot<'d>(d: &'d mut Descriptor, path: &str) -> Option<&'d mut String> {
    if path == "Snapshots/TopGUID" {
        return d.snapshots.top_guid.as_mut();
    }
    let parts: Vec<&str> = path.split('/').collect();
    let index = |part: &str, name: &str| -> Option<usize> {
        part.strip_prefix(name)?
            .strip_prefix('[')?
            .strip_suffix(']')?
            .parse()
            .ok()
    };
    match parts.as_slice() {
        ["Snapshots", shot, field] => {
            let s = d.snapshots.shots.get_mut(index(shot, "Shot")?)?;
            match *field {
                "GUID" => Some(&mut s.guid),
                "ParentGUID" => Some(&mut s.parent),
                _ => None,
            }
        }
        ["StorageData", storage, image, "GUID"] => {
            let s = d.storages.get_mut(index(storage, "Storage")?)?;
            Some(&mut s.images.get_mut(index(image, "Image")?)?.guid)
        }
        _ => None,
    }
}

/// The Shot number of `Snapshots/Shot[i]/GUID`.
fn shot_index(path: &str) -> Option<usize> {
    path.strip_prefix("Snapshots/Shot[")?
        .strip_suffix("]/GUID")?
        .parse()
        .ok()
}

/// The one snapshot that is nobody's parent, if there is exactly one.
fn only_leaf(d: &Descriptor) -> Option<Uuid> {
    let shots: Vec<(Uuid, Uuid)> = d
        .snapshots
        .shots
        .iter()
        .map(|s| Some((parse_guid(&s.guid)?, parse_guid(&s.parent)?)))
        .collect::<Option<_>>()?;
    let mut leaves = shots
        .iter()
        .map(|(g, _)| *g)
        .filter(|g| !shots.iter().any(|(_, p)| p == g) && *g != NULL_GUID);
    let leaf = leaves.next()?;
    leaves.next().is_none().then_some(leaf)
}

/// Each image of a storage: its cluster size in sectors (`None` for a Plain file) and the
/// sectors it holds (`None` when one cannot be read).
fn image_sizes(b: &Bundle, storage: usize) -> Option<Vec<(Option<u64>, u64)>> {
    let s = &b.descriptor().storages[storage];
    let mut out = Vec::with_capacity(s.images.len());
    for (i, im) in s.images.iter().enumerate() {
        let path = b.image_path(storage, i).ok()?;
        let source = FileSource::open(&path).ok()?;
        out.push(match im.kind {
            ImageType::Plain => (None, Bytes(crate::source::Source::size(&source)).sectors_floor().get()),
            ImageType::Compressed => {
                let image = Image::parse(&source).ok()?;
                let h = image.header();
                (
                    Some(u64::from(h.raw.tracks.get())),
                    Bytes(h.virtual_size()).sectors_floor().get(),
                )
            }
        });
    }
    (!out.is_empty()).then_some(out)
}

/// The sectors every image of the storage covers (the least of their sizes).
fn images_cover(b: &Bundle, storage: usize) -> Option<u64> {
    image_sizes(b, storage)?.iter().map(|(_, n)| *n).min()
}

/// The sectors the storage's images all hold exactly (`None` if they differ).
fn images_exact(b: &Bundle, storage: usize) -> Option<u64> {
    let sizes = image_sizes(b, storage)?;
    sizes.iter().all(|(_, n)| *n == sizes[0].1).then(|| sizes[0].1)
}

/// The cluster size in sectors every expanding image of the storage has (`None` if they differ,
/// or none is expanding).
fn images_tracks(b: &Bundle, storage: usize) -> Option<u64> {
    let tracks: Vec<u64> = image_sizes(b, storage)?.iter().filter_map(|(t, _)| *t).collect();
    let first = *tracks.first()?;
    tracks.iter().all(|t| *t == first).then_some(first)
}

/// D4: Cylinders × Heads × Sectors = Disk_size again. After a size change, the geometry
/// `create --bundle` and Parallels Desktop write (16 heads, 32 sectors); otherwise two of the
/// three values are kept and the third computed, where one is whole.
fn fix_geometry(d: &mut Descriptor, size_changed: bool) -> Option<Vec<BundleRepairAction>> {
    let p = &d.disk;
    let n = p.disk_size;
    let (c, h, s) = (p.cylinders, p.heads, p.sectors);
    if u128::from(c) * u128::from(h) * u128::from(s) == u128::from(n) {
        return None;
    }
    let div = |a: u64, b: u64| {
        a.checked_mul(b)
            .filter(|&m| m != 0 && n.is_multiple_of(m))
            .map(|m| n / m)
    };
    let canonical = match Bytes(n).exact_sectors() {
        Some(k) => (k.get(), 16, 32),
        None => (n, 1, 1),
    };
    let to = if size_changed {
        canonical
    } else if let Some(c2) = div(h, s) {
        (c2, h, s)
    } else if let Some(h2) = div(c, s) {
        (c, h2, s)
    } else if let Some(s2) = div(c, h) {
        (c, h, s2)
    } else {
        canonical
    };
    let mut actions = Vec::new();
    for (name, from, to) in [("Cylinders", c, to.0), ("Heads", h, to.1), ("Sectors", s, to.2)] {
        if from != to {
            actions.push(set(BundleRule::D4, &format!("Disk_Parameters/{name}"), from, to));
        }
    }
    (d.disk.cylinders, d.disk.heads, d.disk.sectors) = to;
    Some(actions)
}

/// Each expanding image's repair plan at `level` (only those with something to do).
fn plan_images(b: &Bundle, level: RepairLevel) -> std::result::Result<Vec<ImageRepair>, BundleRepairError> {
    let mut out = Vec::new();
    for (si, s) in b.descriptor().storages.iter().enumerate() {
        for (ii, im) in s.images.iter().enumerate() {
            if im.kind != ImageType::Compressed {
                continue;
            }
            let path = b.image_path(si, ii)?;
            let image_err = |source: Error| BundleRepairError::Image {
                path: path.clone(),
                source,
            };
            let source = FileSource::open(&path).map_err(|e| image_err(e.into()))?;
            let plan = plan_repair(&source, level).map_err(image_err)?;
            if !plan.is_empty() {
                out.push(ImageRepair {
                    storage: si,
                    image: ii,
                    file: im.file.clone(),
                    path,
                    plan,
                });
            }
        }
    }
    Ok(out)
}

impl BundleRepairPlan {
    /// Whether the plan does nothing (a clean bundle, or nothing `level` may repair).
    pub fn is_empty(&self) -> bool {
        self.descriptor.is_none() && self.marker.is_none() && self.images.is_empty()
    }

    /// The repaired descriptor's text, if the descriptor changes.
    pub fn descriptor_xml(&self) -> Option<&str> {
        self.descriptor.as_deref()
    }

    /// Guest ranges lost by the images' plans, per image file as the descriptor names it.
    pub fn lost_guest(&self) -> Vec<(String, Vec<(u64, u64)>)> {
        self.images
            .iter()
            .map(|i| (i.file.clone(), i.plan.lost_guest()))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    }

    /// Writes the repaired bundle as the new folder `out` (aside, then renamed into place; an
    /// existing one is replaced only with `overwrite`): every regular file of the bundle's
    /// folder, the repaired images written from their plans, the marker named like `out`, the
    /// repaired descriptor. Writes nothing for an empty plan.
    pub fn write_to(&self, out: &Path, overwrite: bool) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let old_marker = Bundle::from_descriptor(&self.dir, Descriptor::default()).marker_name();
        let new_marker = Bundle::from_descriptor(out, Descriptor::default()).marker_name();
        write_bundle_dir(out, overwrite, |tmp| {
            for entry in fs::read_dir(&self.dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let target = match (&old_marker, &new_marker) {
                    (Some(old), Some(new)) if *old == name => tmp.join(new),
                    _ => tmp.join(&name),
                };
                if name == DESCRIPTOR_NAME && self.descriptor.is_some() {
                    continue;
                }
                let same = |p: &Path| fs::canonicalize(p).ok() == fs::canonicalize(entry.path()).ok();
                match self.images.iter().find(|i| same(&i.path)) {
                    Some(i) => {
                        let source = FileSource::open(&i.path)?;
                        let mut f = File::create_new(&target)?;
                        i.plan.write(&source, &mut f)?;
                    }
                    None => copy_data(&entry.path(), &target)?,
                }
            }
            if let Some(xml) = &self.descriptor {
                fs::write(tmp.join(DESCRIPTOR_NAME), xml)?;
            }
            if let Some(new) = &new_marker {
                if !tmp.join(new).exists() {
                    File::create_new(tmp.join(new))?;
                }
            }
            Ok(())
        })
    }

    /// Repairs the bundle where it is: each repaired image, then `DiskDescriptor.xml`, written
    /// aside, flushed and renamed over (their permissions kept); the marker created if missing.
    /// Writes nothing for an empty plan.
    pub fn write_in_place(&self) -> Result<()> {
        for i in &self.images {
            let source = FileSource::open(&i.path)?;
            let options = OutputOptions {
                overwrite: true,
                follow_symlink: false,
                mode: mode_of(&i.path),
            };
            write_atomically(&i.path, &options, |f| i.plan.write(&source, f))?;
        }
        if let Some(xml) = &self.descriptor {
            let path = self.dir.join(DESCRIPTOR_NAME);
            let options = OutputOptions {
                overwrite: true,
                follow_symlink: false,
                mode: mode_of(&path),
            };
            write_atomically(&path, &options, |f| Ok(io::Write::write_all(f, xml.as_bytes())?))?;
        }
        if let Some(name) = &self.marker {
            match File::create_new(self.dir.join(name)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A file's permission bits (Unix), to keep them.
#[cfg(unix)]
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.mode() & 0o7777)
}

#[cfg(not(unix))]
fn mode_of(_: &Path) -> Option<u32> {
    None
}

/// Copies the file `from` to the new file `to`: only its data ranges are read and written (its
/// holes stay holes), its length kept.
fn copy_data(from: &Path, to: &Path) -> io::Result<()> {
    use super::pio::PositionedIo;
    const PIECE: u64 = 1 << 20;
    let src = File::open(from)?;
    let dst = File::create_new(to)?;
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; PIECE.min(len) as usize];
    for (start, length) in super::file_data_ranges(&src)? {
        let end = (start + length).min(len);
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(PIECE) as usize;
            src.read_exact_at(&mut buf[..n], pos)?;
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    dst.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_paths_name_their_elements() {
        let mut d = Descriptor::default();
        d.snapshots.top_guid = Some("x".into());
        assert_eq!(
            guid_slot(&mut d, "Snapshots/TopGUID").map(|s| s.clone()),
            Some("x".into())
        );
        assert!(guid_slot(&mut d, "Snapshots/Shot[0]/GUID").is_none());
        assert_eq!(shot_index("Snapshots/Shot[12]/GUID"), Some(12));
        assert_eq!(shot_index("Snapshots/Shot[x]/GUID"), None);
    }

    #[test]
    fn geometry_keeps_two_values_where_it_can() {
        let mut d = Descriptor::default();
        d.disk.disk_size = 8192;
        (d.disk.cylinders, d.disk.heads, d.disk.sectors) = (16, 17, 32);
        let a = fix_geometry(&mut d, false).unwrap();
        assert_eq!((d.disk.cylinders, d.disk.heads, d.disk.sectors), (16, 16, 32));
        assert_eq!(a, vec![set(BundleRule::D4, "Disk_Parameters/Heads", 17, 16)]);
        assert!(fix_geometry(&mut d, false).is_none());
        d.disk.disk_size = 8191;
        fix_geometry(&mut d, true).unwrap();
        assert_eq!((d.disk.cylinders, d.disk.heads, d.disk.sectors), (8191, 1, 1));
    }
}
