//! [`Bundle::validate`]: every `D` rule of `spec/bundles.md`, and the `R` rules on each
//! expanding image, as one list of findings that say which file they belong to.

use std::collections::HashMap;
use std::path::PathBuf;

use uuid::Uuid;

use super::descriptor::{format_guid, Descriptor, Guids, ImageType, BACKUP_GUID, DEFAULT_TOP_GUID, NULL_GUID};
use super::violation::BundleViolation;
use super::{Bundle, BundleRule, ResolvedPath};
use crate::error::Error;
use crate::image::{Image, RuleMode};
use crate::raw::{Bytes, Sectors};
use crate::rule::Severity;
use crate::source::FileSource;
use crate::validate::{Finding, Verdict};

/// One finding in a bundle: a broken `D` rule of the descriptor, or a finding of the `R` rules
/// in one of its images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleFinding {
    /// The descriptor (or the folder) breaks a `D` rule.
    Descriptor(BundleViolation),
    /// An image breaks an `R` rule.
    Image {
        /// The image's file, as resolved.
        file: PathBuf,
        /// Its storage (descriptor order, from 0).
        storage: usize,
        /// Its image number in that storage.
        image: usize,
        /// The finding.
        finding: Finding,
    },
}

impl BundleFinding {
    /// How serious it is.
    pub fn severity(&self) -> Severity {
        match self {
            BundleFinding::Descriptor(v) => v.rule().severity(),
            BundleFinding::Image { finding, .. } => finding.severity,
        }
    }

    /// The rule's code: `"D7"` or `"R17"`.
    pub fn code(&self) -> &'static str {
        match self {
            BundleFinding::Descriptor(v) => v.rule().code(),
            BundleFinding::Image { finding, .. } => finding.violation.rule().code(),
        }
    }

    /// The `D` rule, for a descriptor finding.
    pub fn bundle_rule(&self) -> Option<BundleRule> {
        match self {
            BundleFinding::Descriptor(v) => Some(v.rule()),
            BundleFinding::Image { .. } => None,
        }
    }

    /// The image file, for an image finding.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            BundleFinding::Descriptor(_) => None,
            BundleFinding::Image { file, .. } => Some(file),
        }
    }

    /// The message: what was found, what was expected, where.
    pub fn message(&self) -> String {
        match self {
            BundleFinding::Descriptor(v) => v.to_string(),
            BundleFinding::Image { finding, .. } => {
                format!("at {}: {}", finding.violation.location(), finding.violation)
            }
        }
    }
}

/// Everything the bundle validator found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleReport {
    /// Descriptor findings first (in rule order as met), then each image's, in storage order.
    pub findings: Vec<BundleFinding>,
}

impl BundleReport {
    /// Findings of this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity() == severity).count()
    }

    /// What the findings amount to, in the categories and exit statuses of one image's check:
    /// corrupt if any finding is a corruption, else leaks if any is a leak, else clean.
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.findings.iter().map(BundleFinding::severity))
    }

    /// True when nothing is corrupt and nothing leaks.
    pub fn is_clean(&self) -> bool {
        self.count(Severity::Corruption) == 0 && self.count(Severity::Leak) == 0
    }

    /// The codes broken (`"D7"`, `"R17"`), in the order met, without repeats.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for f in &self.findings {
            if !out.contains(&f.code()) {
                out.push(f.code());
            }
        }
        out
    }

    /// The `D` rules broken, in the order met, without repeats.
    pub fn bundle_rules(&self) -> Vec<BundleRule> {
        let mut out = Vec::new();
        for r in self.findings.iter().filter_map(BundleFinding::bundle_rule) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }
}

pub(super) fn validate(bundle: &Bundle, mode: RuleMode) -> BundleReport {
    let d = bundle.descriptor();
    let mut out: Vec<BundleFinding> = Vec::new();
    let mut push = |v: BundleViolation| out.push(BundleFinding::Descriptor(v));
    disk_parameters(d, &mut push);
    let guids = bundle.guids();
    let shots = snapshots(d, guids, &mut push);
    let parent_of = snapshot_tree(d, guids, &shots, &mut push);
    let image_files = images(bundle, &shots, &parent_of, &mut push);
    // D22
    if let Some(name) = bundle.marker_name() {
        if !bundle.dir().join(&name).is_file() {
            push(BundleViolation::MissingMarker { name });
        }
    }
    let image_findings = image_rules(bundle, image_files, mode, &mut push);
    out.extend(image_findings);
    BundleReport { findings: out }
}

/// D3 to D8: the version, the geometry, the padding and the storages' tiling.
fn disk_parameters(d: &Descriptor, push: &mut impl FnMut(BundleViolation)) {
    // D3
    if d.version.as_deref() != Some(super::descriptor::VERSION) {
        push(BundleViolation::BadVersion {
            found: d.version.clone(),
        });
    }
    // D4
    let p = &d.disk;
    let product = u128::from(p.cylinders) * u128::from(p.heads) * u128::from(p.sectors);
    if product != u128::from(p.disk_size) {
        push(BundleViolation::GeometryMismatch {
            cylinders: p.cylinders,
            heads: p.heads,
            sectors: p.sectors,
            product,
            disk_size: p.disk_size,
        });
    }
    // D5
    if let Some(found) = p.padding.filter(|&x| x != 0) {
        push(BundleViolation::Padding { found });
    }
    // D6, D7: in descriptor order, which is the disk's order.
    let mut expected = 0u64;
    for (i, s) in d.storages.iter().enumerate() {
        if s.start != expected {
            push(BundleViolation::StorageNotContiguous {
                storage: i,
                start: s.start,
                expected,
            });
        }
        if s.start >= s.end {
            push(BundleViolation::EmptyStorage {
                storage: i,
                start: s.start,
                end: s.end,
            });
        }
        expected = s.end;
    }
    if expected != p.disk_size {
        push(BundleViolation::StoragesEnd {
            end: expected,
            disk_size: p.disk_size,
        });
    }
    // D8 (a zero Blocksize; the images' tracks are compared below)
    for (i, s) in d.storages.iter().enumerate() {
        if s.blocksize == 0 {
            push(BundleViolation::ZeroBlocksize { storage: i });
        }
    }
}

/// A snapshot's GUID and its parent's (`None` where the parent is not a GUID).
type Shot = (Uuid, Option<Uuid>);

/// D14, D15 on the snapshots: their GUIDs read, each snapshot once.
fn snapshots(d: &Descriptor, guids: &Guids, push: &mut impl FnMut(BundleViolation)) -> Vec<Shot> {
    // D14, D15 on snapshots
    let mut shots: Vec<Shot> = Vec::new();
    let mut seen: HashMap<Uuid, String> = HashMap::new();
    for (i, (s, &(g, parent))) in d.snapshots.shots.iter().zip(&guids.shots).enumerate() {
        let path = format!("Snapshots/Shot[{i}]/GUID");
        if g.is_none() {
            push(BundleViolation::BadGuid {
                path: path.clone(),
                found: s.guid.clone(),
            });
        }
        if parent.is_none() {
            push(BundleViolation::BadGuid {
                path: format!("Snapshots/Shot[{i}]/ParentGUID"),
                found: s.parent.clone(),
            });
        }
        if let Some(g) = g {
            if let Some(first) = seen.get(&g) {
                push(BundleViolation::DuplicateGuid {
                    path: path.clone(),
                    guid: format_guid(g),
                    first: first.clone(),
                });
            } else {
                seen.insert(g, path);
                shots.push((g, parent));
            }
        }
    }
    shots
}

/// D17 to D20: one root, every parent present, no cycle, a top that is a snapshot; the parent
/// of each snapshot.
fn snapshot_tree(
    d: &Descriptor,
    guids: &Guids,
    shots: &[Shot],
    push: &mut impl FnMut(BundleViolation),
) -> HashMap<Uuid, Option<Uuid>> {
    let top_guid = match (&d.snapshots.top_guid, guids.top) {
        (Some(t), Some(g)) => {
            if g.is_none() {
                push(BundleViolation::BadGuid {
                    path: "Snapshots/TopGUID".into(),
                    found: t.clone(),
                });
            }
            g
        }
        _ => Some(DEFAULT_TOP_GUID),
    };
    // D17
    let roots: Vec<String> = shots
        .iter()
        .filter(|(_, p)| *p == Some(NULL_GUID))
        .map(|(g, _)| format_guid(*g))
        .collect();
    if roots.len() != 1 {
        push(BundleViolation::RootCount { roots });
    }
    // D18
    let parent_of: HashMap<Uuid, Option<Uuid>> = shots.iter().copied().collect();
    for (g, p) in shots {
        if let Some(p) = p.filter(|p| *p != NULL_GUID) {
            if !parent_of.contains_key(&p) {
                push(BundleViolation::MissingParent {
                    shot: format_guid(*g),
                    parent: format_guid(p),
                });
            }
        }
    }
    // D19: each cycle once, named from its smallest member. Every snapshot is walked once:
    // a walk stops at a snapshot an earlier walk finished.
    let mut done: HashMap<Uuid, usize> = HashMap::new(); // snapshot -> walk that met it
    for (walk, (g, _)) in shots.iter().enumerate() {
        let mut path: Vec<Uuid> = Vec::new();
        let mut cur = *g;
        loop {
            if let Some(&w) = done.get(&cur) {
                if w == walk {
                    // Met again in this walk: a cycle from its first meeting.
                    let k = path.iter().position(|x| *x == cur).expect("met in this walk");
                    let members = &path[k..];
                    let least = *members.iter().min().expect("a cycle has members");
                    let at = members.iter().position(|x| *x == least).expect("least is a member");
                    let mut cycle: Vec<String> = members[at..]
                        .iter()
                        .chain(&members[..at])
                        .map(|x| format_guid(*x))
                        .collect();
                    cycle.push(format_guid(least));
                    push(BundleViolation::Cycle { cycle });
                }
                break;
            }
            done.insert(cur, walk);
            path.push(cur);
            match parent_of.get(&cur) {
                Some(Some(p)) if *p != NULL_GUID && parent_of.contains_key(p) => cur = *p,
                _ => break,
            }
        }
    }
    // D20
    if let Some(top) = top_guid {
        if top == BACKUP_GUID {
            push(BundleViolation::BackupTop);
        } else if !parent_of.contains_key(&top) {
            push(BundleViolation::MissingTop {
                top: format_guid(top),
                from_top_guid: d.snapshots.top_guid.is_some(),
            });
        }
    }

    parent_of
}

/// An image file to read: its storage, its number there, its path.
type ImageFile = (usize, usize, PathBuf);

/// D11 to D16 and D21 from the descriptor and the folder: each image's GUID, snapshot and file.
fn images(
    bundle: &Bundle,
    shots: &[Shot],
    parent_of: &HashMap<Uuid, Option<Uuid>>,
    push: &mut impl FnMut(BundleViolation),
) -> Vec<ImageFile> {
    let d = bundle.descriptor();
    // Images: D14, D15, D16, D21 from the descriptor; D11, D12, D13 from the folder.
    let mut files: HashMap<PathBuf, (usize, usize)> = HashMap::new();
    let mut image_files: Vec<ImageFile> = Vec::new();
    for (si, s) in d.storages.iter().enumerate() {
        let mut in_storage: HashMap<Uuid, String> = HashMap::new();
        for (ii, (im, &guid)) in s.images.iter().zip(&bundle.guids().images[si]).enumerate() {
            let path = format!("StorageData/Storage[{si}]/Image[{ii}]/GUID");
            match guid {
                None => push(BundleViolation::BadGuid {
                    path,
                    found: im.guid.clone(),
                }),
                Some(g) => {
                    if let Some(first) = in_storage.get(&g) {
                        push(BundleViolation::DuplicateGuid {
                            path,
                            guid: format_guid(g),
                            first: first.clone(),
                        });
                    } else {
                        in_storage.insert(g, path);
                        match parent_of.get(&g) {
                            None => push(BundleViolation::ImageWithoutSnapshot {
                                storage: si,
                                image: ii,
                                guid: format_guid(g),
                            }),
                            Some(parent) => {
                                if im.kind == ImageType::Plain && *parent != Some(NULL_GUID) {
                                    push(BundleViolation::PlainOverlay {
                                        storage: si,
                                        image: ii,
                                        guid: format_guid(g),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            let resolved = bundle.resolve(&im.file);
            let path = match resolved {
                ResolvedPath::Inside(p) => p,
                ResolvedPath::Outside(p) => {
                    push(BundleViolation::OutsideBundle {
                        storage: si,
                        image: ii,
                        file: im.file.clone(),
                    });
                    if !bundle.options().follow_outside {
                        continue;
                    }
                    p
                }
            };
            let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(&(fs, fi)) = files.get(&key) {
                push(BundleViolation::SharedFile {
                    storage: si,
                    image: ii,
                    file: im.file.clone(),
                    first_storage: fs,
                    first_image: fi,
                });
                continue;
            }
            files.insert(key, (si, ii));
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => image_files.push((si, ii, path)),
                Ok(_) => push(BundleViolation::MissingFile {
                    storage: si,
                    image: ii,
                    file: im.file.clone(),
                    reason: "not a regular file".into(),
                }),
                Err(e) => push(BundleViolation::MissingFile {
                    storage: si,
                    image: ii,
                    file: im.file.clone(),
                    reason: super::io_reason(&e),
                }),
            }
        }
        for (g, _) in shots {
            if !in_storage.contains_key(g) {
                push(BundleViolation::NoImageForSnapshot {
                    storage: si,
                    snapshot: format_guid(*g),
                });
            }
        }
    }
    image_files
}

/// Each file: D8, D9, D10 against its storage, then the R rules of an expanding image.
fn image_rules(
    bundle: &Bundle,
    image_files: Vec<ImageFile>,
    mode: RuleMode,
    push: &mut impl FnMut(BundleViolation),
) -> Vec<BundleFinding> {
    let d = bundle.descriptor();
    let mut image_findings = Vec::new();
    for (si, ii, path) in image_files {
        let s = &d.storages[si];
        let im = &s.images[ii];
        let source = match FileSource::open(&path) {
            Ok(src) => src,
            Err(e) => {
                push(BundleViolation::MissingFile {
                    storage: si,
                    image: ii,
                    file: im.file.clone(),
                    reason: super::io_reason(&e),
                });
                continue;
            }
        };
        let needed = s.end.saturating_sub(s.start);
        match im.kind {
            ImageType::Plain => {
                let len = crate::source::Source::size(&source);
                if len != Sectors(needed).saturating_bytes().get() {
                    push(BundleViolation::PlainSizeMismatch {
                        storage: si,
                        file: im.file.clone(),
                        len,
                        expected: Sectors(needed).saturating_bytes().get(),
                    });
                }
            }
            ImageType::Compressed => {
                let (found, header) = match Image::parse_compact(&source, mode) {
                    Ok(image) => {
                        let header = *image.header();
                        match crate::validate::validate(&image) {
                            Ok(report) => (report.findings.into_iter().map(Some).collect(), Some(header)),
                            Err(Error::Invalid(v)) => (vec![finding(v)], Some(header)),
                            Err(e) => (vec![io_finding(e, &im.file, si, ii, push)], Some(header)),
                        }
                    }
                    Err(Error::Invalid(v)) => (vec![finding(v)], None),
                    Err(e) => (vec![io_finding(e, &im.file, si, ii, push)], None),
                };
                if let Some(h) = header {
                    if s.blocksize != 0 && u64::from(h.raw.tracks.get()) != s.blocksize {
                        push(BundleViolation::BlocksizeMismatch {
                            storage: si,
                            file: im.file.clone(),
                            tracks: h.raw.tracks.get(),
                            blocksize: s.blocksize,
                        });
                    }
                    let nb = Bytes(h.virtual_size()).sectors_floor().get();
                    if nb < needed {
                        push(BundleViolation::ImageTooSmall {
                            storage: si,
                            file: im.file.clone(),
                            nb_sectors: nb,
                            needed,
                        });
                    }
                }
                image_findings.extend(found.into_iter().flatten().map(|finding| BundleFinding::Image {
                    file: path.clone(),
                    storage: si,
                    image: ii,
                    finding,
                }));
            }
        }
    }
    image_findings
}

fn finding(v: crate::error::Violation) -> Option<Finding> {
    let severity = v.severity();
    Some(Finding { violation: v, severity })
}

/// An image that could not be read at all is reported as a missing file (D11).
fn io_finding(
    e: Error,
    file: &str,
    storage: usize,
    image: usize,
    push: &mut impl FnMut(BundleViolation),
) -> Option<Finding> {
    push(BundleViolation::MissingFile {
        storage,
        image,
        file: file.to_string(),
        reason: match &e {
            Error::Io(io) => super::io_reason(io),
            other => other.to_string(),
        },
    });
    None
}
