//! The object database: store file data, content-addressed and deduplicated.
//!
//! Layout under the database root:
//!
//! ```text
//! blobs/ab/<64 hex>   file contents, named by their BLAKE3 digest, mode 0444
//! trees/ab/<64 hex>   directory manifests (see `tree`), named by BLAKE3
//! roots/<base name>   the root node of one store path ("b3vfs-root\x01" node)
//! tmp/                objects being written
//! ```
//!
//! Objects are written to `tmp/` while being hashed and renamed into place, so
//! a reader never sees half an object. Objects are not fsynced one by one: an
//! import calls `syncfs` once before it publishes the root record (itself
//! fsynced, then renamed, then its directory fsynced), so a root never points
//! at data that a crash could lose. An object left empty by a crash before its
//! root was published is caught by the size check in [`Odb::has_blob`] and
//! rewritten by the next import of the same data.
//!
//! Garbage is found by a sweep from live roots ([`Odb::gc`]), with no
//! reference counts to keep consistent.

pub mod id;
pub mod tree;

mod blob;
#[cfg(unix)]
mod fsimport;
mod gc;
#[cfg(feature = "nar")]
mod nar_export;
#[cfg(feature = "nar")]
mod nar_import;
mod verify;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use blob::BlobWriter;
pub use gc::GcStats;
pub use id::ObjectId;
pub use tree::{DecodeError, Entry, Node};
pub use verify::Damage;

const ROOT_MAGIC: &[u8] = b"b3vfs-root\x01";

/// Errors of the object database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("object {id} is corrupt: {source}")]
    CorruptTree {
        id: ObjectId,
        #[source]
        source: DecodeError,
    },
    #[error("root record of {name} is corrupt: {source}")]
    CorruptRoot {
        name: String,
        #[source]
        source: DecodeError,
    },
    #[error("blob {id} has {found} bytes, expected {expected}")]
    BlobSize {
        id: ObjectId,
        expected: u64,
        found: u64,
    },
    #[error("not a valid store path base name: {0:?}")]
    BadName(String),
    #[error("no such store path in the object database: {0}")]
    NoRoot(String),
    #[error("{} is not a regular file, symlink or directory", .0.display())]
    Unsupported(PathBuf),
    #[cfg(feature = "nar")]
    #[error("NAR: {0}")]
    Nar(#[from] b3_nar::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A handle on one object database directory. Cheap to clone; all state is
/// on disk, so several processes may share one database.
#[derive(Debug, Clone)]
pub struct Odb {
    root: PathBuf,
}

/// Checks a store path base name (`<hash>-<name>`) before it becomes a file name.
pub fn valid_root_name(name: &str) -> bool {
    tree::valid_name(name.as_bytes()) && !name.starts_with('.')
}

impl Odb {
    /// Opens the database at `root`, creating its directories if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["blobs", "trees", "roots", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        Ok(Odb { root })
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    fn sharded(&self, kind: &str, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        let mut p = self.root.join(kind);
        p.push(&hex[..2]);
        p.push(&hex);
        p
    }

    /// Where the contents of blob `id` live; open and `pread` it to serve reads.
    pub fn blob_path(&self, id: &ObjectId) -> PathBuf {
        self.sharded("blobs", id)
    }

    pub fn tree_path(&self, id: &ObjectId) -> PathBuf {
        self.sharded("trees", id)
    }

    /// Whether blob `id` is present with the expected size.
    pub fn has_blob(&self, id: &ObjectId, size: u64) -> bool {
        fs::symlink_metadata(self.blob_path(id)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Starts writing one blob; bytes are hashed as they are written.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self)
    }

    /// Stores `bytes` as a blob (for small data; use [`Odb::blob_writer`] to stream).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(ObjectId, u64)> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err("writing", &self.root))?;
        w.finish()
    }

    /// Opens blob `id` for reading.
    pub fn open_blob(&self, id: &ObjectId) -> Result<fs::File> {
        let p = self.blob_path(id);
        fs::File::open(&p).map_err(io_err("opening blob", &p))
    }

    /// Stores a directory manifest; `entries` must be sorted by name bytes
    /// with valid, unique names. Returns the directory node pointing at it.
    pub fn put_tree(&self, entries: &[Entry]) -> Result<Node> {
        let bytes = tree::encode_tree(entries);
        let id = ObjectId::of(&bytes);
        let dest = self.tree_path(&id);
        if !dest.exists() {
            self.write_atomically(&dest, &bytes, false)?;
        }
        Ok(Node::Directory {
            tree: id,
            entries: entries.len() as u64,
        })
    }

    /// Reads and validates a directory manifest, checking its digest.
    pub fn get_tree(&self, id: &ObjectId) -> Result<Vec<Entry>> {
        let p = self.tree_path(id);
        let bytes = fs::read(&p).map_err(io_err("reading tree", &p))?;
        if ObjectId::of(&bytes) != *id {
            return Err(Error::CorruptTree {
                id: *id,
                source: DecodeError::Magic,
            });
        }
        tree::decode_tree(&bytes).map_err(|source| Error::CorruptTree { id: *id, source })
    }

    fn root_record_path(&self, name: &str) -> Result<PathBuf> {
        if !valid_root_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        Ok(self.root.join("roots").join(name))
    }

    /// Publishes `node` as the content of store path `name`. Everything the
    /// node refers to must already be stored; this flushes the filesystem
    /// first so the record never outlives its objects across a crash.
    pub fn set_root(&self, name: &str, node: &Node) -> Result<()> {
        let dest = self.root_record_path(name)?;
        self.sync_all_objects()?;
        let mut bytes = ROOT_MAGIC.to_vec();
        node.encode_into(&mut bytes);
        self.write_atomically(&dest, &bytes, true)
    }

    /// The root node of store path `name`, if it was imported.
    pub fn root(&self, name: &str) -> Result<Option<Node>> {
        let p = self.root_record_path(name)?;
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading root", &p)(e)),
        };
        let corrupt = |source| Error::CorruptRoot {
            name: name.to_owned(),
            source,
        };
        let rest = bytes
            .strip_prefix(ROOT_MAGIC)
            .ok_or(corrupt(DecodeError::Magic))?;
        let mut cur = tree::Cursor { b: rest };
        let node = Node::decode_from(&mut cur).map_err(corrupt)?;
        if !cur.b.is_empty() {
            return Err(corrupt(DecodeError::Trailing));
        }
        Ok(Some(node))
    }

    /// Whether store path `name` has a root record: one `stat`, where
    /// [`Odb::root`] reads and decodes the record (callers checking a
    /// whole closure before mounting it make one call per path).
    pub fn has_root(&self, name: &str) -> Result<bool> {
        let p = self.root_record_path(name)?;
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("looking up root", &p)(e)),
        }
    }

    /// Forgets store path `name` (its objects go at the next [`Odb::gc`]).
    pub fn remove_root(&self, name: &str) -> Result<bool> {
        let p = self.root_record_path(name)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing root", &p)(e)),
        }
    }

    /// Names of all store paths in the database, sorted.
    pub fn roots(&self) -> Result<Vec<String>> {
        let dir = self.root.join("roots");
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            if let Some(n) = e.file_name().to_str() {
                if valid_root_name(n) {
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Flushes every object written so far to disk (one `syncfs`).
    #[cfg(unix)]
    fn sync_all_objects(&self) -> Result<()> {
        let dir = fs::File::open(&self.root).map_err(io_err("opening", &self.root))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::Io {
            what: "syncfs",
            path: self.root.clone(),
            source: e.into(),
        })
    }

    /// No `syncfs` off Unix: roots are still written durably, but objects
    /// rely on the OS flushing them (the size check catches empty ones).
    #[cfg(not(unix))]
    fn sync_all_objects(&self) -> Result<()> {
        Ok(())
    }

    /// A fresh path under `tmp/` that no other writer uses.
    pub(crate) fn temp_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root
            .join("tmp")
            .join(format!("{}-{n}-{nanos:x}", std::process::id()))
    }

    /// Writes `bytes` to `dest` through a temporary file and a rename.
    fn write_atomically(&self, dest: &Path, bytes: &[u8], durable: bool) -> Result<()> {
        let tmp = self.temp_path();
        let res = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            f.write_all(bytes).map_err(io_err("writing", &tmp))?;
            if durable {
                f.sync_all().map_err(io_err("syncing", &tmp))?;
            }
            drop(f);
            make_read_only(&tmp)?;
            self.place(&tmp, dest)?;
            if durable {
                if let Some(parent) = dest.parent() {
                    let d = fs::File::open(parent).map_err(io_err("opening", parent))?;
                    d.sync_all().map_err(io_err("syncing", parent))?;
                }
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Renames a finished temporary file to its final place, creating the shard.
    pub(crate) fn place(&self, tmp: &Path, dest: &Path) -> Result<()> {
        match fs::rename(tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                }
                fs::rename(tmp, dest).map_err(io_err("renaming into", dest))
            }
            Err(e) => Err(io_err("renaming into", dest)(e)),
        }
    }
}

pub(crate) fn make_read_only(p: &Path) -> Result<()> {
    let mut perm = fs::metadata(p).map_err(io_err("stat", p))?.permissions();
    // On Unix: clears every write bit (objects are created 0644 → 0444).
    perm.set_readonly(true);
    fs::set_permissions(p, perm).map_err(io_err("chmod", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_deduplicated_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let odb = Odb::open(dir.path()).unwrap();
        let (a, sa) = odb.put_blob(b"same bytes").unwrap();
        let (b, _) = odb.put_blob(b"same bytes").unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, 10);
        assert!(odb.has_blob(&a, 10));
        assert!(!odb.has_blob(&a, 11));
        assert_eq!(fs::read(odb.blob_path(&a)).unwrap(), b"same bytes");
        assert_eq!(a, ObjectId::of(b"same bytes"));
        let shard = odb.blob_path(&a);
        assert_eq!(
            shard
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            &a.to_hex()[..2]
        );
        // Nothing is left behind in tmp/.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn roots_round_trip_and_reject_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let odb = Odb::open(dir.path()).unwrap();
        let (blob, size) = odb.put_blob(b"x").unwrap();
        let file = Node::File {
            executable: true,
            size,
            blob,
        };
        let d = odb
            .put_tree(&[Entry {
                name: b"f".to_vec(),
                node: file.clone(),
            }])
            .unwrap();
        odb.set_root("aaaa-pkg", &d).unwrap();
        assert_eq!(odb.root("aaaa-pkg").unwrap(), Some(d.clone()));
        assert_eq!(odb.root("bbbb-none").unwrap(), None);
        assert!(odb.has_root("aaaa-pkg").unwrap());
        assert!(!odb.has_root("bbbb-none").unwrap());
        assert!(odb.has_root("no/slash").is_err());
        assert_eq!(odb.roots().unwrap(), vec!["aaaa-pkg".to_string()]);
        let Node::Directory { tree, .. } = d else {
            panic!("not a dir")
        };
        assert_eq!(odb.get_tree(&tree).unwrap()[0].node, file);
        for bad in ["", "..", "a/b", ".hidden"] {
            assert!(matches!(odb.root(bad), Err(Error::BadName(_))));
        }
        assert!(odb.remove_root("aaaa-pkg").unwrap());
        assert_eq!(odb.root("aaaa-pkg").unwrap(), None);
    }

    #[test]
    fn tampered_tree_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let odb = Odb::open(dir.path()).unwrap();
        let Node::Directory { tree, .. } = odb.put_tree(&[]).unwrap() else {
            panic!()
        };
        let p = odb.tree_path(&tree);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"b3vfs-tree\x01\x01\0\0\0\0\0\0\0").unwrap();
        assert!(matches!(
            odb.get_tree(&tree),
            Err(Error::CorruptTree { .. })
        ));
    }
}
