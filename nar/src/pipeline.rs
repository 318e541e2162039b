//! A `Write` that moves the consuming work (hashing, usually) to a second
//! thread: the caller's thread fills 128 KiB buffers, the worker drains them
//! into the real writer. On a machine with two or more cores this overlaps
//! file reading and directory walking with SHA-256, which is what makes
//! `hash_path` run at close to the raw hashing speed. File contents are
//! read straight into the hand-over buffers ([`ThreadedWriter::copy_file`]),
//! so bytes are copied once, by the kernel.
//!
//! The worker starts only once more than [`INLINE_LIMIT`] bytes have been
//! written: the evaluator hashes thousands of small source files, and a
//! thread plus buffers per file cost far more than the hashing itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::error::Error;

const CAP: usize = 128 << 10;
/// Buffers in flight: bounds memory at about (DEPTH + 3) × CAP. Small
/// buffers keep the bytes in cache between the reading and hashing cores
/// (measured: 1 MiB buffers cost ~20% more CPU than 128 KiB ones).
const DEPTH: usize = 8;
/// Bytes consumed on the caller's thread before the worker is started.
pub(crate) const INLINE_LIMIT: u64 = 1 << 20;

/// A full buffer: `(bytes, used length)`. Buffers keep length `CAP` so they
/// can be recycled without re-zeroing.
type Chunk = (Vec<u8>, usize);

pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    /// The consumer while it still runs on this thread.
    inline: Option<W>,
    inline_bytes: u64,
    tx: Option<SyncSender<Chunk>>,
    recycled: Option<Receiver<Vec<u8>>>,
    buf: Vec<u8>,
    filled: usize,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    pub(crate) fn new(inner: W) -> io::Result<Self> {
        Ok(ThreadedWriter {
            inline: Some(inner),
            inline_bytes: 0,
            tx: None,
            recycled: None,
            buf: Vec::new(),
            filled: 0,
            worker: None,
        })
    }

    /// Whether `more` bytes may still be consumed on this thread.
    fn stays_inline(&self, more: u64) -> bool {
        self.inline.is_some() && self.inline_bytes.saturating_add(more) <= INLINE_LIMIT
    }

    /// Moves the consumer to its own thread (once).
    fn start_worker(&mut self) -> io::Result<()> {
        let Some(mut inner) = self.inline.take() else {
            return Ok(());
        };
        let (tx, rx) = sync_channel::<Chunk>(DEPTH);
        let (back_tx, recycled) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let worker = std::thread::Builder::new()
            .name("b3-nar-consume".into())
            .spawn(move || {
                for (chunk, len) in rx {
                    inner.write_all(&chunk[..len])?;
                    let _ = back_tx.try_send(chunk);
                }
                inner.flush()?;
                Ok(inner)
            })?;
        self.tx = Some(tx);
        self.recycled = Some(recycled);
        self.buf = vec![0u8; CAP];
        self.filled = 0;
        self.worker = Some(worker);
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let fresh = self
            .recycled
            .as_ref()
            .and_then(|r| r.try_recv().ok())
            .unwrap_or_else(|| vec![0u8; CAP]);
        let full = std::mem::replace(&mut self.buf, fresh);
        let len = std::mem::take(&mut self.filled);
        match self.tx.as_ref().map(|tx| tx.send((full, len))) {
            Some(Ok(())) => Ok(()),
            // The worker stopped: its own error is reported by finish().
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "consumer thread stopped",
            )),
        }
    }

    /// Reads exactly `size` bytes of `f` directly into the hand-over buffers
    /// (or, while the consumer is still inline, through `scratch`).
    pub(crate) fn copy_file(
        f: &mut File,
        out: &mut Self,
        size: u64,
        scratch: &mut Vec<u8>,
        path: &Path,
    ) -> Result<(), Error> {
        if out.stays_inline(size) {
            if let Some(inner) = out.inline.as_mut() {
                out.inline_bytes += size;
                return crate::dump::copy_exact(f, inner, size, scratch, path);
            }
        }
        out.start_worker().map_err(Error::Write)?;
        let mut left = size;
        while left > 0 {
            if out.filled == CAP {
                out.send().map_err(Error::Write)?;
            }
            let room = (CAP - out.filled).min(left.min(usize::MAX as u64) as usize);
            let n = match f.read(&mut out.buf[out.filled..out.filled + room]) {
                Ok(0) => return Err(Error::FileChanged(path.to_path_buf())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::fs("reading file", path, e)),
            };
            out.filled += n;
            left -= n as u64;
        }
        Ok(())
    }

    /// Flushes everything, stops the worker and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if let Some(mut inner) = self.inline.take() {
            inner.flush()?;
            return Ok(inner);
        }
        let sent = self.send();
        self.tx = None;
        let joined = match self.worker.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("consumer thread panicked"))?,
            None => Err(io::Error::other("consumer thread missing")),
        };
        let inner = joined?;
        sent?;
        Ok(inner)
    }
}

impl<W: Write + Send + 'static> Write for ThreadedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stays_inline(data.len() as u64) {
            if let Some(inner) = self.inline.as_mut() {
                inner.write_all(data)?;
                self.inline_bytes += data.len() as u64;
                return Ok(data.len());
            }
        }
        self.start_worker()?;
        if self.filled == CAP {
            self.send()?;
        }
        let n = data.len().min(CAP - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Buffers are handed over when full or at finish(); a flush in the
        // middle would only shrink them.
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ThreadedWriter<W> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_across_the_switch_to_the_worker() {
        let data: Vec<u8> = (0..3 * INLINE_LIMIT as usize + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut tw = ThreadedWriter::new(Vec::new()).unwrap();
        // Odd-sized writes so that the switch happens mid-stream.
        for chunk in data.chunks(70_001) {
            tw.write_all(chunk).unwrap();
        }
        assert!(tw.worker.is_some(), "a large stream moves to the worker");
        assert_eq!(tw.finish().unwrap(), data);
    }

    #[test]
    fn small_streams_stay_on_the_calling_thread() {
        let mut tw = ThreadedWriter::new(Vec::new()).unwrap();
        tw.write_all(b"small").unwrap();
        assert!(tw.worker.is_none());
        assert_eq!(tw.finish().unwrap(), b"small");
    }
}
