//! Filling the object database from a NAR stream, sync or async.
//!
//! File contents go from the NAR reader's bounded file reader straight into a
//! [`BlobWriter`](super::BlobWriter), so memory stays constant whatever the
//! file sizes; only directory manifests (names and ids) are kept until their
//! directory closes. The async import reads on the runtime and hands events
//! to a blocking worker over a bounded channel (file I/O never runs on the
//! async threads), like b3-nar's `restore_async`.

use std::io::{self, Read, Write};

use b3_nar::{Event, NarReader};

use super::{BlobWriter, Entry, Error, Node, Odb, Result};

struct Frame {
    /// Entries of the open directory, in archive (= sorted) order.
    entries: Vec<Entry>,
    /// Name announced by the last `Entry` event, waiting for its node.
    pending: Option<Vec<u8>>,
}

/// Builds nodes from NAR events (already validated by the NAR reader).
struct TreeBuilder<'a> {
    odb: &'a Odb,
    stack: Vec<Frame>,
    root: Option<Node>,
    file: Option<(bool, BlobWriter)>,
}

impl<'a> TreeBuilder<'a> {
    fn new(odb: &'a Odb) -> Self {
        TreeBuilder {
            odb,
            stack: Vec::new(),
            root: None,
            file: None,
        }
    }

    fn directory_start(&mut self) {
        self.stack.push(Frame {
            entries: Vec::new(),
            pending: None,
        });
    }

    fn entry(&mut self, name: &[u8]) {
        if let Some(top) = self.stack.last_mut() {
            top.pending = Some(name.to_vec());
        }
    }

    fn file_start(&mut self, executable: bool) -> Result<&mut BlobWriter> {
        let w = self.odb.blob_writer()?;
        Ok(&mut self.file.insert((executable, w)).1)
    }

    fn file_write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((_, w)) = self.file.as_mut() {
            w.write_all(bytes).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn file_end(&mut self) -> Result<()> {
        if let Some((executable, w)) = self.file.take() {
            let (blob, size) = w.finish()?;
            self.attach(Node::File {
                executable,
                size,
                blob,
            });
        }
        Ok(())
    }

    fn symlink(&mut self, target: &[u8]) {
        self.attach(Node::Symlink {
            target: target.to_vec(),
        });
    }

    fn directory_end(&mut self) -> Result<()> {
        if let Some(frame) = self.stack.pop() {
            let node = self.odb.put_tree(&frame.entries)?;
            self.attach(node);
        }
        Ok(())
    }

    fn attach(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(top) => {
                if let Some(name) = top.pending.take() {
                    top.entries.push(Entry { name, node });
                }
            }
            None => self.root = Some(node),
        }
    }

    fn io(&self, e: io::Error) -> Error {
        Error::Io {
            what: "storing blob from NAR",
            path: self.odb.root_dir().to_path_buf(),
            source: e,
        }
    }

    fn finish(self) -> Result<Node> {
        self.root
            .ok_or_else(|| Error::Nar(b3_nar::Error::Usage("NAR ended without a root node".into())))
    }
}

impl Odb {
    /// Stores every object of the NAR read from `r` and returns its root node,
    /// without publishing it under a name (see [`Odb::import_nar`]).
    pub fn store_nar<R: Read>(&self, r: R) -> Result<Node> {
        let mut nar = NarReader::new(r);
        let mut b = TreeBuilder::new(self);
        while let Some(ev) = nar.next()? {
            match ev {
                Event::Entry { name } => b.entry(name),
                Event::DirectoryStart => b.directory_start(),
                Event::File {
                    executable,
                    mut contents,
                    ..
                } => {
                    let w = b.file_start(executable)?;
                    io::copy(&mut contents, w).map_err(|e| match unwrap_nar(e) {
                        Ok(nar_err) => Error::Nar(nar_err),
                        Err(e) => Error::Io {
                            what: "storing blob from NAR",
                            path: self.root_dir().to_path_buf(),
                            source: e,
                        },
                    })?;
                    b.file_end()?;
                }
                Event::Symlink { target } => b.symlink(target),
                Event::DirectoryEnd => b.directory_end()?,
            }
        }
        b.finish()
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

    /// [`Odb::import_nar`] over an async reader (needs a tokio runtime with
    /// blocking threads). Reads exactly the archive's bytes from `r`.
    #[cfg(feature = "async")]
    pub async fn import_nar_async<R>(&self, name: &str, r: R) -> Result<Node>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        if !super::valid_root_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        let node = self.store_nar_async(r).await?;
        let (odb, name) = (self.clone(), name.to_owned());
        let n2 = node.clone();
        tokio::task::spawn_blocking(move || odb.set_root(&name, &n2))
            .await
            .map_err(|e| Error::Nar(b3_nar::Error::Task(e.to_string())))??;
        Ok(node)
    }

    /// [`Odb::store_nar`] over an async reader.
    #[cfg(feature = "async")]
    pub async fn store_nar_async<R>(&self, r: R) -> Result<Node>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use b3_nar::{AsyncEvent, AsyncNarReader};
        use tokio::io::AsyncReadExt;

        enum Msg {
            DirStart,
            Entry(Vec<u8>),
            FileStart(bool),
            Chunk(Vec<u8>),
            FileEnd,
            Symlink(Vec<u8>),
            DirEnd,
        }
        const CHUNK: usize = 256 * 1024;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(8);
        let odb = self.clone();
        let worker = tokio::task::spawn_blocking(move || -> Result<Node> {
            let mut b = TreeBuilder::new(&odb);
            while let Some(m) = rx.blocking_recv() {
                match m {
                    Msg::DirStart => b.directory_start(),
                    Msg::Entry(n) => b.entry(&n),
                    Msg::FileStart(x) => {
                        b.file_start(x)?;
                    }
                    Msg::Chunk(c) => b.file_write(&c)?,
                    Msg::FileEnd => b.file_end()?,
                    Msg::Symlink(t) => b.symlink(&t),
                    Msg::DirEnd => b.directory_end()?,
                }
            }
            b.finish()
        });
        let read = async {
            let mut nar = AsyncNarReader::new(r);
            while let Some(ev) = nar.next().await? {
                let msgs = match ev {
                    AsyncEvent::DirectoryStart => vec![Msg::DirStart],
                    AsyncEvent::Entry { name } => vec![Msg::Entry(name.to_vec())],
                    AsyncEvent::Symlink { target } => vec![Msg::Symlink(target.to_vec())],
                    AsyncEvent::DirectoryEnd => vec![Msg::DirEnd],
                    AsyncEvent::File {
                        executable,
                        mut contents,
                        ..
                    } => {
                        if tx.send(Msg::FileStart(executable)).await.is_err() {
                            return Ok(false);
                        }
                        loop {
                            let n = CHUNK.min(contents.remaining() as usize);
                            if n == 0 {
                                break;
                            }
                            let mut chunk = vec![0u8; n];
                            contents
                                .read_exact(&mut chunk)
                                .await
                                .map_err(|e| unwrap_nar(e).unwrap_or_else(b3_nar::Error::Write))?;
                            if tx.send(Msg::Chunk(chunk)).await.is_err() {
                                return Ok(false);
                            }
                        }
                        vec![Msg::FileEnd]
                    }
                };
                for m in msgs {
                    if tx.send(m).await.is_err() {
                        return Ok(false);
                    }
                }
            }
            Ok::<bool, b3_nar::Error>(true)
        }
        .await;
        drop(tx);
        let built = worker
            .await
            .map_err(|e| Error::Nar(b3_nar::Error::Task(e.to_string())))?;
        match read {
            // The reader's error explains a worker that stopped early.
            Err(e) => Err(Error::Nar(e)),
            Ok(_) => built,
        }
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
