//! A whole conformance check of one image, as `prlimg check` reports it: every rule's findings,
//! `qemu-img check`'s statistics, and what QEMU and ploop would do with the image.

use crate::error::{Error, Result, Violation};
use crate::image::{Image, RuleMode};
use crate::ploop::{self, PloopPrediction};
use crate::qemu::{self, Prediction};
use crate::source::Source;
use crate::validate::{self, Finding, Report, Threads, Verdict};

/// The version of the JSON layout of [`Conformance`] (and of `prlimg`'s other JSON reports):
/// raised when a key changes meaning or goes away, not when one is added.
pub const JSON_SCHEMA: u32 = 3;

/// Counts as `qemu-img check` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterStatistics {
    /// BAT entries.
    pub total: u64,
    /// Allocated entries whose cluster lies inside the referenced part of the file.
    pub allocated: u64,
    /// Of those, the ones that do not directly follow the previous index's cluster on disk.
    pub fragmented: u64,
    /// Bytes: the end of the last referenced cluster (where a leaked tail starts), or the file
    /// length when nothing leaks.
    pub image_end_offset: u64,
}

/// Everything `prlimg check` reports on one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conformance {
    /// The image's name as given (QEMU's messages quote it).
    pub filename: String,
    /// The mode the rules ran in.
    pub mode: RuleMode,
    /// Every finding. When the header could not be interpreted (R1–R6), its one finding.
    pub report: Report,
    /// `None` when the header could not be interpreted.
    pub statistics: Option<ClusterStatistics>,
    /// The file's length in bytes.
    pub file_size: u64,
    /// What QEMU does with the image (QEMU 10.0 unless [`check_versions`] was asked for
    /// another: `prediction.version`).
    pub prediction: Prediction,
    /// Every version's prediction when [`check_versions`] was asked for more than one (oldest
    /// first), else empty.
    pub qemu_versions: Vec<Prediction>,
    /// What ploop does with the image: its check, its CBT loader, a mount.
    pub ploop: PloopPrediction,
}

/// Checks the image in `source` (named `filename` in QEMU's predicted messages): parses it once,
/// reading the BAT again through a small buffer at each walk, and runs the rules, the statistics and the QEMU
/// prediction over that one parse. A header that cannot be interpreted is a report of its one
/// finding, not an error; errors are I/O failures.
pub fn check(source: &dyn Source, mode: RuleMode, filename: &str) -> Result<Conformance> {
    check_versions(source, mode, filename, &[qemu::Version::V10_0])
}

/// [`check`], predicting QEMU `versions[0]` (which [`Conformance::prediction`] holds) and, when
/// there are more, each of them ([`Conformance::qemu_versions`]). An empty list means 10.0.
pub fn check_versions(
    source: &dyn Source,
    mode: RuleMode,
    filename: &str,
    versions: &[qemu::Version],
) -> Result<Conformance> {
    check_keeping(source, mode, filename, versions).map(|(c, _)| c)
}

/// [`check_versions`], giving back the image it parsed (`None` when the header cannot be
/// interpreted), for pictures drawn without parsing it again.
pub(crate) fn check_keeping<'a>(
    source: &'a dyn Source,
    mode: RuleMode,
    filename: &str,
    versions: &[qemu::Version],
) -> Result<(Conformance, Option<Image<'a>>)> {
    let versions = if versions.is_empty() {
        &[qemu::Version::V10_0][..]
    } else {
        versions
    };
    let mut qemu_versions = Vec::new();
    let file_size = source.size();
    // ploop's check reads the header on its own terms; its walk of the index table is fed by the
    // rules' walk of the BAT below when the image parses, and reads what that walk did not cover.
    let mut ploop_walk = match ploop::start_check(source, filename)? {
        ploop::CheckStart::Done(done) => Err(done),
        ploop::CheckStart::Walk(walk) => Ok(walk),
    };
    let mut ploop_from = 0;
    let (report, statistics, prediction, image) = match Image::parse_compact(source, mode) {
        Ok(image) => {
            // One read of the BAT for every consumer: the rules walk it and hand each allocated
            // entry to QEMU's predicted check and to ploop's check on the way.
            let mut qemu_walk = qemu::CheckWalk::new(&image);
            // ploop's test of blocks used twice reads the rules' bit set of data clusters
            // instead of keeping its own (when that is exact), and takes it over at the end.
            let report = {
                if let Ok(p) = ploop_walk.as_mut() {
                    p.share_grid(&validate::slot_grid(&image));
                }
                let mut ploop = ploop_walk.as_mut().ok();
                let mut feed = |i: u32, e: u32, rules: Option<validate::SlotView<'_>>| {
                    qemu_walk.entry(i, e);
                    if let Some(p) = ploop.as_deref_mut() {
                        p.entry_beside(u64::from(i), e, rules);
                    }
                };
                let (report, bits) = validate::validate_feeding(&image, Threads::default(), &mut feed)?;
                if let Ok(p) = ploop_walk.as_mut() {
                    p.adopt(bits);
                }
                report
            };
            ploop_from = u64::from(image.bat_entries_in_file());
            let end = report.leak_start().unwrap_or(image.file_len());
            // The entries the rules found duplicated, in order: QEMU's, when every cluster is
            // where both look for it.
            let dups: Vec<u32> = report
                .findings
                .iter()
                .filter_map(|f| match f.violation {
                    Violation::BatEntryDuplicate { index, .. } => Some(index),
                    _ => None,
                })
                .collect();
            let predict = |v| qemu::predict_image_walked(&image, v, Some((&qemu_walk, Some(&dups))));
            let prediction = predict(versions[0]);
            if versions.len() > 1 {
                qemu_versions = versions.iter().map(|&v| predict(v)).collect();
            }
            // QEMU 10's check counts the same way up to its own end of the image: when the two
            // ends agree (they do unless the image is corrupt), its counts are these.
            let counts = match &prediction.check {
                qemu::QemuCheck::Completes(c)
                    if c.image_end_offset == end && prediction.version == qemu::Version::V10_0 =>
                {
                    (c.allocated_clusters, c.fragmented_clusters)
                }
                _ => image.cluster_counts(end),
            };
            image.bat_status()?;
            let statistics = ClusterStatistics {
                total: u64::from(image.header().bat_entries),
                allocated: counts.0,
                fragmented: counts.1,
                image_end_offset: end,
            };
            (report, Some(statistics), prediction, Some(image))
        }
        Err(Error::Invalid(violation)) => {
            // QEMU 7.2 reads on where QEMU 10 stops at an ext_off past its bound.
            let unparsable = |v: qemu::Version| match v {
                qemu::Version::V7_2 => qemu::predict_for(source, v),
                v => Ok(qemu::predict_unparsable_for(&violation, v)),
            };
            let prediction = unparsable(versions[0])?;
            if versions.len() > 1 {
                qemu_versions = versions
                    .iter()
                    .map(|&v| unparsable(v))
                    .collect::<std::io::Result<_>>()?;
            }
            let severity = violation.severity();
            let report = Report {
                findings: vec![Finding { violation, severity }],
            };
            (report, None, prediction, None)
        }
        Err(e) => return Err(e),
    };
    let ploop_check = match ploop_walk {
        Err(done) => done,
        Ok(walk) => walk.finish(source, ploop_from)?,
    };
    let ploop = ploop::predict_ploop_checked(source, filename, None, ploop_check)?;
    qemu_versions.sort_by_key(|p| p.version);
    let conformance = Conformance {
        filename: filename.to_string(),
        mode,
        report,
        statistics,
        file_size,
        prediction,
        qemu_versions,
        ploop,
    };
    Ok((conformance, image))
}

impl Conformance {
    /// What the findings amount to; [`Verdict::exit_code`] is `prlimg check`'s exit status.
    pub fn verdict(&self) -> Verdict {
        self.report.verdict()
    }
}

/// What `qemu-img info` does, as JSON: `outcome`, `exit_code`, `message` (after
/// `Could not open 'PATH': `, or the assertion), `bitmaps`.
#[cfg(feature = "serde")]
#[derive(serde::Serialize)]
struct QemuInfoJson {
    /// The QEMU predicted: `"7.2"` or `"10.0"`.
    version: &'static str,
    outcome: &'static str,
    exit_code: Option<i32>,
    message: Option<String>,
    bitmaps: Vec<String>,
    /// The rule of `spec/qemu.md` that decided (`"H1"` … `"B10"`, `"UB"`), null when it opens.
    reason: Option<&'static str>,
    /// The signal that kills QEMU when it crashes.
    signal: Option<i32>,
}

/// What `qemu-img check` does, as JSON.
#[cfg(feature = "serde")]
#[derive(serde::Serialize)]
struct QemuCheckJson {
    outcome: &'static str,
    exit_code: Option<i32>,
    corruptions: Option<u64>,
    leaks: Option<u64>,
    image_end_offset: Option<u64>,
    /// Every `ERROR …` line it prints, in order (up to 1000; `errors_omitted` counts the rest).
    errors: Vec<String>,
    errors_omitted: u64,
    /// The assertion when it aborts.
    assertion: Option<String>,
}

/// `qemu-img check --output json`'s object, its keys in QEMU's order.
#[cfg(feature = "serde")]
struct QemuImgObject<'a>(Vec<(&'static str, crate::qemu::QemuJsonValue<'a>)>);

#[cfg(feature = "serde")]
impl serde::Serialize for QemuImgObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            m.serialize_entry(key, value)?;
        }
        m.end()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Conformance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use crate::rule::Severity;
        use serde::ser::SerializeMap;

        let r = &self.report;
        let stats = self.statistics.as_ref();
        let (qemu, qemu_check, read_write) = qemu_json(&self.prediction, &self.filename);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schema", &JSON_SCHEMA)?;
        m.serialize_entry("filename", &self.filename)?;
        m.serialize_entry("format", "parallels")?;
        // qemu-img's own keys, with its meanings, when its check completes: a script written
        // against `qemu-img check --output json` reads what it expects.
        let counts = match &self.prediction.check {
            qemu::QemuCheck::Completes(c) => Some(c),
            _ => None,
        };
        let qemu_img = counts.map(|c| c.qemu_img_json(&self.filename));
        for (key, value) in qemu_img.iter().flatten() {
            if !matches!(*key, "filename" | "format") {
                m.serialize_entry(key, value)?;
            }
        }
        m.serialize_entry("mode", &self.mode)?;
        m.serialize_entry("result", &self.verdict())?;
        m.serialize_entry("corruption_findings", &r.count(Severity::Corruption))?;
        m.serialize_entry("leak_findings", &r.count(Severity::Leak))?;
        m.serialize_entry("leaked_bytes", &r.leaked_bytes())?;
        m.serialize_entry("non_canonical", &r.count(Severity::NonCanonical))?;
        m.serialize_entry("notes", &r.count(Severity::Note))?;
        m.serialize_entry("rules", &r.rules())?;
        m.serialize_entry("findings", &r.findings)?;
        m.serialize_entry("total_clusters", &stats.map(|s| s.total))?;
        m.serialize_entry("allocated_clusters", &stats.map(|s| s.allocated))?;
        m.serialize_entry("fragmented_clusters", &stats.map(|s| s.fragmented))?;
        m.serialize_entry("image_end_offset", &stats.map(|s| s.image_end_offset))?;
        m.serialize_entry("file_size", &self.file_size)?;
        m.serialize_entry("qemu", &qemu)?;
        m.serialize_entry("qemu_check", &qemu_check)?;
        m.serialize_entry("qemu_img_check", &qemu_img.map(QemuImgObject))?;
        m.serialize_entry("ploop", &self.ploop)?;
        m.serialize_entry("qemu_read_write", &read_write)?;
        if !self.qemu_versions.is_empty() {
            m.serialize_entry("qemu_versions", &QemuVersionsJson(&self.qemu_versions, &self.filename))?;
        }
        m.end()
    }
}

/// `"qemu_versions"`: each prediction's `qemu`, `qemu_check` and `qemu_read_write`, by version.
#[cfg(feature = "serde")]
struct QemuVersionsJson<'a>(&'a [Prediction], &'a str);

#[cfg(feature = "serde")]
impl serde::Serialize for QemuVersionsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        #[derive(serde::Serialize)]
        struct One {
            qemu: QemuInfoJson,
            qemu_check: QemuCheckJson,
            qemu_read_write: String,
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            let (qemu, qemu_check, qemu_read_write) = qemu_json(p, self.1);
            let one = One {
                qemu,
                qemu_check,
                qemu_read_write,
            };
            m.serialize_entry(p.version.name(), &one)?;
        }
        m.end()
    }
}

/// One prediction's `qemu`, `qemu_check` and `qemu_read_write` entries.
#[cfg(feature = "serde")]
fn qemu_json(prediction: &Prediction, filename: &str) -> (QemuInfoJson, QemuCheckJson, String) {
    use crate::qemu::{QemuCheck, QemuOutcome};
    let info = &prediction.info;
    let qemu = QemuInfoJson {
        version: prediction.version.name(),
        outcome: info.kind(),
        exit_code: info.exit_code(),
        message: info.message(filename).or_else(|| match info {
            QemuOutcome::Undefined { detail } => Some(detail.clone()),
            _ => None,
        }),
        bitmaps: match info {
            QemuOutcome::Opens { bitmaps } => bitmaps.clone(),
            _ => Vec::new(),
        },
        reason: info.reason().map(|r| r.code()),
        signal: match info {
            QemuOutcome::Crashes { signal, .. } => Some(*signal),
            _ => None,
        },
    };
    let counts = match &prediction.check {
        QemuCheck::Completes(c) => Some(c),
        _ => None,
    };
    let qemu_check = QemuCheckJson {
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
        errors: counts
            .map(|c| c.errors.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        errors_omitted: counts.map_or(0, |c| c.errors_omitted),
        assertion: match &prediction.check {
            QemuCheck::Aborts { assertion } => Some(assertion.clone()),
            _ => None,
        },
    };
    let read_write = prediction.read_write.describe();
    (qemu, qemu_check, read_write)
}
