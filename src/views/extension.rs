//! Zero-copy walk of the Format Extension cluster.
//!
//! The walk never fails: it records where each feature record is and how the list ended, so that
//! the validator can report every problem and the decoder can use what is sound. Bytes of the
//! cluster past the end of the file read as zeros, as they do for QEMU.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use crate::raw::extension::{checksum_and_nonzero_len, RawExtHeader, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{RawFeatureHeader, FEATURE_ALIGN, FEATURE_END, FEATURE_HEADER_SIZE};

/// Where a feature record is in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureEntry {
    /// Feature number, from 0.
    pub index: usize,
    /// Byte offset of the record in the cluster.
    pub offset: u64,
    /// The record header (copied: 24 bytes).
    pub header: RawFeatureHeader,
}

impl FeatureEntry {
    /// Whether the record is a dirty bitmap: the bitmap magic, no flags and room for the
    /// 32-byte bitmap header (the records [`crate::Image::bitmaps`] views).
    pub fn is_bitmap(&self) -> bool {
        self.header.magic.get() == crate::raw::feature::FEATURE_DIRTY_BITMAP
            && self.header.flags.get() == 0
            && self.header.data_size.get() as usize >= crate::raw::bitmap::BITMAP_HEADER_SIZE
    }

    /// Byte range of the record's data in the cluster.
    pub fn data_range(&self) -> Range<u64> {
        let start = self.offset + FEATURE_HEADER_SIZE as u64;
        start..start + u64::from(self.header.data_size.get())
    }
}

/// How the feature list ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListEnd {
    /// An end record at this cluster offset.
    EndRecord {
        /// Byte offset of the end record in the cluster.
        offset: u64,
    },
    /// Fewer than 24 bytes (but more than 0) were left for the next header.
    Truncated {
        /// Byte offset in the cluster where the header would start.
        offset: u64,
        /// Bytes left.
        remaining: u64,
    },
    /// The last record's data runs past the cluster.
    Overflow {
        /// The record whose data does not fit.
        entry: FeatureEntry,
        /// Bytes left after its header.
        remaining: u64,
    },
    /// The records filled the cluster exactly, without an end record.
    NoEndRecord {
        /// The cluster size.
        offset: u64,
    },
}

/// The MD5 of an extension cluster as one reader hashed it: bytes `[offset + 24, offset +
/// cluster_size)` of a file of `file_len` bytes, those past its end counted as zeros (as QEMU and
/// the validator count them).
///
/// Another reader of the same bytes that would hash the very same cluster may take it instead of
/// hashing again: the mutator gives the digest it fixed a variant's checksum with
/// ([`crate::mutate::Mutant::digest`]), and a differential campaign's predictions take it
/// (`oracle::Oracles::examine_knowing`), so that each variant's cluster is hashed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtensionDigest {
    /// Byte offset of the cluster in the file.
    pub offset: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// The length of the file.
    pub file_len: u64,
    /// MD5 of the cluster's bytes `[24, cluster_size)`.
    pub md5: [u8; 16],
}

impl ExtensionDigest {
    /// Whether this is the digest of the cluster of `cluster_size` bytes at `offset` in a file of
    /// `file_len` bytes.
    pub fn covers(&self, offset: u64, cluster_size: u64, file_len: u64) -> bool {
        (self.offset, self.cluster_size, self.file_len) == (offset, cluster_size, file_len)
    }
}

/// The Format Extension cluster as found in the file.
///
/// Building one only holds the bytes. The feature list is walked when it is first asked for, and
/// the cluster hashed when its checksum is, so that validation can do the two on different
/// threads (see `validate::Threads`).
#[derive(Clone, Debug)]
pub struct Extension<'s> {
    /// Byte offset of the cluster in the file.
    pub file_offset: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    bytes: Cow<'s, [u8]>,
    /// The records and how the list ended, once [`Extension::features`] has walked them.
    walked: OnceLock<Walked>,
    /// The MD5 and where the zeros start, once [`Extension::computed_checksum`] has hashed.
    hashed: OnceLock<Hashed>,
}

/// What walking the feature list found.
#[derive(Clone, Debug)]
struct Walked {
    features: Vec<FeatureEntry>,
    end: ListEnd,
}

/// What hashing the cluster found.
#[derive(Clone, Copy, Debug)]
struct Hashed {
    /// MD5 of bytes `[24, cluster_size)`, missing bytes counted as zeros.
    sum: [u8; 16],
    /// Every byte of the cluster from this offset on is zero (`u64::MAX`: not known, the sum
    /// was taken from an [`ExtensionDigest`]).
    zeros_from: u64,
}

impl<'s> Extension<'s> {
    /// The cluster at `file_offset`, whose first `bytes.len()` bytes are present (the rest read
    /// as zeros). Nothing is read or hashed yet.
    pub fn new(file_offset: u64, cluster_size: u64, bytes: Cow<'s, [u8]>) -> Extension<'s> {
        Extension {
            file_offset,
            cluster_size,
            bytes,
            walked: OnceLock::new(),
            hashed: OnceLock::new(),
        }
    }

    /// The records before the end of the list (an overflowing last record excluded), in order.
    /// The walk reads only the records' headers, once; it never fails.
    pub fn features(&self) -> &[FeatureEntry] {
        &self.walked().features
    }

    /// How the feature list ended.
    pub fn end(&self) -> ListEnd {
        self.walked().end
    }

    fn walked(&self) -> &Walked {
        self.walked.get_or_init(|| {
            walk(&self.bytes, self.cluster_size, usize::MAX)
                .expect("records of 24 bytes or more: fewer than usize::MAX in a cluster")
        })
    }

    /// The records, if the list holds at most `limit` of them: walks at most that many, and
    /// keeps the walk when it reached the end. `None` when the list is longer.
    pub(crate) fn features_within(&self, limit: usize) -> Option<&[FeatureEntry]> {
        if let Some(w) = self.walked.get() {
            return (w.features.len() <= limit).then_some(&w.features[..]);
        }
        let w = walk(&self.bytes, self.cluster_size, limit)?;
        Some(&self.walked.get_or_init(|| w).features)
    }

    /// MD5 of bytes `[24, cluster_size)` of the cluster, missing bytes counted as zeros; all
    /// zeros when the magic is wrong. The magic comes first for every reader, so a cluster that
    /// fails it is never hashed (and a huge cluster past the end of a tiny file costs nothing).
    /// Hashed on the first call, which may come from any thread.
    pub fn computed_checksum(&self) -> [u8; 16] {
        self.hashed().map_or([0; 16], |h| h.sum)
    }

    fn hashed(&self) -> Option<&Hashed> {
        if self.magic() != EXT_MAGIC {
            return None;
        }
        Some(self.hashed.get_or_init(|| {
            let bytes = &self.bytes[..];
            let covered = bytes.get(EXT_HEADER_SIZE.min(bytes.len())..).unwrap_or(&[]);
            let tail = self
                .cluster_size
                .saturating_sub((bytes.len() as u64).max(EXT_HEADER_SIZE as u64));
            let (sum, nonzero) = checksum_and_nonzero_len(covered, tail);
            Hashed {
                sum,
                zeros_from: EXT_HEADER_SIZE as u64 + nonzero as u64,
            }
        }))
    }

    /// The digest of this cluster, in a file of `file_len` bytes, if it has been hashed (or
    /// taken, [`Extension::take_digest`]); nothing is hashed here.
    pub(crate) fn digest(&self, file_len: u64) -> Option<ExtensionDigest> {
        self.hashed.get().map(|h| ExtensionDigest {
            offset: self.file_offset,
            cluster_size: self.cluster_size,
            file_len,
            md5: h.sum,
        })
    }

    /// Takes `known` as this cluster's MD5 instead of hashing it, if it covers this very cluster
    /// of a file of `file_len` bytes (whose bytes these are) and the cluster was not hashed yet.
    /// Whether it was taken. Where the zeros start is then not known: the padding rules read
    /// every byte there is, as before a hash.
    pub(crate) fn take_digest(&self, known: &ExtensionDigest, file_len: u64) -> bool {
        let present = self.cluster_size.min(file_len.saturating_sub(self.file_offset));
        if !known.covers(self.file_offset, self.cluster_size, file_len) || self.bytes.len() as u64 != present {
            return false;
        }
        self.hashed
            .set(Hashed {
                sum: known.md5,
                zeros_from: u64::MAX,
            })
            .is_ok()
    }

    /// The bytes of the cluster that are in the file (possibly fewer than `cluster_size`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The stored magic.
    pub fn magic(&self) -> u64 {
        RawExtHeader::read_padded(&self.bytes, 0).magic.get()
    }

    /// The stored checksum.
    pub fn stored_checksum(&self) -> [u8; 16] {
        RawExtHeader::read_padded(&self.bytes, 0).checksum
    }

    /// The available bytes of a range of the cluster (cut at the end of the file).
    pub fn slice(&self, range: Range<u64>) -> &[u8] {
        let len = self.bytes.len() as u64;
        let s = range.start.min(len) as usize;
        let e = range.end.min(len) as usize;
        &self.bytes[s..e]
    }

    /// Bytes `[from, to)` of the cluster, cut after the last non-zero byte when the cluster has
    /// already been hashed (hashing notes where the zeros start), else all of them: for the
    /// padding rules, which find the same first non-zero byte either way.
    pub(crate) fn maybe_nonzero(&self, from: u64, to: u64) -> &[u8] {
        let zeros_from = self.hashed.get().map_or(u64::MAX, |h| h.zeros_from);
        self.slice(from..to.min(zeros_from).max(from))
    }

    /// The 24-byte feature header at byte `offset` of the cluster (zeros past the file).
    pub(crate) fn header_at(&self, offset: u64) -> RawFeatureHeader {
        RawFeatureHeader::read_padded(&self.bytes, offset)
    }

    /// Byte offset where the list's records end (after the end record, or the cluster size).
    pub fn list_end(&self) -> u64 {
        match self.end() {
            ListEnd::EndRecord { offset } => offset + FEATURE_HEADER_SIZE as u64,
            _ => self.cluster_size,
        }
    }
}

/// The feature list of a cluster whose first `bytes.len()` bytes are present; `None` when it
/// holds more than `limit` records.
fn walk(bytes: &[u8], cluster_size: u64, limit: usize) -> Option<Walked> {
    let mut features = Vec::new();
    let mut pos = EXT_HEADER_SIZE as u64;
    let end = loop {
        let remaining = cluster_size.saturating_sub(pos);
        if remaining == 0 {
            break ListEnd::NoEndRecord { offset: cluster_size };
        }
        if remaining < FEATURE_HEADER_SIZE as u64 {
            break ListEnd::Truncated { offset: pos, remaining };
        }
        let header = RawFeatureHeader::read_padded(bytes, pos);
        if header.magic.get() == FEATURE_END {
            break ListEnd::EndRecord { offset: pos };
        }
        let left = remaining - FEATURE_HEADER_SIZE as u64;
        let data_size = header.data_size.get();
        if u64::from(data_size) > left {
            let entry = FeatureEntry {
                index: features.len(),
                offset: pos,
                header,
            };
            break ListEnd::Overflow { entry, remaining: left };
        }
        if features.len() == limit {
            return None;
        }
        features.push(FeatureEntry {
            index: features.len(),
            offset: pos,
            header,
        });
        pos = (pos + FEATURE_HEADER_SIZE as u64 + u64::from(data_size)).next_multiple_of(FEATURE_ALIGN);
    };
    Some(Walked { features, end })
}

#[cfg(test)]
mod tests {
    use super::{Extension, ListEnd};
    use crate::raw::extension::EXT_MAGIC;

    /// A 4 KiB cluster of `n` empty records of magic 7, then the end record.
    fn cluster(n: usize) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[..8].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        for k in 0..n {
            c[24 + 24 * k] = 7;
        }
        c
    }

    #[test]
    fn features_within_walks_only_lists_that_short() {
        for n in [0, 1, 5, 32] {
            let c = cluster(n);
            let end = ListEnd::EndRecord {
                offset: 24 + 24 * n as u64,
            };
            let ext = Extension::new(0, 4096, c[..].into());
            assert_eq!(ext.features_within(n + 1).map(<[_]>::len), Some(n));
            let long = Extension::new(0, 4096, c[..].into());
            if n > 0 {
                assert_eq!(long.features_within(n - 1), None);
            }
            // Whatever the limit said, the whole walk is the same.
            for e in [&ext, &long] {
                assert_eq!(e.features().len(), n);
                assert_eq!(e.end(), end);
                assert!(e
                    .features()
                    .iter()
                    .enumerate()
                    .all(|(i, f)| f.index == i && f.offset == 24 + 24 * i as u64));
            }
            assert_eq!(ext.features_within(n).map(<[_]>::len), Some(n));
        }
    }
}
