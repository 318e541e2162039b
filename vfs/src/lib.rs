//! b3-vfs: store paths served from a content-addressed object database.
//!
//! - [`odb`]: the object database (deduplicated BLAKE3-addressed blobs,
//!   hashed directory manifests, root records per store path), filled from
//!   NAR streams and rendered back to byte-identical NARs.
//! - [`view`]: a read-only FUSE filesystem presenting a chosen set of store
//!   paths straight from the object database, with optional access tracing.
//!
//! The WinFSP view would live in its own crate (its binding is GPL-3.0).

pub mod odb;
#[cfg(target_os = "linux")]
pub mod runtime;
#[cfg(target_os = "linux")]
pub mod view;
