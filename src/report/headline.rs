//! The first lines of `prlimg check`: one sentence per other program (QEMU 10, ploop) saying
//! whether the image works there and, if not, why, before the findings and the detail, so that
//! "No errors were found on the image" (the format's rules) is never read as "every tool takes
//! it".

use super::text::{human_bytes, plural};
use crate::check::Conformance;
use crate::ploop::{CbtOutcome, MountEffect, PloopPrediction};
use crate::qemu::{QemuCheck, QemuOutcome, QemuReason, ReadWrite};
use crate::rule::Severity;

/// The two sentences, one line each.
pub(crate) fn headline(c: &Conformance) -> String {
    format!("{}\n{}\n", qemu(c), ploop(&c.ploop))
}

/// QEMU 10 in one sentence: whether `qemu-img info` opens the image, what `qemu-img check` says
/// and what a read-write open does to it.
fn qemu(c: &Conformance) -> String {
    let p = &c.prediction;
    let bitmaps = match &p.info {
        QemuOutcome::Opens { bitmaps } => bitmaps.len() as u64,
        QemuOutcome::Rejects { .. } | QemuOutcome::RejectsBatRead | QemuOutcome::NoImageSize { .. } => {
            let message = p.info.message(&c.filename).unwrap_or_default();
            let message = message.trim_end_matches('.');
            let mut s = format!("QEMU 10: does not open it ({message})");
            if p.info.reason() == Some(QemuReason::NotParallels) {
                s += ", with -f parallels; without -f, qemu-img probes the file as raw and \
                      `qemu-img check` exits 63 (This image format does not support checks)";
            }
            return s + ".";
        }
        QemuOutcome::Aborts { .. } => return "QEMU 10: aborts on it (exit 134) as it opens it.".into(),
        QemuOutcome::Crashes { signal, .. } => return format!("QEMU 10: crashes on it (signal {signal})."),
        QemuOutcome::Undefined { .. } => {
            return "QEMU 10: unpredictable: it reads past its own buffer as it opens the image.".into()
        }
    };
    let opens = match bitmaps {
        0 => "opens it".to_string(),
        n => format!("opens it with its {}", plural(n, "bitmap", "bitmaps")),
    };
    // What a read-write open does to the file, as one clause.
    let mut effects = Vec::new();
    let mut drops = false;
    if let ReadWrite::Opens {
        drops_extension,
        repairs,
        truncates_to,
    } = &p.read_write
    {
        drops = *drops_extension;
        if *repairs {
            effects.push("repairs it in place");
        }
        if drops {
            effects.push("drops the extension, losing the bitmaps");
        } else if truncates_to.is_some() {
            effects.push("cuts the file short");
        }
    }
    let read_write = if effects.is_empty() {
        String::new()
    } else {
        format!("; a read-write open {}", effects.join(" and "))
    };
    match &p.check {
        QemuCheck::Completes(k) if k.corruptions > 0 => format!(
            "QEMU 10: {opens}, but `qemu-img check` exits 2 with {}{read_write}.",
            plural(k.corruptions, "corruption", "corruptions")
        ),
        QemuCheck::Completes(k) if k.leaks > 0 => {
            // Leaks of ours are space nothing references; the rest of QEMU's are the extension
            // and bitmap clusters, which QEMU does not count as referenced.
            let why = if c.report.count(Severity::Leak) == 0 {
                "it counts the extension and bitmap clusters as leaked"
            } else if drops {
                "unreferenced space, the extension and the bitmap clusters"
            } else {
                "unreferenced space"
            };
            format!(
                "QEMU 10: {opens}, but `qemu-img check` exits 3 with {} ({why}){read_write}.",
                plural(k.leaks, "leaked cluster", "leaked clusters")
            )
        }
        QemuCheck::Completes(_) => {
            format!("QEMU 10: works: it {opens} and `qemu-img check` finds no errors{read_write}.")
        }
        QemuCheck::Fails => format!(
            "QEMU 10: {opens}, but `qemu-img check` fails (exit 1, Device or resource busy): the \
             last allocated BAT entry is a duplicate{read_write}."
        ),
        QemuCheck::Aborts { .. } => {
            format!("QEMU 10: {opens}, but `qemu-img check` aborts (exit 134) on a duplicate BAT entry{read_write}.")
        }
        QemuCheck::OpenFails(_) => format!("QEMU 10: {opens}, but `qemu-img check` cannot open it."),
    }
}

/// Why ploop's check refuses a header, in words, from its message.
fn ploop_why(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("Wrong cluster size ") {
        let tracks: i64 = rest.split(' ').next()?.parse().ok()?;
        let size = if tracks > 0 {
            human_bytes(tracks as u64 * 512)
        } else {
            format!("{tracks} sectors")
        };
        return Some(format!(
            "a cluster size ploop cannot open: {size}, where ploop takes a power of two from 32 KiB to 64 MiB"
        ));
    }
    if message.starts_with("Wrong signature") {
        return Some("the magic is not a Parallels one".into());
    }
    if message.starts_with("Wrong type") {
        return Some("the header version is not 2".into());
    }
    None
}

/// ploop in one sentence: its check, its CBT loader, a mount.
fn ploop(p: &PloopPrediction) -> String {
    let first = p
        .check
        .messages
        .iter()
        .find(|m| !matches!(m.as_str(), "Skipped" | "FATAL"))
        .map(String::as_str);
    match p.check.rc {
        None => {
            return format!(
                "ploop: `ploop check` crashes on it ({}).",
                p.check.messages.last().map_or("", |m| m.as_str())
            )
        }
        Some(rc) if rc != 0 => {
            let why = first.map_or(String::new(), |m| match ploop_why(m) {
                Some(why) => format!(" ({m}): {why}"),
                None => format!(" ({m})"),
            });
            return format!("ploop: does not take it: `ploop check` exits {rc}{why}.");
        }
        Some(_) => {}
    }
    let mut buts = Vec::new();
    match p.cbt.outcome {
        CbtOutcome::Refuses => buts.push(format!(
            "its CBT loader refuses the extension ({}), so no bitmap is loaded",
            p.cbt.message.as_deref().unwrap_or("")
        )),
        CbtOutcome::Crashes => buts.push("its CBT loader crashes on the extension".to_string()),
        _ => {}
    }
    match p.mount.effect {
        MountEffect::Truncates => buts.push(format!("a mount cuts the file to {} bytes", p.mount.file_size)),
        MountEffect::DropsExtension => buts.push("a mount drops the extension".to_string()),
        MountEffect::Crashes => buts.push("a mount crashes".to_string()),
        MountEffect::Unchanged => {}
    }
    if !buts.is_empty() {
        return format!("ploop: `ploop check` passes, but {}.", buts.join(", and "));
    }
    let cbt = match (p.cbt.outcome, &p.cbt.bitmap) {
        (CbtOutcome::Loads, Some(id)) => format!(", and its CBT loader loads bitmap {id}"),
        (CbtOutcome::Ignores, _) => ", and its CBT loader skips the bitmaps (inuse is 0)".to_string(),
        _ => String::new(),
    };
    format!("ploop: works: `ploop check` passes{cbt}.")
}
