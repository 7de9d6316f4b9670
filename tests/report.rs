//! `prlimg check IMAGE --output html` (issue 17): one self-contained page with the summary, the
//! QEMU and ploop predictions, the findings table and both pictures; opened in headless
//! Chromium (Debian's `chromium`), whose screenshot must show the pictures resvg draws, cell for
//! cell, where the page places them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parallels_image::{
    bitmaps_svg, check, layout_svg, BitmapSpec, CellState, Data, Grid, Image, ImageBuilder, Mode, Rule,
};
use resvg::tiny_skia::Pixmap;
use serde_json::Value;

#[path = "fixtures/mod.rs"]
mod fixtures;
use fixtures::render_svg;

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");
const CS: u64 = 64 << 10;
/// The browser window, in CSS pixels (one device pixel each): wide enough for the layout
/// picture's three panels and its legend, tall enough for the whole page.
const WINDOW: (u32, u32) = (1900, 2600);

fn prlimg(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run prlimg")
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A v2 image of 64 MiB with 64 KiB clusters: guest clusters 0 and 1 written, a bitmap with
/// granules 0, 1 and 16 dirty (one bitmap cluster), then one leaked cluster at the end (R20).
fn leaky_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let (mut bytes, _) = ImageBuilder::new(64 << 20)
        .cluster_size(CS)
        .data(
            0,
            Data::Fill {
                len: 100 << 10,
                byte: 0xaa,
            },
        )
        .bitmap(BitmapSpec {
            id: *b"\x11\x11\x11\x11\x22\x22\x33\x33\x44\x44\x55\x55\x55\x55\x55\x55",
            granularity: CS,
            extents: vec![(0, 2 * CS), (16 * CS, CS)],
        })
        .to_vec()
        .unwrap();
    bytes.extend(vec![0u8; CS as usize]);
    let path = dir.join("leaky.hds");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// The text of `<tag id="id">…</tag>`, unescaped.
fn element(html: &str, tag: &str, id: &str) -> String {
    let open = format!("<{tag} id=\"{id}\">");
    let start = html.find(&open).unwrap_or_else(|| panic!("no {open} in {html}")) + open.len();
    let end = start + html[start..].find(&format!("</{tag}>")).unwrap();
    html[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The page of `prlimg check IMAGE --output html` (exit 3: a leak).
fn report(image: &Path) -> String {
    let out = prlimg(&["check", image.to_str().unwrap(), "--output", "html"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The pictures the library draws for these bytes, as the page inlines them (without `xmlns`).
fn pictures(bytes: &[u8]) -> (String, String) {
    let c = check(&bytes, Mode::Strict, "").unwrap();
    let image = Image::parse_compact(&bytes, Mode::Strict).unwrap();
    let inline = |svg: String| svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    (
        inline(layout_svg(&image, &c.report)),
        inline(bitmaps_svg(&image, &image.bitmaps())),
    )
}

#[test]
fn html_report_references_nothing_outside_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = leaky_image(tmp.path());
    let html = report(&path);
    assert!(html.starts_with("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"));
    let lower = html.to_ascii_lowercase();
    for external in [
        "http:", "https:", "ftp:", "file:", "data:", "//", "src=", "href=", "url(", "@import", "<link", "<script",
        "<iframe", "<object", "<embed", "<img", "<image", "<use", "<base",
    ] {
        assert!(!lower.contains(external), "the report contains {external:?}");
    }
}

#[test]
fn html_report_has_summary_predictions_findings_and_both_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes) = leaky_image(tmp.path());
    let p = path.to_str().unwrap();
    let html = report(&path);
    // The three text sections are the human report, split where its parts begin.
    let human = prlimg(&["check", p]);
    let human = String::from_utf8(human.stdout).unwrap();
    let summary = element(&html, "pre", "summary");
    let qemu = element(&html, "pre", "qemu");
    let ploop = element(&html, "pre", "ploop");
    assert_eq!(format!("{summary}{qemu}{ploop}"), human);
    let leak = bytes.len() as u64 - CS;
    assert!(
        summary.starts_with(&format!(
            "Leaked R20 at file @{leak}: 65536 bytes at {leak} after the last referenced cluster are leaked\n"
        )),
        "{summary}"
    );
    // The QEMU section is the library's whole prediction, line for line.
    let predicted = check(&bytes, Mode::Strict, p).unwrap().prediction.render(p);
    assert_eq!(qemu, predicted.iter().map(|l| format!("{l}\n")).collect::<String>());
    assert!(
        qemu.starts_with(
            "QEMU 10: opens the image with bitmaps 11111111-2222-3333-4444-555555555555\nqemu-img check: exit 3 \
             (0 corruptions, 3 leaked clusters)\n"
        ),
        "{qemu}"
    );
    assert!(ploop.starts_with("ploop: check exit"), "{ploop}");
    // The findings table: one row per finding of the JSON report, in its order.
    let json: Value = serde_json::from_slice(&prlimg(&["check", p, "--output", "json"]).stdout).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(json["findings"][0]["code"], "R20");
    let table = element(&html, "table", "findings");
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), findings.len(), "{table}");
    for (row, f) in rows.iter().zip(findings) {
        let cell = |k: &str| f[k].as_str().unwrap().to_string();
        assert_eq!(
            *row,
            format!(
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                cell("code"),
                cell("severity"),
                cell("location"),
                cell("message")
            )
        );
    }
    assert_eq!(
        rows[0],
        format!(
            "<td>{}</td><td>leak</td><td>file @{leak}</td><td>65536 bytes at {leak} after the last referenced \
             cluster are leaked</td></tr>\n",
            Rule::R20
        )
    );
    assert!(html.contains("<h2>Findings (1)</h2>"));
    // Both pictures, exactly as the library draws them.
    let (layout, maps) = pictures(&bytes);
    assert_eq!(element(&html, "div", "layout"), layout);
    assert_eq!(element(&html, "div", "bitmaps"), maps);
}

/// A point of a picture and the colour resvg gives it.
struct Probe {
    x: u32,
    y: u32,
    rgb: [u8; 3],
}

fn rgb(p: &Pixmap, x: u32, y: u32) -> [u8; 3] {
    let c = p.pixel(x, y).unwrap().demultiply();
    [c.red(), c.green(), c.blue()]
}

/// The centre of every cell in the grid rows of `svg` from `x0` (inclusive) to `x1`
/// (exclusive), `rows` rows down from the top of the grids, with resvg's colour there.
fn probes(svg: &str, x0: u64, x1: u64, rows: u64) -> Vec<Probe> {
    let pixmap = render_svg(svg);
    let mut out = Vec::new();
    for row in 0..rows {
        for x in (x0..x1).step_by(Grid::CELL as usize) {
            let (x, y) = (
                (x + Grid::CELL / 2) as u32,
                (Grid::TOP + row * Grid::CELL + Grid::CELL / 2) as u32,
            );
            out.push(Probe {
                x,
                y,
                rgb: rgb(&pixmap, x, y),
            });
        }
    }
    out
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(a, b)| a.abs_diff(b) <= 2)
}

/// Where in `shot` the picture sampled by `probes` is (its top-left corner), searching from
/// row `from` down: every probe must match.
fn find(shot: &Pixmap, probes: &[Probe], from: u32) -> Option<(u32, u32)> {
    let anchor = probes
        .iter()
        .find(|p| p.rgb != [255, 255, 255])
        .expect("a non-white probe");
    let (w, h) = (shot.width(), shot.height());
    for dy in from..h {
        for dx in 0..w {
            let (ax, ay) = (dx + anchor.x, dy + anchor.y);
            if ax >= w || ay >= h || !close(rgb(shot, ax, ay), anchor.rgb) {
                continue;
            }
            let all = probes.iter().all(|p| {
                let (x, y) = (dx + p.x, dy + p.y);
                x < w && y < h && close(rgb(shot, x, y), p.rgb)
            });
            if all {
                return Some((dx, dy));
            }
        }
    }
    None
}

/// Runs Chromium headless on `html`, returning the screenshot. Fails after 120 seconds.
fn screenshot(chromium: &Path, html: &Path, dir: &Path) -> Pixmap {
    let png = dir.join("shot.png");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "chromium: {status}: {err}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {err}"));
    Pixmap::decode_png(&bytes).unwrap()
}

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if ci() {
            panic!("chromium is not installed (CI=true): .ci/run installs Debian's chromium");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: html_report_in_chromium: chromium is not installed (apt-get install chromium)"
        );
    }
    found
}

#[test]
#[cfg_attr(
    prlimg_no_chromium,
    ignore = "chromium is not installed (Debian's chromium; .ci/run installs it)"
)]
fn html_report_in_chromium_shows_both_pictures() {
    let Some(chromium) = chromium() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes) = leaky_image(tmp.path());
    let html = tmp.path().join("report.html");
    std::fs::write(&html, report(&path)).unwrap();
    let shot = screenshot(&chromium, &html, tmp.path());
    assert_eq!((shot.width(), shot.height()), WINDOW);

    // The layout picture: the file grid (header and BAT, data, extension, bitmap cluster, leak)
    // and the guest view beside it, every cell as resvg draws it.
    let (layout, maps) = pictures(&bytes);
    let file_grid = Grid::new(bytes.len() as u64, CS);
    let guest = Grid::new(1024, 1);
    let rows = (file_grid.cells + 1).div_ceil(64).max(guest.rows());
    let layout_probes = probes(&layout, Grid::FILE_X, Grid::FILE_X + 2 * Grid::PANEL, rows);
    let mut colours: Vec<[u8; 3]> = layout_probes.iter().map(|p| p.rgb).collect();
    colours.sort_unstable();
    colours.dedup();
    for state in [
        CellState::Header,
        CellState::Data,
        CellState::Extension,
        CellState::BitmapCluster,
        CellState::Leaked,
    ] {
        let c = state.colour();
        let want = [1, 3, 5].map(|i| u8::from_str_radix(&c[i..i + 2], 16).unwrap());
        assert!(colours.contains(&want), "{state:?} ({c}) is not drawn");
    }
    let (_, layout_y) = find(&shot, &layout_probes, 0).expect("the layout picture is not in the screenshot");

    // The dirty map below it: granules 0, 1 and 16 dirty, the rest clean.
    let map_grid = Grid::new(64 << 20, CS);
    let map_probes = probes(&maps, Grid::FILE_X, Grid::FILE_X + Grid::PANEL, map_grid.rows());
    assert!(map_probes.iter().filter(|p| p.rgb == [0xd6, 0x27, 0x28]).count() == 3);
    let (_, maps_y) = find(&shot, &map_probes, layout_y + 1).expect("the dirty map is not in the screenshot");
    assert!(maps_y > layout_y + (rows * Grid::CELL) as u32);
}

#[test]
fn picture_options_write_the_library_pictures_and_keep_existing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes) = leaky_image(tmp.path());
    let p = path.to_str().unwrap();
    let svg = tmp.path().join("out.svg");
    let s = svg.to_str().unwrap();
    let c = check(&bytes, Mode::Strict, "").unwrap();
    let image = Image::parse_compact(&bytes, Mode::Strict).unwrap();
    let layout = layout_svg(&image, &c.report);
    let maps = bitmaps_svg(&image, &image.bitmaps());
    let one = bitmaps_svg(&image, &[image.bitmap("11111111-2222-3333-4444-555555555555").unwrap()]);
    for (args, code, want) in [
        (vec!["check", p, "--picture", s], 3, &layout),
        (vec!["info", p, "--picture", s], 0, &layout),
        (vec!["bitmaps", p, "--picture", s], 0, &maps),
        (
            vec!["bitmaps", p, "11111111-2222-3333-4444-555555555555", "--picture", s],
            0,
            &one,
        ),
    ] {
        let _ = std::fs::remove_file(&svg);
        let out = prlimg(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&std::fs::read_to_string(&svg).unwrap(), want, "{args:?}");
        // Again: the picture exists, and stays as it is without --force.
        std::fs::write(&svg, "kept").unwrap();
        let out = prlimg(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("prlimg: {s}: already exists (use --force to replace it)\n")
        );
        assert_eq!(std::fs::read_to_string(&svg).unwrap(), "kept");
        let mut forced = args.clone();
        forced.push("--force");
        assert_eq!(prlimg(&forced).status.code(), Some(code), "{forced:?}");
        assert_eq!(&std::fs::read_to_string(&svg).unwrap(), want, "{forced:?}");
    }
    let out = prlimg(&["bitmaps", p, "00000000-2222-3333-4444-555555555555", "--picture", s]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("prlimg: {p}: no bitmap named \"00000000-2222-3333-4444-555555555555\"\n")
    );
}
