//! Opening an image to read: a file or block device read at offsets, or a stream (`-` for
//! standard input, a pipe, a FIFO, a character device) read once with its data left out.

use std::fs::File;
use std::path::Path;

use parallels_image::{FileSource, Source, StreamSource};

use crate::output::Failure;

/// An opened input.
pub enum Input {
    /// Read where metadata is.
    File(FileSource),
    /// Read once, metadata held.
    Stream(StreamSource),
}

impl Input {
    /// The bytes, for the parser.
    pub fn source(&self) -> &dyn Source {
        match self {
            Input::File(f) => f,
            Input::Stream(s) => s,
        }
    }
}

/// Opens `path` (`-`: standard input) for reading.
pub fn open(path: &Path) -> Result<Input, Failure> {
    let file = if path.as_os_str() == "-" {
        match stdin_file() {
            Some(f) => f,
            None => return stream(std::io::stdin().lock(), path),
        }
    } else {
        File::open(path).map_err(|e| Failure::io(path, &e))?
    };
    let meta = file.metadata().map_err(|e| Failure::io(path, &e))?;
    if meta.is_file() || is_block_device(&meta) {
        return FileSource::new(file)
            .map(Input::File)
            .map_err(|e| Failure::io(path, &e));
    }
    if meta.is_dir() {
        return Err(Failure::at(path, "Is a directory"));
    }
    stream(file, path)
}

fn stream(reader: impl std::io::Read, path: &Path) -> Result<Input, Failure> {
    StreamSource::read(reader, StreamSource::DEFAULT_LIMIT)
        .map(Input::Stream)
        .map_err(|e| Failure::lib(path, &e))
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
