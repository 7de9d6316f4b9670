//! Writing an output file carefully: aside, then linked or renamed into place.
//!
//! - The new file is written where nothing can see it: on Linux an unnamed file (`O_TMPFILE`)
//!   in the output's folder, which the kernel frees if the process dies at any point (even by
//!   `SIGKILL`); elsewhere, or where the file system has no unnamed files, a hidden
//!   `.prlimg-*.tmp` file that [`abandon_outputs`] removes (call it from a signal handler
//!   thread, as `prlimg` does for `SIGINT`, `SIGTERM` and `SIGHUP`).
//! - The file and then its folder are flushed to stable storage (`fsync`) before the file gets
//!   its name, so a crash leaves either the old file or the whole new one.
//! - Only a regular file is ever replaced, and only when asked ([`OutputOptions::overwrite`]).
//!   A device node, FIFO, socket or folder is never replaced. A symbolic link is refused unless
//!   [`OutputOptions::follow_symlink`] asks to write the file it points to; the link stays.
//! - The new file's permissions are `0o666` less the umask (as `qemu-img create` gives), or the
//!   ones asked for ([`OutputOptions::mode`], e.g. those of a copied input).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::error::OutputError;
use crate::error::{Error, Result};

/// How [`write_atomically`] may treat the output path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Replace an existing regular file (never anything else).
    pub overwrite: bool,
    /// When the path is a symbolic link, write the file it points to (which then follows the
    /// other rules: created if absent, replaced only with `overwrite`); the link is kept.
    /// Without this, a symbolic link is refused.
    pub follow_symlink: bool,
    /// Permission bits of the new file (Unix). `None`: `0o666` less the process umask.
    pub mode: Option<u32>,
}

/// Named temporary files and folders being written, and whether outputs were abandoned.
struct Pending {
    files: Vec<PathBuf>,
    folders: Vec<PathBuf>,
    abandoned: bool,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    files: Vec::new(),
    folders: Vec::new(),
    abandoned: false,
});

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every named temporary file an unfinished [`write_atomically`] holds, and every
/// temporary folder an unfinished bundle write ([`write_bundle_dir`](crate::bundle::write_bundle_dir))
/// holds, and makes later attempts to put an output in place fail with
/// [`OutputError::Interrupted`]. For a handler of `SIGINT`/`SIGTERM`/`SIGHUP` running on its own
/// thread, before the process exits: unnamed temporary files need nothing, the kernel frees
/// them. Returns how many files and folders it removed.
pub fn abandon_outputs() -> usize {
    let mut p = pending();
    p.abandoned = true;
    let files = std::mem::take(&mut p.files);
    let folders = std::mem::take(&mut p.folders);
    let mut removed = files.iter().filter(|f| fs::remove_file(f).is_ok()).count();
    for dir in &folders {
        // The writer may add a file while the folder is being emptied: try again until it is
        // gone (once gone, the writer's next file fails to be created).
        for _ in 0..8 {
            if fs::remove_dir_all(dir).is_ok() || fs::symlink_metadata(dir).is_err() {
                removed += 1;
                break;
            }
        }
    }
    removed
}

/// Makes `dir`, a temporary folder about to be filled, one that [`abandon_outputs`] removes.
/// Fails with [`OutputError::Interrupted`] (naming `target`) when outputs were abandoned.
pub(crate) fn hold_folder(dir: &Path, target: &Path) -> Result<()> {
    let mut p = pending();
    if p.abandoned {
        return Err(OutputError::Interrupted {
            path: target.to_path_buf(),
        }
        .into());
    }
    p.folders.push(dir.to_path_buf());
    Ok(())
}

/// Puts the held temporary folder `dir` in place by `place` (a rename), unless outputs were
/// abandoned meanwhile ([`OutputError::Interrupted`], naming `target`); either way `dir` is
/// no longer held. `place` runs under the lock [`abandon_outputs`] takes, so a folder is either
/// removed by it or renamed, never half of each.
pub(crate) fn place_folder<T>(dir: &Path, target: &Path, place: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut p = pending();
    if p.abandoned {
        return Err(OutputError::Interrupted {
            path: target.to_path_buf(),
        }
        .into());
    }
    p.folders.retain(|f| f != dir);
    place()
}

/// Forgets the held temporary folder `dir` (after a failure that removed it).
pub(crate) fn release_folder(dir: &Path) {
    pending().folders.retain(|f| f != dir);
}

/// Makes `dir`, a folder this process has just created to fill with outputs (`prlimg mutate`'s
/// and `corpus`'s), one that [`abandon_outputs`] removes with everything in it, until
/// [`release_output_folder`] says it is complete.
///
/// Errors: [`OutputError::Interrupted`] when outputs were abandoned already.
pub fn hold_output_folder(dir: &Path) -> Result<()> {
    hold_folder(dir, dir)
}

/// The folder held by [`hold_output_folder`] is complete: [`abandon_outputs`] leaves it.
pub fn release_output_folder(dir: &Path) {
    release_folder(dir);
}

/// The file a path names after following symbolic links (`follow`), or the refusal. A path
/// whose last component is absent is fine (it will be created).
fn resolve(path: &Path, follow: bool) -> Result<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(at),
            Err(e) => return Err(Error::Io(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&at)?;
            if !follow {
                return Err(OutputError::Symlink {
                    path: path.to_path_buf(),
                    target,
                }
                .into());
            }
            at = match at.parent() {
                Some(dir) => dir.join(&target),
                None => target,
            };
            continue;
        }
        if ft.is_file() {
            return Ok(at);
        }
        return Err(OutputError::NotRegular {
            path: at,
            kind: kind_of(&ft),
        }
        .into());
    }
    Err(OutputError::SymlinkLoop {
        path: path.to_path_buf(),
    }
    .into())
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        return "folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_socket() {
            return "socket";
        }
    }
    "special file"
}

/// The folder holding `path` (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes a new file at `path` by running `write` on a file nobody else sees, then putting it
/// in place (see the module docs for what "carefully" means). `write` gets an empty file.
///
/// Errors: [`Error::Output`] when the path may not be written ([`OutputError`] says why),
/// [`Error::Io`] when writing fails, or whatever `write` returns. On any error nothing is left
/// behind and an existing file is untouched.
pub fn write_atomically<T>(
    path: &Path,
    options: &OutputOptions,
    write: impl FnOnce(&mut File) -> Result<T>,
) -> Result<T> {
    let target = resolve(path, options.follow_symlink)?;
    if !options.overwrite && fs::symlink_metadata(&target).is_ok() {
        return Err(OutputError::Exists { path: target }.into());
    }
    let dir = folder_of(&target).to_path_buf();
    #[cfg(target_os = "linux")]
    if let Some(file) = unnamed::create(&dir, options)? {
        return unnamed::finish(file, &target, &dir, options, write);
    }
    named(&target, &dir, options, write)
}

/// [`write_atomically`] with the default options: replaces an existing regular file only when
/// `overwrite`, refuses symbolic links, mode from the umask.
pub fn write_file_atomically<T>(path: &Path, overwrite: bool, write: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let options = OutputOptions {
        overwrite,
        ..OutputOptions::default()
    };
    write_atomically(path, &options, write)
}

/// The portable way: a hidden named file beside the output, renamed into place.
fn named<T>(
    target: &Path,
    dir: &Path,
    options: &OutputOptions,
    write: impl FnOnce(&mut File) -> Result<T>,
) -> Result<T> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".prlimg-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Given to open(2), so the umask applies (an explicit mode is set exactly below).
        builder.permissions(fs::Permissions::from_mode(options.mode.unwrap_or(0o666)));
    }
    let mut tmp = {
        let mut p = pending();
        if p.abandoned {
            return Err(OutputError::Interrupted {
                path: target.to_path_buf(),
            }
            .into());
        }
        let tmp = builder.tempfile_in(dir)?;
        p.files.push(tmp.path().to_path_buf());
        tmp
    };
    let forget = |name: &Path| pending().files.retain(|f| f != name);
    let result = (|| {
        let value = write(tmp.as_file_mut())?;
        set_mode(tmp.as_file(), options)?;
        tmp.as_file().sync_all()?;
        Ok(value)
    })();
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            forget(tmp.path());
            return Err(e);
        }
    };
    let name = tmp.path().to_path_buf();
    let mut p = pending();
    if p.abandoned {
        return Err(OutputError::Interrupted {
            path: target.to_path_buf(),
        }
        .into());
    }
    let placed = if options.overwrite {
        tmp.persist(target).map(drop)
    } else {
        tmp.persist_noclobber(target).map(drop)
    };
    p.files.retain(|f| *f != name);
    drop(p);
    placed.map_err(|e| refused_or_io(e.error, target))?;
    sync_folder(dir)?;
    Ok(value)
}

/// `AlreadyExists` from a no-clobber rename or link is the output existing after all.
fn refused_or_io(e: io::Error, target: &Path) -> Error {
    if e.kind() == io::ErrorKind::AlreadyExists {
        OutputError::Exists {
            path: target.to_path_buf(),
        }
        .into()
    } else {
        Error::Io(e)
    }
}

fn set_mode(file: &File, options: &OutputOptions) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(mode) = options.mode {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (file, options);
    Ok(())
}

/// Flushes a folder's entries to stable storage (Unix; elsewhere the rename is what there is).
fn sync_folder(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Linux: an unnamed file (`O_TMPFILE`) linked in once complete.
#[cfg(target_os = "linux")]
mod unnamed {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use rustix::fs::{linkat, openat, AtFlags, Mode, OFlags, CWD};
    use rustix::io::Errno;

    use super::{pending, refused_or_io, set_mode, sync_folder, OutputError, OutputOptions};
    use crate::error::Result;

    /// An unnamed file in `dir`, or `None` where there is none to be had (the file system does
    /// not support it, or `/proc` is not there to link it in by).
    pub(super) fn create(dir: &Path, options: &OutputOptions) -> Result<Option<File>> {
        if std::env::var_os("PRLIMG_NAMED_TEMPORARY").is_some() || !Path::new("/proc/self/fd").is_dir() {
            return Ok(None);
        }
        let mode = Mode::from_bits_truncate(options.mode.unwrap_or(0o666));
        match openat(CWD, dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, mode) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => Ok(None),
            Err(e) => Err(io::Error::from(e).into()),
        }
    }

    pub(super) fn finish<T>(
        mut file: File,
        target: &Path,
        dir: &Path,
        options: &OutputOptions,
        write: impl FnOnce(&mut File) -> Result<T>,
    ) -> Result<T> {
        let value = write(&mut file)?;
        set_mode(&file, options)?;
        file.sync_all()?;
        let me = format!("/proc/self/fd/{}", file.as_raw_fd());
        let link = |to: &Path| linkat(CWD, me.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from);
        let mut p = pending();
        if p.abandoned {
            return Err(OutputError::Interrupted {
                path: target.to_path_buf(),
            }
            .into());
        }
        if !options.overwrite {
            // linkat never replaces: the check for an existing file and the naming are one step.
            link(target).map_err(|e| refused_or_io(e, target))?;
        } else {
            // Linked under a hidden name first (cleaned up if interrupted), then renamed over.
            let name = loop {
                let name = dir.join(format!(".prlimg-{:016x}.tmp", rand_u64()));
                match link(&name) {
                    Ok(()) => break name,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            p.files.push(name.clone());
            let renamed = std::fs::rename(&name, target);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&name);
            }
            p.files.retain(|f| *f != name);
            renamed?;
        }
        drop(p);
        sync_folder(dir)?;
        Ok(value)
    }

    /// A name suffix: not secret, only unlikely to be taken (a clash just tries again).
    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
    }
}
