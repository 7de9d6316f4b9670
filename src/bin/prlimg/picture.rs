//! `--picture OUT.svg` and `check --output html`: the library's pictures, written aside and
//! renamed into place, or inlined into one self-contained HTML report.

use std::io::Write;
use std::path::Path;

use parallels_image::{bitmaps_svg, layout_svg, write_file_atomically, Bundle, Conformance, Image, Report};

use crate::output::Failure;

/// Writes `svg` to `path` (aside, then renamed); refuses an existing file unless `force`.
pub fn write(path: &Path, force: bool, svg: &str) -> Result<(), Failure> {
    write_file_atomically(path, force, |f| Ok(f.write_all(svg.as_bytes())?)).map_err(|e| Failure::lib(path, &e))
}

/// The guest view of the bundle at `path` (its top snapshot), by snapshot, written to `out`.
pub fn bundle(path: &Path, out: &Path, force: bool) -> Result<(), Failure> {
    let bundle = Bundle::open(path).map_err(|e| crate::convert::bundle_failure(&e))?;
    let svg = bundle.guest_svg(None).map_err(|e| crate::convert::bundle_failure(&e))?;
    write(out, force, &svg)
}

/// The layout picture of `image` with `report`'s findings.
pub fn layout(image: &Image<'_>, report: &Report) -> String {
    layout_svg(image, report)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An SVG picture for inlining into HTML: the HTML parser puts `<svg>` in the SVG namespace
/// itself, so the `xmlns` declaration (the report's only URL) is left out.
fn inline(svg: &str) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// One HTML page that references nothing outside itself (no URL, no script, no external style
/// or image): `sections` as preformatted text (id, heading, text: the summary and the QEMU and
/// ploop predictions), the findings table, and both pictures inline (`image` is `None` when the
/// header could not be interpreted: then there is nothing to draw).
pub fn html(c: &Conformance, sections: &[(&str, &str, String)], image: Option<&Image<'_>>) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    out.push_str(&format!("<title>prlimg check {}</title>", esc(&c.filename)));
    out.push_str(
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}\
         td,th{border:1px solid #aaa;padding:2px 6px;text-align:left}pre{background:#f4f4f4;padding:6px}\
         svg{display:block}</style>",
    );
    out.push_str("</head><body>\n");
    out.push_str(&format!("<h1>{}: {}</h1>\n", esc(&c.filename), c.verdict().name()));
    for (id, heading, text) in sections {
        out.push_str(&format!("<h2>{heading}</h2>\n<pre id=\"{id}\">{}</pre>\n", esc(text)));
    }
    out.push_str(&format!("<h2>Findings ({})</h2>\n", c.report.findings.len()));
    out.push_str("<table id=\"findings\"><tr><th>rule</th><th>severity</th><th>where</th><th>message</th></tr>\n");
    for f in &c.report.findings {
        let v = &f.violation;
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            v.rule(),
            f.severity.name(),
            esc(&v.location().to_string()),
            esc(&v.to_string())
        ));
    }
    out.push_str("</table>\n");
    match image {
        Some(image) => {
            out.push_str("<h2>Layout</h2>\n<div id=\"layout\">");
            out.push_str(&inline(&layout_svg(image, &c.report)));
            out.push_str("</div>\n<h2>Bitmaps</h2>\n<div id=\"bitmaps\">");
            out.push_str(&inline(&bitmaps_svg(image, &image.bitmaps())));
            out.push_str("</div>\n");
        }
        None => out.push_str("<p>No pictures: the header cannot be interpreted.</p>\n"),
    }
    out.push_str("</body></html>\n");
    out
}
