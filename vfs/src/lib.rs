//! b3-vfs: store paths served from a content-addressed object database.
//!
//! Will own: the object database (deduplicated blobs, hashed directory
//! manifests), read-only FUSE views of a closure, per-runtime views and access
//! tracing. The WinFSP view will live in its own crate (GPL-3.0 binding). Not
//! written yet.
