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
//! the cost, and they parallelise); large files are read and hashed on the
//! walking thread and written by their own thread, with direct I/O where
//! the filesystem allows it (see `BigFile`). The
//! copy is produced already canonical (modes 0444/0555, mtime 1), so no
//! second pass over the tree is needed. Given a [`SyncGroup`], every file
//! is handed to it to be flushed as soon as it is written, and every
//! directory once it is complete, so the flushes overlap the copy.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use b3_nar::direct_io::{self, AlignedChunk, CHUNK};
use b3_nar::NarEncoder;

use super::durable::SyncGroup;
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
    fn new(sync: Option<Arc<SyncGroup>>) -> Writers {
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
                let sync = sync.clone();
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(p) => p.into_inner().recv(),
                    };
                    let Ok(job) = job else { return Ok(()) };
                    let f = write_small(&job).map_err(io_at(&job.dest))?;
                    if let Some(g) = &sync {
                        g.submit(f);
                    }
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

/// Reserves a new file's blocks before writing it, as Nix's restore does
/// (one allocation instead of delayed allocation per write). Best effort:
/// a filesystem without `fallocate` just allocates as the data comes.
fn preallocate(f: &File, len: u64) {
    #[cfg(target_os = "linux")]
    if len > 0 {
        let _ = rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, len);
}

fn write_small(job: &FileJob) -> io::Result<File> {
    let mut f = create(&job.dest, job.executable)?;
    preallocate(&f, job.data.len() as u64);
    f.write_all(&job.data)?;
    finish_file(&f, job.executable)?;
    Ok(f)
}

fn set_times_nofollow(p: &Path) -> Result<(), IngestError> {
    crate::os::set_canonical_mtime(p).map_err(io_at(p))
}

/// A chunk of a large file (large files travel to their writer in
/// [`CHUNK`]s, each aligned in memory for direct I/O) and how much of it is
/// filled.
struct Chunk {
    mem: AlignedChunk,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            mem: AlignedChunk::new(),
            len: 0,
        }
    }

    fn space(&mut self) -> &mut [u8] {
        self.mem.space()
    }

    fn data(&self) -> &[u8] {
        self.mem.data(self.len)
    }
}

/// What the large-file writer does next, in stream order.
enum Big {
    Open {
        dest: PathBuf,
        executable: bool,
        size: u64,
    },
    Chunk(Chunk),
    Close,
}

/// A large file being written. Its whole-block part goes straight to the
/// disk (`O_DIRECT`) where the filesystem allows it: no copy into the page
/// cache (on this project's VMs most of the cost of writing a large file is
/// the kernel copying it into fresh, never-touched pages) and no writeback
/// afterwards, so the file's later `fsync` only writes its inode and the
/// last partial block. Nothing else reads the file before it is complete.
struct BigFile {
    f: File,
    dest: PathBuf,
    executable: bool,
    direct: bool,
}

impl BigFile {
    fn open(dest: PathBuf, executable: bool, size: u64) -> Result<BigFile, IngestError> {
        let f = create(&dest, executable).map_err(io_at(&dest))?;
        preallocate(&f, size);
        let direct = size >= DIRECT_MIN && set_direct(&f, true);
        Ok(BigFile {
            f,
            dest,
            executable,
            direct,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), IngestError> {
        direct_io::write(&mut self.f, data, &mut self.direct).map_err(io_at(&self.dest))
    }
}

/// Files at least this large are written with direct I/O.
const DIRECT_MIN: u64 = 256 << 10;

/// The size from which files are written with direct I/O, unless
/// `B3_INGEST_DIRECT=0` turned it off (batch restores use it too).
pub(crate) fn direct_io_min() -> Option<u64> {
    (!direct_disabled()).then_some(DIRECT_MIN)
}

/// `B3_INGEST_DIRECT=0`, read once.
fn direct_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("B3_INGEST_DIRECT").is_some_and(|v| v == "0"))
}

/// Turns `O_DIRECT` on or off for `f` ([`direct_io::set_direct`]), unless
/// `B3_INGEST_DIRECT=0` keeps every file buffered.
fn set_direct(f: &File, on: bool) -> bool {
    if on && direct_disabled() {
        return false;
    }
    direct_io::set_direct(f, on)
}

/// One thread writing large files, so that the walking thread only reads
/// and hashes: the copy and the hash run on two cores at once. Chunks
/// arrive in order on one bounded channel (memory stays at about
/// `BIG_DEPTH` chunks) and go back for reuse.
struct BigWriter {
    tx: Option<SyncSender<Big>>,
    recycled: Receiver<Chunk>,
    handle: Option<std::thread::JoinHandle<Result<(), IngestError>>>,
}

const BIG_DEPTH: usize = 8;

impl BigWriter {
    fn new(sync: Option<Arc<SyncGroup>>) -> io::Result<BigWriter> {
        let (tx, rx) = sync_channel::<Big>(BIG_DEPTH);
        let (back, recycled) = sync_channel::<Chunk>(BIG_DEPTH + 2);
        let handle = std::thread::Builder::new()
            .name("b3-ingest-big".into())
            .spawn(move || {
                let mut open: Option<BigFile> = None;
                for msg in rx {
                    match msg {
                        Big::Open {
                            dest,
                            executable,
                            size,
                        } => open = Some(BigFile::open(dest, executable, size)?),
                        Big::Chunk(chunk) => {
                            if let Some(o) = open.as_mut() {
                                o.write(chunk.data())?;
                            }
                            let _ = back.try_send(chunk);
                        }
                        Big::Close => {
                            if let Some(o) = open.take() {
                                finish_file(&o.f, o.executable).map_err(io_at(&o.dest))?;
                                if let Some(g) = &sync {
                                    g.submit(o.f);
                                }
                            }
                        }
                    }
                }
                Ok(())
            })?;
        Ok(BigWriter {
            tx: Some(tx),
            recycled,
            handle: Some(handle),
        })
    }

    /// An empty chunk (a recycled one when available).
    fn chunk(&self) -> Chunk {
        let mut c = self.recycled.try_recv().unwrap_or_else(|_| Chunk::new());
        c.len = 0;
        c
    }
    fn send(&mut self, msg: Big, dest: &Path) -> Result<(), IngestError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            // The writer stopped: report its own error.
            self.finish()?;
            return Err(IngestError::Io {
                path: dest.to_path_buf(),
                source: io::Error::other("large-file writer stopped"),
            });
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), IngestError> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(IngestError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other("large-file writer panicked"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for BigWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

struct Walk {
    enc: NarEncoder<NarHashers>,
    buf: Vec<u8>,
    writers: Writers,
    /// Writes large files when the writer pool is enabled.
    big: Option<BigWriter>,
    /// Directories in post-order, made read-only once every file is written.
    dirs: Vec<PathBuf>,
    sync: Option<Arc<SyncGroup>>,
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
    ingest_durable(src, dest, method, algo, None)
}

/// [`ingest`], handing every file and directory of the copy to `sync` to be
/// flushed once written (the caller waits on the group).
pub fn ingest_durable(
    src: &Path,
    dest: &Path,
    method: FileIngestionMethod,
    algo: HashAlgo,
    sync: Option<Arc<SyncGroup>>,
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
        writers: Writers::new(sync.clone()),
        big: None,
        dirs: Vec::new(),
        sync,
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
    if let Some(big) = walk.big.as_mut() {
        big.finish()?;
    }
    for d in &walk.dirs {
        crate::os::set_mode(d, 0o555).map_err(io_at(d))?;
        set_times_nofollow(d)?;
        if let Some(g) = &walk.sync {
            g.submit_path(d).map_err(io_at(d))?;
        }
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
    /// A large file: read and hashed here, written by the [`BigWriter`].
    fn copy_large_threaded(
        &mut self,
        input: &mut File,
        src: &Path,
        dest: &Path,
        executable: bool,
        size: u64,
        mut content: Option<&mut Hasher>,
    ) -> Result<(), IngestError> {
        if self.big.is_none() {
            self.big = Some(BigWriter::new(self.sync.clone()).map_err(io_at(dest))?);
        }
        let Some(big) = self.big.as_mut() else {
            return Err(IngestError::Io {
                path: dest.to_path_buf(),
                source: io::Error::other("no large-file writer"),
            });
        };
        big.send(
            Big::Open {
                dest: dest.to_path_buf(),
                executable,
                size,
            },
            dest,
        )?;
        self.enc.file_header(executable, size)?;
        let w = self.enc.contents_writer()?;
        let mut left = size;
        while left > 0 {
            let mut chunk = big.chunk();
            let want = left.min(CHUNK as u64) as usize;
            // Read and hash in cache-sized pieces: each is hashed while it
            // is still in the core's cache.
            while chunk.len < want {
                let end = want.min(chunk.len + BUF);
                let at = chunk.len;
                let n = match input.read(&mut chunk.space()[at..end]) {
                    Ok(0) => return Err(IngestError::FileChanged(src.to_path_buf())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_at(src)(e)),
                };
                let piece = &chunk.space()[at..at + n];
                // The hashing writer never fails.
                w.write_all(piece).map_err(io_at(src))?;
                if let Some(c) = content.as_deref_mut() {
                    c.update(piece);
                }
                chunk.len += n;
            }
            left -= chunk.len as u64;
            big.send(Big::Chunk(chunk), dest)?;
        }
        // Growing after we sized it would make the copy differ from the hash.
        if input.read(&mut self.buf[..1]).map_err(io_at(src))? != 0 {
            return Err(IngestError::FileChanged(src.to_path_buf()));
        }
        self.enc.file_trailer(size)?;
        big.send(Big::Close, dest)
    }

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
                let data = read_small(&mut input, size, src)?;
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
            if self.writers.enabled() {
                return self.copy_large_threaded(&mut input, src, dest, executable, size, content);
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
            if let Some(g) = &self.sync {
                g.submit(out);
            }
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

/// Reads a whole small file of `size` bytes. Asking for one byte more than
/// expected detects growth without a separate end-of-file read: a short
/// read of a regular file means its end was reached.
fn read_small(input: &mut File, size: u64, src: &Path) -> Result<Vec<u8>, IngestError> {
    let size = size as usize;
    let mut data = vec![0u8; size + 1];
    let mut got = 0;
    while got < size {
        match input.read(&mut data[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(src)(e)),
        }
    }
    if got != size {
        return Err(IngestError::FileChanged(src.to_path_buf()));
    }
    data.truncate(size);
    Ok(data)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_hash_of(p: &Path) -> Hash {
        let h = NarHashers {
            nar: Hasher::new(HashAlgo::Sha256),
            other: None,
        };
        let (h, _) = b3_nar::dump_path(p, h).unwrap();
        h.nar.finish()
    }

    /// Sizes around every boundary of the large-file path: the direct-I/O
    /// threshold, the alignment, the chunk size, and a partial last block.
    const AWKWARD: [u64; 8] = [
        DIRECT_MIN - 1,
        DIRECT_MIN,
        DIRECT_MIN + 1,
        CHUNK as u64 - 1,
        CHUNK as u64,
        CHUNK as u64 + direct_io::ALIGN as u64,
        3 * CHUNK as u64 + 12_345,
        SMALL + 1,
    ];

    fn awkward_tree(root: &Path) {
        std::fs::create_dir_all(root.join("d")).unwrap();
        for (i, &size) in AWKWARD.iter().enumerate() {
            // Content that differs at every offset, so a misplaced block shows.
            let data: Vec<u8> = (0..size)
                .map(|k| (k * 7 + k / 4093 + i as u64) as u8)
                .collect();
            std::fs::write(root.join("d").join(format!("f{i}")), data).unwrap();
        }
    }

    #[test]
    fn large_files_of_awkward_sizes_are_copied_exactly_and_hashed_as_nix_does() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        awkward_tree(&src);
        for (k, sync) in [None, Some(SyncGroup::new())].into_iter().enumerate() {
            let dest = dir.path().join(format!("dest{k}"));
            let ing = ingest_durable(
                &src,
                &dest,
                FileIngestionMethod::Recursive,
                HashAlgo::Sha256,
                sync.clone(),
            )
            .unwrap();
            if let Some(g) = sync {
                g.wait().unwrap();
            }
            assert_eq!(ing.nar_hash, nar_hash_of(&src));
            assert_eq!(nar_hash_of(&dest), ing.nar_hash);
            for (i, &size) in AWKWARD.iter().enumerate() {
                let name = format!("d/f{i}");
                let got = std::fs::read(dest.join(&name)).unwrap();
                assert_eq!(got.len() as u64, size, "{name}");
                assert!(
                    got == std::fs::read(src.join(&name)).unwrap(),
                    "{name} differs"
                );
            }
        }
    }

    #[test]
    fn buffered_and_unaligned_large_file_writes_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        // A file opened without O_DIRECT takes the buffered path throughout.
        let mut f = BigFile::open(dest.clone(), false, 10).unwrap();
        f.direct = false;
        f.write(b"0123456789").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
        // An unaligned chunk in direct mode is written buffered.
        let dest2 = dir.path().join("dest2");
        let mut f = BigFile::open(dest2.clone(), false, DIRECT_MIN).unwrap();
        let data: Vec<u8> = (0..DIRECT_MIN + 1).map(|k| k as u8).collect();
        f.write(&data[1..]).unwrap();
        drop(f);
        assert!(std::fs::read(&dest2).unwrap() == data[1..]);
    }
}
