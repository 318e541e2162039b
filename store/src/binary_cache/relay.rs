//! Copying one path from a binary cache into another
//! ([`BinaryCache::upload_from_cache`]), the transfer of
//! [`super::copy::copy_cache_to_cache`].
//!
//! The source narinfo has been fetched (and its signature checked) by the
//! caller, so the NAR is fetched without a second narinfo request and
//! without the source-side [`super::verify::VerifyingReader`]: the upload
//! itself hashes the NAR and refuses it (writing no narinfo) unless
//! `NarHash` and `NarSize` match. When both caches use the same
//! compression, the compressed bytes go to the destination as they are,
//! hashed for `FileHash` on the way, and are decompressed beside the upload
//! only to check the archive and hash it: recompressing (xz above all)
//! would cost far more than the transfer.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::compression::decompress_reader;
use super::narinfo::NarInfo;
use super::store::{scan_nar, to_path_info, BinaryCache, Streamed};
use crate::hash::{HashAlgo, Hasher};
use crate::traits::{StoreError, ValidPathInfo};

/// Compressed chunks queued for the checking task.
const CHECK_CHUNKS: usize = 16;

impl BinaryCache {
    /// Uploads the path `ni` describes, fetching its NAR from `src`. The
    /// caller guarantees that the narinfos of its references are here
    /// already (a copy in reference order); an existing narinfo is not
    /// looked for. Returns the narinfo written.
    pub async fn upload_from_cache(
        &self,
        src: &BinaryCache,
        ni: &NarInfo,
    ) -> Result<NarInfo, StoreError> {
        let info = to_path_info(ni);
        let body = src.nar_body(ni).await?;
        if ni.compression == self.compression() {
            return self.upload_passthrough(src, &info, ni, body).await;
        }
        let mut nar = decompress_reader(ni.compression, tokio_util::io::StreamReader::new(body));
        self.upload_unchecked(&info, &mut nar).await
    }

    /// The same-compression case of [`Self::upload_from_cache`].
    async fn upload_passthrough(
        &self,
        src: &BinaryCache,
        info: &ValidPathInfo,
        ni: &NarInfo,
        mut body: futures::stream::BoxStream<'static, io::Result<Bytes>>,
    ) -> Result<NarInfo, StoreError> {
        let (tmp_key, mut upload) = self.start_nar_upload().await?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHECK_CHUNKS);
        let compression = ni.compression;
        let listing = self.writes_nar_listing();
        // Decompressing, checking and hashing on its own task, so it runs
        // on another worker than the download and the upload.
        let check = tokio::spawn(async move {
            let chunks =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
                );
            let mut nar = decompress_reader(compression, tokio_util::io::StreamReader::new(chunks));
            scan_nar(&mut nar, listing).await
        });
        let mut file_hasher = Hasher::new(HashAlgo::Sha256);
        let mut failed: Option<StoreError> = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
                    failed = Some(StoreError::io(
                        format!(
                            "downloading the NAR of '{}' from '{}'",
                            src.store_dir_display(ni),
                            src.url()
                        ),
                        e,
                    ));
                    break;
                }
            };
            file_hasher.update(&chunk);
            if tx.send(Ok(chunk.clone())).await.is_err() {
                // The checker stopped early: its error says why.
                break;
            }
            if let Err(e) = upload.wait_for_capacity(4).await {
                failed = Some(StoreError::Backend(Box::new(e)));
                break;
            }
            upload.write(&chunk);
        }
        drop(tx);
        let checked = check
            .await
            .map_err(|e| StoreError::Other(format!("NAR checking task failed: {e}")));
        let streamed = match (failed, checked) {
            (Some(e), _) => Err(e),
            (None, Err(e)) | (None, Ok(Err(e))) => Err(e),
            (None, Ok(Ok((nar_hash, nar_size, listing)))) => {
                let file_size = file_hasher.bytes_hashed();
                Ok(Streamed {
                    nar_hash,
                    nar_size,
                    file_hash: file_hasher.finish(),
                    file_size,
                    listing,
                })
            }
        };
        self.finish_nar_upload(info, tmp_key, upload, streamed)
            .await
    }
}
