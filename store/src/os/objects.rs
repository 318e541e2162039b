//! The object store of a `file://` binary cache: object_store's
//! `LocalFileSystem`, and on Windows a wrapper that retries replacing
//! renames refused because another writer is replacing the same file.
//!
//! Every put and rename of a local object ends in a rename onto the final
//! name. Several processes adding one store path rename onto one narinfo or
//! NAR name at once; Unix lets the last rename win, but Windows (and wine)
//! refuse a rename onto a file that another rename or reader has open
//! ("access denied", "sharing violation") for as long as it is open. The
//! contents are the same (objects are addressed by what they hold) and the
//! refusal is transient, so [`RetryReplace`] retries those operations with
//! a short back-off instead of failing the add.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Opens the object store of a local binary cache rooted at `dir`.
pub fn file_objects(dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
    let fs = LocalFileSystem::new_with_prefix(dir)?;
    if cfg!(windows) {
        Ok(Arc::new(RetryReplace::new(fs)))
    } else {
        Ok(Arc::new(fs))
    }
}

/// How often and how long a refused replacement is retried.
const ATTEMPTS: u32 = 60;
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Retries puts and renames that Windows refused because the destination
/// was busy; every other call goes straight to the inner store.
#[derive(Debug)]
pub struct RetryReplace<S> {
    inner: S,
}

impl<S> RetryReplace<S> {
    pub fn new(inner: S) -> Self {
        RetryReplace { inner }
    }
}

impl<S: fmt::Display> fmt::Display for RetryReplace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetryReplace({})", self.inner)
    }
}

/// Whether `e` is a refusal that goes away once the other holder of the
/// destination is done: access denied (Windows error 5, which is what a
/// rename onto a file being replaced gives) or a sharing violation (32).
pub fn busy_destination(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::PermissionDenied
                || matches!(io.raw_os_error(), Some(5) | Some(32)) && cfg!(windows);
        }
        cur = err.source();
    }
    false
}

/// Runs `op` until it succeeds, fails otherwise than by a busy
/// destination, or has been tried [`ATTEMPTS`] times.
pub async fn retry_busy<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(1);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && busy_destination(&e) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for RetryReplace<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        retry_busy(|| self.inner.put_opts(location, payload.clone(), opts.clone())).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        retry_busy(|| self.inner.copy_opts(from, to, options.clone())).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        retry_busy(|| self.inner.rename_opts(from, to, options.clone())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[test]
    fn busy_destination_is_found_behind_wrapping_errors() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io),
        };
        assert!(busy_destination(&e));
        let e = object_store::Error::NotFound {
            path: "x".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        assert!(!busy_destination(&e));
    }

    #[tokio::test]
    async fn retries_only_busy_refusals_and_gives_up_eventually() {
        let mut calls = 0;
        let r: Result<u32> = retry_busy(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(object_store::Error::Generic {
                        store: "t",
                        source: Box::new(std::io::Error::from(
                            std::io::ErrorKind::PermissionDenied,
                        )),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: Result<()> = retry_busy(|| {
            calls += 1;
            async {
                Err(object_store::Error::NotImplemented {
                    operation: "x".into(),
                    implementer: "t".into(),
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "other errors are not retried");
    }

    #[tokio::test]
    async fn wrapped_local_store_puts_renames_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = RetryReplace::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let a = Path::from("nar/a.nar");
        let b = Path::from("nar/b.nar");
        s.put(&a, PutPayload::from_static(b"one")).await.unwrap();
        s.put(&b, PutPayload::from_static(b"two")).await.unwrap();
        s.rename(&a, &b).await.unwrap();
        let got = s.get(&b).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"one");
        assert!(s.head(&a).await.is_err());
        assert!(s.to_string().starts_with("RetryReplace("));
    }
}
