//! b3-store: store paths, hashes, derivations and the stores themselves.
//!
//! Owns: nix-base32 and the hash forms Nix accepts; store path parsing and
//! computation; the ATerm `.drv` format and `hashDerivationModulo`; the async
//! `StoreRead` / `StoreWrite` / `StoreBuild` traits; the local store (SQLite
//! metadata, atomic adds, locks, GC, verify) and, later, binary-cache stores.

pub mod activity;
pub mod binary_cache;
pub mod canonicalise;
pub mod derivation;
pub mod export;
pub mod fetch;
pub mod hash;
pub mod local;
pub mod lock;
pub mod nixbase32;
pub mod os;
pub mod path;
pub mod refscan;
pub mod settings;
pub mod substitute;
pub mod traits;
