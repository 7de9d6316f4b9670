//! What Virtuozzo ploop 9.0.30 does with an image, predicted from its bytes: `ploop check`
//! (forced, read-only, with duplicate detection), its CBT loader (what `ploop-cbt show` and a
//! mount read from the Format Extension) and what a mount does to the file before the kernel
//! gets it.
//!
//! ploop checks other things than [`crate::validate()`] does, in its own order, and its CBT
//! loader reads the extension only when `inuse` is "v2.1". This module follows what ploop's own
//! library was seen to do, run through the oracle drivers of `shared/oracles/ploop/` on a
//! catalogue of built, corrupted and randomly mutated images (`tests/ploop/`); `spec/ploop.md`
//! describes it. Messages are ploop's own texts (facts), without the `Error in FUNCTION
//! (FILE:LINE): ` prefix ploop puts on its error lines.
//!
//! The prediction reads the raw bytes, so it answers for images this crate's parser refuses.

use std::collections::BTreeSet;
use std::io;

use md5::{Digest, Md5};

use crate::extension::ExtensionDigest;
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE};
use crate::raw::extension::{RawExtHeader, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{RawFeatureHeader, FEATURE_DIRTY_BITMAP, FEATURE_HEADER_SIZE};
use crate::raw::header::{
    RawHeader, FLAG_FORMAT_CONVERSION, INUSE_CLOSED, INUSE_CLOSED_V21, INUSE_OPEN, MAGIC_V1, MAGIC_V2, VERSION,
};
use crate::raw::SECTOR_SIZE;
use crate::source::Source;
use crate::validate::{SlotGrid, SlotView};

/// ploop's return codes (`SYSEXIT_*`) that an image can cause.
pub mod rc {
    /// The image could not be opened as a ploop delta.
    pub const OPEN: i32 = 4;
    /// A read came back short or failed.
    pub const READ: i32 = 6;
    /// The image is corrupt (`ploop check`).
    pub const PLOOPFMT: i32 = 11;
    /// The Format Extension is refused.
    pub const PROTOCOL: i32 = 13;
    /// The image is being converted to another version.
    pub const EBUSY: i32 = 17;
    /// The image's dirty flag (`inuse` "Ynot") is set.
    pub const PLOOPINUSE: i32 = 37;
    /// The file size is not a multiple of the cluster size (mount-time truncation).
    pub const PARAM: i32 = 38;
}

/// ploop reads the header as one 4096-byte block.
const HEADER_BLOCK: u64 = 4096;
/// At most this many messages of `ploop check` are kept; the rest are counted.
pub const MAX_PLOOP_MESSAGES: usize = 200;
/// The last message of a `ploop check` that overruns its heap allocation and dies (SIGABRT
/// from glibc's heap checks, or SIGSEGV, depending on how far it writes).
pub const HEAP_OVERRUN: &str = "heap overrun (SIGABRT or SIGSEGV)";
/// The errno text ploop's mount-time truncation appends: it reports a stale `errno` (measured:
/// always ENOENT in the oracle driver).
const STALE_ERRNO_TEXT: &str = "No such file or directory";
const EIO_TEXT: &str = "Input/output error";
const EINVAL_TEXT: &str = "Invalid argument";

/// Smallest cluster size ploop accepts (32 KiB).
pub const PLOOP_MIN_CLUSTER: u64 = 32 << 10;
/// Largest cluster size ploop accepts (64 MiB).
pub const PLOOP_MAX_CLUSTER: u64 = 64 << 20;

/// Whether ploop opens images with clusters of `bytes` bytes: a power of two from
/// [`PLOOP_MIN_CLUSTER`] to [`PLOOP_MAX_CLUSTER`].
pub fn ploop_accepts_cluster_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (PLOOP_MIN_CLUSTER..=PLOOP_MAX_CLUSTER).contains(&bytes)
}

/// What ploop predicts for one image: its check, its CBT loader and its mount.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PloopPrediction {
    /// `ploop check -f` (read-only, with duplicate detection).
    pub check: PloopCheck,
    /// The CBT loader (`ploop-cbt show`, read-only).
    pub cbt: PloopCbt,
    /// What a mount does to the top delta before the kernel gets it.
    pub mount: PloopMount,
}

/// What `ploop check` (forced, read-only, with duplicate detection) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PloopCheck {
    /// Its return code (0 clean; [`rc`] otherwise); `None` when it dies of a signal.
    pub rc: Option<i32>,
    /// Its messages in order, at most [`MAX_PLOOP_MESSAGES`] (the image path as given); when
    /// it dies of a signal, the signal's name comes last.
    pub messages: Vec<String>,
    /// Messages past [`MAX_PLOOP_MESSAGES`], not kept.
    pub messages_omitted: u64,
}

/// What ploop's CBT loader does with the Format Extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum CbtOutcome {
    /// `ext_off` is 0: there is no extension to load.
    None,
    /// `inuse` is 0 ("closed by version 2.0 software"): the extension is skipped silently.
    Ignores,
    /// The extension is read; the last bitmap record is kept (if there is one).
    Loads,
    /// ploop refuses the extension (or the image) with a return code and a message.
    Refuses,
    /// ploop dies of a signal.
    Crashes,
}

impl CbtOutcome {
    /// `"none"`, `"ignores"`, `"loads"`, `"refuses"` or `"crashes"`.
    pub fn name(self) -> &'static str {
        match self {
            CbtOutcome::None => "none",
            CbtOutcome::Ignores => "ignores",
            CbtOutcome::Loads => "loads",
            CbtOutcome::Refuses => "refuses",
            CbtOutcome::Crashes => "crashes",
        }
    }
}

/// What ploop's CBT loader does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PloopCbt {
    /// The outcome.
    pub outcome: CbtOutcome,
    /// The bitmap ploop keeps (the last record), lowercase 8-4-4-4-12 as ploop prints it.
    pub bitmap: Option<String>,
    /// The return code; `None` when ploop crashes.
    pub rc: Option<i32>,
    /// The last error ploop prints, or the signal's name when it crashes.
    pub message: Option<String>,
}

/// What a mount does to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum MountEffect {
    /// The file is left as it is.
    Unchanged,
    /// The extension and bitmap clusters at the end of the file are cut off; `ext_off` is left
    /// pointing past the new end.
    Truncates,
    /// The header is rewritten with `ext_off = 0` and `inuse = 0` (bad extension magic or
    /// checksum, or an extension cluster that cannot be read).
    DropsExtension,
    /// ploop dies of a signal; the file is left as it is.
    Crashes,
}

impl MountEffect {
    /// `"unchanged"`, `"truncates"`, `"drops-extension"` or `"crashes"`.
    pub fn name(self) -> &'static str {
        match self {
            MountEffect::Unchanged => "unchanged",
            MountEffect::Truncates => "truncates",
            MountEffect::DropsExtension => "drops-extension",
            MountEffect::Crashes => "crashes",
        }
    }
}

/// What a ploop mount does to the top delta (its extension load with truncation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PloopMount {
    /// The load's return code (non-zero: the mount goes on without CBT); `None` on a crash.
    pub rc: Option<i32>,
    /// What happens to the file.
    pub effect: MountEffect,
    /// The file size afterwards.
    pub file_size: u64,
    /// The header's `ext_off` afterwards (sectors).
    pub ext_off: u64,
    /// The header's `inuse` afterwards.
    pub inuse: u32,
    /// The last error ploop prints, or the signal's name when it crashes.
    pub message: Option<String>,
}

/// Predicts what ploop does with the image in `source`; `path` is the image's path as it would
/// be passed to ploop (its messages name it).
pub fn predict_ploop(source: &dyn Source, path: &str) -> io::Result<PloopPrediction> {
    predict_ploop_knowing(source, path, None)
}

/// What ploop's CBT loader does with the image in `source` ([`PloopPrediction::cbt`]) alone:
/// its check's walk of the index table is not made.
pub fn predict_ploop_cbt(source: &dyn Source, path: &str) -> io::Result<PloopCbt> {
    Ok(cbt_of(&load_extension(source, path, None)?))
}

/// [`predict_ploop`], taking `known` as the MD5 of the extension block if it covers the very
/// block ploop would hash (the caller vouches that it is the digest of `source`'s bytes) instead
/// of hashing it.
pub(crate) fn predict_ploop_knowing(
    source: &dyn Source,
    path: &str,
    known: Option<&ExtensionDigest>,
) -> io::Result<PloopPrediction> {
    let check = predict_check(source, path)?;
    predict_ploop_checked(source, path, known, check)
}

/// [`predict_ploop_knowing`] with its check already made (by [`start_check`] and a
/// [`CheckWalk`] fed by a walk of the BAT that others share).
pub(crate) fn predict_ploop_checked(
    source: &dyn Source,
    path: &str,
    known: Option<&ExtensionDigest>,
    check: PloopCheck,
) -> io::Result<PloopPrediction> {
    // One walk of the extension answers for both: the read-only load and the mount's load
    // differ only in what they do to the file afterwards.
    let load = load_extension(source, path, known)?;
    // A mount that changes nothing leaves the header as it is, also when the file is too short
    // for ploop to read it (missing bytes read as zeros, as for any short file).
    let first = source.read_at(0, 64)?;
    let header = RawHeader::read_padded(&first);
    Ok(PloopPrediction {
        check,
        cbt: cbt_of(&load),
        mount: mount_of(source, &load, &header),
    })
}

fn is_valid_blocksize(tracks: u32) -> bool {
    // 32 KiB to 64 MiB, a power of two.
    (64..=(64 << 11)).contains(&tracks) && tracks.is_power_of_two()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    V1,
    V2,
}

fn fmt_of(h: &RawHeader) -> Option<Fmt> {
    if h.magic == MAGIC_V1 {
        Some(Fmt::V1)
    } else if h.magic == MAGIC_V2 {
        Some(Fmt::V2)
    } else {
        None
    }
}

fn read_header(source: &dyn Source) -> io::Result<Option<RawHeader>> {
    if source.size() < HEADER_BLOCK {
        return Ok(None);
    }
    let bytes = source.read_at(0, 64)?;
    Ok(Some(RawHeader::read_padded(&bytes)))
}

struct Messages {
    kept: Vec<String>,
    omitted: u64,
}

impl Messages {
    fn push(&mut self, m: impl FnOnce() -> String) {
        if self.kept.len() < MAX_PLOOP_MESSAGES {
            self.kept.push(m());
        } else {
            self.omitted += 1;
        }
    }
    fn done(self, rc: i32) -> PloopCheck {
        PloopCheck {
            rc: Some(rc),
            messages: self.kept,
            messages_omitted: self.omitted,
        }
    }
}

/// `ploop check` with `-f` (forced), read-only, with duplicate detection, reading the index
/// table itself.
fn predict_check(source: &dyn Source, path: &str) -> io::Result<PloopCheck> {
    match start_check(source, path)? {
        CheckStart::Done(check) => Ok(check),
        CheckStart::Walk(walk) => walk.finish(source, 0),
    }
}

/// [`start_check`]'s answer: the check's result when it stops before its walk of the index
/// table, or the walk to feed.
pub(crate) enum CheckStart {
    Done(PloopCheck),
    Walk(CheckWalk),
}

/// ploop's check of one image up to its walk of the index table: the header's tests and the
/// bit map of used blocks.
pub(crate) fn start_check(source: &dyn Source, path: &str) -> io::Result<CheckStart> {
    let mut m = Messages {
        kept: Vec::new(),
        omitted: 0,
    };
    let done = |m: Messages, rc: i32| Ok(CheckStart::Done(m.done(rc)));
    let Some(h) = read_header(source)? else {
        m.push(|| "Short read PVD header".into());
        return done(m, rc::READ);
    };
    let Some(fmt) = fmt_of(&h) else {
        m.push(|| format!("Wrong signature in image {path}"));
        return done(m, rc::PLOOPFMT);
    };
    if h.version.get() != VERSION {
        m.push(|| format!("Wrong type in image {path}"));
        return done(m, rc::PLOOPFMT);
    }
    let tracks = h.tracks.get();
    if !is_valid_blocksize(tracks) {
        m.push(|| format!("Wrong cluster size {} in image {path}", tracks as i32));
        return done(m, rc::PLOOPFMT);
    }
    let log = tracks.trailing_zeros();
    let data_off = h.data_off.get();
    let l1_slots = data_off >> log;
    if data_off % tracks != 0 || l1_slots == 0 {
        m.push(|| format!("Wrong first block offset in image {path}"));
        return done(m, rc::PLOOPFMT);
    }
    let cluster = u64::from(tracks) * SECTOR_SIZE;
    let size = source.size();
    // ploop compares with a signed 64-bit disk size (the low 32 bits for the v1 magic).
    let bd_size = match fmt {
        Fmt::V1 => i64::from(h.nb_sectors.get() as u32),
        Fmt::V2 => h.nb_sectors.get() as i64,
    };
    let in_use = h.inuse.get() == INUSE_OPEN;
    if !size.is_multiple_of(cluster) {
        // Read-only: reported, then the check stops there with success.
        m.push(|| format!("Image size {size} is not aligned to cluster {cluster}"));
        return done(m, 0);
    }
    if in_use && h.flags.get() & FLAG_FORMAT_CONVERSION != 0 {
        m.push(|| format!("Image {path} is in the changing version state"));
        return done(m, rc::EBUSY);
    }

    // Blocks of the file already used: the header and BAT blocks, then each data block seen.
    // ploop sizes its bit map of used blocks from the file and marks the header and BAT blocks
    // without a bound: a data_off far past the end of the file writes past the allocation,
    // and glibc (or the MMU) stops the process.
    let blocks = size / cluster;
    let map_bytes = ((blocks as u32).wrapping_add(31) / 8) as u64;
    let touched = u64::from((l1_slots - 1) / 32) * 4 + 4;
    if touched > malloc_usable(map_bytes) {
        m.kept.clear();
        m.push(|| HEAP_OVERRUN.into());
        return Ok(CheckStart::Done(PloopCheck {
            rc: None,
            messages: m.kept,
            messages_omitted: 0,
        }));
    }
    // The first BAT cluster is read before anything else: a file shorter than one cluster
    // stops here.
    if cluster > size {
        m.push(|| "Short read index table".into());
        return done(m, rc::READ);
    }
    // ploop reads the table a cluster at a time, each after testing that it ends in the file:
    // it sees the slots of the clusters in the file, then stops with a short read if the
    // table goes on past the file. The first 16 slots are the header's.
    let whole = u64::from(l1_slots).min(size / cluster);
    Ok(CheckStart::Walk(CheckWalk {
        m,
        path: path.to_string(),
        fmt,
        tracks,
        log,
        cluster,
        size,
        bd_size,
        in_use,
        blocks,
        l1: u64::from(l1_slots),
        used: Used::Unset,
        grid_shared: false,
        clean: true,
        fatal: false,
        slots: whole * (cluster / 4) - 16,
        short: u64::from(l1_slots) > whole,
    }))
}

/// ploop's check's walk of its index table, fed the non-zero entries in slot order (slot `i` is
/// BAT entry `i`): by [`CheckWalk::finish`] reading them itself, or by a walk of the BAT that
/// others share, for the slots it covers, and [`CheckWalk::finish`] for the rest.
pub(crate) struct CheckWalk {
    m: Messages,
    path: String,
    fmt: Fmt,
    tracks: u32,
    log: u32,
    cluster: u64,
    size: u64,
    bd_size: i64,
    in_use: bool,
    /// Blocks of the file (the bit map's length).
    blocks: u64,
    /// The header and BAT blocks, marked used from the start.
    l1: u64,
    used: Used,
    /// The rules' bit set of data clusters, on the grid [`CheckWalk::share_grid`] was given,
    /// can stand for this bit map.
    grid_shared: bool,
    clean: bool,
    fatal: bool,
    /// Slots ploop reads (those of the table's clusters in the file).
    slots: u64,
    /// The table goes on past the end of the file.
    short: bool,
}

/// How many blocks may be marked in the rules' bit set by entries ploop passes over alone
/// ([`Used::Shared`]) before ploop's walk takes a bit map of its own.
const GHOST_BOUND: usize = 4096;

/// ploop's bit map of used blocks, or what stands in for it.
enum Used {
    /// No entry tested yet: nothing allocated.
    Unset,
    /// ploop's own bit map: the header and BAT blocks, then each data block seen.
    Own(Vec<u64>),
    /// The rules' bit set ([`SlotView`]) stands in for it while their walk of the BAT feeds
    /// ploop's (v2: slot `s` is block `s`, the data area starts past the header and BAT blocks):
    /// ploop's map is the header and BAT blocks, and the rules' bits but these blocks, which only
    /// entries ploop passes over (its "ghosts": past its table, beyond the block device size)
    /// marked there.
    Shared(BTreeSet<u32>),
}

impl CheckWalk {
    /// Non-zero entry `entry` in slot `slot` (after every lower one); slots past the table
    /// ploop reads are not its own.
    #[inline]
    pub(crate) fn entry(&mut self, slot: u64, entry: u32) {
        self.entry_beside(slot, entry, None);
    }

    /// [`CheckWalk::entry`], fed by the rules' walk of the BAT with their bit set as it stands
    /// before they mark this entry (`rules`; `None` when they keep none): when it can stand in
    /// for ploop's bit map exactly, ploop's walk allocates none.
    #[inline]
    pub(crate) fn entry_beside(&mut self, slot: u64, entry: u32, rules: Option<SlotView<'_>>) {
        if let Used::Unset = self.used {
            self.used = match rules.filter(|r| self.grid_shared && r.bits.len() as u64 >= self.blocks.div_ceil(64)) {
                Some(_) => Used::Shared(BTreeSet::new()),
                None => Used::Own(self.fresh()),
            };
        }
        if slot >= self.slots {
            self.ghost(entry, rules);
            return;
        }
        // ploop counts slots in 32 bits.
        let clu = slot as u32;
        let m = &mut self.m;
        let log = self.log;
        // The slot's guest offset is computed in 32 bits.
        if i64::from(clu.wrapping_shl(log)) > self.bd_size {
            m.push(|| format!("Data cluster ({clu}) beyond block device size... "));
            m.push(|| "Skipped".into());
            self.clean = false;
            self.ghost(entry, rules);
            return;
        }
        let isec: u64 = match self.fmt {
            Fmt::V1 => u64::from(entry),
            Fmt::V2 => u64::from(entry) * u64::from(self.tracks),
        };
        if self.fmt == Fmt::V1 && !isec.is_multiple_of(u64::from(self.tracks)) {
            m.push(|| format!("L2 slot ({clu}) corrupted... "));
            m.push(|| "FATAL".into());
            self.clean = false;
            self.fatal = true;
            return;
        }
        let iblk = (isec >> log) as u32;
        let (cluster, size) = (self.cluster, self.size);
        if u64::from(iblk) * cluster + cluster > size {
            m.push(|| format!("Data cluster {iblk} is beyond EOF, image size={size} vsec={clu}... "));
            m.push(|| "FATAL".into());
            self.clean = false;
            self.fatal = true;
            return;
        }
        if self.seen(iblk, rules) {
            let m = &mut self.m;
            m.push(|| format!("Block {iblk} is used more than once, vsec={clu}... "));
            m.push(|| "FATAL".into());
            self.clean = false;
            self.fatal = true;
        }
    }

    /// Whether block `iblk` (in the file) is marked used; marks it.
    #[inline]
    fn seen(&mut self, iblk: u32, rules: Option<SlotView<'_>>) -> bool {
        match (&mut self.used, rules) {
            (Used::Own(used), _) => {
                let (w, bit) = ((iblk / 64) as usize, 1u64 << (iblk % 64));
                let seen = used[w] & bit != 0;
                used[w] |= bit;
                seen
            }
            // The rules mark the block next (it is in their data area and ends in the file):
            // a ghost's mark becomes ploop's own.
            (Used::Shared(ghosts), Some(r)) => {
                u64::from(iblk) < self.l1 || (r.get(u64::from(iblk)) && !ghosts.remove(&iblk))
            }
            (Used::Shared(_), None) | (Used::Unset, _) => {
                unreachable!("ploop's walk shares the rules' bit set only while they show it")
            }
        }
    }

    /// Entry `entry`, which ploop passes over: when the rules mark its cluster and nothing
    /// had, the mark is not ploop's. Past [`GHOST_BOUND`] such blocks, ploop's walk takes its
    /// own bit map.
    fn ghost(&mut self, entry: u32, rules: Option<SlotView<'_>>) {
        let (Used::Shared(ghosts), Some(r)) = (&mut self.used, rules) else {
            return;
        };
        // v2: the entry is its block; the rules mark it in their data area, ending in the file.
        let b = u64::from(entry);
        if b < self.l1 || (b + 1) * self.cluster > self.size || r.get(b) {
            return;
        }
        ghosts.insert(entry);
        if ghosts.len() > GHOST_BOUND {
            let ghosts = std::mem::take(ghosts);
            self.used = Used::Own(self.own_from(r.bits.to_vec(), &ghosts));
        }
    }

    /// The rules' walk of the BAT that feeds this one keeps its bit set of data clusters on
    /// `grid`: it can stand for ploop's bit map (with a bit for each of ploop's blocks, tested
    /// at the first entry) when the image is v2 and the grid starts at byte 0 in ploop's cluster
    /// size, its data area at the end of ploop's header and BAT blocks, in the same file.
    pub(crate) fn share_grid(&mut self, grid: &SlotGrid) {
        self.grid_shared = self.fmt == Fmt::V2
            && grid.base == 0
            && grid.cluster_size == self.cluster
            && grid.data_start == self.l1 * self.cluster
            && grid.file_len == self.size;
    }

    /// ploop's bit map with the header and BAT blocks alone marked.
    fn fresh(&self) -> Vec<u64> {
        self.own_from(Vec::new(), &BTreeSet::new())
    }

    /// ploop's bit map made of the rules' `bits` (in place): without the blocks only `ghosts`
    /// marked, with the header and BAT blocks.
    fn own_from(&self, mut bits: Vec<u64>, ghosts: &BTreeSet<u32>) -> Vec<u64> {
        bits.resize(self.blocks.div_ceil(64) as usize, 0);
        for &g in ghosts {
            bits[(g / 64) as usize] &= !(1u64 << (g % 64));
        }
        for b in 0..self.l1.min(self.blocks) {
            bits[(b / 64) as usize] |= 1 << (b % 64);
        }
        bits
    }

    /// The rules' walk of the BAT is over and gives back its bit set (`rules`, `None` when it
    /// kept none): if it stood for ploop's bit map, it becomes it; otherwise it is dropped.
    pub(crate) fn adopt(&mut self, rules: Option<Vec<u64>>) {
        match (std::mem::replace(&mut self.used, Used::Unset), rules) {
            (Used::Shared(ghosts), Some(bits)) => self.used = Used::Own(self.own_from(bits, &ghosts)),
            (Used::Shared(_), None) => unreachable!("the rules give back the bit set they showed"),
            (used, _) => self.used = used,
        }
    }

    /// Reads the slots from `from` on (those not fed) from `source`, passing over its holes,
    /// and gives the check's result.
    pub(crate) fn finish(mut self, source: &dyn Source, from: u64) -> io::Result<PloopCheck> {
        let mut buf = vec![0u8; (self.slots.saturating_sub(from) * 4).min(TABLE_BLOCK) as usize];
        let mut slot = from;
        while slot < self.slots {
            let at = 64 + 4 * slot;
            let (data, data_end) = source.next_data(at)?;
            let past = (data.saturating_sub(64) / 4).min(self.slots);
            if past > slot {
                // A hole: zeros, unallocated slots.
                slot = past;
                continue;
            }
            let n = ((self.slots - slot) * 4)
                .min(buf.len() as u64)
                .min(data_end.max(at + 4) - at);
            let n = (n / 4 * 4).max(4) as usize;
            let got = source.read_into(at, &mut buf[..n])?;
            if got < n {
                // The file shrank since ploop's size test: its read comes back short.
                self.m.push(|| "Short read index table".into());
                return Ok(self.m.done(rc::READ));
            }
            for (j, e) in buf[..n].chunks_exact(4).enumerate() {
                let e = u32::from_le_bytes(e.try_into().expect("4 bytes"));
                if e != 0 {
                    self.entry(slot + j as u64, e);
                }
            }
            slot += n as u64 / 4;
        }
        let mut m = self.m;
        if self.short {
            m.push(|| "Short read index table".into());
            return Ok(m.done(rc::READ));
        }
        if self.fatal {
            let path = &self.path;
            m.push(|| format!("Fatal errors were found, image {path} is not repaired"));
            return Ok(m.done(rc::PLOOPFMT));
        }
        if self.in_use {
            m.push(|| "Dirty flag is set".into());
            return Ok(m.done(rc::PLOOPINUSE));
        }
        Ok(m.done(if self.clean { 0 } else { rc::PLOOPFMT }))
    }
}

/// How much of the index table [`CheckWalk::finish`] reads at a time.
const TABLE_BLOCK: u64 = 128 << 10;

/// The bytes glibc's `malloc(n)` lets the caller use (64-bit: 16-byte chunks with an 8-byte
/// header, at least 32 bytes).
fn malloc_usable(n: u64) -> u64 {
    (n + 8 + 15).max(32) / 16 * 16 - 8
}

/// How a run of ploop's extension loader ends.
#[derive(Debug)]
enum LoadEnd {
    /// The delta could not be opened.
    OpenFails,
    /// `ext_off` is 0.
    NoExtension,
    /// `inuse` is 0.
    Ignored,
    /// Failed with this code; `drop`: a mount rewrites the header without the extension.
    Fails { rc: i32, drop: bool },
    /// Granularity 0: division by zero.
    Crashes,
    /// Read to the end; the mount truncates the file to `new_size` (or fails with PARAM).
    /// `new_size`: the size a mount cuts the file to; `None` when the file size is not a
    /// multiple of the cluster size (the mount's truncation then fails).
    Done { new_size: Option<u64> },
}

struct LoadRun {
    end: LoadEnd,
    /// Errors ploop printed, in order, without their prefix.
    errors: Vec<String>,
    /// The id of the bitmap kept (the last record that loaded).
    kept: Option<[u8; 16]>,
    header: Option<RawHeader>,
}

fn uuid_text(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// ploop's `pread` of `len` bytes at sector offset `sectors`: the byte offset wraps in 64 bits
/// and is taken as signed; the kernel refuses (EINVAL) a negative one or one whose end does not
/// fit in a signed 64-bit offset; a short read is EIO.
fn pread_error(sectors: u64, len: u64, file_size: u64) -> Option<(u64, &'static str)> {
    let off = sectors.wrapping_mul(SECTOR_SIZE);
    if (off as i64) < 0 || (off.wrapping_add(len) as i64) < 0 {
        return Some((off, EINVAL_TEXT));
    }
    if len > 0 && off + len > file_size {
        return Some((off, EIO_TEXT));
    }
    None
}

impl LoadRun {
    /// The load fails with `message` and the return code `rc`; `drop`: the extension is dropped.
    fn fail(&mut self, rc: i32, drop: bool, message: String) {
        self.errors.push(message);
        self.end = LoadEnd::Fails { rc, drop };
    }
}

/// ploop's extension loader, as the read-only load of `ploop-cbt show` and the load a mount does
/// before handing the delta to the kernel both run it.
fn load_extension(source: &dyn Source, path: &str, known: Option<&ExtensionDigest>) -> io::Result<LoadRun> {
    let mut run = LoadRun {
        end: LoadEnd::OpenFails,
        errors: Vec::new(),
        kept: None,
        header: None,
    };
    let Some(h) = load_header(source, path, &mut run)? else {
        return Ok(run);
    };
    let ext_off = h.ext_off.get();
    let bs = u64::from(h.tracks.get()) * SECTOR_SIZE;
    let size = source.size();
    let Some(block) = load_block(source, &mut run, ext_off, bs, known)? else {
        return Ok(run);
    };
    // Blocks the mount may cut off the end of the file: the extension and every bitmap cluster.
    let mut ext_blocks = vec![ext_off.wrapping_mul(SECTOR_SIZE)];
    if !load_features(&block, bs, (h.nb_sectors.get(), size), &mut run, &mut ext_blocks) {
        return Ok(run);
    }
    run.end = LoadEnd::Done {
        new_size: mount_size(size, bs, ext_blocks),
    };
    Ok(run)
}

/// The loader's checks of the header: `Some` with it when the extension is to be read, else
/// `run` says how the load ended.
fn load_header(source: &dyn Source, path: &str, run: &mut LoadRun) -> io::Result<Option<RawHeader>> {
    let Some(h) = read_header(source)? else {
        run.errors.push(format!("read 1st sector of {path}: {EIO_TEXT}"));
        return Ok(None);
    };
    run.header = Some(h);
    if fmt_of(&h).is_none() {
        run.errors
            .push(format!("Unknown ploop image version in the header {path}"));
        return Ok(None);
    }
    if h.version.get() != VERSION || !is_valid_blocksize(h.tracks.get()) {
        run.errors.push(format!("Invalid image header {path}"));
        return Ok(None);
    }
    let inuse = h.inuse.get();
    if h.ext_off.get() == 0 {
        run.end = LoadEnd::NoExtension;
        return Ok(None);
    }
    if inuse == INUSE_CLOSED {
        run.end = LoadEnd::Ignored;
        return Ok(None);
    }
    if inuse != INUSE_CLOSED_V21 {
        run.errors
            .push("Can't load dirty_bitmap, because image was not successfully closed".into());
        run.end = LoadEnd::Fails {
            rc: rc::PROTOCOL,
            drop: false,
        };
        return Ok(None);
    }
    Ok(Some(h))
}

/// The extension block of `bs` bytes at sector `ext_off`: `Some` when it reads and its magic and
/// checksum are right, else `run` says how the load failed.
fn load_block<'s>(
    source: &'s dyn Source,
    run: &mut LoadRun,
    ext_off: u64,
    bs: u64,
    known: Option<&ExtensionDigest>,
) -> io::Result<Option<std::borrow::Cow<'s, [u8]>>> {
    let size = source.size();
    if let Some((off, err)) = pread_error(ext_off, bs, size) {
        run.errors
            .push(format!("pread off={off} size={}: {err}", bs as u32 as i32));
        let text = format!("Can't read optional header block, offset: 0x{ext_off:x}, size: 0x{bs:x}: {err}");
        run.fail(rc::READ, true, text);
        return Ok(None);
    }
    let block = source.read_at(ext_off.wrapping_mul(SECTOR_SIZE), bs)?;
    let header = RawExtHeader::read_padded(&block, 0);
    if header.magic.get() != EXT_MAGIC {
        run.fail(rc::PROTOCOL, true, "Wrong optional header magic".into());
        return Ok(None);
    }
    // The whole block is in the file (the read above would have failed otherwise).
    let digest: [u8; 16] = match known.filter(|k| k.covers(ext_off.wrapping_mul(SECTOR_SIZE), bs, size)) {
        Some(k) => k.md5,
        None => Md5::digest(&block[EXT_HEADER_SIZE..]).into(),
    };
    if header.checksum != digest {
        run.fail(rc::PROTOCOL, true, "Wrong optional header checksum".into());
        return Ok(None);
    }
    Ok(Some(block))
}

/// ploop's walk of the feature list of `block`, of `bs` bytes (records one after another, not
/// aligned): each dirty bitmap's checks and the reads of its clusters (pushed onto `ext_blocks`),
/// on a disk of `nb_sectors` in a file of `size` bytes. `false` when the load ends there (`run`
/// says how).
fn load_features(
    block: &[u8],
    bs: u64,
    (nb_sectors, size): (u64, u64),
    run: &mut LoadRun,
    ext_blocks: &mut Vec<u64>,
) -> bool {
    let mut pos = EXT_HEADER_SIZE as u64;
    loop {
        let feature = RawFeatureHeader::read_padded(block, pos);
        let data = pos + FEATURE_HEADER_SIZE as u64;
        let data_size = u64::from(feature.data_size.get());
        if data > bs || data + data_size > bs {
            run.fail(rc::PROTOCOL, false, "Spoiled optional header".into());
            return false;
        }
        let magic = feature.magic.get();
        if magic == 0 {
            return true;
        }
        if magic == FEATURE_DIRTY_BITMAP {
            let bitmap = RawBitmapHeader::read_padded(block, data);
            // The bitmap's size is compared with the 64-bit field, whatever the magic; a field
            // past the block reads as 0.
            let size_field = if data + 8 <= block.len() as u64 {
                bitmap.size.get()
            } else {
                0
            };
            if size_field != nb_sectors {
                run.fail(
                    rc::PROTOCOL,
                    false,
                    "Image size is not equal to dirty_bitmap size".into(),
                );
                return false;
            }
            let l1_size = bitmap.l1_size.get();
            if data_size < BITMAP_HEADER_SIZE as u64 + 8 * u64::from(l1_size) {
                run.fail(rc::PROTOCOL, false, "Spoiled bitmap extension data".into());
                return false;
            }
            let granularity = u64::from(bitmap.granularity.get());
            if granularity == 0 {
                run.end = LoadEnd::Crashes;
                return false;
            }
            let bits = nb_sectors.wrapping_add(granularity - 1) / granularity;
            let mut bytes = bits.wrapping_add(7) >> 3;
            for k in 0..u64::from(l1_size) {
                let entry = RawBitmapHeader::l1_entry_padded(block, data, k);
                let chunk = bs.min(bytes);
                bytes -= chunk;
                if entry > 1 {
                    // ploop passes the length as a 32-bit count.
                    if let Some((off, err)) = pread_error(entry, u64::from(chunk as u32), size) {
                        run.errors
                            .push(format!("pread off={off} size={}: {err}", chunk as u32 as i32));
                        run.fail(rc::READ, false, format!("Can't read dirty_bitmap block: {err}"));
                        return false;
                    }
                    ext_blocks.push(entry.wrapping_mul(SECTOR_SIZE));
                }
            }
            run.kept = Some(bitmap.id);
        }
        pos = data + data_size;
    }
}

/// The size a mount cuts a file of `size` bytes to: the extension and bitmap blocks that end the
/// file are cut, as long as the block before the end is one of them. `None` when the size is not
/// a multiple of the block size `bs`.
fn mount_size(size: u64, bs: u64, mut ext_blocks: Vec<u64>) -> Option<u64> {
    if !size.is_multiple_of(bs) {
        return None;
    }
    let mut new_size = size;
    while new_size >= bs {
        let last = new_size - bs;
        match ext_blocks.iter().position(|&b| b == last) {
            Some(i) => {
                ext_blocks.swap_remove(i);
                new_size = last;
            }
            None => break,
        }
    }
    Some(new_size)
}

fn cbt_of(run: &LoadRun) -> PloopCbt {
    let last = run.errors.last().cloned();
    let (outcome, rc, message) = match run.end {
        LoadEnd::OpenFails => (CbtOutcome::Refuses, Some(rc::OPEN), last),
        LoadEnd::NoExtension => (CbtOutcome::None, Some(0), None),
        LoadEnd::Ignored => (CbtOutcome::Ignores, Some(0), None),
        LoadEnd::Fails { rc, .. } => (CbtOutcome::Refuses, Some(rc), last),
        LoadEnd::Crashes => (CbtOutcome::Crashes, None, Some("SIGFPE".into())),
        LoadEnd::Done { .. } => (CbtOutcome::Loads, Some(0), None),
    };
    PloopCbt {
        outcome,
        bitmap: match outcome {
            CbtOutcome::Loads => run.kept.as_ref().map(uuid_text),
            _ => None,
        },
        rc,
        message,
    }
}

fn mount_of(source: &dyn Source, run: &LoadRun, header: &RawHeader) -> PloopMount {
    let size = source.size();
    let (ext_off, inuse) = (header.ext_off.get(), header.inuse.get());
    let mut mount = PloopMount {
        rc: Some(0),
        effect: MountEffect::Unchanged,
        file_size: size,
        ext_off,
        inuse,
        message: run.errors.last().cloned(),
    };
    match run.end {
        LoadEnd::OpenFails => mount.rc = Some(rc::OPEN),
        LoadEnd::NoExtension | LoadEnd::Ignored => {}
        LoadEnd::Fails { rc, drop } => {
            mount.rc = Some(rc);
            if drop {
                mount.effect = MountEffect::DropsExtension;
                mount.ext_off = 0;
                mount.inuse = INUSE_CLOSED;
                mount.message = Some("Drop optional header".into());
            }
        }
        LoadEnd::Crashes => {
            mount.rc = None;
            mount.effect = MountEffect::Crashes;
            mount.message = Some("SIGFPE".into());
        }
        LoadEnd::Done { new_size: None } => {
            mount.rc = Some(rc::PARAM);
            mount.message = Some(format!(
                "Failed to truncate format extension blocks: {STALE_ERRNO_TEXT}"
            ));
        }
        LoadEnd::Done {
            new_size: Some(new_size),
        } => {
            if new_size < size {
                mount.effect = MountEffect::Truncates;
                mount.file_size = new_size;
            }
        }
    }
    mount
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestData, Image, ImageBuilder, RuleMode, Threads, Variant};

    const KIB: u64 = 1 << 10;

    /// ploop's walk of `bytes` fed by the rules' walk, as it stands when that walk gives back
    /// its bit set (before taking it over), and that bit set.
    fn fed(bytes: &[u8]) -> (CheckWalk, Option<Vec<u64>>) {
        let CheckStart::Walk(mut walk) = start_check(&bytes, "x.hds").unwrap() else {
            panic!("ploop's check stops before its walk")
        };
        let image = Image::parse_compact(&bytes, RuleMode::Strict).unwrap();
        walk.share_grid(&crate::validate::slot_grid(&image));
        let mut feed = |i: u32, e: u32, r: Option<SlotView<'_>>| walk.entry_beside(u64::from(i), e, r);
        let (_, bits) = crate::validate::validate_feeding(&image, Threads::Caller, &mut feed).unwrap();
        (walk, bits)
    }

    /// ploop's bit map after its own walk of the rules' slots of `bytes`.
    fn own_map(bytes: &[u8]) -> Vec<u64> {
        let CheckStart::Walk(mut walk) = start_check(&bytes, "x.hds").unwrap() else {
            panic!("ploop's check stops before its walk")
        };
        let image = Image::parse_compact(&bytes, RuleMode::Strict).unwrap();
        for (i, e) in image.allocated_entries() {
            walk.entry(u64::from(i), e);
        }
        match walk.used {
            Used::Own(v) => v,
            _ => panic!("ploop's own walk keeps its own bit map"),
        }
    }

    /// v2 (or v1), 64 KiB clusters, 16 entries, guest clusters 0–7 written (blocks 1–8).
    fn image(variant: Variant) -> Vec<u8> {
        let mut b = ImageBuilder::new(1 << 20).variant(variant).cluster_size(64 * KIB);
        for c in 0..8 {
            b = b.data(c * 64 * KIB, GuestData::Fill { len: 512, byte: 1 });
        }
        b.to_vec().unwrap().0
    }

    /// The map ploop's walk ends the rules' walk with, taken over from the rules' bit set.
    fn adopted(bytes: &[u8]) -> Vec<u64> {
        let (mut walk, bits) = fed(bytes);
        walk.adopt(bits);
        match walk.used {
            Used::Own(v) => v,
            _ => panic!("the walk takes a bit map over"),
        }
    }

    #[test]
    fn a_v2_walk_fed_by_the_rules_allocates_no_bit_map_of_its_own() {
        let bytes = image(Variant::V2);
        let (walk, bits) = fed(&bytes);
        assert!(matches!(&walk.used, Used::Shared(g) if g.is_empty()));
        assert!(bits.is_some());
        // Blocks 0 (the header and BAT) and 1–8.
        assert_eq!(adopted(&bytes), vec![0x1ff]);
        assert_eq!(own_map(&bytes), vec![0x1ff]);
    }

    #[test]
    fn blocks_only_skipped_entries_mark_are_kept_apart_then_cleared() {
        let mut bytes = image(Variant::V2);
        // A disk of two clusters: ploop skips slots 3 on (blocks 4–8); the rules mark them.
        bytes[36..44].copy_from_slice(&256u64.to_le_bytes());
        let (walk, _) = fed(&bytes);
        match &walk.used {
            Used::Shared(g) => assert_eq!(g.iter().copied().collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]),
            _ => panic!("the walk shares the rules' bit set"),
        }
        assert_eq!(adopted(&bytes), vec![0b1111]);
        assert_eq!(own_map(&bytes), vec![0b1111]);
    }

    #[test]
    fn a_v1_walk_keeps_its_own_bit_map() {
        let bytes = image(Variant::V1);
        let (walk, _) = fed(&bytes);
        assert!(matches!(&walk.used, Used::Own(_)));
        assert_eq!(adopted(&bytes), own_map(&bytes));
    }
}
