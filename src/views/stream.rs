//! An image read once from a stream (a pipe, standard input, a FIFO), holding only what
//! validation reads.
//!
//! The stream is read from start to end, once. Everything is kept except the guest data
//! clusters the BAT names (once the BAT has gone by): those bytes are counted, not held, so an
//! image with gigabytes of data costs its metadata in memory. What is held is bounded by a
//! limit; past it, reading stops with [`Error::StreamTooLarge`](crate::Error::StreamTooLarge).
//! Reading a dropped data cluster later fails with an I/O error of kind `Unsupported` (only a
//! corrupt image, whose bitmap clusters overlap its data, needs one).

use std::borrow::Cow;
use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::header::Header;
use crate::raw::header::{RawHeader, HEADER_SIZE, MAGIC_V1, MAGIC_V2};
use crate::source::Source;

/// Bytes a stream is read in.
const CHUNK: usize = 1 << 20;

/// Image bytes read from a stream, guest data left out. See the module docs.
#[derive(Debug, Default)]
pub struct StreamSource {
    /// Length of the stream.
    size: u64,
    /// Held runs `(offset, bytes)`, in order, neither overlapping nor touching.
    kept: Vec<(u64, Vec<u8>)>,
    /// Dropped `[start, end)` ranges, in order, disjoint.
    dropped: Vec<(u64, u64)>,
}

impl StreamSource {
    /// The limit `prlimg` uses: 1 GiB held in memory.
    pub const DEFAULT_LIMIT: u64 = 1 << 30;

    /// Reads `reader` to its end. `limit`: the most bytes held (the kept bytes plus 16 per
    /// dropped data cluster).
    ///
    /// Errors: [`Error::Io`] when reading fails, [`Error::StreamTooLarge`] when more than `limit`
    /// bytes would be held.
    pub fn read(mut reader: impl Read, limit: u64) -> Result<StreamSource> {
        let mut me = StreamSource::default();
        let mut held = 0u64;
        // The data clusters to drop: known once the whole BAT has been read.
        let mut plan: Option<Vec<(u64, u64)>> = None;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            };
            let mut done = 0;
            while done < n {
                // Until the plan is known, take in no more than it needs (the header, then
                // the BAT), so that data in the same read is already dropped.
                let upto = match &plan {
                    Some(_) => n,
                    None => {
                        let need = me.plan_needs().saturating_sub(me.size);
                        n.min(done + usize::try_from(need).unwrap_or(usize::MAX).max(1))
                    }
                };
                held += me.take(&buf[done..upto], plan.as_deref().unwrap_or(&[]));
                done = upto;
                if plan.is_none() {
                    me.refuse_foreign()?;
                }
                if held > limit {
                    return Err(Error::StreamTooLarge { limit, offset: me.size });
                }
                if plan.is_none() && me.plan_needs() > limit {
                    // The header and BAT alone are more than may be held.
                    return Err(Error::StreamTooLarge { limit, offset: limit });
                }
                if plan.is_none() {
                    if let Some(p) = me.plan_drops() {
                        held += 16 * p.len() as u64;
                        if held > limit {
                            return Err(Error::StreamTooLarge { limit, offset: me.size });
                        }
                        plan = Some(p);
                    }
                }
            }
        }
        Ok(me)
    }

    /// Once the magic and version have gone by: [`Error::NotParallels`] when they say the
    /// stream is something else (as [`Image::parse`](crate::Image::parse) would say of the
    /// whole), so that a stream of random bytes or zeros is refused at once, not read to the limit.
    fn refuse_foreign(&self) -> Result<()> {
        let Some((0, head)) = self.kept.first() else {
            return Ok(());
        };
        let (Some(magic), Some(version)) = (head.get(..16), head.get(16..20)) else {
            return Ok(());
        };
        let found: [u8; 16] = magic.try_into().unwrap_or_default();
        let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
        let known = [MAGIC_V1, MAGIC_V2].contains(&found);
        if !known && !crate::error::parallels_shaped(&found, version) {
            return Err(Error::NotParallels { found, version });
        }
        Ok(())
    }

    /// Bytes held in memory.
    pub fn held(&self) -> u64 {
        self.kept.iter().map(|k| k.1.len() as u64).sum()
    }

    /// Bytes read but not held (guest data clusters).
    pub fn dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.1 - d.0).sum()
    }

    /// Takes in the next `bytes` of the stream, holding what `drops` does not cover; returns
    /// how many bytes it held.
    fn take(&mut self, bytes: &[u8], drops: &[(u64, u64)]) -> u64 {
        let (start, end) = (self.size, self.size + bytes.len() as u64);
        let mut held = 0;
        let mut at = start;
        for &(ds, de) in &drops[drops.partition_point(|d| d.1 <= start)..] {
            if ds >= end {
                break;
            }
            if ds > at {
                held += self.keep(at, &bytes[(at - start) as usize..(ds - start) as usize]);
            }
            let (s, e) = (ds.max(start), de.min(end));
            self.drop_range(s, e);
            at = at.max(e);
        }
        if at < end {
            held += self.keep(at, &bytes[(at - start) as usize..]);
        }
        self.size = end;
        held
    }

    /// Where the bytes needed to plan the drops end: the header, then the BAT.
    fn plan_needs(&self) -> u64 {
        match self.kept.first() {
            Some((0, v)) if v.len() >= HEADER_SIZE => match Header::decode(&RawHeader::read_padded(v)) {
                Ok(h) => h.bat_end(),
                Err(_) => 0,
            },
            _ => HEADER_SIZE as u64,
        }
    }

    /// Holds `bytes` at `offset` (just after what was read); returns how many.
    fn keep(&mut self, offset: u64, bytes: &[u8]) -> u64 {
        match self.kept.last_mut() {
            Some((o, v)) if *o + v.len() as u64 == offset => v.extend_from_slice(bytes),
            _ => self.kept.push((offset, bytes.to_vec())),
        }
        bytes.len() as u64
    }

    fn drop_range(&mut self, s: u64, e: u64) {
        match self.dropped.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => self.dropped.push((s, e)),
        }
    }

    /// Once the header and the whole BAT are held: the data clusters to drop, merged and in
    /// order, leaving out any that overlap the header, the BAT or the extension cluster. `None`
    /// while the BAT is incomplete. An image whose header does not decode keeps everything.
    fn plan_drops(&self) -> Option<Vec<(u64, u64)>> {
        let (0, bytes) = self.kept.first().map(|(o, v)| (*o, v.as_slice()))? else {
            return Some(Vec::new());
        };
        if bytes.len() < HEADER_SIZE {
            return None;
        }
        let Ok(header) = Header::decode(&RawHeader::read_padded(bytes)) else {
            return Some(Vec::new());
        };
        let bat_end = header.bat_end();
        if (bytes.len() as u64) < bat_end {
            return None;
        }
        let cs = header.cluster_size();
        let ext = header.ext_offset().map(|o| (o, o.saturating_add(cs)));
        let mut drops: Vec<(u64, u64)> = bytes[HEADER_SIZE..bat_end as usize]
            .chunks_exact(4)
            .filter_map(|e| header.bat_entry_offset(u32::from_le_bytes([e[0], e[1], e[2], e[3]])))
            .map(|host| (host, host.saturating_add(cs)))
            .filter(|&(s, e)| s >= bat_end && ext.is_none_or(|(xs, xe)| e <= xs || s >= xe))
            .collect();
        drops.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(drops.len());
        for d in drops {
            match merged.last_mut() {
                Some(last) if d.0 <= last.1 => last.1 = last.1.max(d.1),
                _ => merged.push(d),
            }
        }
        Some(merged)
    }
}

impl Source for StreamSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Cow::Borrowed(&[]));
        }
        let i = self.dropped.partition_point(|d| d.1 <= offset);
        if let Some(&(ds, de)) = self.dropped.get(i).filter(|d| d.0 < end) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("bytes {ds}..{de} of the stream were guest data and were not kept"),
            ));
        }
        // Not dropped, so held, in one run (runs that touch are one).
        let k = self.kept.partition_point(|k| k.0 + k.1.len() as u64 <= offset);
        match self.kept.get(k) {
            Some((o, v)) if *o <= offset && o + v.len() as u64 >= end => {
                Ok(Cow::Borrowed(&v[(offset - o) as usize..(end - o) as usize]))
            }
            _ => Err(io::Error::other(format!(
                "bytes {offset}..{end} of the stream are not held"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BitmapSpec, GuestData, ImageBuilder};

    /// Hands out at most `n` bytes per read, like a pipe.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn sample() -> Vec<u8> {
        ImageBuilder::new(64 << 20)
            .cluster_size(64 << 10)
            .data(
                0,
                GuestData::Fill {
                    len: 300 << 10,
                    byte: 0xaa,
                },
            )
            .data(10 << 20, GuestData::Fill { len: 1, byte: 1 })
            .bitmap(BitmapSpec {
                id: [7; 16],
                granularity: 65536,
                extents: vec![(131072, 65536)],
            })
            .to_vec()
            .unwrap()
            .0
    }

    #[test]
    fn drops_exactly_the_data_clusters_and_validates_the_same() {
        let bytes = sample();
        // Data clusters 0..5 (300 KiB) and 160 at 64 KiB..448 KiB: 6 clusters of 64 KiB.
        for step in [1, 7, 4096, 1 << 20] {
            let s = StreamSource::read(Trickle(&bytes, step), 1 << 20).unwrap();
            assert_eq!(s.size(), bytes.len() as u64);
            assert_eq!(s.dropped(), 6 * 65536, "step {step}");
            assert_eq!(s.held(), bytes.len() as u64 - 6 * 65536);
            let from_stream = crate::validate(&crate::Image::parse(&s).unwrap()).unwrap();
            let from_bytes = crate::validate(&crate::Image::parse(&bytes).unwrap()).unwrap();
            assert_eq!(from_stream, from_bytes);
            assert_eq!(s.read_at(0, 64).unwrap()[..], bytes[..64]);
            let e = s.read_at(65536 + 10, 1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert_eq!(
                e.to_string(),
                "bytes 65536..458752 of the stream were guest data and were not kept"
            );
        }
    }

    #[test]
    fn the_limit_is_named_when_passed() {
        let bytes = sample();
        // Held: 64 KiB of header and BAT, the extension and a bitmap cluster, and 16 bytes per
        // dropped run: more than 128 KiB.
        let e = StreamSource::read(&bytes[..], 128 << 10).unwrap_err();
        assert!(
            matches!(e, Error::StreamTooLarge { limit: 131072, offset } if offset == bytes.len() as u64),
            "{e:?}"
        );
        // A BAT larger than the limit is refused as soon as the header is read.
        let mut header = bytes[..64].to_vec();
        header[32..36].copy_from_slice(&300_000_000u32.to_le_bytes());
        let e = StreamSource::read(Trickle(&header, 64), 1 << 30).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StreamTooLarge {
                    limit: 1073741824,
                    offset: 1073741824
                }
            ),
            "{e:?}"
        );
        // Not an image: refused at its 20th byte, whatever the limit.
        let junk = vec![0x5a; 3 << 20];
        let e = StreamSource::read(Trickle(&junk, 7), 2 << 20).unwrap_err();
        assert!(
            matches!(e, Error::NotParallels { found, version: 0x5a5a_5a5a } if found == [0x5a; 16]),
            "{e:?}"
        );
        // A damaged Parallels header (its version is 2) is read: everything is held, up to the limit.
        let mut junk = junk;
        junk[16..20].copy_from_slice(&2u32.to_le_bytes());
        let e = StreamSource::read(&junk[..], 2 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StreamTooLarge {
                    limit: 2097152,
                    offset: 3145728
                }
            ),
            "{e:?}"
        );
        let s = StreamSource::read(&junk[..], 3 << 20).unwrap();
        assert_eq!((s.held(), s.dropped()), (3 << 20, 0));
    }

    #[test]
    fn short_and_empty_streams() {
        let s = StreamSource::read(&[][..], 10).unwrap();
        assert_eq!(s.size(), 0);
        assert!(s.read_at(0, 64).unwrap().is_empty());
        let s = StreamSource::read(&b"WithouFreSpacExt"[..], 100).unwrap();
        assert_eq!(s.read_at(0, 64).unwrap().len(), 16);
    }
}
