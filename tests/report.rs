//! `prlimg check IMAGE --output html` (issues 17 and 29): one self-contained page with the
//! verdicts, the summary, the QEMU and ploop predictions, the findings table and the pictures
//! (the file grid with rule codes on its cells, the guest view, the dirty maps, each with a
//! colour key that matches what is drawn); opened in headless Chromium (Debian's `chromium`)
//! at 360, 1200 and 2560 px, where it never scrolls sideways and every legend entry is inside
//! the page.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parallels_image::{
    check, picture::bitmaps_svg, picture::layout_svg, picture::CellGrid, picture::CellState, picture::DIRTY_SCALE,
    BitmapSpec, GuestData, Image, ImageBuilder, Rule, RuleMode,
};
use resvg::tiny_skia::Pixmap;
use serde_json::Value;

#[path = "fixtures/mod.rs"]
mod fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");
const CS: u64 = 64 << 10;

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
            GuestData::Fill {
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
        // A scheme starts a word: libphdi's function names (`…_read_data: …`) are not URLs.
        let found = lower.match_indices(external).any(|(i, _)| {
            !external.ends_with(':') || i == 0 || !matches!(lower.as_bytes()[i - 1], b'_' | b'a'..=b'z' | b'0'..=b'9')
        });
        assert!(!found, "the report contains {external:?}");
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
    let headline = element(&html, "pre", "headline");
    let summary = element(&html, "pre", "summary");
    let qemu = element(&html, "pre", "qemu");
    let ploop = element(&html, "pre", "ploop");
    let readers = element(&html, "pre", "readers");
    assert_eq!(format!("{headline}{summary}{qemu}{ploop}{readers}"), human);
    assert!(
        headline.starts_with("QEMU 10: opens it with its 1 bitmap, but `qemu-img check` exits 3"),
        "{headline}"
    );
    let leak = bytes.len() as u64 - CS;
    assert!(
        summary.starts_with(&format!(
            "Leaked R20 at file @{leak}: 65536 bytes at {leak} after the last referenced cluster are leaked\n"
        )),
        "{summary}"
    );
    // The QEMU section is the library's whole prediction, line for line.
    let predicted = check(&bytes, RuleMode::Strict, p).unwrap().prediction.render(p);
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
    // The file grid: one cell per cluster (header and BAT, 2 data, extension, bitmap, leak), no
    // past-EOF cell (nothing is referenced there), the rule code on the leaked cell.
    let cells = fills(&html, "file-cells");
    let file = CellGrid::new(bytes.len() as u64, CS);
    assert_eq!(cells.len() as u64, file.cells);
    assert_eq!(
        cells,
        [
            CellState::Header,
            CellState::Data,
            CellState::Data,
            CellState::Extension,
            CellState::BitmapCluster,
            CellState::Leaked
        ]
        .map(|s| s.colour().to_string())
    );
    assert!(
        html.contains(&format!(
            "<title>bytes {leak}..{}: leaked; R20</title></rect><rect x=\"50.8\" y=\"0.8\" width=\"8.4\" height=\"8.4\" \
             fill=\"none\" stroke=\"#ff00ff\"",
            leak + CS
        )),
        "{html}"
    );
    assert!(html.contains(">R20</text></svg>"), "{html}");
    assert!(html.contains(&format!("<li><b>R20</b>: cell 5, bytes {leak}..{}</li>", leak + CS)));
    // The colour key holds exactly the colours drawn (and the finding outline).
    let mut drawn = cells.clone();
    drawn.sort();
    drawn.dedup();
    let mut keyed = key_colours(&element_raw(&html, "ul", "file-key"));
    assert_eq!(keyed.pop().as_deref(), Some("none"), "the finding outline comes last");
    keyed.sort();
    assert_eq!(keyed, drawn);
    // The dirty map: granules 0, 1 and 16 wholly dirty (the darkest step), the rest clean; its
    // key gives every step with its numbers.
    let dirty = fills(&html, "bitmap-0-cells");
    assert_eq!(dirty.len(), 1024);
    for (k, fill) in dirty.iter().enumerate() {
        let want = if [0, 1, 16].contains(&k) {
            DIRTY_SCALE[5].1
        } else {
            DIRTY_SCALE[0].1
        };
        assert_eq!(fill, want, "cell {k}");
    }
    let key = element_raw(&html, "figure", "bitmap-0");
    for (label, colour) in DIRTY_SCALE {
        assert!(
            key.contains(&format!(
                "<li><span class=\"sw\" style=\"background:{colour}\"></span>{label}</li>"
            )),
            "{label}: {key}"
        );
    }
}

/// The `fill`s of the cells of the SVG grid `id` of the page, in order.
fn fills(html: &str, id: &str) -> Vec<String> {
    let svg = element_raw(html, "svg", id);
    svg.split("<rect ")
        .skip(1)
        .filter(|r| !r.contains("fill=\"none\""))
        .map(|r| {
            let at = r.find("fill=\"").unwrap() + 6;
            r[at..at + 7].to_string()
        })
        .collect()
}

/// The colours of a key's swatches, in order.
fn key_colours(list: &str) -> Vec<String> {
    list.split("style=\"background:")
        .skip(1)
        .map(|r| r[..r.find('"').unwrap()].to_string())
        .collect()
}

/// The raw text of the element `<tag id="id" …>…</tag>` (attributes after the id allowed).
fn element_raw(html: &str, tag: &str, id: &str) -> String {
    let open = format!("<{tag} id=\"{id}\"");
    let start = html.find(&open).unwrap_or_else(|| panic!("no {open} in {html}"));
    let end = start + html[start..].find(&format!("</{tag}>")).unwrap();
    html[start..end].to_string()
}

/// A BAT entry past the end of the file (R18): the past-EOF cell is drawn, black, with R18.
#[test]
fn html_report_draws_the_past_eof_cell_only_when_something_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut bytes, _) = ImageBuilder::new(1 << 20)
        .cluster_size(CS)
        .data(0, GuestData::Fill { len: 512, byte: 1 })
        .to_vec()
        .unwrap();
    bytes[68..72].copy_from_slice(&1000u32.to_le_bytes());
    let path = tmp.path().join("eof.hds");
    std::fs::write(&path, &bytes).unwrap();
    let out = prlimg(&["check", path.to_str().unwrap(), "--output", "html"]);
    assert_eq!(out.status.code(), Some(2));
    let html = String::from_utf8(out.stdout).unwrap();
    let cells = fills(&html, "file-cells");
    assert_eq!(
        cells,
        [CellState::Header, CellState::Data, CellState::PastEof].map(|s| s.colour().to_string())
    );
    assert!(
        html.contains(&format!(
            "<title>past EOF (from byte {}): past EOF; R18</title>",
            bytes.len()
        )),
        "{html}"
    );
    assert!(html.contains("; the last cell: past EOF</figcaption>"));
    assert!(html.contains(&format!(
        "<li><b>R18</b>: cell 2, past EOF (from byte {})</li>",
        bytes.len()
    )));
}

/// Runs Chromium headless with `args` on `page`; its standard output. Fails after 120 s.
fn chromium_run(chromium: &Path, args: &[String], page: &Path) -> Vec<u8> {
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
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).unwrap();
        buf
    });
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
    reader.join().unwrap()
}

/// The screenshot of `html` in a window `width` x `height`.
fn screenshot(chromium: &Path, html: &Path, dir: &Path, (width, height): (u32, u32)) -> Pixmap {
    let png = dir.join("shot.png");
    chromium_run(
        chromium,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
        ],
        html,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e})"));
    Pixmap::decode_png(&bytes).unwrap()
}

/// Measures the report laid out `width` CSS pixels wide: it is put in an iframe that wide (a
/// headless window is at least 500 px), with a script (in this copy only: the report has none)
/// that writes the document's scroll width and every legend entry outside the page into the
/// outer page's title, which `--dump-dom` prints. Returns (client width, scroll width, legend
/// entries, entries outside).
fn measure(chromium: &Path, report: &str, dir: &Path, width: u32) -> (u64, u64, u64, Vec<String>) {
    let script = "<script>(function(){var d=document.documentElement;var out=[];\
        var items=document.querySelectorAll('ul.key li, #cell-findings li, figcaption, svg');\
        for(var i=0;i<items.length;i++){var r=items[i].getBoundingClientRect();\
        if(r.left<0||r.right>d.clientWidth+0.5)out.push(items[i].textContent||items[i].id);}\
        parent.document.title=JSON.stringify([d.clientWidth,d.scrollWidth,items.length,out]);})();</script>";
    let inner = report.replace("</body>", &format!("{script}</body>"));
    let attr = inner.replace('&', "&amp;").replace('"', "&quot;");
    let page = dir.join(format!("measure-{width}.html"));
    std::fs::write(
        &page,
        format!(
            "<!DOCTYPE html><html><head><title>none</title></head><body style=\"margin:0\">\
             <iframe style=\"border:0;width:{width}px;height:3000px\" srcdoc=\"{attr}\"></iframe></body></html>"
        ),
    )
    .unwrap();
    let dom = chromium_run(
        chromium,
        &[
            "--dump-dom".to_string(),
            format!("--window-size={},3100", width.max(500) + 40),
        ],
        &page,
    );
    let dom = String::from_utf8(dom).unwrap();
    let start = dom.find("<title>").expect("a title") + 7;
    let title = &dom[start..start + dom[start..].find("</title>").unwrap()];
    let title = title
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let v: Value = serde_json::from_str(&title).unwrap_or_else(|e| panic!("{e}: {title}"));
    let outside = v[3]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (
        v[0].as_u64().unwrap(),
        v[1].as_u64().unwrap(),
        v[2].as_u64().unwrap(),
        outside,
    )
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

/// At 360, 1200 and 2560 px the page does not scroll sideways and every legend entry, caption
/// and picture is inside it; at 1200 px the screenshot shows every state of the file grid and
/// the dirty map's darkest step.
#[test]
#[cfg_attr(
    prlimg_no_chromium,
    ignore = "chromium is not installed (Debian's chromium; .ci/run installs it)"
)]
fn html_report_in_chromium_fits_every_width() {
    let Some(chromium) = chromium() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = leaky_image(tmp.path());
    let page = report(&path);
    for width in [360, 1200, 2560] {
        let (client, scroll, items, outside) = measure(&chromium, &page, tmp.path(), width);
        assert_eq!(client, u64::from(width));
        assert_eq!(scroll, client, "{width} px: the page scrolls sideways");
        assert!(
            items >= 25,
            "{width} px: {items} legend entries, captions and pictures measured"
        );
        assert!(outside.is_empty(), "{width} px: outside the page: {outside:?}");
    }
    let html = tmp.path().join("report.html");
    std::fs::write(&html, &page).unwrap();
    let shot = screenshot(&chromium, &html, tmp.path(), (1200, 2400));
    assert_eq!((shot.width(), shot.height()), (1200, 2400));
    let mut seen = std::collections::BTreeSet::new();
    for p in shot.pixels() {
        let c = p.demultiply();
        seen.insert(format!("#{:02x}{:02x}{:02x}", c.red(), c.green(), c.blue()));
    }
    for colour in [
        CellState::Header.colour(),
        CellState::Data.colour(),
        CellState::Extension.colour(),
        CellState::BitmapCluster.colour(),
        CellState::Leaked.colour(),
        DIRTY_SCALE[5].1,
        DIRTY_SCALE[0].1,
    ] {
        assert!(seen.contains(colour), "{colour} is not on the screen");
    }
}

#[test]
fn picture_options_write_the_library_pictures_and_keep_existing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes) = leaky_image(tmp.path());
    let p = path.to_str().unwrap();
    let svg = tmp.path().join("out.svg");
    let s = svg.to_str().unwrap();
    let c = check(&bytes, RuleMode::Strict, "").unwrap();
    let image = Image::parse_compact(&bytes, RuleMode::Strict).unwrap();
    let layout = layout_svg(&image, &c.report);
    let maps = bitmaps_svg(&image, &image.bitmaps());
    let one = bitmaps_svg(
        &image,
        &[image.bitmap_named("11111111-2222-3333-4444-555555555555").unwrap()],
    );
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
