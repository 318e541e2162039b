//! Nix's export format: what `nix-store --export` writes and
//! `nix-store --import` reads, so closures move between b3 and Nix stores.
//!
//! The stream is a sequence of items, each announced by the number 1 and
//! the whole stream closed by 0. An item is the path's NAR followed by its
//! metadata: the number 0x4558494e ("NIXE"), the store path, the reference
//! count and references (sorted), the deriver (empty when unknown) and a
//! number saying whether a legacy signature string follows (0: none; b3
//! writes none and skips one when reading). Numbers are little-endian u64
//! and strings are length-prefixed and zero-padded to 8 bytes, as in NARs.
//!
//! Paths are written references first (a depth-first post-order over the
//! given paths in name order, each path's references in name order), which
//! is Nix's order, so `nix-store --import` can register each item as it
//! arrives; references outside the given set are not followed. The NAR is
//! hashed while it is written and an export of a path whose contents no
//! longer match its registered hash fails, as Nix's does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use crate::hash::{Hash, HashAlgo};
use crate::local::LocalStore;
use crate::path::StorePath;
use crate::traits::{StoreError, ValidPathInfo};

/// Marks the metadata that follows each NAR ("NIXE" read little-endian).
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// Longest string accepted in the metadata (a store path is far shorter).
const MAX_STRING: u64 = 64 * 1024;
/// Most references accepted for one path.
const MAX_REFERENCES: u64 = 1 << 20;

/// `paths` in Nix's export order: each path after the ones it refers to
/// among `paths`.
pub fn export_order(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
) -> Result<Vec<StorePath>, StoreError> {
    let mut refs: BTreeMap<String, (StorePath, Vec<String>)> = BTreeMap::new();
    for p in paths {
        let info = store
            .query_path_info_sync(p)?
            .ok_or_else(|| StoreError::InvalidPath(store.print_path(p)))?;
        let mut rs: Vec<String> = info
            .references
            .iter()
            .filter(|r| *r != p && paths.contains(*r))
            .map(|r| store.print_path(r))
            .collect();
        rs.sort();
        refs.insert(store.print_path(p), (p.clone(), rs));
    }
    // Iterative post-order DFS; `on_path` detects cycles (a corrupt store).
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut on_path: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::with_capacity(refs.len());
    for root in refs.keys() {
        if done.contains(root.as_str()) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        on_path.insert(root);
        while let Some((node, i)) = stack.last_mut() {
            let children = &refs[*node].1;
            if let Some(child) = children.get(*i) {
                *i += 1;
                if done.contains(child.as_str()) {
                    continue;
                }
                if !on_path.insert(child.as_str()) {
                    return Err(StoreError::Other(format!(
                        "cycle in the references of '{child}'"
                    )));
                }
                stack.push((child.as_str(), 0));
            } else {
                let node: &str = node;
                on_path.remove(node);
                done.insert(node);
                order.push(refs[node].0.clone());
                stack.pop();
            }
        }
    }
    Ok(order)
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    b3_nar::wire::put_str(out, s);
}

fn write_err(e: io::Error) -> StoreError {
    StoreError::io("writing the export stream", e)
}

/// Writes `paths` (not their closure) to `w` in Nix's export format; returns `w`.
pub fn export_paths<W: Write>(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
    mut w: W,
) -> Result<W, StoreError> {
    for path in export_order(store, paths)? {
        let info = store
            .query_path_info_sync(&path)?
            .ok_or_else(|| StoreError::InvalidPath(store.print_path(&path)))?;
        w.write_all(&1u64.to_le_bytes()).map_err(write_err)?;
        let hw = b3_nar::HashingWriter::new(&mut w);
        let (hw, _) = b3_nar::dump_path(&store.real_path(&path), hw)?;
        let (_, got) = hw.finish_nar();
        let got = Hash::from_bytes(HashAlgo::Sha256, &got.sha256)
            .map_err(|e| StoreError::Other(e.to_string()))?;
        if info.nar_hash.algo() == HashAlgo::Sha256 && got != info.nar_hash {
            return Err(StoreError::Other(format!(
                "hash of path '{}' has changed from '{}' to '{}'",
                store.print_path(&path),
                info.nar_hash,
                got
            )));
        }
        w.write_all(&trailer(store, &info)).map_err(write_err)?;
    }
    w.write_all(&0u64.to_le_bytes()).map_err(write_err)?;
    w.flush().map_err(write_err)?;
    Ok(w)
}

/// The metadata written after a path's NAR.
fn trailer(store: &LocalStore, info: &ValidPathInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_u64(&mut out, EXPORT_MAGIC);
    put_str(&mut out, store.print_path(&info.path).as_bytes());
    let mut refs: Vec<String> = info
        .references
        .iter()
        .map(|r| store.print_path(r))
        .collect();
    refs.sort();
    put_u64(&mut out, refs.len() as u64);
    for r in &refs {
        put_str(&mut out, r.as_bytes());
    }
    let deriver = info
        .deriver
        .as_ref()
        .map(|d| store.print_path(d))
        .unwrap_or_default();
    put_str(&mut out, deriver.as_bytes());
    put_u64(&mut out, 0);
    out
}

fn bad(what: impl Into<String>) -> StoreError {
    StoreError::Other(format!("invalid export stream: {}", what.into()))
}

fn read_err(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("it ends early")
    } else {
        StoreError::io("reading the export stream", e)
    }
}

fn read_u64<R: Read>(r: &mut R) -> Result<u64, StoreError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(read_err)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string<R: Read>(r: &mut R, what: &str) -> Result<String, StoreError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(bad(format!("{what} is {len} bytes long")));
    }
    let padded = len as usize + b3_nar::wire::padding(len);
    let mut b = vec![0u8; padded];
    r.read_exact(&mut b).map_err(read_err)?;
    if b[len as usize..].iter().any(|&x| x != 0) {
        return Err(bad(format!("non-zero padding after the {what}")));
    }
    b.truncate(len as usize);
    String::from_utf8(b).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// Reads an export stream from `r` and adds every path in it (each one's
/// references must be valid by the time it arrives, as they are in the
/// order Nix and b3 write). Returns the paths in stream order. `r` should be
/// buffered; it is read exactly to the closing 0.
pub fn import_paths<R: Read>(store: &LocalStore, mut r: R) -> Result<Vec<StorePath>, StoreError> {
    let sd = store.store_dir();
    let mut imported = Vec::new();
    loop {
        match read_u64(&mut r)? {
            0 => return Ok(imported),
            1 => {}
            n => {
                return Err(bad(format!(
                    "expected 1 (a path follows) or 0 (end), found {n}"
                )))
            }
        }
        let pending = store.restore_pending_sync(&mut r)?;
        let magic = read_u64(&mut r)?;
        if magic != EXPORT_MAGIC {
            return Err(bad(format!(
                "expected the marker {EXPORT_MAGIC:#x} after the NAR, found {magic:#x}"
            )));
        }
        let path = sd.parse(&read_string(&mut r, "store path")?)?;
        let n = read_u64(&mut r)?;
        if n > MAX_REFERENCES {
            return Err(bad(format!("{n} references")));
        }
        let mut references = BTreeSet::new();
        for _ in 0..n {
            references.insert(sd.parse(&read_string(&mut r, "reference")?)?);
        }
        let deriver = read_string(&mut r, "deriver")?;
        match read_u64(&mut r)? {
            0 => {}
            // A legacy signature: b3 does not check these.
            1 => {
                read_string(&mut r, "signature")?;
            }
            n => return Err(bad(format!("signature flag {n}"))),
        }
        let mut info = ValidPathInfo::new(path.clone(), pending.nar_hash(), pending.nar_size());
        info.references = references;
        info.deriver = if deriver.is_empty() {
            None
        } else {
            Some(sd.parse(&deriver)?)
        };
        store.commit_pending_sync(pending, info)?;
        imported.push(path);
    }
}
