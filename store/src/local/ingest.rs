//! Copying a filesystem path into the store in one pass.
//!
//! `nix-store --add` needs the NAR hash of the source (to name the path) and
//! a copy of it (to store). Reading the source once and feeding each chunk
//! both to the NAR hasher and to the copy halves the I/O compared with
//! hashing first and copying afterwards. Entries are visited in NAR order
//! (names sorted by bytes) so the hash is exactly Nix's.
//!
//! Small files are read whole, hashed on the walking thread and written by a
//! pool of writer threads (file creation and page-cache copies are most of
//! the cost, and they parallelise); large files are streamed in place. The
//! copy is produced already canonical (modes 0444/0555, mtime 1), so no
//! second pass over the tree is needed.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use b3_nar::NarEncoder;

use crate::hash::{Hash, HashAlgo, Hasher};
use crate::path::FileIngestionMethod;

/// Copy buffer for large files. Small enough to stay in the core's L2
/// cache between the read, the hash and the write (each touches every byte;
/// a 1 MiB buffer made all three miss to L3).
const BUF: usize = 128 << 10;

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

/// Files up to this size are read whole and handed to the writer pool. Kept
/// below the allocator's mmap threshold: a fresh mapping per file costs page
/// faults and, freed from another thread, TLB shootdowns.
const SMALL: u64 = 96 << 10;

struct FileJob {
    dest: PathBuf,
    data: Vec<u8>,
    executable: bool,
}

/// Writer threads creating small files; the first error wins.
struct Writers {
    tx: Option<SyncSender<FileJob>>,
    handles: Vec<std::thread::JoinHandle<Result<(), IngestError>>>,
}

impl Writers {
    fn new() -> Writers {
        let n = match std::env::var("B3_INGEST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
        };
        let (tx, rx) = sync_channel::<FileJob>(32);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..n)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(p) => p.into_inner().recv(),
                    };
                    let Ok(job) = job else { return Ok(()) };
                    write_small(&job).map_err(io_at(&job.dest))?;
                })
            })
            .collect();
        Writers {
            tx: Some(tx),
            handles,
        }
    }

    /// `B3_INGEST_THREADS=0` copies everything on the walking thread.
    fn enabled(&self) -> bool {
        !self.handles.is_empty()
    }

    fn send(&mut self, job: FileJob) -> Result<(), IngestError> {
        let tx = self.tx.as_ref().ok_or_else(|| IngestError::Io {
            path: job.dest.clone(),
            source: io::Error::other("writer pool closed"),
        })?;
        if tx.send(job).is_err() {
            // Every writer has stopped: one of them failed; report that.
            return self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), IngestError> {
        self.tx = None;
        let mut first = Ok(());
        for h in self.handles.drain(..) {
            let r = h.join().unwrap_or_else(|_| {
                Err(IngestError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other("writer thread panicked"),
                })
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn file_mode(executable: bool) -> u32 {
    if executable {
        0o555
    } else {
        0o444
    }
}

/// Give an open, fully written file its canonical mode and timestamp.
fn finish_file(f: &File, executable: bool) -> io::Result<()> {
    crate::os::finish_file(f, file_mode(executable))
}

fn create(dest: &Path, executable: bool) -> io::Result<File> {
    crate::os::create_new_file(dest, file_mode(executable))
}

fn write_small(job: &FileJob) -> io::Result<()> {
    let mut f = create(&job.dest, job.executable)?;
    f.write_all(&job.data)?;
    finish_file(&f, job.executable)
}

fn set_times_nofollow(p: &Path) -> Result<(), IngestError> {
    crate::os::set_canonical_mtime(p).map_err(io_at(p))
}

struct Walk {
    enc: NarEncoder<NarHashers>,
    buf: Vec<u8>,
    writers: Writers,
    /// Directories in post-order, made read-only once every file is written.
    dirs: Vec<PathBuf>,
}

/// Copy `src` to `dest` (which must not exist), computing the hashes of
/// `method`/`algo`. The copy is canonical (see the module docs). Symlinks in
/// `src` are stored as symlinks, never followed (`src` itself too).
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
    let mut walk = Walk {
        enc: NarEncoder::new(NarHashers {
            nar: Hasher::new(HashAlgo::Sha256),
            other,
        }),
        buf: vec![0u8; BUF],
        writers: Writers::new(),
        dirs: Vec::new(),
    };
    let mut content = match method {
        FileIngestionMethod::Flat => Some(Hasher::new(algo)),
        FileIngestionMethod::Recursive => None,
    };
    let meta = std::fs::symlink_metadata(src).map_err(io_at(src))?;
    if method == FileIngestionMethod::Flat && !meta.is_file() {
        return Err(IngestError::FlatNeedsFile(src.to_path_buf()));
    }
    walk.copy_node(src, dest, meta, content.as_mut())?;
    walk.writers.finish()?;
    for d in &walk.dirs {
        crate::os::set_mode(d, 0o555).map_err(io_at(d))?;
        set_times_nofollow(d)?;
    }
    let (hashers, nar_size) = walk.enc.finish()?;
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

impl Walk {
    fn copy_node(
        &mut self,
        src: &Path,
        dest: &Path,
        meta: std::fs::Metadata,
        content: Option<&mut Hasher>,
    ) -> Result<(), IngestError> {
        let ft = meta.file_type();
        if ft.is_file() {
            let executable = crate::os::is_executable(&meta);
            let size = meta.len();
            let mut input = File::open(src).map_err(io_at(src))?;
            if size <= SMALL && self.writers.enabled() {
                let mut data = Vec::with_capacity(size as usize + 1);
                (&mut input)
                    .take(size + 1)
                    .read_to_end(&mut data)
                    .map_err(io_at(src))?;
                if data.len() as u64 != size {
                    return Err(IngestError::FileChanged(src.to_path_buf()));
                }
                self.enc.file_bytes(executable, &data)?;
                if let Some(c) = content {
                    c.update(&data);
                }
                return self.writers.send(FileJob {
                    dest: dest.to_path_buf(),
                    data,
                    executable,
                });
            }
            let mut out = create(dest, executable).map_err(io_at(dest))?;
            self.enc.file_header(executable, size)?;
            let w = self.enc.contents_writer()?;
            let mut left = size;
            let mut content = content;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = match input.read(&mut self.buf[..want]) {
                    Ok(0) => return Err(IngestError::FileChanged(src.to_path_buf())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_at(src)(e)),
                };
                let chunk = &self.buf[..n];
                // The hashing writer never fails.
                w.write_all(chunk).map_err(io_at(src))?;
                if let Some(c) = content.as_deref_mut() {
                    c.update(chunk);
                }
                out.write_all(chunk).map_err(io_at(dest))?;
                left -= n as u64;
            }
            // Growing after we sized it would make the copy differ from the hash.
            if input.read(&mut self.buf[..1]).map_err(io_at(src))? != 0 {
                return Err(IngestError::FileChanged(src.to_path_buf()));
            }
            self.enc.file_trailer(size)?;
            finish_file(&out, executable).map_err(io_at(dest))?;
            Ok(())
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(io_at(src))?;
            self.enc
                .symlink(&crate::os::name_bytes(target.as_os_str()).map_err(io_at(src))?)?;
            crate::os::symlink(&target, dest).map_err(io_at(dest))?;
            set_times_nofollow(dest)
        } else if ft.is_dir() {
            std::fs::create_dir(dest).map_err(io_at(dest))?;
            let mut names: Vec<OsString> = std::fs::read_dir(src)
                .map_err(io_at(src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_at(src))?;
            // Byte order of the NAR names (on Windows, of their UTF-8).
            names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
            self.enc.directory_start()?;
            for name in names {
                let s = src.join(&name);
                let d = dest.join(&name);
                let m = std::fs::symlink_metadata(&s).map_err(io_at(&s))?;
                self.enc
                    .entry(&crate::os::name_bytes(&name).map_err(io_at(&s))?)?;
                self.copy_node(&s, &d, m, None)?;
            }
            self.enc.directory_end()?;
            self.dirs.push(dest.to_path_buf());
            Ok(())
        } else {
            Err(IngestError::UnsupportedType(src.to_path_buf()))
        }
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
