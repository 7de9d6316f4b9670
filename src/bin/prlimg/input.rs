//! Opening an image to read: a file or block device read at offsets, or a stream (`-` for
//! standard input, a pipe, a FIFO, a character device) read once with its data left out.

use std::fs::File;
use std::path::Path;

use crate::output::Failure;

pub use parallels_image::report::Input;

/// Opens `path` (`-`: standard input) for reading.
pub fn open(path: &Path) -> Result<Input, Failure> {
    Input::open_or_stdin(path).map_err(|e| crate::output::check_failure(&e))
}

/// Standard input as a file of its own (a duplicate of descriptor 0), to learn what it is.
#[cfg(unix)]
fn stdin_file() -> Option<File> {
    use std::os::fd::AsFd;
    std::io::stdin().as_fd().try_clone_to_owned().ok().map(File::from)
}

#[cfg(not(unix))]
fn stdin_file() -> Option<File> {
    None
}

#[cfg(unix)]
pub fn is_block_device(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
}

#[cfg(not(unix))]
pub fn is_block_device(_: &std::fs::Metadata) -> bool {
    false
}

/// `path` for a command that reads its input at offsets by name (`convert`, `map`, `corrupt`):
/// `-` is standard input when that is a file or block device (redirected from it: read through
/// `/dev/stdin`); a pipe or other stream is refused, saying what to do.
pub fn seekable(path: &Path, command: &str) -> Result<std::path::PathBuf, Failure> {
    if path.as_os_str() != "-" {
        return Ok(path.to_path_buf());
    }
    let meta = stdin_file().and_then(|f| f.metadata().ok());
    match meta {
        Some(m) if m.is_file() || is_block_device(&m) => Ok(Path::new("/dev/stdin").to_path_buf()),
        _ => Err(Failure::at(
            path,
            format!(
                "standard input is a pipe or stream; `prlimg {command}` reads its source at offsets: \
                 save it to a file first (or redirect stdin from the file)"
            ),
        )),
    }
}

/// All of standard input (what `-` names), refused past `max` bytes, for a command that holds
/// its input in memory (`mutate`, `differential --from`).
pub fn read_stdin(path: &Path, max: u64, command: &str) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::io(path, &e))?;
    if bytes.len() as u64 > max {
        return Err(Failure::at(
            path,
            format!("is more than {max} bytes; {command} holds its input in memory and takes at most {max}"),
        ));
    }
    Ok(bytes)
}

/// `-f FORMAT` of the commands that read an image, spelled as `qemu-img` spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFormat {
    /// A bundle if the path is a folder or XML, else a Parallels image.
    #[default]
    Auto,
    /// A Parallels image or bundle (what `auto` finds; named for qemu-img's `-f parallels`).
    Parallels,
    /// A raw disk image: `info` and `map` describe the file as the guest's bytes, `convert`
    /// copies it; the commands that read Parallels structure refuse it.
    Raw,
}

/// The refusal of `-f raw` by a command that reads Parallels structure only.
pub fn refuse_raw(path: &Path, format: ReadFormat, command: &str, why: &str) -> Result<(), Failure> {
    if format == ReadFormat::Raw {
        return Err(Failure::at(
            path,
            format!("-f raw: {why}; `prlimg {command}` reads Parallels images and bundles (info, map and convert read raw files)"),
        ));
    }
    Ok(())
}

/// A raw file's guest view for `info -f raw` and `map -f raw`: its length and the byte ranges
/// that may hold data (the rest are holes, read as zeros).
pub fn raw_ranges(path: &Path, command: &str) -> Result<(u64, Vec<(u64, u64)>), Failure> {
    let path = &seekable(path, command)?;
    let file = File::open(path).map_err(|e| Failure::io(path, &e))?;
    let meta = file.metadata().map_err(|e| Failure::io(path, &e))?;
    if meta.is_dir() {
        return Err(Failure::at(path, "Is a directory"));
    }
    let ranges = parallels_image::bundle::file_data_ranges(&file).map_err(|e| Failure::io(path, &e))?;
    Ok((meta.len(), ranges))
}
