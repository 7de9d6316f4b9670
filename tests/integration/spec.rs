//! `spec/rules.md` and the code agree: every rule of [`Rule::ALL`] has an entry there with its
//! title, its severity and a `Violation` variant, and every test an entry names exists.

use std::fs;
use std::path::{Path, PathBuf};

use parallels_image::{Rule, Severity};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The entry of each rule: from its `**Rn — title.**` line to the next entry or heading.
fn entries(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("**R") {
            let code = format!("R{}", rest.split(' ').next().unwrap_or(""));
            out.push((code, format!("{line}\n")));
        } else if line.starts_with('#') {
            out.push((String::new(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out.retain(|e| !e.0.is_empty());
    out
}

/// The `module::test` names an entry's `Tests:` list gives.
fn tests_named(entry: &str) -> Vec<(String, String)> {
    let Some(at) = entry.find("Tests:") else {
        return Vec::new();
    };
    entry[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|t| t.split_once("::"))
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect()
}

fn test_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            test_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Corruption => "Corruption",
        Severity::Leak => "Leak",
        Severity::NonCanonical => "Non-canonical",
        Severity::Note => "Note",
    }
}

#[test]
fn every_rule_has_its_entry_title_severity_and_variant() {
    let text = fs::read_to_string(root().join("spec/rules.md")).unwrap();
    let errors = fs::read_to_string(root().join("src/rules/violation.rs")).unwrap();
    let entries = entries(&text);
    let codes: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let expected: Vec<&str> = Rule::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes, expected,
        "spec/rules.md lists the rules of Rule::ALL, in order, once each"
    );
    for (rule, (_, entry)) in Rule::ALL.iter().zip(&entries) {
        let heading = format!("**{} — {}.**", rule.code(), rule.title());
        assert!(
            entry.starts_with(&heading),
            "{rule}: expected {heading:?}, found {entry:?}"
        );
        let line = entry
            .lines()
            .find(|l| {
                ["Corruption", "Leak", "Non-canonical", "Note"]
                    .iter()
                    .any(|w| l.starts_with(w))
            })
            .unwrap_or_else(|| panic!("{rule}: no severity line"));
        assert!(
            line.starts_with(severity_word(rule.severity())),
            "{rule}: the spec says {line:?}, Rule::severity is {:?}",
            rule.severity()
        );
        let variant = line.split('`').nth(1).and_then(|v| v.split([' ', '{']).next());
        let variant = variant.unwrap_or_else(|| panic!("{rule}: no Violation variant named in {line:?}"));
        assert!(
            errors.contains(&format!("\n    {variant} {{")) || errors.contains(&format!("\n    {variant},")),
            "{rule}: Violation::{variant} is not in src/rules/violation.rs"
        );
    }
}

#[test]
fn every_test_the_spec_names_exists() {
    let text = fs::read_to_string(root().join("spec/rules.md")).unwrap();
    let mut files = Vec::new();
    test_files(&root().join("tests"), &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, fs::read_to_string(f).unwrap())
        })
        .collect();
    let mut named = 0;
    for (code, entry) in entries(&text) {
        let tests = tests_named(&entry);
        assert!(!tests.is_empty(), "{code} names no test");
        for (module, test) in tests {
            named += 1;
            let found = sources
                .iter()
                .any(|(stem, src)| *stem == module && src.contains(&format!("fn {test}(")));
            assert!(
                found,
                "{code}: spec/rules.md names {module}::{test}, which does not exist"
            );
        }
    }
    assert!(named >= Rule::ALL.len(), "{named} tests named");
}
