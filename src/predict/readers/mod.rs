//! What two other real readers do with a bundle or a lone image: libyal's **libphdi**
//! (20260902, through its Python binding `pyphdi`) and fox-it's **dissect.hypervisor** (3.21,
//! `dissect.hypervisor.disk.hdd`). Neither writes; both are what forensic and backup tools hand
//! Parallels disks to. `spec/readers.md` describes what each does, with a reproducer per
//! behaviour.
//!
//! A prediction is made the way the real reader would read: a model of each reader
//! ([`libphdi`], [`dissect`]) opens the descriptor and the storage files as that reader does and
//! reads the whole disk in reads of [`READ_SIZE`] bytes (the drivers in `scripts/readers/` do
//! the same with the real readers), and the bytes are compared, MiB by MiB, with the guest's
//! bytes as this crate reads them ([`crate::bundle::GuestDisk`]). The outcome is one of
//! [`ReaderOutcome`]'s five words.
//!
//! A lone image is read as the drivers read it: put in a minimal bundle (one storage over the
//! header's size, one `Compressed` image, the default top GUID), since neither reader opens an
//! `.hds` on its own.

use std::fmt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::bundle::{is_bundle, BundleOptions, GuestDisk, DESCRIPTOR_NAME};

pub mod dissect;
pub mod libphdi;

/// The bytes of one read the drivers ask for (and the models make).
pub const READ_SIZE: u64 = 1 << 20;
/// The granule of the comparison.
pub const MIB: u64 = 1 << 20;
/// Reading stops here (the drivers' `--max-bytes`): the MiBs after it are not compared.
pub const MAX_BYTES: u64 = 1 << 30;
/// At most this many misread MiBs are listed; the rest are counted.
pub const MAX_LISTED_MIB: usize = 4096;
/// The GUID of the top snapshot when a descriptor names none, as both readers spell it.
pub const DEFAULT_TOP: &str = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";

/// What a reader does with a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum ReaderOutcome {
    /// It opens it and reads exactly the guest's bytes (the media size it reports included).
    Opens,
    /// It raises an error (at opening, or at a read).
    Refuses,
    /// It opens it but reads other bytes than the guest's somewhere (or reports another size).
    Misreads,
    /// The process dies of a signal.
    Crashes,
    /// It never returns (a loop without end; the drivers' timeout ends it).
    Hangs,
}

impl ReaderOutcome {
    /// `"opens"`, `"refuses"`, `"misreads"`, `"crashes"` or `"hangs"`.
    pub fn name(self) -> &'static str {
        match self {
            ReaderOutcome::Opens => "opens",
            ReaderOutcome::Refuses => "refuses",
            ReaderOutcome::Misreads => "misreads",
            ReaderOutcome::Crashes => "crashes",
            ReaderOutcome::Hangs => "hangs",
        }
    }
}

impl fmt::Display for ReaderOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one reader does with one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReaderPrediction {
    /// The outcome.
    pub outcome: ReaderOutcome,
    /// Its error (`refuses`: the reader's own text, see [`libphdi`] and [`dissect`] for the
    /// part kept), the signal (`crashes`), what it loops on (`hangs`); for `misreads`, what it
    /// reads instead.
    pub message: Option<String>,
    /// The media size it reports (bytes), when it gets that far.
    pub media_size: Option<u64>,
    /// The snapshot it takes as the top (braced GUID), when it gets that far.
    pub top: Option<String>,
    /// The MiBs (indices) whose bytes differ from the guest's, or that it cannot read; empty
    /// unless `misreads`. At most [`MAX_LISTED_MIB`].
    pub misread_mib: Vec<u64>,
    /// Misread MiBs past [`MAX_LISTED_MIB`], not listed.
    pub misread_mib_omitted: u64,
    /// The read size the disk was read with.
    pub read_size: u64,
}

/// How a model's (or a driver's) run of a reader ended before the comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An error raised, with its text.
    Refuses(String),
    /// A signal (its name).
    Crashes(String),
    /// A loop without end (what it loops on).
    Hangs(String),
}

/// What a reader read: the facts the drivers print, before they are compared with the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderRun {
    /// The media size it reported.
    pub media_size: Option<u64>,
    /// The top snapshot it took.
    pub top: Option<String>,
    /// One MD5 per MiB read (the last may cover fewer bytes): (bytes, digest).
    pub mibs: Vec<(u64, [u8; 16])>,
    /// A read came back short at this offset (reading stopped there).
    pub short: Option<u64>,
    /// How it ended, if not by reading to the end.
    pub failure: Option<Failure>,
}

/// The MD5 of each MiB of `size` bytes read through `read` in reads of `read_size` bytes (at
/// most [`MAX_BYTES`]); a short read stops it, as the drivers stop.
pub(crate) fn read_all(
    size: u64,
    read_size: u64,
    run: &mut ReaderRun,
    mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, Failure>,
) {
    let end = size.min(MAX_BYTES);
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0;
    while offset < end {
        let want = read_size.min(end - offset);
        let data = match read(offset, want) {
            Ok(d) => d,
            Err(f) => {
                run.failure = Some(f);
                return;
            }
        };
        pending.extend_from_slice(&data);
        while pending.len() as u64 >= MIB {
            run.mibs.push((MIB, Md5::digest(&pending[..MIB as usize]).into()));
            pending.drain(..MIB as usize);
        }
        offset += data.len() as u64;
        if (data.len() as u64) < want {
            if !pending.is_empty() {
                run.mibs.push((pending.len() as u64, Md5::digest(&pending).into()));
            }
            run.short = Some(offset);
            return;
        }
    }
    if !pending.is_empty() {
        run.mibs.push((pending.len() as u64, Md5::digest(&pending).into()));
    }
}

/// The guest's bytes, as MD5s per MiB (up to [`MAX_BYTES`]), and its size: what a reader must
/// read. `None` when this crate cannot read the disk (then only crashes, hangs, refusals and
/// short reads are told apart from `opens`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truth {
    /// The guest's size in bytes.
    pub size: u64,
    /// MD5 per MiB.
    pub mibs: Vec<(u64, [u8; 16])>,
}

impl Truth {
    /// Reads the disk at `path` (a bundle or a lone image) at its top snapshot.
    pub fn of(path: &Path) -> Option<Truth> {
        let disk = GuestDisk::open(path, None, BundleOptions::default()).ok()?;
        let size = disk.size();
        let mut run = ReaderRun::default();
        let mut failed = false;
        read_all(size, READ_SIZE, &mut run, |offset, len| {
            let mut buf = vec![0u8; len as usize];
            match disk.read_at(offset, &mut buf) {
                Ok(()) => Ok(buf),
                Err(e) => {
                    failed = true;
                    Err(Failure::Refuses(e.to_string()))
                }
            }
        });
        if failed {
            return None;
        }
        Some(Truth { size, mibs: run.mibs })
    }
}

/// Compares what a reader read with the guest's bytes.
pub fn classify(run: &ReaderRun, truth: Option<&Truth>, read_size: u64) -> ReaderPrediction {
    let mut p = ReaderPrediction {
        outcome: ReaderOutcome::Opens,
        message: None,
        media_size: run.media_size,
        top: run.top.clone(),
        misread_mib: Vec::new(),
        misread_mib_omitted: 0,
        read_size,
    };
    match &run.failure {
        Some(Failure::Refuses(m)) => {
            p.outcome = ReaderOutcome::Refuses;
            p.message = Some(m.clone());
            return p;
        }
        Some(Failure::Crashes(m)) => {
            p.outcome = ReaderOutcome::Crashes;
            p.message = Some(m.clone());
            return p;
        }
        Some(Failure::Hangs(m)) => {
            p.outcome = ReaderOutcome::Hangs;
            p.message = Some(m.clone());
            return p;
        }
        None => {}
    }
    let size = run.media_size.unwrap_or(0);
    let mut bad = Vec::new();
    let mut reasons = Vec::new();
    match truth {
        Some(t) => {
            let total = size.max(t.size).min(MAX_BYTES).div_ceil(MIB);
            for i in 0..total {
                if run.mibs.get(i as usize) != t.mibs.get(i as usize) {
                    bad.push(i);
                }
            }
            if size != t.size {
                reasons.push(format!("reports {size} bytes, the disk has {}", t.size));
            }
        }
        None => {
            if let Some(at) = run.short {
                let total = size.min(MAX_BYTES).div_ceil(MIB);
                bad.extend(at / MIB..total);
            }
        }
    }
    if let Some(at) = run.short {
        reasons.push(format!("a read comes back short at offset {at}"));
    }
    if !bad.is_empty() || !reasons.is_empty() {
        p.outcome = ReaderOutcome::Misreads;
        let zeros = |len: u64| -> [u8; 16] { Md5::digest(vec![0u8; len as usize]).into() };
        let read_bad: Vec<&(u64, [u8; 16])> = bad.iter().filter_map(|&i| run.mibs.get(i as usize)).collect();
        if !read_bad.is_empty() {
            if read_bad.iter().all(|(len, d)| *d == zeros(*len)) {
                reasons.insert(0, "reads zeros there instead of the disk's bytes".into());
            } else {
                reasons.insert(0, "reads other bytes there than the disk's (not zeros)".into());
            }
        }
        p.message = Some(reasons.join("; "));
        if bad.len() > MAX_LISTED_MIB {
            p.misread_mib_omitted = (bad.len() - MAX_LISTED_MIB) as u64;
            bad.truncate(MAX_LISTED_MIB);
        }
        p.misread_mib = bad;
    }
    p
}

/// How a reader is handed `path`: the bundle's folder and descriptor, or a lone image wrapped.
#[derive(Clone, Debug)]
pub(crate) enum Input {
    /// A folder, or a descriptor file (the folder is its parent).
    Bundle {
        /// The path as given.
        given: PathBuf,
    },
    /// A lone image, wrapped in a minimal bundle by the drivers.
    Lone {
        /// The image.
        image: PathBuf,
    },
}

impl Input {
    pub(crate) fn of(path: &Path) -> Input {
        if is_bundle(path) {
            Input::Bundle {
                given: path.to_path_buf(),
            }
        } else {
            Input::Lone {
                image: path.to_path_buf(),
            }
        }
    }
}

/// The descriptor the drivers write around a lone image (`scripts/readers/common.py`), from
/// its first 64 bytes: the header's sectors and cluster size in sectors.
pub(crate) fn wrapper_descriptor(image: &Path) -> String {
    let mut head = [0u8; 64];
    if let Ok(mut f) = std::fs::File::open(image) {
        use std::io::Read;
        let mut n = 0;
        while n < 64 {
            match f.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    }
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap()) as u64;
    let tracks = u32_at(28);
    let sectors = if &head[..16] == b"WithoutFreeSpace" {
        u32_at(36)
    } else {
        u64::from_le_bytes(head[36..44].try_into().unwrap())
    };
    let cylinders = sectors / (16 * 32);
    let sectors = sectors as u128;
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\">\n  <Disk_Parameters>\n    \
         <Disk_size>{sectors}</Disk_size>\n    <Cylinders>{cylinders}</Cylinders>\n    <Heads>16</Heads>\n    \
         <Sectors>32</Sectors>\n    <Padding>0</Padding>\n  </Disk_Parameters>\n  <StorageData>\n    <Storage>\n      \
         <Start>0</Start>\n      <End>{sectors}</End>\n      <Blocksize>{tracks}</Blocksize>\n      <Image>\n        \
         <GUID>{DEFAULT_TOP}</GUID>\n        <Type>Compressed</Type>\n        <File>image.hds</File>\n      </Image>\n    \
         </Storage>\n  </StorageData>\n  <Snapshots>\n    <Shot>\n      <GUID>{DEFAULT_TOP}</GUID>\n      \
         <ParentGUID>{{00000000-0000-0000-0000-000000000000}}</ParentGUID>\n    </Shot>\n  </Snapshots>\n\
         </Parallels_disk_image>\n"
    )
}

/// Where a reader finds the descriptor's text and the folder the files are relative to.
pub(crate) struct Opened {
    /// The descriptor's text, or the error reading it.
    pub text: std::io::Result<Vec<u8>>,
    /// The folder (as the reader spells it).
    pub dir: PathBuf,
    /// For a lone image: the image, standing for the wrapper's `image.hds`.
    pub lone: Option<PathBuf>,
}

impl Opened {
    pub(crate) fn of(input: &Input) -> Opened {
        match input {
            Input::Bundle { given } => {
                let (dir, desc) = if given.is_dir() {
                    (given.clone(), given.join(DESCRIPTOR_NAME))
                } else {
                    (given.parent().map(Path::to_path_buf).unwrap_or_default(), given.clone())
                };
                Opened {
                    text: std::fs::read(&desc),
                    dir,
                    lone: None,
                }
            }
            Input::Lone { image } => Opened {
                text: Ok(wrapper_descriptor(image).into_bytes()),
                dir: PathBuf::from("/wrapped"),
                lone: Some(image.clone()),
            },
        }
    }

    /// The file an image's `File` names, as the reader resolves it (`join`: how it joins).
    pub(crate) fn file(&self, join: impl FnOnce(&Path) -> PathBuf) -> PathBuf {
        match &self.lone {
            Some(image) => image.clone(),
            None => join(&self.dir),
        }
    }
}

/// The predictions of both readers for the disk at `path`.
pub fn predict_readers(path: &Path) -> (ReaderPrediction, ReaderPrediction) {
    let truth = Truth::of(path);
    (
        libphdi::predict_libphdi_with(path, truth.as_ref(), READ_SIZE),
        dissect::predict_dissect_with(path, truth.as_ref(), READ_SIZE),
    )
}
