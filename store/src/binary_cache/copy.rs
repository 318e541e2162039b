//! Copying paths between any two stores (`nix copy`): references first,
//! NARs streamed from the source straight into the destination.
//!
//! Lives with the binary cache because that is where copies mostly go or
//! come from, but it only uses the store traits.

use std::collections::{BTreeMap, BTreeSet};

use tokio::io::AsyncWriteExt;

use crate::path::StorePath;
use crate::traits::{StoreError, StoreRead, StoreWrite, ValidPathInfo};

/// Copies `paths` (and, if `recursive`, their closures) from `src` to `dst`
/// in dependency order. Paths already valid in `dst` are skipped. Returns
/// the paths actually copied, in the order they were added.
pub async fn copy_paths(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    paths: &BTreeSet<StorePath>,
    recursive: bool,
) -> Result<Vec<StorePath>, StoreError> {
    let wanted = if recursive {
        src.query_closure(paths).await?
    } else {
        paths.clone()
    };
    let mut infos = BTreeMap::new();
    for p in &wanted {
        let info = src
            .query_path_info(p)
            .await?
            .ok_or_else(|| StoreError::InvalidPath(src.store_dir().display(p)))?;
        infos.insert(p.clone(), info);
    }
    let mut copied = Vec::new();
    for p in topo_order(&infos) {
        if dst.is_valid_path(&p).await? {
            continue;
        }
        let info = &infos[&p];
        copy_one(src, dst, info).await?;
        copied.push(p);
    }
    Ok(copied)
}

/// Streams one NAR from `src` into `dst.add_nar`.
async fn copy_one(
    src: &dyn StoreRead,
    dst: &dyn StoreWrite,
    info: &ValidPathInfo,
) -> Result<(), StoreError> {
    let (mut rd, mut wr) = tokio::io::duplex(256 << 10);
    let produce = async {
        let r = src.nar_from_path(&info.path, &mut wr).await;
        // EOF for the consumer, so it can check for trailing data.
        let _ = wr.shutdown().await;
        drop(wr);
        r
    };
    let consume = async {
        let r = dst.add_nar(info, &mut rd).await;
        drop(rd);
        r
    };
    let (produced, consumed) = tokio::join!(produce, consume);
    // The source's error (e.g. a hash mismatch found while downloading)
    // explains a consumer failure better than "unexpected end of NAR".
    match (produced, consumed) {
        (Err(e), _) => Err(e),
        (Ok(_), r) => r,
    }
}

/// References before referrers (self-references ignored); ties in path order.
fn topo_order(infos: &BTreeMap<StorePath, ValidPathInfo>) -> Vec<StorePath> {
    let mut done: BTreeSet<StorePath> = BTreeSet::new();
    let mut out = Vec::with_capacity(infos.len());
    for start in infos.keys() {
        // Iterative DFS: (path, children pushed?)
        let mut stack = vec![(start.clone(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if done.contains(&p) {
                continue;
            }
            if expanded {
                done.insert(p.clone());
                out.push(p);
                continue;
            }
            stack.push((p.clone(), true));
            if let Some(info) = infos.get(&p) {
                for r in info.references.iter().rev() {
                    if r != &p && infos.contains_key(r) && !done.contains(r) {
                        stack.push((r.clone(), false));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Hash, HashAlgo};

    fn sp(c: char, name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn references_come_first() {
        let (a, b, c) = (sp('a', "a"), sp('b', "b"), sp('c', "c"));
        let h = Hash::digest(HashAlgo::Sha256, b"");
        let mut infos = BTreeMap::new();
        // a -> c -> b, a -> b, c -> c (self)
        let mut ia = ValidPathInfo::new(a.clone(), h, 1);
        ia.references = BTreeSet::from([b.clone(), c.clone()]);
        let mut ic = ValidPathInfo::new(c.clone(), h, 1);
        ic.references = BTreeSet::from([b.clone(), c.clone()]);
        infos.insert(a.clone(), ia);
        infos.insert(b.clone(), ValidPathInfo::new(b.clone(), h, 1));
        infos.insert(c.clone(), ic);
        assert_eq!(topo_order(&infos), vec![b, c, a]);
    }
}
