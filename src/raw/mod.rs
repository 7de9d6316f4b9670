//! The raw on-disk grammar: one module per structure.
//!
//! Fixed-size records are `zerocopy` types with little-endian field wrappers (alignment 1, the same
//! bytes on every host) so that a slice of the input can be viewed as a record or a table without
//! copying. Each of them also derives `binrw` (through a struct-level byte-array map), so that the
//! variable parts of the grammar — the feature list and the count-driven L1 table, in
//! [`extension`] and [`bitmap`] — are described declaratively for `binrw` (which writes a
//! record's data; the list itself goes through [`editor`]'s encoder).
//!
//! [`editor`] holds the feature list's one encoder and the in-place editor of an extension
//! cluster that the builder, `edit`, repair, the defect catalogue and the mutator all write
//! through, valid or, on request, not.

pub mod bat;
pub mod bitmap;
pub mod editor;
pub mod extension;
pub mod feature;
pub mod header;
pub mod units;

pub use bat::BatEntry;
pub use bitmap::{DirtyBitmapFeature, L1Entry, RawBitmapHeader};
pub use editor::{ExtensionEditor, RecordBytes};
pub use extension::{ExtensionCluster, RawExtHeader};
pub use feature::{FeatureBody, FeatureRecord, RawFeatureHeader};
pub use header::RawHeader;
pub use units::{Bytes, ClusterIndex, Sectors};

/// Bytes in a sector: the unit of `nb_sectors`, `data_off`, `ext_off`, v1 BAT entries, L1 entries
/// and bitmap granularity.
pub const SECTOR_SIZE: u64 = 512;

/// Whether a fixed-size block is all zeros: an OR of its bytes, which the compiler turns into
/// vector instructions.
#[inline]
pub(crate) fn all_zero<const N: usize>(block: &[u8; N]) -> bool {
    block.iter().fold(0u8, |a, &b| a | b) == 0
}

/// Position of the first non-zero byte of `bytes`. Blocks of 256 bytes are tested at once, so a
/// cluster of zeros is scanned at memory speed, not a byte at a time.
pub(crate) fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 256;
    let blocks = bytes.chunks_exact(BLOCK);
    let tail = blocks.remainder();
    for (k, block) in blocks.enumerate() {
        if !all_zero::<BLOCK>(block.try_into().expect("a whole block")) {
            return block.iter().position(|&b| b != 0).map(|i| k * BLOCK + i);
        }
    }
    let whole = bytes.len() - tail.len();
    tail.iter().position(|&b| b != 0).map(|i| whole + i)
}

/// Bytes `[at, at + N)` of `bytes`, with zeros for whatever lies past its end: how every reader
/// of the format treats a structure cut short by the end of the file.
pub(crate) fn padded<const N: usize>(bytes: &[u8], at: u64) -> [u8; N] {
    // All present (the common case): a fixed-size copy the compiler inlines.
    let whole = usize::try_from(at).ok().and_then(|s| bytes.get(s..s.checked_add(N)?));
    if let Some(Ok(out)) = whole.map(<[u8; N]>::try_from) {
        return out;
    }
    let mut out = [0u8; N];
    let len = bytes.len() as u64;
    let (s, e) = (at.min(len) as usize, at.saturating_add(N as u64).min(len) as usize);
    out[..e - s].copy_from_slice(&bytes[s..e]);
    out
}

/// Reads `count` elements of `elem_size` bytes with `read_one`, after checking that the stream
/// really holds that many bytes, so that a hostile count can never drive an allocation larger
/// than the input.
pub(crate) fn bounded_vec<R, T>(
    reader: &mut R,
    count: u64,
    elem_size: u64,
    mut read_one: impl FnMut(&mut R) -> binrw::BinResult<T>,
) -> binrw::BinResult<Vec<T>>
where
    R: binrw::io::Read + binrw::io::Seek,
{
    use binrw::io::SeekFrom;
    let pos = reader.stream_position()?;
    let end = reader.seek(SeekFrom::End(0))?;
    reader.seek(SeekFrom::Start(pos))?;
    let needed = count.checked_mul(elem_size);
    let available = end.saturating_sub(pos);
    match needed {
        Some(n) if n <= available => {}
        _ => {
            return Err(binrw::Error::AssertFail {
                pos,
                message: format!("{count} elements of {elem_size} bytes need more than the {available} bytes left"),
            })
        }
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push(read_one(reader)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::first_nonzero;

    #[test]
    fn first_nonzero_finds_the_first_byte_in_blocks_and_tail() {
        assert_eq!(first_nonzero(&[]), None);
        for len in [1usize, 63, 64, 65, 200, 255, 256, 257, 511, 512, 600] {
            assert_eq!(first_nonzero(&vec![0u8; len]), None, "{len} zeros");
            for at in 0..len {
                let mut bytes = vec![0u8; len];
                bytes[at] = 0x40;
                // A later non-zero byte must not be reported instead.
                if at + 1 < len {
                    bytes[len - 1] = 1;
                }
                assert_eq!(first_nonzero(&bytes), Some(at), "{len} bytes, first at {at}");
            }
        }
    }
}
