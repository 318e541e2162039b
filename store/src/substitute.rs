//! The seam between building and substituting: the builder asks a
//! [`Substitute`] implementation to make a missing store path valid in the
//! local store before it considers building the derivation that produces it.
//!
//! The trait is synchronous on purpose: the builder's scheduler runs each
//! piece of work on its own thread, and an implementation over async stores
//! (binary caches) owns the runtime it needs. Implementations must be safe
//! to call from several threads at once, for different paths.

use crate::local::LocalStore;
use crate::path::StorePath;

/// What became of one attempt to substitute a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Substituted {
    /// The path (and, before it, every reference it lacked) is now valid in
    /// the local store.
    Done,
    /// No configured substituter has the path: the caller builds it.
    NotAvailable,
}

/// Errors a substituter reports after it has tried everything it was
/// configured with. The caller falls back to building and shows the
/// message as a warning, as Nix does with `fallback`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SubstituteError(pub String);

/// A source of prebuilt store paths (binary caches, in priority order).
pub trait Substitute: Send + Sync + std::fmt::Debug {
    /// Makes `path` valid in `store` by fetching it (after its missing
    /// references), checking NAR hash and signatures while streaming and
    /// registering it atomically. Nothing is registered on failure.
    fn substitute(
        &self,
        store: &LocalStore,
        path: &StorePath,
    ) -> Result<Substituted, SubstituteError>;

    /// Whether some substituter claims to have `path`, without fetching it
    /// (the builder uses this to skip realising the inputs of derivations
    /// whose outputs can all be substituted).
    fn has(&self, path: &StorePath) -> bool;

    /// What fetching `path` would take, if known without fetching it:
    /// `(download size, NAR size)` in bytes (a narinfo's `FileSize` and
    /// `NarSize`), for Nix's "(X MiB download, Y MiB unpacked)" summary.
    fn fetch_sizes(&self, _path: &StorePath) -> Option<(u64, u64)> {
        None
    }
}
