//! The crate's modules point one way: each uses only modules of its own layer or the layers
//! above it (`src/lib.rs` draws the picture), and none depends on itself through others.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, top (used by all) to bottom (uses all), as `src/lib.rs` describes them.
const LAYERS: &[&[&str]] = &[
    &["raw"],
    &["rule", "violation", "error"],
    &["source", "helper", "outfile", "size"],
    &["header", "extension", "bitmap", "image"],
    &["validate"],
    &["builder", "random", "recipe", "stream", "edit"],
    &["qemu", "ploop"],
    &["check", "repair"],
    &["picture"],
    &["corrupt", "mutate"],
    &["bundle", "guest", "corpus"],
    &["readers"],
    &["report"],
    &["oracle"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of this test (and of src/lib.rs): add it"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The folders that group modules by layer (`src/lib.rs` keeps each module's path at the root).
const FOLDERS: &[&str] = &["views", "rules", "writers", "predict"];

/// The library's top-level module of a file under `src/` (`None` for `lib.rs`, the CLI and a
/// folder's `mod.rs`, which only declares its modules).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts = rel.components().map(|c| c.as_os_str().to_str().unwrap());
    let first = parts.next()?;
    let name = match first {
        "lib.rs" | "bin" => return None,
        f if FOLDERS.contains(&f) => match parts.next()? {
            "mod.rs" => return None,
            m => m,
        },
        f => f,
    };
    Some(name.trim_end_matches(".rs").to_string())
}

/// The modules `text` names as `crate::NAME`, in code before its unit tests (comments and doc
/// comments skipped).
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let deps = uses(&fs::read_to_string(&file).unwrap());
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module));
    }
    graph
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let graph = graph();
    assert!(graph.contains_key("validate") && graph.contains_key("raw"), "{graph:?}");
    let mut upward = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if layer_of(dep) > layer_of(module) {
                upward.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(upward.is_empty(), "arrows back up: {upward:?}");
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = graph();
    // Depth-first search for a cycle: 1 = on the path, 2 = done.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => panic!("import cycle: {} -> {m}", path.join(" -> ")),
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, state, path);
        }
        path.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        visit(m, &graph, &mut state, &mut Vec::new());
    }
}

#[test]
fn the_scanner_sees_uses_and_skips_comments_and_tests() {
    let text = "use crate::image::Image;\n// crate::check is mentioned\nfn f() { crate::rule::Rule::R1; }\n\
                /// [`crate::Image`]\n#[cfg(test)]\nmod tests { use crate::builder; }\n";
    assert_eq!(uses(text), BTreeSet::from(["image".to_string(), "rule".to_string()]));
}
