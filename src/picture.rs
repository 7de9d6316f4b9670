//! Pictures of an image as plain SVG text: the file's layout with each finding marked where it
//! is, the guest view of the allocation, and the dirty maps of bitmaps.
//!
//! Every picture is a bounded grid: at most `MAX_COLUMNS` x `MAX_ROWS` cells, each cell a
//! whole number of clusters (or granules), so the work and the output size follow the metadata
//! (allocated BAT entries, dirty extents, findings) and never the disk's apparent size.
//!
//! Geometry (for readers and tests): cells are [`CellGrid::CELL`] pixels square; the file grid's cell
//! `k` has its top-left corner at `(CellGrid::FILE_X + (k % columns) * CELL, CellGrid::TOP + (k / columns)
//! * CELL)`; every grid (file, guest view, each bitmap) sits in a panel [`CellGrid::PANEL`] pixels
//! wide, so the guest view starts at `CellGrid::FILE_X + CellGrid::PANEL` and the legend one panel
//! further; the legend text `1 cell = N bytes` gives N.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::bitmap::Bitmap;
use crate::error::{Location, Violation};
use crate::image::Image;
use crate::raw::bitmap::{L1_CLEAN, L1_DIRTY};
use crate::raw::{Sectors, SECTOR_SIZE};
use crate::rule::Rule;
use crate::validate::Report;

/// Most columns of a grid.
pub(crate) const MAX_COLUMNS: u64 = 64;
/// Most rows of a grid.
pub(crate) const MAX_ROWS: u64 = 64;
/// Side of a cell in pixels.
pub(crate) const CELL: u64 = 10;
/// Left edge of the file grid.
pub(crate) const GRID_X: u64 = 10;
/// Top edge of every grid.
pub(crate) const GRID_Y: u64 = 50;
/// Width of a panel: the widest grid and the gap after it.
pub(crate) const PANEL: u64 = MAX_COLUMNS * CELL + 30;
/// Most findings listed one per line; the rest are counted.
const MAX_LABELS: usize = 40;

/// What a cell of the file holds, from least to most alarming: a cell shows the greatest state
/// it contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CellState {
    /// Nothing drawn (no byte of the file).
    Empty,
    /// In the data area, referenced by nothing.
    Unreferenced,
    /// Between the BAT's end and the data area.
    Padding,
    /// A data cluster one BAT entry references.
    Data,
    /// A cluster of bitmap bits.
    BitmapCluster,
    /// The Format Extension cluster.
    Extension,
    /// The BAT.
    Bat,
    /// The 64-byte header.
    Header,
    /// Leaked bytes after the last referenced cluster (R20).
    Leaked,
    /// A data cluster below the data area (R16) or off the cluster grid (R17).
    BelowData,
    /// Two BAT entries reference it (R19), or regions overlap (R23, R40).
    Duplicated,
    /// Referenced but past the end of the file (R18, R22, R39).
    PastEof,
}

impl CellState {
    /// Fill colour (`#rrggbb`).
    pub fn colour(self) -> &'static str {
        match self {
            CellState::Empty => "#ffffff",
            CellState::Unreferenced => "#e6e6e6",
            CellState::Padding => "#c8c8c8",
            CellState::Data => "#4c9a2a",
            CellState::BitmapCluster => "#8e44ad",
            CellState::Extension => "#e67e22",
            CellState::Bat => "#2f6fb3",
            CellState::Header => "#1b2a49",
            CellState::Leaked => "#f1c40f",
            CellState::BelowData => "#00b5b8",
            CellState::Duplicated => "#d62728",
            CellState::PastEof => "#000000",
        }
    }

    /// The legend's words.
    pub fn name(self) -> &'static str {
        match self {
            CellState::Empty => "empty",
            CellState::Unreferenced => "unreferenced / hole",
            CellState::Padding => "padding",
            CellState::Data => "data (referenced)",
            CellState::BitmapCluster => "bitmap cluster",
            CellState::Extension => "extension cluster",
            CellState::Bat => "BAT",
            CellState::Header => "header",
            CellState::Leaked => "leaked",
            CellState::BelowData => "below the data area / off grid",
            CellState::Duplicated => "duplicated / overlapping",
            CellState::PastEof => "past EOF",
        }
    }

    const LEGEND: [CellState; 11] = [
        CellState::Header,
        CellState::Bat,
        CellState::Padding,
        CellState::Data,
        CellState::Extension,
        CellState::BitmapCluster,
        CellState::Unreferenced,
        CellState::Leaked,
        CellState::BelowData,
        CellState::Duplicated,
        CellState::PastEof,
    ];
}

/// The outline colour of a cell that holds a finding.
pub const FINDING_OUTLINE: &str = "#ff00ff";

/// How a byte range maps onto a bounded grid of cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellGrid {
    /// Bytes per cell (a whole number of units).
    pub cell_bytes: u64,
    /// Cells used.
    pub cells: u64,
    /// Columns.
    pub columns: u64,
}

impl CellGrid {
    /// Side of a cell in pixels.
    pub const CELL: u64 = CELL;
    /// Left edge of the file grid in [`layout_svg`] and of the first dirty map in [`bitmaps_svg`].
    pub const FILE_X: u64 = GRID_X;
    /// Top edge of every grid.
    pub const TOP: u64 = GRID_Y;
    /// Width of a panel (a grid and the gap after it): the guest view, the legend and each further
    /// dirty map start one panel to the right of the one before.
    pub const PANEL: u64 = PANEL;

    /// A grid over `len` bytes in units of `unit` bytes (`unit` > 0).
    pub fn new(len: u64, unit: u64) -> CellGrid {
        let unit = unit.max(1);
        let units = len.div_ceil(unit).max(1);
        let per_cell = units.div_ceil(MAX_COLUMNS * MAX_ROWS);
        let cell_bytes = per_cell.saturating_mul(unit);
        let cells = units.div_ceil(per_cell);
        CellGrid {
            cell_bytes,
            cells,
            columns: cells.min(MAX_COLUMNS),
        }
    }

    /// Rows used.
    pub fn rows(&self) -> u64 {
        self.cells.div_ceil(self.columns)
    }

    /// The cell holding byte `offset` (the last cell for offsets past the grid).
    pub fn cell_of(&self, offset: u64) -> u64 {
        (offset / self.cell_bytes).min(self.cells - 1)
    }

    /// The cells `[first, last]` that `[start, start + len)` touches (`len` > 0).
    fn span(&self, start: u64, len: u64) -> (u64, u64) {
        (self.cell_of(start), self.cell_of(start.saturating_add(len.max(1) - 1)))
    }

    /// Top-left pixel of cell `k` of a grid whose left edge is `x0`.
    pub fn corner(&self, x0: u64, k: u64) -> (u64, u64) {
        (x0 + (k % self.columns) * CELL, GRID_Y + (k / self.columns) * CELL)
    }
}

/// An SVG document of `width` x `height` pixels, opened, on a white background.
fn svg_start(width: u64, height: u64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
    )
}

/// A legend entry: a swatch of `colour` with its top-left corner at `(x, y)`, `label` beside it.
fn swatch(svg: &mut String, x: u64, y: u64, colour: &str, label: &str) {
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{colour}\" stroke=\"#888888\" stroke-width=\"0.5\"/><text x=\"{}\" y=\"{}\">{}</text>",
        x + 16,
        y + 9,
        esc(label)
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The byte a finding concerns: for a BAT entry (R16–R19) and an L1 entry, where it points.
/// `None` when the violation names no byte of the file.
pub fn finding_offset(image: &Image<'_>, v: &Violation) -> Option<u64> {
    use Violation::*;
    let ext = image.header().ext_offset();
    Some(match *v {
        BatEntryBelowData { offset, .. }
        | BatEntryUnaligned { offset, .. }
        | BatEntryPastEof { offset, .. }
        | BatEntryDuplicate { offset, .. }
        | Leak { offset, .. }
        | ExtOffUnaligned { offset, .. }
        | L1EntryUnaligned { offset, .. }
        | L1EntryPastEof { offset, .. }
        | L1EntryOverlap { offset, .. } => offset,
        BitmapTrailingBits { .. } => ext?,
        // Every other rule: the place its location names (no `_` arm: a new rule must be
        // placed here on purpose).
        BadMagic { .. }
        | BadVersion { .. }
        | ZeroTracks
        | ClusterTooBig { .. }
        | CatalogTooLarge { .. }
        | ExtOffTooBig { .. }
        | Unclean
        | UnknownInuse { .. }
        | UnknownFlags { .. }
        | V1SizeHighBits { .. }
        | SizeBeyondBat { .. }
        | DataOffZero
        | DataOffUnaligned { .. }
        | DataOffInsideBat { .. }
        | DataOffPastEof { .. }
        | ExtPastEof { .. }
        | ExtOverlap { .. }
        | ExtBadMagic { .. }
        | ExtBadChecksum { .. }
        | FeatureTruncated { .. }
        | FeatureFlags { .. }
        | FeatureDataOverflow { .. }
        | UnknownFeature { .. }
        | MissingEndRecord { .. }
        | NonZeroPadding { .. }
        | BitmapDataTooShort { .. }
        | BitmapExtraData { .. }
        | BitmapSizeMismatch { .. }
        | BitmapGranularityInvalid { .. }
        | BitmapGranularityTooBig { .. }
        | BitmapL1Size { .. }
        | DuplicateBitmapId { .. }
        | BatEntryPastDisk { .. }
        | BatSlackNonZero { .. }
        | MetadataBeforeData { .. }
        | Unreferenced { .. }
        | V1DataOffUnset { .. }
        | BatTooLargeToRead { .. }
        | BitmapOnEmptyDisk { .. } => match v.location() {
            Location::Header { offset, .. }
            | Location::Bat { offset, .. }
            | Location::File { offset }
            | Location::Extension { offset }
            | Location::Feature { offset, .. } => offset,
            Location::L1 { .. } => ext?,
        },
    })
}

/// The state a finding gives the cells of its range, and that range's length.
fn finding_state(v: &Violation, cluster: u64) -> Option<(CellState, u64)> {
    use Violation::*;
    Some(match *v {
        Leak { len, .. } => (CellState::Leaked, len),
        BatEntryBelowData { .. } | BatEntryUnaligned { .. } => (CellState::BelowData, cluster),
        BatEntryDuplicate { .. } | ExtOverlap { .. } | L1EntryOverlap { .. } => (CellState::Duplicated, cluster),
        BatEntryPastEof { .. } | ExtPastEof { .. } | L1EntryPastEof { .. } => (CellState::PastEof, cluster),
        _ => return None,
    })
}

/// What [`layout_svg`] draws, for other renderers (the HTML report): the file grid's cells
/// with their states and the rules found in each, and the guest view's allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutModel {
    /// The file grid, with one extra cell after the file's last for what lies past EOF.
    pub grid: CellGrid,
    /// The file's length in bytes.
    pub file_len: u64,
    /// The cluster size in bytes.
    pub cluster_size: u64,
    /// The extra cell: anything referenced at or past the end of the file.
    pub past_eof_cell: u64,
    /// Each cell's state (the most alarming it contains).
    pub states: Vec<CellState>,
    /// The rules whose findings point into each cell, in rule order.
    pub rules: Vec<Vec<Rule>>,
    /// Rules of findings that name no byte of the file.
    pub unplaced: Vec<Rule>,
    /// The guest view's grid, in guest clusters.
    pub guest: CellGrid,
    /// The BAT's entries (guest clusters), at least 1.
    pub guest_clusters: u64,
    /// Allocated guest clusters per guest cell.
    pub allocated: Vec<u64>,
}

impl LayoutModel {
    /// Bytes `[lo, hi)` of cell `k` (`hi` is `None` for the past-EOF cell).
    pub fn cell_range(&self, k: u64) -> (u64, Option<u64>) {
        if k == self.past_eof_cell {
            (self.file_len, None)
        } else {
            (
                k * self.grid.cell_bytes,
                Some(((k + 1) * self.grid.cell_bytes).min(self.file_len)),
            )
        }
    }

    /// Guest clusters `[lo, hi)` of guest cell `k`.
    pub fn guest_range(&self, k: u64) -> (u64, u64) {
        let per = self.guest.cell_bytes;
        (k * per, (k * per + per).min(self.guest_clusters))
    }
}

/// The model of [`layout_svg`]: every cell of the file's layout with its state and the rules of
/// `report` found there, and the guest view.
pub fn layout_model(image: &Image<'_>, report: &Report) -> LayoutModel {
    let h = image.header();
    let cs = h.cluster_size().max(SECTOR_SIZE);
    let file_len = image.file_len();
    let file_grid = CellGrid::new(file_len, cs);
    let past_eof_cell = file_grid.cells; // the extra cell
    let grid = CellGrid {
        cells: file_grid.cells + 1,
        columns: (file_grid.cells + 1).min(MAX_COLUMNS),
        ..file_grid
    };
    let cell_at = |offset: u64| -> u64 {
        if offset >= file_len {
            past_eof_cell
        } else {
            file_grid.cell_of(offset)
        }
    };
    let mut state = vec![CellState::Empty; grid.cells as usize];
    let mark = |state: &mut Vec<CellState>, start: u64, len: u64, s: CellState| {
        if len == 0 {
            return;
        }
        let first = cell_at(start);
        let last = cell_at(start.saturating_add(len - 1));
        for c in first..=last {
            let c = c as usize;
            state[c] = state[c].max(s);
        }
    };
    let data_start = h.data_start().min(file_len);
    mark(&mut state, data_start, file_len - data_start, CellState::Unreferenced);
    mark(&mut state, 0, 64.min(file_len), CellState::Header);
    let bat_end = h.bat_end();
    if bat_end > 64 {
        mark(&mut state, 64, bat_end - 64, CellState::Bat);
    }
    if data_start > bat_end {
        mark(&mut state, bat_end, data_start - bat_end, CellState::Padding);
    }
    for (_, e) in image.allocated_entries() {
        if let Some(off) = h.bat_entry_offset(e) {
            let s = if off >= file_len {
                CellState::PastEof
            } else {
                CellState::Data
            };
            mark(&mut state, off, cs, s);
        }
    }
    if let Some(ext) = h.ext_offset() {
        mark(&mut state, ext, cs, CellState::Extension);
    }
    for b in image.bitmaps() {
        for e in b.l1().iter() {
            if e != L1_CLEAN && e != L1_DIRTY {
                mark(
                    &mut state,
                    Sectors(e).saturating_bytes().get(),
                    cs,
                    CellState::BitmapCluster,
                );
            }
        }
    }
    // Findings: their states, and per cell the rules found there.
    let mut rules: Vec<BTreeSet<Rule>> = vec![BTreeSet::new(); grid.cells as usize];
    let mut unplaced: BTreeSet<Rule> = BTreeSet::new();
    for f in &report.findings {
        let v = &f.violation;
        if let Some((s, len)) = finding_state(v, cs) {
            let start = finding_offset(image, v).unwrap_or(0);
            mark(&mut state, start, len, s);
        }
        match finding_offset(image, v) {
            Some(off) => {
                rules[cell_at(off) as usize].insert(v.rule());
            }
            None => {
                unplaced.insert(v.rule());
            }
        }
    }

    // Guest view: allocated clusters per group of guest clusters.
    let entries = u64::from(h.bat_entries).max(1);
    let guest = CellGrid::new(entries, 1);
    let mut allocated = vec![0u64; guest.cells as usize];
    for (i, _) in image.allocated_entries() {
        allocated[guest.cell_of(u64::from(i)) as usize] += 1;
    }

    LayoutModel {
        grid,
        file_len,
        cluster_size: cs,
        past_eof_cell,
        states: state,
        rules: rules.into_iter().map(|set| set.into_iter().collect()).collect(),
        unplaced: unplaced.into_iter().collect(),
        guest,
        guest_clusters: entries,
        allocated,
    }
}

/// The layout of the file from byte 0 to its end, one cell per group of clusters, with the
/// findings of `report` outlined and labelled by rule; beside it the guest view (how much of
/// each group of guest clusters is allocated). Anything referenced past the end of the file is
/// drawn in one extra cell after the file's last.
pub fn layout_svg(image: &Image<'_>, report: &Report) -> String {
    let h = image.header();
    let LayoutModel {
        grid,
        file_len,
        cluster_size: cs,
        past_eof_cell,
        states: state,
        rules,
        unplaced,
        guest,
        guest_clusters: entries,
        allocated,
    } = layout_model(image, report);
    // The extra cell is drawn only when something is referenced past the end of the file.
    let past_eof = state[past_eof_cell as usize] != CellState::Empty;
    let guest_x = GRID_X + PANEL;
    let legend_x = guest_x + PANEL;
    let height = GRID_Y + grid.rows().max(guest.rows()).max(36) * CELL + 20;
    let width = legend_x + 420;
    let mut svg = svg_start(width, height);
    let _ = write!(
        svg,
        "<text x=\"{GRID_X}\" y=\"16\" font-size=\"13\">file layout: {file_len} bytes, cluster {cs} bytes</text>\n\
         <text x=\"{GRID_X}\" y=\"32\" id=\"scale\">1 cell = {} bytes ({}){}</text>\n\
         <text x=\"{guest_x}\" y=\"16\" font-size=\"13\">guest view: {} bytes</text>\n\
         <text x=\"{guest_x}\" y=\"32\" id=\"guest-scale\">1 cell = {}, shade = allocated</text>\n",
        grid.cell_bytes,
        count(grid.cell_bytes / cs, "cluster", "clusters"),
        if past_eof { "; the last cell: past EOF" } else { "" },
        h.virtual_size(),
        count(guest.cell_bytes, "guest cluster", "guest clusters"),
    );
    svg.push_str("<g id=\"layout\" stroke=\"#ffffff\" stroke-width=\"0.5\">\n");
    for (k, s) in state.iter().enumerate() {
        let k = k as u64;
        if k == past_eof_cell && !past_eof {
            continue;
        }
        let (x, y) = grid.corner(GRID_X, k);
        let (lo, hi) = if k == past_eof_cell {
            (file_len, u64::MAX)
        } else {
            (k * grid.cell_bytes, ((k + 1) * grid.cell_bytes).min(file_len))
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\"><title>bytes {lo}..{}: {}</title></rect>",
            s.colour(),
            if hi == u64::MAX { "".to_string() } else { hi.to_string() },
            s.name()
        );
    }
    svg.push_str("</g>\n<g id=\"findings\" fill=\"none\" stroke-width=\"2\">\n");
    let mut labels = Vec::new();
    for (k, set) in rules.iter().enumerate() {
        if set.is_empty() {
            continue;
        }
        let k = k as u64;
        let (x, y) = grid.corner(GRID_X, k);
        let codes: Vec<String> = set.iter().map(|r| r.to_string()).collect();
        let codes = codes.join(" ");
        let where_ = if k == past_eof_cell {
            format!("past EOF (from byte {file_len})")
        } else {
            format!("bytes {}..", k * grid.cell_bytes)
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" stroke=\"{FINDING_OUTLINE}\"><title>{codes} at {where_}</title></rect>",
            x + 1,
            y + 1,
            CELL - 2,
            CELL - 2
        );
        labels.push(format!("{codes}: cell {k}, {where_}"));
    }
    svg.push_str("</g>\n<g id=\"guest\">\n");
    let per_cell = guest.cell_bytes;
    for (k, n) in allocated.iter().enumerate() {
        let k = k as u64;
        let (x, y) = guest.corner(guest_x, k);
        let total = per_cell.min(entries - k * per_cell);
        let frac = *n as f64 / total.max(1) as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\"><title>guest clusters {}..{}: {n} allocated</title></rect>",
            shade(frac, (76, 154, 42)),
            k * per_cell,
            k * per_cell + total
        );
    }
    svg.push_str("</g>\n<g id=\"legend\">\n");
    let mut y = GRID_Y;
    for s in CellState::LEGEND {
        swatch(&mut svg, legend_x, y, s.colour(), s.name());
        y += 16;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{legend_x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"none\" stroke=\"{FINDING_OUTLINE}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">finding (rule codes below)</text>",
        legend_x + 16,
        y + 9
    );
    y += 24;
    svg.push_str("</g>\n<g id=\"labels\">\n");
    let _ = writeln!(
        svg,
        "<text x=\"{legend_x}\" y=\"{y}\" font-weight=\"bold\">findings ({})</text>",
        report.findings.len()
    );
    y += 14;
    let shown = labels.len().min(MAX_LABELS);
    for l in &labels[..shown] {
        let _ = writeln!(svg, "<text x=\"{legend_x}\" y=\"{y}\">{}</text>", esc(l));
        y += 14;
    }
    if labels.len() > shown {
        let _ = writeln!(
            svg,
            "<text x=\"{legend_x}\" y=\"{y}\">… {} more cells with findings</text>",
            labels.len() - shown
        );
        y += 14;
    }
    if !unplaced.is_empty() {
        let codes: Vec<String> = unplaced.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(
            svg,
            "<text x=\"{legend_x}\" y=\"{y}\">not at a byte: {}</text>",
            codes.join(" ")
        );
    }
    svg.push_str("</g>\n</svg>\n");
    svg
}

/// `#rrggbb` between light grey (0.0) and `full` (1.0).
fn shade(frac: f64, full: (u8, u8, u8)) -> String {
    if frac <= 0.0 {
        return "#eeeeee".to_string();
    }
    let f = frac.clamp(0.0, 1.0);
    // Anything dirty or allocated is at least a third of the way, so it shows.
    let f = 0.35 + 0.65 * f;
    let mix = |a: u8| (238.0 + (f64::from(a) - 238.0) * f).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(full.0), mix(full.1), mix(full.2))
}

/// The dirty maps' colour scale, light to dark (a sequential palette, so that darker always
/// reads as dirtier): the key's words and the colour, by the share of a cell's bytes that are
/// dirty (see [`dirty_step`]). A cell with one dirty granule in hundreds stays pale, unlike a
/// full one.
pub const DIRTY_SCALE: [(&str, &str); 6] = [
    ("clean", "#eeeeee"),
    ("under 1 %", "#fee0d2"),
    ("1-10 %", "#fcbba1"),
    ("10-50 %", "#fb6a4a"),
    ("50-99 %", "#cb181d"),
    ("100 %", "#67000d"),
];

/// The step of [`DIRTY_SCALE`] for a cell of `total` bytes of which `dirty` are dirty: 0 clean,
/// 1 under 1 %, 2 from 1 to under 10 %, 3 from 10 to under 50 %, 4 from 50 % to not all,
/// 5 all dirty.
pub fn dirty_step(dirty: u64, total: u64) -> usize {
    let (d, t) = (u128::from(dirty), u128::from(total.max(1)));
    if d == 0 {
        0
    } else if d >= t {
        5
    } else if d * 100 < t {
        1
    } else if d * 10 < t {
        2
    } else if d * 2 < t {
        3
    } else {
        4
    }
}

/// The L1 strip's colours: all clean, all dirty, data clusters, a mix.
pub const L1_COLOURS: [(&str, &str); 4] = [
    ("0 (clean)", "#eeeeee"),
    ("1 (all dirty)", "#d62728"),
    ("data cluster", "#2f6fb3"),
    ("mixed", "#888888"),
];

/// One bitmap's dirty map, for other renderers: its grid over the guest disk and the dirty
/// bytes of each cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyModel {
    /// The grid over the disk, in granules.
    pub grid: CellGrid,
    /// Dirty bytes per cell.
    pub dirty: Vec<u64>,
    /// Why the bitmap could not be decoded (the cells then hold what was read before).
    pub error: Option<String>,
}

impl DirtyModel {
    /// Bytes of the disk (`size` bytes) in cell `k`.
    pub fn cell_total(&self, k: u64, size: u64) -> u64 {
        self.grid
            .cell_bytes
            .min(size.saturating_sub(k * self.grid.cell_bytes))
            .max(1)
    }
}

/// The dirty bytes of `bitmap` per cell of a grid over a disk of `size` bytes (streamed from
/// [`Bitmap::for_each_dirty_extent`]).
pub fn dirty_model(size: u64, bitmap: &Bitmap<'_>) -> DirtyModel {
    let grid = CellGrid::new(size, bitmap.granularity_bytes().max(1));
    let mut dirty = vec![0u64; grid.cells as usize];
    let decoded = bitmap.for_each_dirty_extent(|off, len| {
        let (first, last) = grid.span(off, len);
        let end = off.saturating_add(len);
        for c in first..=last {
            let lo = (c * grid.cell_bytes).max(off);
            let hi = ((c + 1).saturating_mul(grid.cell_bytes)).min(end);
            dirty[c as usize] += hi.saturating_sub(lo);
        }
    });
    DirtyModel {
        grid,
        dirty,
        error: decoded.err().map(|e| e.to_string()),
    }
}

/// Each bitmap's dirty map over the guest disk, side by side: one cell per group of granules,
/// shaded by the dirty fraction (streamed from [`Bitmap::for_each_dirty_extent`]), and under it
/// the L1 entries as a strip (0 / 1 / data cluster / mixed). A bitmap that cannot be decoded is
/// drawn empty with the reason.
pub fn bitmaps_svg(image: &Image<'_>, bitmaps: &[Bitmap<'_>]) -> String {
    let size = image.header().virtual_size();
    let width = GRID_X + PANEL * bitmaps.len().max(1) as u64;
    let strip_cells = 64u64;
    let height = GRID_Y + MAX_ROWS * CELL + 110;
    let mut svg = svg_start(width, height);
    if bitmaps.is_empty() {
        let _ = writeln!(svg, "<text x=\"{GRID_X}\" y=\"20\">no bitmaps</text>");
    }
    for (n, b) in bitmaps.iter().enumerate() {
        let x0 = GRID_X + PANEL * n as u64;
        let gb = b.granularity_bytes().max(1);
        let DirtyModel { grid, dirty, error } = dirty_model(size, b);
        let _ = writeln!(
            svg,
            "<g id=\"bitmap-{n}\"><text x=\"{x0}\" y=\"16\" font-size=\"13\">{}</text>\n<text x=\"{x0}\" y=\"32\">granularity {gb} bytes; 1 cell = {} bytes; colour = dirty share (key below)</text>",
            esc(&b.name()),
            grid.cell_bytes
        );
        if let Some(e) = &error {
            let _ = writeln!(svg, "<text x=\"{x0}\" y=\"44\">not decodable: {}</text>", esc(e));
        }
        for (k, d) in dirty.iter().enumerate() {
            let k = k as u64;
            let (x, y) = grid.corner(x0, k);
            let total = grid.cell_bytes.min(size.saturating_sub(k * grid.cell_bytes)).max(1);
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\"><title>guest bytes {}..: {d} dirty</title></rect>",
                DIRTY_SCALE[dirty_step(*d, total)].1,
                k * grid.cell_bytes
            );
        }
        // L1 strip: chunks grouped into at most `strip_cells` cells.
        let l1 = b.l1();
        let chunks = l1.len() as u64;
        let sy = GRID_Y + grid.rows() * CELL + 20;
        let _ = writeln!(
            svg,
            "<text x=\"{x0}\" y=\"{}\">L1: {}</text>",
            sy - 4,
            count(chunks, "entry", "entries")
        );
        if chunks > 0 {
            let per = chunks.div_ceil(strip_cells);
            let cells = chunks.div_ceil(per);
            let mut kinds = vec![0u8; cells as usize]; // bit 0: clean, 1: dirty, 2: data
            for (i, e) in l1.iter().enumerate() {
                let bit = match e {
                    L1_CLEAN => 1,
                    L1_DIRTY => 2,
                    _ => 4,
                };
                kinds[(i as u64 / per) as usize] |= bit;
            }
            for (k, kind) in kinds.iter().enumerate() {
                let (label, colour) = match kind {
                    1 => L1_COLOURS[0],
                    2 => L1_COLOURS[1],
                    4 => L1_COLOURS[2],
                    _ => L1_COLOURS[3],
                };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{}\" y=\"{sy}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{colour}\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>L1[{}..{}]: {label}</title></rect>",
                    x0 + k as u64 * CELL,
                    k as u64 * per,
                    ((k as u64 + 1) * per).min(chunks)
                );
            }
        }
        let mut lx = x0;
        for (label, colour) in L1_COLOURS {
            swatch(&mut svg, lx, sy + 20, colour, label);
            lx += 150;
        }
        let mut lx = x0;
        for (label, colour) in DIRTY_SCALE {
            swatch(&mut svg, lx, sy + 40, colour, label);
            lx += 100;
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

/// Colours of the snapshots in a bundle's guest picture (`Bundle::guest_svg`), newest first (repeated
/// past the eighth).
pub const SNAPSHOT_COLOURS: [&str; 8] = [
    "#4c9a2a", "#2f6fb3", "#e67e22", "#8e44ad", "#00b5b8", "#f1c40f", "#8c564b", "#e377c2",
];

/// The colour of a guest cell that no snapshot allocates (it reads as zeros).
pub const UNALLOCATED: &str = "#eeeeee";

/// The guest view of a chain of images: one cell per group of guest bytes, coloured by the
/// newest layer (depth 0 is the snapshot read, 1 its parent…; see [`SNAPSHOT_COLOURS`]) that
/// holds any of them, [`UNALLOCATED`] where none does. `runs` are `(start, length, depth)` with
/// `None` for zeros, in any order; `layers[d]` names depth `d` in the legend. The work follows
/// the runs and the bounded grid, never the disk's size.
pub(crate) fn origin_svg(
    title: &str,
    size: u64,
    layers: &[String],
    runs: impl IntoIterator<Item = (u64, u64, Option<usize>)>,
) -> String {
    let grid = CellGrid::new(size, SECTOR_SIZE);
    let mut newest: Vec<Option<usize>> = vec![None; grid.cells as usize];
    for (start, len, depth) in runs {
        let (Some(depth), true) = (depth, len > 0 && start < size) else {
            continue;
        };
        let (first, last) = grid.span(start, len.min(size - start));
        for c in first..=last {
            let cell = &mut newest[c as usize];
            *cell = Some(cell.map_or(depth, |d| d.min(depth)));
        }
    }
    let legend_x = GRID_X + PANEL;
    let shown = layers.len().min(MAX_LABELS);
    let height = GRID_Y + (grid.rows() * CELL).max(16 * (shown as u64 + 2)) + 20;
    // Wide enough for the longest legend line (about 7 pixels a character at 11 px).
    let longest = layers[..shown]
        .iter()
        .enumerate()
        .map(|(d, name)| format!("depth {d}: {name}").chars().count() as u64)
        .max()
        .unwrap_or(0)
        .max(30);
    let width = legend_x + 16 + 7 * longest + 20;
    let mut svg = svg_start(width, height);
    let _ = write!(
        svg,
        "<text x=\"{GRID_X}\" y=\"16\" font-size=\"13\">{}: {size} bytes</text>\n\
         <text x=\"{GRID_X}\" y=\"32\" id=\"guest-scale\">1 cell = {} bytes; colour = the newest snapshot holding any of them</text>\n\
         <g id=\"guest\" stroke=\"#ffffff\" stroke-width=\"0.5\">\n",
        esc(title),
        grid.cell_bytes
    );
    for (k, d) in newest.iter().enumerate() {
        let k = k as u64;
        let (x, y) = grid.corner(GRID_X, k);
        let (fill, what) = match d {
            Some(d) => (SNAPSHOT_COLOURS[d % SNAPSHOT_COLOURS.len()], format!("from depth {d}")),
            None => (UNALLOCATED, "zeros".to_string()),
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{fill}\"><title>guest bytes {}..{}: {what}</title></rect>",
            k * grid.cell_bytes,
            ((k + 1) * grid.cell_bytes).min(size)
        );
    }
    svg.push_str("</g>\n<g id=\"legend\">\n");
    let mut y = GRID_Y;
    let rows = layers[..shown]
        .iter()
        .enumerate()
        .map(|(d, name)| {
            (
                SNAPSHOT_COLOURS[d % SNAPSHOT_COLOURS.len()],
                format!("depth {d}: {name}"),
            )
        })
        .chain(std::iter::once((UNALLOCATED, "unallocated (zeros)".to_string())));
    for (colour, label) in rows {
        swatch(&mut svg, legend_x, y, colour, &label);
        y += 16;
    }
    if layers.len() > shown {
        let _ = writeln!(
            svg,
            "<text x=\"{legend_x}\" y=\"{}\">… {} deeper layers</text>",
            y + 9,
            layers.len() - shown
        );
    }
    svg.push_str("</g>\n</svg>\n");
    svg
}

/// `1 entry`, `2 entries`: a count and its noun, singular for one.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
