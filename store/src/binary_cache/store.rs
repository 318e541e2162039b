//! The binary-cache store: narinfos and NARs in an `object_store`.
//!
//! Reading: a `.narinfo` is fetched, parsed, checked to describe the path
//! asked for, and (when trusted keys are configured) required to carry a
//! valid signature or a content address that proves the path. Its NAR is
//! streamed through decompression and a [`VerifyingReader`], so a tampered,
//! truncated or overlong NAR fails before its last bytes are handed out.
//!
//! Writing keeps Nix's invariant: the NAR is uploaded first (streamed
//! through the compressor to a temporary object, then renamed to
//! `nar/<file hash>.nar<ext>`), the `.narinfo` last, and only once the
//! `.narinfo`s of all references exist. The NAR's hash and size are checked
//! against the caller's info before the `.narinfo` is written.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::cache_info::{self, CacheInfo, CacheInfoError};
use super::compression::{compress_writer, decompress_reader, BoxReader, Compression};
use super::listing::ListingBuilder;
use super::narinfo::{NarInfo, NarInfoError};
use super::net::{self, NetOptions};
use super::signing::{PublicKey, SecretKey, SigningError};
use super::url::{CacheLocation, CacheUrl, CacheUrlError};
use super::verify::VerifyingReader;
use crate::hash::{Hash, HashAlgo, Hasher};
use crate::path::{ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath};
use crate::traits::{StoreError, StoreRead, StoreWrite, ValidPathInfo};

/// Errors of the binary-cache store.
#[derive(Debug, Error)]
pub enum BinaryCacheError {
    #[error(transparent)]
    Url(#[from] CacheUrlError),
    #[error("binary cache '{url}': {op} '{key}': {source}")]
    Object {
        url: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("binary cache '{url}': cannot open: {source}")]
    Open {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("binary cache '{url}': {source}")]
    CacheInfo {
        url: String,
        #[source]
        source: CacheInfoError,
    },
    #[error("binary cache '{url}' is for Nix stores with prefix '{cache}', not '{ours}'")]
    WrongStoreDir {
        url: String,
        cache: String,
        ours: String,
    },
    #[error("binary cache '{url}': {key}: {source}")]
    NarInfo {
        url: String,
        key: String,
        #[source]
        source: NarInfoError,
    },
    #[error("binary cache '{url}': {key} describes '{found}', not the requested '{wanted}'")]
    PathMismatch {
        url: String,
        key: String,
        wanted: String,
        found: String,
    },
    #[error("the substitute for '{path}' from '{url}' is not signed by any of the keys in 'trusted-public-keys'")]
    Untrusted { path: String, url: String },
    #[error("binary cache '{url}': NAR URL '{nar_url}' of '{path}' is not a relative path inside the cache")]
    BadNarUrl {
        url: String,
        path: String,
        nar_url: String,
    },
    #[error("binary cache '{0}' is read-only")]
    ReadOnly(String),
    #[error("secret key file '{file}': {source}")]
    KeyFile {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("secret key file '{file}': {source}")]
    Key {
        file: String,
        #[source]
        source: SigningError,
    },
    #[error("{0} support is not compiled in (enable the b3-store feature)")]
    NotCompiled(&'static str),
}

impl From<BinaryCacheError> for StoreError {
    fn from(e: BinaryCacheError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// A Nix binary cache.
pub struct BinaryCache {
    objects: Arc<dyn ObjectStore>,
    url: String,
    store_dir: StoreDir,
    compression: Compression,
    secret_keys: Vec<SecretKey>,
    trusted_keys: Option<Vec<PublicKey>>,
    writable: bool,
    /// Write `<hashpart>.ls` NAR listings with uploads (`write-nar-listing=1`).
    write_nar_listing: bool,
    /// Stall detection for remote caches (`None`: local files, no limit).
    stall_timeout: Option<Duration>,
    /// Narinfos handed out by `query_path_info` whose NAR has not been
    /// asked for yet: a generic copy asks for the info, then the NAR, and
    /// the second narinfo fetch would repeat the first. Taken on use;
    /// cleared when it grows past [`RECENT_NARINFOS`].
    recent: Mutex<HashMap<StorePath, NarInfo>>,
}

/// Bound on [`BinaryCache`]'s remembered narinfos.
const RECENT_NARINFOS: usize = 4096;

impl std::fmt::Debug for BinaryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCache")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn obj_err(
    url: &str,
    op: &'static str,
    key: &ObjPath,
    source: object_store::Error,
) -> BinaryCacheError {
    BinaryCacheError::Object {
        url: url.to_owned(),
        op,
        key: key.to_string(),
        source: Box::new(source),
    }
}

impl BinaryCache {
    /// A cache over any object store. `url` is used in messages only.
    pub fn new(objects: Arc<dyn ObjectStore>, url: impl Into<String>, store_dir: StoreDir) -> Self {
        BinaryCache {
            objects,
            url: url.into(),
            store_dir,
            compression: Compression::Xz,
            secret_keys: Vec::new(),
            trusted_keys: None,
            writable: true,
            write_nar_listing: false,
            stall_timeout: None,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a cache URL (`file://`, `s3://`, `http(s)://`) with Nix's
    /// parameters, reading `secret-key` files. Does not touch the cache yet.
    pub fn open(url: &str, store_dir: StoreDir) -> Result<Self, BinaryCacheError> {
        Self::open_inner(url, store_dir, None)
    }

    /// Like [`Self::open`], with explicit network behaviour for remote
    /// caches: connect timeout, stall timeout, and no hidden retries (the
    /// caller retries, see [`super::substituter`]).
    pub fn open_with(
        url: &str,
        store_dir: StoreDir,
        net: &NetOptions,
    ) -> Result<Self, BinaryCacheError> {
        Self::open_inner(url, store_dir, Some(net))
    }

    fn open_inner(
        url: &str,
        store_dir: StoreDir,
        net: Option<&NetOptions>,
    ) -> Result<Self, BinaryCacheError> {
        let parsed = CacheUrl::parse(url)?;
        let open_err = |source| BinaryCacheError::Open {
            url: url.to_owned(),
            source: Box::new(source),
        };
        let (objects, writable): (Arc<dyn ObjectStore>, bool) = match &parsed.location {
            CacheLocation::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| BinaryCacheError::Open {
                    url: url.to_owned(),
                    source: Box::new(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    }),
                })?;
                // Through the platform layer: Windows needs busy renames retried.
                (
                    crate::os::objects::file_objects(dir).map_err(open_err)?,
                    true,
                )
            }
            CacheLocation::S3 { .. } => (s3_store(&parsed.location, net).map_err(open_err)?, true),
            CacheLocation::Http(base) => (http_store(base, net).map_err(open_err)?, false),
        };
        let remote = !matches!(parsed.location, CacheLocation::File(_));
        let mut cache = BinaryCache::new(objects, url, store_dir);
        cache.compression = parsed.compression;
        cache.writable = writable;
        cache.write_nar_listing = parsed.write_nar_listing;
        if remote {
            cache.stall_timeout = net.map(|n| n.stall_timeout);
        }
        if let Some(file) = &parsed.secret_key_file {
            cache.secret_keys.push(read_secret_key(file)?);
        }
        Ok(cache)
    }

    /// Compress uploaded NARs with `c` (default xz, as Nix).
    pub fn with_compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// Sign uploaded narinfos with `key` (in addition to `secret-key=`).
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_keys.push(key);
        self
    }

    /// Require every narinfo read to be signed by one of `keys` (or to be
    /// content-addressed). Without this, signatures are not checked, as with
    /// Nix's `--no-check-sigs`.
    pub fn with_trusted_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.trusted_keys = Some(keys);
        self
    }

    /// Write `.ls` NAR listings with uploads (as `write-nar-listing=1`).
    pub fn with_nar_listing(mut self, on: bool) -> Self {
        self.write_nar_listing = on;
        self
    }

    /// Every store path the cache has a `.narinfo` for (lists the cache;
    /// plain HTTP caches cannot be listed).
    pub async fn all_paths(&self) -> Result<BTreeSet<StorePath>, BinaryCacheError> {
        let listed: Vec<object_store::ObjectMeta> = self
            .objects
            .list(None)
            .try_collect()
            .await
            .map_err(|e| obj_err(&self.url, "listing", &ObjPath::from(""), e))?;
        let mut out = BTreeSet::new();
        for meta in listed {
            let name = meta.location.to_string();
            if name.contains('/') || !name.ends_with(".narinfo") {
                continue;
            }
            if let Some(ni) = self.narinfo_unchecked_key(&meta.location).await? {
                out.insert(ni.store_path);
            }
        }
        Ok(out)
    }

    async fn narinfo_unchecked_key(
        &self,
        key: &ObjPath,
    ) -> Result<Option<NarInfo>, BinaryCacheError> {
        let Some(bytes) = self.get_bytes(key).await? else {
            return Ok(None);
        };
        NarInfo::parse_bytes(&bytes, &self.store_dir)
            .map(Some)
            .map_err(|source| BinaryCacheError::NarInfo {
                url: self.url.clone(),
                key: key.to_string(),
                source,
            })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads `nix-cache-info`; if it is missing and the cache is writable,
    /// writes Nix's default. Fails if the cache is for another store dir.
    pub async fn init(&self) -> Result<CacheInfo, BinaryCacheError> {
        let key = ObjPath::from(cache_info::FILE_NAME);
        let info = match self.get_bytes(&key).await? {
            Some(bytes) => {
                CacheInfo::parse_bytes(&bytes).map_err(|source| BinaryCacheError::CacheInfo {
                    url: self.url.clone(),
                    source,
                })?
            }
            None => {
                let info = CacheInfo::new(self.store_dir.as_str());
                if self.writable {
                    self.put_bytes(&key, info.to_text().into_bytes()).await?;
                }
                info
            }
        };
        if info.store_dir != self.store_dir.as_str() {
            return Err(BinaryCacheError::WrongStoreDir {
                url: self.url.clone(),
                cache: info.store_dir,
                ours: self.store_dir.as_str().to_owned(),
            });
        }
        Ok(info)
    }

    /// The configured stall timeout, if any.
    pub fn stall_timeout(&self) -> Option<Duration> {
        self.stall_timeout
    }

    /// Starts a GET, failing if the response does not start within the
    /// stall timeout.
    async fn start_get(
        &self,
        key: &ObjPath,
    ) -> Result<object_store::GetResult, object_store::Error> {
        let what = format!("{}/{key}", self.url.trim_end_matches('/'));
        match net::within(self.stall_timeout, &what, self.objects.get(key)).await {
            Ok(r) => r,
            Err(e) => Err(object_store::Error::Generic {
                store: "b3",
                source: Box::new(e),
            }),
        }
    }

    /// The body of a GET as a byte stream, guarded against stalls.
    fn body_stream(
        &self,
        key: &ObjPath,
        got: object_store::GetResult,
    ) -> futures::stream::BoxStream<'static, io::Result<bytes::Bytes>> {
        let stream = got.into_stream().map_err(io::Error::other);
        match self.stall_timeout {
            None => Box::pin(stream),
            Some(d) => {
                let what = format!("{}/{key}", self.url.trim_end_matches('/'));
                Box::pin(net::StallGuard::new(stream, d, what))
            }
        }
    }

    async fn get_bytes(&self, key: &ObjPath) -> Result<Option<bytes::Bytes>, BinaryCacheError> {
        let got = match self.start_get(key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(obj_err(&self.url, "reading", key, e)),
        };
        let mut body = self.body_stream(key, got);
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            obj_err(
                &self.url,
                "reading",
                key,
                object_store::Error::Generic {
                    store: "b3",
                    source: Box::new(e),
                },
            )
        })? {
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out.freeze()))
    }

    async fn put_bytes(&self, key: &ObjPath, data: Vec<u8>) -> Result<(), BinaryCacheError> {
        if !self.writable {
            return Err(BinaryCacheError::ReadOnly(self.url.clone()));
        }
        self.objects
            .put(key, PutPayload::from(data))
            .await
            .map_err(|e| obj_err(&self.url, "writing", key, e))?;
        Ok(())
    }

    async fn exists(&self, key: &ObjPath) -> Result<bool, BinaryCacheError> {
        match self.objects.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(obj_err(&self.url, "checking", key, e)),
        }
    }

    fn narinfo_key(path: &StorePath) -> ObjPath {
        ObjPath::from(format!("{}.narinfo", path.hash_part()))
    }

    /// Whether the cache has a `.narinfo` for `path` (not fetched or checked).
    pub async fn has_narinfo(&self, path: &StorePath) -> Result<bool, BinaryCacheError> {
        self.exists(&Self::narinfo_key(path)).await
    }

    /// Fetches and checks the `.narinfo` of `path`; `None` if absent.
    pub async fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, BinaryCacheError> {
        let key = Self::narinfo_key(path);
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        let info = NarInfo::parse_bytes(&bytes, &self.store_dir).map_err(|source| {
            BinaryCacheError::NarInfo {
                url: self.url.clone(),
                key: key.to_string(),
                source,
            }
        })?;
        if &info.store_path != path {
            return Err(BinaryCacheError::PathMismatch {
                url: self.url.clone(),
                key: key.to_string(),
                wanted: self.store_dir.display(path),
                found: self.store_dir.display(&info.store_path),
            });
        }
        self.check_trust(&info)?;
        Ok(Some(info))
    }

    fn check_trust(&self, info: &NarInfo) -> Result<(), BinaryCacheError> {
        let Some(keys) = &self.trusted_keys else {
            return Ok(());
        };
        if info.count_valid_sigs(&self.store_dir, keys) > 0 || self.ca_proves_path(info) {
            return Ok(());
        }
        Err(BinaryCacheError::Untrusted {
            path: self.store_dir.display(&info.store_path),
            url: self.url.clone(),
        })
    }

    /// Whether an unsigned narinfo proves itself by content address. Only
    /// `fixed:r:sha256` does here: its hash is the NAR hash, which the
    /// download verifies. (Nix also accepts `text:` and flat CAs, whose
    /// hashes cover file contents b3 does not re-hash while streaming; b3
    /// requires a signature for those.)
    fn ca_proves_path(&self, info: &NarInfo) -> bool {
        let Some(ca) = &info.ca else { return false };
        ca.method == ContentAddressMethod::Fixed(FileIngestionMethod::Recursive)
            && ca.hash == info.nar_hash
            && to_path_info(info).ca_matches_path(&self.store_dir)
    }

    /// The NAR of `info`, decompressed and verified against its `NarHash`
    /// and `NarSize` while it streams.
    pub async fn nar_reader(&self, info: &NarInfo) -> Result<BoxReader<'static>, BinaryCacheError> {
        let stream = self.nar_body(info).await?;
        let compressed = tokio_util::io::StreamReader::new(stream);
        let nar = decompress_reader(info.compression, compressed);
        Ok(Box::pin(VerifyingReader::new(
            nar,
            self.store_dir.display(&info.store_path),
            info.nar_hash,
            info.nar_size,
        )))
    }

    /// The NAR file of `info` as it is stored (compressed), chunk by chunk,
    /// guarded against stalls.
    pub async fn nar_body(
        &self,
        info: &NarInfo,
    ) -> Result<futures::stream::BoxStream<'static, io::Result<bytes::Bytes>>, BinaryCacheError>
    {
        let key = self.nar_key(info)?;
        let got = self
            .start_get(&key)
            .await
            .map_err(|e| obj_err(&self.url, "fetching", &key, e))?;
        Ok(self.body_stream(&key, got))
    }

    fn nar_key(&self, info: &NarInfo) -> Result<ObjPath, BinaryCacheError> {
        let bad = || BinaryCacheError::BadNarUrl {
            url: self.url.clone(),
            path: self.store_dir.display(&info.store_path),
            nar_url: info.url.clone(),
        };
        // Only plain relative paths: no scheme, no absolute path, no `..`.
        if info.url.contains("://")
            || info.url.starts_with('/')
            || info
                .url
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad());
        }
        ObjPath::parse(&info.url).map_err(|_| bad())
    }

    /// Where Nix keeps the build log of derivation `drv` in a cache:
    /// `log/<drv base name>`, uncompressed text.
    fn log_key(drv: &StorePath) -> ObjPath {
        ObjPath::from(format!("log/{}", drv.base_name()))
    }

    /// Uploads the build log of derivation `drv` (as `nix store copy-log`).
    pub async fn upload_log(&self, drv: &StorePath, log: Vec<u8>) -> Result<(), BinaryCacheError> {
        self.put_bytes(&Self::log_key(drv), log).await
    }

    /// The build log of derivation `drv` in the cache, if there is one.
    pub async fn build_log(
        &self,
        drv: &StorePath,
    ) -> Result<Option<bytes::Bytes>, BinaryCacheError> {
        self.get_bytes(&Self::log_key(drv)).await
    }

    /// Whether the cache holds a build log for derivation `drv`.
    pub async fn has_build_log(&self, drv: &StorePath) -> Result<bool, BinaryCacheError> {
        self.exists(&Self::log_key(drv)).await
    }

    /// Uploads `info.path` from its NAR: NAR first, `.narinfo` last. The
    /// references' `.narinfo`s must already be in the cache. Returns the
    /// narinfo written (or the existing one if the path was already there).
    pub async fn upload(
        &self,
        info: &ValidPathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<NarInfo, StoreError> {
        if !self.writable {
            return Err(BinaryCacheError::ReadOnly(self.url.clone()).into());
        }
        let path_str = self.store_dir.display(&info.path);
        if let Some(existing) = self.narinfo_unchecked(&info.path).await? {
            return Ok(existing);
        }
        for r in &info.references {
            if r != &info.path && !self.has_narinfo(r).await? {
                return Err(StoreError::MissingReference {
                    path: path_str,
                    reference: self.store_dir.display(r),
                });
            }
        }
        self.upload_unchecked(info, nar).await
    }

    /// [`Self::upload`] without looking for an existing narinfo or for the
    /// references' ones: for callers that know (a copy in reference order).
    pub(super) async fn upload_unchecked(
        &self,
        info: &ValidPathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<NarInfo, StoreError> {
        let (tmp_key, mut upload) = self.start_nar_upload().await?;
        let streamed = self.stream_compressed(nar, &mut upload).await;
        self.finish_nar_upload(info, tmp_key, upload, streamed)
            .await
    }

    /// Starts the multipart upload of a NAR file under a temporary name.
    pub(super) async fn start_nar_upload(&self) -> Result<(ObjPath, WriteMultipart), StoreError> {
        if !self.writable {
            return Err(BinaryCacheError::ReadOnly(self.url.clone()).into());
        }
        let mut rnd = [0u8; 16];
        getrandom::fill(&mut rnd).map_err(|e| StoreError::Other(format!("random: {e}")))?;
        let tmp_key = ObjPath::from(format!(
            "nar/.tmp-{}.nar{}",
            data_encoding::HEXLOWER.encode(&rnd),
            self.compression.extension()
        ));
        let upload = self
            .objects
            .put_multipart(&tmp_key)
            .await
            .map_err(|e| obj_err(&self.url, "uploading", &tmp_key, e))?;
        Ok((
            tmp_key,
            WriteMultipart::new_with_chunk_size(upload, 8 << 20),
        ))
    }

    /// Ends the NAR upload started by [`Self::start_nar_upload`]: aborts it
    /// if streaming failed or the NAR is not the one `info` describes, else
    /// renames it to `nar/<file hash>.nar<ext>` and writes the `.ls`
    /// listing (if any) and the signed `.narinfo`, last.
    pub(super) async fn finish_nar_upload(
        &self,
        info: &ValidPathInfo,
        tmp_key: ObjPath,
        upload: WriteMultipart,
        streamed: Result<Streamed, StoreError>,
    ) -> Result<NarInfo, StoreError> {
        let path_str = self.store_dir.display(&info.path);
        let Streamed {
            nar_hash,
            nar_size,
            file_hash,
            file_size,
            listing,
        } = match streamed {
            Ok(v) => v,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        };
        let mismatch = if nar_hash != info.nar_hash {
            Some(StoreError::NarHashMismatch {
                path: path_str.clone(),
                expected: info.nar_hash.to_string(),
                got: nar_hash.to_string(),
            })
        } else if nar_size != info.nar_size {
            Some(StoreError::NarSizeMismatch {
                path: path_str.clone(),
                expected: info.nar_size,
                got: nar_size,
            })
        } else {
            None
        };
        if let Some(e) = mismatch {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload
            .finish()
            .await
            .map_err(|e| obj_err(&self.url, "uploading", &tmp_key, e))?;

        let nar_url = format!(
            "nar/{}.nar{}",
            file_hash.to_nix32(),
            self.compression.extension()
        );
        let final_key = ObjPath::from(nar_url.as_str());
        self.objects
            .rename(&tmp_key, &final_key)
            .await
            .map_err(|e| obj_err(&self.url, "renaming", &tmp_key, e))?;
        if let Some(ls) = listing {
            let key = ObjPath::from(format!("{}.ls", info.path.hash_part()));
            self.put_bytes(&key, ls.into_bytes()).await?;
        }

        let mut narinfo = NarInfo {
            store_path: info.path.clone(),
            url: nar_url,
            compression: self.compression,
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash,
            nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            system: None,
            sigs: info.signatures.clone(),
            ca: info.ca,
        };
        for key in &self.secret_keys {
            narinfo.sign(&self.store_dir, key);
        }
        self.put_bytes(
            &Self::narinfo_key(&info.path),
            narinfo.to_text(&self.store_dir).into_bytes(),
        )
        .await?;
        Ok(narinfo)
    }

    /// The compression NARs uploaded here get.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether uploads write `.ls` listings.
    pub(super) fn writes_nar_listing(&self) -> bool {
        self.write_nar_listing
    }

    async fn narinfo_unchecked(
        &self,
        path: &StorePath,
    ) -> Result<Option<NarInfo>, BinaryCacheError> {
        let key = Self::narinfo_key(path);
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        NarInfo::parse_bytes(&bytes, &self.store_dir)
            .map(Some)
            .map_err(|source| BinaryCacheError::NarInfo {
                url: self.url.clone(),
                key: key.to_string(),
                source,
            })
    }

    /// Reads the NAR, validating its structure (b3-nar's reader) and
    /// hashing it and the compressed bytes, into `upload`. Bytes after the
    /// end of the archive are an error.
    async fn stream_compressed(
        &self,
        nar: &mut (dyn AsyncRead + Unpin + Send),
        upload: &mut WriteMultipart,
    ) -> Result<Streamed, StoreError> {
        let sink = SharedBuf::default();
        let mut p = Pipeline {
            raw: SharedBuf::default(),
            nar_hasher: Hasher::new(HashAlgo::Sha256),
            out: Some(Compressing {
                enc: compress_writer(self.compression, sink.clone()),
                sink,
                file_hasher: Hasher::new(HashAlgo::Sha256),
                upload,
            }),
        };
        let listing = walk_nar(nar, &mut p, self.write_nar_listing).await?;
        let nar_size = p.nar_hasher.bytes_hashed();
        let nar_hash = p.nar_hasher.finish();
        let Some(mut out) = p.out else {
            return Err(StoreError::Other("NAR upload lost its compressor".into()));
        };
        out.enc
            .shutdown()
            .await
            .map_err(|e| StoreError::io("compressing NAR", e))?;
        out.drain().await?;
        let file_size = out.file_hasher.bytes_hashed();
        Ok(Streamed {
            nar_hash,
            nar_size,
            file_hash: out.file_hasher.finish(),
            file_size,
            listing,
        })
    }
}

/// Reads the NAR `nar`, validating its structure (b3-nar's reader) and
/// hashing it, and returns its NAR hash and size and (with `listing`) its
/// `.ls` listing. Bytes after the end of the archive are an error.
pub(super) async fn scan_nar(
    nar: &mut (dyn AsyncRead + Unpin + Send),
    listing: bool,
) -> Result<(Hash, u64, Option<String>), StoreError> {
    let mut p = Pipeline {
        raw: SharedBuf::default(),
        nar_hasher: Hasher::new(HashAlgo::Sha256),
        out: None,
    };
    let listing = walk_nar(nar, &mut p, listing).await?;
    let size = p.nar_hasher.bytes_hashed();
    Ok((p.nar_hasher.finish(), size, listing))
}

/// Walks the NAR `nar` event by event, handing every byte read to `p`,
/// building the listing if asked. Fails on a malformed archive or on bytes
/// after its end.
async fn walk_nar(
    nar: &mut (dyn AsyncRead + Unpin + Send),
    p: &mut Pipeline<'_>,
    want_listing: bool,
) -> Result<Option<String>, StoreError> {
    let io_err = |e| StoreError::io("streaming NAR to the binary cache", e);
    let mut reader = b3_nar::AsyncNarReader::new(Tee {
        inner: nar,
        copy: p.raw.clone(),
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut listing = want_listing.then(ListingBuilder::new);
    while let Some(ev) = reader.next().await? {
        let mut file = None;
        match ev {
            b3_nar::AsyncEvent::File {
                mut contents,
                size,
                executable,
            } => {
                loop {
                    let n = contents.read(&mut buf).await.map_err(io_err)?;
                    if n == 0 {
                        break;
                    }
                    p.pump().await?;
                }
                file = Some((size, executable));
            }
            b3_nar::AsyncEvent::DirectoryStart => {
                if let Some(l) = &mut listing {
                    l.directory_start()
                }
            }
            b3_nar::AsyncEvent::Entry { name } => {
                if let Some(l) = &mut listing {
                    l.entry(name)
                }
            }
            b3_nar::AsyncEvent::Symlink { target } => {
                if let Some(l) = &mut listing {
                    l.symlink(target)
                }
            }
            b3_nar::AsyncEvent::DirectoryEnd => {
                if let Some(l) = &mut listing {
                    l.directory_end()
                }
            }
        }
        if let (Some(l), Some((size, exec))) = (&mut listing, file) {
            // Just past the contents: they started `size` bytes back.
            l.file(size, exec, reader.offset() - size);
        }
        p.pump().await?;
    }
    let mut rest = reader.into_inner();
    if rest.read(&mut buf[..1]).await.map_err(io_err)? != 0 {
        return Err(StoreError::Other(format!(
            "invalid NAR: trailing data after the end of the archive (at byte {})",
            p.nar_hasher.bytes_hashed()
        )));
    }
    p.pump().await?;
    Ok(listing.and_then(ListingBuilder::finish))
}

/// What streaming a NAR into the cache measured.
pub(super) struct Streamed {
    pub(super) nar_hash: Hash,
    pub(super) nar_size: u64,
    pub(super) file_hash: Hash,
    pub(super) file_size: u64,
    /// The `.ls` listing, when `write-nar-listing` is on.
    pub(super) listing: Option<String>,
}

/// NAR bytes → sha256 (+ compressor → sha256 + multipart upload).
struct Pipeline<'u> {
    /// What the NAR reader has consumed but not yet been handled.
    raw: SharedBuf,
    nar_hasher: Hasher,
    /// Where the NAR goes, compressed; `None` when it is only checked.
    out: Option<Compressing<'u>>,
}

/// The compressing half of a [`Pipeline`].
struct Compressing<'u> {
    enc: super::compression::BoxWriter<'static>,
    /// Compressor output not yet uploaded.
    sink: SharedBuf,
    file_hasher: Hasher,
    upload: &'u mut WriteMultipart,
}

impl Pipeline<'_> {
    async fn pump(&mut self) -> Result<(), StoreError> {
        let raw = self.raw.take();
        if !raw.is_empty() {
            self.nar_hasher.update(&raw);
            if let Some(out) = &mut self.out {
                out.enc
                    .write_all(&raw)
                    .await
                    .map_err(|e| StoreError::io("compressing NAR", e))?;
            }
        }
        match &mut self.out {
            Some(out) => out.drain().await,
            None => Ok(()),
        }
    }
}

impl Compressing<'_> {
    /// Uploads what the compressor has produced.
    async fn drain(&mut self) -> Result<(), StoreError> {
        let chunk = self.sink.take();
        if chunk.is_empty() {
            return Ok(());
        }
        self.file_hasher.update(&chunk);
        // Bounded memory: at most a few parts in flight.
        self.upload
            .wait_for_capacity(4)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        self.upload.write(&chunk);
        Ok(())
    }
}

/// Passes reads through, keeping a copy of every byte read.
struct Tee<'a> {
    inner: &'a mut (dyn AsyncRead + Unpin + Send),
    copy: SharedBuf,
}

impl AsyncRead for Tee<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            self.copy.extend(&buf.filled()[before..]);
        }
        r
    }
}

/// The path info a narinfo describes.
pub fn to_path_info(n: &NarInfo) -> ValidPathInfo {
    let mut info = ValidPathInfo::new(n.store_path.clone(), n.nar_hash, n.nar_size);
    info.references = n.references.clone();
    info.deriver = n.deriver.clone();
    info.signatures = n.sigs.clone();
    info.ca = n.ca;
    info
}

fn read_secret_key(file: &FsPath) -> Result<SecretKey, BinaryCacheError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| BinaryCacheError::KeyFile {
        file: name.clone(),
        source,
    })?;
    text.parse()
        .map_err(|source| BinaryCacheError::Key { file: name, source })
}

/// Client options for remote caches: with `net`, the connect timeout, no
/// whole-request deadline (stalls are caught per chunk instead) and no
/// retries inside the client.
#[cfg(any(feature = "s3", feature = "http"))]
fn client_options(base_is_http: bool, net: Option<&NetOptions>) -> object_store::ClientOptions {
    let mut o = object_store::ClientOptions::new().with_allow_http(base_is_http);
    if let Some(n) = net {
        o = o
            .with_connect_timeout(n.connect_timeout)
            .with_timeout_disabled();
    }
    o
}

#[cfg(any(feature = "s3", feature = "http"))]
fn retry_config(net: Option<&NetOptions>) -> object_store::RetryConfig {
    match net {
        Some(_) => object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        },
        None => object_store::RetryConfig::default(),
    }
}

#[cfg(feature = "s3")]
fn s3_store(
    loc: &CacheLocation,
    net: Option<&NetOptions>,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    use object_store::aws::AmazonS3Builder;
    let CacheLocation::S3 {
        bucket,
        prefix,
        region,
        endpoint,
        profile,
    } = loc
    else {
        unreachable!("s3_store called with a non-S3 location")
    };
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(region.as_deref().unwrap_or("us-east-1"));
    if let Some(e) = endpoint {
        // Custom endpoints (minio, s3s, …) mostly need path-style requests;
        // Nix's `addressing-style=auto` does the same.
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    let is_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    b = b
        .with_client_options(client_options(is_http, net))
        .with_retry(retry_config(net));
    if let Some(p) = profile {
        if let Some((ak, sk)) = aws_profile_credentials(p) {
            b = b.with_access_key_id(ak).with_secret_access_key(sk);
        }
    }
    let store: Arc<dyn ObjectStore> = Arc::new(b.build()?);
    if prefix.is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(object_store::prefix::PrefixStore::new(
            store,
            prefix.as_str(),
        )))
    }
}

/// Static credentials of `profile` from `~/.aws/credentials` (or
/// `AWS_SHARED_CREDENTIALS_FILE`); `None` if absent.
#[cfg(feature = "s3")]
fn aws_profile_credentials(profile: &str) -> Option<(String, String)> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let (mut ak, mut sk, mut inside) = (None, None, false);
    for line in text.lines().map(str::trim) {
        if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = sec.trim() == profile;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "aws_access_key_id" => ak = Some(v.trim().to_owned()),
                    "aws_secret_access_key" => sk = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
    }
    Some((ak?, sk?))
}

#[cfg(not(feature = "s3"))]
fn s3_store(
    _: &CacheLocation,
    _: Option<&NetOptions>,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    Err(object_store::Error::NotImplemented {
        operation: "s3:// caches (build b3-store with feature \"s3\")".into(),
        implementer: "b3".into(),
    })
}

#[cfg(feature = "http")]
fn http_store(
    base: &str,
    net: Option<&NetOptions>,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let s = object_store::http::HttpBuilder::new()
        .with_url(base)
        .with_client_options(client_options(base.starts_with("http://"), net))
        .with_retry(retry_config(net))
        .build()?;
    Ok(Arc::new(s))
}

#[cfg(not(feature = "http"))]
fn http_store(
    _: &str,
    _: Option<&NetOptions>,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    Err(object_store::Error::NotImplemented {
        operation: "http(s):// caches (build b3-store with feature \"http\")".into(),
        implementer: "b3".into(),
    })
}

/// An always-ready in-memory sink the compressor writes into; the upload
/// loop drains it after every write, so it never holds more than one
/// compressed chunk.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn extend(&self, data: &[u8]) {
        match self.0.lock() {
            Ok(mut g) => g.extend_from_slice(data),
            Err(p) => p.into_inner().extend_from_slice(data),
        }
    }

    fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl AsyncWrite for SharedBuf {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock() {
            Ok(mut g) => g.extend_from_slice(buf),
            Err(p) => p.into_inner().extend_from_slice(buf),
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl StoreRead for BinaryCache {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self.narinfo(path).await?.is_some())
    }

    async fn query_path_info(&self, path: &StorePath) -> Result<Option<ValidPathInfo>, StoreError> {
        let Some(ni) = self.narinfo(path).await? else {
            return Ok(None);
        };
        let info = to_path_info(&ni);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_NARINFOS {
            recent.clear();
        }
        recent.insert(path.clone(), ni);
        Ok(Some(info))
    }

    async fn nar_from_path(
        &self,
        path: &StorePath,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, StoreError> {
        let known = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
        let info = match known {
            Some(ni) => ni,
            None => self
                .narinfo(path)
                .await?
                .ok_or_else(|| StoreError::InvalidPath(self.store_dir.display(path)))?,
        };
        let mut r = self.nar_reader(&info).await?;
        let n = tokio::io::copy(&mut r, sink).await.map_err(|e| {
            StoreError::io(
                format!("streaming the NAR of '{}'", self.store_dir.display(path)),
                e,
            )
        })?;
        sink.flush()
            .await
            .map_err(|e| StoreError::io("flushing NAR sink", e))?;
        Ok(n)
    }
}

#[async_trait]
impl StoreWrite for BinaryCache {
    async fn add_nar(
        &self,
        info: &ValidPathInfo,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        self.upload(info, source).await.map(|_| ())
    }

    async fn add_text(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        let hash = Hash::digest(HashAlgo::Sha256, text);
        let path = self.store_dir.make_text_path(name, &hash, references)?;
        let nar = b3_nar::Tree::file(text.to_vec()).to_nar()?;
        let mut info = ValidPathInfo::new(
            path.clone(),
            Hash::digest(HashAlgo::Sha256, &nar),
            nar.len() as u64,
        );
        info.references = references.clone();
        info.ca = Some(ContentAddress {
            method: ContentAddressMethod::Text,
            hash,
        });
        self.upload(&info, &mut &nar[..]).await?;
        Ok(path)
    }

    async fn add_path(
        &self,
        name: &str,
        source: &FsPath,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        // Two streaming passes: hash first (the path depends on it), then
        // dump again into the upload.
        let src = source.to_path_buf();
        let (nar_hash, nar_size) = tokio::task::spawn_blocking(move || b3_nar::hash_path(&src))
            .await
            .map_err(|e| StoreError::Other(format!("hashing task failed: {e}")))?
            .map(|h| (h, h.size))?;
        let nar_hash = Hash::from_bytes(HashAlgo::Sha256, &nar_hash.sha256)
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let ca_hash = match method {
            FileIngestionMethod::Recursive if algo == HashAlgo::Sha256 => nar_hash,
            FileIngestionMethod::Recursive => {
                let src = source.to_path_buf();
                let (h, _) = tokio::task::spawn_blocking(move || {
                    b3_nar::dump_path(&src, Hasher::new(algo)).map(|(h, _)| h.finish())
                })
                .await
                .map_err(|e| StoreError::Other(format!("hashing task failed: {e}")))?
                .map(|h| (h, ()))?;
                h
            }
            FileIngestionMethod::Flat => {
                let mut f = tokio::fs::File::open(source)
                    .await
                    .map_err(|e| StoreError::io(format!("opening '{}'", source.display()), e))?;
                let mut hasher = Hasher::new(algo);
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = f.read(&mut buf).await.map_err(|e| {
                        StoreError::io(format!("reading '{}'", source.display()), e)
                    })?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                hasher.finish()
            }
        };
        let path = self.store_dir.make_fixed_output_path(
            method,
            &ca_hash,
            name,
            &BTreeSet::new(),
            false,
        )?;
        let mut info = ValidPathInfo::new(path.clone(), nar_hash, nar_size);
        info.ca = Some(ContentAddress {
            method: ContentAddressMethod::Fixed(method),
            hash: ca_hash,
        });
        let (mut rd, mut wr) = tokio::io::duplex(256 << 10);
        let src = source.to_path_buf();
        let dump = tokio::spawn(async move {
            let r = b3_nar::dump_path_async(&src, &mut wr).await;
            let _ = wr.shutdown().await;
            r
        });
        let up = self.upload(&info, &mut rd).await;
        drop(rd);
        let dumped = dump
            .await
            .map_err(|e| StoreError::Other(format!("NAR dump task failed: {e}")))?;
        up?;
        dumped?;
        Ok(path)
    }
}
