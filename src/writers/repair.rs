//! Repair that loses nothing it can keep: a [`RepairPlan`] of typed [`RepairAction`]s, each
//! naming the rule it fixes, the bytes of the input it touches and what is lost (guest ranges,
//! bitmap names), then the repaired image written from the plan.
//!
//! Unlike `qemu-img check -r` and ploop's check, the extension cluster and the bitmap clusters
//! are referenced space: they are kept, moved when they must move, and never cut off.
//!
//! How a plan is made (`spec/repair.md` lists every rule's fix):
//! - [`RepairLevel::Leaks`] does only what loses no guest byte and no bitmap: the unreferenced
//!   tail is cut (R20), holes inside the image are filled by moving the last clusters down
//!   (R46), a stale "Ynot" is cleared when nothing else is corrupt (R7), and with them the
//!   header's non-canonical values (R8–R10). On an image with other corruption it cuts the tail
//!   and sets the canonical header values only, and lists what is left.
//! - [`RepairLevel::All`] also repairs corruption, each fix losing the least; see the rules'
//!   entries in `spec/repair.md`.
//!
//! An image `check` calls clean (non-canonical findings and notes allowed) gets an empty plan:
//! nothing is written.
//!
//! The output is written afresh: the header, the BAT, zeros up to the data area, then each
//! cluster (data, extension, bitmap) at the place the plan gives it. A cluster keeps its place
//! when that place is on the data area's grid and no other cluster claims it first (the
//! extension, then bitmap clusters in L1 order, then data clusters in BAT order); the others
//! go to the lowest free place, and holes left below the last cluster are filled by moving the
//! last one down. A valid image written this way is the same bytes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use crate::error::{Error, RepairError, Result, Violation};
use crate::header::Variant;
use crate::image::{Image, RuleMode};
use crate::raw::bitmap::DirtyBitmapFeature;
use crate::raw::extension::{checksum_padded, ExtensionCluster, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{FeatureRecord, FEATURE_DIRTY_BITMAP};
use crate::raw::header::{
    RawHeader, FLAGS_KNOWN, HEADER_SIZE, INUSE_CLOSED, INUSE_OPEN, MAGIC_V1, MAGIC_V2, MAX_BAT_ENTRIES, VERSION,
};
use crate::raw::{Bytes, Sectors, SECTOR_SIZE};
use crate::rule::{Rule, Severity};
use crate::source::Source;
use crate::validate::{validate, Report, Verdict};
use crate::violation::HeaderField;

/// How much a repair may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum RepairLevel {
    /// Only what loses no guest byte and no bitmap (the default; `qemu-img check -r leaks`).
    Leaks,
    /// Also corruption, each fix losing the least (`qemu-img check -r all`).
    All,
}

/// What one action does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "action", rename_all = "kebab-case")
)]
pub enum RepairKind {
    /// A header field gets a new value.
    SetHeaderField {
        /// The field's name (`"inuse"`, `"data_off"`, …).
        field: &'static str,
        /// The value found.
        from: u64,
        /// The value written.
        to: u64,
    },
    /// The file ends earlier (its unreferenced tail is dropped).
    Truncate {
        /// The input's length.
        from: u64,
        /// The output's length.
        to: u64,
    },
    /// The bytes between the BAT and the data area are written as zeros.
    ZeroBatSlack {
        /// Where they start.
        from: u64,
        /// Where the data area starts.
        to: u64,
    },
    /// A BAT entry becomes 0: its guest cluster reads as zeros.
    ClearBatEntry {
        /// BAT index.
        index: u32,
        /// The entry found.
        entry: u32,
    },
    /// A data cluster cut short by the end of the file is completed with the zeros readers
    /// read there.
    CompleteCluster {
        /// BAT index.
        index: u32,
        /// Bytes of it inside the file.
        present: u64,
    },
    /// A cluster is written at another place (a copy where two owners shared it).
    MoveCluster {
        /// Whose cluster (`"BAT[3]"`, `"the extension"`, `"bitmap NAME L1[0]"`).
        what: String,
        /// Byte offset in the input.
        from: u64,
        /// Byte offset in the output.
        to: u64,
        /// Whether the input's place stays another owner's (the cluster is copied).
        copy: bool,
    },
    /// The extension magic is written again (the checksum proves the cluster).
    RestoreExtMagic {
        /// Byte offset of the cluster.
        offset: u64,
    },
    /// The extension's checksum is computed again (every record validates).
    Rechecksum {
        /// Byte offset of the cluster.
        offset: u64,
    },
    /// The extension is dropped and `ext_off` cleared.
    DropExtension {
        /// Byte offset of the cluster.
        offset: u64,
    },
    /// The extension's records are written again (end record, zero padding, exact sizes).
    RewriteExtension {
        /// Byte offset of the cluster in the input.
        offset: u64,
    },
    /// A feature record that is not a dirty bitmap is dropped.
    DropFeature {
        /// Feature number.
        index: usize,
        /// Its magic.
        magic: u64,
    },
    /// A dirty bitmap is dropped.
    DropBitmap {
        /// Feature number.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A bitmap record's flags are cleared.
    ClearFeatureFlags {
        /// Feature number.
        index: usize,
        /// The flags found.
        flags: u64,
    },
    /// A bitmap record's field gets a new value (`data_size`, `size`, `l1_size`).
    SetBitmapField {
        /// Feature number.
        index: usize,
        /// Which field.
        field: &'static str,
        /// The value found.
        from: u64,
        /// The value written.
        to: u64,
    },
    /// Bits past the last granule of a bitmap's last chunk are cleared.
    ClearTrailingBits {
        /// Feature number.
        index: usize,
    },
}

/// One step of a repair.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RepairAction {
    /// The rule it repairs.
    pub rule: Rule,
    /// What it does.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub kind: RepairKind,
    /// The bytes of the input it reads or replaces, `(offset, len)`.
    pub bytes: Option<(u64, u64)>,
    /// Guest ranges `(offset, len)` whose bytes are lost (read as zeros afterwards).
    pub lost_guest: Vec<(u64, u64)>,
    /// Bitmaps (names) that are lost.
    pub lost_bitmaps: Vec<String>,
}

impl fmt::Display for RepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.rule)?;
        match &self.kind {
            RepairKind::SetHeaderField { field, from, to } => write!(f, "header {field} {from:#x} -> {to:#x}")?,
            RepairKind::Truncate { from, to } => write!(f, "file cut from {from} to {to} bytes")?,
            RepairKind::ZeroBatSlack { from, to } => write!(f, "bytes {from}..{to} after the BAT zeroed")?,
            RepairKind::ClearBatEntry { index, entry } => write!(f, "BAT[{index}] = {entry} cleared")?,
            RepairKind::CompleteCluster { index, present } => write!(
                f,
                "BAT[{index}]'s cluster ({present} bytes in the file) completed with zeros"
            )?,
            RepairKind::MoveCluster { what, from, to, copy } => {
                let verb = if *copy { "copied" } else { "moved" };
                write!(f, "{what}'s cluster {verb} from {from} to {to}")?
            }
            RepairKind::RestoreExtMagic { offset } => write!(f, "extension magic at {offset} restored")?,
            RepairKind::Rechecksum { offset } => write!(f, "extension checksum at {offset} recomputed")?,
            RepairKind::DropExtension { offset } => write!(f, "extension at {offset} dropped, ext_off cleared")?,
            RepairKind::RewriteExtension { offset } => write!(f, "extension at {offset} rewritten")?,
            RepairKind::DropFeature { index, magic } => write!(f, "feature #{index} (magic {magic:#x}) dropped")?,
            RepairKind::DropBitmap { index, name } => write!(f, "bitmap {name} (feature #{index}) dropped")?,
            RepairKind::ClearFeatureFlags { index, flags } => write!(f, "feature #{index}'s flags {flags:#x} cleared")?,
            RepairKind::SetBitmapField { index, field, from, to } => {
                write!(f, "feature #{index}'s {field} {from} -> {to}")?
            }
            RepairKind::ClearTrailingBits { index } => {
                write!(f, "feature #{index}'s bits past the last granule cleared")?
            }
        }
        if let Some((o, l)) = self.bytes {
            write!(f, " [bytes {o}+{l}]")?;
        }
        if !self.lost_guest.is_empty() {
            let r: Vec<String> = self.lost_guest.iter().map(|(o, l)| format!("{o}+{l}")).collect();
            write!(f, "; lost guest {}", r.join(","))?;
        }
        if !self.lost_bitmaps.is_empty() {
            write!(f, "; lost bitmap {}", self.lost_bitmaps.join(","))?;
        }
        Ok(())
    }
}

/// What a repair will do, before anything is written ([`plan_repair`]); [`RepairPlan::write`]
/// does it.
#[derive(Clone, Debug)]
pub struct RepairPlan {
    /// The level asked for.
    pub level: RepairLevel,
    /// The verdict of the input (`check`'s).
    pub before: Verdict,
    /// Every action, in order.
    pub actions: Vec<RepairAction>,
    /// Rules the input breaks that this plan leaves as they are (corruption at
    /// [`RepairLevel::Leaks`]; non-canonical findings and notes of a clean image).
    pub unrepaired: Vec<Rule>,
    /// The bitmaps of the output (names), in record order.
    pub kept_bitmaps: Vec<String>,
    /// The output's length (the input's when nothing is written).
    pub output_len: u64,
    writing: Writing,
}

#[derive(Clone, Debug)]
enum Writing {
    /// Nothing to write.
    Nothing,
    /// The input's bytes with a new header, cut at `len`.
    Patch { header: RawHeader, len: u64 },
    /// Written afresh from the model.
    Model(Box<Model>),
}

/// The repaired image, laid out.
#[derive(Clone, Debug)]
struct Model {
    header: RawHeader,
    cluster_size: u64,
    /// Allocated entries of the output's BAT.
    bat: BTreeMap<u32, u32>,
    /// Clusters copied from the input (data and bitmap clusters).
    clusters: Vec<Copy>,
    /// The extension cluster's bytes and place.
    extension: Option<(u64, Vec<u8>)>,
    file_len: u64,
    /// Header overrides the input's bytes were read through.
    overlay: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone, Copy, Debug)]
struct Copy {
    src: u64,
    dst: u64,
    /// Bits from this one on are written as 0 (a bitmap's last chunk).
    clear_bits_from: Option<u64>,
}

impl RepairPlan {
    /// Whether the plan does nothing (a clean image, or nothing that `level` may repair).
    pub fn is_empty(&self) -> bool {
        matches!(self.writing, Writing::Nothing)
    }

    /// Guest ranges lost by the whole plan.
    pub fn lost_guest(&self) -> Vec<(u64, u64)> {
        self.actions.iter().flat_map(|a| a.lost_guest.iter().copied()).collect()
    }

    /// Bitmaps lost by the whole plan.
    pub fn lost_bitmaps(&self) -> Vec<String> {
        self.actions
            .iter()
            .flat_map(|a| a.lost_bitmaps.iter().cloned())
            .collect()
    }

    /// Writes the repaired image read from `source` (the one the plan was made from) to `out`,
    /// an empty file. Does nothing for an empty plan. Returns the output's length.
    pub fn write(&self, source: &dyn Source, out: &mut File) -> Result<u64> {
        match &self.writing {
            Writing::Nothing => Ok(source.size()),
            Writing::Patch { header, len } => {
                copy_range(source, 0, *len, 0, None, out)?;
                out.seek(SeekFrom::Start(0))?;
                let n = HEADER_SIZE.min(*len as usize);
                out.write_all(&zerocopy::IntoBytes::as_bytes(header)[..n])?;
                out.set_len(*len)?;
                Ok(*len)
            }
            Writing::Model(m) => {
                let src = Overlay {
                    inner: source,
                    patches: &m.overlay,
                };
                m.write(&src, out)?;
                Ok(m.file_len)
            }
        }
    }

    /// [`RepairPlan::write`] into a new vector.
    pub fn to_vec(&self, source: &dyn Source) -> Result<Vec<u8>> {
        if self.is_empty() {
            let mut v = vec![0u8; source.size() as usize];
            let n = source.read_into(0, &mut v)?;
            v.truncate(n);
            return Ok(v);
        }
        let dir = tempfile::tempfile()?;
        let mut f = dir;
        let len = self.write(source, &mut f)?;
        let mut v = vec![0u8; len as usize];
        let fs = crate::source::FileSource::new(f)?;
        let n = fs.read_into(0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

/// Copies `len` bytes of `source` from `from` to `out` at `to`, leaving all-zero pieces as holes;
/// with `clear_bits_from`, bits from that index of the copied range on are written as 0.
fn copy_range(
    source: &dyn Source,
    from: u64,
    len: u64,
    to: u64,
    clear_bits_from: Option<u64>,
    out: &mut File,
) -> Result<()> {
    const PIECE: u64 = 1 << 20;
    let mut buf = vec![0u8; PIECE.min(len) as usize];
    let mut done = 0u64;
    while done < len {
        let n = PIECE.min(len - done) as usize;
        let got = source.read_into(from + done, &mut buf[..n])?;
        buf[got..n].fill(0);
        if let Some(bit) = clear_bits_from {
            let first = bit / 8;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let at = done + i as u64;
                if at > first {
                    *b = 0;
                } else if at == first {
                    *b &= (1u8 << (bit % 8)).wrapping_sub(1);
                }
            }
        }
        if buf[..n].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(to + done))?;
            out.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    Ok(())
}

impl Model {
    fn write(&self, source: &dyn Source, out: &mut File) -> Result<()> {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(zerocopy::IntoBytes::as_bytes(&self.header))?;
        // The BAT, a block of entries at a time; all-zero blocks stay holes.
        const BLOCK: u32 = 16384;
        let n = self.header.bat_entries.get();
        let mut start = 0u32;
        while start < n {
            let end = start.saturating_add(BLOCK).min(n);
            let mut any = false;
            let mut buf = vec![0u8; ((end - start) * 4) as usize];
            for (&i, &e) in self.bat.range(start..end) {
                let at = ((i - start) * 4) as usize;
                buf[at..at + 4].copy_from_slice(&e.to_le_bytes());
                any = true;
            }
            if any {
                out.seek(SeekFrom::Start(HEADER_SIZE as u64 + u64::from(start) * 4))?;
                out.write_all(&buf)?;
            }
            start = end;
        }
        for c in &self.clusters {
            copy_range(source, c.src, self.cluster_size, c.dst, c.clear_bits_from, out)?;
        }
        if let Some((at, bytes)) = &self.extension {
            out.seek(SeekFrom::Start(*at))?;
            out.write_all(bytes)?;
        }
        out.set_len(self.file_len)?;
        out.flush()?;
        Ok(())
    }
}

/// A source read with some of its bytes replaced.
struct Overlay<'a> {
    inner: &'a dyn Source,
    patches: &'a [(u64, Vec<u8>)],
}

impl Source for Overlay<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let got = self.inner.read_at(offset, len)?;
        let end = offset + got.len() as u64;
        if !self
            .patches
            .iter()
            .any(|(o, b)| *o < end && o + b.len() as u64 > offset)
        {
            return Ok(got);
        }
        let mut v = got.into_owned();
        for (o, b) in self.patches {
            let s = (*o).max(offset);
            let e = (o + b.len() as u64).min(end);
            if s < e {
                v[(s - offset) as usize..(e - offset) as usize].copy_from_slice(&b[(s - o) as usize..(e - o) as usize]);
            }
        }
        Ok(Cow::Owned(v))
    }
}

fn guest_range(index: u32, cs: u64, disk: u64) -> (u64, u64) {
    let start = u64::from(index) * cs;
    (start, cs.min(disk.saturating_sub(start)))
}

fn action(rule: Rule, kind: RepairKind) -> RepairAction {
    RepairAction {
        rule,
        kind,
        bytes: None,
        lost_guest: Vec::new(),
        lost_bitmaps: Vec::new(),
    }
}

fn header_bytes(h: &RawHeader) -> Vec<u8> {
    zerocopy::IntoBytes::as_bytes(h).to_vec()
}

/// The number of bytes in which two magics differ.
fn distance(a: &[u8; 16], b: &[u8; 16]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Plans the repair of the image in `source` at `level`; nothing is written.
///
/// Errors: [`RepairError::Unrepairable`] (as [`Error::Repair`]) when the header cannot be
/// interpreted and no value can be inferred (R3, R4); [`Error::NotParallels`],
/// [`Error::EmptyFile`], I/O errors.
///
/// ```
/// use parallels_image::{repair::plan_repair, corrupt, GuestData, Image, ImageBuilder, repair::RepairLevel, validate};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20).cluster_size(64 << 10)
///     .data(0, GuestData::Fill { len: 4096, byte: 0xaa }).to_vec()?;
/// assert!(plan_repair(&bytes, RepairLevel::All)?.is_empty());
/// let patch = corrupt::plan(&Image::parse(&bytes)?, corrupt::DefectKind::InuseSet, 0)?;
/// let mut damaged = bytes.clone();
/// patch.apply_to_vec(&mut damaged);
/// let plan = plan_repair(&damaged, RepairLevel::Leaks)?;
/// assert_eq!(plan.to_vec(&damaged)?, bytes);
/// # Ok::<(), parallels_image::Error>(())
/// ```
pub fn plan_repair(source: &dyn Source, level: RepairLevel) -> Result<RepairPlan> {
    let mut actions = Vec::new();
    let mut overlay: Vec<(u64, Vec<u8>)> = Vec::new();
    // The header, until it can be interpreted (R1, R2, R5, R6 at the level All).
    let mut raw = {
        let head = source.read_at(0, HEADER_SIZE as u64)?;
        RawHeader::read_padded(&head)
    };
    let mut dropped_ext_header: Option<u64> = None;
    let first = loop {
        let src = Overlay {
            inner: source,
            patches: &overlay,
        };
        let violation = match Image::parse_with(&src, RuleMode::Strict) {
            Ok(image) => break validate(&image)?,
            Err(Error::Invalid(v)) => v,
            Err(e) => return Err(e),
        };
        let rule = violation.rule();
        if level == RepairLevel::Leaks && actions.is_empty() {
            // Nothing the leaks level may do on an image it cannot read.
            return Ok(RepairPlan {
                level,
                before: Verdict::Corrupt,
                actions,
                unrepaired: vec![rule],
                kept_bitmaps: Vec::new(),
                output_len: source.size(),
                writing: Writing::Nothing,
            });
        }
        let unrepairable = |field: &'static str| {
            Error::Repair(RepairError::Unrepairable {
                rule,
                field,
                found: violation.to_string(),
            })
        };
        match violation {
            Violation::BadMagic { found } => {
                let (d1, d2) = (distance(&found, &MAGIC_V1), distance(&found, &MAGIC_V2));
                let magic = match d1.cmp(&d2) {
                    std::cmp::Ordering::Less if d1 <= 4 => MAGIC_V1,
                    std::cmp::Ordering::Greater if d2 <= 4 => MAGIC_V2,
                    _ => return Err(unrepairable("magic")),
                };
                raw.magic = magic;
                let word = |m: &[u8; 16]| u64::from_le_bytes(m[..8].try_into().expect("8 bytes"));
                let mut a = action(
                    rule,
                    RepairKind::SetHeaderField {
                        field: HeaderField::Magic.name(),
                        from: word(&found),
                        to: word(&magic),
                    },
                );
                a.bytes = Some(HeaderField::Magic.span());
                actions.push(a);
            }
            Violation::BadVersion { found } => {
                raw.version = VERSION.into();
                let mut a = action(
                    rule,
                    RepairKind::SetHeaderField {
                        field: HeaderField::Version.name(),
                        from: found.into(),
                        to: VERSION.into(),
                    },
                );
                a.bytes = Some(HeaderField::Version.span());
                actions.push(a);
            }
            Violation::CatalogTooLarge { bat_entries, .. } => {
                let tracks = u64::from(raw.tracks.get());
                let nb = raw.nb_sectors.get();
                let needed = nb.div_ceil(tracks);
                if needed > u64::from(MAX_BAT_ENTRIES) {
                    return Err(unrepairable("bat_entries"));
                }
                raw.bat_entries = (needed as u32).into();
                let mut a = action(
                    rule,
                    RepairKind::SetHeaderField {
                        field: HeaderField::BatEntries.name(),
                        from: bat_entries.into(),
                        to: needed,
                    },
                );
                a.bytes = Some(HeaderField::BatEntries.span());
                actions.push(a);
            }
            Violation::ExtOffTooBig { ext_off, .. } => {
                raw.ext_off = 0.into();
                dropped_ext_header = Some(ext_off);
                let mut a = action(
                    rule,
                    RepairKind::DropExtension {
                        offset: Sectors(ext_off).saturating_bytes().get(),
                    },
                );
                a.bytes = Some(HeaderField::ExtOff.span());
                a.lost_bitmaps
                    .push("(every bitmap of the extension: it is past any file)".into());
                actions.push(a);
            }
            Violation::ZeroTracks => return Err(unrepairable("tracks")),
            Violation::ClusterTooBig { .. } => return Err(unrepairable("tracks")),
            _ => return Err(unrepairable("header")),
        }
        overlay = vec![(0, header_bytes(&raw))];
        if actions.len() > 8 {
            return Err(unrepairable("header"));
        }
    };
    let _ = dropped_ext_header;
    let before = if actions.is_empty() {
        first.verdict()
    } else {
        Verdict::Corrupt
    };
    if before == Verdict::Clean && first.count(Severity::NonCanonical) == 0 {
        return Ok(RepairPlan {
            level,
            before,
            actions,
            unrepaired: first.rules(),
            kept_bitmaps: {
                let image = Image::parse(source)?;
                image.bitmaps().iter().map(|b| b.name()).collect()
            },
            output_len: source.size(),
            writing: Writing::Nothing,
        });
    }
    let corrupt_besides_r7 = first
        .findings
        .iter()
        .any(|f| f.severity == Severity::Corruption && f.violation.rule() != Rule::R7);
    if level == RepairLevel::Leaks && corrupt_besides_r7 {
        return plan_patch(source, level, &first);
    }
    plan_model(source, level, before, actions, overlay, &first)
}

/// The leaks level on a corrupt image: canonical header values and the tail cut.
fn plan_patch(source: &dyn Source, level: RepairLevel, report: &Report) -> Result<RepairPlan> {
    let image = Image::parse(source)?;
    let h = image.header();
    let mut raw = h.raw;
    let mut actions = Vec::new();
    canonical_header(&image, report, &mut raw, &mut actions, false);
    let mut len = image.file_len();
    if let Some(at) = report.leak_start() {
        let mut a = action(Rule::R20, RepairKind::Truncate { from: len, to: at });
        a.bytes = Some((at, len - at));
        actions.push(a);
        len = at;
    }
    let unrepaired: Vec<Rule> = report
        .rules()
        .into_iter()
        .filter(|r| !actions.iter().any(|a| a.rule == *r))
        .collect();
    let kept_bitmaps = image.bitmaps().iter().map(|b| b.name()).collect();
    let writing = if actions.is_empty() {
        Writing::Nothing
    } else {
        Writing::Patch { header: raw, len }
    };
    Ok(RepairPlan {
        level,
        before: report.verdict(),
        actions,
        unrepaired,
        kept_bitmaps,
        output_len: len,
        writing,
    })
}

/// R7 (when `clear_unclean`), R8, R9, R10: the header values a careful writer gives.
fn canonical_header(
    image: &Image<'_>,
    report: &Report,
    raw: &mut RawHeader,
    actions: &mut Vec<RepairAction>,
    clear_unclean: bool,
) {
    let has = |r: Rule| report.findings.iter().any(|f| f.violation.rule() == r);
    let inuse = raw.inuse.get();
    if (clear_unclean && inuse == INUSE_OPEN) || has(Rule::R8) {
        let rule = if inuse == INUSE_OPEN { Rule::R7 } else { Rule::R8 };
        raw.inuse = INUSE_CLOSED.into();
        let mut a = action(
            rule,
            RepairKind::SetHeaderField {
                field: HeaderField::Inuse.name(),
                from: inuse.into(),
                to: INUSE_CLOSED.into(),
            },
        );
        a.bytes = Some(HeaderField::Inuse.span());
        actions.push(a);
    }
    let flags = raw.flags.get();
    if flags & !FLAGS_KNOWN != 0 {
        raw.flags = (flags & FLAGS_KNOWN).into();
        let mut a = action(
            Rule::R9,
            RepairKind::SetHeaderField {
                field: HeaderField::Flags.name(),
                from: flags.into(),
                to: (flags & FLAGS_KNOWN).into(),
            },
        );
        a.bytes = Some(HeaderField::Flags.span());
        actions.push(a);
    }
    let nb = raw.nb_sectors.get();
    if image.header().variant == Variant::V1 && nb >> 32 != 0 {
        raw.nb_sectors = (nb & 0xffff_ffff).into();
        let mut a = action(
            Rule::R10,
            RepairKind::SetHeaderField {
                field: HeaderField::NbSectors.name(),
                from: nb,
                to: nb & 0xffff_ffff,
            },
        );
        a.bytes = Some(HeaderField::NbSectors.span());
        actions.push(a);
    }
}

/// Who owns a cluster of the output.
#[derive(Clone, Debug)]
enum Owner {
    Data(u32),
    Extension,
    Chunk { bitmap: usize, l1: usize },
}

struct Obj {
    owner: Owner,
    src: u64,
    dst: Option<u64>,
    /// Why it cannot stay where it is (None: it may).
    misplaced: Option<Rule>,
    clear_bits_from: Option<u64>,
}

/// A bitmap of the output.
struct KeptBitmap {
    feature: usize,
    name: String,
    size: u64,
    id: [u8; 16],
    granularity: u32,
    l1: Vec<u64>,
}

/// What the model plan settles about the input before it places clusters.
struct Geometry {
    /// Cluster size in bytes.
    cs: u64,
    /// The input's length.
    file_len: u64,
    /// `nb_sectors` of the output (R11 applied).
    nb: u64,
    /// The disk's size in bytes.
    disk: u64,
    /// The BAT entries the disk needs.
    needed: u64,
    /// Where the output's BAT ends.
    bat_end: u64,
    /// Where the output's data area starts.
    data_start: u64,
}

/// What the plan does with the extension and its records.
struct ExtPlan {
    /// The bitmaps kept, in record order.
    kept: Vec<KeptBitmap>,
    /// Whether the extension cluster is written afresh.
    rewrite: bool,
    /// Where the kept extension is in the input (None: no extension in the output).
    src: Option<u64>,
}

/// Where each cluster of the output goes and what the output's tables hold.
struct Placed {
    bat: BTreeMap<u32, u32>,
    clusters: Vec<Copy>,
    kept_l1: Vec<Vec<u64>>,
    ext_dst: Option<u64>,
}

/// Whether the report has a finding of rule `r`.
fn has(report: &Report, r: Rule) -> bool {
    report.findings.iter().any(|f| f.violation.rule() == r)
}

fn plan_model(
    source: &dyn Source,
    level: RepairLevel,
    before: Verdict,
    mut actions: Vec<RepairAction>,
    mut overlay: Vec<(u64, Vec<u8>)>,
    first: &Report,
) -> Result<RepairPlan> {
    let (drop_ext, rechecksummed) = settle_extension(source, level, &mut actions, &mut overlay)?;
    let src = Overlay {
        inner: source,
        patches: &overlay,
    };
    let image = Image::parse(&src)?;
    let report = validate(&image)?;
    let h = *image.header();
    let mut raw = h.raw;
    canonical_header(&image, &report, &mut raw, &mut actions, true);
    let g = plan_geometry(&image, &report, &mut raw, &mut actions);
    let data_objs = plan_data_clusters(&image, &g, &mut actions);
    let mut ext = plan_extension(&image, &report, level, &g, drop_ext, rechecksummed, &mut actions);
    let mut objs = extension_objects(&report, &g, &ext, &mut actions);
    objs.extend(data_objs);
    let end = place_clusters(&mut objs, &g);
    let placed = lay_out(&objs, &mut ext, h.variant, &g, &mut actions);
    let extension = extension_bytes(&src, &ext, &placed, g.cs)?;
    let new_ext_off = extension.as_ref().map_or(0, |(d, _)| Bytes(*d).sectors_floor().get());
    if new_ext_off != raw.ext_off.get() {
        raw.ext_off = new_ext_off.into();
    }
    let file_len = g.file_len;
    let file_len_out = end.max(g.data_start);
    if file_len_out < file_len && has(&report, Rule::R20) {
        let mut a = action(
            Rule::R20,
            RepairKind::Truncate {
                from: file_len,
                to: file_len_out,
            },
        );
        a.bytes = Some((file_len_out, file_len - file_len_out));
        actions.push(a);
    }
    let unrepaired = first
        .rules()
        .into_iter()
        .filter(|r| r.severity() == Severity::NonCanonical || r.severity() == Severity::Note)
        .filter(|r| !actions.iter().any(|a| a.rule == *r))
        .collect();
    Ok(RepairPlan {
        level,
        before,
        actions,
        unrepaired,
        kept_bitmaps: ext.kept.iter().map(|k| k.name.clone()).collect(),
        output_len: file_len_out,
        writing: Writing::Model(Box::new(Model {
            header: raw,
            cluster_size: g.cs,
            bat: placed.bat,
            clusters: placed.clusters,
            extension,
            file_len: file_len_out,
            overlay,
        })),
    })
}

/// The extension before the plan: its magic restored when the checksum proves the cluster, its
/// checksum recomputed (provisionally: kept only if every record validates afterwards). Returns
/// why the extension is dropped, if it is, and whether it was re-checksummed.
fn settle_extension(
    source: &dyn Source,
    level: RepairLevel,
    actions: &mut Vec<RepairAction>,
    overlay: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(Option<(Rule, u64)>, bool)> {
    let src = Overlay {
        inner: source,
        patches: overlay,
    };
    let image = Image::parse(&src)?;
    let Some(ext) = image.extension() else {
        return Ok((None, false));
    };
    let off = ext.file_offset;
    let cs = ext.cluster_size;
    if off >= image.file_len() {
        return Ok((Some((Rule::R22, off)), false));
    }
    let bytes = ext.bytes();
    let covered = bytes.get(EXT_HEADER_SIZE.min(bytes.len())..).unwrap_or(&[]);
    let tail = cs.saturating_sub(bytes.len().max(EXT_HEADER_SIZE) as u64);
    let sum = checksum_padded(covered, tail);
    let magic_ok = ext.magic() == EXT_MAGIC;
    let sum_ok = ext.stored_checksum() == sum;
    if !magic_ok && sum_ok && level == RepairLevel::All {
        overlay.push((off, EXT_MAGIC.to_le_bytes().to_vec()));
        let mut a = action(Rule::R24, RepairKind::RestoreExtMagic { offset: off });
        a.bytes = Some((off, 8));
        actions.push(a);
        Ok((None, false))
    } else if !magic_ok {
        Ok((Some((Rule::R24, off)), false))
    } else if !sum_ok {
        overlay.push((off + 8, sum.to_vec()));
        Ok((None, true))
    } else {
        Ok((None, false))
    }
}

/// The header's geometry: the disk ends where the BAT does (R11), a BAT longer than the disk
/// shrinks (R14, R48), the data area starts where it may (R12–R16, R47), the BAT's slack is
/// zeroed (R44).
fn plan_geometry(image: &Image<'_>, report: &Report, raw: &mut RawHeader, actions: &mut Vec<RepairAction>) -> Geometry {
    let h = *image.header();
    let cs = h.cluster_size();
    let file_len = image.file_len();

    // R11: the disk ends where the BAT does.
    let mut nb = h.nb_sectors;
    let covered = u64::from(h.bat_entries) * u64::from(h.cluster_sectors);
    if nb > covered {
        let mut a = action(
            Rule::R11,
            RepairKind::SetHeaderField {
                field: HeaderField::NbSectors.name(),
                from: nb,
                to: covered,
            },
        );
        a.bytes = Some(HeaderField::NbSectors.span());
        a.lost_guest.push((
            Sectors(covered).saturating_bytes().get(),
            Sectors(nb - covered).saturating_bytes().get(),
        ));
        actions.push(a);
        nb = covered;
        raw.nb_sectors = nb.into();
    }
    let disk = Sectors(nb).saturating_bytes().get();
    let needed = nb.div_ceil(u64::from(h.cluster_sectors));

    // R14, R48: a BAT longer than the disk, whose surplus entries are all 0, shrinks.
    let mut bat_entries = u64::from(h.bat_entries);
    if (has(report, Rule::R14) || has(report, Rule::R48)) && bat_entries > needed {
        let surplus_zero = image.allocated_entries().all(|(i, _)| u64::from(i) < needed);
        if surplus_zero {
            let rule = if has(report, Rule::R48) { Rule::R48 } else { Rule::R14 };
            let mut a = action(
                rule,
                RepairKind::SetHeaderField {
                    field: HeaderField::BatEntries.name(),
                    from: bat_entries,
                    to: needed,
                },
            );
            a.bytes = Some(HeaderField::BatEntries.span());
            actions.push(a);
            bat_entries = needed;
            raw.bat_entries = (needed as u32).into();
        }
    }
    let bat_end = HEADER_SIZE as u64 + 4 * bat_entries;
    let data_start = plan_data_area(image, report, raw, bat_end, actions);
    Geometry {
        cs,
        file_len,
        nb,
        disk,
        needed,
        bat_end,
        data_start,
    }
}

/// Where the output's data area starts: where it is, unless it may not be there (R12–R16), then
/// at the first cluster boundary after the BAT; `data_off` says so (R47); the BAT's slack is
/// zeroed (R44).
fn plan_data_area(
    image: &Image<'_>,
    report: &Report,
    raw: &mut RawHeader,
    bat_end: u64,
    actions: &mut Vec<RepairAction>,
) -> u64 {
    let h = *image.header();
    let cs = h.cluster_size();
    let data_off = h.raw.data_off.get();
    let cur_start = match (h.variant, data_off) {
        (Variant::V1, 0) => bat_end.next_multiple_of(SECTOR_SIZE),
        (_, d) => Sectors::bytes_of_u32(d).get(),
    };
    let min_start = match h.variant {
        Variant::V1 => bat_end.next_multiple_of(SECTOR_SIZE),
        Variant::V2 => bat_end.next_multiple_of(cs),
    };
    let below = image
        .allocated_entries()
        .any(|(_, e)| h.bat_entry_offset(e).is_some_and(|o| o < cur_start));
    let misplaced = if h.variant == Variant::V2 && data_off == 0 {
        Some(Rule::R12)
    } else if h.variant == Variant::V2 && !data_off.is_multiple_of(h.cluster_sectors) {
        Some(Rule::R13)
    } else if cur_start < min_start {
        Some(Rule::R14)
    } else if cur_start > image.file_len() {
        Some(Rule::R15)
    } else if below {
        Some(Rule::R16)
    } else {
        None
    };
    let data_start = match misplaced {
        Some(_) => bat_end.next_multiple_of(cs),
        None => cur_start,
    };
    let new_off = Bytes(data_start).sectors_floor().get();
    if new_off != u64::from(data_off) {
        let rule = misplaced.unwrap_or(Rule::R47);
        let mut a = action(
            rule,
            RepairKind::SetHeaderField {
                field: HeaderField::DataOff.name(),
                from: data_off.into(),
                to: new_off,
            },
        );
        a.bytes = Some(HeaderField::DataOff.span());
        actions.push(a);
        raw.data_off = (new_off as u32).into();
    }
    if has(report, Rule::R44) {
        let mut a = action(
            Rule::R44,
            RepairKind::ZeroBatSlack {
                from: bat_end,
                to: data_start,
            },
        );
        a.bytes = Some((bat_end, data_start.saturating_sub(bat_end)));
        actions.push(a);
    }
    data_start
}

/// The data clusters kept: entries past the disk (R43), below the data area (R16) or past the
/// end of the file (R18) are cleared; a cluster cut short by the end is completed (R18).
fn plan_data_clusters(image: &Image<'_>, g: &Geometry, actions: &mut Vec<RepairAction>) -> Vec<Obj> {
    let h = image.header();
    let (cs, file_len, data_start) = (g.cs, g.file_len, g.data_start);
    let mut data_objs: Vec<Obj> = Vec::new();
    for (index, entry) in image.allocated_entries() {
        let Some(off) = h.bat_entry_offset(entry) else { continue };
        let lost = |rule: Rule| {
            let mut a = action(rule, RepairKind::ClearBatEntry { index, entry });
            a.bytes = Some((HEADER_SIZE as u64 + 4 * u64::from(index), 4));
            if u64::from(index) < g.needed {
                a.lost_guest.push(guest_range(index, cs, g.disk));
            }
            a
        };
        if u64::from(index) >= g.needed {
            actions.push(lost(Rule::R43));
        } else if off < data_start {
            actions.push(lost(Rule::R16));
        } else if off >= file_len {
            actions.push(lost(Rule::R18));
        } else {
            if off + cs > file_len {
                let mut a = action(
                    Rule::R18,
                    RepairKind::CompleteCluster {
                        index,
                        present: file_len - off,
                    },
                );
                a.bytes = Some((off, file_len - off));
                actions.push(a);
            }
            let misplaced = (!(off - data_start).is_multiple_of(cs)).then_some(Rule::R17);
            data_objs.push(Obj {
                owner: Owner::Data(index),
                src: off,
                dst: None,
                misplaced,
                clear_bits_from: None,
            });
        }
    }
    data_objs
}

/// The extension and its records: the extension dropped (R22, R24, R25) or kept, each record
/// kept with its fixes or dropped, the list rewritten when it must be (R26, R28–R31), trailing
/// bits cleared (R42).
fn plan_extension(
    image: &Image<'_>,
    report: &Report,
    level: RepairLevel,
    g: &Geometry,
    mut drop_ext: Option<(Rule, u64)>,
    rechecksummed: bool,
    actions: &mut Vec<RepairAction>,
) -> ExtPlan {
    let mut plan = ExtPlan {
        kept: Vec::new(),
        rewrite: false,
        src: None,
    };
    let Some(ext) = image.extension() else {
        return plan;
    };
    let cs = g.cs;
    let off = ext.file_offset;
    let feature_corrupt = report.findings.iter().any(|f| {
        let r = f.violation.rule();
        f.severity == Severity::Corruption && ((Rule::R26..=Rule::R42).contains(&r) || r == Rule::R49)
    });
    if drop_ext.is_none() && rechecksummed && feature_corrupt {
        drop_ext = Some((Rule::R25, off));
    }
    if let Some((rule, off)) = drop_ext {
        let mut a = action(rule, RepairKind::DropExtension { offset: off });
        a.bytes = Some((off, cs));
        a.lost_bitmaps = image.bitmaps().iter().map(|b| b.name()).collect();
        if a.lost_bitmaps.is_empty() && ext.magic() != EXT_MAGIC {
            // The cluster is not an extension: whatever it held is not known.
            a.lost_bitmaps
                .push("(the bitmaps of the unreadable extension, if any)".into());
        }
        actions.push(a);
        return plan;
    }
    if rechecksummed {
        let mut a = action(Rule::R25, RepairKind::Rechecksum { offset: off });
        a.bytes = Some((off + 8, 16));
        actions.push(a);
    }
    plan.src = Some(off);
    for f in ext.features() {
        let (kept, rewrite) = plan_record(ext, f, report, level, g, &plan.kept, actions);
        plan.rewrite |= rewrite;
        plan.kept.extend(kept);
    }
    // R28: the record whose data runs past the cluster is not among the features.
    if let crate::extension::ListEnd::Overflow { entry, .. } = ext.end() {
        let magic = entry.header.magic.get();
        let mut a = action(
            Rule::R28,
            RepairKind::DropFeature {
                index: entry.index,
                magic,
            },
        );
        a.bytes = Some((off + entry.offset, cs - entry.offset));
        if magic == FEATURE_DIRTY_BITMAP {
            let data = ext.slice(entry.offset + 24..cs);
            a.lost_bitmaps
                .push(uuid::Uuid::from_bytes(crate::raw::padded::<16>(data, 8)).to_string());
        }
        actions.push(a);
        plan.rewrite = true;
    }
    if let Some(rule) = [Rule::R26, Rule::R30, Rule::R31].into_iter().find(|r| has(report, *r)) {
        let mut a = action(rule, RepairKind::RewriteExtension { offset: off });
        a.bytes = Some((off, cs));
        actions.push(a);
        plan.rewrite = true;
    }
    // R42: bits past the last granule.
    for f in report.findings.iter() {
        if let Violation::BitmapTrailingBits { feature, .. } = f.violation {
            if plan.kept.iter().any(|k| k.feature == feature) {
                actions.push(action(Rule::R42, RepairKind::ClearTrailingBits { index: feature }));
            }
        }
    }
    if plan.kept.is_empty() && plan.rewrite {
        // No record is left: no extension.
        plan.src = None;
        let mut a = action(Rule::R29, RepairKind::DropExtension { offset: off });
        a.rule = actions.last().map_or(Rule::R29, |a| a.rule);
        a.bytes = Some((off, cs));
        actions.push(a);
    }
    plan
}

/// One feature record of a kept extension: dropped (R29, R32, R35–R37, R39–R41, R49), or kept
/// as a bitmap with its fields fixed (R27, R33, R34, R37). Returns the bitmap kept, if any, and
/// whether the extension must be rewritten for this record.
fn plan_record(
    ext: &crate::extension::Extension<'_>,
    f: &crate::extension::FeatureEntry,
    report: &Report,
    level: RepairLevel,
    g: &Geometry,
    kept: &[KeptBitmap],
    actions: &mut Vec<RepairAction>,
) -> (Option<KeptBitmap>, bool) {
    let (cs, nb, off) = (g.cs, g.nb, ext.file_offset);
    let magic = f.header.magic.get();
    let flags = f.header.flags.get();
    let record_bytes = Some((off + f.offset, 24 + u64::from(f.header.data_size.get())));
    if magic != FEATURE_DIRTY_BITMAP {
        let mut a = action(Rule::R29, RepairKind::DropFeature { index: f.index, magic });
        a.bytes = record_bytes;
        actions.push(a);
        return (None, true);
    }
    // The record's bitmap header and L1 table, read from the cluster.
    let data = ext.slice(f.data_range());
    let name = uuid::Uuid::from_bytes(crate::raw::padded::<16>(data, 8)).to_string();
    let drop = |rule: Rule, actions: &mut Vec<RepairAction>| {
        let mut a = action(
            rule,
            RepairKind::DropBitmap {
                index: f.index,
                name: name.clone(),
            },
        );
        a.bytes = record_bytes;
        a.lost_bitmaps.push(name.clone());
        actions.push(a);
        (None, true)
    };
    if nb == 0 {
        return drop(Rule::R49, actions);
    }
    let mut rewrite = false;
    if flags != 0 {
        if level == RepairLevel::Leaks {
            return (None, false);
        }
        let mut a = action(Rule::R27, RepairKind::ClearFeatureFlags { index: f.index, flags });
        a.bytes = Some((off + f.offset + 8, 8));
        actions.push(a);
        rewrite = true;
    }
    let data_size = u64::from(f.header.data_size.get());
    if data_size < 32 {
        return drop(Rule::R32, actions);
    }
    let size = u64::from_le_bytes(crate::raw::padded::<8>(data, 0));
    let id = crate::raw::padded::<16>(data, 8);
    let gran = u32::from_le_bytes(crate::raw::padded::<4>(data, 24));
    let l1_size = u32::from_le_bytes(crate::raw::padded::<4>(data, 28));
    if data_size < 32 + 8 * u64::from(l1_size) {
        return drop(Rule::R32, actions);
    }
    if gran == 0 || !gran.is_power_of_two() {
        return drop(Rule::R35, actions);
    }
    if Sectors::bytes_of_u32(gran) > Bytes(1 << 31) {
        return drop(Rule::R36, actions);
    }
    if kept.iter().any(|k| k.id == id) {
        return drop(Rule::R41, actions);
    }
    if let Some(rule) = l1_outside(report, f.index, flags, data, l1_size, g) {
        return drop(rule, actions);
    }
    let l1: Vec<u64> = (0..l1_size as u64)
        .map(|i| u64::from_le_bytes(crate::raw::padded::<8>(data, 32 + 8 * i)))
        .collect();
    let Some(l1) = fit_l1(f.index, off + f.offset, l1, nb, gran, cs, actions) else {
        return drop(Rule::R37, actions);
    };
    if l1.len() as u64 != u64::from(l1_size) {
        rewrite = true;
    }
    if size != nb {
        let mut a = action(
            Rule::R34,
            RepairKind::SetBitmapField {
                index: f.index,
                field: "size",
                from: size,
                to: nb,
            },
        );
        a.bytes = Some((off + f.offset + 24, 8));
        actions.push(a);
        rewrite = true;
    }
    if data_size != 32 + 8 * u64::from(l1_size) {
        let mut a = action(
            Rule::R33,
            RepairKind::SetBitmapField {
                index: f.index,
                field: "data_size",
                from: data_size,
                to: 32 + 8 * l1.len() as u64,
            },
        );
        a.bytes = Some((off + f.offset + 16, 4));
        actions.push(a);
        rewrite = true;
    }
    let bitmap = KeptBitmap {
        feature: f.index,
        name,
        size: nb,
        id,
        granularity: gran,
        l1,
    };
    (Some(bitmap), rewrite)
}

/// R39, R40: the rule of a record's chunk outside the file or on someone else's cluster, if any.
fn l1_outside(report: &Report, feature: usize, flags: u64, data: &[u8], l1_size: u32, g: &Geometry) -> Option<Rule> {
    let found = report
        .findings
        .iter()
        .filter(|x| violation_feature(&x.violation) == Some(feature))
        .find_map(|x| match x.violation.rule() {
            r @ (Rule::R39 | Rule::R40) => Some(r),
            _ => None,
        });
    found.or_else(|| {
        // A record with flags was not checked as a bitmap: check its chunks here.
        (flags != 0)
            .then(|| {
                (0..l1_size as usize).find_map(|i| {
                    let e = u64::from_le_bytes(crate::raw::padded::<8>(data, 32 + 8 * i as u64));
                    (e > 1 && Sectors(e).saturating_bytes().get().saturating_add(g.cs) > g.file_len)
                        .then_some(Rule::R39)
                })
            })
            .flatten()
    })
}

/// R37: the L1 table of the length the disk needs: kept, cut (its surplus all 0) or made (it was
/// empty); `None` when the record must be dropped.
fn fit_l1(
    index: usize,
    record: u64,
    l1: Vec<u64>,
    nb: u64,
    gran: u32,
    cs: u64,
    actions: &mut Vec<RepairAction>,
) -> Option<Vec<u64>> {
    let granules = nb.div_ceil(u64::from(gran));
    let expected = granules.div_ceil(cs * 8);
    // A table that cannot fit in the extension cluster is not this bitmap's.
    let fits = expected
        .checked_mul(8)
        .is_some_and(|b| b + 32 + 2 * 24 + EXT_HEADER_SIZE as u64 <= cs);
    let resize = |from: u64, actions: &mut Vec<RepairAction>| {
        let mut a = action(
            Rule::R37,
            RepairKind::SetBitmapField {
                index,
                field: "l1_size",
                from,
                to: expected,
            },
        );
        a.bytes = Some((record + 24 + 28, 4));
        actions.push(a);
    };
    if !fits {
        None
    } else if l1.len() as u64 == expected {
        Some(l1)
    } else if l1.len() as u64 > expected && l1[expected as usize..].iter().all(|&e| e == 0) {
        resize(l1.len() as u64, actions);
        Some(l1[..expected as usize].to_vec())
    } else if l1.is_empty() {
        resize(0, actions);
        Some(vec![0; expected as usize])
    } else {
        None
    }
}

/// The clusters of the kept extension and of its bitmaps, the extension first, then bitmap
/// clusters in L1 order, each with why it cannot stay where it is (R21, R23, R38, R45); the
/// extension cut short by the end of the file is rewritten (R22).
fn extension_objects(report: &Report, g: &Geometry, ext: &ExtPlan, actions: &mut Vec<RepairAction>) -> Vec<Obj> {
    let (cs, data_start) = (g.cs, g.data_start);
    let mut objs = Vec::new();
    if let Some(off) = ext.src {
        let misplaced = if off < data_start {
            Some(if off < g.bat_end { Rule::R23 } else { Rule::R45 })
        } else if !(off - data_start).is_multiple_of(cs) {
            Some(Rule::R21)
        } else {
            None
        };
        if off + cs > g.file_len {
            let mut a = action(Rule::R22, RepairKind::RewriteExtension { offset: off });
            a.bytes = Some((off, g.file_len - off));
            actions.push(a);
        }
        objs.push(Obj {
            owner: Owner::Extension,
            src: off,
            dst: None,
            misplaced,
            clear_bits_from: None,
        });
    }
    for (b, k) in ext.kept.iter().enumerate() {
        let granules = g.nb.div_ceil(u64::from(k.granularity));
        let trailing = report
            .findings
            .iter()
            .any(|f| matches!(f.violation, Violation::BitmapTrailingBits { feature, .. } if feature == k.feature));
        for (i, &e) in k.l1.iter().enumerate() {
            if e <= 1 {
                continue;
            }
            let off = Sectors(e).saturating_bytes().get();
            let misplaced = if off < data_start {
                Some(Rule::R45)
            } else if !(off - data_start).is_multiple_of(cs) {
                Some(Rule::R38)
            } else {
                None
            };
            let last = i + 1 == k.l1.len();
            objs.push(Obj {
                owner: Owner::Chunk { bitmap: b, l1: i },
                src: off,
                dst: None,
                misplaced,
                clear_bits_from: (trailing && last).then(|| granules - i as u64 * cs * 8),
            });
        }
    }
    objs
}

/// Places: each cluster keeps its own if it may and it is free (else R19, R40); the others take
/// the lowest free one (R23 when the extension held it); holes below the last cluster are filled
/// by moving the last one down (R46). Returns where the output's last cluster ends.
fn place_clusters(objs: &mut [Obj], g: &Geometry) -> u64 {
    let (cs, data_start) = (g.cs, g.data_start);
    let slot_of = |off: u64| (off - data_start) / cs;
    let mut taken: BTreeMap<u64, usize> = BTreeMap::new();
    for (n, o) in objs.iter_mut().enumerate() {
        if o.misplaced.is_none() {
            let s = slot_of(o.src);
            if let std::collections::btree_map::Entry::Vacant(v) = taken.entry(s) {
                v.insert(n);
                o.dst = Some(o.src);
            } else {
                o.misplaced = Some(match o.owner {
                    Owner::Data(_) => Rule::R19,
                    _ => Rule::R40,
                });
            }
        }
    }
    // Who held each contested place, for the copy's rule.
    let holders: BTreeMap<u64, usize> = taken.clone();
    let mut cursor = 0u64;
    let free = |taken: &BTreeMap<u64, usize>, cursor: &mut u64| {
        while taken.contains_key(cursor) {
            *cursor += 1;
        }
        *cursor
    };
    for n in 0..objs.len() {
        if objs[n].dst.is_none() {
            let s = free(&taken, &mut cursor);
            taken.insert(s, n);
            objs[n].dst = Some(data_start + s * cs);
            if objs[n].misplaced == Some(Rule::R19) {
                if let Some(&h) = holders.get(&slot_of(objs[n].src)) {
                    if matches!(objs[h].owner, Owner::Extension) {
                        objs[n].misplaced = Some(Rule::R23);
                    }
                }
            }
        }
    }
    // Holes below the last cluster: the last one moves down.
    while let Some((&high, &n)) = taken.last_key_value() {
        let low = free(&taken, &mut cursor);
        if low >= high {
            break;
        }
        taken.remove(&high);
        taken.insert(low, n);
        objs[n].dst = Some(data_start + low * cs);
        if objs[n].misplaced.is_none() {
            objs[n].misplaced = Some(Rule::R46);
        }
    }
    taken
        .last_key_value()
        .map_or(data_start, |(&s, _)| data_start + (s + 1) * cs)
}

/// The output's BAT, bitmap tables and clusters from the places given, with a move action for
/// each cluster that moves; a bitmap cluster that moves makes the extension rewritten.
fn lay_out(objs: &[Obj], ext: &mut ExtPlan, variant: Variant, g: &Geometry, actions: &mut Vec<RepairAction>) -> Placed {
    let cs = g.cs;
    let mut placed = Placed {
        bat: BTreeMap::new(),
        clusters: Vec::new(),
        kept_l1: ext.kept.iter().map(|k| k.l1.clone()).collect(),
        ext_dst: None,
    };
    for o in objs {
        let dst = o.dst.expect("every cluster has a place");
        if let Some(rule) = o.misplaced {
            let (what, copy) = match o.owner {
                Owner::Data(i) => (format!("BAT[{i}]"), matches!(rule, Rule::R19 | Rule::R23)),
                Owner::Extension => ("the extension".to_string(), false),
                Owner::Chunk { bitmap, l1 } => (format!("bitmap {} L1[{l1}]", ext.kept[bitmap].name), false),
            };
            let mut a = action(
                rule,
                RepairKind::MoveCluster {
                    what,
                    from: o.src,
                    to: dst,
                    copy,
                },
            );
            a.bytes = Some((o.src, cs.min(g.file_len.saturating_sub(o.src))));
            actions.push(a);
        }
        match o.owner {
            Owner::Data(i) => {
                let entry = match variant {
                    Variant::V1 => Bytes(dst).sectors_floor().get(),
                    Variant::V2 => dst / cs,
                };
                placed.bat.insert(i, entry as u32);
                placed.clusters.push(Copy {
                    src: o.src,
                    dst,
                    clear_bits_from: None,
                });
            }
            Owner::Chunk { bitmap, l1 } => {
                placed.kept_l1[bitmap][l1] = Bytes(dst).sectors_floor().get();
                if dst != o.src {
                    ext.rewrite = true;
                }
                placed.clusters.push(Copy {
                    src: o.src,
                    dst,
                    clear_bits_from: o.clear_bits_from,
                });
            }
            Owner::Extension => placed.ext_dst = Some(dst),
        }
    }
    placed
}

/// The output's extension cluster and where it goes: written afresh from the kept bitmaps when
/// it must be, else the input's cluster.
fn extension_bytes(src: &dyn Source, ext: &ExtPlan, placed: &Placed, cs: u64) -> Result<Option<(u64, Vec<u8>)>> {
    let (Some(off), Some(dst)) = (ext.src, placed.ext_dst) else {
        return Ok(None);
    };
    let bytes = if ext.rewrite {
        let records = ext
            .kept
            .iter()
            .zip(&placed.kept_l1)
            .map(|(k, l1)| {
                FeatureRecord::dirty_bitmap(DirtyBitmapFeature::new(k.size, k.id, k.granularity, l1.clone()))
            })
            .collect();
        ExtensionCluster::new(records)
            .to_cluster(cs as usize)
            .map_err(|e| crate::error::BuildError::Extension(e.to_string()))?
    } else {
        let mut v = vec![0u8; cs as usize];
        let n = src.read_into(off, &mut v)?;
        v[n..].fill(0);
        v
    };
    Ok(Some((dst, bytes)))
}

/// The feature number a violation is about, if any.
fn violation_feature(v: &Violation) -> Option<usize> {
    match *v {
        Violation::BitmapDataTooShort { index, .. }
        | Violation::BitmapExtraData { index, .. }
        | Violation::BitmapSizeMismatch { index, .. }
        | Violation::BitmapGranularityInvalid { index, .. }
        | Violation::BitmapGranularityTooBig { index, .. }
        | Violation::BitmapL1Size { index, .. }
        | Violation::DuplicateBitmapId { index, .. } => Some(index),
        Violation::L1EntryUnaligned { feature, .. }
        | Violation::L1EntryPastEof { feature, .. }
        | Violation::L1EntryOverlap { feature, .. }
        | Violation::BitmapTrailingBits { feature, .. } => Some(feature),
        _ => None,
    }
}
