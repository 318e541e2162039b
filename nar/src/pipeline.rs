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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::Error;

const CAP: usize = 128 << 10;
/// Buffers in flight: bounds memory at about (DEPTH + 2) × CAP. Small
/// buffers keep the bytes in cache between the reading and hashing cores
/// (measured: 1 MiB buffers cost ~20% more CPU than 128 KiB ones).
const DEPTH: usize = 16;
/// A producer that found the queue full sleeps until it has drained to
/// this many buffers: one wake-up per `DEPTH - RESUME` buffers instead of
/// one per buffer (a ping-pong of futex wake-ups and context switches
/// when hashing is the slower side, which it is for large files).
const RESUME: usize = DEPTH / 2;
/// Bytes consumed on the caller's thread before the worker is started.
pub(crate) const INLINE_LIMIT: u64 = 1 << 20;

/// A full buffer: `(bytes, used length)`. Buffers keep length `CAP` so they
/// can be recycled without re-zeroing.
type Chunk = (Vec<u8>, usize);

/// The hand-over queue between the filling thread and the consumer.
#[derive(Default)]
struct Queue {
    full: VecDeque<Chunk>,
    /// Drained buffers, handed back for reuse.
    free: Vec<Vec<u8>>,
    /// The producer will send nothing more.
    closed: bool,
    /// The consumer stopped (error or panic): sending is pointless.
    stopped: bool,
    producer_waiting: bool,
    consumer_waiting: bool,
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    /// Signalled when a buffer arrives or the queue is closed.
    filled: Condvar,
    /// Signalled when the queue has drained to `RESUME` or the consumer stopped.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every
        // critical section is a few field updates).
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks the consumer stopped however its thread ends, so a producer
/// waiting for room never waits forever.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.stopped = true;
        drop(q);
        self.0.drained.notify_one();
    }
}

fn consume<W: Write>(shared: &Arc<Shared>, inner: &mut W) -> io::Result<()> {
    let _stop = StopOnDrop(Arc::clone(shared));
    let mut done: Option<Vec<u8>> = None;
    loop {
        let (chunk, len) = {
            let mut q = shared.lock();
            if let Some(b) = done.take() {
                q.free.push(b);
            }
            loop {
                if let Some(c) = q.full.pop_front() {
                    if q.producer_waiting && q.full.len() <= RESUME {
                        q.producer_waiting = false;
                        shared.drained.notify_one();
                    }
                    break c;
                }
                if q.closed {
                    return Ok(());
                }
                q.consumer_waiting = true;
                q = shared.filled.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        inner.write_all(&chunk[..len])?;
        done = Some(chunk);
    }
}

pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    /// The consumer while it still runs on this thread.
    inline: Option<W>,
    inline_bytes: u64,
    shared: Option<Arc<Shared>>,
    buf: Vec<u8>,
    filled: usize,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    pub(crate) fn new(inner: W) -> io::Result<Self> {
        Ok(ThreadedWriter {
            inline: Some(inner),
            inline_bytes: 0,
            shared: None,
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
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("b3-nar-consume".into())
            .spawn(move || {
                consume(&theirs, &mut inner)?;
                inner.flush()?;
                Ok(inner)
            })?;
        self.shared = Some(shared);
        self.buf = vec![0u8; CAP];
        self.filled = 0;
        self.worker = Some(worker);
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "consumer thread stopped");
        let Some(shared) = self.shared.as_ref() else {
            return Err(stopped());
        };
        let mut q = shared.lock();
        while q.full.len() >= DEPTH && !q.stopped {
            q.producer_waiting = true;
            q = shared.drained.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.stopped {
            // The worker's own error is reported by finish().
            return Err(stopped());
        }
        let fresh = q.free.pop();
        let len = std::mem::take(&mut self.filled);
        let full = std::mem::replace(&mut self.buf, fresh.unwrap_or_default());
        q.full.push_back((full, len));
        let wake = std::mem::take(&mut q.consumer_waiting);
        drop(q);
        if wake {
            shared.filled.notify_one();
        }
        if self.buf.len() < CAP {
            self.buf = vec![0u8; CAP];
        }
        Ok(())
    }

    /// Tells the worker no more buffers come.
    fn close(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lock().closed = true;
            shared.filled.notify_one();
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
        self.close();
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
        self.close();
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

    /// Fails every write after the first `ok` bytes.
    struct FailAfter {
        ok: usize,
    }

    impl Write for FailAfter {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.ok < data.len() {
                return Err(io::Error::other("disk full"));
            }
            self.ok -= data.len();
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_consumer_stops_the_producer_with_its_own_error() {
        let mut tw = ThreadedWriter::new(FailAfter {
            ok: 2 * INLINE_LIMIT as usize,
        })
        .unwrap();
        let chunk = vec![7u8; 100_000];
        // Far more than the queue holds: the producer must notice the
        // stopped consumer instead of waiting for room forever.
        let mut failed = false;
        for _ in 0..1000 {
            if tw.write_all(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writes fail once the consumer has stopped");
        let err = tw
            .finish()
            .err()
            .expect("finish reports the consumer's error");
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn small_streams_stay_on_the_calling_thread() {
        let mut tw = ThreadedWriter::new(Vec::new()).unwrap();
        tw.write_all(b"small").unwrap();
        assert!(tw.worker.is_none());
        assert_eq!(tw.finish().unwrap(), b"small");
    }
}
