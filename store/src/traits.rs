//! The store traits every b3 store implements, and the path metadata they share.
//!
//! - [`StoreRead`]: validity, path info, NAR streaming, closures.
//! - [`StoreWrite`]: adding paths (from a NAR with its expected info, from
//!   text, from a filesystem path as source).
//! - [`StoreBuild`]: realising derivations (implemented by the builder).
//!
//! A store that cannot write or build simply does not implement the trait.
//! The traits use boxed futures (`async_trait`) so they can be used as trait
//! objects (`Arc<dyn StoreRead>` lists of substituters, etc.); native `async
//! fn` in traits is not dyn-compatible.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::hash::{Hash, HashAlgo};
use crate::path::{ContentAddress, FileIngestionMethod, StoreDir, StorePath, StorePathError};

/// Metadata of a valid store path, shared by every store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPathInfo {
    pub path: StorePath,
    /// SHA-256 of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Store paths this path refers to (may include itself).
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// `keyname:base64(signature)` strings.
    pub signatures: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
    /// Seconds since the Unix epoch; `None` where the store does not know.
    pub registration_time: Option<i64>,
    /// Built locally, so trusted without signatures.
    pub ultimate: bool,
}

impl ValidPathInfo {
    /// Info with the given NAR hash and size and nothing else.
    pub fn new(path: StorePath, nar_hash: Hash, nar_size: u64) -> Self {
        ValidPathInfo {
            path,
            nar_hash,
            nar_size,
            references: BTreeSet::new(),
            deriver: None,
            signatures: BTreeSet::new(),
            ca: None,
            registration_time: None,
            ultimate: false,
        }
    }

    /// The message signatures are made over (Nix's fingerprint):
    /// `1;<path>;<narHash sha256:nix32>;<narSize>;<comma-joined refs>`.
    pub fn fingerprint(&self, store_dir: &StoreDir) -> String {
        let refs: Vec<String> = self
            .references
            .iter()
            .map(|r| store_dir.display(r))
            .collect();
        format!(
            "1;{};{};{};{}",
            store_dir.display(&self.path),
            self.nar_hash,
            self.nar_size,
            refs.join(",")
        )
    }

    /// Whether the content address (if any) actually yields this path: a
    /// content-addressed path proves itself without signatures.
    pub fn ca_matches_path(&self, store_dir: &StoreDir) -> bool {
        let Some(ca) = &self.ca else { return false };
        let mut refs = self.references.clone();
        let self_ref = refs.remove(&self.path);
        store_dir
            .make_path_from_ca(self.path.name(), ca, &refs, self_ref)
            .is_ok_and(|p| p == self.path)
    }
}

/// Errors any store may return.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error("hash mismatch importing path '{path}':\n  specified: {expected}\n  got:       {got}")]
    NarHashMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("size mismatch importing path '{path}': specified {expected} bytes, got {got}")]
    NarSizeMismatch {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("cannot add '{path}': its reference '{reference}' is not valid in this store")]
    MissingReference { path: String, reference: String },
    #[error("content address '{ca}' does not match path '{path}'")]
    CaMismatch { path: String, ca: String },
    #[error("invalid NAR: {0}")]
    Nar(#[from] b3_nar::Error),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store database: {0}")]
    Db(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Reading from a store.
#[async_trait]
pub trait StoreRead: Send + Sync {
    /// The logical store directory paths are computed against.
    fn store_dir(&self) -> &StoreDir;

    /// Whether `path` is valid (registered and complete).
    async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError>;

    /// The metadata of `path`, or `None` if it is not valid.
    async fn query_path_info(&self, path: &StorePath) -> Result<Option<ValidPathInfo>, StoreError>;

    /// Stream the NAR serialisation of `path` into `sink`; returns its size.
    async fn nar_from_path(
        &self,
        path: &StorePath,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, StoreError>;

    /// Paths that refer to `path`. Stores without a reverse index say so.
    async fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        let _ = path;
        Err(StoreError::Unsupported(
            "this store cannot list referrers".into(),
        ))
    }

    /// The closure (requisites) of `paths`: every path reachable through
    /// references, the paths themselves included. Fails on an invalid path.
    async fn query_closure(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        let mut todo: Vec<StorePath> = paths.iter().cloned().collect();
        while let Some(p) = todo.pop() {
            if seen.contains(&p) {
                continue;
            }
            let info = self
                .query_path_info(&p)
                .await?
                .ok_or_else(|| StoreError::InvalidPath(self.store_dir().display(&p)))?;
            todo.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(p);
        }
        Ok(seen)
    }
}

/// Adding paths to a store.
#[async_trait]
pub trait StoreWrite: StoreRead {
    /// Add `info.path` from its NAR serialisation. The NAR hash and size are
    /// verified while streaming; on mismatch nothing is added. References must
    /// already be valid (a path may refer to itself). Adding a path that is
    /// already valid succeeds without reading `source`.
    async fn add_nar(
        &self,
        info: &ValidPathInfo,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError>;

    /// Add a text file (`builtins.toFile`): the path is computed from the
    /// name, the text's sha256 and the references.
    async fn add_text(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError>;

    /// Add a filesystem path as a source, like `nix-store --add` (recursive,
    /// sha256) or `nix-store --add-fixed [--recursive] ALGO`. Flat requires a
    /// regular file. Returns the store path (already valid if it was).
    async fn add_path(
        &self,
        name: &str,
        source: &Path,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError>;
}

/// Realising derivations. Implemented by the builder.
#[async_trait]
pub trait StoreBuild: StoreWrite {
    /// Make the requested outputs of the derivation at `drv_path` valid
    /// (building or substituting as needed); an empty `outputs` means all.
    /// Returns output name → store path.
    async fn realise(
        &self,
        drv_path: &StorePath,
        outputs: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, StorePath>, StoreError>;
}
