//! The libphdi and dissect.hypervisor blocks of `prlimg check` (image and bundle): what each
//! of those real readers does with the disk, predicted by `parallels_image::readers`.

use std::path::Path;

use crate::readers::{
    dissect::DISSECT_VERSION, libphdi::LIBPHDI_VERSION, predict_readers, ReaderOutcome, ReaderPrediction,
};

use super::text::line as outln;

/// Both readers' predictions, when `path` is a file or folder they can be handed (not a
/// stream or a device read from standard input).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Readers {
    /// libyal's libphdi.
    pub libphdi: ReaderPrediction,
    /// fox-it's dissect.hypervisor.
    pub dissect: ReaderPrediction,
}

impl Readers {
    /// Predicts both readers for the disk at `path`; `None` when `path` is not a regular file
    /// or a folder. The caller asks `too_many_clusters` first.
    pub fn of(path: &Path) -> Option<Readers> {
        let meta = std::fs::metadata(path).ok()?;
        if !(meta.is_file() || meta.is_dir()) {
            return None;
        }
        let (libphdi, dissect) = predict_readers(path);
        Some(Readers { libphdi, dissect })
    }

    /// Adds the keys `libphdi` and `dissect` to a JSON report (an object).
    #[cfg(feature = "json")]
    pub fn add_to(&self, value: &mut serde_json::Value) {
        if let Some(m) = value.as_object_mut() {
            m.insert(
                "libphdi".into(),
                serde_json::to_value(&self.libphdi).unwrap_or_default(),
            );
            m.insert(
                "dissect".into(),
                serde_json::to_value(&self.dissect).unwrap_or_default(),
            );
        }
    }

    /// Two lines for people, one per reader.
    pub fn human(&self) -> String {
        let mut out = String::new();
        outln!(out, "{}", line(&format!("libphdi {LIBPHDI_VERSION}"), &self.libphdi));
        outln!(
            out,
            "{}",
            line(&format!("dissect.hypervisor {DISSECT_VERSION}"), &self.dissect)
        );
        out
    }
}

/// A lone image of more clusters than this gets no reader prediction from `check`: the
/// models hold the image's whole table, as libphdi and dissect.hypervisor do, so its
/// memory and time would grow with the table and undo `check`'s bounds on a large image
/// (BENCHMARKS.md, "The guard").
pub const MAX_PREDICTED_CLUSTERS: u32 = 1 << 20;

/// The image's number of clusters (its header's `bat_entries`), when `path` is a regular file
/// whose header says more than [`MAX_PREDICTED_CLUSTERS`].
pub fn too_many_clusters(path: &Path) -> Option<u32> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut header = [0u8; 64];
    std::fs::File::open(path).ok()?.read_exact(&mut header).ok()?;
    let n = crate::raw::header::RawHeader::read_padded(&header).bat_entries.get();
    (n > MAX_PREDICTED_CLUSTERS).then_some(n)
}

/// The line `check` prints instead of the readers' when the image is too large to predict.
pub fn not_predicted(clusters: u32) -> String {
    format!(
        "libphdi, dissect.hypervisor: not predicted for an image of {clusters} clusters (more than {MAX_PREDICTED_CLUSTERS}: the readers' models hold the whole table, as the readers do)\n"
    )
}

/// `NAME: OUTCOME (detail); media size N bytes; top GUID`.
fn line(name: &str, p: &ReaderPrediction) -> String {
    let message = p.message.as_deref().unwrap_or("");
    let mut s = match p.outcome {
        ReaderOutcome::Opens => format!("{name}: opens and reads the disk's bytes"),
        ReaderOutcome::Refuses => format!("{name}: refuses ({message})"),
        ReaderOutcome::Misreads => {
            let mut mib: Vec<String> = p.misread_mib.iter().take(8).map(u64::to_string).collect();
            let more = p.misread_mib.len().saturating_sub(8) as u64 + p.misread_mib_omitted;
            if more > 0 {
                mib.push(format!("and {more} more"));
            }
            format!(
                "{name}: misreads MiB {} in reads of {} bytes ({message})",
                mib.join(", "),
                p.read_size
            )
        }
        ReaderOutcome::Crashes => format!("{name}: crashes ({message})"),
        ReaderOutcome::Hangs => format!("{name}: hangs ({message})"),
    };
    if let Some(size) = p.media_size {
        s.push_str(&format!("; media size {size} bytes"));
    }
    if let Some(top) = &p.top {
        s.push_str(&format!("; top {top}"));
    }
    s
}

/// The readers' block of an image's report: both predictions, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadersBlock {
    /// Not a file or folder the readers can be handed (a stream, a device): no block.
    Absent,
    /// An image of more clusters than [`MAX_PREDICTED_CLUSTERS`]: not predicted.
    TooLarge(u32),
    /// Both predictions.
    Predicted(Box<Readers>),
}

impl ReadersBlock {
    /// The block for the disk at `path`.
    pub fn of(path: &Path) -> ReadersBlock {
        match too_many_clusters(path) {
            Some(n) => ReadersBlock::TooLarge(n),
            None => Readers::of(path).map_or(ReadersBlock::Absent, |r| ReadersBlock::Predicted(Box::new(r))),
        }
    }

    /// The lines for people (none when absent).
    pub fn human(&self) -> String {
        match self {
            ReadersBlock::Absent => String::new(),
            ReadersBlock::TooLarge(n) => not_predicted(*n),
            ReadersBlock::Predicted(r) => r.human(),
        }
    }

    /// Adds the keys `libphdi` and `dissect` to a JSON report (null both when too large).
    #[cfg(feature = "json")]
    pub fn add_to(&self, value: &mut serde_json::Value) {
        match self {
            ReadersBlock::Absent => {}
            ReadersBlock::TooLarge(_) => {
                if let Some(m) = value.as_object_mut() {
                    m.insert("libphdi".into(), serde_json::Value::Null);
                    m.insert("dissect".into(), serde_json::Value::Null);
                }
            }
            ReadersBlock::Predicted(r) => r.add_to(value),
        }
    }
}
