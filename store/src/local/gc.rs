//! Garbage collection of the local store.
//!
//! The collector holds `gc.lock` exclusively while it marks (roots,
//! indirect roots, temporary roots of live processes, paths running
//! processes use, then their closures),
//! unregisters the dead paths in one transaction and renames them into the
//! trash; then it releases the lock and deletes the trash. Processes append
//! temporary roots under a shared `gc.lock` *before* they check validity,
//! so a path they use is either marked live or already unregistered (and
//! they add it again). Nothing referenced by a live path is ever deleted:
//! the dead set is closed under referrers, and the database refuses to drop
//! a path that a remaining path refers to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::lock::{FileLock, LockMode};
use crate::path::StorePath;
use crate::traits::StoreError;

use super::roots::{find_roots, scan_temp_roots};
use super::runtime_roots::find_runtime_roots;
use super::{db_err, io_ctx, LocalStore};

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
    /// Do not keep paths that running processes use (see
    /// [`super::runtime_roots`]); by default they are roots.
    pub no_runtime_roots: bool,
    /// Stop once at least this many bytes are freed (Nix's `--max-freed`).
    /// Paths go referrers first, so what remains is still closed.
    pub max_freed: Option<u64>,
}

/// What was (or would be) deleted.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Dead paths, sorted.
    pub deleted: Vec<StorePath>,
    /// Disk space of the dead paths (allocated blocks), in bytes.
    pub bytes_freed: u64,
    /// Roots found (after resolving links), runtime roots included.
    pub roots: BTreeSet<StorePath>,
    /// The valid paths kept alive only by running processes' use of them.
    pub runtime_roots: BTreeSet<StorePath>,
    pub dry_run: bool,
}

/// Disk usage of a tree (allocated blocks), never following symlinks.
pub(crate) fn disk_usage(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = crate::os::allocated_bytes(&m);
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                n += disk_usage(&e.path());
            }
        }
    }
    n
}

/// `dead` ordered so that every path comes after all the dead paths that
/// refer to it (any prefix is then safe to delete). `dead` is closed under
/// referrers, so only edges inside it matter. Ties go in path order.
fn referrers_first<'a>(dead: &'a BTreeSet<String>, edges: &'a [(String, String)]) -> Vec<&'a str> {
    let mut pending: BTreeMap<&str, usize> = dead.iter().map(|d| (d.as_str(), 0)).collect();
    let mut refs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        if from != to && dead.contains(from) && dead.contains(to) {
            if let Some(n) = pending.get_mut(to.as_str()) {
                *n += 1;
            }
            refs.entry(from.as_str()).or_default().push(to.as_str());
        }
    }
    let mut ready: BTreeSet<&str> = pending
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| *p)
        .collect();
    let mut order = Vec::with_capacity(dead.len());
    while let Some(p) = ready.pop_first() {
        order.push(p);
        for r in refs.get(p).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(n) = pending.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(r);
                }
            }
        }
    }
    // A reference cycle (impossible between content-addressed and
    // input-addressed paths, but the database does not forbid it): the rest
    // goes last, together.
    if order.len() < dead.len() {
        let placed: BTreeSet<&str> = order.iter().copied().collect();
        order.extend(
            dead.iter()
                .map(String::as_str)
                .filter(|d| !placed.contains(d)),
        );
    }
    order
}

impl LocalStore {
    /// Store directories (logical and physical, each ending in `/`) whose
    /// paths running processes may mention.
    fn store_prefixes(&self) -> Vec<Vec<u8>> {
        let mut v = vec![format!("{}/", self.store_dir()).into_bytes()];
        let mut phys = self
            .real_store_dir()
            .as_os_str()
            .as_encoded_bytes()
            .to_vec();
        phys.push(b'/');
        if !v.contains(&phys) {
            v.push(phys);
        }
        v
    }

    /// Collect garbage: delete every valid path not reachable from a root.
    pub fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        // Leftovers of dead processes first (needs gc.lock itself for the trash).
        self.sweep_after_crashes(true)?;
        let gc = FileLock::lock(&self.gc_lock_path(), LockMode::Exclusive)
            .map_err(io_ctx("locking gc.lock"))?;

        let mut roots: BTreeSet<StorePath> = BTreeSet::new();
        for r in
            find_roots(&self.gcroots_dir(), !opts.dry_run).map_err(io_ctx("reading gc roots"))?
        {
            if let Some(t) = r.target.to_str() {
                if let Ok(p) = self.resolve_user_path(t) {
                    roots.insert(p);
                }
            }
        }
        let temp =
            scan_temp_roots(&self.temproots_dir()).map_err(io_ctx("reading temporary roots"))?;
        for name in &temp.roots {
            if let Ok(p) = StorePath::from_base_name(name) {
                roots.insert(p);
            }
        }
        drop(temp);

        // Mark over the whole reference graph, loaded once.
        let (all, edges) = {
            let db = self.db();
            (
                db.all_paths().map_err(db_err)?,
                db.all_edges().map_err(db_err)?,
            )
        };
        let mut runtime = BTreeSet::new();
        if !opts.no_runtime_roots {
            let hashes = find_runtime_roots(Path::new("/proc"), &self.store_prefixes());
            for p in &all {
                let Ok(sp) = self.store_dir().parse(p) else {
                    continue;
                };
                if hashes.contains(&sp.hash_part()) && !roots.contains(&sp) {
                    runtime.insert(sp);
                }
            }
            roots.extend(runtime.iter().cloned());
        }
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, to) in &edges {
            graph.entry(from.as_str()).or_default().push(to.as_str());
        }
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = roots
            .iter()
            .map(|p| self.print_path(p))
            .filter(|p| all.contains(p))
            .collect();
        while let Some(p) = todo.pop() {
            if !live.insert(p.clone()) {
                continue;
            }
            if let Some(rs) = graph.get(p.as_str()) {
                todo.extend(
                    rs.iter()
                        .filter(|r| !live.contains(**r))
                        .map(|r| r.to_string()),
                );
            }
        }
        let dead: BTreeSet<String> = all.difference(&live).cloned().collect();
        let mut report = GcReport {
            roots,
            runtime_roots: runtime,
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let mut chosen: BTreeSet<String> = BTreeSet::new();
        for d in referrers_first(&dead, &edges) {
            if opts.max_freed.is_some_and(|m| report.bytes_freed >= m) {
                break;
            }
            let p = self.store_dir().parse(d)?;
            report.bytes_freed += disk_usage(&self.real_path(&p));
            report.deleted.push(p);
            chosen.insert(d.to_string());
        }
        report.deleted.sort();
        let dead = chosen;
        if opts.dry_run || dead.is_empty() {
            return Ok(report);
        }

        // Unregister first: from here on the paths are invalid, and only
        // then do their files go.
        self.db().unregister(&dead).map_err(db_err)?;
        let trash = self.real_store_dir().join(super::TRASH);
        std::fs::create_dir_all(&trash).map_err(io_ctx("creating the trash directory"))?;
        let mut moved = Vec::new();
        for p in &report.deleted {
            let from = self.real_path(p);
            let to = trash.join(format!("{}-gc-{}", p.base_name(), std::process::id()));
            super::open_for_move(&from);
            match std::fs::rename(&from, &to) {
                Ok(()) => moved.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::io(
                        format!("moving {} to trash", from.display()),
                        e,
                    ))
                }
            }
        }
        drop(gc);
        for m in moved {
            crate::canonicalise::remove_tree(&m)
                .map_err(io_ctx(format!("deleting {}", m.display())))?;
        }
        let _ = std::fs::remove_dir(&trash);
        let _ = self.locks().remove_stale();
        Ok(report)
    }
}
