//! `prlimg info` and `prlimg check` on a bundle (a folder or its `DiskDescriptor.xml`): the
//! descriptor, every `D` rule, and each image's header and `R` rules, findings naming the file.

use std::path::Path;

use parallels_image::{
    Bundle, BundleError, BundleFinding, BundleOptions, BundleReport, FileSource, Image, ImageType, Mode, Resolved,
    Severity,
};
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
    let top = bundle.top().ok().map(parallels_image::format_guid);
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

#[derive(Serialize, Debug)]
struct JsonBundleFinding {
    /// `"D7"` or `"R17"`.
    code: &'static str,
    severity: &'static str,
    /// The image file for an `R` finding, null for the descriptor.
    file: Option<String>,
    storage: Option<usize>,
    image: Option<usize>,
    /// The image location (`"BAT[3] @76"`) for an `R` finding, null for the descriptor.
    location: Option<String>,
    message: String,
}

/// `prlimg check` of one bundle, as `--output json` prints it.
#[derive(Serialize, Debug)]
pub struct BundleCheck {
    schema: u32,
    filename: String,
    format: &'static str,
    mode: &'static str,
    /// `"clean"`, `"corrupt"` or `"leaks"` (exit status 0, 2, 3).
    pub result: &'static str,
    corruptions: usize,
    leaks: usize,
    non_canonical: usize,
    notes: usize,
    /// Every rule broken, `D` and `R` codes, in the order first found.
    pub rules: Vec<&'static str>,
    findings: Vec<JsonBundleFinding>,
    #[serde(skip)]
    code: u8,
}

impl BundleCheck {
    /// Each finding's rule code and severity name, in the order found.
    pub fn severities(&self) -> Vec<(&'static str, &'static str)> {
        self.findings.iter().map(|f| (f.code, f.severity)).collect()
    }

    /// `prlimg check`'s exit status: 0 clean, 2 corrupt, 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

fn json_finding(f: &BundleFinding) -> JsonBundleFinding {
    match f {
        BundleFinding::Descriptor(v) => JsonBundleFinding {
            code: v.rule().code(),
            severity: v.rule().severity().name(),
            file: None,
            storage: None,
            image: None,
            location: None,
            message: v.to_string(),
        },
        BundleFinding::Image {
            file,
            storage,
            image,
            finding,
        } => JsonBundleFinding {
            code: finding.violation.rule().code(),
            severity: finding.severity.name(),
            file: Some(file.display().to_string()),
            storage: Some(*storage),
            image: Some(*image),
            location: Some(finding.violation.location().to_string()),
            message: finding.violation.to_string(),
        },
    }
}

/// Checks the bundle at `path` (a folder or its descriptor): the `D` rules and every image's `R` rules.
pub fn check_report(path: &Path, lenient: bool) -> Result<BundleCheck, Failure> {
    let mode = if lenient { Mode::Lenient } else { Mode::Strict };
    let report = match Bundle::open_with(path, BundleOptions::default()) {
        Ok(bundle) => bundle.validate_with(mode),
        Err(BundleError::Invalid { violation, .. }) => BundleReport {
            findings: vec![BundleFinding::Descriptor(violation)],
        },
        Err(e) => return Err(bundle_failure(&e)),
    };
    let verdict = report.verdict();
    Ok(BundleCheck {
        schema: parallels_image::JSON_SCHEMA,
        filename: path.display().to_string(),
        format: "parallels-bundle",
        mode: if lenient { "lenient" } else { "strict" },
        result: verdict.name(),
        corruptions: report.count(Severity::Corruption),
        leaks: report.count(Severity::Leak),
        non_canonical: report.count(Severity::NonCanonical),
        notes: report.count(Severity::Note),
        rules: report.codes(),
        findings: report.findings.iter().map(json_finding).collect(),
        code: verdict.exit_code(),
    })
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
                let tag = match f.severity {
                    "corruption" => "ERROR",
                    "leak" => "Leaked",
                    "non-canonical" => "Non-canonical",
                    _ => "Note",
                };
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
            emit(&out)?;
        }
    }
    Ok(report.code)
}
