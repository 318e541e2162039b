//! Canonical metadata for store path contents.
//!
//! Everything in a store path gets modification time 1 (1970-01-01T00:00:01Z);
//! regular files become 0444, or 0555 when the owner could execute them;
//! directories become 0555. setuid, setgid and sticky bits disappear because
//! the mode is set outright. Symlinks keep their (meaningless) mode but get
//! the timestamp too. Owners are left alone. Anything that is not a regular
//! file, directory or symlink is rejected, as NAR cannot represent it.
//!
//! Directories are handled after their children, so a tree being canonicalised
//! stays writable until the end.

use std::io;
use std::path::{Path, PathBuf};

/// The modification time of every canonical store object.
pub const CANONICAL_MTIME: i64 = 1;

/// Failure to canonicalise a tree.
#[derive(Debug, thiserror::Error)]
pub enum CanonicaliseError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unsupported file type (only regular files, directories and symlinks can be stored)")]
    UnsupportedFileType { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CanonicaliseError + '_ {
    move |source| CanonicaliseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The canonical permission bits for a regular file whose current mode is `mode`.
pub fn canonical_file_mode(mode: u32) -> u32 {
    if mode & 0o100 != 0 {
        0o555
    } else {
        0o444
    }
}

fn set_mtime(path: &Path) -> Result<(), CanonicaliseError> {
    crate::os::set_canonical_mtime(path).map_err(io_err(path))
}

/// Canonicalise `root` and everything below it. Symlinks are never followed.
pub fn canonicalise_tree(root: &Path) -> Result<(), CanonicaliseError> {
    let meta = std::fs::symlink_metadata(root).map_err(io_err(root))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut entries: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(root).map_err(io_err(root))? {
            entries.push(e.map_err(io_err(root))?.path());
        }
        for child in &entries {
            canonicalise_tree(child)?;
        }
        if crate::os::mode(&meta) != 0o555 {
            crate::os::set_mode(root, 0o555).map_err(io_err(root))?;
        }
        set_mtime(root)
    } else if ft.is_file() {
        let want = canonical_file_mode(crate::os::mode(&meta));
        if crate::os::mode(&meta) != want {
            crate::os::set_mode(root, want).map_err(io_err(root))?;
        }
        set_mtime(root)
    } else if ft.is_symlink() {
        set_mtime(root)
    } else {
        debug_assert!(crate::os::is_special(&meta));
        Err(CanonicaliseError::UnsupportedFileType {
            path: root.to_path_buf(),
        })
    }
}

/// Make a tree writable again (directories 0755, files 0644/0755), so that it
/// can be deleted or repaired. Symlinks are never followed.
pub fn make_writable(root: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        crate::os::set_mode(root, 0o755)?;
        for e in std::fs::read_dir(root)? {
            make_writable(&e?.path())?;
        }
    } else if ft.is_file() {
        let mode = if crate::os::is_executable(&meta) {
            0o755
        } else {
            0o644
        };
        crate::os::set_mode(root, mode)?;
    }
    Ok(())
}

/// Delete a file or tree that may be read-only (as store paths are).
pub fn remove_tree(root: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        // On Unix only directories need write permission for their entries
        // to be unlinked; Windows refuses to delete a read-only file too.
        fn open_dirs(p: &Path) -> io::Result<()> {
            crate::os::set_mode(p, 0o755)?;
            for e in std::fs::read_dir(p)? {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    open_dirs(&e.path())?;
                } else if cfg!(windows) && t.is_file() {
                    crate::os::set_mode(&e.path(), 0o644)?;
                }
            }
            Ok(())
        }
        open_dirs(root)?;
        std::fs::remove_dir_all(root)
    } else {
        if cfg!(windows) && meta.is_file() {
            crate::os::set_mode(root, 0o644)?;
        }
        std::fs::remove_file(root)
    }
}

// Mode bits and symlinks are Unix facts.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use rustix::fs::CWD;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn canonicalises_modes_and_times_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"o").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("sub")).unwrap();
        std::fs::write(t.join("a"), b"a").unwrap();
        std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o4775)).unwrap();
        std::fs::write(t.join("sub/b"), b"b").unwrap();
        std::fs::set_permissions(t.join("sub/b"), std::fs::Permissions::from_mode(0o2640)).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("l")).unwrap();

        canonicalise_tree(&t).unwrap();

        let m = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(m(&t.join("a")).mode() & 0o7777, 0o555);
        assert_eq!(m(&t.join("sub/b")).mode() & 0o7777, 0o444);
        assert_eq!(m(&t.join("sub")).mode() & 0o7777, 0o555);
        assert_eq!(m(&t).mode() & 0o7777, 0o555);
        for p in [
            t.join("a"),
            t.join("sub/b"),
            t.join("sub"),
            t.join("l"),
            t.clone(),
        ] {
            assert_eq!(m(&p).mtime(), CANONICAL_MTIME, "{}", p.display());
        }
        // The symlink's target was not touched.
        assert_eq!(m(&outside).mode() & 0o7777, 0o600);
        assert_ne!(m(&outside).mtime(), CANONICAL_MTIME);

        remove_tree(&t).unwrap();
        assert!(!t.exists());
    }

    #[test]
    fn rejects_fifos() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("fifo");
        rustix::fs::mknodat(
            CWD,
            &f,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            canonicalise_tree(d.path()),
            Err(CanonicaliseError::UnsupportedFileType { .. })
        ));
    }
}
