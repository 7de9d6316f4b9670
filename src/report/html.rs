//! `prlimg check --output html`: one self-contained page, the report's text, the findings and
//! the library's pictures inlined.

use std::fmt::Write as _;

use crate::check::Conformance;
use crate::image::Image;
use crate::picture::{dirty_model, dirty_step, layout_model, CellState, LayoutModel, DIRTY_SCALE, FINDING_OUTLINE};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The guest view's colour scale, light to dark, by the share of a cell's guest clusters that
/// are allocated (the steps of [`dirty_step`]).
const GUEST_SCALE: [(&str, &str); 6] = [
    ("none allocated", "#eeeeee"),
    ("under 1 %", "#e5f5e0"),
    ("1-10 %", "#c7e9c0"),
    ("10-50 %", "#74c476"),
    ("50-99 %", "#31a354"),
    ("all allocated", "#006d2c"),
];

/// The page's style: the text wraps, the grids scale to their column (a cell is the panel's
/// width over the grid's columns, up to 48 px), the panels sit side by side when there is room
/// and one above the other when there is not: no width from 360 px up scrolls sideways.
const STYLE: &str = "*{box-sizing:border-box}\
body{font-family:sans-serif;margin:0 auto;padding:0.5em 1em;max-width:2200px}\
h1{font-size:1.4em;overflow-wrap:anywhere}\
pre{background:#f4f4f4;padding:6px;white-space:pre-wrap;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%;table-layout:fixed}\
td,th{border:1px solid #aaa;padding:2px 6px;text-align:left;overflow-wrap:anywhere;vertical-align:top}\
th:nth-child(1){width:3.6em}th:nth-child(2){width:7em}th:nth-child(3){width:22%}\
.panels{display:flex;flex-wrap:wrap;gap:1em 2em;align-items:flex-start}\
.panel{flex:1 1 320px;min-width:0;margin:0}\
figcaption{margin-bottom:0.3em;overflow-wrap:anywhere}\
svg{display:block;width:100%;height:auto}\
ul.key{list-style:none;padding:0;margin:0.3em 0;display:flex;flex-wrap:wrap;gap:0.2em 1.2em}\
ul.key li{white-space:nowrap}ul.cells{padding-left:1.2em;overflow-wrap:anywhere}\
.sw{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:-0.15em;margin-right:0.3em}\
.fo{border:2px solid #ff00ff;background:none}";

/// A colour key entry.
fn key(out: &mut String, class: &str, colour: &str, label: &str) {
    let _ = write!(
        out,
        "<li><span class=\"sw{class}\" style=\"background:{colour}\"></span>{}</li>",
        esc(label)
    );
}

/// An SVG grid of `columns` x `rows` cells of 10 units, scaled to its column, at most 48 px a
/// cell; `cells` gives each drawn cell's index, fill, tooltip and the text written on it.
fn grid_svg(id: &str, columns: u64, rows: u64, cells: impl Iterator<Item = (u64, String, String, String)>) -> String {
    let (w, h) = (columns * 10, rows * 10);
    let mut out = format!(
        "<svg id=\"{id}\" viewBox=\"0 0 {w} {h}\" style=\"max-width:{}px\" font-family=\"sans-serif\" \
         font-size=\"3.4\" text-anchor=\"middle\">",
        columns * 48
    );
    for (k, fill, title, text) in cells {
        let (x, y) = ((k % columns) * 10, (k / columns) * 10);
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"0.6\">\
             <title>{}</title></rect>",
            esc(&title)
        );
        if !text.is_empty() {
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"8.4\" height=\"8.4\" fill=\"none\" stroke=\"{FINDING_OUTLINE}\" \
                 stroke-width=\"1.2\"/><text x=\"{}\" y=\"{}\" fill=\"#000000\" stroke=\"#ffffff\" stroke-width=\"0.8\" \
                 paint-order=\"stroke\">{}</text>",
                x as f64 + 0.8,
                y as f64 + 0.8,
                x + 5,
                y as f64 + 6.2,
                esc(&text)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The layout picture for the page: the file grid with each finding's rule codes on its cell,
/// the guest view, and a colour key holding exactly the colours drawn, with the findings listed
/// by cell beside them.
fn layout_html(m: &LayoutModel, virtual_size: u64) -> String {
    let mut out = String::from("<div id=\"layout\" class=\"panels\">\n");
    // The past-EOF cell is drawn only when something is referenced there.
    let past_eof = m.states[m.past_eof_cell as usize] != CellState::Empty;
    let drawn = if past_eof { m.grid.cells } else { m.grid.cells - 1 };
    let columns = m.grid.columns.min(drawn).max(1);
    let rows = drawn.div_ceil(columns);
    let cells = (0..drawn).map(|k| {
        let state = m.states[k as usize];
        let (lo, hi) = m.cell_range(k);
        let range = match hi {
            Some(hi) => format!("bytes {lo}..{hi}"),
            None => format!("past EOF (from byte {lo})"),
        };
        let codes: Vec<String> = m.rules[k as usize].iter().map(ToString::to_string).collect();
        let title = if codes.is_empty() {
            format!("{range}: {}", state.name())
        } else {
            format!("{range}: {}; {}", state.name(), codes.join(" "))
        };
        (k, state.colour().to_string(), title, codes.join(" "))
    });
    let _ = writeln!(
        out,
        "<figure id=\"file-grid\" class=\"panel\"><figcaption>File layout: {} bytes, cluster {} bytes; 1 cell = {} bytes \
         ({} clusters){}</figcaption>{}</figure>",
        m.file_len,
        m.cluster_size,
        m.grid.cell_bytes,
        m.grid.cell_bytes / m.cluster_size.max(1),
        if past_eof { "; the last cell: past EOF" } else { "" },
        grid_svg("file-cells", columns, rows, cells)
    );
    let guest_cells = m.allocated.iter().enumerate().map(|(k, &n)| {
        let k = k as u64;
        let (lo, hi) = m.guest_range(k);
        let step = dirty_step(n, hi - lo);
        (
            k,
            GUEST_SCALE[step].1.to_string(),
            format!("guest clusters {lo}..{hi}: {n} allocated"),
            String::new(),
        )
    });
    let _ = write!(
        out,
        "<figure id=\"guest-grid\" class=\"panel\"><figcaption>Guest view: {virtual_size} bytes; 1 cell = {} guest \
         clusters, colour = share allocated</figcaption>{}<ul id=\"guest-key\" class=\"key\">",
        m.guest.cell_bytes,
        grid_svg("guest-cells", m.guest.columns, m.guest.rows(), guest_cells)
    );
    for (label, colour) in GUEST_SCALE {
        key(&mut out, "", colour, label);
    }
    out.push_str("</ul></figure>\n<div id=\"layout-key\" class=\"panel\"><ul id=\"file-key\" class=\"key\">");
    let mut states: Vec<CellState> = m.states[..drawn as usize].to_vec();
    states.sort_unstable();
    states.dedup();
    for s in states {
        key(&mut out, "", s.colour(), s.name());
    }
    let with_findings: Vec<u64> = (0..drawn).filter(|&k| !m.rules[k as usize].is_empty()).collect();
    if !with_findings.is_empty() || !m.unplaced.is_empty() {
        key(&mut out, " fo", "none", "finding (its rule codes on the cell)");
    }
    out.push_str("</ul>");
    if !with_findings.is_empty() || !m.unplaced.is_empty() {
        out.push_str("<ul id=\"cell-findings\" class=\"cells\">");
        for &k in with_findings.iter().take(40) {
            let codes: Vec<String> = m.rules[k as usize].iter().map(ToString::to_string).collect();
            let (lo, hi) = m.cell_range(k);
            let range = match hi {
                Some(hi) => format!("bytes {lo}..{hi}"),
                None => format!("past EOF (from byte {lo})"),
            };
            let _ = write!(out, "<li><b>{}</b>: cell {k}, {range}</li>", codes.join(" "));
        }
        if with_findings.len() > 40 {
            let _ = write!(out, "<li>{} more cells with findings</li>", with_findings.len() - 40);
        }
        if !m.unplaced.is_empty() {
            let codes: Vec<String> = m.unplaced.iter().map(ToString::to_string).collect();
            let _ = write!(out, "<li><b>{}</b>: not at a byte of the file</li>", codes.join(" "));
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>\n</div>\n");
    out
}

/// Each bitmap's dirty map, coloured by the dirty share of each cell on a stepped scale whose
/// key gives the numbers.
fn bitmaps_html(image: &Image<'_>) -> String {
    let size = image.header().virtual_size();
    let bitmaps = image.bitmaps();
    let mut out = String::from("<div id=\"bitmaps\" class=\"panels\">\n");
    if bitmaps.is_empty() {
        out.push_str("<p>No bitmaps.</p>\n");
    }
    for (n, b) in bitmaps.iter().enumerate() {
        let d = dirty_model(size, b);
        let cells = d.dirty.iter().enumerate().map(|(k, &dirty)| {
            let k = k as u64;
            let total = d.cell_total(k, size);
            let lo = k * d.grid.cell_bytes;
            (
                k,
                DIRTY_SCALE[dirty_step(dirty, total)].1.to_string(),
                format!("guest bytes {lo}..{}: {dirty} dirty", lo + total),
                String::new(),
            )
        });
        let _ = write!(
            out,
            "<figure id=\"bitmap-{n}\" class=\"panel\"><figcaption>{}: granularity {} bytes; 1 cell = {} bytes, \
             colour = share dirty{}</figcaption>{}<ul class=\"key\">",
            esc(&b.name()),
            b.granularity_bytes(),
            d.grid.cell_bytes,
            d.error
                .as_ref()
                .map_or(String::new(), |e| format!(" (not decodable: {})", esc(e))),
            grid_svg(&format!("bitmap-{n}-cells"), d.grid.columns, d.grid.rows(), cells)
        );
        for (label, colour) in DIRTY_SCALE {
            key(&mut out, "", colour, label);
        }
        out.push_str("</ul></figure>\n");
    }
    out.push_str("</div>\n");
    out
}

/// One HTML page that references nothing outside itself (no URL, no script, no external style
/// or image): `sections` as preformatted text (id, heading, text: the verdicts, the summary
/// and the QEMU and ploop predictions), the findings table, and the pictures drawn for the
/// page (`image` is `None` when the header could not be interpreted: then there is nothing to
/// draw). It fits any screen from 360 px wide up without scrolling sideways.
pub(crate) fn html(c: &Conformance, sections: &[(&str, &str, String)], image: Option<&Image<'_>>) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>prlimg check {}</title>", esc(&c.filename));
    let _ = write!(out, "<style>{STYLE}</style>");
    out.push_str("</head><body>\n");
    let _ = writeln!(out, "<h1>{}: {}</h1>", esc(&c.filename), c.verdict().name());
    for (id, heading, text) in sections {
        let _ = writeln!(out, "<h2>{heading}</h2>\n<pre id=\"{id}\">{}</pre>", esc(text));
    }
    let _ = writeln!(out, "<h2>Findings ({})</h2>", c.report.findings.len());
    out.push_str("<table id=\"findings\"><tr><th>rule</th><th>severity</th><th>where</th><th>message</th></tr>\n");
    for f in &c.report.findings {
        let v = &f.violation;
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v.rule(),
            f.severity.name(),
            esc(&v.location().to_string()),
            esc(&v.to_string())
        );
    }
    out.push_str("</table>\n");
    match image {
        Some(image) => {
            out.push_str("<h2>Layout</h2>\n");
            out.push_str(&layout_html(
                &layout_model(image, &c.report),
                image.header().virtual_size(),
            ));
            out.push_str("<h2>Bitmaps</h2>\n");
            out.push_str(&bitmaps_html(image));
        }
        None => out.push_str("<p>No pictures: the header cannot be interpreted.</p>\n"),
    }
    out.push_str("</body></html>\n");
    out
}
