//! Rendering store paths from the object database back into NAR bytes.
//!
//! The NAR is produced by b3-nar's encoder while walking manifests, streaming
//! each blob from disk, so the output is byte-identical to `nix-store --dump`
//! of the original path (manifests keep NAR's byte order of names).

use std::io::{Read, Write};

use b3_nar::NarEncoder;

use super::{Error, Node, Odb, Result};

impl Odb {
    /// Writes the NAR of store path `name` to `w`; returns `w` and the NAR size.
    pub fn export_nar<W: Write>(&self, name: &str, w: W) -> Result<(W, u64)> {
        let node = self
            .root(name)?
            .ok_or_else(|| Error::NoRoot(name.to_owned()))?;
        self.export_node(&node, w)
    }

    /// Writes the NAR of any node to `w`.
    pub fn export_node<W: Write>(&self, node: &Node, w: W) -> Result<(W, u64)> {
        let mut enc = NarEncoder::new(w);
        let mut buf = vec![0u8; 256 * 1024];
        self.encode(node, &mut enc, &mut buf)?;
        Ok(enc.finish()?)
    }

    fn encode<W: Write>(&self, node: &Node, enc: &mut NarEncoder<W>, buf: &mut [u8]) -> Result<()> {
        match node {
            Node::File {
                executable,
                size,
                blob,
            } => {
                let mut f = self.open_blob(blob)?;
                let found = f
                    .metadata()
                    .map_err(super::io_err("stat blob", &self.blob_path(blob)))?
                    .len();
                if found != *size {
                    return Err(Error::BlobSize {
                        id: *blob,
                        expected: *size,
                        found,
                    });
                }
                // Header, raw contents, trailer, with our own copy loop so a
                // blob shorter than its manifest says is reported as such
                // (`NarEncoder::file` would report a write error).
                enc.file_header(*executable, *size)?;
                let out = enc.contents_writer()?;
                let mut left = *size;
                let path = self.blob_path(blob);
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = f
                        .read(&mut buf[..want])
                        .map_err(super::io_err("reading blob", &path))?;
                    if n == 0 {
                        return Err(Error::BlobSize {
                            id: *blob,
                            expected: *size,
                            found: *size - left,
                        });
                    }
                    out.write_all(&buf[..n])
                        .map_err(|e| Error::Nar(b3_nar::Error::Write(e)))?;
                    left -= n as u64;
                }
                enc.file_trailer(*size)?;
            }
            Node::Symlink { target } => enc.symlink(target)?,
            Node::Directory { tree, .. } => {
                enc.directory_start()?;
                for e in self.get_tree(tree)? {
                    enc.entry(&e.name)?;
                    self.encode(&e.node, enc, buf)?;
                }
                enc.directory_end()?;
            }
        }
        Ok(())
    }
}
