//! Garbage collection by sweeping: mark every object reachable from a root
//! record, then delete the rest. Objects younger than a minimum age are kept,
//! because an import in progress has written them but not yet its root.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{io_err, Node, ObjectId, Odb, Result};

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    pub live_blobs: u64,
    pub live_trees: u64,
    pub deleted_blobs: u64,
    pub deleted_trees: u64,
    pub deleted_temp: u64,
    pub freed_bytes: u64,
}

impl Odb {
    /// Objects reachable from the given roots (blobs, trees).
    pub fn reachable(&self, roots: &[Node]) -> Result<(HashSet<ObjectId>, HashSet<ObjectId>)> {
        let mut blobs = HashSet::new();
        let mut trees = HashSet::new();
        let mut todo: Vec<Node> = roots.to_vec();
        while let Some(n) = todo.pop() {
            match n {
                Node::File { blob, .. } => {
                    blobs.insert(blob);
                }
                Node::Symlink { .. } => {}
                Node::Directory { tree, .. } => {
                    if trees.insert(tree) {
                        todo.extend(self.get_tree(&tree)?.into_iter().map(|e| e.node));
                    }
                }
            }
        }
        Ok((blobs, trees))
    }

    /// Deletes every object not reachable from a root record and older than
    /// `min_age`, and stale temporary files.
    pub fn gc(&self, min_age: Duration) -> Result<GcStats> {
        let mut roots = Vec::new();
        for name in self.roots()? {
            if let Some(n) = self.root(&name)? {
                roots.push(n);
            }
        }
        let (blobs, trees) = self.reachable(&roots)?;
        let mut st = GcStats {
            live_blobs: blobs.len() as u64,
            live_trees: trees.len() as u64,
            ..GcStats::default()
        };
        let now = SystemTime::now();
        let old = |md: &fs::Metadata| {
            md.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age)
        };
        for (kind, live, counter) in [("blobs", &blobs, 0usize), ("trees", &trees, 1usize)] {
            let top = self.root_dir().join(kind);
            for shard in fs::read_dir(&top).map_err(io_err("listing", &top))? {
                let shard = shard.map_err(io_err("listing", &top))?.path();
                if !shard.is_dir() {
                    continue;
                }
                for obj in fs::read_dir(&shard).map_err(io_err("listing", &shard))? {
                    let obj = obj.map_err(io_err("listing", &shard))?;
                    let keep = obj
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<ObjectId>().ok())
                        .is_some_and(|id| live.contains(&id));
                    if keep {
                        continue;
                    }
                    let md = obj.metadata().map_err(io_err("stat", &obj.path()))?;
                    if !old(&md) {
                        continue;
                    }
                    remove(&obj.path())?;
                    st.freed_bytes += md.len();
                    if counter == 0 {
                        st.deleted_blobs += 1;
                    } else {
                        st.deleted_trees += 1;
                    }
                }
            }
        }
        let tmp = self.root_dir().join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let e = e.map_err(io_err("listing", &tmp))?;
            let md = e.metadata().map_err(io_err("stat", &e.path()))?;
            if old(&md) {
                remove(&e.path())?;
                st.deleted_temp += 1;
            }
        }
        Ok(st)
    }
}

fn remove(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", p)(e)),
    }
}
