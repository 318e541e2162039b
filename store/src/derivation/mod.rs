//! Derivations: the in-memory form of a `.drv` file and what Nix computes
//! from it.
//!
//! Owns the `Derivation` value and its output kinds. Submodules: `aterm`
//! (parse/print the `.drv` text byte for byte), `json` (`nix show-derivation`
//! as Nix 2.8 prints it), `hashing` (`hashDerivationModulo`, drv paths, a
//! cache of modulo hashes keyed by drv path), `instantiate` (what the
//! evaluator's `derivationStrict` needs: filling output paths). Pure: input
//! derivations are reached through caller-supplied callbacks, never the disk.

pub mod aterm;
pub mod hashing;
pub mod instantiate;
pub mod json;

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::hash::{HashAlgo, HashError};
use crate::path::{ContentAddress, ContentAddressMethod, StorePath, StorePathError};

pub use aterm::AtermError;
pub use hashing::{DrvHash, DrvHashCache, DrvHashKind};

/// One output of a derivation, as the `.drv` file records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DerivationOutput {
    /// Path fixed by the derivation's (modulo) hash.
    InputAddressed(StorePath),
    /// Fixed-output: the content hash is declared, so is the path. The path is
    /// kept as written so that printing reproduces the file; see
    /// [`Derivation::check_fixed_output_paths`].
    CaFixed { ca: ContentAddress, path: StorePath },
    /// Floating content-addressed (experimental `ca-derivations`).
    CaFloating {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
    /// Input-addressed, path not known yet (also the masked form used while
    /// computing the hash).
    Deferred,
    /// Impure derivation output (experimental).
    Impure {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
}

impl DerivationOutput {
    /// The output's store path, when the derivation determines it.
    pub fn path(&self) -> Option<&StorePath> {
        match self {
            DerivationOutput::InputAddressed(p) => Some(p),
            DerivationOutput::CaFixed { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A derivation: what to run to produce which outputs.
///
/// Strings are Rust `String`s: Nix strings are bytes, but `.drv` files made
/// from Nix expressions are UTF-8 in practice. Where arbitrary bytes can
/// reach a `.drv` (a `builtins.readFile` of a binary file used as the
/// builder, an argument or an environment value) they are kept exactly on
/// the side: [`Derivation::builder_bytes`], [`Derivation::args_bytes`] and
/// [`Derivation::env_bytes`]; the printer and the hashes use them, so such a
/// derivation has Nix's bytes and paths. Elsewhere (output names, paths,
/// `system`) the parser rejects non-UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and the outputs wanted from each.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    pub input_srcs: BTreeSet<StorePath>,
    /// `system` (Nix calls it the platform).
    pub system: String,
    /// The builder (its lossy UTF-8 form when [`Self::builder_bytes`] is set).
    pub builder: String,
    /// The builder's bytes when they are not UTF-8; `None` usually.
    pub builder_bytes: Option<Vec<u8>>,
    /// The arguments (lossy UTF-8 forms where [`Self::args_bytes`] has one).
    pub args: Vec<String>,
    /// Arguments that are not UTF-8, as bytes, by their index in `args`;
    /// usually empty.
    pub args_bytes: BTreeMap<usize, Vec<u8>>,
    pub env: BTreeMap<String, String>,
    /// Environment entries whose name or value is not valid UTF-8, as raw
    /// bytes. Disjoint from `env`; usually empty. [`Self::env_entries`]
    /// walks both in the `.drv` file's order.
    pub env_bytes: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The kind of a derivation, decided by its outputs (Nix's `DerivationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationKind {
    InputAddressed,
    /// Input-addressed outputs whose paths are not known yet.
    DeferredInputAddressed,
    Fixed,
    Floating,
    Impure,
}

/// Everything that can go wrong with derivations.
#[derive(Debug, Error)]
pub enum DerivationError {
    #[error(transparent)]
    Parse(#[from] AtermError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("derivation must have at least one output")]
    NoOutputs,
    #[error("can't mix derivation output types")]
    MixedOutputTypes,
    #[error("only one fixed output is allowed, and it must be named \"out\"")]
    BadFixedOutput,
    #[error("all floating outputs must use the same hash type")]
    MixedFloatingHashTypes,
    #[error("input derivation '{drv}' has no output '{output}'")]
    MissingInputOutput { drv: String, output: String },
    #[error("fixed output '{output}' is recorded as '{recorded}' but its content address gives '{computed}'")]
    FixedOutputPathMismatch {
        output: String,
        recorded: String,
        computed: String,
    },
    #[error("cannot read input derivation '{path}': {source}")]
    ReadInput {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("derivation names are not allowed to end in '.drv'")]
    NameEndsInDrv,
    #[error("multiple outputs are not supported in fixed-output derivations")]
    FixedOutputMultipleOutputs,
    #[error("{0}")]
    Invalid(String),
    #[error("invalid derivation JSON: {0}")]
    Json(String),
}

impl Derivation {
    /// Nix's `DerivationType`: all outputs must be of one kind; a fixed-output
    /// derivation has exactly one output, `out`.
    pub fn kind(&self) -> Result<DerivationKind, DerivationError> {
        let mut kinds = self.outputs.values().map(|o| match o {
            DerivationOutput::InputAddressed(_) => DerivationKind::InputAddressed,
            DerivationOutput::CaFixed { .. } => DerivationKind::Fixed,
            DerivationOutput::CaFloating { .. } => DerivationKind::Floating,
            DerivationOutput::Deferred => DerivationKind::DeferredInputAddressed,
            DerivationOutput::Impure { .. } => DerivationKind::Impure,
        });
        let first = kinds.next().ok_or(DerivationError::NoOutputs)?;
        if kinds.any(|k| k != first) {
            return Err(DerivationError::MixedOutputTypes);
        }
        match first {
            DerivationKind::Fixed
                if self.outputs.len() != 1 || !self.outputs.contains_key("out") =>
            {
                return Err(DerivationError::BadFixedOutput);
            }
            DerivationKind::Floating => {
                let mut algos = self.outputs.values().filter_map(|o| match o {
                    DerivationOutput::CaFloating { algo, .. } => Some(*algo),
                    _ => None,
                });
                let a = algos.next();
                if algos.any(|b| Some(b) != a) {
                    return Err(DerivationError::MixedFloatingHashTypes);
                }
            }
            _ => {}
        }
        Ok(first)
    }

    /// Every environment entry as bytes (`env` and `env_bytes` merged),
    /// sorted by name bytes as in the `.drv` file. This is what a builder
    /// should put in the environment.
    pub fn env_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut a = self
            .env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .peekable();
        let mut b = self
            .env_bytes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .peekable();
        // Both maps are sorted by bytes (`String` orders as its UTF-8).
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        })
    }

    /// The builder as bytes (exact even when not UTF-8).
    pub fn builder_raw(&self) -> &[u8] {
        self.builder_bytes
            .as_deref()
            .unwrap_or(self.builder.as_bytes())
    }

    /// Set the builder from bytes, kept exactly.
    pub fn set_builder_bytes(&mut self, b: Vec<u8>) {
        match String::from_utf8(b) {
            Ok(s) => {
                self.builder = s;
                self.builder_bytes = None;
            }
            Err(e) => {
                self.builder = String::from_utf8_lossy(e.as_bytes()).into_owned();
                self.builder_bytes = Some(e.into_bytes());
            }
        }
    }

    /// The arguments as bytes (exact even when not UTF-8).
    pub fn args_raw(&self) -> impl Iterator<Item = &[u8]> {
        self.args.iter().enumerate().map(|(i, a)| {
            self.args_bytes
                .get(&i)
                .map_or(a.as_bytes(), |b| b.as_slice())
        })
    }

    /// Append an argument given as bytes, kept exactly.
    pub fn push_arg_bytes(&mut self, a: Vec<u8>) {
        match String::from_utf8(a) {
            Ok(s) => self.args.push(s),
            Err(e) => {
                self.args_bytes
                    .insert(self.args.len(), e.as_bytes().to_vec());
                self.args
                    .push(String::from_utf8_lossy(e.as_bytes()).into_owned());
            }
        }
    }

    /// The derivation's `name` attribute (its env var `name`).
    pub fn name(&self) -> Option<&str> {
        self.env.get("name").map(String::as_str)
    }

    /// Whether built with `__structuredAttrs` (Nix stores them in `__json`).
    pub fn has_structured_attrs(&self) -> bool {
        self.env.contains_key("__json")
    }

    /// The store paths this derivation's text refers to: its input sources
    /// and input derivations. These are the references of the `.drv`.
    pub fn references(&self) -> BTreeSet<StorePath> {
        let mut refs = self.input_srcs.clone();
        refs.extend(self.input_drvs.keys().cloned());
        refs
    }
}
