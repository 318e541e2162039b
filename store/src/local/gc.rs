//! Garbage collection of the local store.
//!
//! The collector holds `gc.lock` exclusively while it marks (roots,
//! indirect roots, temporary roots of live processes, then their closures),
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
use super::{db_err, io_ctx, LocalStore};

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
}

/// What was (or would be) deleted.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Dead paths, sorted.
    pub deleted: Vec<StorePath>,
    /// Disk space of the dead paths (allocated blocks), in bytes.
    pub bytes_freed: u64,
    /// Roots found (after resolving links).
    pub roots: BTreeSet<StorePath>,
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

impl LocalStore {
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
            dry_run: opts.dry_run,
            ..Default::default()
        };
        for d in &dead {
            let p = self.store_dir().parse(d)?;
            report.bytes_freed += disk_usage(&self.real_path(&p));
            report.deleted.push(p);
        }
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
