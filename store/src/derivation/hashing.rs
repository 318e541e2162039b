//! `hashDerivationModulo`, output paths and `.drv` paths.
//!
//! A derivation's input-addressed output paths come from a sha256 of its
//! ATerm in which each input derivation is replaced by *its* modulo hash, so
//! the hash is recursive over the input closure. Fixed-output derivations cut
//! the recursion: their modulo hash depends only on the declared content
//! hash and path. Callers provide the input hashes through a closure, or let
//! [`DrvHashCache`] memoise them per drv path and read missing input
//! derivations through a callback (the evaluator fills the cache as it
//! instantiates; a store reads `.drv` files).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{aterm, Derivation, DerivationError, DerivationKind, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{StoreDir, StorePath};

/// Whether a modulo hash is final, or depends on outputs not known until
/// something is built (floating CA or impure inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrvHashKind {
    Regular,
    Deferred,
}

/// The modulo hash of each output of a derivation (Nix's `DrvHash`). For
/// input-addressed derivations every output has the same hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvHash {
    pub hashes: BTreeMap<String, Hash>,
    pub kind: DrvHashKind,
}

/// Nix's `hashDerivationModulo(store, drv, maskOutputs)`.
///
/// `input_hash` must return the modulo hash of an input derivation, as
/// computed with `mask_outputs = false` (that is what Nix caches).
pub fn hash_derivation_modulo<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    mut input_hash: F,
) -> Result<DrvHash, DerivationError>
where
    F: FnMut(&StorePath) -> Result<DrvHash, DerivationError>,
{
    let kind = drv.kind()?;
    match kind {
        DerivationKind::Fixed => {
            let mut hashes = BTreeMap::new();
            for (name, out) in &drv.outputs {
                if let DerivationOutput::CaFixed { ca, path } = out {
                    let s = format!(
                        "fixed:out:{}:{}:{}",
                        ca.method_algo(),
                        ca.hash.to_base16(),
                        store_dir.display(path)
                    );
                    hashes.insert(name.clone(), Hash::digest(HashAlgo::Sha256, s.as_bytes()));
                }
            }
            return Ok(DrvHash {
                hashes,
                kind: DrvHashKind::Regular,
            });
        }
        DerivationKind::Impure => {
            let h = Hash::digest(HashAlgo::Sha256, b"impure");
            return Ok(DrvHash {
                hashes: drv.outputs.keys().map(|k| (k.clone(), h)).collect(),
                kind: DrvHashKind::Deferred,
            });
        }
        _ => {}
    }
    let mut result_kind = if kind == DerivationKind::Floating {
        DrvHashKind::Deferred
    } else {
        DrvHashKind::Regular
    };
    let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, outputs) in &drv.input_drvs {
        let h = input_hash(path)?;
        if h.kind == DrvHashKind::Deferred {
            result_kind = DrvHashKind::Deferred;
        }
        for o in outputs {
            let oh = h
                .hashes
                .get(o)
                .ok_or_else(|| DerivationError::MissingInputOutput {
                    drv: store_dir.display(path),
                    output: o.clone(),
                })?;
            inputs.entry(oh.to_base16()).or_default().insert(o.clone());
        }
    }
    let text = aterm::print_bytes_with(drv, store_dir, mask_outputs, Some(&inputs));
    let h = Hash::digest(HashAlgo::Sha256, &text);
    Ok(DrvHash {
        hashes: drv.outputs.keys().map(|k| (k.clone(), h)).collect(),
        kind: result_kind,
    })
}

/// Memoised modulo hashes keyed by drv path (Nix's `drvHashes`), filling
/// itself by reading input derivations through a callback when needed.
#[derive(Debug, Clone, Default)]
pub struct DrvHashCache {
    store_dir: StoreDir,
    hashes: HashMap<StorePath, DrvHash>,
}

impl DrvHashCache {
    pub fn new(store_dir: StoreDir) -> Self {
        DrvHashCache {
            store_dir,
            hashes: HashMap::new(),
        }
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    pub fn get(&self, drv_path: &StorePath) -> Option<&DrvHash> {
        self.hashes.get(drv_path)
    }

    /// Records the (unmasked) modulo hash of a derivation just instantiated.
    pub fn insert(&mut self, drv_path: StorePath, hash: DrvHash) {
        self.hashes.insert(drv_path, hash);
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Nix's `pathDerivationModulo`: the cached hash of `drv_path`, or read
    /// it (and its uncached inputs, transitively) and compute it. The walk
    /// keeps its own stack, so deep input chains cannot overflow the thread's.
    pub fn path_hash<R>(
        &mut self,
        drv_path: &StorePath,
        read: &mut R,
    ) -> Result<DrvHash, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, DerivationError>,
    {
        if let Some(h) = self.hashes.get(drv_path) {
            return Ok(h.clone());
        }
        // Depth-first: a frame is a derivation and how many of its inputs
        // have been looked at; it is hashed once all its inputs are cached.
        let mut stack: Vec<(StorePath, Derivation, usize)> =
            vec![(drv_path.clone(), read(drv_path)?, 0)];
        let mut on_stack: HashSet<StorePath> = HashSet::from([drv_path.clone()]);
        while let Some((_, drv, next)) = stack.last_mut() {
            let pending = drv
                .input_drvs
                .keys()
                .skip(*next)
                .position(|p| !self.hashes.contains_key(p));
            if let Some(skip) = pending {
                *next += skip + 1;
                let input = drv.input_drvs.keys().nth(*next - 1).cloned();
                if let Some(input) = input {
                    if !on_stack.insert(input.clone()) {
                        return Err(DerivationError::Invalid(format!(
                            "derivation '{}' depends on itself",
                            self.store_dir.display(&input)
                        )));
                    }
                    let d = read(&input)?;
                    stack.push((input, d, 0));
                }
                continue;
            }
            if let Some((path, drv, _)) = stack.pop() {
                let h = self.hash_modulo_cached(&drv, false)?;
                on_stack.remove(&path);
                self.hashes.insert(path, h);
            }
        }
        self.hashes
            .get(drv_path)
            .cloned()
            .ok_or_else(|| DerivationError::Invalid("derivation hash was not computed".into()))
    }

    /// `hashDerivationModulo` of `drv`, with its inputs from this cache or `read`.
    pub fn hash_modulo<R>(
        &mut self,
        drv: &Derivation,
        mask_outputs: bool,
        read: &mut R,
    ) -> Result<DrvHash, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, DerivationError>,
    {
        let store_dir = self.store_dir.clone();
        hash_derivation_modulo(drv, &store_dir, mask_outputs, |p| self.path_hash(p, read))
    }

    /// `hash_modulo` for callers whose inputs are all cached already.
    pub fn hash_modulo_cached(
        &self,
        drv: &Derivation,
        mask_outputs: bool,
    ) -> Result<DrvHash, DerivationError> {
        hash_derivation_modulo(drv, &self.store_dir, mask_outputs, |p| {
            self.hashes
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::ReadInput {
                    path: self.store_dir.display(p),
                    source: "its modulo hash is not in the cache".into(),
                })
        })
    }
}

/// The text path of a derivation: `<name>.drv`, sha256 of its ATerm, with
/// its input sources and input derivations as references.
pub fn derivation_path(
    drv: &Derivation,
    store_dir: &StoreDir,
    drv_name: &str,
) -> Result<StorePath, DerivationError> {
    let text = drv.to_aterm_bytes(store_dir);
    Ok(store_dir.compute_text_path(&format!("{drv_name}.drv"), &text, &drv.references())?)
}

impl Derivation {
    /// The path this derivation has in `store_dir` (see [`derivation_path`]).
    pub fn path(&self, store_dir: &StoreDir, drv_name: &str) -> Result<StorePath, DerivationError> {
        derivation_path(self, store_dir, drv_name)
    }

    /// Recomputes every output path from scratch, as Nix's `staticOutputHashes`
    /// followed by `makeOutputPath` / `makeFixedOutputPath` would: `None` for
    /// outputs whose path is not known before building.
    pub fn compute_output_paths<F>(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
        input_hash: F,
    ) -> Result<BTreeMap<String, Option<StorePath>>, DerivationError>
    where
        F: FnMut(&StorePath) -> Result<DrvHash, DerivationError>,
    {
        let mut out = BTreeMap::new();
        match self.kind()? {
            DerivationKind::Fixed => {
                for (name, o) in &self.outputs {
                    if let DerivationOutput::CaFixed { ca, .. } = o {
                        let p = store_dir.make_path_from_ca(
                            &crate::path::output_path_name(drv_name, name),
                            ca,
                            &BTreeSet::new(),
                            false,
                        )?;
                        out.insert(name.clone(), Some(p));
                    }
                }
            }
            DerivationKind::InputAddressed | DerivationKind::DeferredInputAddressed => {
                let h = hash_derivation_modulo(self, store_dir, true, input_hash)?;
                for name in self.outputs.keys() {
                    let p = match (h.kind, h.hashes.get(name)) {
                        (DrvHashKind::Regular, Some(oh)) => {
                            Some(store_dir.make_output_path(name, oh, drv_name)?)
                        }
                        _ => None,
                    };
                    out.insert(name.clone(), p);
                }
            }
            DerivationKind::Floating | DerivationKind::Impure => {
                for name in self.outputs.keys() {
                    out.insert(name.clone(), None);
                }
            }
        }
        Ok(out)
    }

    /// Checks that each fixed output's recorded path is the one its content
    /// address gives (Nix recomputes it and ignores the recorded one).
    pub fn check_fixed_output_paths(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
    ) -> Result<(), DerivationError> {
        for (name, o) in &self.outputs {
            if let DerivationOutput::CaFixed { ca, path } = o {
                let computed = store_dir.make_path_from_ca(
                    &crate::path::output_path_name(drv_name, name),
                    ca,
                    &BTreeSet::new(),
                    false,
                )?;
                if &computed != path {
                    return Err(DerivationError::FixedOutputPathMismatch {
                        output: name.clone(),
                        recorded: store_dir.display(path),
                        computed: store_dir.display(&computed),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (Vec<StorePath>, HashMap<StorePath, Derivation>) {
        let sd = StoreDir::default();
        let mut paths = Vec::new();
        let mut drvs = HashMap::new();
        for i in 0..n {
            let mut d = Derivation {
                system: "x".into(),
                builder: "b".into(),
                ..Default::default()
            };
            d.outputs.insert("out".into(), DerivationOutput::Deferred);
            d.env.insert("i".into(), i.to_string());
            if let Some(prev) = paths.last() {
                d.input_drvs
                    .insert(StorePath::clone(prev), BTreeSet::from(["out".to_owned()]));
            }
            let p = d.path(&sd, &format!("d{i}")).unwrap();
            paths.push(p.clone());
            drvs.insert(p, d);
        }
        (paths, drvs)
    }

    #[test]
    fn deep_input_chains_do_not_overflow_the_stack() {
        let (paths, drvs) = chain(10_000);
        let mut reads = 0;
        let mut read = |p: &StorePath| {
            reads += 1;
            drvs.get(p)
                .cloned()
                .ok_or_else(|| DerivationError::Invalid("missing".into()))
        };
        let mut cache = DrvHashCache::new(StoreDir::default());
        let top = paths.last().unwrap();
        let h = cache.path_hash(top, &mut read).unwrap();
        assert_eq!(cache.len(), 10_000);
        assert_eq!(reads, 10_000);
        // Same answer as computing bottom-up, one level at a time.
        let mut bottom_up = DrvHashCache::new(StoreDir::default());
        for p in &paths {
            let hp = bottom_up.hash_modulo_cached(&drvs[p], false).unwrap();
            bottom_up.insert(p.clone(), hp);
        }
        assert_eq!(bottom_up.get(top), Some(&h));
    }

    #[test]
    fn missing_inputs_and_cycles_are_errors() {
        let (paths, mut drvs) = chain(3);
        // Make the first depend on the last: a cycle only a forged reader can give.
        let first = drvs.get_mut(&paths[0]).unwrap();
        first
            .input_drvs
            .insert(paths[2].clone(), BTreeSet::from(["out".to_owned()]));
        let mut read = |p: &StorePath| {
            drvs.get(p)
                .cloned()
                .ok_or_else(|| DerivationError::Invalid("missing".into()))
        };
        let mut cache = DrvHashCache::new(StoreDir::default());
        let e = cache.path_hash(&paths[2], &mut read).unwrap_err();
        assert!(e.to_string().contains("depends on itself"), "{e}");
        let mut none = |_: &StorePath| -> Result<Derivation, DerivationError> {
            Err(DerivationError::Invalid("no such drv".into()))
        };
        let mut cache = DrvHashCache::new(StoreDir::default());
        assert!(cache.path_hash(&paths[1], &mut none).is_err());
        // An input without the wanted output.
        let (paths, mut drvs) = chain(2);
        let top = drvs.get_mut(&paths[1]).unwrap();
        top.input_drvs
            .insert(paths[0].clone(), BTreeSet::from(["dev".to_owned()]));
        let mut read = |p: &StorePath| {
            drvs.get(p)
                .cloned()
                .ok_or_else(|| DerivationError::Invalid("missing".into()))
        };
        let mut cache = DrvHashCache::new(StoreDir::default());
        assert!(matches!(
            cache.path_hash(&paths[1], &mut read),
            Err(DerivationError::MissingInputOutput { .. })
        ));
    }
}
