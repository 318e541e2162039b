//! Adopting a tree that is already on the store's file system (a build's
//! output) as a store path, without copying it through a NAR.
//!
//! [`LocalStore::prepare_adoption`] canonicalises the tree in place (modes,
//! timestamps, extended attributes, owner) and, in the same walk, computes
//! its NAR hash and size and which of the given reference candidates its
//! NAR contains; with the store's `fsync` setting, the flush of each file and
//! directory starts as it is visited, in parallel ([`super::durable::SyncGroup`]; no
//! whole-filesystem `syncfs`).
//! [`LocalStore::adopt_sync`] then checks the caller's [`ValidPathInfo`]
//! against what was measured (a failed check changes nothing: the tree
//! stays where it was), renames the tree into place, waits until its
//! contents, its top and the store directory's new entry are all on disk
//! (flushed together, so that one journal commit can carry them) and
//! registers it. A failure after the rename deletes the path again; a crash
//! there leaves an unregistered path, which the next add of it or the sweep
//! after a crash removes, as for every other add.
//!
//! The caller guarantees that nothing else writes to the tree between the
//! two calls (for a build: every process of the sandbox has exited).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use b3_nar::NarEncoder;

use super::durable::SyncGroup;
use super::{io_ctx, LocalStore};
use crate::canonicalise::canonical_file_mode;
use crate::hash::{Hash, HashAlgo, Hasher};
use crate::path::StorePath;
use crate::refscan::RefScanner;
use crate::traits::{StoreError, ValidPathInfo};

/// Read buffer for file contents.
const BUF: usize = 128 << 10;

/// A canonical tree whose NAR hash, size and references were measured by
/// [`LocalStore::prepare_adoption`], ready for [`LocalStore::adopt_sync`].
#[derive(Debug)]
pub struct Prepared {
    node: PathBuf,
    nar_hash: Hash,
    nar_size: u64,
    found: BTreeSet<String>,
    /// Whether the tree's top is a directory (as it was walked).
    is_dir: bool,
    /// The flushes of the tree's files, still under way.
    sync: Option<Arc<SyncGroup>>,
}

/// Waits for a group's flushes, ignoring their outcome (they hold
/// descriptors of a tree the caller may be about to delete).
fn wait_quietly(sync: &Option<Arc<SyncGroup>>) {
    if let Some(g) = sync {
        let _ = g.wait();
    }
}

impl Prepared {
    /// Where the tree is (unchanged by preparing).
    pub fn path(&self) -> &Path {
        &self.node
    }

    /// SHA-256 of the tree's NAR.
    pub fn nar_hash(&self) -> Hash {
        self.nar_hash
    }

    pub fn nar_size(&self) -> u64 {
        self.nar_size
    }

    /// The candidates (hash parts) that occur in the NAR.
    pub fn found(&self) -> &BTreeSet<String> {
        &self.found
    }
}

/// Receives the NAR stream: hashes it and scans it for references.
struct Sink {
    hasher: Hasher,
    scanner: RefScanner,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.scanner.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Walk {
    enc: NarEncoder<Sink>,
    buf: Vec<u8>,
    /// Flushes files and directories in parallel (with the store's fsync).
    sync: Option<Arc<SyncGroup>>,
    owner: Owner,
}

fn at(p: &Path, what: &str) -> impl FnOnce(io::Error) -> StoreError {
    io_ctx(format!("{what} {}", p.display()))
}

impl Walk {
    fn node(&mut self, p: &Path, meta: &Metadata, top: bool) -> Result<(), StoreError> {
        let ft = meta.file_type();
        if ft.is_symlink() {
            fix_owner(p, meta, self.owner)?;
            let target = std::fs::read_link(p).map_err(at(p, "reading link"))?;
            let bytes = crate::os::name_bytes(target.as_os_str()).map_err(at(p, "reading link"))?;
            self.enc.symlink(&bytes)?;
            crate::os::set_canonical_mtime(p).map_err(at(p, "setting the time of"))?;
        } else if ft.is_file() {
            fix_owner(p, meta, self.owner)?;
            strip_xattrs(p)?;
            let mode = crate::os::mode(meta);
            let want = canonical_file_mode(mode);
            // Before opening: the builder may have left it unreadable.
            if mode != want {
                crate::os::set_mode(p, want).map_err(at(p, "setting the mode of"))?;
            }
            let mut f = File::open(p).map_err(at(p, "opening"))?;
            let size = meta.len();
            self.enc.file_header(want & 0o100 != 0, size)?;
            let w = self.enc.contents_writer()?;
            let mut left = size;
            while left > 0 {
                let want_n = left.min(self.buf.len() as u64) as usize;
                let n = match f.read(&mut self.buf[..want_n]) {
                    Ok(0) => return Err(changed(p)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(at(p, "reading")(e)),
                };
                w.write_all(&self.buf[..n]).map_err(at(p, "hashing"))?;
                left -= n as u64;
            }
            if f.read(&mut self.buf[..1]).map_err(at(p, "reading"))? != 0 {
                return Err(changed(p));
            }
            self.enc.file_trailer(size)?;
            crate::os::set_canonical_mtime(p).map_err(at(p, "setting the time of"))?;
            if let Some(g) = &self.sync {
                g.submit(f);
            }
        } else if ft.is_dir() {
            fix_owner(p, meta, self.owner)?;
            strip_xattrs(p)?;
            // Entries are neither created nor removed here, so the final
            // mode can be set before descending.
            if crate::os::mode(meta) != 0o555 {
                crate::os::set_mode(p, 0o555).map_err(at(p, "setting the mode of"))?;
            }
            let mut names: Vec<OsString> = std::fs::read_dir(p)
                .map_err(at(p, "listing"))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(at(p, "listing"))?;
            names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
            self.enc.directory_start()?;
            for name in names {
                let c = p.join(&name);
                let m = std::fs::symlink_metadata(&c).map_err(at(&c, "inspecting"))?;
                self.enc
                    .entry(&crate::os::name_bytes(&name).map_err(at(&c, "naming"))?)?;
                self.node(&c, &m, false)?;
            }
            self.enc.directory_end()?;
            crate::os::set_canonical_mtime(p).map_err(at(p, "setting the time of"))?;
            // The top directory is synced after its move (see `adopt_sync`).
            if let (Some(g), false) = (&self.sync, top) {
                g.submit_path(p).map_err(at(p, "syncing"))?;
            }
        } else {
            return Err(StoreError::Other(format!(
                "{}: unsupported file type (only regular files, directories and symlinks can be stored)",
                p.display()
            )));
        }
        Ok(())
    }
}

fn changed(p: &Path) -> StoreError {
    StoreError::Other(format!("{}: file changed while being added", p.display()))
}

/// Owner (uid, gid) of the store directory, whom store objects belong to.
#[cfg(unix)]
type Owner = (u32, u32);
#[cfg(not(unix))]
type Owner = ();

#[cfg(unix)]
fn store_owner(dir: &Path) -> Result<Owner, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(at(dir, "inspecting"))?;
    Ok((m.uid(), m.gid()))
}

#[cfg(not(unix))]
fn store_owner(_dir: &Path) -> Result<Owner, StoreError> {
    Ok(())
}

/// Gives a node to the store's owner (as root, a build's outputs belong to
/// the build user until here). Not permitted means not root, and then a
/// build's outputs are this process's own already.
#[cfg(unix)]
fn fix_owner(p: &Path, meta: &Metadata, owner: Owner) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    if (meta.uid(), meta.gid()) == owner {
        return Ok(());
    }
    match std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(at(p, "changing the owner of")(e)),
    }
}

#[cfg(not(unix))]
fn fix_owner(_p: &Path, _meta: &Metadata, _owner: Owner) -> Result<(), StoreError> {
    Ok(())
}

/// Extended attributes are not part of a NAR; Nix removes them too.
#[cfg(target_os = "linux")]
fn strip_xattrs(p: &Path) -> Result<(), StoreError> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::listxattr(p, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let len = names.len() * 4;
                names.resize(len, 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(at(p, "listing the attributes of")(e.into())),
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        // SELinux labels are the system's, not the build's.
        if name == b"security.selinux" {
            continue;
        }
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
        rustix::fs::removexattr(p, name)
            .map_err(|e| at(p, "removing an attribute of")(e.into()))?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn strip_xattrs(_p: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl LocalStore {
    /// Canonicalises the tree at `node` in place and measures it in one
    /// walk: NAR hash and size, and which of `candidates` (store path hash
    /// parts) its NAR contains. `node` must be on the store's file system
    /// for [`Self::adopt_sync`] to move it. With the store's `fsync`
    /// setting, every file and directory of it is flushed.
    pub fn prepare_adoption<'a>(
        &self,
        node: &Path,
        candidates: impl IntoIterator<Item = &'a String>,
    ) -> Result<Prepared, StoreError> {
        let meta = std::fs::symlink_metadata(node).map_err(at(node, "inspecting"))?;
        let mut walk = Walk {
            enc: NarEncoder::new(Sink {
                hasher: Hasher::new(HashAlgo::Sha256),
                scanner: RefScanner::new(candidates),
            }),
            buf: vec![0u8; BUF],
            sync: self.sync_group(),
            owner: store_owner(self.real_store_dir())?,
        };
        if let Err(e) = walk.node(node, &meta, true) {
            // Not before its flushes are done: they hold descriptors.
            wait_quietly(&walk.sync);
            return Err(e);
        }
        let sync = walk.sync.take();
        let (sink, nar_size) = walk.enc.finish()?;
        Ok(Prepared {
            node: node.to_path_buf(),
            nar_hash: sink.hasher.finish(),
            nar_size,
            found: sink.scanner.found(),
            is_dir: meta.is_dir(),
            sync,
        })
    }

    /// Makes the lock file [`Self::adopt_sync`] will take for `path`
    /// ahead of time (say, on another thread while a build runs), so that
    /// its creation is not on the way of the adoption.
    pub fn make_adoption_lock(&self, path: &StorePath) -> Result<(), StoreError> {
        self.locks()
            .make_file(&path.base_name())
            .map_err(io_ctx("making the path's lock file"))
    }

    /// Registers a prepared tree as `info.path`, moving it (not copying).
    /// `info`'s NAR hash and size must be the measured ones, its content
    /// address (if any) must match the contents and its references must be
    /// valid; otherwise nothing changes. A path that is valid already is
    /// left as it is (and so is the tree).
    pub fn adopt_sync(&self, prepared: Prepared, info: &ValidPathInfo) -> Result<(), StoreError> {
        match self.place_adopted(prepared, info, &|_| false)? {
            Some(placed) => self.commit_adopted(placed),
            None => Ok(()),
        }
    }

    /// The first half of [`Self::adopt_sync`]: checks `info` against what
    /// was measured, takes the path's lock and moves the tree into place
    /// with its final metadata, so that its bytes can be read at the store
    /// path from now on; [`Self::commit_adopted`] then waits for its
    /// flushes and registers it. `Ok(None)`: the path is valid already
    /// (nothing moved). A reference may be valid or `pending(reference)`:
    /// placed and not yet registered, its registration queued before this
    /// one's (the caller orders them, see `commit_adopted`).
    ///
    /// Until it is committed the path is an unregistered leftover: a crash
    /// leaves it to the next add of it or to the sweep after a crash, and
    /// its lock (held by the [`Placed`]) keeps other adds of it away.
    pub fn place_adopted(
        &self,
        prepared: Prepared,
        info: &ValidPathInfo,
        pending: &dyn Fn(&StorePath) -> bool,
    ) -> Result<Option<Placed>, StoreError> {
        let path_s = self.print_path(&info.path);
        self.add_temp_roots(std::iter::once(&info.path).chain(info.references.iter()))?;
        if info.nar_hash != prepared.nar_hash {
            return Err(StoreError::NarHashMismatch {
                path: path_s,
                expected: info.nar_hash.to_string(),
                got: prepared.nar_hash.to_string(),
            });
        }
        if info.nar_size != prepared.nar_size {
            return Err(StoreError::NarSizeMismatch {
                path: path_s,
                expected: info.nar_size,
                got: prepared.nar_size,
            });
        }
        if let Some(ca) = &info.ca {
            if !info.ca_matches_path(self.store_dir()) {
                return Err(StoreError::CaMismatch {
                    path: path_s,
                    ca: ca.to_string(),
                });
            }
            self.check_ca_contents(&prepared.node, ca, &prepared.nar_hash, &path_s)?;
        }
        for r in &info.references {
            if r != &info.path && !pending(r) && !self.is_valid_sync(r)? {
                return Err(StoreError::MissingReference {
                    path: path_s,
                    reference: self.print_path(r),
                });
            }
        }
        let lock = self
            .locks()
            .lock(&info.path.base_name())
            .map_err(io_ctx("locking the path"))?;
        if self.is_valid_sync(&info.path)? {
            return Ok(None);
        }
        let dest = self.real_path(&info.path);
        if std::fs::symlink_metadata(&dest).is_ok() {
            // Unregistered leftover (a crash after the move, before registering).
            self.delete_physical(&dest)?;
        }
        let node = &prepared.node;
        let is_dir = prepared.is_dir;
        // A directory moving to another parent needs its own write
        // permission (its `..` changes); see `new_tmp_node`.
        if is_dir {
            crate::os::set_mode(node, 0o755).map_err(at(node, "setting the mode of"))?;
        }
        super::crash_point("before-rename");
        if let Err(e) = std::fs::rename(node, &dest) {
            if is_dir {
                let _ = crate::os::set_mode(node, 0o555);
            }
            return Err(at(node, "moving into the store")(e));
        }
        // From here on a failure removes the path again. Until it is
        // registered it is an unregistered leftover, which the next add of
        // it or the sweep after a crash deletes.
        let placed = Placed {
            prepared,
            info: info.clone(),
            dest,
            is_dir,
            _lock: lock,
        };
        if let Err(e) = self.finish_placing(&placed) {
            self.discard_adopted(placed);
            return Err(e);
        }
        Ok(Some(placed))
    }

    /// Restores the moved top's metadata (readers of the placed path see
    /// it final) and starts the flushes of the top and of the store
    /// directory's new entry.
    fn finish_placing(&self, placed: &Placed) -> Result<(), StoreError> {
        let dest = &placed.dest;
        if placed.is_dir {
            crate::os::set_mode(dest, 0o555).map_err(at(dest, "setting the mode of"))?;
        }
        crate::os::set_canonical_mtime(dest).map_err(at(dest, "setting the time of"))?;
        if let Some(g) = &placed.prepared.sync {
            if placed.is_dir {
                g.submit_path(dest).map_err(at(dest, "syncing"))?;
            }
            g.submit_path(self.real_store_dir())
                .map_err(at(dest, "syncing the store directory for"))?;
        }
        Ok(())
    }

    /// The second half of [`Self::adopt_sync`]: waits until the placed
    /// path's contents, its top and the store directory's new entry are on
    /// disk (flushed together, so that one journal commit can carry them),
    /// then registers it. The database checks in the same transaction that
    /// every reference is registered, so a caller that places B (referring
    /// to A) before A is registered must commit A first: then a crash
    /// between the two, or a failure of A's commit, never leaves B
    /// registered without A. On failure the path is removed again.
    pub fn commit_adopted(&self, placed: Placed) -> Result<(), StoreError> {
        let r = self.commit_placed(&placed);
        if r.is_err() {
            self.discard_adopted(placed);
        }
        r
    }

    /// Registers a build's placed outputs (each after those it refers to,
    /// or with them) and records them as the outputs of `drv`, a
    /// registered derivation, in one transaction: on any failure none is
    /// registered and every one is removed again.
    pub fn commit_built(
        &self,
        placed: Vec<Placed>,
        drv: &StorePath,
        outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        let r = self.commit_all(&placed, drv, outputs);
        if r.is_err() {
            placed.into_iter().for_each(|p| self.discard_adopted(p));
        }
        r
    }

    fn commit_all(
        &self,
        placed: &[Placed],
        drv: &StorePath,
        outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        for p in placed {
            self.wait_flushed(p)?;
        }
        super::crash_point("before-register");
        let items: Vec<_> = placed.iter().map(|p| self.registration_of(p)).collect();
        let outs: Vec<(String, String)> = outputs
            .iter()
            .map(|(n, p)| (n.clone(), self.print_path(p)))
            .collect();
        self.db()
            .register_built(&items, &self.print_path(drv), &outs)
            .map_err(super::db_err)
    }

    /// Waits until `placed`'s bytes are on disk (see `finish_placing`).
    fn wait_flushed(&self, placed: &Placed) -> Result<(), StoreError> {
        let dest = &placed.dest;
        if let Some(g) = &placed.prepared.sync {
            g.wait().map_err(at(dest, "syncing"))?;
        } else if self.inner.fsync && self.inner.sync_whole_fs {
            // The one-syncfs-per-add mode (`B3_FSYNC=syncfs`).
            self.sync_filesystem(dest)?;
        }
        Ok(())
    }

    fn commit_placed(&self, placed: &Placed) -> Result<(), StoreError> {
        self.wait_flushed(placed)?;
        super::crash_point("before-register");
        self.db()
            .register(&[self.registration_of(placed)])
            .map_err(super::db_err)
    }

    /// `placed`'s database row and the printed paths it refers to.
    fn registration_of(&self, placed: &Placed) -> (super::db::PathRow, BTreeSet<String>) {
        let info = &placed.info;
        let refs = info.references.iter().map(|r| self.print_path(r));
        (self.row_of(info), refs.collect())
    }

    /// Gives up a placed path that will not be registered: removes it from
    /// the store directory (its lock is released afterwards).
    pub fn discard_adopted(&self, placed: Placed) {
        wait_quietly(&placed.prepared.sync);
        let _ = self.delete_physical(&placed.dest);
    }
}

/// A tree moved into place by [`LocalStore::place_adopted`], not yet
/// registered: commit it with [`LocalStore::commit_adopted`] or give it up
/// with [`LocalStore::discard_adopted`]. Holds the path's lock.
#[derive(Debug)]
pub struct Placed {
    prepared: Prepared,
    info: ValidPathInfo,
    dest: PathBuf,
    is_dir: bool,
    _lock: crate::lock::FileLock,
}

impl Placed {
    /// The store path placed.
    pub fn path(&self) -> &StorePath {
        &self.info.path
    }

    /// What will be registered.
    pub fn info(&self) -> &ValidPathInfo {
        &self.info
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        wait_quietly(&self.sync);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::local::LocalStoreConfig;
    use crate::path::StorePath;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn store(d: &Path) -> LocalStore {
        store_with(d, false)
    }

    fn store_with(d: &Path, fsync: bool) -> LocalStore {
        let mut cfg = LocalStoreConfig::new(d.join("root"));
        cfg.fsync = fsync;
        LocalStore::open(cfg).unwrap()
    }

    /// A work directory beside the store paths, as the builder makes one.
    fn work(s: &LocalStore, name: &str) -> PathBuf {
        let w = s
            .real_store_dir()
            .join(format!(".b3-tmp-{}-adopt-{name}", std::process::id()));
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    fn out_path(s: &LocalStore, name: &str) -> StorePath {
        s.store_dir()
            .parse(&format!(
                "{}/{}-{name}",
                s.store_dir(),
                "1".repeat(32).replace('1', "a")
            ))
            .unwrap()
    }

    fn nar_of(p: &Path) -> (Hash, u64) {
        let mut h = Hasher::new(HashAlgo::Sha256);
        let (_, n) = b3_nar::dump_path(p, &mut h).unwrap();
        (h.finish(), n)
    }

    #[test]
    fn adopts_a_tree_canonically_with_the_nar_hash_of_a_copy() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with(d.path(), true);
        let w = work(&s, "ok");
        let t = w.join("out");
        std::fs::create_dir_all(t.join("bin")).unwrap();
        std::fs::write(t.join("bin/x"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(t.join("bin/x"), std::fs::Permissions::from_mode(0o4700)).unwrap();
        std::fs::write(t.join("secret"), b"unreadable by its owner").unwrap();
        std::fs::set_permissions(t.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::os::unix::fs::symlink("bin/x", t.join("link")).unwrap();
        // Not every file system takes user attributes; where it does, they go.
        let xattr = rustix::fs::setxattr(
            t.join("bin/x"),
            "user.b3test",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o500)).unwrap();

        let p = out_path(&s, "ok");
        let prepared = s.prepare_adoption(&t, [&p.hash_part()]).unwrap();
        assert!(prepared.found().is_empty());
        let (hash, size) = nar_of(&t);
        assert_eq!((prepared.nar_hash(), prepared.nar_size()), (hash, size));

        let info = ValidPathInfo::new(p.clone(), hash, size);
        s.adopt_sync(prepared, &info).unwrap();
        assert!(s.is_valid_sync(&p).unwrap());
        assert!(!t.exists(), "moved, not copied");
        let real = s.real_path(&p);
        let m = |q: &Path| std::fs::symlink_metadata(q).unwrap();
        assert_eq!(m(&real).mode() & 0o7777, 0o555);
        assert_eq!(m(&real.join("bin/x")).mode() & 0o7777, 0o555);
        assert_eq!(m(&real.join("secret")).mode() & 0o7777, 0o444);
        for q in [
            real.clone(),
            real.join("bin"),
            real.join("bin/x"),
            real.join("link"),
        ] {
            assert_eq!(
                m(&q).mtime(),
                crate::canonicalise::CANONICAL_MTIME,
                "{}",
                q.display()
            );
        }
        assert_eq!(s.query_path_info_sync(&p).unwrap().unwrap().nar_hash, hash);
        if xattr {
            let mut buf = [0u8; 256];
            let n = rustix::fs::listxattr(real.join("bin/x"), &mut buf[..]).unwrap();
            assert!(!buf[..n].windows(6).any(|w| w == b"b3test"));
        }
    }

    #[test]
    fn adopts_in_the_one_syncfs_per_add_mode_too() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = LocalStoreConfig::new(d.path().join("root"));
        cfg.sync_whole_fs = true;
        let s = LocalStore::open(cfg).unwrap();
        let w = work(&s, "syncfs");
        let t = w.join("out");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("f"), b"x").unwrap();
        let p = out_path(&s, "syncfs");
        let prepared = s.prepare_adoption(&t, std::iter::empty()).unwrap();
        let info = ValidPathInfo::new(p.clone(), prepared.nar_hash(), prepared.nar_size());
        s.adopt_sync(prepared, &info).unwrap();
        assert!(s.is_valid_sync(&p).unwrap());
        assert_eq!(std::fs::read(s.real_path(&p).join("f")).unwrap(), b"x");
    }

    #[test]
    fn finds_references_in_contents_and_symlink_targets() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let w = work(&s, "refs");
        let t = w.join("out");
        std::fs::create_dir(&t).unwrap();
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let c = "c".repeat(32);
        std::fs::write(t.join("f"), format!("x /nix/store/{a}-dep y")).unwrap();
        std::os::unix::fs::symlink(format!("/nix/store/{b}-other"), t.join("l")).unwrap();
        let prepared = s.prepare_adoption(&t, [&a, &b, &c]).unwrap();
        assert_eq!(prepared.found(), &BTreeSet::from([a, b]));
    }

    #[test]
    fn a_hash_mismatch_leaves_the_store_and_the_tree_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let w = work(&s, "bad");
        let t = w.join("out");
        std::fs::write(&t, b"contents").unwrap();
        let p = out_path(&s, "bad");
        let prepared = s.prepare_adoption(&t, std::iter::empty()).unwrap();
        let size = prepared.nar_size();
        let info = ValidPathInfo::new(p.clone(), Hash::digest(HashAlgo::Sha256, b"other"), size);
        assert!(matches!(
            s.adopt_sync(prepared, &info),
            Err(StoreError::NarHashMismatch { .. })
        ));
        assert!(!s.is_valid_sync(&p).unwrap());
        assert!(!s.real_path(&p).exists());
        assert!(t.exists());
    }

    #[test]
    fn a_missing_reference_leaves_the_store_and_the_tree_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let w = work(&s, "ref");
        let t = w.join("out");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("f"), b"x").unwrap();
        let p = out_path(&s, "ref");
        let prepared = s.prepare_adoption(&t, std::iter::empty()).unwrap();
        let mut info = ValidPathInfo::new(p.clone(), prepared.nar_hash(), prepared.nar_size());
        let missing = s
            .store_dir()
            .parse(&format!("{}/{}-missing", s.store_dir(), "d".repeat(32)))
            .unwrap();
        info.references.insert(missing);
        assert!(matches!(
            s.adopt_sync(prepared, &info),
            Err(StoreError::MissingReference { .. })
        ));
        assert!(!s.is_valid_sync(&p).unwrap());
        assert!(!s.real_path(&p).exists());
        assert!(t.join("f").exists());
        let leftovers: Vec<_> = std::fs::read_dir(s.real_store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".b3-tmp-") && !w.ends_with(n))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn path_of(s: &LocalStore, c: char, name: &str) -> StorePath {
        s.store_dir()
            .parse(&format!(
                "{}/{}-{name}",
                s.store_dir(),
                c.to_string().repeat(32)
            ))
            .unwrap()
    }

    /// A one-file output of `name` whose contents name `refs`, prepared.
    fn prepared_file(s: &LocalStore, name: &str, refs: &[&StorePath]) -> Prepared {
        let w = work(s, name);
        let t = w.join("out");
        let text: String = refs
            .iter()
            .map(|r| format!("{}\n", s.print_path(r)))
            .collect();
        std::fs::write(&t, text).unwrap();
        let hashes: Vec<String> = refs.iter().map(|r| r.hash_part()).collect();
        s.prepare_adoption(&t, hashes.iter()).unwrap()
    }

    fn info_of(p: &Prepared, path: &StorePath, refs: &[&StorePath]) -> ValidPathInfo {
        let mut info = ValidPathInfo::new(path.clone(), p.nar_hash(), p.nar_size());
        info.references = refs.iter().map(|r| (*r).clone()).collect();
        info
    }

    #[test]
    fn a_placed_path_is_readable_before_it_is_registered_and_dependents_commit_after_it() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with(d.path(), true);
        let a = path_of(&s, 'a', "a");
        let b = path_of(&s, 'b', "b");
        let pa = prepared_file(&s, "a", &[]);
        let ia = info_of(&pa, &a, &[]);
        let placed_a = s.place_adopted(pa, &ia, &|_| false).unwrap().unwrap();
        assert_eq!(std::fs::read(s.real_path(&a)).unwrap(), b"");
        assert!(!s.is_valid_sync(&a).unwrap());

        // B refers to A: refused while A is neither valid nor pending.
        let pb = prepared_file(&s, "b", &[&a]);
        assert_eq!(pb.found(), &BTreeSet::from([a.hash_part()]));
        let ib = info_of(&pb, &b, &[&a]);
        assert!(matches!(
            s.place_adopted(pb, &ib, &|_| false),
            Err(StoreError::MissingReference { .. })
        ));
        assert!(!s.real_path(&b).exists());
        let pb = prepared_file(&s, "b2", &[&a]);
        let placed_b = s.place_adopted(pb, &ib, &|r| r == &a).unwrap().unwrap();
        assert!(s.real_path(&b).exists());

        // In order: A, then B.
        s.commit_adopted(placed_a).unwrap();
        s.commit_adopted(placed_b).unwrap();
        assert!(s.is_valid_sync(&a).unwrap());
        let info = s.query_path_info_sync(&b).unwrap().unwrap();
        assert_eq!(info.references, BTreeSet::from([a.clone()]));
    }

    #[test]
    fn a_dependent_committed_before_its_reference_is_refused_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let a = path_of(&s, 'a', "a");
        let b = path_of(&s, 'b', "b");
        let pa = prepared_file(&s, "a", &[]);
        let ia = info_of(&pa, &a, &[]);
        let placed_a = s.place_adopted(pa, &ia, &|_| false).unwrap().unwrap();
        let pb = prepared_file(&s, "b", &[&a]);
        let ib = info_of(&pb, &b, &[&a]);
        let placed_b = s.place_adopted(pb, &ib, &|r| r == &a).unwrap().unwrap();

        // A given up (say, its flush failed): B must not be registered.
        s.discard_adopted(placed_a);
        assert!(s.commit_adopted(placed_b).is_err());
        for p in [&a, &b] {
            assert!(!s.is_valid_sync(p).unwrap());
            assert!(!s.real_path(p).exists(), "{p:?} left in the store");
        }
    }

    /// A, and B referring to A, placed as a build's two outputs; `drv`
    /// stands for its derivation, registered when `registered`.
    fn two_outputs(
        s: &LocalStore,
        registered: bool,
    ) -> (StorePath, StorePath, StorePath, Vec<Placed>) {
        let a = path_of(s, 'a', "a");
        let b = path_of(s, 'b', "b");
        let drv = path_of(s, 'd', "d.drv");
        if registered {
            let pd = prepared_file(s, "d", &[]);
            let id = info_of(&pd, &drv, &[]);
            let placed = s.place_adopted(pd, &id, &|_| false).unwrap().unwrap();
            s.commit_adopted(placed).unwrap();
        }
        let pa = prepared_file(s, "a", &[]);
        let ia = info_of(&pa, &a, &[]);
        let placed_a = s.place_adopted(pa, &ia, &|_| false).unwrap().unwrap();
        let pb = prepared_file(s, "b", &[&a]);
        let ib = info_of(&pb, &b, &[&a]);
        let placed_b = s.place_adopted(pb, &ib, &|r| r == &a).unwrap().unwrap();
        (a, b, drv, vec![placed_a, placed_b])
    }

    #[test]
    fn a_build_s_outputs_register_with_their_derivation_s_mapping() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with(d.path(), true);
        let (a, b, drv, placed) = two_outputs(&s, true);
        let outputs = [
            ("out".to_string(), a.clone()),
            ("dev".to_string(), b.clone()),
        ];
        s.commit_built(placed, &drv, &outputs).unwrap();
        assert!(s.is_valid_sync(&a).unwrap());
        let info = s.query_path_info_sync(&b).unwrap().unwrap();
        assert_eq!(info.references, BTreeSet::from([a.clone()]));
        let recorded: BTreeMap<_, _> = s
            .query_derivation_outputs(&drv)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(recorded.get("out"), Some(&a));
        assert_eq!(recorded.get("dev"), Some(&b));
    }

    #[test]
    fn a_build_whose_mapping_cannot_be_recorded_registers_none_of_its_outputs() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        // Its derivation is not registered: the mapping is refused.
        let (a, b, drv, placed) = two_outputs(&s, false);
        let outputs = [
            ("out".to_string(), a.clone()),
            ("dev".to_string(), b.clone()),
        ];
        assert!(s.commit_built(placed, &drv, &outputs).is_err());
        for p in [&a, &b] {
            assert!(!s.is_valid_sync(p).unwrap(), "{p:?} registered");
            assert!(!s.real_path(p).exists(), "{p:?} left in the store");
        }
    }

    #[test]
    fn refuses_special_files() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let w = work(&s, "fifo");
        let t = w.join("out");
        std::fs::create_dir(&t).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.join("p"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(s.prepare_adoption(&t, std::iter::empty()).is_err());
    }
}
