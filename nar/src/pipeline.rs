//! A `Write` that moves the consuming work (hashing, usually) to a second
//! thread: the caller's thread fills 1 MiB buffers, the worker drains them
//! into the real writer. On a machine with two or more cores this overlaps
//! file reading and directory walking with SHA-256, which is what makes
//! `hash_path` run at close to the raw hashing speed. File contents are
//! read straight into the hand-over buffers ([`ThreadedWriter::copy_file`]),
//! so bytes are copied once, by the kernel.

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

/// A full buffer: `(bytes, used length)`. Buffers keep length `CAP` so they
/// can be recycled without re-zeroing.
type Chunk = (Vec<u8>, usize);

pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    tx: Option<SyncSender<Chunk>>,
    recycled: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    filled: usize,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    pub(crate) fn new(mut inner: W) -> io::Result<Self> {
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
        Ok(ThreadedWriter {
            tx: Some(tx),
            recycled,
            buf: vec![0u8; CAP],
            filled: 0,
            worker: Some(worker),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let fresh = self.recycled.try_recv().unwrap_or_else(|_| vec![0u8; CAP]);
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

    /// Reads exactly `size` bytes of `f` directly into the hand-over buffers.
    pub(crate) fn copy_file(
        f: &mut File,
        out: &mut Self,
        size: u64,
        _scratch: &mut [u8],
        path: &Path,
    ) -> Result<(), Error> {
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
