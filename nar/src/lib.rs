//! b3-nar: the Nix ARchive format, streaming both ways.
//!
//! Owns: writing NARs from a filesystem path or an in-memory tree, a pull-based
//! reader that validates every byte (sync and async), restoring a NAR into a
//! directory atomically, and hashing a NAR while it streams. Pure format code:
//! no store, no database, no network.
//!
//! Entry points:
//! - [`dump_path`] / [`dump_path_async`]: `nix-store --dump`.
//! - [`NarReader`] / [`AsyncNarReader`]: validated event streams.
//! - [`restore`] / [`restore_async`]: `nix-store --restore`, atomically.
//! - [`hash_path`]: `nix-hash --type sha256` (+ NAR size) without writing.
//! - [`NarEncoder`]: write a NAR node by node from any source.
//! - [`copy_nar`]: validate a NAR while copying it byte for byte.
//! - [`HashingWriter`], [`HashingReader`], [`NarHash`], [`nixbase32`].

mod algo;
mod async_io;
mod copy;
mod dump;
mod encoder;
mod error;
mod hash;
pub mod nixbase32;
mod parser;
mod pipeline;
mod reader;
mod restore;
pub mod wire;

pub use algo::{hash_path_with, hash_reader, AnyHash, HashAlgo, Hasher, UnknownAlgo};
pub use async_io::{
    dump_path_async, encode_tree_async, restore_async, AsyncEvent, AsyncFileReader, AsyncNarReader,
};
pub use copy::copy_nar;
pub use dump::{dump_path, Tree};
pub use encoder::NarEncoder;
pub use error::{Error, Reason};
pub use hash::{HashingReader, HashingWriter, NarHash};
pub use reader::{Event, FileReader, Limits, NarReader};
pub use restore::restore;

/// The SHA-256 NAR hash and NAR size of `path`, streaming (nothing is
/// written anywhere): what `nix-hash --type sha256 PATH` and
/// `nix-store --dump PATH | wc -c` compute.
pub fn hash_path(path: &std::path::Path) -> Result<NarHash, Error> {
    // Hashing runs on a second thread while this one walks and reads.
    let tw =
        pipeline::ThreadedWriter::new(HashingWriter::new(std::io::sink())).map_err(Error::Write)?;
    let (tw, _) = dump_path(path, tw)?;
    let w = tw.finish().map_err(Error::Write)?;
    Ok(w.finish_nar().1)
}

/// [`hash_path`] on the calling thread only (no helper thread).
pub fn hash_path_single_threaded(path: &std::path::Path) -> Result<NarHash, Error> {
    let (w, _) = dump_path(path, HashingWriter::new(std::io::sink()))?;
    Ok(w.finish_nar().1)
}
