//! Error types of b3-nar: why a NAR stream is invalid (with the byte offset
//! where it went wrong), and the I/O failures of dumping and restoring.

use std::io;
use std::path::PathBuf;

/// Why a NAR stream was rejected. Every variant is a property of the bytes,
/// so the same input always gives the same reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The stream does not start with the `nix-archive-1` string.
    #[error("not a NAR: wrong magic (expected \"nix-archive-1\")")]
    BadMagic,
    /// A structural token other than the one the grammar allows here.
    #[error("expected {expected}, found {found}")]
    UnexpectedToken {
        expected: &'static str,
        found: String,
    },
    /// A `type` value other than `regular`, `symlink` or `directory`.
    #[error("unknown node type {0}")]
    UnknownType(String),
    /// An entry name that cannot be a single path component.
    #[error("invalid entry name {name}: {why}")]
    BadName { name: String, why: &'static str },
    /// An entry name that is not greater than the previous one (byte order).
    #[error("entry {name} is not sorted after {prev}")]
    NotSorted { prev: String, name: String },
    /// The same entry name twice in one directory.
    #[error("duplicate entry {0}")]
    Duplicate(String),
    /// A symlink target that no filesystem can store.
    #[error("invalid symlink target {target}: {why}")]
    BadTarget { target: String, why: &'static str },
    /// Padding after a string that is not all zero bytes.
    #[error("non-zero padding")]
    NonZeroPadding,
    /// The input ended inside the archive.
    #[error("truncated NAR: unexpected end of input")]
    Truncated,
    /// A length field larger than this position allows.
    #[error("{what} length {len} exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// Directories nested deeper than the configured limit.
    #[error("directories nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Errors of every b3-nar operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NAR bytes are invalid at `offset` (counted from the first byte of
    /// the magic).
    #[error("invalid NAR at byte offset {offset}: {reason}")]
    Invalid { offset: u64, reason: Reason },
    /// Reading the NAR stream failed at `offset`.
    #[error("reading NAR at byte offset {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    /// Writing the NAR stream failed.
    #[error("writing NAR: {0}")]
    Write(#[source] io::Error),
    /// A filesystem operation on `path` failed while dumping or restoring.
    #[error("{op} '{path}': {source}")]
    Fs {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A file that is neither regular, directory nor symlink (NAR cannot hold it).
    #[error("file '{0}' has an unsupported type")]
    UnsupportedType(PathBuf),
    /// A regular file ended before the size its metadata announced.
    #[error("file '{0}' changed size while being archived")]
    FileChanged(PathBuf),
    /// The restore destination is already there.
    #[error("restore destination '{0}' already exists")]
    DestinationExists(PathBuf),
    /// The NAR encoder was driven out of grammar order (a programming error
    /// of the caller, or an invalid in-memory tree).
    #[error("NAR encoder misuse: {0}")]
    Usage(String),
    /// Async plumbing failed (a worker task panicked or was cancelled).
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    /// The NAR byte offset this error refers to, if it is about the stream.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Invalid { offset, .. } | Error::Read { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The validation reason, if the stream itself was invalid.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Error::Invalid { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn fs(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Fs {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Carries an [`Error`] through an `io::Error` (for `Read` impls) and back.
pub(crate) fn into_io(e: Error) -> io::Error {
    let kind = match &e {
        Error::Invalid {
            reason: Reason::Truncated,
            ..
        } => io::ErrorKind::UnexpectedEof,
        Error::Invalid { .. } => io::ErrorKind::InvalidData,
        Error::Read { source, .. } | Error::Write(source) | Error::Fs { source, .. } => {
            source.kind()
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// Recovers an [`Error`] that [`into_io`] wrapped, or wraps a foreign one.
pub(crate) fn from_io(e: io::Error, wrap: impl FnOnce(io::Error) -> Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::Task("lost error".into());
    }
    wrap(e)
}

/// Renders bytes for an error message: UTF-8 shown quoted, other bytes
/// escaped, long values cut so a hostile NAR cannot flood the terminal.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = bytes.len() > MAX;
    let b = &bytes[..bytes.len().min(MAX)];
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            s.extend(c.escape_debug());
        }
        for x in chunk.invalid() {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    s.push('"');
    if cut {
        s.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    s
}
