//! The edit session of one variant: its bytes, the ranges written, the random draw; the edits
//! themselves are in [`super::header`], [`super::features`] and [`super::bitmaps`].

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use zerocopy::IntoBytes;

use super::edits::{Edit, EditKind};
use super::view::{ext_place, View};
use super::{ChecksumState, MAX_REHASH};
use crate::extension::ExtensionDigest;
use crate::raw::editor::ExtensionEditor;
use crate::raw::extension::{checksum_padded, EXT_HEADER_SIZE};
use crate::raw::header::{RawHeader, HEADER_SIZE};
use crate::raw::SECTOR_SIZE;

pub(super) struct Work {
    pub(super) bytes: Vec<u8>,
    /// `(start, end)` of every byte range written ([`MutantBuffer`] copies them back).
    pub(super) touched: Vec<(usize, usize)>,
    /// The shortest `bytes` has been.
    pub(super) low: usize,
    pub(super) max_len: u64,
    pub(super) rng: ChaCha8Rng,
    pub(super) edits: Vec<Edit>,
}

pub(super) fn pick<T: Copy>(rng: &mut ChaCha8Rng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

impl Work {
    /// Notes that `len` bytes from `at` are about to be written.
    pub(super) fn touch(&mut self, at: usize, len: usize) {
        self.touched.push((at, at + len));
    }

    /// Cuts or extends (with zeros) the bytes to `len`.
    pub(super) fn resize(&mut self, len: usize) {
        self.low = self.low.min(len);
        self.bytes.resize(len, 0);
    }

    /// Recomputes the MD5 of the extension cluster the header points at, if the header passes
    /// R1–R6 and the cluster starts in the file; with the digest when it did. (The sum is
    /// written outside the bytes it covers, and this is the last write to the variant.)
    pub(super) fn fix_checksum(&mut self) -> (ChecksumState, Option<ExtensionDigest>) {
        let Some((off, cs)) = ext_place(&self.bytes) else {
            return (ChecksumState::NoExtension, None);
        };
        if cs > MAX_REHASH {
            return (ChecksumState::LeftAsIs, None);
        }
        let len = self.bytes.len() as u64;
        let end = (off + cs).min(len);
        let (o, e) = (off as usize, end as usize);
        let sum = checksum_padded(&self.bytes[o + EXT_HEADER_SIZE..e], off + cs - end);
        self.touch(o + 8, EXT_HEADER_SIZE - 8);
        ExtensionEditor::new(&mut self.bytes[o..e])
            .header_mut()
            .expect("the header is in the file")
            .checksum = sum;
        let digest = ExtensionDigest {
            offset: off,
            cluster_size: cs,
            file_len: len,
            md5: sum,
        };
        (ChecksumState::Fixed, Some(digest))
    }

    pub(super) fn draw_kind(&mut self, view: &View) -> EditKind {
        let total: u32 = EditKind::ALL
            .iter()
            .filter(|k| view.applies(**k))
            .map(|k| k.weight())
            .sum();
        let mut r = self.rng.random_range(0..total);
        for k in EditKind::ALL {
            if !view.applies(k) {
                continue;
            }
            if r < k.weight() {
                return k;
            }
            r -= k.weight();
        }
        unreachable!("the draw is below the sum of the weights")
    }

    pub(super) fn apply(&mut self, kind: EditKind, view: &View) -> Option<Edit> {
        match kind {
            EditKind::Header => self.header(view),
            EditKind::Magic => self.magic(view),
            EditKind::Bat => self.bat(view),
            EditKind::ExtensionMagic => self.ext_magic(view),
            EditKind::Feature => self.feature_field(view),
            EditKind::FeatureInsert => self.insert(view),
            EditKind::FeatureDrop => self.drop_feature(view),
            EditKind::FeatureSwap => self.swap(view),
            EditKind::FeatureDuplicate => self.duplicate(view),
            EditKind::FeatureTruncate => self.truncate(view),
            EditKind::Bitmap => self.bitmap_field(view),
            EditKind::L1 => self.l1(view),
            EditKind::BitmapByte => self.bitmap_byte(view),
            EditKind::FileLength => self.file_length(view),
        }
    }

    /// A value from `candidates` other than `cur`, or `None` when there is none.
    pub(super) fn other(&mut self, cur: u64, candidates: &[u64]) -> Option<u64> {
        let c: Vec<u64> = candidates.iter().copied().filter(|&v| v != cur).collect();
        (!c.is_empty()).then(|| pick(&mut self.rng, &c))
    }

    pub(super) fn write_header(&mut self, raw: &RawHeader) {
        if self.bytes.len() < HEADER_SIZE {
            self.resize(HEADER_SIZE);
        }
        self.touch(0, HEADER_SIZE);
        self.bytes[..HEADER_SIZE].copy_from_slice(raw.as_bytes());
    }

    pub(super) fn file_length(&mut self, view: &View) -> Option<Edit> {
        let from = view.len;
        let cs = view.header.map_or(SECTOR_SIZE, |h| h.cluster_size());
        let mut c = vec![
            from.saturating_sub(1),
            from + 1,
            from + cs,
            from.saturating_sub(cs),
            from / 2,
            from + SECTOR_SIZE,
        ];
        if let Some(h) = view.header {
            c.push(h.data_start());
            c.push(h.bat_end());
        }
        if let Some(ext) = &view.ext {
            // Inside the extension cluster (what is cut reads as zeros) and just before it.
            c.extend([ext.off, ext.off + ext.cs / 2, ext.off + ext.cs - 1]);
        }
        let c: Vec<u64> = c.into_iter().filter(|&v| v <= self.max_len).collect();
        let to = self.other(from, &c)?;
        self.resize(usize::try_from(to).ok()?);
        Some(Edit::FileLength { from, to })
    }
}
