//! Importing a path of the local filesystem directly (no NAR in between),
//! with NAR semantics: regular files (executable if the owner may execute),
//! symlinks and directories only; entries ordered by name bytes.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{io_err, Entry, Error, Node, Odb, Result};

impl Odb {
    /// Stores the tree at `path` and returns its root node (not published).
    pub fn store_path(&self, path: &Path) -> Result<Node> {
        let md = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(path).map_err(io_err("readlink", path))?;
            Ok(Node::Symlink {
                target: t.as_os_str().as_bytes().to_vec(),
            })
        } else if ft.is_file() {
            let mut f = fs::File::open(path).map_err(io_err("opening", path))?;
            let mut w = self.blob_writer()?;
            io::copy(&mut f, &mut w).map_err(io_err("copying", path))?;
            let (blob, size) = w.finish()?;
            Ok(Node::File {
                executable: md.permissions().mode() & 0o100 != 0,
                size,
                blob,
            })
        } else if ft.is_dir() {
            let mut names = Vec::new();
            for e in fs::read_dir(path).map_err(io_err("listing", path))? {
                names.push(e.map_err(io_err("listing", path))?.file_name());
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let mut entries = Vec::with_capacity(names.len());
            for n in names {
                let node = self.store_path(&path.join(&n))?;
                entries.push(Entry {
                    name: n.as_bytes().to_vec(),
                    node,
                });
            }
            self.put_tree(&entries)
        } else {
            Err(Error::Unsupported(path.to_path_buf()))
        }
    }

    /// Imports the tree at `path` as store path `name`.
    pub fn import_path(&self, name: &str, path: &Path) -> Result<Node> {
        if !super::valid_root_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        let node = self.store_path(path)?;
        self.set_root(name, &node)?;
        Ok(node)
    }
}
