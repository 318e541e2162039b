//! The low-level NAR writer: callers describe a tree node by node and the
//! encoder writes the exact bytes `nix-store --dump` would, checking grammar
//! order, names and byte-sorted entries as it goes so it can only produce
//! archives the reader accepts.

use std::io::{self, Read, Write};

use crate::error::{show, Error};
use crate::parser::{check_name, check_target};
use crate::wire::{padding, put_str, MAGIC};

/// Size of the copy buffer for file contents.
pub(crate) const COPY_BUF: usize = 256 * 1024;
/// Contents below this size are staged with the tokens instead of being
/// written on their own (fewer writes for trees of small files).
const SMALL: u64 = 4096;

/// Streaming NAR encoder over any `io::Write`. Small tokens are staged in an
/// internal buffer, so unbuffered writers are fine.
pub struct NarEncoder<W: Write> {
    w: W,
    /// Staged small tokens, flushed before file contents and at the end.
    out: Vec<u8>,
    /// One frame per open directory: last entry name written.
    dirs: Vec<Option<Vec<u8>>>,
    /// A node may be written now (at the root, or right after an entry).
    expect_node: bool,
    done: bool,
    written: u64,
    copy_buf: Vec<u8>,
}

impl<W: Write> NarEncoder<W> {
    /// Starts an archive (writes the magic).
    pub fn new(w: W) -> Self {
        let mut out = Vec::with_capacity(8 * 1024);
        put_str(&mut out, MAGIC);
        NarEncoder {
            w,
            out,
            dirs: Vec::new(),
            expect_node: true,
            done: false,
            written: 0,
            copy_buf: Vec::new(),
        }
    }

    fn flush_out(&mut self) -> Result<(), Error> {
        if !self.out.is_empty() {
            self.w.write_all(&self.out).map_err(Error::Write)?;
            self.written += self.out.len() as u64;
            self.out.clear();
        }
        Ok(())
    }

    fn begin_node(&mut self, kind: &[u8]) -> Result<(), Error> {
        if !self.expect_node || self.done {
            return Err(Error::Usage(
                "a node must be the root or follow an entry".into(),
            ));
        }
        self.expect_node = false;
        put_str(&mut self.out, b"(");
        put_str(&mut self.out, b"type");
        put_str(&mut self.out, kind);
        Ok(())
    }

    fn end_node(&mut self) -> Result<(), Error> {
        put_str(&mut self.out, b")");
        if self.dirs.is_empty() {
            self.done = true;
        } else {
            put_str(&mut self.out, b")"); // closes the entry
        }
        if self.out.len() >= 64 * 1024 {
            self.flush_out()?;
        }
        Ok(())
    }

    /// Writes a regular file, copying exactly `size` bytes from `contents`.
    /// Fails if `contents` ends early (the archive would be corrupt).
    pub fn file(
        &mut self,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), Error> {
        self.file_header(executable, size)?;
        let short = |left: u64| {
            Error::Write(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file contents ended {left} bytes before the announced size {size}"),
            ))
        };
        if size < SMALL {
            // Small contents join the staged tokens: one write per batch.
            let start = self.out.len();
            self.out.resize(start + size as usize, 0);
            let mut done = 0usize;
            while done < size as usize {
                match contents.read(&mut self.out[start + done..]) {
                    Ok(0) => return Err(short(size - done as u64)),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::Write(e)),
                }
            }
            return self.trailer(size);
        }
        // file_header flushed the staged tokens: contents go straight out.
        if self.copy_buf.is_empty() {
            self.copy_buf = vec![0u8; COPY_BUF];
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(self.copy_buf.len() as u64) as usize;
            let n = match contents.read(&mut self.copy_buf[..want]) {
                Ok(0) => return Err(short(left)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Write(e)),
            };
            self.w
                .write_all(&self.copy_buf[..n])
                .map_err(Error::Write)?;
            left -= n as u64;
        }
        self.written += size;
        self.trailer(size)
    }

    /// Writes a regular file whose contents are in memory.
    pub fn file_bytes(&mut self, executable: bool, contents: &[u8]) -> Result<(), Error> {
        self.file_header(executable, contents.len() as u64)?;
        if (contents.len() as u64) < SMALL {
            self.out.extend_from_slice(contents);
        } else {
            self.w.write_all(contents).map_err(Error::Write)?;
            self.written += contents.len() as u64;
        }
        self.trailer(contents.len() as u64)
    }

    /// Writes the header of a regular file; the caller then writes exactly
    /// `size` bytes with [`NarEncoder::contents_writer`] and calls
    /// [`NarEncoder::file_trailer`]. For callers that produce contents by
    /// pushing (e.g. from an async source or a worker thread).
    pub fn file_header(&mut self, executable: bool, size: u64) -> Result<(), Error> {
        self.begin_node(b"regular")?;
        if executable {
            put_str(&mut self.out, b"executable");
            put_str(&mut self.out, b"");
        }
        put_str(&mut self.out, b"contents");
        self.out.extend_from_slice(&size.to_le_bytes());
        if size >= SMALL {
            self.flush_out()?;
        }
        Ok(())
    }

    /// The raw output, for writing file contents after [`NarEncoder::file_header`].
    /// Flushes staged tokens first. Bytes written here must be reported
    /// through [`NarEncoder::file_trailer`].
    pub fn contents_writer(&mut self) -> Result<&mut W, Error> {
        self.flush_out()?;
        Ok(&mut self.w)
    }

    /// Finishes a regular file started by [`NarEncoder::file_header`]:
    /// `size` must be the size given there, and is accounted as written.
    pub fn file_trailer(&mut self, size: u64) -> Result<(), Error> {
        self.written += size;
        self.trailer(size)
    }

    fn trailer(&mut self, size: u64) -> Result<(), Error> {
        self.out.extend_from_slice(&[0u8; 8][..padding(size)]);
        self.end_node()
    }

    /// Writes a symlink.
    pub fn symlink(&mut self, target: &[u8]) -> Result<(), Error> {
        check_target(target).map_err(|r| Error::Usage(r.to_string()))?;
        self.begin_node(b"symlink")?;
        put_str(&mut self.out, b"target");
        put_str(&mut self.out, target);
        self.end_node()
    }

    /// Opens a directory; follow with entries and [`NarEncoder::directory_end`].
    pub fn directory_start(&mut self) -> Result<(), Error> {
        self.begin_node(b"directory")?;
        self.dirs.push(None);
        Ok(())
    }

    /// Starts an entry of the open directory; write its node next.
    pub fn entry(&mut self, name: &[u8]) -> Result<(), Error> {
        if self.expect_node || self.done {
            return Err(Error::Usage("an entry needs an open directory".into()));
        }
        check_name(name).map_err(|r| Error::Usage(r.to_string()))?;
        let last = self
            .dirs
            .last_mut()
            .ok_or_else(|| Error::Usage("an entry needs an open directory".into()))?;
        if let Some(prev) = last.as_deref() {
            if name <= prev {
                return Err(Error::Usage(format!(
                    "entry {} is not sorted after {}",
                    show(name),
                    show(prev)
                )));
            }
        }
        match last {
            Some(v) => {
                v.clear();
                v.extend_from_slice(name);
            }
            None => *last = Some(name.to_vec()),
        }
        put_str(&mut self.out, b"entry");
        put_str(&mut self.out, b"(");
        put_str(&mut self.out, b"name");
        put_str(&mut self.out, name);
        put_str(&mut self.out, b"node");
        self.expect_node = true;
        Ok(())
    }

    /// Closes the innermost directory.
    pub fn directory_end(&mut self) -> Result<(), Error> {
        if self.expect_node || self.dirs.is_empty() {
            return Err(Error::Usage("no open directory to close".into()));
        }
        self.dirs.pop();
        self.end_node()
    }

    /// Ends the archive: checks it is complete, flushes, and returns the
    /// writer and the NAR size in bytes.
    pub fn finish(mut self) -> Result<(W, u64), Error> {
        if !self.done {
            return Err(Error::Usage("archive is incomplete".into()));
        }
        self.flush_out()?;
        self.w.flush().map_err(Error::Write)?;
        Ok((self.w, self.written))
    }
}
