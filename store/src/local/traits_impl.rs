//! The async store traits for [`LocalStore`].
//!
//! The local store's work is synchronous (SQLite, filesystem), so each call
//! runs on a blocking thread. Streams cross over through an in-memory pipe:
//! the caller's borrowed reader or writer is pumped on the async side while
//! the blocking side reads or writes the other end.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::SyncIoBridge;

use crate::hash::HashAlgo;
use crate::path::{FileIngestionMethod, StoreDir, StorePath};
use crate::traits::{StoreError, StoreRead, StoreWrite, ValidPathInfo};

use super::LocalStore;

const PIPE: usize = 1 << 18;

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("store worker failed: {e}")))?
}

#[async_trait]
impl StoreRead for LocalStore {
    fn store_dir(&self) -> &StoreDir {
        LocalStore::store_dir(self)
    }

    async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError> {
        let (s, p) = (self.clone(), path.clone());
        blocking(move || s.is_valid_sync(&p)).await
    }

    async fn query_path_info(&self, path: &StorePath) -> Result<Option<ValidPathInfo>, StoreError> {
        let (s, p) = (self.clone(), path.clone());
        blocking(move || s.query_path_info_sync(&p)).await
    }

    async fn nar_from_path(
        &self,
        path: &StorePath,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, StoreError> {
        let (s, p) = (self.clone(), path.clone());
        let (mut rx, tx) = tokio::io::duplex(PIPE);
        let producer = tokio::task::spawn_blocking(move || {
            let w = SyncIoBridge::new(tx);
            s.nar_from_path_sync(&p, w)
        });
        let copied = tokio::io::copy(&mut rx, sink).await;
        let produced = producer
            .await
            .map_err(|e| StoreError::Other(format!("store worker failed: {e}")))?;
        let n = produced?;
        copied.map_err(|e| StoreError::io("writing NAR", e))?;
        sink.flush()
            .await
            .map_err(|e| StoreError::io("writing NAR", e))?;
        Ok(n)
    }

    async fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        let (s, p) = (self.clone(), path.clone());
        blocking(move || s.query_referrers_sync(&p)).await
    }

    async fn query_closure(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let (s, p) = (self.clone(), paths.clone());
        blocking(move || s.query_closure_sync(&p)).await
    }
}

#[async_trait]
impl StoreWrite for LocalStore {
    async fn add_nar(
        &self,
        info: &ValidPathInfo,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        if self.is_valid_path(&info.path).await? {
            return Ok(());
        }
        let (s, i) = (self.clone(), info.clone());
        let (rx, mut tx) = tokio::io::duplex(PIPE);
        let consumer = tokio::task::spawn_blocking(move || {
            let r = SyncIoBridge::new(rx);
            s.add_nar_sync(&i, r)
        });
        // The consumer stops reading early on bad input; the copy then fails
        // with a broken pipe, and the consumer's error is the one to report.
        let limit = info.nar_size.saturating_add(1);
        let mut limited = tokio::io::AsyncReadExt::take(source, limit);
        let copied = tokio::io::copy(&mut limited, &mut tx).await;
        drop(tx);
        let added = consumer
            .await
            .map_err(|e| StoreError::Other(format!("store worker failed: {e}")))?;
        match (added, copied) {
            // The consumer verified everything it needed (or found the path
            // already valid and read nothing): a broken pipe is expected.
            (Ok(()), _) => Ok(()),
            // The source itself failed: that is the cause of any NAR error.
            (Err(_), Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(StoreError::io("reading NAR", e))
            }
            (Err(e), _) => Err(e),
        }
    }

    async fn add_text(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        let (s, n, t, r) = (
            self.clone(),
            name.to_string(),
            text.to_vec(),
            references.clone(),
        );
        blocking(move || s.add_text_sync(&n, &t, &r)).await
    }

    async fn add_path(
        &self,
        name: &str,
        source: &Path,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        let (s, n, src) = (self.clone(), name.to_string(), source.to_path_buf());
        blocking(move || s.add_path_sync(&n, &src, method, algo)).await
    }
}
