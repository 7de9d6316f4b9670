//! The guest view of a bundle (issue 17): which guest ranges are allocated and from which
//! snapshot, rendered with resvg; `prlimg check|info BUNDLE --picture` writes it.

use std::process::Command;

use parallels_image::{bundle::Bundle, picture::CellGrid, picture::SNAPSHOT_COLOURS, picture::UNALLOCATED};

use crate::common::*;
use crate::fixtures::{pixel_hex, render_svg as render};

/// The colour at the centre of the cell holding guest byte `offset`.
fn at(p: &resvg::tiny_skia::Pixmap, grid: &CellGrid, offset: u64) -> String {
    let k = grid.cell_of(offset);
    let x = CellGrid::FILE_X + (k % grid.columns) * CellGrid::CELL + 5;
    let y = CellGrid::TOP + (k / grid.columns) * CellGrid::CELL + 5;
    pixel_hex(p, x, y)
}

const K: u64 = 1 << 10;

#[test]
fn guest_view_colours_each_range_by_the_snapshot_it_comes_from() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    // 4 MiB in 512-byte units: 1 KiB a cell, 64 x 64 cells.
    let grid = CellGrid::new(4 * MIB, 512);
    assert_eq!((grid.cell_bytes, grid.cells, grid.columns), (1024, 4096, 64));
    let depth = |d: usize| SNAPSHOT_COLOURS[d].to_string();
    let zeros = UNALLOCATED.to_string();

    // At the top (3 -> 2 -> 1): the root's [0, 1M) and [2M, 3M), the middle's [512K, 1M+64K),
    // the top's clusters [64K, 128K) and [3M, 3M+128K).
    let svg = bundle.guest_svg(None).unwrap();
    let p = render(&svg);
    let expect = [
        (0, depth(2)),
        (64 * K, depth(0)),
        (128 * K, depth(2)),
        (512 * K, depth(1)),
        (MIB + 63 * K, depth(1)),
        (MIB + 64 * K, zeros.clone()),
        (2 * MIB, depth(2)),
        (3 * MIB, depth(0)),
        (3 * MIB + 127 * K, depth(0)),
        (3 * MIB + 128 * K, zeros.clone()),
        (4 * MIB - 1, zeros.clone()),
    ];
    for (offset, colour) in &expect {
        assert_eq!(&at(&p, &grid, *offset), colour, "guest byte {offset}");
    }
    let g = |n: u128| format!("{{{}}}", guid(n).hyphenated());
    for (d, n) in [(0, 3), (1, 2), (2, 1)] {
        let label = format!(">depth {d}: {} (c.hdd.0.{}.hds)</text>", g(n), g(n));
        assert!(svg.contains(&label), "{label} in {svg}");
    }
    // The legend's longest line is not clipped: the picture's last columns stay white.
    let (w, h) = (u64::from(p.width()), u64::from(p.height()));
    for x in w - 6..w {
        for y in 0..h {
            assert_eq!(pixel_hex(&p, x, y), "#ffffff", "legend clipped at ({x}, {y})");
        }
    }
    assert!(svg.contains(&format!(">guest view at snapshot {}: 4194304 bytes</text>", g(3))));
    assert!(svg.contains(">1 cell = 1024 bytes; colour = the newest snapshot holding any of them</text>"));

    // At the middle snapshot (2 -> 1) the top's clusters are not there.
    let p = render(&bundle.guest_svg(Some(guid(2))).unwrap());
    for (offset, colour) in [
        (0, depth(1)),
        (64 * K, depth(1)),
        (512 * K, depth(0)),
        (3 * MIB, zeros.clone()),
    ] {
        assert_eq!(at(&p, &grid, offset), colour, "guest byte {offset} at snapshot 2");
    }

    // The CLI writes the same picture for check and info, and refuses to replace it unforced.
    let svg_path = tmp.path().join("guest.svg");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_prlimg")).args(args).output().unwrap();
    let d = dir.to_str().unwrap();
    let s = svg_path.to_str().unwrap();
    let o = run(&["check", d, "--picture", s]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&svg_path).unwrap(), svg);
    let o = run(&["info", d, "--picture", s]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"), "{o:?}");
    std::fs::remove_file(&svg_path).unwrap();
    let o = run(&["info", d, "--picture", s]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&svg_path).unwrap(), svg);
}
