//! The checker on arbitrary bytes: the validator in both modes and the QEMU outcome predictor.
//!
//! Oracles (the first two on tables of at most [`MAX_CROSS_CHECKED`](limits::MAX_CROSS_CHECKED) entries): the two modes
//! report the same violations, lenient never more severely; a BAT read whole and one read as
//! its allocated entries (and validated without the helper thread) give the same report and
//! prediction; the predictor says QEMU refuses what the header rules refuse, and an outcome's
//! kind, exit code and message agree; the ploop predictor answers for any bytes, with a return
//! code exactly when it does not crash.
//!
//! Shared by the `check` target and its `check_mutator` variant.

use parallels_image::qemu::{predict, predict_image, QemuCheck, QemuOutcome};
#[path = "limits.rs"]
mod limits;

use limits::{costly_checksum, MAX_CROSS_CHECKED};
use parallels_image::{
    ploop::predict_ploop, ploop::CbtOutcome, ploop::MountEffect, ploop::MAX_PLOOP_MESSAGES, Error, Image, RuleMode,
    Threads,
};

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

    let strict = match Image::parse_with(&data, RuleMode::Strict) {
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
    let compact = Image::parse_compact(&data, RuleMode::Strict).expect("compact parses what strict parses");
    assert_eq!(
        parallels_image::validate_with(&compact, Threads::Caller).expect("validate compact"),
        report
    );
    assert_eq!(predict_image(&strict), prediction);
    let lenient = Image::parse_with(&data, RuleMode::Lenient).expect("lenient parses what strict parses");
    let lenient_report = parallels_image::validate(&lenient).expect("validate");
    // The modes differ only in the severity of unknown features and feature flags.
    assert_eq!(report.findings.len(), lenient_report.findings.len());
    for (s, l) in report.findings.iter().zip(&lenient_report.findings) {
        assert_eq!(s.violation, l.violation);
        assert!(l.severity <= s.severity);
    }
}
