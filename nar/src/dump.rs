//! Writing NARs from a filesystem path (what `nix-store --dump` does) and
//! from an in-memory [`Tree`] (for tests and small synthetic archives).
//!
//! Filesystem semantics match Nix: `lstat` (a symlink is archived, never
//! followed), a regular file is executable when its owner-execute bit is
//! set, directory entries are sorted by raw bytes, and any other file type
//! is an error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::encoder::{NarEncoder, COPY_BUF};
use crate::error::Error;
use crate::reader::{Event, NarReader};

/// Writes the NAR of `path` to `w`; returns `w` and the NAR size in bytes.
/// `w` receives large writes for contents and ~64 KiB batches of tokens, so
/// it needs no extra buffering.
pub fn dump_path<W: Write>(path: &Path, w: W) -> Result<(W, u64), Error> {
    dump_path_with(path, w, copy_exact)
}

/// How file contents reach the output: `copy(file, out, size, scratch, path)`
/// writes exactly `size` bytes of `file` to `out`.
pub(crate) type CopyFn<W> = fn(&mut File, &mut W, u64, &mut Vec<u8>, &Path) -> Result<(), Error>;

/// [`dump_path`] with a custom contents copier (lets the threaded hasher
/// read files straight into its hand-over buffers).
pub(crate) fn dump_path_with<W: Write>(
    path: &Path,
    w: W,
    copy: CopyFn<W>,
) -> Result<(W, u64), Error> {
    let mut enc = NarEncoder::new(w);
    // Grown on demand: hashing a small source file (the evaluator does this
    // for every `./path` it copies) must not pay for a large zeroed buffer.
    let mut buf = Vec::new();
    // Explicit stack instead of recursion: depth is bounded by the
    // filesystem, not by our thread's stack.
    let mut stack: Vec<(PathBuf, Vec<OsString>, usize)> = Vec::new();
    if let Some(frame) = dump_node(&mut enc, path.to_path_buf(), &mut buf, copy)? {
        stack.push(frame);
    }
    while let Some((dir, names, idx)) = stack.last_mut() {
        if let Some(name) = names.get(*idx) {
            *idx += 1;
            enc.entry(&crate::os::name_bytes(name, dir)?)?;
            let child = dir.join(name);
            if let Some(frame) = dump_node(&mut enc, child, &mut buf, copy)? {
                stack.push(frame);
            }
        } else {
            enc.directory_end()?;
            stack.pop();
        }
    }
    enc.finish()
}

type Frame = (PathBuf, Vec<OsString>, usize);

/// Archives one node; for a directory, writes its start and returns the
/// frame whose entries the caller walks.
fn dump_node<W: Write>(
    enc: &mut NarEncoder<W>,
    path: PathBuf,
    buf: &mut Vec<u8>,
    copy: CopyFn<W>,
) -> Result<Option<Frame>, Error> {
    let meta = fs::symlink_metadata(&path).map_err(|e| Error::fs("getting status of", &path, e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        let executable = crate::os::is_executable(&meta);
        let mut f = File::open(&path).map_err(|e| Error::fs("opening file", &path, e))?;
        let size = meta.len();
        if size <= SMALL_FILE {
            // Small files are batched with the tokens (one write per ~64 KiB).
            if buf.len() < size as usize {
                buf.resize(SMALL_FILE as usize, 0);
            }
            let data = &mut buf[..size as usize];
            read_exact_file(&mut f, data, &path)?;
            enc.file_bytes(executable, data)?;
            return Ok(None);
        }
        enc.file_header(executable, size)?;
        let out = enc.contents_writer()?;
        copy(&mut f, out, size, buf, &path)?;
        enc.file_trailer(size)?;
        Ok(None)
    } else if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(|e| Error::fs("reading symlink", &path, e))?;
        enc.symlink(&crate::os::target_bytes(&target, &path)?)?;
        Ok(None)
    } else if ft.is_dir() {
        let mut names = Vec::new();
        for ent in fs::read_dir(&path).map_err(|e| Error::fs("opening directory", &path, e))? {
            let ent = ent.map_err(|e| Error::fs("reading directory", &path, e))?;
            names.push(ent.file_name());
        }
        // OsStr on Unix orders by raw bytes, as Nix's std::map<std::string> does.
        names.sort_unstable();
        enc.directory_start()?;
        Ok(Some((path, names, 0)))
    } else {
        Err(Error::UnsupportedType(path))
    }
}

/// Files up to this size are read whole into the copy buffer.
const SMALL_FILE: u64 = 4095;

pub(crate) fn read_exact_file(f: &mut File, data: &mut [u8], path: &Path) -> Result<(), Error> {
    let mut done = 0;
    while done < data.len() {
        match f.read(&mut data[done..]) {
            Ok(0) => return Err(Error::FileChanged(path.to_path_buf())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::fs("reading file", path, e)),
        }
    }
    Ok(())
}

/// Copies exactly `size` bytes of the file at `path` into `out`.
pub(crate) fn copy_exact<W: Write>(
    f: &mut File,
    out: &mut W,
    size: u64,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<(), Error> {
    if buf.len() < COPY_BUF {
        buf.resize(COPY_BUF, 0);
    }
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => return Err(Error::FileChanged(path.to_path_buf())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::fs("reading file", path, e)),
        };
        out.write_all(&buf[..n]).map_err(Error::Write)?;
        left -= n as u64;
    }
    Ok(())
}

/// An in-memory file tree: the NAR data model without a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    File {
        executable: bool,
        contents: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Entries keyed by raw name; `BTreeMap` keeps NAR order.
    Directory(BTreeMap<Vec<u8>, Tree>),
}

impl Tree {
    pub fn file(contents: impl Into<Vec<u8>>) -> Tree {
        Tree::File {
            executable: false,
            contents: contents.into(),
        }
    }

    pub fn executable(contents: impl Into<Vec<u8>>) -> Tree {
        Tree::File {
            executable: true,
            contents: contents.into(),
        }
    }

    pub fn symlink(target: impl Into<Vec<u8>>) -> Tree {
        Tree::Symlink {
            target: target.into(),
        }
    }

    pub fn dir<N: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (N, Tree)>) -> Tree {
        Tree::Directory(entries.into_iter().map(|(n, t)| (n.into(), t)).collect())
    }

    /// Writes this tree as a NAR; returns `w` and the NAR size.
    pub fn encode<W: Write>(&self, w: W) -> Result<(W, u64), Error> {
        let mut enc = NarEncoder::new(w);
        // Explicit stack of directory iterators (see dump_path).
        let mut stack = Vec::new();
        if let Some(it) = encode_node(&mut enc, self)? {
            stack.push(it);
        }
        while let Some(it) = stack.last_mut() {
            if let Some((name, child)) = it.next() {
                enc.entry(name)?;
                if let Some(it) = encode_node(&mut enc, child)? {
                    stack.push(it);
                }
            } else {
                enc.directory_end()?;
                stack.pop();
            }
        }
        enc.finish()
    }

    /// The NAR bytes of this tree.
    pub fn to_nar(&self) -> Result<Vec<u8>, Error> {
        Ok(self.encode(Vec::new())?.0)
    }

    /// Parses a whole NAR into memory. Meant for tests and small archives:
    /// file contents are buffered.
    pub fn from_nar<R: Read>(r: R) -> Result<Tree, Error> {
        let mut nar = NarReader::new(r);
        // (entries so far, the directory's own name)
        let mut stack: Vec<(Entries, Vec<u8>)> = Vec::new();
        let mut name: Vec<u8> = Vec::new();
        let mut root = None;
        while let Some(ev) = nar.next()? {
            let node = match ev {
                Event::DirectoryStart => {
                    stack.push((BTreeMap::new(), std::mem::take(&mut name)));
                    continue;
                }
                Event::Entry { name: n } => {
                    name = n.to_vec();
                    continue;
                }
                Event::File {
                    executable,
                    size,
                    mut contents,
                } => {
                    let mut v = Vec::with_capacity(size.min(1 << 20) as usize);
                    contents
                        .read_to_end(&mut v)
                        .map_err(|e| crate::error::from_io(e, Error::Write))?;
                    (
                        std::mem::take(&mut name),
                        Tree::File {
                            executable,
                            contents: v,
                        },
                    )
                }
                Event::Symlink { target } => (
                    std::mem::take(&mut name),
                    Tree::Symlink {
                        target: target.to_vec(),
                    },
                ),
                Event::DirectoryEnd => match stack.pop() {
                    Some((entries, own_name)) => (own_name, Tree::Directory(entries)),
                    None => return Err(Error::Usage("unbalanced directory end".into())),
                },
            };
            match stack.last_mut() {
                Some((entries, _)) => {
                    entries.insert(node.0, node.1);
                }
                None => root = Some(node.1),
            }
        }
        root.ok_or_else(|| Error::Usage("empty archive".into()))
    }
}

type Entries = BTreeMap<Vec<u8>, Tree>;
type TreeIter<'a> = std::collections::btree_map::Iter<'a, Vec<u8>, Tree>;

fn encode_node<'a, W: Write>(
    enc: &mut NarEncoder<W>,
    t: &'a Tree,
) -> Result<Option<TreeIter<'a>>, Error> {
    match t {
        Tree::File {
            executable,
            contents,
        } => enc.file_bytes(*executable, contents)?,
        Tree::Symlink { target } => enc.symlink(target)?,
        Tree::Directory(entries) => {
            enc.directory_start()?;
            return Ok(Some(entries.iter()));
        }
    }
    Ok(None)
}
