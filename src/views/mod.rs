//! Zero-copy views over a [`Source`](crate::Source): where bytes come from (a slice, a file read
//! only where metadata is, a stream), the header, the extension, the bitmaps and the image.

pub mod bitmap;
pub mod extension;
pub mod header;
pub mod image;
pub mod source;
pub mod stream;
