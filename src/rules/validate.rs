//! The validation pass: every rule of `spec/`, over a parsed [`Image`], as a list of findings.
//!
//! Findings come in the order a reader meets them: header, data area, BAT, extension cluster,
//! features, bitmaps, and leaked space last.

use crate::bitmap::Bitmap;
use crate::error::{Error, Region, Result, Violation};
use crate::extension::{Extension, FeatureEntry, ListEnd};
use crate::header::{Header, Variant};
use crate::image::{Image, RuleMode};
use crate::raw::bat::BAT_OFFSET;
use crate::raw::bitmap::{BITMAP_HEADER_SIZE, L1_DIRTY};
use crate::raw::feature::FEATURE_DIRTY_BITMAP;
use crate::raw::header::{FLAGS_KNOWN, INUSE_CLOSED, INUSE_CLOSED_V21, INUSE_OPEN, INUSE_PD17, INUSE_PD22};
use crate::raw::{padded, Bytes, Sectors};
use crate::rule::{Rule, Severity};
use crate::source::Source;

/// QEMU reads the header and BAT in one request, rounded up to its memory alignment (the page
/// size), of at most this many bytes (R48).
const QEMU_MAX_REQUEST: u64 = 2_147_483_136;
const QEMU_MEM_ALIGN: u64 = 4096;
/// The largest `bat_entries` QEMU reads (R48).
pub const MAX_READABLE_BAT: u32 = 536_869_872;

/// One finding: a violation and its severity in the mode the image was parsed in.
///
/// As JSON (feature `serde`): `code` (the rule, `"R7"`), `severity`, `location` (as text),
/// `where` (the location as an object) and `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What rule is broken, where, and how.
    pub violation: Violation,
    /// How serious it is.
    pub severity: Severity,
}

/// What a [`Report`] amounts to, in the categories and exit statuses of `qemu-img check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum Verdict {
    /// Nothing corrupt, nothing leaked (non-canonical findings and notes allowed).
    Clean,
    /// Leaked space, nothing corrupt.
    Leaks,
    /// At least one corruption.
    Corrupt,
}

impl Verdict {
    /// The verdict of findings of these severities: corrupt if any is a corruption, else leaks
    /// if any is a leak, else clean.
    pub fn of(severities: impl IntoIterator<Item = Severity>) -> Verdict {
        severities.into_iter().fold(Verdict::Clean, |v, s| match (v, s) {
            (Verdict::Corrupt, _) | (_, Severity::Corruption) => Verdict::Corrupt,
            (_, Severity::Leak) => Verdict::Leaks,
            (v, _) => v,
        })
    }

    /// The exit status `qemu-img check` (and `prlimg check`) gives: 0, 3 or 2.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Clean => 0,
            Verdict::Leaks => 3,
            Verdict::Corrupt => 2,
        }
    }

    /// `"clean"`, `"leaks"` or `"corrupt"`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Leaks => "leaks",
            Verdict::Corrupt => "corrupt",
        }
    }
}

/// Everything the validator found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// Findings in the order they were met.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings of this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }

    /// True when nothing is corrupt and nothing leaks.
    pub fn is_clean(&self) -> bool {
        self.count(Severity::Corruption) == 0 && self.count(Severity::Leak) == 0
    }

    /// What the findings amount to, in `qemu-img check`'s terms.
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.findings.iter().map(|f| f.severity))
    }

    /// The bytes leaked after the last referenced cluster (R20), 0 when none.
    pub fn leaked_bytes(&self) -> u64 {
        self.findings
            .iter()
            .map(|f| match f.violation {
                Violation::Leak { len, .. } => len,
                _ => 0,
            })
            .sum()
    }

    /// Where the leaked tail starts (R20): the end of the last referenced byte; `None` when
    /// nothing leaks.
    pub fn leak_start(&self) -> Option<u64> {
        self.findings.iter().find_map(|f| match f.violation {
            Violation::Leak { offset, .. } => Some(offset),
            _ => None,
        })
    }

    /// The rules broken, in the order they were met, without repeats.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        for f in &self.findings {
            if !out.contains(&f.violation.rule()) {
                out.push(f.violation.rule());
            }
        }
        out
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let location = self.violation.location();
        let mut st = s.serialize_struct("Finding", 5)?;
        st.serialize_field("code", &self.violation.rule())?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("location", &location.to_string())?;
        st.serialize_field("where", &location)?;
        st.serialize_field("message", &self.violation.to_string())?;
        st.end()
    }
}

struct Findings {
    mode: RuleMode,
    out: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, violation: Violation) {
        let lenient_note = self.mode == RuleMode::Lenient
            && matches!(
                violation,
                Violation::UnknownFeature { .. } | Violation::FeatureFlags { .. }
            );
        let severity = if lenient_note {
            Severity::Note
        } else {
            violation.severity()
        };
        self.out.push(Finding { violation, severity });
    }
}

/// The clusters the BAT points at, as slots of the data area, for duplicate and overlap tests.
/// One bit per cluster of the file while that is no more than the BAT in the file holds (or
/// 1 MiB), a sorted list of `(slot, index, entry)` otherwise (a sparse file whose apparent size
/// is much larger than its metadata), so memory follows what the file holds.
enum Slots {
    Bits(Vec<u64>),
    Sorted(Vec<(u64, u32, u32)>),
}

struct DataClusters {
    base: u64,
    cluster_size: u64,
    /// `log2(cluster_size)` when it is a power of two.
    shift: Option<u32>,
    slots: Slots,
    /// Slot and the BAT index of its first entry, sorted by slot, built on the first overlap
    /// found (only messages need it).
    owners: std::sync::OnceLock<Vec<(u64, u32)>>,
    /// Whether the data area's start passed R12–R15 (so that R45 can speak of it).
    area_ok: bool,
    /// The data clusters' ranges, when the walk kept them.
    ranges: Option<Ranges>,
}

impl DataClusters {
    fn slot_of(&self, off: u64) -> Option<u64> {
        grid_slot(off, self.base, self.cluster_size, self.shift)
    }

    /// Whether `[off, off + cluster_size)` overlaps a data cluster; returns its BAT index if known.
    fn overlap(&self, image: &Image<'_>, off: u64) -> Option<u32> {
        // The cluster covers one slot when aligned, two otherwise.
        let rel = off.saturating_sub(self.base);
        let first = rel / self.cluster_size;
        let last = rel.div_ceil(self.cluster_size);
        let hit = |slot: u64| -> bool {
            match &self.slots {
                Slots::Bits(bits) => SlotView { bits }.get(slot),
                Slots::Sorted(v) => v.binary_search_by_key(&slot, |e| e.0).is_ok(),
            }
        };
        let slot = (first..=last).find(|&s| hit(s))?;
        let owners = self.owners.get_or_init(|| {
            // (slot, index) sorted: the first of each slot is its lowest index, the owner.
            let mut v: Vec<(u64, u32)> = image
                .allocated_entries()
                .filter_map(|(i, e)| Some((image.header().bat_entry_offset(e).and_then(|o| self.slot_of(o))?, i)))
                .collect();
            v.sort_unstable();
            v.dedup_by_key(|x| x.0);
            v
        });
        Some(owners.binary_search_by_key(&slot, |x| x.0).map_or(0, |k| owners[k].1))
    }
}

/// The slot of the cluster grid (clusters of `cs` bytes from `base`) that starts at byte `off`,
/// `None` when no slot starts there.
#[inline]
fn grid_slot(off: u64, base: u64, cs: u64, shift: Option<u32>) -> Option<u64> {
    let (slot, within) = div_rem(off.checked_sub(base)?, cs, shift);
    (within == 0).then_some(slot)
}

/// `(x / d, x % d)`, by a shift and a mask when `d` is a power of two (`shift` is its log2).
#[inline]
fn div_rem(x: u64, d: u64, shift: Option<u32>) -> (u64, u64) {
    match shift {
        Some(s) => (x >> s, x & (d - 1)),
        None => (x / d, x % d),
    }
}

/// Who runs the rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread, alone.
    Caller,
    /// On a machine with more than one CPU, the calling thread hashes an extension cluster of
    /// 256 KiB or more while a helper thread (one, started on first use and kept) runs the
    /// rules after the checksum, when they cost enough: more than 32 feature records, or a
    /// bitmap cluster to read. Otherwise, or while the helper works for another thread's
    /// validation, as [`Threads::Caller`].
    #[default]
    Helper,
}

/// Parses and validates in strict mode; fails with the first corruption found.
pub fn open<'s>(source: &'s (dyn Source + 's)) -> Result<Image<'s>> {
    open_with(source, RuleMode::Strict)
}

/// Parses and validates; fails with the first corruption found.
pub fn open_with<'s>(source: &'s (dyn Source + 's), mode: RuleMode) -> Result<Image<'s>> {
    let image = Image::parse_with(source, mode)?;
    let report = validate(&image)?;
    if let Some(f) = report.findings.into_iter().find(|f| f.severity == Severity::Corruption) {
        return Err(Error::Invalid(f.violation));
    }
    Ok(image)
}

/// Runs every rule over `image` and reports all findings (a large extension cluster is hashed
/// while a helper thread runs the other rules: [`Threads::Helper`]).
pub fn validate(image: &Image<'_>) -> Result<Report> {
    validate_with(image, Threads::Helper)
}

/// [`validate`], choosing whether a helper thread may take part. The report does not depend on
/// `threads`. An image parsed without its BAT ([`Image::parse_without_bat`]) has the BAT's
/// allocated entries read first.
pub fn validate_with(image: &Image<'_>, threads: Threads) -> Result<Report> {
    validate_feeding(image, threads, &mut |_, _, _| {}).map(|(report, _)| report)
}

/// Where the rules' bit set of data clusters ([`SlotView`]) puts its slots: slot `s` is the
/// cluster `[base + s * cluster_size, + cluster_size)`; it is marked once an entry's cluster
/// there passed R16–R18 (at or past `data_start`, ending in a file of `file_len` bytes, and,
/// for v1, on the data area's grid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotGrid {
    pub base: u64,
    pub cluster_size: u64,
    pub data_start: u64,
    pub file_len: u64,
}

/// The grid of the rules' bit set of data clusters of `image`.
pub(crate) fn slot_grid(image: &Image<'_>) -> SlotGrid {
    let h = image.header();
    let (cluster_size, data_start) = (h.cluster_size(), h.data_start());
    SlotGrid {
        base: match h.variant {
            Variant::V1 => data_start % cluster_size,
            Variant::V2 => 0,
        },
        cluster_size,
        data_start,
        file_len: image.file_len(),
    }
}

/// The rules' bit set of data clusters (on the grid [`slot_grid`] gives) as it stands when an
/// entry is fed to the other consumers of the walk: marked for the entries before it, not yet
/// for it.
#[derive(Clone, Copy)]
pub(crate) struct SlotView<'a> {
    pub bits: &'a [u64],
}

impl SlotView<'_> {
    /// Whether slot `slot` is marked.
    #[inline]
    pub fn get(&self, slot: u64) -> bool {
        self.bits
            .get((slot / 64) as usize)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }
}

/// [`validate_with`], handing every allocated BAT entry `(index, entry)` to `feed` as the rules'
/// walk of the table meets it, in index order, with the rules' bit set of data clusters as it
/// stands before that entry is marked (on the grid of [`slot_grid`]; `None` when the rules keep
/// a sorted list instead): other
/// consumers of the table (QEMU's predicted check, ploop's) take their share of the same read
/// instead of reading it again. Gives back, beside the report, that bit set as the walk left it
/// (`None` for a sorted list), for a consumer to take over.
pub(crate) fn validate_feeding(
    image: &Image<'_>,
    threads: Threads,
    feed: &mut dyn FnMut(u32, u32, Option<SlotView<'_>>),
) -> Result<(Report, Option<Vec<u64>>)> {
    let image = &*image.with_bat()?;
    let h = *image.header();
    let file_len = image.file_len();
    let mut f = Findings {
        mode: image.mode(),
        out: Vec::new(),
    };

    header_rules(&h, file_len, &mut f);
    // R44 and R45 speak of the space before the data area: only when it is where it should be.
    let area_ok = !f
        .out
        .iter()
        .any(|x| matches!(x.violation.rule(), Rule::R12 | Rule::R13 | Rule::R14 | Rule::R15));
    let mut end = ReferencedEnd::new(&h, file_len);
    let mut data = bat_rules(image, &h, file_len, &mut f, &mut end, feed);
    data.area_ok = area_ok;
    // An entry below the data area (R16) put its cluster there: those bytes are its data.
    if area_ok && !f.out.iter().any(|x| x.violation.rule() == Rule::R16) {
        slack_rule(image, &h, file_len, &mut f)?;
    }
    if let Some(ext) = image.extension() {
        end.extension(ext.file_offset);
        // A cluster without the extension magic is not interpreted: no feature list, no
        // bitmaps (and so no bitmap clusters referenced).
        if extension_placement_rules(image, &h, ext, &data, &mut f) {
            // Everything after the checksum rule: the feature list, then the bitmaps.
            let rest = |f: &mut Findings| {
                feature_list_rules(ext, f);
                bitmap_rules(image, &h, ext, &data, f)
            };
            end.merge(checksum_beside(ext, threads, &mut f, &rest)?);
        }
    }
    let high = end.end();
    unreferenced_rule(image, &h, high, data.ranges.take(), &mut f);
    if file_len > high {
        f.push(Violation::Leak {
            offset: high,
            len: file_len - high,
        });
    }
    // A walk of a BAT read again from the source that failed to read saw only part of it.
    image.bat_status()?;
    let bits = match data.slots {
        Slots::Bits(b) => Some(b),
        Slots::Sorted(_) => None,
    };
    Ok((Report { findings: f.out }, bits))
}

/// The end of the referenced data, as the leak rule (R20) measures it: the furthest byte,
/// clipped to the file, of the header and BAT (or the data area start), of every data cluster on
/// the cluster grid that starts in the file (one cut short by the end of the file still counts:
/// R18 flags it), of the extension cluster, and of every bitmap cluster of the dirty bitmaps
/// ([`Image::bitmaps`]: a record with flags is not one; none when the extension magic is wrong)
/// that starts in the file. The bytes of the file past it leak. Damaged copies (`corrupt`) are
/// cut here so that they do not leak.
pub(crate) fn referenced_end(image: &Image<'_>) -> u64 {
    let h = image.header();
    let cs = h.cluster_size();
    let base = match h.variant {
        Variant::V1 => h.data_start() % cs,
        Variant::V2 => 0,
    };
    let shift = cs.is_power_of_two().then(|| cs.trailing_zeros());
    let mut end = ReferencedEnd::new(h, image.file_len());
    for (_, entry) in image.allocated_entries() {
        if let Some(off) = h.bat_entry_offset(entry) {
            end.data_cluster(off, grid_slot(off, base, cs, shift).is_some());
        }
    }
    if let Some(ext) = image.extension() {
        end.extension(ext.file_offset);
    }
    for off in bitmap_cluster_offsets(image) {
        end.bitmap_cluster(off);
    }
    end.end()
}

/// The file offsets of the bitmap clusters of the dirty bitmaps ([`Image::bitmaps`]), in L1
/// order; none when the extension cluster lacks its magic (it is not interpreted: R24).
fn bitmap_cluster_offsets(image: &Image<'_>) -> Vec<u64> {
    match image.extension() {
        Some(ext) if ext.magic() == crate::raw::extension::EXT_MAGIC => image
            .bitmaps()
            .iter()
            .flat_map(|b| b.l1().iter().filter(|&e| e > L1_DIRTY).collect::<Vec<_>>())
            .filter_map(|e| Sectors(e).checked_bytes().map(Bytes::get))
            .collect(),
        _ => Vec::new(),
    }
}

/// [`referenced_end`], gathered from the clusters it counts: by [`referenced_end`] itself, and
/// by [`validate_with`] during its one pass over the BAT and the L1 tables.
#[derive(Clone, Copy)]
struct ReferencedEnd {
    file_len: u64,
    cluster_size: u64,
    high: u64,
}

impl ReferencedEnd {
    /// The header and BAT, and the data area start.
    fn new(h: &Header, file_len: u64) -> Self {
        ReferencedEnd {
            file_len,
            cluster_size: h.cluster_size(),
            high: h.data_start().min(file_len).max(h.bat_end().min(file_len)),
        }
    }

    /// Nothing yet, for the clusters of one part of the image.
    fn none(h: &Header, file_len: u64) -> Self {
        ReferencedEnd {
            high: 0,
            ..Self::new(h, file_len)
        }
    }

    fn reach(&mut self, off: u64) {
        self.high = self.high.max(off.saturating_add(self.cluster_size).min(self.file_len));
    }

    /// A data cluster at `off`, which counts when it starts in the file on the cluster grid.
    fn data_cluster(&mut self, off: u64, on_grid: bool) {
        if off < self.file_len && on_grid {
            self.reach(off);
        }
    }

    /// The extension cluster at `off`.
    fn extension(&mut self, off: u64) {
        self.reach(off);
    }

    /// A bitmap cluster at `off`, which counts when it starts in the file.
    fn bitmap_cluster(&mut self, off: u64) {
        if off < self.file_len {
            self.reach(off);
        }
    }

    fn merge(&mut self, other: ReferencedEnd) {
        self.high = self.high.max(other.high);
    }

    fn end(self) -> u64 {
        self.high
    }
}

fn header_rules(h: &Header, file_len: u64, f: &mut Findings) {
    let raw = &h.raw;
    match raw.inuse.get() {
        INUSE_OPEN => f.push(Violation::Unclean),
        INUSE_CLOSED | INUSE_CLOSED_V21 | INUSE_PD17 | INUSE_PD22 => {}
        other => f.push(Violation::UnknownInuse { found: other }),
    }
    let flags = raw.flags.get();
    if flags & !FLAGS_KNOWN != 0 {
        f.push(Violation::UnknownFlags { found: flags });
    }
    if h.variant == Variant::V1 && raw.nb_sectors.get() >> 32 != 0 {
        f.push(Violation::V1SizeHighBits {
            nb_sectors: raw.nb_sectors.get(),
        });
    }
    if (BAT_OFFSET + 4 * u64::from(h.bat_entries)).next_multiple_of(QEMU_MEM_ALIGN) > QEMU_MAX_REQUEST {
        f.push(Violation::BatTooLargeToRead {
            bat_entries: h.bat_entries,
            max: MAX_READABLE_BAT,
        });
    }
    let covered = u64::from(h.bat_entries) * u64::from(h.cluster_sectors);
    if h.nb_sectors > covered {
        f.push(Violation::SizeBeyondBat {
            nb_sectors: h.nb_sectors,
            covered,
        });
    }
    let data_off = raw.data_off.get();
    if h.variant == Variant::V2 {
        if data_off == 0 {
            f.push(Violation::DataOffZero);
        } else if !data_off.is_multiple_of(h.cluster_sectors) {
            f.push(Violation::DataOffUnaligned {
                data_off,
                tracks: h.cluster_sectors,
            });
        }
    }
    if h.variant == Variant::V1 && data_off <= 1 {
        f.push(Violation::V1DataOffUnset { data_off });
    }
    let data_start = h.data_start();
    if data_start < h.min_data_start() && !(h.variant == Variant::V2 && data_off == 0) {
        f.push(Violation::DataOffInsideBat {
            data_off,
            data_start,
            min_start: h.min_data_start(),
        });
    }
    if data_start > file_len {
        f.push(Violation::DataOffPastEof { data_start, file_len });
    }
}

fn bat_rules(
    image: &Image<'_>,
    h: &Header,
    file_len: u64,
    f: &mut Findings,
    end: &mut ReferencedEnd,
    feed: &mut dyn FnMut(u32, u32, Option<SlotView<'_>>),
) -> DataClusters {
    let SlotGrid {
        base,
        cluster_size: cs,
        data_start,
        ..
    } = slot_grid(image);
    let shift = cs.is_power_of_two().then(|| cs.trailing_zeros());
    // A cluster that passes the tests below ends in the file: its slot is below this.
    let slot_count = file_len / cs + 1;
    let bat_bytes = u64::from(image.bat_entries_in_file()) * 4;
    let mut slots = if slot_count.div_ceil(8) <= bat_bytes.max(1 << 20) {
        Slots::Bits(vec![0u64; slot_count.div_ceil(64) as usize])
    } else {
        Slots::Sorted(Vec::new())
    };
    let mut dups: Vec<(u32, u32, u64)> = Vec::new();
    // Clusters of the disk: entries from this index on map no guest byte.
    let disk_clusters = h.nb_sectors.div_ceil(u64::from(h.cluster_sectors));
    let mut ranges = Some(Ranges::default());
    for (index, entry) in image.allocated_entries() {
        let view = match &slots {
            Slots::Bits(bits) => Some(SlotView { bits }),
            Slots::Sorted(_) => None,
        };
        feed(index, entry, view);
        let Some(off) = h.bat_entry_offset(entry) else { continue };
        if let Some(r) = &mut ranges {
            if !r.add(off, cs, file_len) {
                ranges = None;
            }
        }
        if u64::from(index) >= disk_clusters {
            f.push(Violation::BatEntryPastDisk {
                index,
                entry,
                last: disk_clusters,
            });
        }
        let slot = grid_slot(off, base, cs, shift);
        end.data_cluster(off, slot.is_some());
        if off < data_start {
            f.push(Violation::BatEntryBelowData {
                index,
                entry,
                offset: off,
                data_start,
            });
            continue;
        }
        if h.variant == Variant::V1 && div_rem(off - data_start, cs, shift).1 != 0 {
            f.push(Violation::BatEntryUnaligned {
                index,
                entry,
                offset: off,
                data_start,
                cluster_size: cs,
            });
            continue;
        }
        if off + cs > file_len {
            f.push(Violation::BatEntryPastEof {
                index,
                entry,
                offset: off,
                end: off + cs,
                file_len,
            });
            continue;
        }
        let Some(slot) = slot else { continue };
        match &mut slots {
            Slots::Bits(b) => {
                let w = &mut b[(slot / 64) as usize];
                if *w >> (slot % 64) & 1 == 1 {
                    dups.push((index, entry, off));
                }
                *w |= 1 << (slot % 64);
            }
            Slots::Sorted(v) => v.push((slot, index, entry)),
        }
    }
    if let Slots::Sorted(v) = &mut slots {
        v.sort_unstable();
        for w in v.windows(2) {
            if w[0].0 == w[1].0 {
                dups.push((w[1].1, w[1].2, base + w[1].0 * cs));
            }
        }
        v.dedup_by_key(|e| e.0);
    }
    if !dups.is_empty() {
        dups.sort_unstable();
        // The offsets taken twice, sorted, and the index of the first entry that took each.
        let mut wanted: Vec<u64> = dups.iter().map(|d| d.2).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut first: Vec<Option<u32>> = vec![None; wanted.len()];
        for (i, e) in image.allocated_entries() {
            if let Some(k) = h.bat_entry_offset(e).and_then(|off| wanted.binary_search(&off).ok()) {
                first[k].get_or_insert(i);
            }
        }
        for (index, entry, offset) in dups {
            // Found unless the BAT, read again from its source, failed part-way: the report is
            // then refused (`validate_with` asks `bat_status`) and this index never shown.
            let first = wanted
                .binary_search(&offset)
                .ok()
                .and_then(|k| first[k])
                .unwrap_or(index);
            f.push(Violation::BatEntryDuplicate {
                index,
                entry,
                offset,
                first,
            });
        }
    }
    DataClusters {
        base,
        cluster_size: cs,
        shift,
        slots,
        owners: Default::default(),
        area_ok: false,
        ranges,
    }
}

/// The file's ranges the data clusters take, merged as they come (a BAT in order gives one
/// range), for the rule of unreferenced space (R46), gathered on the rules' walk of the BAT up to
/// [`Ranges::MAX`] ranges; beyond, the rule walks the table again itself.
#[derive(Default)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// 512 KiB of ranges.
    const MAX: usize = 32 << 10;

    /// Adds the cluster of `cs` bytes at `off` (nothing if it starts past the file); false when
    /// that makes more ranges than kept.
    #[inline]
    fn add(&mut self, off: u64, cs: u64, file_len: u64) -> bool {
        if off >= file_len {
            return true;
        }
        let end = off.saturating_add(cs).min(file_len);
        match self.0.last_mut() {
            Some(last) if last.1 == off => last.1 = end,
            _ => {
                if self.0.len() >= Self::MAX {
                    return false;
                }
                self.0.push((off, end));
            }
        }
        true
    }
}

/// Where the extension cluster is, and its magic (R21–R24); true when the magic is right, so
/// that the checksum and the feature list rules apply.
fn extension_placement_rules(
    image: &Image<'_>,
    h: &Header,
    ext: &Extension<'_>,
    data: &DataClusters,
    f: &mut Findings,
) -> bool {
    let off = ext.file_offset;
    let cs = h.cluster_size();
    let file_len = image.file_len();
    // Clusters sit on the data area's grid: multiples of the cluster size from byte 0 (v2), or
    // from the data area start (v1, whose data area may start on any sector).
    if data.slot_of(off).is_none() {
        f.push(Violation::ExtOffUnaligned {
            ext_off: h.ext_off,
            offset: off,
            cluster_size: cs,
        });
    }
    if off + cs > file_len {
        f.push(Violation::ExtPastEof {
            offset: off,
            end: off + cs,
            file_len,
        });
    }
    if off < h.bat_end() {
        f.push(Violation::ExtOverlap {
            offset: off,
            with: Region::HeaderAndBat,
        });
    } else if data.area_ok && off < h.data_start() {
        f.push(Violation::MetadataBeforeData {
            offset: off,
            what: Region::Extension,
            bat_end: h.bat_end(),
            data_start: h.data_start(),
        });
    } else if let Some(bat_index) = data.overlap(image, off) {
        f.push(Violation::ExtOverlap {
            offset: off,
            with: Region::DataCluster { bat_index },
        });
    }
    let magic = ext.magic();
    if magic != crate::raw::extension::EXT_MAGIC {
        f.push(Violation::ExtBadMagic {
            offset: off,
            found: magic,
        });
        return false;
    }
    true
}

/// The checksum rule, then `rest` (the rules after it), with their findings in that order.
///
/// Hashing a large cluster takes longer than every other rule together, and needs nothing but
/// the cluster's bytes; on a machine with more than one CPU, `rest` runs on a helper thread
/// meanwhile, into a list of its own, appended after the checksum's finding. Small clusters,
/// one CPU, rules too cheap to pay for waking the helper ([`worth_a_helper`]), a helper busy
/// with another caller's rules, or a helper the system will not start: `rest` runs after the
/// hash, here. The findings are the same either way
/// (`tests/integration/threads.rs`).
fn checksum_beside(
    ext: &Extension<'_>,
    threads: Threads,
    f: &mut Findings,
    rest: &(dyn Fn(&mut Findings) -> Result<ReferencedEnd> + Sync),
) -> Result<ReferencedEnd> {
    if threads == Threads::Helper && ext.cluster_size >= THREAD_MIN_CLUSTER && worth_a_helper(ext) {
        let mode = f.mode;
        let side = || {
            let mut findings = Findings { mode, out: Vec::new() };
            let high = rest(&mut findings);
            (high, findings.out)
        };
        if let Some(((), (high, later))) = crate::helper::beside(|| checksum_rule(ext, f), side) {
            f.out.extend(later);
            return high;
        }
    }
    checksum_rule(ext, f);
    rest(f)
}

/// Clusters from this size on are hashed beside the other rules (1 MiB is the usual size;
/// hashing 256 KiB takes about 0.5 ms, a hundred times what handing work to the helper costs).
const THREAD_MIN_CLUSTER: u64 = 256 << 10;

/// Lists of more records than this are worth the helper (the rules cost about 100 ns a record;
/// waking the helper, some 10-20 µs).
const HELPER_MIN_RECORDS: usize = 32;

/// Whether the rules after the checksum cost enough to hand to the helper: a long feature list,
/// or a bitmap whose last L1 entry points at a cluster (the trailing-bits rule reads it). A
/// short list is walked here, which is all it costs. Only the time depends on the answer.
fn worth_a_helper(ext: &Extension<'_>) -> bool {
    let Some(features) = ext.features_within(HELPER_MIN_RECORDS) else {
        return true;
    };
    features.iter().filter(|e| e.is_bitmap()).any(|e| {
        let data = ext.slice(e.data_range());
        data.len() >= BITMAP_HEADER_SIZE + 8 && u64::from_le_bytes(padded(data, data.len() as u64 - 8)) > L1_DIRTY
    })
}

/// R25: the stored checksum is the MD5 of the cluster after its header.
fn checksum_rule(ext: &Extension<'_>, f: &mut Findings) {
    let stored = ext.stored_checksum();
    let computed = ext.computed_checksum();
    if stored != computed {
        f.push(Violation::ExtBadChecksum {
            offset: ext.file_offset,
            found: stored,
            expected: computed,
        });
    }
}

/// Feature records, the end of the list and padding (R26–R31).
fn feature_list_rules(ext: &Extension<'_>, f: &mut Findings) {
    let off = ext.file_offset;
    let mut pos = crate::raw::extension::EXT_HEADER_SIZE as u64;
    let at = |e: &FeatureEntry| off + e.offset;
    for e in ext.features() {
        padding(ext, pos, e.offset, f);
        feature_rules(e, at(e), f);
        pos = e.data_range().end;
    }
    match ext.end() {
        ListEnd::EndRecord { offset } => {
            padding(ext, pos, ext.cluster_size, f);
            // The end record is a feature header like the others: QEMU refuses its flags and a
            // data_size that runs past the cluster.
            let end = ext.header_at(offset);
            let index = ext.features().len();
            let flags = end.flags.get();
            if flags != 0 {
                f.push(Violation::FeatureFlags {
                    index,
                    offset: off + offset,
                    magic: 0,
                    flags,
                });
            }
            let remaining = ext.cluster_size - offset - crate::raw::feature::FEATURE_HEADER_SIZE as u64;
            let data_size = end.data_size.get();
            if u64::from(data_size) > remaining {
                f.push(Violation::FeatureDataOverflow {
                    index,
                    offset: off + offset,
                    data_size,
                    remaining,
                });
            }
        }
        ListEnd::Truncated { offset, remaining } => {
            padding(ext, pos, offset, f);
            f.push(Violation::FeatureTruncated {
                index: ext.features().len(),
                offset: off + offset,
                remaining,
            });
        }
        ListEnd::Overflow { entry, remaining } => {
            padding(ext, pos, entry.offset, f);
            let flags = entry.header.flags.get();
            if flags != 0 {
                f.push(Violation::FeatureFlags {
                    index: entry.index,
                    offset: at(&entry),
                    magic: entry.header.magic.get(),
                    flags,
                });
            }
            f.push(Violation::FeatureDataOverflow {
                index: entry.index,
                offset: at(&entry),
                data_size: entry.header.data_size.get(),
                remaining,
            });
        }
        ListEnd::NoEndRecord { offset } => {
            padding(ext, pos, offset, f);
            f.push(Violation::MissingEndRecord {
                offset: off + offset,
                count: ext.features().len(),
            });
        }
    }
}

/// Reports the first non-zero byte of `[from, to)` of the cluster, if any.
fn padding(ext: &Extension<'_>, from: u64, to: u64, f: &mut Findings) {
    let bytes = ext.maybe_nonzero(from, to);
    if let Some(i) = crate::raw::first_nonzero(bytes) {
        f.push(Violation::NonZeroPadding {
            offset: ext.file_offset + from + i as u64,
            found: bytes[i],
        });
    }
}

fn feature_rules(e: &FeatureEntry, offset: u64, f: &mut Findings) {
    let magic = e.header.magic.get();
    let flags = e.header.flags.get();
    if flags != 0 {
        f.push(Violation::FeatureFlags {
            index: e.index,
            offset,
            magic,
            flags,
        });
    }
    if magic != FEATURE_DIRTY_BITMAP {
        f.push(Violation::UnknownFeature {
            index: e.index,
            offset,
            magic,
        });
    }
}

/// Bitmap rules R32–R42 and R49; returns how far the bitmap clusters reach (for the leak rule).
fn bitmap_rules(
    image: &Image<'_>,
    h: &Header,
    ext: &Extension<'_>,
    data: &DataClusters,
    f: &mut Findings,
) -> Result<ReferencedEnd> {
    let cs = h.cluster_size();
    let file_len = image.file_len();
    let mut clusters = BitmapClusters {
        end: ReferencedEnd::none(h, file_len),
        l1: Vec::new(),
    };
    for e in ext
        .features()
        .iter()
        .filter(|e| e.header.magic.get() == FEATURE_DIRTY_BITMAP && e.header.flags.get() == 0)
    {
        let size = e.header.data_size.get();
        if (size as usize) < BITMAP_HEADER_SIZE {
            f.push(Violation::BitmapDataTooShort {
                index: e.index,
                offset: ext.file_offset + e.offset,
                data_size: size,
                expected: BITMAP_HEADER_SIZE as u64,
            });
        }
    }
    // The records `Image::bitmaps` views, without building a `Bitmap` for each twice.
    let records: Vec<&FeatureEntry> = ext.features().iter().filter(|e| e.is_bitmap()).collect();
    let ids: Vec<u128> = records
        .iter()
        .map(|e| u128::from_le_bytes(padded(ext.slice(e.data_range()), 8)))
        .collect();
    // Each bitmap whose id an earlier one has, in order, with the position of the first.
    let mut dups = duplicate_ids(&ids, 4 * ids.len() + 64).into_iter().peekable();
    for (pos, e) in records.iter().enumerate() {
        let b = Bitmap::new(image.bitmap_geometry(), image.source(), ext, e);
        let index = b.feature;
        let offset = b.file_offset;
        if h.nb_sectors == 0 {
            f.push(Violation::BitmapOnEmptyDisk { index, offset });
        }
        let expected = bitmap_header_rules(h, &b, e, f);
        if let Some((_, first)) = dups.next_if(|d| d.0 == pos) {
            f.push(Violation::DuplicateBitmapId {
                index,
                offset,
                first: records[first].index,
                id: b.name(),
            });
        }
        let l1 = b.l1();
        l1_entry_rules(image, h, ext, data, &b, f, &mut clusters);
        // Only a last chunk kept in a cluster can have bits past the last granule.
        let last_in_cluster = expected
            .and_then(|k| k.checked_sub(1))
            .and_then(|k| l1.get(k as usize))
            .is_some_and(|e| e > L1_DIRTY);
        if last_in_cluster && b.decodable().is_ok() {
            let count = b.trailing_bits()?;
            if count > 0 {
                f.push(Violation::BitmapTrailingBits {
                    feature: index,
                    index: (b.expected_l1_size() - 1) as u32,
                    count,
                });
            }
        }
    }
    // Bitmap clusters must not share space with each other, within or across bitmaps.
    clusters.l1.sort_unstable();
    for w in clusters.l1.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 < a.0 + cs {
            f.push(Violation::L1EntryOverlap {
                feature: b.1,
                index: b.2,
                entry: b.3,
                offset: b.0,
                with: Region::BitmapCluster {
                    feature: a.1,
                    l1_index: a.2,
                },
            });
        }
    }
    Ok(clusters.end)
}

/// The bitmap clusters an image's L1 tables name, as met.
struct BitmapClusters {
    /// How far they reach (for the leak rule).
    end: ReferencedEnd,
    /// Each one: (offset, feature, L1 index, entry).
    l1: Vec<(u64, usize, u32, u64)>,
}

/// R32–R37 on one bitmap's header: its data size, disk size, granularity and L1 size.
/// Returns the L1 size the granularity asks for, where the granularity is valid.
fn bitmap_header_rules(h: &Header, b: &Bitmap<'_>, e: &FeatureEntry, f: &mut Findings) -> Option<u64> {
    let (index, offset) = (b.feature, b.file_offset);
    let hdr = &b.header;
    let data_size = e.header.data_size.get();
    let l1_size = hdr.l1_size.get();
    let wanted = BITMAP_HEADER_SIZE as u64 + 8 * u64::from(l1_size);
    if u64::from(data_size) < wanted {
        f.push(Violation::BitmapDataTooShort {
            index,
            offset,
            data_size,
            expected: wanted,
        });
    } else if u64::from(data_size) > wanted {
        f.push(Violation::BitmapExtraData {
            index,
            offset,
            data_size,
            expected: wanted,
        });
    }
    if hdr.size.get() != h.nb_sectors {
        f.push(Violation::BitmapSizeMismatch {
            index,
            offset,
            found: hdr.size.get(),
            expected: h.nb_sectors,
        });
    }
    let g = hdr.granularity.get();
    let gran_ok = g != 0 && g.is_power_of_two();
    if !gran_ok {
        f.push(Violation::BitmapGranularityInvalid {
            index,
            offset,
            found: g,
        });
    } else if Sectors::bytes_of_u32(g) > Bytes(u64::from(u32::MAX)) {
        f.push(Violation::BitmapGranularityTooBig {
            index,
            offset,
            found: g,
        });
    }
    let expected = gran_ok.then(|| b.expected_l1_size());
    if let Some(expected) = expected {
        if u64::from(l1_size) != expected {
            f.push(Violation::BitmapL1Size {
                index,
                offset,
                found: l1_size,
                expected,
                cluster_bits: b.chunk_bits(),
            });
        }
    }
    expected
}

/// R38–R40 and R45 on one bitmap's L1 entries: each cluster an entry names is aligned, in the
/// file, after the BAT and apart from the header, the BAT, the extension and the data.
fn l1_entry_rules(
    image: &Image<'_>,
    h: &Header,
    ext: &Extension<'_>,
    data: &DataClusters,
    b: &Bitmap<'_>,
    f: &mut Findings,
    clusters: &mut BitmapClusters,
) {
    let (cs, file_len, index) = (h.cluster_size(), image.file_len(), b.feature);
    let l1 = b.l1();
    // Most entries are the clean and dirty markers (0 and 1): skip tables of markers only.
    if l1.iter().fold(0, |acc, e| acc | e) > L1_DIRTY {
        for (i, entry) in l1.iter().enumerate() {
            if entry <= L1_DIRTY {
                continue;
            }
            let i = i as u32;
            let Some(off) = Sectors(entry).checked_bytes().map(Bytes::get) else {
                f.push(Violation::L1EntryPastEof {
                    feature: index,
                    index: i,
                    entry,
                    offset: u64::MAX,
                    file_len,
                });
                continue;
            };
            if data.slot_of(off).is_none() {
                f.push(Violation::L1EntryUnaligned {
                    feature: index,
                    index: i,
                    entry,
                    offset: off,
                    cluster_size: cs,
                });
            }
            if off.saturating_add(cs) > file_len {
                f.push(Violation::L1EntryPastEof {
                    feature: index,
                    index: i,
                    entry,
                    offset: off,
                    file_len,
                });
            }
            clusters.end.bitmap_cluster(off);
            if data.area_ok && off >= h.bat_end() && off < h.data_start() {
                f.push(Violation::MetadataBeforeData {
                    offset: off,
                    what: Region::BitmapCluster {
                        feature: index,
                        l1_index: i,
                    },
                    bat_end: h.bat_end(),
                    data_start: h.data_start(),
                });
            }
            let with = if off < h.bat_end() {
                Some(Region::HeaderAndBat)
            } else if off < ext.file_offset + cs && ext.file_offset < off + cs {
                Some(Region::Extension)
            } else {
                data.overlap(image, off)
                    .map(|bat_index| Region::DataCluster { bat_index })
            };
            if let Some(with) = with {
                f.push(Violation::L1EntryOverlap {
                    feature: index,
                    index: i,
                    entry,
                    offset: off,
                    with,
                });
            }
            clusters.l1.push((off, index, i, entry));
        }
    }
}

/// R44: the bytes between the end of the BAT and the data area are zero. ploop takes every
/// 4-byte slot up to the data area for a BAT entry. Read in blocks, so memory stays small.
fn slack_rule(image: &Image<'_>, h: &Header, file_len: u64, f: &mut Findings) -> Result<()> {
    let (from, to) = (h.bat_end(), h.data_start().min(file_len));
    let mut first = None;
    let mut count = 0u64;
    let mut at = from;
    while at < to {
        let n = (to - at).min(SLACK_BLOCK);
        let block = image.source().read_at(at, n)?;
        if block.is_empty() {
            break;
        }
        if let Some(i) = crate::raw::first_nonzero(&block) {
            first.get_or_insert((at + i as u64, block[i]));
            // Slots are 4 bytes from byte 64, as the BAT's; `from` is on that grid.
            count += block.chunks(4).filter(|s| s.iter().any(|&b| b != 0)).count() as u64;
        }
        at += block.len() as u64;
    }
    if let Some((offset, found)) = first {
        f.push(Violation::BatSlackNonZero { offset, found, count });
    }
    Ok(())
}

/// How much of the slack between the BAT and the data area is read at a time (a multiple of 4).
const SLACK_BLOCK: u64 = 64 << 10;

/// R46: the space between the data start and the end of the last referenced cluster is all
/// referenced (data clusters, the extension cluster, bitmap clusters). QEMU's check only sees
/// what is after the last cluster (R20); a hole in the middle is lost space as well.
fn unreferenced_rule(image: &Image<'_>, h: &Header, high: u64, walked: Option<Ranges>, f: &mut Findings) {
    let cs = h.cluster_size();
    let file_len = image.file_len();
    let start = h.data_start();
    // Only on an image with nothing corrupt and every cluster on the grid: a misplaced entry,
    // data area or extension, or a record that is not interpreted, leaves a hole that is a
    // symptom of that finding, not a leak of its own.
    // R27 and R29 count whatever their severity: lenient mode lowers them to notes, and the
    // record they name is still not interpreted.
    let placed = |x: &Finding| {
        x.severity == Severity::Corruption
            || matches!(x.violation.rule(), Rule::R21 | Rule::R27 | Rule::R29 | Rule::R38)
    };
    if start >= high || f.out.iter().any(placed) {
        return;
    }
    // Referenced ranges, merged as they come (a BAT in order gives one range): the data
    // clusters' from the rules' walk of the BAT when it kept them.
    let walk = walked.is_none();
    let mut ranges: Vec<(u64, u64)> = walked.map(|r| r.0).unwrap_or_default();
    let mut add = |off: u64| {
        if off >= file_len {
            return;
        }
        let end = off.saturating_add(cs).min(file_len);
        match ranges.last_mut() {
            Some(last) if last.1 == off => last.1 = end,
            _ => ranges.push((off, end)),
        }
    };
    if walk {
        for (_, e) in image.allocated_entries() {
            if let Some(off) = h.bat_entry_offset(e) {
                add(off);
            }
        }
    }
    if let Some(ext) = image.extension() {
        add(ext.file_offset);
    }
    for off in bitmap_cluster_offsets(image) {
        add(off);
    }
    ranges.sort_unstable();
    let mut at = start;
    for (s, e) in ranges {
        if s > at && at < high {
            f.push(Violation::Unreferenced {
                offset: at,
                len: s.min(high) - at,
            });
        }
        at = at.max(e);
    }
}

/// For each id equal to an earlier one, in order: `(position, position of the first with that
/// id)`. A table of positions indexed by a hash of the id finds them in one pass; ids are
/// compared whole, so a hash collision only costs a probe. Hostile ids may all collide: after
/// `probe_budget` extra probes in all, the answer comes from sorting instead (n log n whatever
/// the ids), so the work stays bounded either way and the result is the same.
fn duplicate_ids(ids: &[u128], probe_budget: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if ids.len() < 2 {
        return out;
    }
    // At most half full: slots hold position + 1, 0 is free.
    let bits = (2 * ids.len()).next_power_of_two().trailing_zeros().max(4);
    let mask = (1usize << bits) - 1;
    let mut table = vec![0u32; 1 << bits];
    let mut budget = probe_budget;
    'ids: for (pos, &id) in ids.iter().enumerate() {
        let folded = (id as u64) ^ (id >> 64) as u64;
        let mut slot = (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize;
        loop {
            match table[slot] {
                0 => {
                    table[slot] = pos as u32 + 1;
                    continue 'ids;
                }
                t if ids[t as usize - 1] == id => {
                    out.push((pos, t as usize - 1));
                    continue 'ids;
                }
                _ => {
                    if budget == 0 {
                        return duplicate_ids_sorted(ids);
                    }
                    budget -= 1;
                    slot = (slot + 1) & mask;
                }
            }
        }
    }
    out
}

/// [`duplicate_ids`] by sorting `(id, position)` pairs.
fn duplicate_ids_sorted(ids: &[u128]) -> Vec<(usize, usize)> {
    let mut by_id: Vec<(u128, usize)> = ids.iter().copied().zip(0..).collect();
    by_id.sort_unstable();
    let mut out = Vec::new();
    for group in by_id.chunk_by(|a, b| a.0 == b.0) {
        out.extend(group[1..].iter().map(|&(_, pos)| (pos, group[0].1)));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::{duplicate_ids, duplicate_ids_sorted, worth_a_helper, HELPER_MIN_RECORDS};
    use crate::builder::{BitmapSpec, ImageBuilder};
    use crate::Image;

    /// Whether validation of an image of 4 GiB + 1 MiB in 1 MiB clusters, with bitmaps of
    /// 512-byte granules dirty where given (two 4 GiB chunks each), would wake the helper.
    fn helped(bitmaps: &[&[(u64, u64)]]) -> bool {
        let mut b = ImageBuilder::new((4 << 30) + (1 << 20)).cluster_size(1 << 20);
        for (k, extents) in bitmaps.iter().enumerate() {
            b = b.bitmap(BitmapSpec {
                id: [k as u8 + 1; 16],
                granularity: 512,
                extents: extents.to_vec(),
            });
        }
        let (bytes, _) = b.to_vec().unwrap();
        let image = Image::parse(&bytes).unwrap();
        worth_a_helper(image.extension().unwrap())
    }

    #[test]
    fn the_helper_is_woken_for_long_lists_and_for_clusters_to_read() {
        // Markers only (clean, or a last chunk dirty all through): no.
        assert!(!helped(&[&[], &[(4 << 30, 1 << 20)]]));
        // A cluster in the first chunk only: the trailing-bits rule reads only the last one.
        assert!(!helped(&[&[(0, 512)]]));
        // The last chunk in a cluster: yes.
        assert!(helped(&[&[], &[(4 << 30, 512)]]));
        // As many clean bitmaps as the limit: no; one more: yes.
        let clean: Vec<&[(u64, u64)]> = vec![&[]; HELPER_MIN_RECORDS + 1];
        assert!(!helped(&clean[..HELPER_MIN_RECORDS]));
        assert!(helped(&clean));
    }

    /// Ids whose two halves XOR to the same value all land in one slot of the table.
    fn colliding(n: u64) -> Vec<u128> {
        (0..n).map(|i| (u128::from(i) << 64) | u128::from(i)).collect()
    }

    #[test]
    fn duplicate_ids_by_table() {
        let ids = [7u128, 9, 7, 1 << 100, 9, 7, 3, 1 << 100];
        let want = vec![(2, 0), (4, 1), (5, 0), (7, 3)];
        assert_eq!(duplicate_ids(&ids, usize::MAX), want);
        assert_eq!(duplicate_ids_sorted(&ids), want);
        assert_eq!(duplicate_ids(&[5], 0), vec![]);
        assert_eq!(duplicate_ids(&[], 0), vec![]);
    }

    #[test]
    fn duplicate_ids_colliding_hashes_fall_back_to_sorting() {
        // 20 000 ids in one probe chain: with no budget left the table gives up at once and
        // sorting answers; the duplicates appended at the end are still found exactly.
        let mut ids = colliding(20_000);
        ids.extend([ids[5], ids[19_999], ids[5]]);
        let want = vec![(20_000, 5), (20_001, 19_999), (20_002, 5)];
        assert_eq!(duplicate_ids(&ids, 4 * ids.len() + 64), want);
        assert_eq!(duplicate_ids_sorted(&ids), want);
        // A few colliding ids fit within the budget and are told apart by their full value.
        assert_eq!(duplicate_ids(&[ids[1], ids[2], ids[3], ids[2]], 64), vec![(3, 1)]);
    }
}
