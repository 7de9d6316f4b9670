//! Zero-copy walk of the Format Extension cluster.
//!
//! The walk never fails: it records where each feature record is and how the list ended, so that
//! the validator can report every problem and the decoder can use what is sound. Bytes of the
//! cluster past the end of the file read as zeros, as they do for QEMU.

use std::borrow::Cow;
use std::ops::Range;

use crate::raw::extension::{checksum_and_nonzero_len, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{RawFeatureHeader, FEATURE_ALIGN, FEATURE_END, FEATURE_HEADER_SIZE};
use crate::raw::padded;

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

/// The Format Extension cluster as found in the file.
#[derive(Clone, Debug)]
pub struct Extension<'s> {
    /// Byte offset of the cluster in the file.
    pub file_offset: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    bytes: Cow<'s, [u8]>,
    /// Records before the end of the list (an overflowing last record excluded).
    pub features: Vec<FeatureEntry>,
    /// How the list ended.
    pub end: ListEnd,
    /// MD5 of bytes [24, cluster_size), missing bytes counted as zeros.
    pub computed_checksum: [u8; 16],
    /// Every byte of the cluster from this offset on is zero (seen while hashing; the length of
    /// the bytes present when the cluster was not hashed).
    zeros_from: u64,
}

impl<'s> Extension<'s> {
    /// Walks a cluster whose first `bytes.len()` bytes are present (the rest read as zeros).
    pub fn walk(file_offset: u64, cluster_size: u64, bytes: Cow<'s, [u8]>) -> Extension<'s> {
        let avail = bytes.len() as u64;
        let covered = bytes.get(EXT_HEADER_SIZE.min(bytes.len())..).unwrap_or(&[]);
        let tail = cluster_size.saturating_sub(avail.max(EXT_HEADER_SIZE as u64));
        // The magic comes first for every reader; a cluster that fails it is never hashed, so a
        // huge cluster past the end of a tiny file costs nothing.
        let (computed_checksum, zeros_from) = if read_u64(&bytes, 0) == EXT_MAGIC {
            let (sum, nonzero) = checksum_and_nonzero_len(covered, tail);
            (sum, EXT_HEADER_SIZE as u64 + nonzero as u64)
        } else {
            ([0; 16], avail)
        };
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
            let header = read_feature_header(&bytes, pos);
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
            features.push(FeatureEntry {
                index: features.len(),
                offset: pos,
                header,
            });
            pos = (pos + FEATURE_HEADER_SIZE as u64 + u64::from(data_size)).next_multiple_of(FEATURE_ALIGN);
        };
        Extension {
            file_offset,
            cluster_size,
            bytes,
            features,
            end,
            computed_checksum,
            zeros_from,
        }
    }

    /// The bytes of the cluster that are in the file (possibly fewer than `cluster_size`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The stored magic.
    pub fn magic(&self) -> u64 {
        read_u64(&self.bytes, 0)
    }

    /// The stored checksum.
    pub fn stored_checksum(&self) -> [u8; 16] {
        padded(&self.bytes, 8)
    }

    /// The available bytes of a range of the cluster (cut at the end of the file).
    pub fn slice(&self, range: Range<u64>) -> &[u8] {
        let len = self.bytes.len() as u64;
        let s = range.start.min(len) as usize;
        let e = range.end.min(len) as usize;
        &self.bytes[s..e]
    }

    /// Bytes `[from, to)` of the cluster up to its last non-zero byte: empty when they are all
    /// zeros, as far as the walk saw (for the padding rules; a cluster with the wrong magic is
    /// not hashed, so its bytes are all returned).
    pub(crate) fn maybe_nonzero(&self, from: u64, to: u64) -> &[u8] {
        self.slice(from..to.min(self.zeros_from).max(from))
    }

    /// Byte offset where the list's records end (after the end record, or the cluster size).
    pub fn list_end(&self) -> u64 {
        match self.end {
            ListEnd::EndRecord { offset } => offset + FEATURE_HEADER_SIZE as u64,
            _ => self.cluster_size,
        }
    }
}

fn read_u64(bytes: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(padded(bytes, at))
}

fn read_feature_header(bytes: &[u8], at: u64) -> RawFeatureHeader {
    zerocopy::transmute!(padded::<FEATURE_HEADER_SIZE>(bytes, at))
}
