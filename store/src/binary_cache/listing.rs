//! NAR listings (`<hashpart>.ls`), as Nix writes them with
//! `write-nar-listing=1`: a JSON description of the tree in a NAR, with
//! each regular file's size and the offset of its contents in the NAR, so
//! a client can read single files with range requests.
//!
//! Shape and key order are Nix 2.8's (insertion order, not sorted):
//! `{"version":1,"root":NODE}` where a directory is
//! `{"type":"directory","entries":{NAME:NODE,…}}` (entries in NAR order), a
//! file `{"type":"regular","size":N[,"executable":true],"narOffset":N}` and
//! a symlink `{"type":"symlink","target":"…"}`.

use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(Vec<(String, Node)>),
    File {
        size: u64,
        executable: bool,
        offset: u64,
    },
    Link(String),
}

/// An open directory: its entries so far, and its own name.
type Frame = (Vec<(String, Node)>, Option<String>);

/// Builds a listing from NAR events, fed in order.
#[derive(Debug, Default)]
pub struct ListingBuilder {
    stack: Vec<Frame>,
    pending: Option<String>,
    root: Option<Node>,
}

impl ListingBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn directory_start(&mut self) {
        let name = self.pending.take();
        self.stack.push((Vec::new(), name));
    }

    pub fn entry(&mut self, name: &[u8]) {
        self.pending = Some(String::from_utf8_lossy(name).into_owned());
    }

    /// A regular file whose contents start at NAR offset `offset`.
    pub fn file(&mut self, size: u64, executable: bool, offset: u64) {
        let name = self.pending.take();
        self.attach(
            name,
            Node::File {
                size,
                executable,
                offset,
            },
        );
    }

    pub fn symlink(&mut self, target: &[u8]) {
        let name = self.pending.take();
        self.attach(
            name,
            Node::Link(String::from_utf8_lossy(target).into_owned()),
        );
    }

    pub fn directory_end(&mut self) {
        if let Some((entries, name)) = self.stack.pop() {
            self.attach(name, Node::Dir(entries));
        }
    }

    fn attach(&mut self, name: Option<String>, node: Node) {
        match self.stack.last_mut() {
            Some((entries, _)) => entries.push((name.unwrap_or_default(), node)),
            None => self.root = Some(node),
        }
    }

    /// The listing's JSON text; `None` if no complete tree was seen.
    pub fn finish(self) -> Option<String> {
        let root = self.root?;
        let mut out = String::from("{\"version\":1,\"root\":");
        write_node(&mut out, &root);
        out.push('}');
        Some(out)
    }
}

fn json_str(out: &mut String, s: &str) {
    // serde_json's string escaping is JSON's; infallible for &str.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn write_node(out: &mut String, n: &Node) {
    match n {
        Node::Dir(entries) => {
            out.push_str("{\"type\":\"directory\",\"entries\":{");
            for (i, (name, child)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, name);
                out.push(':');
                write_node(out, child);
            }
            out.push_str("}}");
        }
        Node::File {
            size,
            executable,
            offset,
        } => {
            out.push_str(&format!("{{\"type\":\"regular\",\"size\":{size}"));
            if *executable {
                out.push_str(",\"executable\":true");
            }
            out.push_str(&format!(",\"narOffset\":{offset}}}"));
        }
        Node::Link(target) => {
            out.push_str("{\"type\":\"symlink\",\"target\":");
            json_str(out, target);
            out.push('}');
        }
    }
}

/// The listing of the NAR read from `nar` (read to its end, contents
/// skipped without being kept).
pub async fn listing_of<R: AsyncRead + Unpin>(nar: R) -> Result<String, b3_nar::Error> {
    let mut reader = b3_nar::AsyncNarReader::new(nar);
    let mut b = ListingBuilder::new();
    let mut sink = vec![0u8; 64 << 10];
    loop {
        let Some(ev) = reader.next().await? else {
            break;
        };
        let file = match ev {
            b3_nar::AsyncEvent::DirectoryStart => {
                b.directory_start();
                None
            }
            b3_nar::AsyncEvent::Entry { name } => {
                b.entry(name);
                None
            }
            b3_nar::AsyncEvent::Symlink { target } => {
                b.symlink(target);
                None
            }
            b3_nar::AsyncEvent::DirectoryEnd => {
                b.directory_end();
                None
            }
            b3_nar::AsyncEvent::File {
                executable,
                size,
                mut contents,
            } => {
                while contents
                    .read(&mut sink)
                    .await
                    .map_err(|e| b3_nar::Error::Read {
                        offset: 0,
                        source: e,
                    })?
                    != 0
                {}
                Some((size, executable))
            }
        };
        if let Some((size, executable)) = file {
            // Right after the contents (padding is read with the next
            // event): the contents started `size` bytes back.
            b.file(size, executable, reader.offset() - size);
        }
    }
    Ok(b.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree and listing Nix 2.8 wrote (`nix copy --to
    /// 'file://…?write-nar-listing=1'`) for: `a` ("x\n"), empty `empty`,
    /// symlink `l` -> a, executable `sub/e` ("#!/bin/sh\n").
    const NIX_LISTING: &str = r#"{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":2,"narOffset":232},"empty":{"type":"regular","size":0,"narOffset":424},"l":{"type":"symlink","target":"a"},"sub":{"type":"directory","entries":{"e":{"type":"regular","size":10,"executable":true,"narOffset":968}}}}}}"#;

    // The tree has a symlink and an executable (Unix only).
    #[cfg(unix)]
    #[tokio::test]
    async fn listing_matches_nix_byte_for_byte() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("t");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a"), "x\n").unwrap();
        std::fs::write(d.join("empty"), "").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        std::fs::write(d.join("sub/e"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("sub/e"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (nar, _) = b3_nar::dump_path(&d, Vec::new()).unwrap();
        assert_eq!(listing_of(&nar[..]).await.unwrap(), NIX_LISTING);
    }

    #[tokio::test]
    async fn a_single_file_nar_lists_as_a_regular_root() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("single");
        std::fs::write(&f, "x\n").unwrap();
        let (nar, _) = b3_nar::dump_path(&f, Vec::new()).unwrap();
        assert_eq!(
            listing_of(&nar[..]).await.unwrap(),
            r#"{"version":1,"root":{"type":"regular","size":2,"narOffset":96}}"#
        );
    }
}
