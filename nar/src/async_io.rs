//! Async (tokio) NAR I/O. The reader is a real async state machine sharing
//! the grammar with the sync reader; dumping and restoring run the sync
//! filesystem code on a blocking thread and move bytes or events through a
//! small bounded channel, so the runtime never blocks and memory stays
//! constant. The dump/restore functions need a tokio runtime.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use crate::error::{from_io, into_io, Error, Reason};
use crate::parser::{Parser, Step, Want};
use crate::reader::Limits;
use crate::restore::Restorer;
use crate::wire::padding;

/// Async counterpart of [`crate::Event`].
#[derive(Debug)]
pub enum AsyncEvent<'a, R> {
    DirectoryStart,
    Entry {
        name: &'a [u8],
    },
    File {
        executable: bool,
        size: u64,
        contents: AsyncFileReader<'a, R>,
    },
    Symlink {
        target: &'a [u8],
    },
    DirectoryEnd,
}

/// Pull-based async NAR reader; reads exactly the archive's bytes.
pub struct AsyncNarReader<R> {
    r: R,
    offset: u64,
    parser: Parser,
    remaining: u64,
    pad: usize,
    file_open: bool,
    buf: Vec<u8>,
}

impl<R> std::fmt::Debug for AsyncNarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncNarReader")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Contents of the current regular file (exactly `size` bytes).
#[derive(Debug)]
pub struct AsyncFileReader<'a, R> {
    nar: &'a mut AsyncNarReader<R>,
}

enum Kind {
    DirStart,
    Entry,
    File { executable: bool, size: u64 },
    Symlink,
    DirEnd,
}

impl<R: AsyncRead + Unpin> AsyncNarReader<R> {
    pub fn new(r: R) -> Self {
        Self::with_limits(r, Limits::default())
    }

    pub fn with_limits(r: R, limits: Limits) -> Self {
        AsyncNarReader {
            r,
            offset: 0,
            parser: Parser::new(limits.max_depth),
            remaining: 0,
            pad: 0,
            file_open: false,
            buf: Vec::with_capacity(256),
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    async fn read_exact(&mut self, len: usize) -> Result<(), Error> {
        self.buf.resize(len, 0);
        let mut done = 0;
        while done < len {
            match self.r.read(&mut self.buf[done..]).await {
                Ok(0) => {
                    return Err(Error::Invalid {
                        offset: self.offset + done as u64,
                        reason: Reason::Truncated,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let offset = self.offset + done as u64;
                    return Err(from_io(e, |source| Error::Read { offset, source }));
                }
            }
        }
        self.offset += len as u64;
        Ok(())
    }

    async fn read_u64(&mut self) -> Result<u64, Error> {
        self.read_exact(8).await?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[..8]);
        Ok(u64::from_le_bytes(b))
    }

    async fn check_padding(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        let at = self.offset;
        let mut keep = std::mem::take(&mut self.buf);
        let len = keep.len();
        let r = self.read_exact(n).await;
        let bad = self.buf.iter().position(|&b| b != 0);
        std::mem::swap(&mut self.buf, &mut keep);
        self.buf.truncate(len);
        r?;
        match bad {
            Some(i) => Err(Error::Invalid {
                offset: at + i as u64,
                reason: Reason::NonZeroPadding,
            }),
            None => Ok(()),
        }
    }

    async fn finish_file(&mut self) -> Result<(), Error> {
        while self.remaining > 0 {
            let n = self.remaining.min(64 * 1024) as usize;
            self.read_exact(n).await?;
            self.remaining -= n as u64;
        }
        let pad = std::mem::take(&mut self.pad);
        self.buf.clear();
        self.check_padding(pad).await?;
        self.parser.contents_done();
        Ok(())
    }

    /// The next event, or `None` once the root node is complete.
    pub async fn next(&mut self) -> Result<Option<AsyncEvent<'_, R>>, Error> {
        let kind = loop {
            match self.parser.want() {
                Want::Done => return Ok(None),
                Want::Contents if self.file_open => {
                    self.finish_file().await?;
                    self.file_open = false;
                }
                Want::Contents => {
                    let size = self.read_u64().await?;
                    self.remaining = size;
                    self.pad = padding(size);
                    self.file_open = true;
                    break Kind::File {
                        executable: self.parser.executable(),
                        size,
                    };
                }
                Want::Token { max, what } => {
                    let at = self.offset;
                    let len = self.read_u64().await?;
                    if len > max {
                        let reason = if what == "magic" {
                            Reason::BadMagic
                        } else {
                            Reason::TooLong { what, len, max }
                        };
                        return Err(Error::Invalid { offset: at, reason });
                    }
                    self.read_exact(len as usize).await?;
                    self.check_padding(padding(len)).await?;
                    match self.parser.feed(&self.buf) {
                        Err(reason) => return Err(Error::Invalid { offset: at, reason }),
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
            Kind::DirStart => AsyncEvent::DirectoryStart,
            Kind::Entry => AsyncEvent::Entry { name: &self.buf },
            Kind::Symlink => AsyncEvent::Symlink { target: &self.buf },
            Kind::DirEnd => AsyncEvent::DirectoryEnd,
            Kind::File { executable, size } => AsyncEvent::File {
                executable,
                size,
                contents: AsyncFileReader { nar: self },
            },
        }))
    }

    /// Reads the whole archive, discarding it (validation only).
    pub async fn skip_all(&mut self) -> Result<(), Error> {
        while self.next().await?.is_some() {}
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncFileReader<'_, R> {
    pub fn remaining(&self) -> u64 {
        self.nar.remaining
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncFileReader<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let nar = &mut *self.get_mut().nar;
        if nar.remaining == 0 || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let max = (buf.remaining() as u64).min(nar.remaining) as usize;
        let dst = buf.initialize_unfilled_to(max);
        let mut sub = ReadBuf::new(dst);
        match Pin::new(&mut nar.r).poll_read(cx, &mut sub) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                let offset = nar.offset;
                Poll::Ready(Err(into_io(from_io(e, |source| Error::Read {
                    offset,
                    source,
                }))))
            }
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(into_io(Error::Invalid {
                        offset: nar.offset,
                        reason: Reason::Truncated,
                    })));
                }
                nar.offset += n as u64;
                nar.remaining -= n as u64;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// A `Write` that hands chunks to an async consumer over a bounded channel.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "NAR consumer went away"))
    }
}

/// Writes the NAR of `path` to an async writer; returns the NAR size.
pub async fn dump_path_async<W: AsyncWrite + Unpin>(path: &Path, w: &mut W) -> Result<u64, Error> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let path = path.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let cw = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        crate::dump_path(&path, cw).map(|(_, n)| n)
    });
    let mut write_err = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = w.write_all(&chunk).await {
            write_err = Some(e);
            break;
        }
    }
    drop(rx);
    let res = worker.await.map_err(|e| Error::Task(e.to_string()))?;
    if let Some(e) = write_err {
        return Err(Error::Write(e));
    }
    let n = res?;
    w.flush().await.map_err(Error::Write)?;
    Ok(n)
}

/// Writes an in-memory tree as a NAR to an async writer.
pub async fn encode_tree_async<W: AsyncWrite + Unpin>(
    tree: &crate::Tree,
    w: &mut W,
) -> Result<u64, Error> {
    let nar = tree.to_nar()?;
    w.write_all(&nar).await.map_err(Error::Write)?;
    w.flush().await.map_err(Error::Write)?;
    Ok(nar.len() as u64)
}

/// Owned events for the restore worker.
enum Msg {
    DirStart,
    Entry(Vec<u8>),
    FileStart(bool),
    Chunk(Vec<u8>),
    Symlink(Vec<u8>),
    DirEnd,
    Done,
}

/// Restores a NAR from an async reader at `dest` (which must not exist),
/// with the same atomicity and safety as [`crate::restore`]. Reads exactly
/// the archive's bytes from `r`. Returns the NAR size.
pub async fn restore_async<R: AsyncRead + Unpin>(r: R, dest: &Path) -> Result<u64, Error> {
    let dest: PathBuf = dest.to_path_buf();
    let (tx, mut rx) = mpsc::channel::<Msg>(8);
    let worker = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let mut rs = Restorer::begin(&dest)?;
        let mut file = None;
        while let Some(m) = rx.blocking_recv() {
            match m {
                Msg::DirStart => rs.directory_start()?,
                Msg::Entry(n) => rs.entry(&n),
                Msg::FileStart(x) => file = Some(rs.file_start(x)?),
                Msg::Chunk(c) => {
                    if let Some(f) = file.as_mut() {
                        rs.file_write(f, &c)?;
                    }
                }
                Msg::Symlink(t) => rs.symlink(&t)?,
                Msg::DirEnd => rs.directory_end(),
                Msg::Done => {
                    drop(file);
                    return rs.commit();
                }
            }
        }
        // Sender dropped without Done: the reader failed; Drop cleans up.
        Err(Error::Task("restore aborted".into()))
    });

    let read_result = async {
        let mut nar = AsyncNarReader::new(r);
        while let Some(ev) = nar.next().await? {
            let msg = match ev {
                AsyncEvent::DirectoryStart => Msg::DirStart,
                AsyncEvent::Entry { name } => Msg::Entry(name.to_vec()),
                AsyncEvent::Symlink { target } => Msg::Symlink(target.to_vec()),
                AsyncEvent::DirectoryEnd => Msg::DirEnd,
                AsyncEvent::File {
                    executable,
                    mut contents,
                    ..
                } => {
                    if tx.send(Msg::FileStart(executable)).await.is_err() {
                        return Ok(None);
                    }
                    loop {
                        let mut chunk = vec![0u8; CHUNK.min(contents.remaining() as usize)];
                        if chunk.is_empty() {
                            break;
                        }
                        contents
                            .read_exact(&mut chunk)
                            .await
                            .map_err(|e| from_io(e, Error::Write))?;
                        if tx.send(Msg::Chunk(chunk)).await.is_err() {
                            return Ok(None);
                        }
                    }
                    continue;
                }
            };
            if tx.send(msg).await.is_err() {
                return Ok(None);
            }
        }
        let size = nar.offset();
        if tx.send(Msg::Done).await.is_err() {
            return Ok(None);
        }
        Ok::<_, Error>(Some(size))
    }
    .await;
    drop(tx);
    let worker_result = worker.await.map_err(|e| Error::Task(e.to_string()))?;
    match read_result {
        Err(e) => Err(e),
        Ok(Some(size)) => worker_result.map(|()| size),
        // The worker stopped early: its error is the real one.
        Ok(None) => worker_result.and(Err(Error::Task("restore worker stopped".into()))),
    }
}
