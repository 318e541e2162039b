//! A `Write` that moves the consuming work (hashing, usually) to a second
//! thread: the caller's thread fills 1 MiB buffers, the worker drains them
//! into the real writer. On a machine with two or more cores this overlaps
//! file reading and directory walking with SHA-256, which is what makes
//! `hash_path` run at close to the raw hashing speed.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const CAP: usize = 1 << 20;
/// Buffers in flight: bounds memory at about (DEPTH + 2) MiB.
const DEPTH: usize = 4;

pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    pub(crate) fn new(mut inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back_tx, recycled) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let worker = std::thread::Builder::new()
            .name("b3-nar-consume".into())
            .spawn(move || {
                for mut chunk in rx {
                    inner.write_all(&chunk)?;
                    chunk.clear();
                    let _ = back_tx.try_send(chunk);
                }
                inner.flush()?;
                Ok(inner)
            })?;
        Ok(ThreadedWriter {
            tx: Some(tx),
            recycled,
            buf: Vec::with_capacity(CAP),
            worker: Some(worker),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let fresh = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CAP));
        let full = std::mem::replace(&mut self.buf, fresh);
        let sent = self.tx.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The worker stopped: its own error is reported by finish().
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "consumer thread stopped",
            )),
        }
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
        let room = CAP - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CAP {
            self.send()?;
        }
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
