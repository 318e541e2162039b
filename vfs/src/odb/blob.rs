//! Streaming blob writer: hash while writing to a temporary file, then rename
//! it to its content address (or drop it if the blob already exists).

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{io_err, make_read_only, ObjectId, Odb, Result};

/// Writes one blob. Call [`BlobWriter::finish`] to publish it; dropping the
/// writer without finishing removes the temporary file.
pub struct BlobWriter {
    odb: Odb,
    tmp: PathBuf,
    file: Option<io::BufWriter<fs::File>>,
    hasher: blake3::Hasher,
    size: u64,
}

impl BlobWriter {
    pub(super) fn new(odb: &Odb) -> Result<Self> {
        let tmp = odb.temp_path();
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            odb: odb.clone(),
            tmp,
            file: Some(io::BufWriter::with_capacity(256 * 1024, f)),
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    /// Publishes the blob and returns its id and size.
    pub fn finish(mut self) -> Result<(ObjectId, u64)> {
        let id = ObjectId::from(self.hasher.finalize());
        let Some(w) = self.file.take() else {
            unreachable!("file is only taken here")
        };
        let f = w
            .into_inner()
            .map_err(|e| io_err("writing", &self.tmp)(e.into_error()))?;
        drop(f);
        if self.odb.has_blob(&id, self.size) {
            let _ = fs::remove_file(&self.tmp);
        } else {
            make_read_only(&self.tmp)?;
            let dest = self.odb.blob_path(&id);
            self.odb.place(&self.tmp, &dest)?;
        }
        Ok((id, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already finished"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
