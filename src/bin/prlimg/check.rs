//! `prlimg check`: every rule, with `qemu-img check`'s counters and exit statuses, and what
//! QEMU 10 and ploop would do with the image. Reads metadata only.

use std::path::PathBuf;

use parallels_image::qemu::{self, QemuCheck, QemuOutcome};
use parallels_image::{Error, FileSource, Finding, Image, Mode, Severity, Violation};
use serde::Serialize;

use crate::outln;
use crate::output::{emit, print_json, spinner, Failure, Format, JsonLocation};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image.
    image: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Treat unknown features and feature flags as notes (ploop's reading), not corruption.
    #[arg(long)]
    lenient: bool,
}

/// One finding in `check --output json`.
#[derive(Serialize, Debug)]
pub struct JsonFinding {
    /// Rule code, `"R1"` … `"R42"`.
    pub code: &'static str,
    /// `"corruption"`, `"leak"`, `"non-canonical"` or `"note"`.
    pub severity: &'static str,
    /// The location as text, e.g. `"BAT[3] @76"`.
    pub location: String,
    /// The location as an object: `kind` plus `field`/`offset`/`index`/`feature`.
    #[serde(rename = "where")]
    pub where_: JsonLocation,
    pub message: String,
}

/// What QEMU 10 does on a read-only open (`qemu-img info`).
#[derive(Serialize, Debug)]
pub struct JsonQemu {
    /// `"opens"`, `"rejects"`, `"aborts"` or `"undefined"` (QEMU reads past its buffer).
    pub outcome: &'static str,
    /// `qemu-img info`'s exit status (0, 1, 134), null when undefined.
    pub exit_code: Option<i32>,
    /// QEMU's message after `Could not open 'PATH': `, or the assertion; null when it opens.
    pub message: Option<String>,
    /// Bitmaps QEMU loads, in record order (empty unless it opens).
    pub bitmaps: Vec<String>,
}

/// What `qemu-img check -f parallels` does.
#[derive(Serialize, Debug)]
pub struct JsonQemuCheck {
    /// `"completes"`, `"open-fails"`, `"fails"` (device busy) or `"aborts"`.
    pub outcome: &'static str,
    /// Its exit status, null when unpredictable.
    pub exit_code: Option<i32>,
    /// Its counters when it completes, else null.
    pub corruptions: Option<u64>,
    pub leaks: Option<u64>,
    pub image_end_offset: Option<u64>,
}

/// `check --output json`.
#[derive(Serialize, Debug)]
pub struct Report {
    pub filename: String,
    pub format: &'static str,
    /// `"strict"` or `"lenient"`.
    pub mode: &'static str,
    /// `"clean"`, `"corrupt"` or `"leaks"` (exit status 0, 2, 3).
    pub result: &'static str,
    pub corruptions: usize,
    pub leaks: usize,
    pub leaked_bytes: u64,
    pub non_canonical: usize,
    pub notes: usize,
    /// Rule codes found, in order of first appearance, without repeats.
    pub rules: Vec<&'static str>,
    pub findings: Vec<JsonFinding>,
    /// Null when the header could not be interpreted.
    pub total_clusters: Option<u64>,
    pub allocated_clusters: Option<u64>,
    pub fragmented_clusters: Option<u64>,
    /// Bytes: the end of the last referenced cluster (where leaked space starts).
    pub image_end_offset: Option<u64>,
    pub file_size: u64,
    pub qemu: JsonQemu,
    pub qemu_check: JsonQemuCheck,
    /// Whether ploop loads the bitmaps; null when there is no extension to load.
    pub ploop_loads_bitmaps: Option<bool>,
}

struct Stats {
    total: u64,
    allocated: u64,
    fragmented: u64,
    end: u64,
}

/// Counts as `qemu-img check` does: clusters inside the image, and those that do not follow the
/// previous allocated one on disk.
fn statistics(image: &Image<'_>, end: u64) -> Stats {
    let (allocated, fragmented) = image.cluster_counts(end);
    Stats {
        total: u64::from(image.header().bat_entries),
        allocated,
        fragmented,
        end,
    }
}

fn json_finding(f: &Finding) -> JsonFinding {
    JsonFinding {
        code: f.violation.rule().code(),
        severity: f.severity.name(),
        location: f.violation.location().to_string(),
        where_: f.violation.location().into(),
        message: f.violation.to_string(),
    }
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    let source = FileSource::open(path).map_err(|e| Failure::io(path, &e))?;
    let mode = if args.lenient { Mode::Lenient } else { Mode::Strict };
    let busy = spinner("checking");
    // One parse serves the validator, the statistics and the QEMU prediction: the BAT is read
    // once, through a small buffer, keeping only its allocated entries.
    let (findings, stats, prediction) = match Image::parse_compact(&source, mode) {
        Ok(image) => {
            let report = image.validate().map_err(|e| Failure::lib(path, &e))?;
            let end = report
                .findings
                .iter()
                .find_map(|f| match f.violation {
                    Violation::Leak { offset, .. } => Some(offset),
                    _ => None,
                })
                .unwrap_or(image.file_len());
            let stats = statistics(&image, end);
            (report.findings, Some(stats), qemu::predict_image(&image))
        }
        Err(Error::Invalid(v)) => {
            let severity = v.severity();
            let prediction = qemu::predict(&source).map_err(|e| Failure::io(path, &e))?;
            (vec![Finding { violation: v, severity }], None, prediction)
        }
        Err(e) => return Err(Failure::lib(path, &e)),
    };
    busy.finish_and_clear();

    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let corruptions = count(Severity::Corruption);
    let leaks = count(Severity::Leak);
    let (result, code) = if corruptions > 0 {
        ("corrupt", 2)
    } else if leaks > 0 {
        ("leaks", 3)
    } else {
        ("clean", 0)
    };
    let mut rules = Vec::new();
    for f in &findings {
        if !rules.contains(&f.violation.rule().code()) {
            rules.push(f.violation.rule().code());
        }
    }
    let shown = path.display().to_string();
    let info = &prediction.info;
    let qemu = JsonQemu {
        outcome: info.kind(),
        exit_code: info.exit_code(),
        message: info.message(&shown).or_else(|| match info {
            QemuOutcome::Undefined { reason } => Some(reason.clone()),
            _ => None,
        }),
        bitmaps: match info {
            QemuOutcome::Opens { bitmaps } => bitmaps.clone(),
            _ => Vec::new(),
        },
    };
    let counts = match &prediction.check {
        QemuCheck::Completes(c) => Some(c),
        _ => None,
    };
    let qemu_check = JsonQemuCheck {
        outcome: match &prediction.check {
            QemuCheck::OpenFails(_) => "open-fails",
            QemuCheck::Completes(_) => "completes",
            QemuCheck::Fails => "fails",
            QemuCheck::Aborts { .. } => "aborts",
        },
        exit_code: prediction.check.exit_code(),
        corruptions: counts.map(|c| c.corruptions),
        leaks: counts.map(|c| c.leaks),
        image_end_offset: counts.map(|c| c.image_end_offset),
    };
    let report = Report {
        filename: path.display().to_string(),
        format: "parallels",
        mode: if args.lenient { "lenient" } else { "strict" },
        result,
        corruptions,
        leaks,
        leaked_bytes: findings
            .iter()
            .map(|f| match f.violation {
                Violation::Leak { len, .. } => len,
                _ => 0,
            })
            .sum(),
        non_canonical: count(Severity::NonCanonical),
        notes: count(Severity::Note),
        rules,
        findings: findings.iter().map(json_finding).collect(),
        total_clusters: stats.as_ref().map(|s| s.total),
        allocated_clusters: stats.as_ref().map(|s| s.allocated),
        fragmented_clusters: stats.as_ref().map(|s| s.fragmented),
        image_end_offset: stats.as_ref().map(|s| s.end),
        file_size: source_len(&source),
        qemu,
        qemu_check,
        ploop_loads_bitmaps: prediction.ploop_loads_bitmaps,
    };
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Human => emit(&print_human(&report))?,
    }
    Ok(code)
}

fn source_len(source: &FileSource) -> u64 {
    use parallels_image::Source;
    source.size()
}

fn tag(severity: &str) -> &'static str {
    match severity {
        "corruption" => "ERROR",
        "leak" => "Leaked",
        "non-canonical" => "Non-canonical",
        _ => "Note",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_human(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        outln!(out, "{} {} at {}: {}", tag(f.severity), f.code, f.location, f.message);
    }
    if r.corruptions > 0 {
        outln!(
            out,
            "\n{} found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
            plural(r.corruptions, "error was", "errors were")
        );
    }
    if r.leaks > 0 {
        outln!(
            out,
            "\n{} ({} bytes) {} found on the image.\nThis means waste of disk space, but no harm to data.",
            plural(r.leaks, "leak", "leaks"),
            r.leaked_bytes,
            if r.leaks == 1 { "was" } else { "were" }
        );
    }
    if r.corruptions == 0 && r.leaks == 0 {
        outln!(out, "No errors were found on the image.");
    }
    if r.non_canonical > 0 || r.notes > 0 {
        outln!(
            out,
            "{} and {} (the image is still valid).",
            plural(r.non_canonical, "non-canonical finding", "non-canonical findings"),
            plural(r.notes, "note", "notes")
        );
    }
    if let (Some(total), Some(alloc), Some(frag)) = (r.total_clusters, r.allocated_clusters, r.fragmented_clusters) {
        if total != 0 && alloc != 0 {
            outln!(
                out,
                "{alloc}/{total} = {:.2}% allocated, {:.2}% fragmented, 0.00% compressed clusters",
                alloc as f64 * 100.0 / total as f64,
                frag as f64 * 100.0 / alloc as f64
            );
        }
    }
    if let Some(end) = r.image_end_offset {
        outln!(out, "Image end offset: {end}");
    }
    let message = r.qemu.message.as_deref().unwrap_or("");
    match r.qemu.outcome {
        "opens" if r.qemu.bitmaps.is_empty() => outln!(out, "QEMU 10: opens the image"),
        "opens" => outln!(
            out,
            "QEMU 10: opens the image with bitmaps {}",
            r.qemu.bitmaps.join(", ")
        ),
        "rejects" => outln!(out, "QEMU 10: rejects the image: {message}"),
        "aborts" => outln!(out, "QEMU 10: aborts: {message}"),
        _ => outln!(out, "QEMU 10: undefined behaviour: {message}"),
    }
    let c = &r.qemu_check;
    match (c.outcome, c.exit_code) {
        ("completes", Some(code)) => outln!(
            out,
            "qemu-img check: exit {code} ({} corruptions, {} leaked clusters)",
            c.corruptions.unwrap_or(0),
            c.leaks.unwrap_or(0)
        ),
        ("open-fails", _) => outln!(out, "qemu-img check: cannot open the image"),
        ("fails", _) => outln!(out, "qemu-img check: fails (Device or resource busy)"),
        (_, Some(code)) => outln!(out, "qemu-img check: aborts (exit {code})"),
        _ => outln!(out, "qemu-img check: unpredictable"),
    }
    match r.ploop_loads_bitmaps {
        Some(true) => outln!(out, "ploop: loads the bitmaps"),
        Some(false) => outln!(out, "ploop: does not load the bitmaps"),
        None => {}
    }
    out
}
