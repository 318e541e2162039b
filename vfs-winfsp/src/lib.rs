//! b3-vfs-winfsp: a read-only WinFSP view of store paths from b3's object
//! database, the Windows counterpart of `b3_vfs::view` (there are no mount
//! namespaces on Windows, so a view is a drive or directory mount point).
//!
//! - [`resolve`] (portable, tested on every host): Windows paths to nodes of
//!   the closure.
//! - [`router`] (portable, tested on every host): one file system for every
//!   runtime; a request goes to the runtime of the calling process, found by
//!   walking its parent-process chain (as spfs does), else the empty view;
//!   runtimes are reaped when none of their processes runs any more.
//! - `winview` (Windows only): the `winfsp::FileSystemContext` that routes
//!   each open through [`router`], and [`mount`](winview::mount). Type-checked from Linux with
//!   `cargo check --target x86_64-pc-windows-gnu --features docsrs-bindings`;
//!   never run here (no Windows host).
//!
//! Symlinks of the store are not presented yet (they would be reparse
//! points); they are left out of listings and fail to open.

pub mod resolve;
pub mod router;
#[cfg(windows)]
pub mod winview;
