//! Path resolution for the Windows view: `\<store path>\<entry>\…` to the
//! node it names, within a fixed closure. Names compare exactly (the volume
//! is case-sensitive, like the store).

use std::collections::HashSet;

use b3_vfs::odb::{Entry, Node, Odb};

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The volume root, listing the closure.
    Root,
    /// A node inside a store path (the store path itself included).
    Node(Node),
}

/// Why a path does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Some component does not exist (or is outside the closure).
    #[error("not found")]
    NotFound,
    /// A non-final component is a file or a symlink.
    #[error("not a directory")]
    NotADirectory,
    #[error(transparent)]
    Odb(#[from] b3_vfs::odb::Error),
}

/// A closure of store paths in an object database.
#[derive(Debug, Clone)]
pub struct Closure {
    pub odb: Odb,
    pub names: HashSet<String>,
}

impl Closure {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(odb: Odb, names: I) -> Self {
        Closure {
            odb,
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Resolves a path such as `\abc…-hello\bin\hello` (`/` accepted too).
    pub fn resolve(&self, path: &str) -> Result<Resolved, ResolveError> {
        let mut parts = path.split(['\\', '/']).filter(|p| !p.is_empty());
        let Some(top) = parts.next() else {
            return Ok(Resolved::Root);
        };
        if !self.names.contains(top) {
            return Err(ResolveError::NotFound);
        }
        let mut node = self.odb.root(top)?.ok_or(ResolveError::NotFound)?;
        for part in parts {
            let Node::Directory { tree, .. } = &node else {
                return Err(ResolveError::NotADirectory);
            };
            let entries = self.odb.get_tree(tree)?;
            let i = entries
                .binary_search_by(|e| e.name.as_slice().cmp(part.as_bytes()))
                .map_err(|_| ResolveError::NotFound)?;
            node = entries[i].node.clone();
        }
        Ok(Resolved::Node(node))
    }

    /// The entries a directory lists (the root lists the closure members
    /// present in the database), in name order, symlinks left out.
    pub fn list(&self, dir: &Resolved) -> Result<Vec<Entry>, ResolveError> {
        let entries = match dir {
            Resolved::Root => {
                let mut names: Vec<&String> = self.names.iter().collect();
                names.sort();
                let mut out = Vec::new();
                for n in names {
                    if let Some(node) = self.odb.root(n)? {
                        out.push(Entry {
                            name: n.as_bytes().to_vec(),
                            node,
                        });
                    }
                }
                out
            }
            Resolved::Node(Node::Directory { tree, .. }) => self.odb.get_tree(tree)?,
            Resolved::Node(_) => return Err(ResolveError::NotADirectory),
        };
        Ok(entries
            .into_iter()
            .filter(|e| !matches!(e.node, Node::Symlink { .. }))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Closure) {
        let dir = tempfile::tempdir().unwrap();
        let odb = Odb::open(dir.path()).unwrap();
        let (blob, size) = odb.put_blob(b"hello").unwrap();
        let file = Node::File {
            executable: true,
            size,
            blob,
        };
        let bin = odb
            .put_tree(&[
                Entry {
                    name: b"hello".to_vec(),
                    node: file,
                },
                Entry {
                    name: b"link".to_vec(),
                    node: Node::Symlink {
                        target: b"hello".to_vec(),
                    },
                },
            ])
            .unwrap();
        let top = odb
            .put_tree(&[Entry {
                name: b"bin".to_vec(),
                node: bin,
            }])
            .unwrap();
        odb.set_root("aaaa-hello", &top).unwrap();
        odb.set_root("bbbb-hidden", &top).unwrap();
        (dir, Closure::new(odb, ["aaaa-hello", "cccc-absent"]))
    }

    #[test]
    fn windows_paths_resolve_inside_the_closure_only() {
        let (_d, c) = fixture();
        assert_eq!(c.resolve("\\").unwrap(), Resolved::Root);
        assert!(matches!(
            c.resolve("\\aaaa-hello\\bin\\hello").unwrap(),
            Resolved::Node(Node::File { size: 5, .. })
        ));
        assert!(matches!(
            c.resolve("/aaaa-hello/bin").unwrap(),
            Resolved::Node(Node::Directory { .. })
        ));
        assert!(matches!(
            c.resolve("\\bbbb-hidden\\bin"),
            Err(ResolveError::NotFound)
        ));
        assert!(matches!(
            c.resolve("\\aaaa-hello\\BIN"),
            Err(ResolveError::NotFound)
        ));
        assert!(matches!(
            c.resolve("\\aaaa-hello\\bin\\hello\\x"),
            Err(ResolveError::NotADirectory)
        ));
    }

    #[test]
    fn listings_show_present_closure_members_and_no_symlinks() {
        let (_d, c) = fixture();
        let root = c.list(&Resolved::Root).unwrap();
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].name, b"aaaa-hello");
        let bin = c.resolve("\\aaaa-hello\\bin").unwrap();
        let names: Vec<_> = c.list(&bin).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec![b"hello".to_vec()]);
    }
}
