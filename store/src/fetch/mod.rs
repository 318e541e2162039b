//! The one network module of b3: every download (the evaluator's
//! `builtins.fetchurl`/`fetchTarball`, the builder's `builtin:fetchurl`) goes
//! through [`download`], and every tarball is unpacked by [`unpack`].
//!
//! - [`download`]: `file://`, `http://` and `https://` (rustls) URLs streamed
//!   into any `Write` sink while hashing, with redirects, connect and stall
//!   timeouts, and retries of transient failures before the first byte.
//! - [`unpack`]: tar archives, plain or compressed with gzip, xz, bzip2 or
//!   zstd (detected from their magic bytes), unpacked into a fresh directory;
//!   hostile entries (absolute paths, `..`, writes through symlinks, device
//!   files) are refused rather than skipped.

pub mod download;
pub mod unpack;

pub use download::{download, download_to_file, Downloaded, FetchOptions};
pub use unpack::{single_top_level, unpack_tarball, unpack_tarball_file, Compression};

/// Why a fetch failed; messages follow Nix's where Nix has one.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported URL '{0}': b3 fetches file://, http:// and https:// URLs")]
    UnsupportedScheme(String),
    #[error("invalid URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("unable to download '{url}': HTTP error {status}")]
    Status { url: String, status: u16 },
    #[error("unable to download '{url}': {reason}")]
    Transport { url: String, reason: String },
    #[error("unable to download '{url}': no data received for {secs} s")]
    Stalled { url: String, secs: u64 },
    #[error("unable to download '{url}': opening '{path}': {source}")]
    File {
        url: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the download of '{url}': {source}")]
    Sink {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
}
