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
//! - [`HashAlgo`], [`hash_path_with`], [`hash_reader`]: md5/sha1/sha512 too.
//!
//! Adding a path from a NAR stream, hashing it on the way (what a store does):
//!
//! ```
//! use std::io::BufReader;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let nar = b3_nar::Tree::dir([("bin", b3_nar::Tree::executable("#!/bin/sh\n"))]).to_nar()?;
//! # let dir = tempfile::tempdir()?;
//! # let dest = dir.path().join("out");
//! let stream = BufReader::new(&nar[..]); // e.g. a socket or a decompressor
//! let mut hashing = b3_nar::HashingReader::new(stream);
//! b3_nar::restore(&mut hashing, &dest)?; // atomic: all or nothing at `dest`
//! let (_, nar_hash) = hashing.finish_nar();
//! assert_eq!(nar_hash, b3_nar::hash_path(&dest)?);
//! println!("narHash {} narSize {}", nar_hash.to_typed_base32(), nar_hash.size);
//! # Ok(()) }
//! ```

mod algo;
mod async_io;
mod copy;
pub mod direct_io;
mod dump;
mod encoder;
mod error;
mod hash;
pub mod nixbase32;
mod os;
mod parser;
mod pipeline;
mod reader;
mod restore;
#[cfg(windows)]
mod restore_windows;
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
pub use restore::{restore, restore_with, RestoreOptions};

/// The SHA-256 NAR hash and NAR size of `path`, streaming (nothing is
/// written anywhere): what `nix-hash --type sha256 PATH` and
/// `nix-store --dump PATH | wc -c` compute.
pub fn hash_path(path: &std::path::Path) -> Result<NarHash, Error> {
    // Hashing runs on a second thread while this one walks and reads.
    let tw =
        pipeline::ThreadedWriter::new(HashingWriter::new(std::io::sink())).map_err(Error::Write)?;
    let (tw, _) = dump::dump_path_with(path, tw, pipeline::ThreadedWriter::copy_file)?;
    let w = tw.finish().map_err(Error::Write)?;
    Ok(w.finish_nar().1)
}

/// [`hash_path`] on the calling thread only (no helper thread).
pub fn hash_path_single_threaded(path: &std::path::Path) -> Result<NarHash, Error> {
    let (w, _) = dump_path(path, HashingWriter::new(std::io::sink()))?;
    Ok(w.finish_nar().1)
}
