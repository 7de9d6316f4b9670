//! A catalogue of defects: planned damage to a valid image, one rule of `spec/` at a time.
//!
//! [`plan`] looks at a parsed image and returns a [`Patch`] (byte writes and a new file length)
//! that breaks exactly one rule. Where damage would break more than the intended rule, the plan
//! does what is needed to keep the others intact:
//!
//! - after any edit inside the extension cluster the MD5 is recomputed (except for
//!   [`DefectKind::ExtBadChecksum`]), so the checksum rule does not fire too;
//! - a cluster that has to move (a data cluster below a new `data_off`, an extension or bitmap
//!   cluster that must sit at an unaligned or cut-off place) is copied to the end of the file;
//! - when the damage leaves the end of the file unreferenced (a BAT or L1 entry redirected away
//!   from the last cluster, a bitmap that no longer counts as one), the file is cut back to the
//!   end of the referenced data as the validator's leak rule measures it, so that rule does not
//!   fire too — except where that would cut off clusters a flagged bitmap record still points
//!   at: the extension cluster then moves to the end of the file instead.
//!
//! The `seed` picks among the candidate places (which BAT entry, which feature, which L1 entry)
//! as `seed % candidates`, so the same image, defect and seed always give the same patch.
//!
//! The catalogue is [`DefectKind`]: one variant per defect, each knowing its [`crate::Rule`]. Planning
//! dispatches on it with an exhaustive `match`, one file per region of the image (`header`,
//! `bat`, `extension`, `bitmaps`, and `placement` for R43–R49); the edit session that every plan
//! works in is `edit`.

mod bat;
mod bitmaps;
mod edit;
mod extension;
mod header;
mod placement;

use std::str::FromStr;

use crate::error::{PlanError, Result};
use crate::image::Image;

pub use crate::defect::DefectKind;
pub use edit::Patch;
use edit::Work;

impl FromStr for DefectKind {
    type Err = PlanError;

    /// The defect with this name (`"inuse-set"`); [`PlanError::UnknownDefect`] otherwise.
    fn from_str(name: &str) -> Result<DefectKind, PlanError> {
        DefectKind::ALL
            .iter()
            .copied()
            .find(|d| d.name() == name)
            .ok_or_else(|| PlanError::UnknownDefect { name: name.to_string() })
    }
}

/// Plans `defect` on a parsed valid image (parsed whole or compact). `seed` picks among
/// candidate places (e.g. which BAT entry) deterministically.
///
/// Errors: [`PlanError::NotApplicable`] (as [`crate::Error::Plan`]) when the image lacks the
/// structure the defect needs, naming it as a [`crate::Requirement`]; I/O errors from the
/// source.
///
/// ```
/// use parallels_image::corrupt::{self, DefectKind, Patch};
/// use parallels_image::{Image, ImageBuilder};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20).to_vec()?;
/// let image = Image::parse(&bytes)?;
/// let patch = corrupt::plan(&image, DefectKind::InuseSet, 0)?;
/// assert_eq!(patch, Patch { writes: vec![(44, b"Ynot".to_vec())], set_len: None });
/// # Ok::<(), parallels_image::Error>(())
/// ```
pub fn plan(image: &Image<'_>, defect: DefectKind, seed: u64) -> Result<Patch> {
    let mut w = Work::new(image, defect);
    apply(&mut w, seed)?;
    w.finish()
}

/// The dispatch: one arm per defect, so a defect without a plan does not compile.
fn apply(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    use extension::Grow;
    use DefectKind as D;
    match w.defect {
        D::BadMagic => header::bad_magic(w, seed),
        D::BadVersion => header::bad_version(w, seed),
        D::ZeroTracks => header::zero_tracks(w),
        D::TooBigCluster => header::too_big_cluster(w),
        D::CatalogTooLarge => header::catalog_too_large(w),
        D::ExtOffTooBig => header::ext_off_too_big(w),
        D::InuseSet => header::inuse_set(w),
        D::UnknownInuse => header::unknown_inuse(w),
        D::UnknownFlags => header::unknown_flags(w, seed),
        D::V1SizeHighBits => header::v1_size_high_bits(w, seed),
        D::SizeBeyondBat => header::size_beyond_bat(w),
        D::DataOffZero => header::data_off_zero(w),
        D::DataOffUnaligned => header::data_off_unaligned(w),
        D::DataOffInsideBat => header::data_off_inside_bat(w),
        D::DataOffPastEof => header::data_off_past_eof(w),
        D::BatEntryInsideHeader => bat::entry_inside_header(w, seed),
        D::BatEntryUnaligned => bat::entry_unaligned(w, seed),
        D::BatEntryPastEof => bat::entry_past_eof(w, seed),
        D::BatEntryDuplicate => bat::entry_duplicate(w, seed),
        D::TrailingLeak => bat::trailing_leak(w),
        D::ExtOffUnaligned => extension::off_unaligned(w),
        D::ExtPastEof => extension::past_eof(w),
        D::ExtOverlapData => extension::overlap_data(w, seed),
        D::ExtBadMagic => extension::bad_magic(w, seed),
        D::ExtBadChecksum => extension::bad_checksum(w, seed),
        D::FeatureTruncated => extension::grow_last_record(w, seed, Grow::LeaveAShortHeader),
        D::FeatureFlagsNecessary => extension::flag_feature(w, seed, crate::raw::feature::FEATURE_FLAG_NECESSARY),
        D::FeatureFlagsTransit => extension::flag_feature(w, seed, crate::raw::feature::FEATURE_FLAG_TRANSIT),
        D::FeatureDataOverflow => extension::data_overflow(w, seed),
        D::UnknownFeature => extension::unknown_feature(w, seed),
        D::MissingEndRecord => extension::grow_last_record(w, seed, Grow::ToTheEnd),
        D::NonzeroPadding => extension::nonzero_padding(w, seed),
        D::BitmapDataTooShort => bitmaps::data_too_short(w, seed),
        D::BitmapExtraData => bitmaps::extra_data(w, seed),
        D::BitmapSizeMismatch => bitmaps::size_mismatch(w, seed),
        D::GranularityZero => bitmaps::granularity_zero(w, seed),
        D::GranularityNotPowerOfTwo => bitmaps::granularity_not_power_of_two(w, seed),
        D::GranularityOverflow => bitmaps::granularity_overflow(w, seed),
        D::L1SizeWrong => bitmaps::l1_size_wrong(w, seed),
        D::L1SizeZero => bitmaps::l1_size_zero(w, seed),
        D::L1EntryUnaligned => bitmaps::l1_entry_unaligned(w, seed),
        D::L1EntryPastEof => bitmaps::l1_entry_past_eof(w, seed),
        D::L1EntryOverlapBat => bitmaps::l1_overlap(w, seed, bitmaps::Target::Bat),
        D::L1EntryOverlapExt => bitmaps::l1_overlap(w, seed, bitmaps::Target::Extension),
        D::L1EntryOverlapData => bitmaps::l1_overlap(w, seed, bitmaps::Target::Data),
        D::L1EntryOverlapL1 => bitmaps::l1_overlap(w, seed, bitmaps::Target::OtherL1),
        D::DuplicateBitmapId => bitmaps::duplicate_id(w, seed),
        D::BitmapTrailingBits => bitmaps::trailing_bits(w, seed),
        D::BatEntryPastDisk => placement::entry_past_disk(w),
        D::BatSlackNonzero => placement::slack_nonzero(w, seed),
        D::ExtBeforeData => placement::ext_before_data(w),
        D::UnreferencedCluster => placement::unreferenced_cluster(w, seed),
        D::V1DataOffUnset => placement::v1_data_off_unset(w),
        D::BatTooLargeToRead => placement::bat_too_large_to_read(w),
        D::BitmapOnEmptyDisk => placement::bitmap_on_empty_disk(w),
    }
}

/// The candidate at `seed % len`.
fn pick<T: Clone>(v: &[T], seed: u64) -> T {
    v[(seed % v.len() as u64) as usize].clone()
}
