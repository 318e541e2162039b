//! Copying a filesystem path into the store in one pass.
//!
//! `nix-store --add` needs the NAR hash of the source (to name the path) and
//! a copy of it (to store). Reading the source once and feeding each chunk
//! both to the NAR hasher and to the copy halves the I/O compared with
//! hashing first and copying afterwards. Entries are visited in NAR order
//! (names sorted by bytes) so the hash is exactly Nix's.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use b3_nar::NarEncoder;

use crate::hash::{Hash, HashAlgo, Hasher};
use crate::path::FileIngestionMethod;

const BUF: usize = 1 << 20;

/// Why a source could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: only regular files, directories and symlinks can be added to the store")]
    UnsupportedType(PathBuf),
    #[error("{0}: flat ingestion needs a regular file")]
    FlatNeedsFile(PathBuf),
    #[error("{0}: file changed size while being added")]
    FileChanged(PathBuf),
    #[error("NAR encoding: {0}")]
    Nar(#[from] b3_nar::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hashes of an ingested source.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// SHA-256 of the NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// The hash that names the path (`algo` over the NAR, or over the file
    /// contents for flat ingestion).
    pub ca_hash: Hash,
}

/// A writer feeding the NAR hash and, when the path is named by another
/// algorithm over the NAR, that hash too.
struct NarHashers {
    nar: Hasher,
    other: Option<Hasher>,
}

impl Write for NarHashers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.nar.update(buf);
        if let Some(o) = &mut self.other {
            o.update(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copy `src` to `dest` (which must not exist), computing the hashes of
/// `method`/`algo`. Symlinks in `src` are stored as symlinks, never followed
/// (except `src` itself, which is taken as given: a symlink is stored as one).
pub fn ingest(
    src: &Path,
    dest: &Path,
    method: FileIngestionMethod,
    algo: HashAlgo,
) -> Result<Ingested, IngestError> {
    let other = match method {
        FileIngestionMethod::Recursive if algo != HashAlgo::Sha256 => Some(Hasher::new(algo)),
        _ => None,
    };
    let mut enc = NarEncoder::new(NarHashers {
        nar: Hasher::new(HashAlgo::Sha256),
        other,
    });
    let mut buf = vec![0u8; BUF];
    let mut content = match method {
        FileIngestionMethod::Flat => Some(Hasher::new(algo)),
        FileIngestionMethod::Recursive => None,
    };
    let meta = std::fs::symlink_metadata(src).map_err(io_at(src))?;
    if method == FileIngestionMethod::Flat && !meta.is_file() {
        return Err(IngestError::FlatNeedsFile(src.to_path_buf()));
    }
    copy_node(src, dest, meta, &mut enc, &mut buf, content.as_mut())?;
    let (hashers, nar_size) = enc.finish()?;
    let nar_hash = hashers.nar.finish();
    let ca_hash = match (method, hashers.other, content) {
        (FileIngestionMethod::Flat, _, Some(c)) => c.finish(),
        (_, Some(o), _) => o.finish(),
        _ => nar_hash,
    };
    Ok(Ingested {
        nar_hash,
        nar_size,
        ca_hash,
    })
}

fn copy_node(
    src: &Path,
    dest: &Path,
    meta: std::fs::Metadata,
    enc: &mut NarEncoder<NarHashers>,
    buf: &mut [u8],
    content: Option<&mut Hasher>,
) -> Result<(), IngestError> {
    let ft = meta.file_type();
    if ft.is_file() {
        let executable = meta.permissions().mode() & 0o100 != 0;
        let size = meta.len();
        let mut input = File::open(src).map_err(io_at(src))?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 })
            .open(dest)
            .map_err(io_at(dest))?;
        enc.file_header(executable, size)?;
        let w = enc.contents_writer()?;
        let mut left = size;
        let mut content = content;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = match input.read(&mut buf[..want]) {
                Ok(0) => return Err(IngestError::FileChanged(src.to_path_buf())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at(src)(e)),
            };
            let chunk = &buf[..n];
            // Hashing cannot fail; the NarHashers writer never errors.
            w.write_all(chunk).map_err(io_at(src))?;
            if let Some(c) = content.as_deref_mut() {
                c.update(chunk);
            }
            out.write_all(chunk).map_err(io_at(dest))?;
            left -= n as u64;
        }
        // Growing after we sized it would make the copy differ from the hash.
        if input.read(&mut buf[..1]).map_err(io_at(src))? != 0 {
            return Err(IngestError::FileChanged(src.to_path_buf()));
        }
        enc.file_trailer(size)?;
        Ok(())
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io_at(src))?;
        enc.symlink(target.as_os_str().as_bytes())?;
        std::os::unix::fs::symlink(&target, dest).map_err(io_at(dest))?;
        Ok(())
    } else if ft.is_dir() {
        std::fs::create_dir(dest).map_err(io_at(dest))?;
        let mut names: Vec<OsString> = std::fs::read_dir(src)
            .map_err(io_at(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(src))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        enc.directory_start()?;
        for name in names {
            let s = src.join(&name);
            let d = dest.join(&name);
            let m = std::fs::symlink_metadata(&s).map_err(io_at(&s))?;
            enc.entry(name.as_bytes())?;
            copy_node(&s, &d, m, enc, buf, None)?;
        }
        enc.directory_end()?;
        Ok(())
    } else {
        Err(IngestError::UnsupportedType(src.to_path_buf()))
    }
}

/// The NAR of a single non-executable regular file holding `contents`, and
/// its SHA-256 (for `toFile`-like text adds).
pub fn text_nar(contents: &[u8]) -> Result<(Vec<u8>, Hash), b3_nar::Error> {
    let mut enc = NarEncoder::new(Vec::with_capacity(contents.len() + 128));
    enc.file_bytes(false, contents)?;
    let (nar, _) = enc.finish()?;
    let h = Hash::digest(HashAlgo::Sha256, &nar);
    Ok((nar, h))
}
