//! Fetching a NAR from a binary cache straight into the local store: the
//! fast path of `b3 copy --from` and of substitution.
//!
//! The general route (`nar_from_path` into `add_nar`) hashes every NAR
//! twice (once verifying the download, once in the store) and passes each
//! byte through two in-memory pipes and an async decoder on the network
//! threads. Here the network task only forwards the body's chunks, as they
//! arrive, over a bounded channel to one blocking thread, which decompresses
//! and hands the NAR to [`LocalStore::add_nar_sync`]. That call checks
//! `NarHash` and `NarSize` before anything is registered, so the download
//! itself is not hashed again. Two cores then overlap: network and
//! decompression + unpacking on one side, the store's hashing thread on
//! the other.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::compression::decompress_read;
use super::narinfo::NarInfo;
use super::store::{to_path_info, BinaryCache};
use crate::local::batch::AddBatch;
use crate::local::LocalStore;
use crate::traits::{StoreError, ValidPathInfo};

/// Compressed chunks buffered between the network and the decoder. Chunks
/// are whatever the HTTP client read (8–400 KiB); the decoder and the
/// store's writes are the slower side, so a deeper queue only holds more
/// memory (with 16 transfers, 64 chunks each held ~200 MB of fresh pages).
const CHANNEL_CHUNKS: usize = 16;

impl BinaryCache {
    /// Fetches the NAR `ni` describes and adds it to `store` as
    /// `ni.store_path`, verified against `NarHash`/`NarSize` by the store
    /// before it is registered. A path already valid is left alone. The
    /// narinfo must have been fetched (and its signature checked) by the
    /// caller, e.g. with [`BinaryCache::narinfo`].
    pub async fn add_to_local(&self, ni: &NarInfo, store: &LocalStore) -> Result<(), StoreError> {
        let st = store.clone();
        self.fetch_into(ni, move |info, nar| st.add_nar_sync(&info, nar))
            .await
    }

    /// Like [`Self::add_to_local`], but into `batch`: the path is verified
    /// and staged, and becomes valid when the batch is committed.
    pub async fn stage_to_local(
        &self,
        ni: &NarInfo,
        batch: &Arc<AddBatch>,
    ) -> Result<(), StoreError> {
        let b = Arc::clone(batch);
        self.fetch_into(ni, move |info, nar| b.stage_nar_sync(&info, nar))
            .await
    }

    /// Fetches the NAR `ni` describes and hands it, decompressed, to
    /// `consume` on a blocking thread, while the network side forwards
    /// chunks as they arrive.
    async fn fetch_into<F>(&self, ni: &NarInfo, consume: F) -> Result<(), StoreError>
    where
        F: FnOnce(ValidPathInfo, Box<dyn Read + Send>) -> Result<(), StoreError> + Send + 'static,
    {
        let mut body = self.nar_body(ni).await?;
        let info = to_path_info(ni);
        let compression = ni.compression;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        let consumer = tokio::task::spawn_blocking(move || {
            let nar = decompress_read(compression, ChunkReader::new(rx))
                .map_err(|e| StoreError::io("starting the decompressor", e))?;
            consume(info, nar)
        });
        // The network side: forward chunks until the body ends, fails, or
        // the consumer stops reading (done early, or failed).
        let mut net_err: Option<io::Error> = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    if tx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
                    net_err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let added = consumer
            .await
            .map_err(|e| StoreError::Other(format!("store worker failed: {e}")))?;
        match (added, net_err) {
            (Ok(()), _) => Ok(()),
            // The download failing explains whatever the store then saw
            // (a truncated archive, most likely).
            (Err(_), Some(e)) => Err(StoreError::io(
                format!(
                    "downloading the NAR of '{}' from '{}'",
                    self.store_dir_display(ni),
                    self.url()
                ),
                e,
            )),
            // A malformed or truncated archive: say which path and cache.
            (Err(e @ (StoreError::Nar(_) | StoreError::Io { .. })), None) => {
                Err(StoreError::Other(format!(
                    "the NAR of '{}' from '{}': {e}",
                    self.store_dir_display(ni),
                    self.url()
                )))
            }
            (Err(e), None) => Err(e),
        }
    }

    pub(super) fn store_dir_display(&self, ni: &NarInfo) -> String {
        crate::traits::StoreRead::store_dir(self).display(&ni.store_path)
    }
}

/// Reads the chunks a channel delivers, as a blocking [`BufRead`]: each
/// chunk is handed to the decoder in place. The sender going away is EOF;
/// an error in the channel is returned once read.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    done: bool,
}

impl ChunkReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChunkReader {
            rx,
            cur: Bytes::new(),
            done: false,
        }
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => self.done = true,
            }
        }
        Ok(&self.cur)
    }

    fn consume(&mut self, n: usize) {
        self.cur.advance(n.min(self.cur.len()));
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_in_order_then_eof() {
        let (tx, rx) = mpsc::channel(4);
        let t = std::thread::spawn(move || {
            for c in [&b"ab"[..], b"", b"cde", b"f"] {
                tx.blocking_send(Ok(Bytes::from_static(c))).unwrap();
            }
        });
        let mut r = ChunkReader::new(rx);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        t.join().unwrap();
        assert_eq!(s, "abcdef");
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn an_error_in_the_channel_is_returned_after_the_bytes_before_it() {
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Ok(Bytes::from_static(b"xy"))).unwrap();
        tx.blocking_send(Err(io::Error::other("connection reset")))
            .unwrap();
        drop(tx);
        let mut r = ChunkReader::new(rx);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        let e = r.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("connection reset"), "{e}");
        // Then EOF, not a hang.
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
