//! The FUSE request handlers of a view: lookups resolve lazily against the
//! object database, reads `pread` the blob file opened at `open`.
//!
//! Everything is immutable, so the kernel may cache without bound: entries
//! and attributes get long TTLs, file pages are kept across opens
//! (`FOPEN_KEEP_CACHE`) and directory listings are cached (`FOPEN_CACHE_DIR`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use super::inodes::{Inode, Inodes, ROOT_INO};
use super::trace::{AccessKind, Tracer};
use crate::odb::{Entry, Node, Odb};

/// The filesystem served by one mount.
pub(crate) struct ViewFs {
    pub(crate) odb: Odb,
    /// Store path base names visible at the top level.
    pub(crate) closure: super::Closure,
    pub(crate) inodes: Inodes,
    pub(crate) handles: Mutex<HashMap<u64, Handle>>,
    /// Backing ids by inode, shared by concurrent opens of one file (the
    /// kernel requires one backing id per inode while any open uses it) and
    /// kept after the last close, so opening a file again costs no blob
    /// open and no backing registration (bounded by [`BACKING_MAX`]).
    pub(crate) backing: Mutex<HashMap<u64, Arc<BackingId>>>,
    /// Kernel passthrough is wanted and, so far, works.
    pub(crate) passthrough: AtomicBool,
    pub(crate) next_fh: AtomicU64,
    /// Decline opens (ENOSYS) so the kernel stops sending them and opens
    /// files itself: no request per open or close, file pages kept for the
    /// mount's life (`FOPEN_KEEP_CACHE` is the kernel's default then);
    /// reads of pages not yet cached arrive with file handle 0.
    pub(crate) kernel_opens: bool,
    /// Blob files by inode for reads without an open (bounded: cleared when full).
    pub(crate) by_inode: Mutex<HashMap<u64, Arc<File>>>,
    pub(crate) ttl: Duration,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) tracer: Option<Arc<Tracer>>,
    pub(crate) stats: Arc<Counters>,
}

/// Requests served, to check how much the kernel caches.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) lookups: AtomicU64,
    pub(crate) opens: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) readdirs: AtomicU64,
}

/// What an open file handle reads from.
pub(crate) enum Handle {
    /// Served by `read` with `pread` on the blob file.
    File(Arc<File>),
    /// Served by the kernel straight from the blob file; held to keep the id alive.
    Backing(#[allow(dead_code)] Arc<BackingId>),
}

fn errno_of(e: &crate::odb::Error) -> Errno {
    match e {
        crate::odb::Error::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        _ => Errno::EIO,
    }
}

/// Backing ids kept registered; past this, those no open uses are dropped.
/// Each holds one open blob file in the kernel; a closure's working set
/// of files should fit, or every reopen pays a blob open and a backing
/// registration again.
const BACKING_MAX: usize = 65_536;

/// Blob files kept open for reads without opens; past this, the cache restarts.
const BY_INODE_MAX: usize = 1024;

impl ViewFs {
    /// The blob file of file inode `ino`, for a read without an open.
    fn file_of(&self, ino: u64) -> Result<Arc<File>, Errno> {
        let mut map = self.by_inode.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&ino) {
            return Ok(f.clone());
        }
        let inode = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let blob = match &inode.node {
            Some(Node::File { blob, .. }) => *blob,
            _ => return Err(Errno::EISDIR),
        };
        let f = Arc::new(self.odb.open_blob(&blob).map_err(|e| errno_of(&e))?);
        if map.len() >= BY_INODE_MAX {
            map.clear();
        }
        map.insert(ino, f.clone());
        Ok(f)
    }

    fn attr(&self, inode: &Inode) -> FileAttr {
        let (kind, perm, size, nlink) = match &inode.node {
            None => (FileType::Directory, 0o555, self.closure.len() as u64, 2),
            Some(Node::Directory { entries, .. }) => (FileType::Directory, 0o555, *entries, 2),
            Some(Node::File {
                executable, size, ..
            }) => (
                FileType::RegularFile,
                if *executable { 0o555 } else { 0o444 },
                *size,
                1,
            ),
            Some(Node::Symlink { target }) => (FileType::Symlink, 0o777, target.len() as u64, 1),
        };
        FileAttr {
            ino: INodeNo(inode.ino),
            size,
            blocks: size.div_ceil(512),
            // Store paths carry timestamp 1 (Nix's canonical mtime).
            atime: UNIX_EPOCH + Duration::from_secs(1),
            mtime: UNIX_EPOCH + Duration::from_secs(1),
            ctime: UNIX_EPOCH + Duration::from_secs(1),
            crtime: UNIX_EPOCH + Duration::from_secs(1),
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The entries of directory `inode`, read from the database once.
    fn entries(&self, inode: &Inode) -> Result<Arc<Vec<Entry>>, Errno> {
        if let Some(e) = inode.entries.get() {
            return Ok(e.clone());
        }
        let list = match &inode.node {
            Some(Node::Directory { tree, .. }) => {
                self.odb.get_tree(tree).map_err(|e| errno_of(&e))?
            }
            Some(_) => return Err(Errno::ENOTDIR),
            None => {
                let mut names: Vec<&str> = self.closure.iter().collect();
                names.sort_unstable();
                names.dedup();
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    if let Ok(Some(node)) = self.odb.root(n) {
                        out.push(Entry {
                            name: n.as_bytes().to_vec(),
                            node,
                        });
                    }
                }
                out
            }
        };
        Ok(inode.entries.get_or_init(|| Arc::new(list)).clone())
    }

    fn child(&self, parent: &Inode, name: &[u8]) -> Result<Arc<Inode>, Errno> {
        if let Some(i) = self.inodes.find(parent.ino, name) {
            return Ok(i);
        }
        let node = if parent.ino == ROOT_INO {
            let n = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
            if !self.closure.contains(name) {
                return Err(Errno::ENOENT);
            }
            self.odb
                .root(n)
                .map_err(|e| errno_of(&e))?
                .ok_or(Errno::ENOENT)?
        } else {
            let entries = self.entries(parent)?;
            let idx = entries
                .binary_search_by(|e| e.name.as_slice().cmp(name))
                .map_err(|_| Errno::ENOENT)?;
            entries[idx].node.clone()
        };
        Ok(self.inodes.intern(parent, name, node))
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    fn trace(&self, req: &Request, kind: AccessKind, ino: u64) {
        if let Some(t) = &self.tracer {
            if let Some((top, rel)) = self.inodes.path_of(ino) {
                if !top.is_empty() {
                    t.record(
                        kind,
                        req.pid(),
                        top,
                        String::from_utf8_lossy(&rel).into_owned(),
                    );
                }
            }
        }
    }
}

impl Filesystem for ViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Optional speed-ups, asked one by one: a kernel without one still works.
        for cap in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_ASYNC_READ,
        ] {
            let _ = config.add_capabilities(cap);
        }
        let _ = config.set_max_readahead(super::READAHEAD);
        // Reads of pages not yet cached are background requests: past the
        // congestion threshold (9 by default) the kernel cuts readahead
        // short, and a first read of a large file arrives in many small
        // requests. vfs_bench, 1,020 files of 200 MiB read cold: 1,942 read
        // requests with only the sysfs readahead raised at mount, 2,532
        // with only this, 1,188 with both.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Passthrough lets the kernel read blob files itself (Linux >= 6.9;
        // opening a backing id needs CAP_SYS_ADMIN). Stack depth 1: blobs
        // live on a plain filesystem; if not, or if not permitted, opening
        // the backing id fails and the view serves reads itself.
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(ok, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let res = self
            .inode(parent)
            .and_then(|p| self.child(&p, name.as_bytes()));
        match res {
            Ok(i) => reply.entry(&self.ttl, &self.attr(&i), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(i) => reply.attr(&self.ttl, &self.attr(&i)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inode(ino) {
            Ok(i) => match &i.node {
                Some(Node::Symlink { target }) => {
                    self.trace(req, AccessKind::ReadLink, i.ino);
                    reply.data(target)
                }
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.stats.opens.fetch_add(1, Ordering::Relaxed);
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.kernel_opens {
            // From now on the kernel opens files of this mount by itself.
            // Writes stay refused: the mount is read-only.
            return reply.error(Errno::ENOSYS);
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let blob = match &inode.node {
            Some(Node::File { blob, .. }) => *blob,
            Some(Node::Directory { .. }) | None => return reply.error(Errno::EISDIR),
            Some(Node::Symlink { .. }) => return reply.error(Errno::ELOOP),
        };
        self.trace(req, AccessKind::Open, inode.ino);
        let open_blob = || self.odb.open_blob(&blob).map_err(|e| errno_of(&e));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut file = None;
        if self.passthrough.load(Ordering::Relaxed) {
            let mut backing = self.backing.lock().unwrap_or_else(|p| p.into_inner());
            let id = match backing.get(&inode.ino) {
                Some(id) => Some(id.clone()),
                None => {
                    let f = match open_blob() {
                        Ok(f) => f,
                        Err(e) => return reply.error(e),
                    };
                    match reply.open_backing(&f) {
                        Ok(id) => {
                            if backing.len() >= BACKING_MAX {
                                // Forget the ids no open uses (the kernel closes them).
                                backing.retain(|_, id| Arc::strong_count(id) > 1);
                            }
                            let id = Arc::new(id);
                            backing.insert(inode.ino, id.clone());
                            Some(id)
                        }
                        Err(_) => {
                            // Not permitted or not supported here: serve reads ourselves.
                            self.passthrough.store(false, Ordering::Relaxed);
                            file = Some(f);
                            None
                        }
                    }
                }
            };
            if let Some(id) = id {
                self.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Handle::Backing(id.clone()));
                drop(backing);
                // No FOPEN_KEEP_CACHE here: the kernel refuses it together
                // with passthrough (EIO at open, seen on 6.18); the backing
                // file's own page cache serves repeated reads. NOFLUSH: no
                // FLUSH round trip at every close (nothing is ever written).
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id);
            }
        }
        let file = match file {
            Some(f) => f,
            None => match open_blob() {
                Ok(f) => f,
                Err(e) => return reply.error(e),
            },
        };
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Handle::File(Arc::new(file)));
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let file = match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
        {
            Some(Handle::File(f)) => f.clone(),
            None if fh.0 == 0 && self.kernel_opens => match self.file_of(ino.0) {
                Ok(f) => f,
                Err(e) => return reply.error(e),
            },
            _ => return reply.error(Errno::EBADF),
        };
        // One buffer per worker thread, grown to the largest read asked.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let mut done = 0;
            while done < buf.len() {
                match file.read_at(&mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return reply
                            .error(e.raw_os_error().map(Errno::from_i32).unwrap_or(Errno::EIO))
                    }
                }
            }
            reply.data(&buf[..done]);
        })
    }

    /// Sent at a `close` of a file opened without `FOPEN_NOFLUSH` (the
    /// kernel opens files itself with `kernel_opens`). Nothing is ever
    /// written: ENOSYS tells the kernel to send no flush again on this
    /// mount, which it takes as success. (fuser's default answer is the
    /// same but logs a warning on the caller's stderr.)
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Backing ids stay cached (see `backing`); only the handle goes.
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.kernel_opens {
            // As for files: the kernel then opens directories itself, with
            // FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, what this would answer.
            return reply.error(Errno::ENOSYS);
        }
        match self.inode(ino) {
            Ok(i) => match &i.node {
                None | Some(Node::Directory { .. }) => {
                    self.trace(req, AccessKind::OpenDir, i.ino);
                    reply.opened(
                        FileHandle(0),
                        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                    )
                }
                _ => reply.error(Errno::ENOTDIR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.stats.readdirs.fetch_add(1, Ordering::Relaxed);
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let entries = match self.entries(&inode) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        // Offsets: 1 after ".", 2 after "..", 2+k after entry k.
        let mut off = offset;
        if off == 0 {
            if reply.add(INodeNo(inode.ino), 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(INodeNo(inode.parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        for (k, e) in entries.iter().enumerate().skip((off - 2) as usize) {
            let child = self.inodes.intern(&inode, &e.name, e.node.clone());
            let kind = match e.node {
                Node::File { .. } => FileType::RegularFile,
                Node::Symlink { .. } => FileType::Symlink,
                Node::Directory { .. } => FileType::Directory,
            };
            if reply.add(
                INodeNo(child.ino),
                k as u64 + 3,
                kind,
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.inodes.len() as u64, 0, 4096, 255, 4096);
    }
}
