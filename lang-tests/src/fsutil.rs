//! Scratch directory handling and a tree copy that keeps symlinks as
//! symlinks (the upstream test data has deliberate, even broken, links).

use std::io;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, removed on drop unless
/// [`Scratch::keep`] was called.
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn create() -> io::Result<Scratch> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let p = base.join(format!(
                "b3-lang-tests-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => {
                    // Nix reports physical paths, so the rewrite of the
                    // working directory must use the resolved one.
                    let path = std::fs::canonicalize(&p)?;
                    return Ok(Scratch { path, keep: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not create a scratch directory"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = make_writable(&self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Tests may leave read-only directories behind; make removal possible.
fn make_writable(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let mut perm = meta.permissions();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = perm.mode();
                perm.set_mode(mode | 0o700);
            }
            #[cfg(windows)]
            perm.set_readonly(false);
            std::fs::set_permissions(entry.path(), perm)?;
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Creates a symlink (on Windows a file or directory symlink, as the
/// target is now; that needs Developer Mode or the symlink privilege).
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(windows)]
    {
        if link
            .parent()
            .unwrap_or(Path::new("."))
            .join(target)
            .is_dir()
        {
            std::os::windows::fs::symlink_dir(target, link)
        } else {
            std::os::windows::fs::symlink_file(target, link)
        }
    }
}

/// Copies `src` to `dst` recursively, recreating symlinks verbatim.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            symlink(&std::fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// The symlinks of the upstream test data (README of the data folder).
/// A checkout made without symlink support turns each into a small file
/// holding the link target; [`restore_symlinks`] turns them back.
pub const UPSTREAM_SYMLINKS: [(&str, &str); 4] = [
    ("readDir/ldir", "foo"),
    ("readDir/linked", "foo/git-hates-directories"),
    ("symlink-resolution/foo/overlays", "../overlays"),
    ("symlink-resolution/broken", "nonexistent"),
];

/// Re-creates the known upstream symlinks that arrived as plain files
/// containing exactly their target; returns the paths it fixed.
pub fn restore_symlinks(lang: &Path) -> io::Result<Vec<&'static str>> {
    let mut fixed = Vec::new();
    for (rel, target) in UPSTREAM_SYMLINKS {
        let p = lang.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() || std::fs::read(&p)? != target.as_bytes() {
            continue;
        }
        std::fs::remove_file(&p)?;
        symlink(Path::new(target), &p)?;
        fixed.push(rel);
    }
    Ok(fixed)
}
