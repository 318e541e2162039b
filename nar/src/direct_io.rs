//! Writing large files with direct I/O (`O_DIRECT`), shared by NAR restores
//! and the store's ingest of source trees.
//!
//! A file's whole-block part goes straight to the disk: no copy into fresh
//! page-cache pages (most of the cost of writing a large file on this
//! project's VMs) and no writeback afterwards, so a later `fsync` writes
//! only the inode and the last partial block. Direct writes need an aligned
//! buffer, offset and length; the tail, and everything after a refused or
//! short write, goes through the page cache instead. Linux only; elsewhere
//! [`set_direct`] reports that direct I/O did not take effect.

use std::fs::File;
use std::io::{self, Write};

/// Bytes per direct write: large enough that the device sees few, long
/// requests.
pub const CHUNK: usize = 1 << 20;

/// Alignment of direct I/O buffers, offsets and lengths (the page size, a
/// multiple of every disk's logical block size).
pub const ALIGN: usize = 4096;

/// Turns direct I/O on or off for `f`; whether that took effect (a
/// filesystem without direct I/O refuses it, and `f` stays buffered).
pub fn set_direct(f: &File, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::OFlags;
        let Ok(flags) = rustix::fs::fcntl_getfl(f) else {
            return false;
        };
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(f, flags).is_ok()
            && rustix::fs::fcntl_getfl(f).is_ok_and(|g| g.contains(OFlags::DIRECT) == on)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        !on
    }
}

/// A buffer of [`CHUNK`] bytes at an [`ALIGN`]ed address.
pub struct AlignedChunk {
    mem: Vec<u8>,
    start: usize,
}

impl Default for AlignedChunk {
    fn default() -> Self {
        AlignedChunk::new()
    }
}

impl AlignedChunk {
    pub fn new() -> AlignedChunk {
        let mem = vec![0u8; CHUNK + ALIGN];
        // An offset past the slack cannot happen for bytes; were it to,
        // the chunk would only be unaligned and written buffered.
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedChunk { mem, start }
    }

    /// The chunk's [`CHUNK`] bytes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + CHUNK]
    }

    /// Its first `len` bytes.
    pub fn data(&self, len: usize) -> &[u8] {
        &self.mem[self.start..self.start + len]
    }
}

/// Writes `data` at `f`'s offset: the whole blocks directly while `*direct`
/// holds and `data` is aligned, the rest through the page cache. Once
/// anything went buffered the offset may be unaligned, so direct I/O is
/// turned off for `f` and `*direct` cleared.
pub fn write(f: &mut File, data: &[u8], direct: &mut bool) -> io::Result<()> {
    let mut done = 0;
    if *direct {
        let whole = if (data.as_ptr() as usize).is_multiple_of(ALIGN) {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        while done < whole {
            match f.write(&data[done..whole]) {
                Ok(n) if n > 0 && n % ALIGN == 0 => done += n,
                // A short, unaligned write: the offset no longer suits
                // direct I/O.
                Ok(n) => {
                    done += n;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused (an odd block size, a filesystem that takes the
                // flag but not the I/O): go on buffered.
                Err(e) if e.raw_os_error() == Some(EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        if done < data.len() {
            *direct = false;
            if !set_direct(f, false) {
                return Err(io::Error::other("cannot leave direct I/O mode"));
            }
        }
    }
    f.write_all(&data[done..])
}

/// The error number of a refused direct write (`EINVAL` on Linux).
const EINVAL: i32 = 22;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn aligned_and_unaligned_pieces_land_exactly_and_direct_mode_ends_at_the_first_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        let mut direct = set_direct(&f, true);
        let want = pattern(3 * ALIGN + 123);
        let mut chunk = AlignedChunk::new();
        // Two whole blocks (direct if the filesystem allows it), then a
        // block and a tail (buffered from the tail on).
        chunk.space()[..2 * ALIGN].copy_from_slice(&want[..2 * ALIGN]);
        write(&mut f, chunk.data(2 * ALIGN), &mut direct).unwrap();
        let rest = &want[2 * ALIGN..];
        chunk.space()[..rest.len()].copy_from_slice(rest);
        write(&mut f, chunk.data(rest.len()), &mut direct).unwrap();
        assert!(!direct, "a tail ends direct mode");
        drop(f);
        let mut got = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unaligned_buffer_is_written_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        let mut direct = set_direct(&f, true);
        let want = pattern(2 * ALIGN + 1);
        let mut chunk = AlignedChunk::new();
        chunk.space()[1..=want.len()].copy_from_slice(&want);
        write(&mut f, &chunk.data(want.len() + 1)[1..], &mut direct).unwrap();
        assert!(!direct);
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), want);
    }
}
