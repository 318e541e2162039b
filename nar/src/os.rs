//! The few filesystem facts `dump` needs that differ between operating
//! systems: a directory entry's name as NAR bytes, whether a file is
//! executable, and a symlink target as NAR bytes.
//!
//! On Unix names and targets are raw bytes and the owner-execute bit says
//! "executable", exactly as Nix reads them.
//!
//! On Windows names are UTF-16: they are archived as UTF-8, and a name that
//! is not valid Unicode is an error (a NAR entry must be bytes Nix can
//! read back). Windows has no executable bit, so every file is archived as
//! non-executable: a tree restored on Windows from a NAR that had
//! executables dumps to different bytes. Stores on Windows therefore take
//! the NAR hash while the NAR streams in (restore through a hashing reader),
//! never by dumping the restored tree again. Symlink targets are archived
//! with `\` turned into `/` (the restorer does the reverse).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::path::Path;

use crate::error::Error;

/// The NAR bytes of a directory entry name found at `dir`.
#[cfg(unix)]
pub(crate) fn name_bytes<'a>(name: &'a OsStr, _dir: &Path) -> Result<Cow<'a, [u8]>, Error> {
    use std::os::unix::ffi::OsStrExt;
    Ok(Cow::Borrowed(name.as_bytes()))
}

#[cfg(windows)]
pub(crate) fn name_bytes<'a>(name: &'a OsStr, dir: &Path) -> Result<Cow<'a, [u8]>, Error> {
    match name.to_str() {
        Some(s) => Ok(Cow::Borrowed(s.as_bytes())),
        None => Err(not_unicode("archiving entry", &dir.join(name))),
    }
}

/// Whether a regular file is archived as executable.
#[cfg(unix)]
pub(crate) fn is_executable(meta: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

/// Windows has no executable bit (see the module header).
#[cfg(windows)]
pub(crate) fn is_executable(_meta: &Metadata) -> bool {
    false
}

/// The NAR bytes of the target of the symlink at `path`.
#[cfg(unix)]
pub(crate) fn target_bytes(target: &Path, _path: &Path) -> Result<Vec<u8>, Error> {
    use std::os::unix::ffi::OsStrExt;
    Ok(target.as_os_str().as_bytes().to_vec())
}

#[cfg(windows)]
pub(crate) fn target_bytes(target: &Path, path: &Path) -> Result<Vec<u8>, Error> {
    match target.to_str() {
        // The Windows restorer turns `/` into `\`; turn it back.
        Some(s) => Ok(s.replace('\\', "/").into_bytes()),
        None => Err(not_unicode("reading symlink", path)),
    }
}

#[cfg(windows)]
fn not_unicode(op: &'static str, path: &Path) -> Error {
    Error::fs(
        op,
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "name is not valid Unicode, so it has no NAR (UTF-8) form",
        ),
    )
}
