//! Nix binary caches: the on-disk/on-wire format and a store backed by them.
//!
//! Owns: `nix-cache-info` and `.narinfo` parsing/printing (byte-identical to
//! Nix's writer), Nix's signing keys and narinfo signatures, the compressions
//! Nix caches use, cache URLs (`file://`, `s3://`, `http(s)://`) and the
//! cache store itself on top of `object_store`.
//!
//! Layout of a cache, as Nix writes it:
//! `nix-cache-info`, `<hashpart>.narinfo` per store path, and
//! `nar/<nix32 file hash>.nar[.xz|.bz2|.zst]`. A `.narinfo` is only written
//! after its NAR, and only once the `.narinfo`s of all its references exist,
//! so a reader that sees a narinfo can always fetch the whole closure.

pub mod cache_info;
pub mod compression;
pub mod copy;
pub mod listing;
pub mod narinfo;
pub mod net;
pub mod relay;
pub mod signing;
pub mod store;
pub mod substituter;
pub mod to_local;
pub mod url;
pub mod verify;

pub use cache_info::CacheInfo;
pub use compression::Compression;
pub use copy::{
    copy_cache_to_cache, copy_cache_to_local, copy_paths, copy_paths_with, CopyOptions,
    CopyProgress,
};
pub use narinfo::{NarInfo, NarInfoError};
pub use signing::{PublicKey, SecretKey, Signature, SigningError};
pub use store::{BinaryCache, BinaryCacheError};
pub use substituter::{SubstituterConfigError, SubstituterOptions, Substituters};
pub use url::CacheUrl;
