//! Nodes and directory manifests, and their canonical binary encoding.
//!
//! A manifest lists a directory's entries sorted by name bytes (the order NAR
//! uses), each with its kind and either a blob id and size (files), an inline
//! target (symlinks) or a tree id and entry count (directories). The encoding
//! is the only one accepted on decode, so a tree id names exactly one
//! directory. All integers are little-endian.
//!
//! ```text
//! tree  = "b3vfs-tree\x01" u64:count entry*
//! entry = u32:len name node
//! node  = 0x01 u64:size id       regular file
//!       | 0x02 u64:size id       executable file
//!       | 0x03 u32:len target    symlink
//!       | 0x04 u64:count id      directory
//! ```

use super::id::{ObjectId, ID_LEN};

const TREE_MAGIC: &[u8] = b"b3vfs-tree\x01";
/// Names and symlink targets longer than this are rejected (NAR's own limit
/// for names is 255; targets are bounded by PATH_MAX).
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TARGET_LEN: usize = 4095;

/// What one name in the store refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        executable: bool,
        size: u64,
        blob: ObjectId,
    },
    Symlink {
        target: Vec<u8>,
    },
    Directory {
        tree: ObjectId,
        /// Number of entries, so a directory's size is known without reading it.
        entries: u64,
    },
}

/// One named entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub node: Node,
}

/// A malformed tree or root record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("bad magic")]
    Magic,
    #[error("truncated")]
    Truncated,
    #[error("trailing bytes")]
    Trailing,
    #[error("unknown node kind {0:#x}")]
    Kind(u8),
    #[error("invalid entry name {0:?}")]
    Name(String),
    #[error("entries not strictly sorted at {0:?}")]
    Order(String),
    #[error("symlink target empty, too long or containing NUL")]
    Target,
}

/// Checks that `name` can be one path component (the rule NAR readers apply).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

fn valid_target(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= MAX_TARGET_LEN && !t.contains(&0)
}

impl Node {
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Node::File {
                executable,
                size,
                blob,
            } => {
                out.push(if *executable { 2 } else { 1 });
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(blob.as_bytes());
            }
            Node::Symlink { target } => {
                out.push(3);
                out.extend_from_slice(&(target.len() as u32).to_le_bytes());
                out.extend_from_slice(target);
            }
            Node::Directory { tree, entries } => {
                out.push(4);
                out.extend_from_slice(&entries.to_le_bytes());
                out.extend_from_slice(tree.as_bytes());
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Cursor<'_>) -> Result<Node, DecodeError> {
        match r.u8()? {
            k @ (1 | 2) => Ok(Node::File {
                executable: k == 2,
                size: r.u64()?,
                blob: r.id()?,
            }),
            3 => {
                let len = r.u32()? as usize;
                let target = r.bytes(len)?.to_vec();
                if !valid_target(&target) {
                    return Err(DecodeError::Target);
                }
                Ok(Node::Symlink { target })
            }
            4 => Ok(Node::Directory {
                entries: r.u64()?,
                tree: r.id()?,
            }),
            k => Err(DecodeError::Kind(k)),
        }
    }
}

/// Encodes a directory's entries; they must already be sorted and valid
/// (the import path guarantees it; [`decode_tree`] re-checks on the way in).
pub fn encode_tree(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TREE_MAGIC.len() + 8 + entries.len() * 64);
    out.extend_from_slice(TREE_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&(e.name.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.name);
        e.node.encode_into(&mut out);
    }
    out
}

/// Decodes and validates a tree (sorted unique valid names, known kinds).
pub fn decode_tree(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut r = Cursor { b: bytes };
    if r.bytes(TREE_MAGIC.len())? != TREE_MAGIC {
        return Err(DecodeError::Magic);
    }
    let count = r.u64()?;
    // Each entry takes at least 1+4+1+4 bytes, which bounds a hostile count.
    if count > (bytes.len() as u64) / 10 + 1 {
        return Err(DecodeError::Truncated);
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let name = r.bytes(len)?.to_vec();
        if !valid_name(&name) {
            return Err(DecodeError::Name(String::from_utf8_lossy(&name).into()));
        }
        if let Some(prev) = entries.last() {
            if prev.name >= name {
                return Err(DecodeError::Order(String::from_utf8_lossy(&name).into()));
            }
        }
        let node = Node::decode_from(&mut r)?;
        entries.push(Entry { name, node });
    }
    if !r.b.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(entries)
}

/// Reads fields off a byte slice, failing with `Truncated` at the end.
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> Result<ObjectId, DecodeError> {
        let mut a = [0u8; ID_LEN];
        a.copy_from_slice(self.bytes(ID_LEN)?);
        Ok(ObjectId(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                name: b"a".to_vec(),
                node: Node::File {
                    executable: false,
                    size: 3,
                    blob: ObjectId::of(b"abc"),
                },
            },
            Entry {
                name: b"b".to_vec(),
                node: Node::File {
                    executable: true,
                    size: 0,
                    blob: ObjectId::of(b""),
                },
            },
            Entry {
                name: b"l".to_vec(),
                node: Node::Symlink {
                    target: b"../x".to_vec(),
                },
            },
            Entry {
                name: b"z dir".to_vec(),
                node: Node::Directory {
                    tree: ObjectId::of(b"t"),
                    entries: 2,
                },
            },
        ]
    }

    #[test]
    fn tree_round_trips() {
        let e = sample();
        assert_eq!(decode_tree(&encode_tree(&e)).unwrap(), e);
    }

    #[test]
    fn empty_tree_round_trips() {
        assert_eq!(decode_tree(&encode_tree(&[])).unwrap(), vec![]);
    }

    #[test]
    fn decode_rejects_unsorted_and_duplicate_names() {
        let mut e = sample();
        e.swap(0, 1);
        assert!(matches!(
            decode_tree(&encode_tree(&e)),
            Err(DecodeError::Order(_))
        ));
        let mut e = sample();
        e[1].name = b"a".to_vec();
        assert!(matches!(
            decode_tree(&encode_tree(&e)),
            Err(DecodeError::Order(_))
        ));
    }

    #[test]
    fn decode_rejects_bad_names_truncation_and_trailing_bytes() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            let mut e = sample();
            e[0].name = bad.to_vec();
            assert!(matches!(
                decode_tree(&encode_tree(&e)),
                Err(DecodeError::Name(_))
            ));
        }
        let enc = encode_tree(&sample());
        assert_eq!(
            decode_tree(&enc[..enc.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(decode_tree(&long), Err(DecodeError::Trailing));
        assert_eq!(decode_tree(b"nope"), Err(DecodeError::Truncated));
    }

    #[test]
    fn encoding_is_canonical_so_equal_trees_share_an_id() {
        let a = encode_tree(&sample());
        let b = encode_tree(&sample());
        assert_eq!(ObjectId::of(&a), ObjectId::of(&b));
    }
}
