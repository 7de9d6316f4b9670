//! The limits the `check` and `image` targets share (fuzz/README.md, "Limits", says what each
//! leaves out and why nothing is lost).

use parallels_image::raw::header::RawHeader;
use parallels_image::Header;

/// How far past the end of the file the extension cluster may reach (see [`costly_checksum`]):
/// the targets hash the cluster several times a run (`check`: predictions, both modes, the
/// compact BAT).
pub const MAX_PAST_END: u64 = 64 << 10;

/// The largest BAT (entries in the file) whose image is also parsed and validated the other ways
/// (`check`: compact and lenient, and `predict_image` against `predict`; `image`: lenient and
/// `open_with`) and compared: each way walks the whole table again, and a longer table only
/// repeats the entries' paths.
pub const MAX_CROSS_CHECKED: u32 = 1024;

/// The extension checksum covers the whole cluster, the zeros past the end of the file included:
/// up to 2 GiB of MD5 for a tiny file. That is the format's cost (QEMU pays it too), bounded but
/// slow under instrumentation, so inputs whose extension reaches more than [`MAX_PAST_END`] past
/// the end are skipped (the same code hashes the shorter zero tails of the inputs kept).
pub fn costly_checksum(data: &[u8]) -> bool {
    let Ok(h) = Header::decode(&RawHeader::read_padded(data)) else {
        return false;
    };
    h.ext_offset()
        .is_some_and(|off| off.saturating_add(h.cluster_size()) > data.len() as u64 + MAX_PAST_END)
}
