//! The report of one image's check: the headline, the findings and their counts with
//! `qemu-img check`'s statistics, the QEMU and ploop predictions and the readers' block, for
//! people, as JSON, or as one HTML page.

use std::io::{self, Write};
use std::path::Path;

use super::headline::headline;
use super::readers::ReadersBlock;
use super::severity_tag;
use super::text::{line as outln, plural};
use crate::check::{check_keeping, Conformance};
use crate::error::Result;
use crate::image::{Image, RuleMode};
use crate::ploop::{CbtOutcome, MountEffect, PloopPrediction};
use crate::qemu::Version;
use crate::rule::Severity;
use crate::source::Source;

/// What to check and predict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The mode the rules run in.
    pub mode: RuleMode,
    /// The QEMU versions to predict, the one [`Conformance::prediction`] holds first (empty:
    /// 10.0).
    pub qemu: Vec<Version>,
    /// Also predict libphdi and dissect.hypervisor (when the path is a file or folder).
    pub readers: bool,
}

impl CheckOptions {
    /// The rules in `mode`, QEMU 10.0 predicted, the readers too: `prlimg check PATH`.
    pub fn new(mode: RuleMode) -> CheckOptions {
        CheckOptions {
            mode,
            qemu: vec![Version::default()],
            readers: true,
        }
    }
}

/// `prlimg check` of one image: the conformance check and the readers' block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCheck {
    /// The rules, the statistics, the QEMU and ploop predictions.
    pub conformance: Conformance,
    /// What libphdi and dissect.hypervisor do with it.
    pub readers: ReadersBlock,
}

/// Checks the image in `source`, named `path`, and gives back the parsed image (`None` when
/// its header cannot be interpreted) so pictures need no second parse.
pub fn check_image<'a>(
    source: &'a dyn Source,
    path: &Path,
    options: &CheckOptions,
) -> Result<(ImageCheck, Option<Image<'a>>)> {
    let (conformance, image) = check_keeping(source, options.mode, &path.display().to_string(), &options.qemu)?;
    let readers = if options.readers {
        ReadersBlock::of(path)
    } else {
        ReadersBlock::Absent
    };
    Ok((ImageCheck { conformance, readers }, image))
}

impl ImageCheck {
    /// The human report: the headline, the summary, the QEMU and ploop predictions, the
    /// readers.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        let c = &self.conformance;
        let text = self.headline() + &self.summary() + &self.qemu() + &ploop_lines(&c.ploop) + &self.readers.human();
        out.write_all(text.as_bytes())
    }

    /// One sentence per other program, then a blank line.
    pub fn headline(&self) -> String {
        headline(&self.conformance) + "\n"
    }

    /// The readers' lines.
    pub fn readers_text(&self) -> String {
        self.readers.human()
    }

    /// ploop in two lines: its check and CBT loader, then what a mount does to the file.
    pub fn ploop(&self) -> String {
        ploop_lines(&self.conformance.ploop)
    }

    /// The findings, their counts and `qemu-img check`'s statistics.
    pub fn summary(&self) -> String {
        let c = &self.conformance;
        let mut out = String::new();
        let r = &c.report;
        for f in &r.findings {
            let v = &f.violation;
            outln!(
                out,
                "{} {} at {}: {}",
                severity_tag(f.severity),
                v.rule(),
                v.location(),
                v
            );
        }
        let corruptions = r.count(Severity::Corruption) as u64;
        let leaks = r.count(Severity::Leak) as u64;
        if corruptions > 0 {
            outln!(
                out,
                "\n{} found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
                plural(corruptions, "error was", "errors were")
            );
        }
        if leaks > 0 {
            outln!(
                out,
                "\n{} ({} bytes) {} found on the image.\nThis means waste of disk space, but no harm to data.",
                plural(leaks, "leak", "leaks"),
                r.leaked_bytes(),
                if leaks == 1 { "was" } else { "were" }
            );
        }
        if corruptions == 0 && leaks == 0 {
            outln!(out, "No errors were found on the image.");
        }
        let (non_canonical, notes) = (r.count(Severity::NonCanonical) as u64, r.count(Severity::Note) as u64);
        if non_canonical > 0 || notes > 0 {
            outln!(
                out,
                "{} and {} (the image is still valid).",
                plural(non_canonical, "non-canonical finding", "non-canonical findings"),
                plural(notes, "note", "notes")
            );
        }
        if let Some(s) = &c.statistics {
            if s.total != 0 && s.allocated != 0 {
                outln!(
                    out,
                    "{}/{} = {:.2}% allocated, {:.2}% fragmented, 0.00% compressed clusters",
                    s.allocated,
                    s.total,
                    s.allocated as f64 * 100.0 / s.total as f64,
                    s.fragmented as f64 * 100.0 / s.allocated as f64
                );
            }
            outln!(out, "Image end offset: {}", s.image_end_offset);
        }
        out
    }

    /// What QEMU does (each version asked): `qemu-img info`, `qemu-img check` with its first
    /// ERROR lines, a read-write open.
    pub fn qemu(&self) -> String {
        let c = &self.conformance;
        let mut out = String::new();
        let all = std::slice::from_ref(&c.prediction);
        let predictions = if c.qemu_versions.is_empty() {
            all
        } else {
            &c.qemu_versions[..]
        };
        for p in predictions {
            for line in p.render(&c.filename) {
                outln!(out, "{line}");
            }
        }
        out
    }

    /// The JSON report: the conformance's object with the readers' keys added.
    #[cfg(feature = "json")]
    pub fn json_value(&self) -> serde_json::Result<serde_json::Value> {
        let mut value = serde_json::to_value(&self.conformance)?;
        self.readers.add_to(&mut value);
        Ok(value)
    }

    /// The JSON report, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, &self.json_value()?)?;
        out.write_all(b"\n")
    }

    /// The HTML page: the report's sections (`qemu_title` heads the QEMU one), the findings
    /// and the pictures of `image` (`None`: the header could not be interpreted).
    pub fn write_html(&self, out: &mut dyn Write, qemu_title: &str, image: Option<&Image<'_>>) -> io::Result<()> {
        let sections = [
            ("headline", "In QEMU and ploop", self.headline()),
            ("summary", "Summary", self.summary()),
            ("qemu", qemu_title, self.qemu()),
            ("ploop", "ploop", self.ploop()),
            ("readers", "libphdi and dissect.hypervisor", self.readers_text()),
        ];
        out.write_all(super::html::html(&self.conformance, &sections, image).as_bytes())
    }
}

/// ploop in two lines: its check and CBT loader, then what a mount does to the file.
fn ploop_lines(p: &PloopPrediction) -> String {
    let mut out = String::new();
    let first = p
        .check
        .messages
        .iter()
        .find(|m| !matches!(m.as_str(), "Skipped" | "FATAL"));
    let check = match (p.check.rc, first) {
        (Some(rc), Some(first)) => format!("check exit {rc} ({first})"),
        (Some(rc), None) => format!("check exit {rc}"),
        (None, _) => format!("check crashes ({})", p.check.messages.last().map_or("", |m| m.as_str())),
    };
    let c = &p.cbt;
    let message = c.message.as_deref().unwrap_or("");
    let cbt = match (c.outcome, &c.bitmap) {
        (CbtOutcome::None, _) => "has no extension to load".to_string(),
        (CbtOutcome::Ignores, _) => "ignores the extension (inuse is 0)".to_string(),
        (CbtOutcome::Loads, Some(id)) => format!("loads bitmap {id}"),
        (CbtOutcome::Loads, None) => "loads the extension (no bitmap)".to_string(),
        (CbtOutcome::Refuses, _) => format!("refuses the extension (rc {}: {message})", c.rc.unwrap_or(0)),
        (CbtOutcome::Crashes, _) => format!("crashes ({message})"),
    };
    outln!(out, "ploop: {check}; CBT {cbt}");
    let m = &p.mount;
    let message = m.message.as_deref().unwrap_or("");
    match m.effect {
        MountEffect::Truncates => outln!(
            out,
            "ploop mount: cuts the file to {} bytes, ext_off left past the end",
            m.file_size
        ),
        MountEffect::DropsExtension => {
            outln!(out, "ploop mount: rewrites the header with ext_off = 0 ({message})")
        }
        MountEffect::Crashes => outln!(out, "ploop mount: crashes ({message})"),
        MountEffect::Unchanged => {}
    }
    out
}
