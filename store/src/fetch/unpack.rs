//! Tarball unpacking into a fresh directory, safe against hostile archives.
//!
//! Entries are created one by one by this module (not by the tar crate's
//! own `unpack`) so that every rule is explicit: paths must be relative and
//! free of `..`; no entry is written through a symlink (each parent is
//! checked with `lstat`); hard links must point at a regular file unpacked
//! earlier; device files and FIFOs are refused. Permissions are normalised
//! to 0755/0644 (only the executable bit matters to a NAR) and ownership and
//! times are ignored: the store canonicalises them anyway.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the archive: {0}")]
    Archive(#[source] io::Error),
    #[error("refusing archive entry '{entry}': {reason}")]
    Hostile { entry: String, reason: &'static str },
    #[error("{op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the tarball contains an unexpected number of top-level files ({0})")]
    TopLevel(usize),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.display().to_string();
    move |source| UnpackError::Io { op, path, source }
}

/// A compression format recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if magic.starts_with(b"BZh") {
            Compression::Bzip2
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompressor<'a, R: BufRead + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let magic = r.fill_buf().map_err(UnpackError::Archive)?;
    Ok(match Compression::detect(magic) {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(UnpackError::Archive)?)
        }
    })
}

/// An xz decompressor (for `.xz` NARs, whose format is not sniffed).
pub fn xz_reader<R: BufRead>(r: R) -> impl Read {
    liblzma::bufread::XzDecoder::new_multi_decoder(r)
}

/// Unpacks the tarball in file `archive` into `dest` (see [`unpack_tarball`]).
pub fn unpack_tarball_file(archive: &Path, dest: &Path) -> Result<(), UnpackError> {
    let f = File::open(archive).map_err(io_err("opening", archive))?;
    unpack_tarball(BufReader::with_capacity(1 << 16, f), dest)
}

/// Unpacks a (possibly compressed) tar stream into `dest`, which must not
/// exist yet or be an empty directory.
pub fn unpack_tarball<R: BufRead>(r: R, dest: &Path) -> Result<(), UnpackError> {
    match fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut rd = fs::read_dir(dest).map_err(io_err("reading directory", dest))?;
            if rd.next().is_some() {
                return Err(UnpackError::Io {
                    op: "unpacking into",
                    path: dest.display().to_string(),
                    source: io::Error::other("directory is not empty"),
                });
            }
        }
        Err(e) => return Err(io_err("creating directory", dest)(e)),
    }
    let mut archive = tar::Archive::new(decompressor(r)?);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        unpack_entry(&mut entry, dest)?;
    }
    Ok(())
}

fn entry_name(p: &Path) -> String {
    p.display().to_string()
}

/// `rel` as a list of normal components, or the reason it is refused.
fn clean_relative(rel: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute"),
        }
    }
    Ok(out)
}

/// Makes sure every parent of `dest/rel` is a real directory (creating the
/// missing ones), never a symlink.
fn prepare_parents(dest: &Path, rel: &Path, entry: &str) -> Result<(), UnpackError> {
    let mut cur = dest.to_path_buf();
    let n = rel.components().count();
    for c in rel.components().take(n.saturating_sub(1)) {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Hostile {
                    entry: entry.to_string(),
                    reason: "a parent directory is a symlink",
                })
            }
            Ok(_) => {
                return Err(UnpackError::Hostile {
                    entry: entry.to_string(),
                    reason: "a parent directory is not a directory",
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err("creating directory", &cur))?;
            }
            Err(e) => return Err(io_err("getting status of", &cur)(e)),
        }
    }
    Ok(())
}

/// Clears the way for a non-directory at `path`: a later entry replaces an
/// earlier file or symlink of the same name (as tar does), not a directory.
fn remove_existing(path: &Path, entry: &str) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Err(UnpackError::Hostile {
            entry: entry.to_string(),
            reason: "it would replace a directory",
        }),
        Ok(_) => fs::remove_file(path).map_err(io_err("removing", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("getting status of", path)(e)),
    }
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<(), UnpackError> {
    use tar::EntryType as T;
    let raw = entry.path().map_err(UnpackError::Archive)?.into_owned();
    let name = entry_name(&raw);
    let hostile = |reason| UnpackError::Hostile {
        entry: name.clone(),
        reason,
    };
    let ty = entry.header().entry_type();
    // Metadata-only records carry nothing to create.
    if matches!(
        ty,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(());
    }
    let rel = clean_relative(&raw).map_err(hostile)?;
    if rel.as_os_str().is_empty() {
        if ty == T::Directory {
            return Ok(());
        }
        return Err(hostile("the entry has an empty path"));
    }
    prepare_parents(dest, &rel, &name)?;
    let path = dest.join(&rel);
    match ty {
        T::Directory => match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => Ok(()),
            Ok(_) => Err(hostile("a directory would replace a file or symlink")),
            Err(_) => {
                fs::create_dir(&path).map_err(io_err("creating directory", &path))?;
                crate::os::set_mode(&path, 0o755).map_err(io_err("setting permissions of", &path))
            }
        },
        T::Regular | T::Continuous | T::GNUSparse => {
            remove_existing(&path, &name)?;
            let exec = entry.header().mode().map_err(UnpackError::Archive)? & 0o111 != 0;
            let mut f = crate::os::create_new_file(&path, if exec { 0o755 } else { 0o644 })
                .map_err(io_err("creating file", &path))?;
            io::copy(entry, &mut f).map_err(UnpackError::Archive)?;
            Ok(())
        }
        T::Symlink => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Archive)?
                .ok_or_else(|| hostile("a symlink without a target"))?
                .into_owned();
            remove_existing(&path, &name)?;
            crate::os::symlink(&target, &path).map_err(io_err("creating symlink", &path))
        }
        T::Link => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Archive)?
                .ok_or_else(|| hostile("a hard link without a target"))?
                .into_owned();
            let trel = clean_relative(&target).map_err(hostile)?;
            // The target's parents must be real directories too, or the link
            // could reach a file outside `dest`.
            let mut cur = dest.to_path_buf();
            for c in trel.components() {
                cur.push(c);
                let m = fs::symlink_metadata(&cur)
                    .map_err(|_| hostile("a hard link to a path not unpacked before it"))?;
                if m.file_type().is_symlink() {
                    return Err(hostile("a hard link through or to a symlink"));
                }
            }
            if !cur.is_file() || trel.as_os_str().is_empty() {
                return Err(hostile("a hard link to something other than a file"));
            }
            if cur == path {
                return Ok(());
            }
            remove_existing(&path, &name)?;
            fs::hard_link(&cur, &path).map_err(io_err("creating hard link", &path))
        }
        T::Char | T::Block | T::Fifo => Err(hostile("device files and FIFOs are not allowed")),
        _ => Err(hostile("unsupported entry type")),
    }
}

/// The single top-level entry of an unpacked tarball, which Nix's
/// `fetchTarball` takes as the result.
pub fn single_top_level(dir: &Path) -> Result<PathBuf, UnpackError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("reading directory", dir))? {
        names.push(e.map_err(io_err("reading directory", dir))?.file_name());
    }
    if names.len() != 1 {
        return Err(UnpackError::TopLevel(names.len()));
    }
    Ok(dir.join(&names[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\0.."), Compression::Xz);
        assert_eq!(Compression::detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"hello/"), Compression::None);
    }

    #[test]
    fn clean_relative_refuses_escapes() {
        assert!(clean_relative(Path::new("/etc/passwd")).is_err());
        assert!(clean_relative(Path::new("a/../../b")).is_err());
        assert_eq!(
            clean_relative(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
    }
}
