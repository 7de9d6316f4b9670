//! The first lines of `prlimg check`: one sentence per other program (QEMU 10, ploop; for a
//! bundle QEMU 10, libphdi and dissect.hypervisor) saying whether the disk works there and, if
//! not, why, before the findings and the detail, so that
//! "No errors were found on the image" (the format's rules) is never read as "every tool takes
//! it".

use super::text::{human_bytes, plural};
use crate::check::Conformance;
use crate::ploop::{CbtOutcome, MountEffect, PloopPrediction};
use crate::qemu::{QemuCheck, QemuOutcome, QemuReason, ReadWrite};
use crate::readers::{ReaderOutcome, ReaderPrediction};
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

/// The first lines of `prlimg check` of a bundle: what QEMU 10 does with it, then one sentence
/// per reader the report predicts (libphdi, dissect.hypervisor), then a blank line.
pub(crate) fn bundle_headline(b: &super::BundleCheck) -> String {
    use crate::readers::{dissect::DISSECT_VERSION, libphdi::LIBPHDI_VERSION};
    let mut out = String::from(
        "QEMU 10: does not open a bundle: with -f parallels it refuses DiskDescriptor.xml (Image not in \
         Parallels format), and without -f it reads the XML as a raw disk.\n",
    );
    if let Some(p) = &b.libphdi {
        out += &reader(&format!("libphdi {LIBPHDI_VERSION}"), p, libphdi_why);
    }
    if let Some(p) = &b.dissect {
        out += &reader(&format!("dissect.hypervisor {DISSECT_VERSION}"), p, dissect_why);
    }
    out + "\n"
}

/// One reader in one sentence: whether it reads the guest's bytes and, if not, why.
fn reader(name: &str, p: &ReaderPrediction, why: fn(&str) -> Option<&'static str>) -> String {
    let message = p.message.as_deref().unwrap_or("");
    let because = |m: &str| why(m).map_or(String::new(), |w| format!(": {w}"));
    match p.outcome {
        ReaderOutcome::Opens => format!("{name}: works: it opens the bundle and reads the guest's bytes.\n"),
        ReaderOutcome::Refuses => format!("{name}: does not open it ({message}){}.\n", because(message)),
        ReaderOutcome::Misreads => {
            let n = p.misread_mib.len() as u64 + p.misread_mib_omitted;
            let mib = match p.misread_mib.first() {
                Some(first) => format!(" in {} from MiB {first}", plural(n, "MiB", "MiB")),
                None => String::new(),
            };
            format!("{name}: opens it but misreads the guest's bytes{mib} ({message}).\n")
        }
        ReaderOutcome::Crashes => format!("{name}: crashes on it ({message}).\n"),
        ReaderOutcome::Hangs => format!("{name}: hangs on it ({message}).\n"),
    }
}

/// Why libphdi refuses a bundle, in words, from its message.
fn libphdi_why(message: &str) -> Option<&'static str> {
    let text = message.split_once(": ").map_or(message, |(_, t)| t);
    Some(match text {
        "unsupported signature" => "it reads only images whose magic is \"WithoutFreeSpace\" (a v1 header)",
        t if t.starts_with("unsupported block size") => "it takes only Blocksize 2048 (1 MiB clusters)",
        t if t.starts_with("unsupported padding") => "it takes only Padding 0",
        t if t.starts_with("unsupported snapshot tag") => {
            "it takes no element but Shot in Snapshots, so no descriptor with a TopGUID"
        }
        t if t.contains("value already set") => "a second storage collides with the first: it opens no split disk",
        t if t.starts_with("no such file") => "an image's file is missing",
        "unable to parse XML" => "the descriptor is not XML it can parse",
        _ => return None,
    })
}

/// Why dissect.hypervisor refuses a bundle, in words, from its message.
fn dissect_why(message: &str) -> Option<&'static str> {
    Some(match message {
        m if m.starts_with("KeyError: 'Shot GUID not found") => {
            "it always takes {5fbaabe3-6958-40ff-92a7-860e329aab41} as the top, whatever TopGUID says"
        }
        m if m.starts_with("KeyError: 'Image GUID not found") => "a snapshot has no image in a storage",
        "ParseError" => "the descriptor is not XML it can parse",
        m if m.starts_with("FileNotFoundError") => "an image's file is missing",
        _ => return None,
    })
}
