//! Validated pass-through: read a NAR, check every byte, write the same
//! archive out. For storing or forwarding NARs from untrusted sources
//! (a binary cache, a peer) without unpacking them; with a
//! [`crate::HashingWriter`] as the output it also yields narHash/narSize.

use std::io::{Read, Write};

use crate::encoder::NarEncoder;
use crate::error::Error;
use crate::reader::{Event, NarReader};

/// Copies the NAR read from `r` to `w`, re-encoding it event by event so
/// only a valid archive is ever fully written. Returns `w` and the size.
/// On error, `w` may hold a prefix of the archive.
pub fn copy_nar<R: Read, W: Write>(r: R, w: W) -> Result<(W, u64), Error> {
    let mut nar = NarReader::new(r);
    let mut enc = NarEncoder::new(w);
    while let Some(ev) = nar.next()? {
        match ev {
            Event::DirectoryStart => enc.directory_start()?,
            Event::Entry { name } => enc.entry(name)?,
            Event::Symlink { target } => enc.symlink(target)?,
            Event::DirectoryEnd => enc.directory_end()?,
            Event::File {
                executable,
                size,
                mut contents,
            } => enc
                .file(executable, size, &mut contents)
                .map_err(|e| match e {
                    // A read error inside the contents is the NAR's, not the output's.
                    Error::Write(io) => crate::error::from_io(io, Error::Write),
                    other => other,
                })?,
        }
    }
    enc.finish()
}
