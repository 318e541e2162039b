//! The inode table of a view: inode numbers handed out on first lookup and
//! kept for the life of the mount, so a name resolves to the same inode
//! every time. Each (parent, name) gets its own inode even when two places
//! share one object, because the kernel must never see a directory with two
//! parents.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::odb::{Entry, Node};

/// The root directory of every view.
pub const ROOT_INO: u64 = 1;

/// One inode: where it hangs, what it is, and (directories) its entries once read.
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    pub parent: u64,
    pub name: Box<[u8]>,
    /// `None` for the view root, which lists the closure.
    pub node: Option<Node>,
    /// Index of the store path this inode belongs to (its top-level ancestor).
    pub top: u64,
    pub entries: OnceLock<Arc<Vec<Entry>>>,
}

#[derive(Default)]
struct Inner {
    /// `nodes[ino - 1]`.
    nodes: Vec<Arc<Inode>>,
    by_name: HashMap<(u64, Box<[u8]>), u64>,
}

/// Thread-safe inode table shared by the FUSE worker threads.
pub struct Inodes {
    inner: RwLock<Inner>,
}

impl Inodes {
    pub fn new() -> Self {
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: Box::from(&b""[..]),
            node: None,
            top: ROOT_INO,
            entries: OnceLock::new(),
        });
        Inodes {
            inner: RwLock::new(Inner {
                nodes: vec![root],
                by_name: HashMap::new(),
            }),
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        g.nodes.get(idx).cloned()
    }

    pub fn find(&self, parent: u64, name: &[u8]) -> Option<Arc<Inode>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let ino = *g.by_name.get(&(parent, Box::from(name)))?;
        g.nodes.get((ino - 1) as usize).cloned()
    }

    /// The inode of `name` under `parent`, created with `node` if new.
    pub fn intern(&self, parent: &Inode, name: &[u8], node: Node) -> Arc<Inode> {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = (parent.ino, Box::from(name));
        if let Some(&ino) = g.by_name.get(&key) {
            return g.nodes[(ino - 1) as usize].clone();
        }
        let ino = g.nodes.len() as u64 + 1;
        let top = if parent.ino == ROOT_INO {
            ino
        } else {
            parent.top
        };
        let inode = Arc::new(Inode {
            ino,
            parent: parent.ino,
            name: key.1.clone(),
            node: Some(node),
            top,
            entries: OnceLock::new(),
        });
        g.nodes.push(inode.clone());
        g.by_name.insert(key, ino);
        inode
    }

    /// The store path name and the path inside it of `ino` (for tracing).
    pub fn path_of(&self, ino: u64) -> Option<(String, Vec<u8>)> {
        let mut parts: Vec<Box<[u8]>> = Vec::new();
        let mut cur = self.get(ino)?;
        while cur.parent != ROOT_INO {
            parts.push(cur.name.clone());
            cur = self.get(cur.parent)?;
        }
        if cur.ino == ROOT_INO {
            return Some((String::new(), Vec::new()));
        }
        let top = String::from_utf8_lossy(&cur.name).into_owned();
        let mut rel = Vec::new();
        for p in parts.iter().rev() {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(p);
        }
        Some((top, rel))
    }

    /// Number of inodes handed out so far (the root included).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .len()
    }
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}
