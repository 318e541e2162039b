//! b3-vfs: store paths served from a content-addressed object database.
//!
//! - [`odb`]: the object database (deduplicated BLAKE3-addressed blobs,
//!   hashed directory manifests, root records per store path), filled from
//!   NAR streams and rendered back to byte-identical NARs.
//! - [`view`]: a read-only FUSE filesystem presenting a chosen set of store
//!   paths straight from the object database, with optional access tracing.
//!
//! - [`runtime`]: commands in their own user + mount namespace that see
//!   exactly one closure at the store directory, with list/enter/stop.
//!
//! The object database also builds for Windows (without the `nar` feature
//! while b3-nar is Unix-only), for the WinFSP view in its own crate.

pub mod odb;
#[cfg(target_os = "linux")]
pub mod runtime;
#[cfg(target_os = "linux")]
pub mod view;
