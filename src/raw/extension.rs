//! The Format Extension cluster: a 24-byte header, then the feature list.
//!
//! ```text
//!  0               8                               24
//!  +---------------+-------------------------------+------------------------------------+
//!  | magic         | MD5 of bytes [24, cluster)    | feature records ... end record ... |
//!  +---------------+-------------------------------+------------------------------------+
//! ```

use binrw::{BinRead, BinResult, BinWrite};
use md5::{Digest, Md5};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::editor::{encode_list, list_layout};
use super::feature::{FeatureRecord, RawFeatureHeader};

/// Magic of the Format Extension cluster.
pub const EXT_MAGIC: u64 = 0xAB23_4CEF_23DC_EA87;
/// Size of the extension header; the checksum covers everything after it.
pub const EXT_HEADER_SIZE: usize = 24;

/// The extension header exactly as stored.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, BinRead, BinWrite,
)]
#[br(map = |b: [u8; 24]| zerocopy::transmute!(b))]
#[bw(map = |h: &Self| -> [u8; 24] { zerocopy::transmute!(*h) })]
#[repr(C)]
pub struct RawExtHeader {
    /// [`EXT_MAGIC`].
    pub magic: U64,
    /// MD5 of bytes `[24, cluster_size)` of the cluster.
    pub checksum: [u8; 16],
}

/// The whole extension cluster in the declarative grammar: header, features, end record.
///
/// The stream must start at the start of the cluster (records are aligned relative to it).
/// Reading stops after the end record; bytes after it are padding up to the cluster size.
#[derive(Clone, Debug, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct ExtensionCluster {
    /// The header, checksum included.
    pub header: RawExtHeader,
    /// The feature records, end record excluded.
    #[br(parse_with = binrw::helpers::until_exclusive(|f: &FeatureRecord| f.is_end()))]
    #[bw(write_with = write_features)]
    pub features: Vec<FeatureRecord>,
}

/// The list through the one encoder ([`super::editor::encode_list`]), end record included.
#[binrw::writer(writer, endian)]
#[allow(clippy::ptr_arg)] // binrw hands a writer the field as it is: `&Vec`
fn write_features(features: &Vec<FeatureRecord>) -> BinResult<()> {
    let bodies = features
        .iter()
        .map(|f| f.body_bytes(endian))
        .collect::<BinResult<Vec<_>>>()?;
    let list = encode_list(features.iter().zip(&bodies).map(|(f, b)| (&f.header, &b[..])), true);
    writer.write_all(&list)?;
    Ok(())
}

impl ExtensionCluster {
    /// A cluster with these features and a checksum still to be computed.
    pub fn new(features: Vec<FeatureRecord>) -> Self {
        ExtensionCluster {
            header: RawExtHeader {
                magic: EXT_MAGIC.into(),
                checksum: [0; 16],
            },
            features,
        }
    }

    /// Encodes the cluster into exactly `cluster_size` bytes, zero-padded, with the MD5 filled in.
    /// Fails if the features do not fit.
    pub fn to_cluster(&self, cluster_size: usize) -> BinResult<Vec<u8>> {
        let mut cur = binrw::io::Cursor::new(Vec::with_capacity(cluster_size));
        self.write(&mut cur)?;
        let mut buf = cur.into_inner();
        if buf.len() > cluster_size {
            return Err(binrw::Error::AssertFail {
                pos: cluster_size as u64,
                message: format!("features need {} bytes, the cluster has {cluster_size}", buf.len()),
            });
        }
        buf.resize(cluster_size, 0);
        let sum = checksum(&buf[EXT_HEADER_SIZE..]);
        buf[8..24].copy_from_slice(&sum);
        Ok(buf)
    }

    /// The size in bytes of a feature list's encoding, end record and alignment included, header
    /// included.
    pub fn encoded_len(features: &[FeatureRecord]) -> u64 {
        let (_, end) = list_layout(features.iter().map(|f| u64::from(f.header.data_size.get())));
        end + core::mem::size_of::<RawFeatureHeader>() as u64
    }
}

/// MD5 of the checksummed part of an extension cluster (bytes `[24, cluster_size)`), with
/// `zero_tail` zero bytes appended for the part of the cluster past the end of the file.
pub fn checksum_padded(covered: &[u8], zero_tail: u64) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(covered);
    hash_zeros(&mut h, zero_tail);
    h.finalize().into()
}

/// Feeds `n` zero bytes to `h` without holding them.
fn hash_zeros(h: &mut Md5, n: u64) {
    let zeros = [0u8; 4096];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..k]);
        left -= k as u64;
    }
}

/// [`checksum_padded`], and how many leading bytes of `covered` it takes to hold all its non-zero
/// bytes (0 if there are none), found a piece at a time while the piece is in the CPU's cache:
/// the validator then need not read the zeros after the feature list again.
pub(crate) fn checksum_and_nonzero_len(covered: &[u8], zero_tail: u64) -> ([u8; 16], usize) {
    const PIECE: usize = 16 << 10;
    let mut h = Md5::new();
    let mut nonzero_len = 0;
    for (k, piece) in covered.chunks(PIECE).enumerate() {
        h.update(piece);
        if super::first_nonzero(piece).is_some() {
            nonzero_len = k * PIECE + piece.len();
        }
    }
    hash_zeros(&mut h, zero_tail);
    (h.finalize().into(), nonzero_len)
}

/// MD5 of the checksummed part of an extension cluster.
pub fn checksum(covered: &[u8]) -> [u8; 16] {
    checksum_padded(covered, 0)
}

#[cfg(test)]
mod tests {
    use super::{checksum_and_nonzero_len, checksum_padded};

    #[test]
    fn nonzero_len_covers_the_last_non_zero_byte_by_whole_pieces() {
        // Pieces are 16 KiB of `covered`: a byte on either side of a boundary, in the middle, at
        // the very end, and none.
        let len = 100_000;
        for (set, want) in [
            (vec![], 0),
            (vec![0], 16_384),
            (vec![16_383], 16_384),
            (vec![16_384], 32_768),
            (vec![20_000, 70_000], 81_920),
            (vec![len - 1], len),
        ] {
            let mut covered = vec![0u8; len];
            for &i in &set {
                covered[i] = 0x5a;
            }
            let (sum, nonzero) = checksum_and_nonzero_len(&covered, 300);
            assert_eq!(sum, checksum_padded(&covered, 300), "{set:?}");
            assert_eq!(nonzero, want, "{set:?}");
            assert!(covered[nonzero..].iter().all(|&b| b == 0));
        }
    }
}
