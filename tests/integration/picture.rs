//! The pictures (issue 17): rendered with resvg, the colour at the cell of each known defect.

use parallels_image::{
    open, picture::bitmaps_svg, picture::dirty_step, picture::layout_svg, picture::CellGrid, picture::CellState,
    picture::DIRTY_SCALE, picture::FINDING_OUTLINE, picture::L1_COLOURS, validate, BitmapSpec, GuestData, Image,
    ImageBuilder, Rule, RuleMode,
};

use crate::fixtures::{pixel_hex as hex, render_svg as render};

const CS: u64 = 64 << 10;

/// The layout picture of `bytes`, rendered, and where the cell of byte `offset` is.
struct Drawn {
    pixmap: resvg::tiny_skia::Pixmap,
    svg: String,
    grid: CellGrid,
    columns: u64,
    rules: Vec<Rule>,
}

fn draw(bytes: &[u8]) -> Drawn {
    let source: Vec<u8> = bytes.to_vec();
    let image = Image::parse_with(&source, RuleMode::Strict).unwrap();
    let report = validate(&image).unwrap();
    let svg = layout_svg(&image, &report);
    let grid = CellGrid::new(bytes.len() as u64, CS);
    Drawn {
        pixmap: render(&svg),
        svg,
        grid,
        columns: (grid.cells + 1).min(64),
        rules: report.rules(),
    }
}

impl Drawn {
    fn corner(&self, offset: u64) -> (u64, u64) {
        let k = offset / self.grid.cell_bytes;
        (
            CellGrid::FILE_X + (k % self.columns) * CellGrid::CELL,
            CellGrid::TOP + (k / self.columns) * CellGrid::CELL,
        )
    }
    fn fill(&self, offset: u64) -> String {
        let (x, y) = self.corner(offset);
        hex(&self.pixmap, x + 5, y + 5)
    }
    fn outline(&self, offset: u64) -> String {
        let (x, y) = self.corner(offset);
        hex(&self.pixmap, x + 1, y + 5)
    }
}

/// A v2 image of 16 MiB, clusters of 64 KiB, guest clusters 0 and 1 written.
fn two_clusters() -> Vec<u8> {
    ImageBuilder::new(16 << 20)
        .cluster_size(CS)
        .data(
            0,
            GuestData::Fill {
                len: 2 * CS,
                byte: 0xaa,
            },
        )
        .to_vec()
        .unwrap()
        .0
}

fn bat(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[64 + 4 * i..68 + 4 * i].try_into().unwrap())
}

#[test]
fn clean_image_shows_header_and_data_and_no_finding() {
    let bytes = two_clusters();
    let d = draw(&bytes);
    assert_eq!(d.rules, vec![]);
    assert_eq!(d.grid.cell_bytes, CS);
    assert_eq!(d.fill(0), CellState::Header.colour());
    let data = u64::from(bat(&bytes, 0)) * CS;
    assert_eq!(d.fill(data), CellState::Data.colour());
    assert_eq!(d.outline(data), CellState::Data.colour());
    assert!(
        !d.svg.contains(&format!("stroke=\"{FINDING_OUTLINE}\"><title>")),
        "{}",
        d.svg
    );
    assert!(d.svg.contains("1 cell = 65536 bytes (1 cluster)"));
}

#[test]
fn leak_shows_at_its_offset_with_r20() {
    let mut bytes = two_clusters();
    let leak_at = bytes.len() as u64;
    bytes.extend(vec![0u8; CS as usize]);
    let d = draw(&bytes);
    assert_eq!(d.rules, vec![Rule::R20]);
    assert_eq!(d.fill(leak_at), CellState::Leaked.colour());
    assert_eq!(d.outline(leak_at), FINDING_OUTLINE);
    assert_eq!(d.fill(leak_at - CS), CellState::Data.colour());
    assert!(
        d.svg.contains(&format!("<title>R20 at bytes {leak_at}..</title>")),
        "{}",
        d.svg
    );
}

#[test]
fn duplicate_bat_entry_shows_where_it_points_with_r19() {
    let mut bytes = two_clusters();
    let first = bat(&bytes, 0);
    let second = u64::from(bat(&bytes, 1)) * CS;
    bytes[68..72].copy_from_slice(&first.to_le_bytes());
    let d = draw(&bytes);
    assert!(d.rules.contains(&Rule::R19), "{:?}", d.rules);
    let at = u64::from(first) * CS;
    assert_eq!(d.fill(at), CellState::Duplicated.colour());
    assert_eq!(d.outline(at), FINDING_OUTLINE);
    // BAT[1]'s old cluster is referenced by nothing now: leaked, the file's last cluster.
    assert_eq!(d.fill(second), CellState::Leaked.colour());
}

#[test]
fn overlap_of_the_extension_and_a_data_cluster_shows_r23() {
    let (mut bytes, _) = ImageBuilder::new(16 << 20)
        .cluster_size(CS)
        .data(0, GuestData::Fill { len: CS, byte: 0xaa })
        .bitmap(BitmapSpec {
            id: [7; 16],
            granularity: CS,
            extents: vec![(0, CS)],
        })
        .to_vec()
        .unwrap();
    // Point BAT[1] at the extension cluster.
    let ext = u64::from_le_bytes(bytes[56..64].try_into().unwrap()) * 512;
    bytes[68..72].copy_from_slice(&((ext / CS) as u32).to_le_bytes());
    let d = draw(&bytes);
    assert!(d.rules.contains(&Rule::R23), "{:?}", d.rules);
    assert_eq!(d.fill(ext), CellState::Duplicated.colour());
    assert_eq!(d.outline(ext), FINDING_OUTLINE);
}

#[test]
fn a_64_tib_image_draws_a_bounded_picture() {
    let size = 64u64 << 40;
    let (bytes, _) = ImageBuilder::new(size)
        .cluster_size(16 << 20)
        .data(0, GuestData::Fill { len: 4096, byte: 1 })
        .data(size - 4096, GuestData::Fill { len: 4096, byte: 2 })
        .bitmap(BitmapSpec {
            id: [9; 16],
            granularity: 1 << 20,
            extents: vec![(0, 1 << 30), (size - (1 << 20), 1 << 20)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    let report = validate(&image).unwrap();
    let layout = layout_svg(&image, &report);
    assert!(layout.len() < 1 << 20, "{} bytes", layout.len());
    let maps = bitmaps_svg(&image, &image.bitmaps());
    assert!(maps.len() < 1 << 20, "{} bytes", maps.len());
    // The first guest cell of the dirty map is dirty (1 GiB of the first cell's 16 GiB).
    let p = render(&maps);
    assert_ne!(hex(&p, 15, 55), "#eeeeee");
    assert_eq!(hex(&p, 25, 55), "#eeeeee");
}

/// The pixel at the centre of the dirty-map cell holding guest byte `offset`, in panel `panel`.
fn dirty_cell(p: &resvg::tiny_skia::Pixmap, grid: &CellGrid, panel: u64, offset: u64) -> String {
    let k = grid.cell_of(offset);
    let x = CellGrid::FILE_X + panel * CellGrid::PANEL + (k % grid.columns) * CellGrid::CELL;
    let y = CellGrid::TOP + (k / grid.columns) * CellGrid::CELL;
    hex(p, x + 5, y + 5)
}

const FULLY_DIRTY: &str = "#67000d";
const CLEAN: &str = "#eeeeee";

#[test]
fn several_bitmaps_side_by_side_with_their_l1_chunks() {
    const MIB: u64 = 1 << 20;
    // Clusters of 4 KiB and granules of 512 bytes: one L1 entry covers 16 MiB of the 48 MiB
    // disk. Bitmap A: chunk 0 clean (L1 0), chunk 1 wholly dirty (L1 1), chunk 2 partly dirty
    // (a data cluster). Bitmap B: the first 8 MiB dirty.
    let (bytes, _) = ImageBuilder::new(48 * MIB)
        .cluster_size(4096)
        .bitmap(BitmapSpec {
            id: [1; 16],
            granularity: 512,
            extents: vec![(16 * MIB, 16 * MIB), (32 * MIB, MIB)],
        })
        .bitmap(BitmapSpec {
            id: [2; 16],
            granularity: 512,
            extents: vec![(0, 8 * MIB)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    let bitmaps = image.bitmaps();
    let l1: Vec<Vec<u64>> = bitmaps.iter().map(|b| b.l1().iter().collect()).collect();
    assert_eq!(l1[0][..2], [0, 1]);
    assert!(l1[0][2] > 1, "{:?}", l1[0]);
    assert_eq!(l1[1][..], [l1[1][0], 0, 0]);
    let svg = bitmaps_svg(&image, &bitmaps);
    let p = render(&svg);
    let grid = CellGrid::new(48 * MIB, 512);
    assert_eq!(grid.cell_bytes, 12 << 10);
    assert!(
        svg.contains("granularity 512 bytes; 1 cell = 12288 bytes; colour = dirty share (key below)"),
        "{svg}"
    );
    // Panel 0 is bitmap A, panel 1 beside it is bitmap B.
    assert!(svg.contains(&format!("<text x=\"{}\" y=\"16\"", CellGrid::FILE_X + CellGrid::PANEL)));
    assert_eq!(svg.matches(">L1: 3 entries</text>").count(), 2, "{svg}");
    assert_eq!(dirty_cell(&p, &grid, 0, 0), CLEAN);
    assert_eq!(dirty_cell(&p, &grid, 0, 20 * MIB), FULLY_DIRTY);
    assert_eq!(dirty_cell(&p, &grid, 0, 32 * MIB), FULLY_DIRTY);
    assert_eq!(dirty_cell(&p, &grid, 0, 40 * MIB), CLEAN);
    assert_eq!(dirty_cell(&p, &grid, 1, 0), FULLY_DIRTY);
    assert_eq!(dirty_cell(&p, &grid, 1, 20 * MIB), CLEAN);
    // The cell [16 MiB - 4 KiB, 16 MiB + 8 KiB) is two thirds dirty: the 50-99 % step.
    assert_eq!(grid.cell_of(16 * MIB) * grid.cell_bytes, 16 * MIB - 4096);
    assert_eq!(dirty_cell(&p, &grid, 0, 16 * MIB), "#cb181d");
    assert_eq!(DIRTY_SCALE[4], ("50-99 %", "#cb181d"));
    // The L1 strip under each map: one cell per entry, 0 / 1 / data cluster.
    let strip_y = CellGrid::TOP + grid.rows() * CellGrid::CELL + 20 + 5;
    let strip = |panel: u64, k: u64| {
        hex(
            &p,
            CellGrid::FILE_X + panel * CellGrid::PANEL + k * CellGrid::CELL + 5,
            strip_y,
        )
    };
    assert_eq!(
        [strip(0, 0), strip(0, 1), strip(0, 2)],
        [L1_COLOURS[0].1, L1_COLOURS[1].1, L1_COLOURS[2].1].map(String::from)
    );
    assert_eq!(
        [strip(1, 0), strip(1, 1), strip(1, 2)],
        [L1_COLOURS[2].1, L1_COLOURS[0].1, L1_COLOURS[0].1].map(String::from)
    );
}

#[test]
fn legends_state_the_scale_of_a_64_tib_image() {
    let size = 64u64 << 40;
    let (bytes, _) = ImageBuilder::new(size)
        .cluster_size(16 << 20)
        .data(size - 4096, GuestData::Fill { len: 4096, byte: 2 })
        .bitmap(BitmapSpec {
            id: [9; 16],
            granularity: 1 << 20,
            extents: vec![(0, 1 << 30)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    let report = validate(&image).unwrap();
    let layout = layout_svg(&image, &report);
    // 4 Mi guest clusters of 16 MiB in 4096 cells; the file (header, BAT, one data cluster, the
    // extension and one bitmap cluster) one cluster a cell.
    assert!(
        layout.contains(">1 cell = 1024 guest clusters, shade = allocated</text>"),
        "{layout}"
    );
    assert!(
        layout.contains(">1 cell = 16777216 bytes (1 cluster)</text>"),
        "{layout}"
    );
    let maps = bitmaps_svg(&image, &image.bitmaps());
    assert!(
        maps.contains(
            ">granularity 1048576 bytes; 1 cell = 17179869184 bytes; colour = dirty share (key below)</text>"
        ),
        "{maps}"
    );
}

#[test]
fn legends_say_one_entry_and_one_guest_cluster_in_the_singular() {
    // 1 MiB of disk in clusters of 1 MiB: one guest cluster a cell; granules of 64 KiB put the
    // whole disk under one L1 entry.
    let (bytes, _) = ImageBuilder::new(1 << 20)
        .cluster_size(1 << 20)
        .bitmap(BitmapSpec {
            id: [3; 16],
            granularity: 64 << 10,
            extents: vec![(0, 64 << 10)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    assert_eq!(image.bitmaps()[0].l1().len(), 1);
    let layout = layout_svg(&image, &validate(&image).unwrap());
    assert!(
        layout.contains(">1 cell = 1 guest cluster, shade = allocated</text>"),
        "{layout}"
    );
    let maps = bitmaps_svg(&image, &image.bitmaps());
    assert!(maps.contains(">L1: 1 entry</text>"), "{maps}");
}

#[test]
fn entries_into_the_bat_and_past_eof_show_r16_and_r18() {
    // Clusters of 4 KiB over 16 MiB: a BAT of 4096 entries fills clusters 0..4, the data area
    // starts at cluster 5. BAT[1] -> cluster 2 (inside the BAT, R16); BAT[2] -> cluster 10000
    // (past the end, R18: drawn in the extra cell after the file's last).
    let cs = 4096u64;
    let (mut bytes, _) = ImageBuilder::new(16 << 20)
        .cluster_size(cs)
        .data(0, GuestData::Fill { len: cs, byte: 0xaa })
        .to_vec()
        .unwrap();
    assert_eq!(bat(&bytes, 0), 5);
    bytes[68..72].copy_from_slice(&2u32.to_le_bytes());
    bytes[72..76].copy_from_slice(&10_000u32.to_le_bytes());
    let source = bytes.clone();
    let image = Image::parse_with(&source, RuleMode::Strict).unwrap();
    let report = validate(&image).unwrap();
    assert_eq!(report.rules(), vec![Rule::R16, Rule::R18]);
    let svg = layout_svg(&image, &report);
    let p = render(&svg);
    let grid = CellGrid::new(bytes.len() as u64, cs);
    assert_eq!((grid.cell_bytes, grid.cells), (cs, 6));
    let centre = |k: u64| (CellGrid::FILE_X + k * CellGrid::CELL + 5, CellGrid::TOP + 5);
    let fill = |k: u64| hex(&p, centre(k).0, centre(k).1);
    let outline = |k: u64| hex(&p, centre(k).0 - 4, centre(k).1);
    assert_eq!(fill(0), CellState::Header.colour());
    assert_eq!(fill(1), CellState::Bat.colour());
    assert_eq!(fill(2), CellState::BelowData.colour());
    assert_eq!(outline(2), FINDING_OUTLINE);
    assert_eq!(fill(3), CellState::Bat.colour());
    assert_eq!(fill(5), CellState::Data.colour());
    assert_eq!(outline(5), CellState::Data.colour());
    assert_eq!(fill(6), CellState::PastEof.colour());
    assert_eq!(outline(6), FINDING_OUTLINE);
    assert!(svg.contains("<title>R16 at bytes 8192..</title>"), "{svg}");
    assert!(
        svg.contains(&format!("<title>R18 at past EOF (from byte {})</title>", bytes.len())),
        "{svg}"
    );
}

/// The dirty maps' scale is stepped and sequential: one granule dirty in 256 (0.4 %) is the
/// palest red, far from a full cell's dark red; the key under each map gives the numbers.
#[test]
fn dirty_shading_tells_a_few_dirty_granules_from_a_full_cell() {
    assert_eq!(dirty_step(0, 1000), 0);
    assert_eq!(dirty_step(4, 1000), 1);
    assert_eq!(dirty_step(10, 1000), 2);
    assert_eq!(dirty_step(99, 1000), 2);
    assert_eq!(dirty_step(100, 1000), 3);
    assert_eq!(dirty_step(500, 1000), 4);
    assert_eq!(dirty_step(999, 1000), 4);
    assert_eq!(dirty_step(1000, 1000), 5);
    assert_eq!(dirty_step(u64::MAX, u64::MAX), 5);
    // 1 GiB disk, 64 KiB granules: 16384 granules, 4 a cell; cell 1 wholly dirty, the rest clean.
    let (bytes, _) = ImageBuilder::new(1 << 30)
        .cluster_size(1 << 20)
        .bitmap(BitmapSpec {
            id: [7; 16],
            granularity: 64 << 10,
            extents: vec![(4 << 16, 4 << 16)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    let svg = bitmaps_svg(&image, &image.bitmaps());
    let p = render(&svg);
    let grid = CellGrid::new(1 << 30, 64 << 10);
    assert_eq!(grid.cell_bytes, 4 << 16);
    assert_eq!(dirty_cell(&p, &grid, 0, 0), CLEAN);
    assert_eq!(dirty_cell(&p, &grid, 0, 4 << 16), FULLY_DIRTY);
    for (label, colour) in DIRTY_SCALE {
        assert!(
            svg.contains(&format!(
                "fill=\"{colour}\" stroke=\"#888888\" stroke-width=\"0.5\"/><text x="
            )),
            "{colour}"
        );
        assert!(svg.contains(&format!(">{label}</text>")), "{label}");
    }
    // Granules of 512 bytes, cells of 256 KiB: 1 KiB dirty (0.4 %) in the first, 1.6 % in the
    // second, the fifth wholly dirty: far apart on the scale.
    let (bytes, _) = ImageBuilder::new(1 << 30)
        .cluster_size(1 << 20)
        .bitmap(BitmapSpec {
            id: [8; 16],
            granularity: 512,
            extents: vec![(0, 1024), (1 << 18, 4096), (1 << 20, 1 << 18)],
        })
        .to_vec()
        .unwrap();
    let image = open(&bytes).unwrap();
    let p = render(&bitmaps_svg(&image, &image.bitmaps()));
    let grid = CellGrid::new(1 << 30, 512);
    assert_eq!(grid.cell_bytes, 1 << 18);
    assert_eq!(dirty_cell(&p, &grid, 0, 0), DIRTY_SCALE[1].1, "1 KiB of 256 KiB: 0.4 %");
    assert_eq!(DIRTY_SCALE[1], ("under 1 %", "#fee0d2"));
    assert_eq!(
        dirty_cell(&p, &grid, 0, 1 << 18),
        DIRTY_SCALE[2].1,
        "4 KiB of 256 KiB: 1.6 %"
    );
    assert_eq!(dirty_cell(&p, &grid, 0, 1 << 20), FULLY_DIRTY);
}
