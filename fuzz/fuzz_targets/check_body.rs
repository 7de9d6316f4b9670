//! The checker on arbitrary bytes: the validator in both modes and the QEMU outcome predictor.
//!
//! Oracles (the first two on tables of at most [`MAX_CROSS_CHECKED`] entries): the two modes
//! report the same violations, lenient never more severely; a BAT read whole and one read as
//! its allocated entries (and validated without the helper thread) give the same report and
//! prediction; the predictor says QEMU refuses what the header rules refuse, and an outcome's
//! kind, exit code and message agree; the ploop predictor answers for any bytes, with a return
//! code exactly when it does not crash.
//!
//! Shared by the `check` target and its `check_mutator` variant.

use parallels_image::qemu::{predict, predict_image, QemuCheck, QemuOutcome};
use parallels_image::raw::header::RawHeader;
use parallels_image::Header;
use parallels_image::{predict_ploop, CbtOutcome, Error, Image, Mode, MountEffect, Threads, MAX_PLOOP_MESSAGES};

/// How far past the end of the file the extension cluster may reach (see `costly_checksum`):
/// the checker hashes the cluster five times a run (predictions, both modes, the compact BAT).
const MAX_PAST_END: u64 = 64 << 10;

/// The largest BAT (entries in the file) whose image is also parsed and validated the other
/// ways (compact, lenient) and compared: each way walks the whole table again, and a longer
/// table only repeats the entries' paths (fuzz/README.md, "Limits").
const MAX_CROSS_CHECKED: u32 = 1024;

/// One run of the target on `data`.
pub fn run(data: &[u8]) {
    if costly_checksum(data) {
        return;
    }
    let prediction = predict(&data).expect("predicting over a slice does no failing I/O");
    let ploop = predict_ploop(&data, "x.hds").expect("predicting over a slice does no failing I/O");
    assert!(ploop.check.messages.len() <= MAX_PLOOP_MESSAGES);
    assert_eq!(ploop.cbt.rc.is_none(), ploop.cbt.outcome == CbtOutcome::Crashes);
    assert!(ploop.cbt.bitmap.is_none() || ploop.cbt.outcome == CbtOutcome::Loads);
    assert_eq!(ploop.mount.rc.is_none(), ploop.mount.effect == MountEffect::Crashes);
    assert!(ploop.mount.file_size <= data.len() as u64);
    let info = &prediction.info;
    match (info.kind(), info.exit_code()) {
        ("opens", Some(0))
        | ("rejects", Some(1))
        | ("aborts", Some(134))
        | ("crashes", Some(139))
        | ("undefined", None) => {}
        other => panic!("{info:?} has kind and exit code {other:?}"),
    }
    assert_eq!(
        info.message("x.hds").is_some(),
        !matches!(
            info,
            QemuOutcome::Opens { .. } | QemuOutcome::Undefined { .. } | QemuOutcome::Crashes { .. }
        )
    );
    let _ = info.stderr_line("x.hds");
    if let QemuCheck::Completes(c) = &prediction.check {
        assert!(c.errors.len() <= parallels_image::qemu::MAX_ERROR_LINES);
    }
    let _ = prediction.check.exit_code();

    let strict = match Image::parse_with(&data, Mode::Strict) {
        Ok(image) => image,
        // Not a Parallels image at all (empty, another format) or a damaged header: refused.
        Err(Error::Invalid(_) | Error::EmptyFile | Error::NotParallels { .. }) => {
            assert_eq!(info.kind(), "rejects", "{prediction:?}");
            return;
        }
        Err(e) => panic!("parsing a slice failed with {e}"),
    };
    // Without an extension offset ploop loads nothing (or refuses to open the image at all).
    if strict.header().ext_off == 0 {
        assert!(matches!(ploop.cbt.outcome, CbtOutcome::None | CbtOutcome::Refuses));
    }
    let report = parallels_image::validate(&strict).expect("validate");
    if strict.bat_entries_in_file() > MAX_CROSS_CHECKED {
        return;
    }
    // Reading only the allocated BAT entries, on the calling thread alone, changes nothing.
    let compact = Image::parse_compact(&data, Mode::Strict).expect("compact parses what strict parses");
    assert_eq!(
        parallels_image::validate_with(&compact, Threads::Caller).expect("validate compact"),
        report
    );
    assert_eq!(predict_image(&strict), prediction);
    let lenient = Image::parse_with(&data, Mode::Lenient).expect("lenient parses what strict parses");
    let lenient_report = parallels_image::validate(&lenient).expect("validate");
    // The modes differ only in the severity of unknown features and feature flags.
    assert_eq!(report.findings.len(), lenient_report.findings.len());
    for (s, l) in report.findings.iter().zip(&lenient_report.findings) {
        assert_eq!(s.violation, l.violation);
        assert!(l.severity <= s.severity);
    }
}

/// The extension checksum covers the whole cluster, the zeros past the end of the file included:
/// up to 2 GiB of MD5 for a tiny file. That is the format's cost (QEMU pays it too), bounded but
/// slow under instrumentation, so inputs whose extension reaches more than [`MAX_PAST_END`] past
/// the end are skipped (the same code hashes the shorter zero tails of the inputs kept).
fn costly_checksum(data: &[u8]) -> bool {
    let Ok(h) = Header::decode(&RawHeader::read_padded(data)) else {
        return false;
    };
    h.ext_offset()
        .is_some_and(|off| off.saturating_add(h.cluster_size()) > data.len() as u64 + MAX_PAST_END)
}
