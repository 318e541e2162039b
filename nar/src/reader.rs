//! The synchronous NAR reader: a pull-based event stream over any
//! `io::Read`. It reads exactly the bytes of the archive (never past its end,
//! so a NAR embedded in a larger stream can be followed by other data) and
//! hands file contents out as a bounded reader, so memory stays constant
//! whatever the archive size. Wrap unbuffered sources in a `BufReader`.

use std::io::{self, Read};

use crate::error::{from_io, into_io, Error, Reason};
use crate::parser::{Parser, Step, Want};
use crate::wire::{padding, DEFAULT_MAX_DEPTH};

/// One step of a NAR, in archive order. An [`Event::Entry`] is followed by
/// exactly one node: a `File`, a `Symlink`, or a `DirectoryStart` … matching
/// `DirectoryEnd`. The root node has no `Entry`.
#[derive(Debug)]
pub enum Event<'a, R> {
    DirectoryStart,
    /// A directory entry; names arrive strictly sorted by raw bytes.
    Entry {
        name: &'a [u8],
    },
    /// A regular file. Reading `contents` is optional: whatever is left
    /// unread is skipped by the next call to [`NarReader::next`].
    File {
        executable: bool,
        size: u64,
        contents: FileReader<'a, R>,
    },
    Symlink {
        target: &'a [u8],
    },
    DirectoryEnd,
}

/// Limits a reader enforces beyond the fixed token bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest directory nesting accepted.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Pull-based NAR reader over `R`.
pub struct NarReader<R> {
    r: R,
    offset: u64,
    parser: Parser,
    /// File bytes not yet handed out.
    remaining: u64,
    /// Zero bytes owed after the current file contents.
    pad: usize,
    /// A `File` event was handed out and its contents are not finished yet.
    file_open: bool,
    buf: Vec<u8>,
}

/// Contents of the current regular file: yields exactly `size` bytes.
#[derive(Debug)]
pub struct FileReader<'a, R> {
    nar: &'a mut NarReader<R>,
}

impl<R> std::fmt::Debug for NarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NarReader")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

enum Kind {
    DirStart,
    Entry,
    File { executable: bool, size: u64 },
    Symlink,
    DirEnd,
}

impl<R: Read> NarReader<R> {
    pub fn new(r: R) -> Self {
        Self::with_limits(r, Limits::default())
    }

    pub fn with_limits(r: R, limits: Limits) -> Self {
        NarReader {
            r,
            offset: 0,
            parser: Parser::new(limits.max_depth),
            remaining: 0,
            pad: 0,
            file_open: false,
            buf: Vec::with_capacity(256),
        }
    }

    /// Bytes of the archive consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Current directory nesting (0 at the root).
    pub fn depth(&self) -> usize {
        self.parser.depth()
    }

    /// Gives the underlying reader back (positioned right after what was read).
    pub fn into_inner(self) -> R {
        self.r
    }

    fn invalid(&self, offset: u64, reason: Reason) -> Error {
        Error::Invalid { offset, reason }
    }

    fn read_exact(&mut self, buf_len: usize) -> Result<(), Error> {
        self.buf.resize(buf_len, 0);
        let mut done = 0;
        while done < buf_len {
            match self.r.read(&mut self.buf[done..]) {
                Ok(0) => {
                    return Err(self.invalid(self.offset + done as u64, Reason::Truncated));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let offset = self.offset + done as u64;
                    return Err(from_io(e, |source| Error::Read { offset, source }));
                }
            }
        }
        self.offset += buf_len as u64;
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, Error> {
        self.read_exact(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[..8]);
        Ok(u64::from_le_bytes(b))
    }

    fn check_padding(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        let at = self.offset;
        self.read_exact(n)?;
        if let Some(i) = self.buf[..n].iter().position(|&b| b != 0) {
            return Err(self.invalid(at + i as u64, Reason::NonZeroPadding));
        }
        Ok(())
    }

    /// Reads one token into `self.buf`.
    fn read_token(&mut self, max: u64, what: &'static str) -> Result<u64, Error> {
        let at = self.offset;
        let len = self.read_u64()?;
        if len > max {
            let reason = if what == "magic" {
                Reason::BadMagic
            } else {
                Reason::TooLong { what, len, max }
            };
            return Err(self.invalid(at, reason));
        }
        self.read_exact(len as usize)?;
        let pad = padding(len);
        if pad > 0 {
            let keep = std::mem::take(&mut self.buf);
            let r = self.check_padding(pad);
            self.buf = keep;
            self.buf.truncate(len as usize);
            r?;
        }
        Ok(at)
    }

    /// Skips unread contents of the previous file and checks its padding.
    fn finish_file(&mut self) -> Result<(), Error> {
        while self.remaining > 0 {
            let n = self.remaining.min(64 * 1024) as usize;
            self.read_exact(n)?;
            self.remaining -= n as u64;
        }
        let pad = std::mem::take(&mut self.pad);
        self.check_padding(pad)?;
        self.parser.contents_done();
        Ok(())
    }

    /// The next event, or `None` once the root node is complete.
    // Not `Iterator::next`: events borrow the reader (a lending iterator).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event<'_, R>>, Error> {
        let kind = loop {
            match self.parser.want() {
                Want::Done => return Ok(None),
                Want::Contents if self.file_open => {
                    self.finish_file()?;
                    self.file_open = false;
                }
                Want::Contents => {
                    let size = self.read_u64()?;
                    self.remaining = size;
                    self.pad = padding(size);
                    self.file_open = true;
                    break Kind::File {
                        executable: self.parser.executable(),
                        size,
                    };
                }
                Want::Token { max, what } => {
                    let at = self.read_token(max, what)?;
                    match self.parser.feed(&self.buf) {
                        Err(reason) => return Err(self.invalid(at, reason)),
                        Ok(Step::More) => {}
                        Ok(Step::DirectoryStart) => break Kind::DirStart,
                        Ok(Step::Entry) => break Kind::Entry,
                        Ok(Step::Symlink) => break Kind::Symlink,
                        Ok(Step::DirectoryEnd) => break Kind::DirEnd,
                    }
                }
            }
        };
        Ok(Some(match kind {
            Kind::DirStart => Event::DirectoryStart,
            Kind::Entry => Event::Entry { name: &self.buf },
            Kind::Symlink => Event::Symlink { target: &self.buf },
            Kind::DirEnd => Event::DirectoryEnd,
            Kind::File { executable, size } => Event::File {
                executable,
                size,
                contents: FileReader { nar: self },
            },
        }))
    }

    /// Reads the whole archive, discarding it (validation only).
    pub fn skip_all(&mut self) -> Result<(), Error> {
        while self.next()?.is_some() {}
        Ok(())
    }
}

impl<R: Read> FileReader<'_, R> {
    /// Bytes of this file not yet read.
    pub fn remaining(&self) -> u64 {
        self.nar.remaining
    }

    /// Reads this file's contents, reporting NAR errors as [`Error`].
    pub fn read_nar(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let nar = &mut *self.nar;
        if nar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = (buf.len() as u64).min(nar.remaining) as usize;
        loop {
            match nar.r.read(&mut buf[..max]) {
                Ok(0) => {
                    return Err(Error::Invalid {
                        offset: nar.offset,
                        reason: Reason::Truncated,
                    })
                }
                Ok(n) => {
                    nar.offset += n as u64;
                    nar.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let offset = nar.offset;
                    return Err(from_io(e, |source| Error::Read { offset, source }));
                }
            }
        }
    }
}

impl<R: Read> Read for FileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_nar(buf).map_err(into_io)
    }
}
