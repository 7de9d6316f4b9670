//! `prlimg info` and `prlimg check` on a bundle (a folder or its `DiskDescriptor.xml`): the
//! descriptor, every `D` rule, and each image's header and `R` rules, findings naming the file.

use std::path::Path;

use parallels_image::report::{check_bundle, severity_tag, BundleCheck};
use parallels_image::{bundle::Bundle, bundle::ImageType, bundle::Resolved, FileSource, Image, Mode};
use serde::Serialize;

use crate::convert::bundle_failure;
use crate::info::{gather, Info};
use crate::outln;
use crate::output::{emit, human_bytes, print_json, Failure, Format};
use crate::Outcome;

#[derive(Serialize, Debug)]
struct ImageInfo {
    guid: String,
    #[serde(rename = "type")]
    kind: ImageType,
    file: String,
    /// The path read, or null when it leaves the bundle.
    path: Option<String>,
    /// The image's header and allocation (Compressed images that parse), else null.
    info: Option<Info>,
}

#[derive(Serialize, Debug)]
struct StorageInfo {
    start: u64,
    end: u64,
    blocksize: u64,
    images: Vec<ImageInfo>,
}

#[derive(Serialize, Debug)]
struct ShotInfo {
    guid: String,
    parent: String,
}

#[derive(Serialize, Debug)]
struct BundleInfo {
    schema: u32,
    filename: String,
    format: &'static str,
    /// Bytes.
    virtual_size: u64,
    disk_size_sectors: u64,
    cylinders: u64,
    heads: u64,
    sectors: u64,
    top: Option<String>,
    storages: Vec<StorageInfo>,
    snapshots: Vec<ShotInfo>,
}

pub fn info(path: &Path, output: Format) -> Outcome {
    let bundle = Bundle::open(path).map_err(|e| bundle_failure(&e))?;
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
                        Resolved::Inside(p) => Some(p),
                        Resolved::Outside(_) => None,
                    };
                    let info = match (&resolved, im.kind) {
                        (Some(p), ImageType::Compressed) => FileSource::open(p).ok().and_then(|src| {
                            Image::parse_compact(&src, Mode::Strict)
                                .ok()
                                .map(|image| gather(&image, p.display().to_string(), crate::info::allocated_size(p)))
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
    let top = bundle.top().ok().map(parallels_image::bundle::format_guid);
    let report = BundleInfo {
        schema: parallels_image::JSON_SCHEMA,
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
    };
    match output {
        Format::Html => {
            return Err(crate::output::Failure::plain(
                "--output html is for `prlimg check` of an image",
            ))
        }
        Format::Json => print_json(&report)?,
        Format::Human => {
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
            emit(&out)?;
        }
    }
    Ok(0)
}

/// Checks the bundle at `path` (a folder or its descriptor): the `D` rules and every image's `R` rules.
pub fn check_report(path: &Path, lenient: bool) -> Result<BundleCheck, Failure> {
    let mode = if lenient { Mode::Lenient } else { Mode::Strict };
    check_bundle(path, mode).map_err(|e| bundle_failure(&e))
}

/// `prlimg check` of one bundle: the report in `output`'s format on stdout, then its exit status.
pub fn print_check(report: &BundleCheck, output: Format) -> Outcome {
    let (corruptions, leaks) = (report.corruptions, report.leaks);
    match output {
        Format::Html => {
            return Err(crate::output::Failure::plain(
                "--output html is for `prlimg check` of an image",
            ))
        }
        Format::Json => print_json(report)?,
        Format::Human => {
            let mut out = String::new();
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
                let readers = crate::readers::Readers {
                    libphdi: (**libphdi).clone(),
                    dissect: (**dissect).clone(),
                };
                out.push_str(&readers.human());
            }
            emit(&out)?;
        }
    }
    Ok(report.exit_code())
}
