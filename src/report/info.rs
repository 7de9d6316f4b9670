//! `prlimg info` of an image: every header field with its unit, the allocation, the bitmaps,
//! and what QEMU and ploop refuse (typed warnings).

use std::fmt;
use std::io::{self, Write};

use super::text::{human_bytes, line as outln};
use crate::bitmap::{Bitmap, BitmapSummary};
use crate::check::JSON_SCHEMA;
use crate::header::{Header, Variant};
use crate::image::Image;
use crate::ploop::CbtOutcome;
use crate::qemu::{self, QemuCheck, QemuOutcome};

/// `info --output json`: the header's fields (see [`Header`]'s JSON), the file, the allocation
/// and the bitmaps. Sizes are bytes unless the key says sectors.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Info {
    /// The JSON layout's version.
    pub schema: u32,
    /// The path as given.
    pub filename: String,
    /// Always `"parallels"`.
    pub format: &'static str,
    /// File length in bytes.
    pub file_size: u64,
    #[cfg_attr(feature = "serde", serde(flatten))]
    /// The header's fields.
    pub header: Header,
    /// Allocated BAT entries.
    pub allocated_clusters: u64,
    /// Whether the image has a Format Extension.
    pub extension: bool,
    /// Its bitmaps.
    pub bitmaps: Vec<BitmapSummary>,
    /// What readers will refuse: QEMU 10 not opening the image, ploop not loading the bitmaps
    /// (a wrong extension magic or checksum); where QEMU 7.2 opens or checks it otherwise than
    /// QEMU 10. Empty when all accept it alike.
    #[cfg_attr(feature = "serde", serde(serialize_with = "sentences"))]
    pub warnings: Vec<InfoWarning>,
    /// qemu-img's own keys beside ours (`children`, `virtual-size`, `actual-size`), when
    /// `qemu-img info` opens the image: [`QemuImgInfo::without_names`] of `qemu_img_info`.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub qemu_img: Option<QemuImgInfo>,
    /// The whole object `qemu-img info -f parallels --output json` prints, or null when it
    /// cannot open the image.
    pub qemu_img_info: Option<QemuImgInfo>,
}

/// `qemu-img info -f parallels --output json` (QEMU 10.0.2), keys in its order: the format
/// node (the guest's size, no cluster size or dirty flag: the driver reports neither) and its
/// one child, the file (its length, `format-specific` of type `file`, `dirty-flag` false).
/// `actual-size` is the space the file takes on its file system (`st_blocks` × 512).
/// [`QemuImgInfo::without_names`] drops `filename` and `format`: the keys our `info` holds
/// already, the rest printed beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct QemuImgInfo {
    children: Vec<QemuImgChild>,
    #[cfg_attr(feature = "serde", serde(rename = "virtual-size"))]
    virtual_size: u64,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    filename: Option<String>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    format: Option<&'static str>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "actual-size", skip_serializing_if = "Option::is_none")
    )]
    actual_size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
struct QemuImgChild {
    name: &'static str,
    info: QemuImgFile,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
struct QemuImgFile {
    children: [(); 0],
    #[cfg_attr(feature = "serde", serde(rename = "virtual-size"))]
    virtual_size: u64,
    filename: String,
    format: &'static str,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "actual-size", skip_serializing_if = "Option::is_none")
    )]
    actual_size: Option<u64>,
    #[cfg_attr(feature = "serde", serde(rename = "format-specific"))]
    format_specific: FileSpecific,
    #[cfg_attr(feature = "serde", serde(rename = "dirty-flag"))]
    dirty_flag: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
struct FileSpecific {
    r#type: &'static str,
    data: std::collections::BTreeMap<(), ()>,
}

/// What `qemu-img info` prints for the image at `filename` (`actual_size`: the file's
/// allocated bytes, when known), or `None` when QEMU 10 does not open it (`info`: its outcome).
fn qemu_img_info(
    image: &Image<'_>,
    info: &QemuOutcome,
    filename: &str,
    actual_size: Option<u64>,
) -> Option<QemuImgInfo> {
    if !matches!(info, QemuOutcome::Opens { .. }) {
        return None;
    }
    let file = QemuImgFile {
        children: [],
        virtual_size: image.file_len().next_multiple_of(512),
        filename: filename.to_string(),
        format: "file",
        actual_size,
        format_specific: FileSpecific {
            r#type: "file",
            data: std::collections::BTreeMap::new(),
        },
        dirty_flag: false,
    };
    Some(QemuImgInfo {
        children: vec![QemuImgChild {
            name: "file",
            info: file,
        }],
        virtual_size: image.header().virtual_size(),
        filename: Some(filename.to_string()),
        format: Some("parallels"),
        actual_size,
    })
}

impl QemuImgInfo {
    /// The same keys without `filename` and `format`, in the same order.
    pub fn without_names(&self) -> QemuImgInfo {
        QemuImgInfo {
            filename: None,
            format: None,
            ..self.clone()
        }
    }
}

/// The space a regular file or block device takes (`st_blocks` × 512, as QEMU's `actual-size`).
#[cfg(unix)]
pub fn allocated_size(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() || meta.file_type().is_block_device()).then(|| meta.blocks() * 512)
}

/// The space a file takes: not known elsewhere than unix (`None`).
#[cfg(not(unix))]
pub fn allocated_size(_: &std::path::Path) -> Option<u64> {
    None
}

/// What a reader refuses, or where QEMU 7.2 differs from QEMU 10, for `info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoWarning {
    /// QEMU 10 does not open the image (its outcome).
    Qemu10(QemuOutcome),
    /// QEMU 7.2's open differs from QEMU 10's (its outcome).
    Qemu72Differs(QemuOutcome),
    /// `qemu-img check` exits otherwise with QEMU 7.2 (`old`) than with QEMU 10 (`new`).
    CheckExitDiffers {
        /// QEMU 7.2's exit status.
        old: Option<i32>,
        /// QEMU 10's exit status.
        new: Option<i32>,
    },
    /// ploop's CBT loader refuses or crashes on the extension.
    PloopBitmaps,
}

impl InfoWarning {
    /// Warnings for `info`: whether QEMU 10 opens the image (and QEMU 7.2 alike, with the
    /// same `qemu-img check` exit) and ploop loads its bitmaps. The table is read once.
    pub fn of(image: &Image<'_>) -> Vec<InfoWarning> {
        InfoWalk::of(image).warnings(image)
    }
}

/// What `info` needs of the table, gathered on one walk of it: the allocated entries, and
/// both QEMU versions' checks (each only when that version opens the image).
struct InfoWalk {
    allocated: u64,
    info: QemuOutcome,
    check: QemuCheck,
    old_info: QemuOutcome,
    old_check: QemuCheck,
}

impl InfoWalk {
    fn of(image: &Image<'_>) -> InfoWalk {
        let opens = |o: &QemuOutcome| matches!(o, QemuOutcome::Opens { .. });
        let open = qemu::open_outcome_for(image, qemu::Version::V10_0);
        let old_open = qemu::open_outcome_for(image, qemu::Version::V7_2);
        let mut new = opens(&open).then(|| qemu::CheckWalk::new_scanning(image));
        let mut old = opens(&old_open).then(|| qemu::CheckWalk72::new(image));
        let mut allocated = 0;
        for (i, e) in image.allocated_entries() {
            allocated += 1;
            if let Some(w) = &mut new {
                w.entry(i, e);
            }
            if let Some(w) = &mut old {
                w.entry(i, e);
            }
        }
        InfoWalk {
            allocated,
            info: qemu::info_of(image, &open),
            check: new.map_or_else(|| QemuCheck::OpenFails(open), |w| w.finish_scanned(image)),
            old_info: qemu::info_of(image, &old_open),
            old_check: old.map_or_else(|| QemuCheck::OpenFails(old_open), qemu::CheckWalk72::finish),
        }
    }

    fn warnings(&self, image: &Image<'_>) -> Vec<InfoWarning> {
        let mut w = Vec::new();
        if !matches!(self.info, QemuOutcome::Opens { .. }) {
            w.push(InfoWarning::Qemu10(self.info.clone()));
        }
        // Where QEMU 7.2 (Debian 12's) does otherwise.
        if self.old_info != self.info {
            w.push(InfoWarning::Qemu72Differs(self.old_info.clone()));
        }
        let (new, old_exit) = (self.check.exit_code(), self.old_check.exit_code());
        if new != old_exit && matches!(self.old_info, QemuOutcome::Opens { .. }) {
            w.push(InfoWarning::CheckExitDiffers { old: old_exit, new });
        }
        // ploop's CBT loader alone: its check's walk of the table is not needed here.
        if let Ok(cbt) = crate::ploop::predict_ploop_cbt(image.source(), "") {
            if matches!(cbt.outcome, CbtOutcome::Refuses | CbtOutcome::Crashes) {
                w.push(InfoWarning::PloopBitmaps);
            }
        }
        w
    }
}

impl fmt::Display for InfoWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoWarning::Qemu10(o) => match o {
                QemuOutcome::Rejects { message, .. } => write!(f, "QEMU 10 refuses this image: {message}"),
                QemuOutcome::Aborts { assertion, .. } => write!(f, "QEMU 10 aborts on this image: {assertion}"),
                QemuOutcome::Crashes { signal, .. } => write!(f, "QEMU 10 crashes on this image (signal {signal})"),
                _ => write!(f, "QEMU 10 cannot open this image (prlimg check says why)"),
            },
            InfoWarning::Qemu72Differs(o) => {
                f.write_str("QEMU 7.2 differs from QEMU 10: it ")?;
                match o {
                    QemuOutcome::Opens { .. } => write!(f, "opens this image"),
                    QemuOutcome::Rejects { message, .. } => write!(f, "refuses this image: {message}"),
                    QemuOutcome::Aborts { assertion, .. } => write!(f, "aborts on this image: {assertion}"),
                    QemuOutcome::Crashes { signal, .. } => write!(f, "crashes on this image (signal {signal})"),
                    _ => write!(f, "cannot open this image"),
                }
            }
            InfoWarning::CheckExitDiffers { old, new } => {
                let code = |c: &Option<i32>| c.map_or("?".to_string(), |c| c.to_string());
                write!(
                    f,
                    "qemu-img check exits {} with QEMU 7.2 and {} with QEMU 10 (prlimg check --qemu all says why)",
                    code(old),
                    code(new)
                )
            }
            InfoWarning::PloopBitmaps => {
                f.write_str("ploop does not load the bitmaps of this extension (prlimg check says why)")
            }
        }
    }
}

#[cfg(feature = "serde")]
fn sentences<S: serde::Serializer>(w: &[InfoWarning], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(w.iter().map(ToString::to_string))
}

/// One bitmap in a line for people (`prlimg info`, `prlimg bitmaps`).
pub fn bitmap_line(b: &BitmapSummary) -> String {
    let dirty = match (b.dirty_bytes, &b.error) {
        (Some(d), _) => format!("{d} dirty bytes ({})", human_bytes(d)),
        (None, Some(e)) => format!("not decodable: {e}"),
        (None, None) => "not decodable".to_string(),
    };
    format!(
        "{}: granularity {} bytes ({}), {dirty}, l1_size {}",
        b.name,
        b.granularity,
        human_bytes(b.granularity),
        b.l1_size
    )
}

/// [`Info`] of `image`, named `filename`; `actual_size` as qemu-img's (`None`: not a file QEMU
/// opens by name).
pub fn gather(image: &Image<'_>, filename: String, actual_size: Option<u64>) -> Info {
    // One walk of the table for the allocation and both QEMU versions' checks.
    let walk = InfoWalk::of(image);
    let qemu_img_info = qemu_img_info(image, &walk.info, &filename, actual_size);
    Info {
        qemu_img: qemu_img_info.as_ref().map(QemuImgInfo::without_names),
        qemu_img_info,
        schema: JSON_SCHEMA,
        filename,
        format: "parallels",
        file_size: image.file_len(),
        header: *image.header(),
        allocated_clusters: walk.allocated,
        extension: image.extension().is_some(),
        bitmaps: image.bitmaps().iter().map(Bitmap::summary).collect(),
        warnings: walk.warnings(image),
    }
}

impl Info {
    /// The JSON report, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// Every header field with its unit, the allocation, the warnings and the bitmaps.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.human().as_bytes())
    }

    fn human(&self) -> String {
        let i = self;
        let mut out = String::new();
        let h = &i.header;
        let raw = &h.raw;
        let variant = match h.variant {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
        };
        outln!(out, "image: {}", i.filename);
        outln!(out, "file format: {}", i.format);
        outln!(out, "file size: {} bytes ({})", i.file_size, human_bytes(i.file_size));
        outln!(out, "magic: {} ({variant})", String::from_utf8_lossy(&raw.magic));
        outln!(out, "version: {}", raw.version.get());
        outln!(out, "heads: {}", raw.heads.get());
        outln!(out, "cylinders: {}", raw.cylinders.get());
        outln!(out, "tracks: {} sectors", raw.tracks.get());
        outln!(
            out,
            "cluster size: {} bytes ({})",
            h.cluster_size(),
            human_bytes(h.cluster_size())
        );
        outln!(out, "bat_entries: {}", h.bat_entries);
        outln!(out, "nb_sectors: {} sectors", raw.nb_sectors.get());
        // In qemu-img's order: "virtual size: 64 GiB (68719476736 bytes)".
        outln!(
            out,
            "virtual size: {} ({} bytes)",
            human_bytes(h.virtual_size()),
            h.virtual_size()
        );
        outln!(out, "inuse: {:#010x} ({})", raw.inuse.get(), h.inuse().description());
        outln!(
            out,
            "data_off: {} sectors (data starts at byte {})",
            raw.data_off.get(),
            h.data_start()
        );
        let flag_names = h.flag_names();
        if flag_names.is_empty() {
            outln!(out, "flags: {:#010x}", raw.flags.get());
        } else {
            outln!(out, "flags: {:#010x} ({})", raw.flags.get(), flag_names.join(", "));
        }
        match h.ext_offset() {
            Some(b) => outln!(out, "ext_off: {} sectors (byte {b})", h.ext_off),
            None => outln!(out, "ext_off: 0 (no extension)"),
        }
        outln!(out, "allocated clusters: {} of {}", i.allocated_clusters, h.bat_entries);
        outln!(out, "extension: {}", if i.extension { "present" } else { "absent" });
        for w in &i.warnings {
            outln!(out, "warning: {w}");
        }
        if i.bitmaps.is_empty() {
            outln!(out, "bitmaps: none");
        } else {
            outln!(out, "bitmaps:");
            for b in &i.bitmaps {
                outln!(out, "    {}", bitmap_line(b));
            }
        }
        out
    }
}

/// `prlimg bitmaps IMAGE`: the image's dirty bitmaps, one summary each, in the extension's order.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BitmapList {
    /// The JSON layout's version.
    pub schema: u32,
    /// The path as given.
    pub filename: String,
    /// Each bitmap's summary.
    pub bitmaps: Vec<BitmapSummary>,
    /// Whether the image has a Format Extension (the human text says why there is no bitmap).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub has_extension: bool,
}

impl BitmapList {
    /// The bitmaps of `image`, named `filename`.
    pub fn of(image: &Image<'_>, filename: String) -> BitmapList {
        BitmapList {
            schema: JSON_SCHEMA,
            filename,
            bitmaps: image.bitmaps().iter().map(Bitmap::summary).collect(),
            has_extension: image.extension().is_some(),
        }
    }

    /// A line per bitmap ([`bitmap_line`]), or why there is none.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.bitmaps.is_empty() {
            let why = if self.has_extension {
                "the Format Extension holds none"
            } else {
                "the image has no Format Extension"
            };
            return writeln!(out, "no bitmaps ({why})");
        }
        self.bitmaps
            .iter()
            .try_for_each(|b| writeln!(out, "{}", bitmap_line(b)))
    }

    /// Pretty JSON and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// `info -f raw`: what `qemu-img info -f raw` says of a raw file. Its size is the guest's, and
/// how much of it is stored is the sum of its data ranges (the rest are holes). The fields are
/// in the JSON's key order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RawInfo {
    /// How many of its bytes are stored (not holes).
    pub data_bytes: u64,
    /// The file as named.
    pub filename: String,
    /// Always `raw`.
    pub format: &'static str,
    /// [`JSON_SCHEMA`].
    pub schema: u32,
    /// The file's size: the guest's.
    pub virtual_size: u64,
}

impl RawInfo {
    /// The raw file `filename` of `size` bytes whose data ranges are `(offset, length)` pairs.
    pub fn new(filename: String, size: u64, ranges: &[(u64, u64)]) -> Self {
        let data_bytes = ranges.iter().map(|r| r.1).sum();
        let (format, schema, virtual_size) = ("raw", JSON_SCHEMA, size);
        Self {
            data_bytes,
            filename,
            format,
            schema,
            virtual_size,
        }
    }

    /// Pretty JSON and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// The name, the format, the size and what is stored.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        let (size, stored) = (self.virtual_size, self.data_bytes);
        writeln!(out, "image: {}", self.filename)?;
        writeln!(out, "file format: raw")?;
        writeln!(out, "virtual size: {} ({size} bytes)", human_bytes(size))?;
        writeln!(
            out,
            "data: {} ({stored} bytes; the rest are holes)",
            human_bytes(stored)
        )
    }
}
