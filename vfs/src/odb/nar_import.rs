//! Filling the object database from a NAR stream.
//!
//! File contents go from the NAR reader's bounded file reader straight into a
//! [`BlobWriter`](super::BlobWriter), so memory stays constant whatever the
//! file sizes; only directory manifests (names and ids) are kept until their
//! directory closes.

use std::io::{self, Read};

use b3_nar::{Event, NarReader};

use super::{Entry, Error, Node, Odb, Result};

struct Frame {
    /// Entries of the open directory, in archive (= sorted) order.
    entries: Vec<Entry>,
    /// Name announced by the last `Entry` event, waiting for its node.
    pending: Option<Vec<u8>>,
}

impl Odb {
    /// Stores every object of the NAR read from `r` and returns its root node,
    /// without publishing it under a name (see [`Odb::import_nar`]).
    pub fn store_nar<R: Read>(&self, r: R) -> Result<Node> {
        let mut nar = NarReader::new(r);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<Node> = None;
        while let Some(ev) = nar.next()? {
            let node = match ev {
                Event::Entry { name } => {
                    if let Some(top) = stack.last_mut() {
                        top.pending = Some(name.to_vec());
                    }
                    continue;
                }
                Event::DirectoryStart => {
                    stack.push(Frame {
                        entries: Vec::new(),
                        pending: None,
                    });
                    continue;
                }
                Event::File {
                    executable,
                    mut contents,
                    ..
                } => {
                    let mut w = self.blob_writer()?;
                    io::copy(&mut contents, &mut w).map_err(|e| match unwrap_nar(e) {
                        Ok(nar_err) => Error::Nar(nar_err),
                        Err(e) => Error::Io {
                            what: "storing blob from NAR",
                            path: self.root_dir().to_path_buf(),
                            source: e,
                        },
                    })?;
                    let (blob, size) = w.finish()?;
                    Node::File {
                        executable,
                        size,
                        blob,
                    }
                }
                Event::Symlink { target } => Node::Symlink {
                    target: target.to_vec(),
                },
                Event::DirectoryEnd => {
                    let Some(frame) = stack.pop() else {
                        unreachable!("the NAR reader balances directories")
                    };
                    self.put_tree(&frame.entries)?
                }
            };
            match stack.last_mut() {
                Some(top) => {
                    let Some(name) = top.pending.take() else {
                        unreachable!("the NAR reader announces every entry")
                    };
                    top.entries.push(Entry { name, node });
                }
                None => root = Some(node),
            }
        }
        root.ok_or_else(|| Error::Nar(b3_nar::Error::Usage("NAR ended without a root node".into())))
    }

    /// Imports the NAR read from `r` as store path `name` (a base name such
    /// as `<hash>-hello`), replacing any previous content of that name.
    pub fn import_nar<R: Read>(&self, name: &str, r: R) -> Result<Node> {
        if !super::valid_root_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        let node = self.store_nar(r)?;
        self.set_root(name, &node)?;
        Ok(node)
    }
}

/// The NAR reader reports its own errors through `io::Error` when driven by
/// `io::copy`; get them back out so callers see the NAR offset and reason.
fn unwrap_nar(e: io::Error) -> Result<b3_nar::Error, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<b3_nar::Error>()) {
        match e.into_inner().map(|b| b.downcast::<b3_nar::Error>()) {
            Some(Ok(nar)) => Ok(*nar),
            Some(Err(other)) => Err(io::Error::other(other)),
            None => Err(io::Error::other("unknown NAR error")),
        }
    } else {
        Err(e)
    }
}
