//! Bundle reports: `prlimg info` of a bundle (the descriptor, each image's header) and the
//! human rendering of `prlimg check` of a bundle ([`BundleCheck`]).

use std::io::{self, Write};
use std::path::Path;

use super::info::{allocated_size, gather, Info};
use super::readers::Readers;
use super::severity_tag;
use super::text::{human_bytes, line as outln};
use super::BundleCheck;
use crate::bundle::{format_guid, Bundle, ImageType, ResolvedPath};
use crate::check::JSON_SCHEMA;
use crate::image::{Image, RuleMode};
use crate::source::FileSource;

/// One image of a storage, as the descriptor lists it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ImageInfo {
    /// Its GUID, as written.
    pub guid: String,
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    /// Plain or Compressed.
    pub kind: ImageType,
    /// Its file name, as written.
    pub file: String,
    /// The path read, or null when it leaves the bundle.
    pub path: Option<String>,
    /// The image's header and allocation (Compressed images that parse), else null.
    pub info: Option<Info>,
}

/// One storage (a range of the guest disk).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StorageInfo {
    /// First sector.
    pub start: u64,
    /// End sector.
    pub end: u64,
    /// Cluster size in sectors.
    pub blocksize: u64,
    /// Its images.
    pub images: Vec<ImageInfo>,
}

/// One snapshot.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShotInfo {
    /// Its GUID.
    pub guid: String,
    /// Its parent's GUID.
    pub parent: String,
}

/// `prlimg info` of a bundle.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BundleInfo {
    /// The JSON layout's version.
    pub schema: u32,
    /// The path as given.
    pub filename: String,
    /// Always `"parallels-bundle"`.
    pub format: &'static str,
    /// Bytes.
    pub virtual_size: u64,
    /// The descriptor's disk size in sectors.
    pub disk_size_sectors: u64,
    /// Geometry: cylinders.
    pub cylinders: u64,
    /// Geometry: heads.
    pub heads: u64,
    /// Geometry: sectors per track.
    pub sectors: u64,
    /// The top snapshot, or null when TopGUID is invalid.
    pub top: Option<String>,
    /// The storages.
    pub storages: Vec<StorageInfo>,
    /// The snapshots.
    pub snapshots: Vec<ShotInfo>,
}

impl BundleInfo {
    /// `prlimg info` of the opened `bundle`, named `path`: the descriptor, and each Compressed
    /// image's header and allocation when it parses.
    pub fn of(bundle: &Bundle, path: &Path) -> BundleInfo {
        let d = bundle.descriptor();
        let storages = d
            .storages
            .iter()
            .map(|s| StorageInfo {
                start: s.start,
                end: s.end,
                blocksize: s.blocksize,
                images: s
                    .images
                    .iter()
                    .map(|im| {
                        let resolved = match bundle.resolve(&im.file) {
                            ResolvedPath::Inside(p) => Some(p),
                            ResolvedPath::Outside(_) => None,
                        };
                        let info = match (&resolved, im.kind) {
                            (Some(p), ImageType::Compressed) => FileSource::open(p).ok().and_then(|src| {
                                Image::parse_compact(&src, RuleMode::Strict)
                                    .ok()
                                    .map(|image| gather(&image, p.display().to_string(), allocated_size(p)))
                            }),
                            _ => None,
                        };
                        ImageInfo {
                            guid: im.guid.clone(),
                            kind: im.kind,
                            file: im.file.clone(),
                            path: resolved.map(|p| p.display().to_string()),
                            info,
                        }
                    })
                    .collect(),
            })
            .collect();
        let top = bundle.top().ok().map(format_guid);
        BundleInfo {
            schema: JSON_SCHEMA,
            filename: path.display().to_string(),
            format: "parallels-bundle",
            virtual_size: bundle.disk_size(),
            disk_size_sectors: d.disk.disk_size,
            cylinders: d.disk.cylinders,
            heads: d.disk.heads,
            sectors: d.disk.sectors,
            top,
            storages,
            snapshots: d
                .snapshots
                .shots
                .iter()
                .map(|s| ShotInfo {
                    guid: s.guid.clone(),
                    parent: s.parent.clone(),
                })
                .collect(),
        }
    }

    /// The JSON report, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// The descriptor and each image in lines for people.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        let report = self;
        let mut out = String::new();
        outln!(out, "bundle: {}", report.filename);
        outln!(out, "file format: parallels bundle (DiskDescriptor.xml)");
        outln!(
            out,
            "virtual size: {} bytes ({})",
            report.virtual_size,
            human_bytes(report.virtual_size)
        );
        outln!(
            out,
            "geometry: {} cylinders x {} heads x {} sectors = {} sectors",
            report.cylinders,
            report.heads,
            report.sectors,
            report.disk_size_sectors
        );
        outln!(
            out,
            "top snapshot: {}",
            report.top.as_deref().unwrap_or("(invalid TopGUID)")
        );
        outln!(out, "snapshots:");
        for s in &report.snapshots {
            outln!(out, "    {} parent {}", s.guid, s.parent);
        }
        for (i, s) in report.storages.iter().enumerate() {
            outln!(
                out,
                "storage {i}: sectors {}..{}, block size {} sectors",
                s.start,
                s.end,
                s.blocksize
            );
            for im in &s.images {
                let detail = match &im.info {
                    Some(i) => format!(
                        ", {} clusters of {}, {} allocated",
                        i.header.bat_entries,
                        human_bytes(i.header.cluster_size()),
                        i.allocated_clusters
                    ),
                    None => String::new(),
                };
                outln!(out, "    {} {} {}{detail}", im.guid, im.kind, im.file);
            }
        }
        w.write_all(out.as_bytes())
    }
}

impl BundleCheck {
    /// The headline (one sentence per other program: QEMU 10, libphdi, dissect.hypervisor),
    /// the findings (each naming its file), their counts and the readers' lines.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        let report = self;
        let (corruptions, leaks) = (report.corruptions, report.leaks);
        let mut out = self.headline();
        for f in &report.findings {
            let tag = severity_tag(f.severity);
            match (&f.file, &f.location) {
                (Some(file), Some(loc)) => outln!(out, "{tag} {} in {file} at {loc}: {}", f.code, f.message),
                _ => outln!(out, "{tag} {} in DiskDescriptor.xml: {}", f.code, f.message),
            }
        }
        if corruptions > 0 {
            outln!(
                out,
                "\n{corruptions} {} found in the bundle.",
                if corruptions == 1 { "error was" } else { "errors were" }
            );
        }
        if leaks > 0 {
            outln!(
                out,
                "\n{leaks} {} found in the bundle.",
                if leaks == 1 { "leak was" } else { "leaks were" }
            );
        }
        if corruptions == 0 && leaks == 0 {
            outln!(out, "No errors were found in the bundle.");
        }
        if report.non_canonical > 0 || report.notes > 0 {
            outln!(
                out,
                "{} non-canonical and {} notes (the bundle is still valid).",
                report.non_canonical,
                report.notes
            );
        }
        if let (Some(libphdi), Some(dissect)) = (&report.libphdi, &report.dissect) {
            let readers = Readers {
                libphdi: (**libphdi).clone(),
                dissect: (**dissect).clone(),
            };
            out.push_str(&readers.human());
        }
        w.write_all(out.as_bytes())
    }

    /// One sentence per other program (QEMU 10, then libphdi and dissect.hypervisor when
    /// predicted), then a blank line: the first lines of the human report.
    pub fn headline(&self) -> String {
        super::headline::bundle_headline(self)
    }

    /// The JSON report, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }
}
