//! Descriptor defects: a copy of a valid bundle with one `D` rule broken, to test validators
//! and readers (`prlimg corrupt BUNDLE OUT --defect NAME`). One variant per defect, each
//! knowing its rule; the dispatch is exhaustive.

use super::pio::PositionedIo;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use uuid::Uuid;

use super::descriptor::{format_guid, Descriptor, Guids, ImageType, NULL_GUID};
use super::rule::BundleRule;
use super::write::write_bundle_dir;
use super::{Bundle, DESCRIPTOR_NAME};
use crate::error::{BuildError, Error, Result};
use crate::raw::{Bytes, Sectors};

/// A GUID no bundle uses, for defects that need a fresh one.
const STRAY_GUID: Uuid = Uuid::from_u128(0x0bad0bad_0bad_4bad_8bad_0bad0bad0bad);

macro_rules! defects {
    ($($defect:ident $name:literal $rule:ident $summary:literal;)*) => {
        /// A defect of a bundle's descriptor or folder.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum BundleDefect {
            $(
                #[doc = concat!($summary, " (", stringify!($rule), ")")]
                $defect,
            )*
        }

        impl BundleDefect {
            /// Every defect.
            pub const ALL: &'static [BundleDefect] = &[$(BundleDefect::$defect),*];

            /// Its name for `prlimg corrupt --defect`.
            pub const fn name(self) -> &'static str {
                match self { $(BundleDefect::$defect => $name,)* }
            }

            /// The rule it breaks.
            pub const fn rule(self) -> BundleRule {
                match self { $(BundleDefect::$defect => BundleRule::$rule,)* }
            }

            /// What it does.
            pub const fn summary(self) -> &'static str {
                match self { $(BundleDefect::$defect => $summary,)* }
            }
        }
    };
}

defects! {
    NotXml "descriptor-not-xml" D1 "cut the descriptor in half";
    MissingElement "descriptor-missing-sectors" D2 "remove Disk_Parameters/Sectors";
    BadVersion "descriptor-bad-version" D3 "Version=\"2.0\"";
    GeometryMismatch "geometry-mismatch" D4 "Heads one more than the size allows";
    Padding "padding-nonzero" D5 "Padding 1";
    StorageGap "storage-gap" D6 "a storage starts one block after the previous one ends";
    SizeMismatch "size-mismatch" D7 "Disk_size one block more than the storages cover";
    WrongBlocksize "wrong-blocksize" D8 "Blocksize twice the images' cluster size";
    ImageTooSmall "image-too-small" D9 "the last storage and the disk one block larger than the images";
    PlainSizeMismatch "plain-size-mismatch" D10 "a Plain file one sector short";
    MissingFile "missing-file" D11 "delete the top image of the first storage";
    SharedFile "shared-file" D12 "two images name the same file";
    FileOutside "file-outside" D13 "an image's File goes up out of the bundle";
    BadGuid "bad-guid" D14 "TopGUID without its braces";
    DuplicateGuid "duplicate-guid" D15 "the top Shot twice";
    MissingImage "missing-image" D16 "the top snapshot has no image in the last storage";
    TwoRoots "two-roots" D17 "a second Shot with the null parent";
    MissingParent "missing-parent" D18 "the top's ParentGUID names no Shot";
    ParentCycle "parent-cycle" D19 "two snapshots are each other's parent";
    MissingTop "missing-top" D20 "TopGUID names no Shot";
    PlainOverlay "plain-overlay" D21 "the top (not the root) stored as Plain";
    MissingMarker "missing-marker" D22 "delete the marker file";
}

impl BundleDefect {
    /// The defect with this name.
    pub fn from_name(name: &str) -> Option<BundleDefect> {
        BundleDefect::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Copies the bundle `source` (every regular file of its folder, holes kept) to the new
    /// folder `out` with this defect; the source is not changed. `out` is built beside its
    /// final name and renamed; an existing one is replaced only with `overwrite`.
    pub fn apply(self, source: &Bundle, out: &Path, overwrite: bool) -> Result<()> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Build(BuildError::NotAFolder {
                    path: out.to_path_buf(),
                })
            })?;
        let old_marker = source.marker_name();
        let mut d = source.descriptor().clone();
        let unreadable = |_| {
            Error::Build(BuildError::DefectNeeds {
                defect: self.name(),
                needs: "a readable snapshot chain (check it first)",
            })
        };
        let top = source.top().map_err(unreadable)?;
        let chain = source.chain(None).map_err(unreadable)?;
        let plan = self.plan(&mut d, source.guids(), top, &chain)?;
        write_bundle_dir(out, overwrite, |tmp| {
            for entry in fs::read_dir(source.dir())? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                let file = entry.file_name().to_string_lossy().into_owned();
                // The marker is renamed like the new folder.
                let target = if Some(&file) == old_marker.as_ref() {
                    name.clone()
                } else {
                    file
                };
                copy_sparse(&entry.path(), &tmp.join(target))?;
            }
            let mut xml = d.to_xml();
            match plan {
                Plan::Descriptor => {}
                Plan::CutXml => xml.truncate(xml.len() / 2),
                Plan::DropSectors => xml = xml.replacen(&format!("<Sectors>{}</Sectors>", d.disk.sectors), "", 1),
                Plan::Remove(ref file) => fs::remove_file(tmp.join(file))?,
                Plan::Shorten(ref file) => {
                    let f = fs::OpenOptions::new().write(true).open(tmp.join(file))?;
                    let len = f.metadata()?.len();
                    f.set_len(len.saturating_sub(Sectors::SIZE.get()))?;
                }
                Plan::RemoveMarker => fs::remove_file(tmp.join(&name))?,
            }
            fs::write(tmp.join(DESCRIPTOR_NAME), xml)?;
            Ok(())
        })
    }

    /// Edits the descriptor (whose GUIDs as read are `g`) and says what else to do to the copy.
    fn plan(self, d: &mut Descriptor, g: &Guids, top: Uuid, chain: &[Uuid]) -> Result<Plan> {
        let last = d.storages.len() - 1;
        let top_shot = g
            .shot_of(top)
            .ok_or_else(|| self.needs("a top snapshot that is a Shot"))?;
        Ok(match self {
            BundleDefect::NotXml => Plan::CutXml,
            BundleDefect::MissingElement => Plan::DropSectors,
            BundleDefect::BadVersion => {
                d.version = Some("2.0".into());
                Plan::Descriptor
            }
            BundleDefect::GeometryMismatch => {
                d.disk.heads += 1;
                Plan::Descriptor
            }
            BundleDefect::Padding => {
                d.disk.padding = Some(1);
                Plan::Descriptor
            }
            BundleDefect::StorageGap => self.storage_gap(d)?,
            BundleDefect::SizeMismatch => {
                d.disk.disk_size += d.storages[last].blocksize.max(1);
                set_geometry(d);
                Plan::Descriptor
            }
            BundleDefect::WrongBlocksize => self.wrong_blocksize(d)?,
            BundleDefect::ImageTooSmall => self.image_too_small(d)?,
            BundleDefect::PlainSizeMismatch => self.plain_size_mismatch(d)?,
            BundleDefect::MissingFile => {
                let k = g
                    .image_of(0, top)
                    .ok_or_else(|| self.needs("an image of the top in the first storage"))?;
                Plan::Remove(d.storages[0].images[k].file.clone())
            }
            BundleDefect::SharedFile => self.shared_file(d, g, chain)?,
            BundleDefect::FileOutside => {
                let f = &mut d.storages[0].images[0].file;
                *f = format!("../{f}");
                Plan::Descriptor
            }
            BundleDefect::BadGuid => {
                d.snapshots.top_guid = Some(top.hyphenated().to_string());
                Plan::Descriptor
            }
            BundleDefect::DuplicateGuid => {
                let s = d.snapshots.shots[top_shot].clone();
                d.snapshots.shots.push(s);
                Plan::Descriptor
            }
            BundleDefect::MissingImage => {
                let k = g
                    .image_of(last, top)
                    .ok_or_else(|| self.needs("an image of the top in every storage"))?;
                let im = d.storages[last].images.remove(k);
                Plan::Remove(im.file)
            }
            BundleDefect::TwoRoots => {
                self.need(chain.len() >= 2, "two snapshots")?;
                d.snapshots.shots[top_shot].parent = format_guid(NULL_GUID);
                Plan::Descriptor
            }
            BundleDefect::MissingParent => {
                self.need(chain.len() >= 2, "two snapshots")?;
                d.snapshots.shots[top_shot].parent = format_guid(STRAY_GUID);
                Plan::Descriptor
            }
            BundleDefect::ParentCycle => self.parent_cycle(d, g, top, chain)?,
            BundleDefect::MissingTop => {
                d.snapshots.top_guid = Some(format_guid(STRAY_GUID));
                Plan::Descriptor
            }
            BundleDefect::PlainOverlay => self.plain_overlay(d, g, top, chain)?,
            BundleDefect::MissingMarker => Plan::RemoveMarker,
        })
    }

    /// The error saying this defect needs `what` of the source bundle.
    fn needs(self, what: &'static str) -> Error {
        Error::Build(BuildError::DefectNeeds {
            defect: self.name(),
            needs: what,
        })
    }

    /// `Ok` when the source bundle has what this defect needs (`ok`), else the error.
    fn need(self, ok: bool, what: &'static str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.needs(what))
        }
    }

    /// D6: the second storage starts one block after the first ends.
    fn storage_gap(self, d: &mut Descriptor) -> Result<Plan> {
        self.need(d.storages.len() >= 2, "two storages (a split disk)")?;
        d.storages[1].start += d.storages[1].blocksize.max(1);
        self.need(
            d.storages[1].start < d.storages[1].end,
            "a second storage longer than a block",
        )?;
        Ok(Plan::Descriptor)
    }

    /// D8: every storage's block size doubled.
    fn wrong_blocksize(self, d: &mut Descriptor) -> Result<Plan> {
        for s in &mut d.storages {
            s.blocksize *= 2;
        }
        self.need(
            d.storages
                .iter()
                .any(|s| s.images.iter().any(|im| im.kind == ImageType::Compressed)),
            "an expanding image",
        )?;
        Ok(Plan::Descriptor)
    }

    /// D9: the last storage and the disk one block larger than the images.
    fn image_too_small(self, d: &mut Descriptor) -> Result<Plan> {
        let last = d.storages.len() - 1;
        let images = &d.storages[last].images;
        self.need(
            images.iter().any(|im| im.kind == ImageType::Compressed),
            "an expanding image in the last storage",
        )?;
        self.need(
            images.iter().all(|im| im.kind == ImageType::Compressed),
            "no Plain image in the last storage",
        )?;
        let grow = d.storages[last].blocksize.max(1);
        d.storages[last].end += grow;
        d.disk.disk_size += grow;
        set_geometry(d);
        Ok(Plan::Descriptor)
    }

    /// D10: the first Plain file one sector short.
    fn plain_size_mismatch(self, d: &Descriptor) -> Result<Plan> {
        let file = d
            .storages
            .iter()
            .flat_map(|s| &s.images)
            .find(|im| im.kind == ImageType::Plain)
            .map(|im| im.file.clone());
        self.need(file.is_some(), "a Plain image")?;
        Ok(Plan::Shorten(file.expect("checked")))
    }

    /// D12: the top's image and its parent's, in the first storage, name the same file.
    fn shared_file(self, d: &mut Descriptor, g: &Guids, chain: &[Uuid]) -> Result<Plan> {
        self.need(chain.len() >= 2, "two snapshots")?;
        let a = g
            .image_of(0, chain[0])
            .ok_or_else(|| self.needs("an image of the top in every storage"))?;
        let b = g
            .image_of(0, chain[1])
            .ok_or_else(|| self.needs("an image of the top's parent in the first storage"))?;
        let file = d.storages[0].images[a].file.clone();
        let gone = std::mem::replace(&mut d.storages[0].images[b].file, file.clone());
        d.storages[0].images[a].file = file;
        Ok(Plan::Remove(gone))
    }

    /// D19: the top's parent takes the top as its parent: a cycle of two above the root.
    fn parent_cycle(self, d: &mut Descriptor, g: &Guids, top: Uuid, chain: &[Uuid]) -> Result<Plan> {
        self.need(chain.len() >= 3, "three snapshots in the top's chain")?;
        let p = g.shot_of(chain[1]).expect("the chain is made of Shots");
        d.snapshots.shots[p].parent = format_guid(top);
        Ok(Plan::Descriptor)
    }

    /// D21: the top's images (not the root's) stored as Plain.
    fn plain_overlay(self, d: &mut Descriptor, g: &Guids, top: Uuid, chain: &[Uuid]) -> Result<Plan> {
        self.need(chain.len() >= 2, "two snapshots")?;
        for s in 0..d.storages.len() {
            if let Some(k) = g.image_of(s, top) {
                d.storages[s].images[k].kind = ImageType::Plain;
            }
        }
        Ok(Plan::Descriptor)
    }
}

/// What a defect does besides editing the descriptor model.
enum Plan {
    Descriptor,
    CutXml,
    DropSectors,
    Remove(String),
    Shorten(String),
    RemoveMarker,
}

/// Cylinders × Heads × Sectors = Disk_size again after the size changed.
fn set_geometry(d: &mut Descriptor) {
    let n = d.disk.disk_size;
    (d.disk.cylinders, d.disk.heads, d.disk.sectors) = if let Some(sectors) = Bytes(n).exact_sectors() {
        (sectors.get(), 16, 32)
    } else {
        (n, 1, 1)
    };
}

/// Copies a file, leaving blocks of zeros as holes.
fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    const BLOCK: usize = 1 << 20;
    let src = File::open(from)?;
    let dst = File::create(to)?;
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(BLOCK as u64) as usize;
        src.read_exact_at(&mut buf[..n], pos)?;
        if crate::raw::first_nonzero(&buf[..n]).is_some() {
            dst.write_all_at(&buf[..n], pos)?;
        }
        pos += n as u64;
    }
    dst.set_len(len)
}
