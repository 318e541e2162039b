//! Checking a store path's objects against their addresses: every blob's
//! BLAKE3 digest and size, every tree's digest and encoding.

use std::io::Read;

use super::{io_err, Error, Node, ObjectId, Odb, Result};

/// One object that does not match its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    MissingBlob(ObjectId),
    BadBlob {
        id: ObjectId,
        size: u64,
        found_size: u64,
    },
    BadTree(ObjectId),
}

impl Odb {
    /// Re-hashes everything store path `name` refers to; returns the damage found.
    pub fn verify(&self, name: &str) -> Result<Vec<Damage>> {
        let root = self
            .root(name)?
            .ok_or_else(|| Error::NoRoot(name.to_owned()))?;
        let mut damage = Vec::new();
        let mut todo = vec![root];
        let mut buf = vec![0u8; 256 * 1024];
        while let Some(n) = todo.pop() {
            match n {
                Node::Symlink { .. } => {}
                Node::Directory { tree, .. } => match self.get_tree(&tree) {
                    Ok(entries) => todo.extend(entries.into_iter().map(|e| e.node)),
                    Err(Error::CorruptTree { .. }) => damage.push(Damage::BadTree(tree)),
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        damage.push(Damage::BadTree(tree))
                    }
                    Err(e) => return Err(e),
                },
                Node::File { size, blob, .. } => {
                    let path = self.blob_path(&blob);
                    let mut f = match std::fs::File::open(&path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            damage.push(Damage::MissingBlob(blob));
                            continue;
                        }
                        Err(e) => return Err(io_err("opening blob", &path)(e)),
                    };
                    let mut h = blake3::Hasher::new();
                    let mut found_size = 0u64;
                    loop {
                        let n = f.read(&mut buf).map_err(io_err("reading blob", &path))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        found_size += n as u64;
                    }
                    if found_size != size || ObjectId::from(h.finalize()) != blob {
                        damage.push(Damage::BadBlob {
                            id: blob,
                            size,
                            found_size,
                        });
                    }
                }
            }
        }
        Ok(damage)
    }
}
