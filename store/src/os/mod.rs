//! The operating-system specific file operations of the store, one
//! interface with a Unix and a Windows implementation (`unix.rs`,
//! `windows.rs`). Everything else in the store is portable and calls these.
//!
//! What the Windows side cannot do like Unix (and so what differs there):
//! - no mode bits: "read-only" is the read-only attribute, and no file is
//!   executable (see `b3_nar`'s Windows notes: NAR hashes are taken while
//!   the NAR streams in, not by dumping what is on disk);
//! - symlinks need Developer Mode or SeCreateSymbolicLinkPrivilege;
//! - no `syncfs`: each file is flushed instead;
//! - no atomic exchange of two directories: `exchange` renames in three
//!   steps (a crash in between leaves the old copy next to the new one).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io;

pub mod objects;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// How far a background thread gives way to the others (see
/// [`yield_to_foreground`]). Neither can be undone: an unprivileged
/// thread may lower its priority but never raise it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// Runs only on a CPU nothing else wants (Linux `SCHED_IDLE`), and any
    /// other thread waking up takes the CPU at once. For chores whose
    /// results nobody waits on soon and that hold nothing another process
    /// could wait for: removing and emptying directories, writing build
    /// logs, closing a finished sandbox's namespaces.
    Idle,
    /// The lowest priority that still gets a share of a busy CPU (nice
    /// 19). For threads that may hold what other processes wait for (the
    /// store database's write lock), which must not starve while builds
    /// keep the CPUs busy. Threads others wait on while they hold such a
    /// lock (the store's flushing threads) keep their priority.
    Low,
}

/// A file name as the bytes a NAR or a hash sees. On Windows names are
/// UTF-16: they become UTF-8, and a name that is not Unicode is an error.
pub fn name_bytes(name: &OsStr) -> io::Result<Cow<'_, [u8]>> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(Cow::Borrowed(name.as_bytes()))
    }
    #[cfg(windows)]
    {
        match name.to_str() {
            Some(s) => Ok(Cow::Borrowed(s.as_bytes())),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file name {} is not valid Unicode", name.to_string_lossy()),
            )),
        }
    }
}
