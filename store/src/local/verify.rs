//! Verifying (and repairing) the local store.
//!
//! Finds registered paths that vanished from disk, paths whose contents no
//! longer match their NAR hash (with `check_contents`), and entries of the
//! store directory that are not registered. Repair restores a vanished or
//! corrupted path from a [`RepairSource`] whose copy has the registered NAR
//! hash, swapping it in atomically (`RENAME_EXCHANGE`) while the path stays
//! registered; unregistered entries are deleted; a vanished path with no
//! source and no referrers is unregistered.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use crate::canonicalise::canonicalise_tree;
use crate::hash::{Hash, HashAlgo};
use crate::lock::{FileLock, LockMode};
use crate::path::{FileIngestionMethod, StorePath};
use crate::traits::{StoreError, ValidPathInfo};

use super::{db_err, ingest, io_ctx, LocalStore};

/// Where a good copy of a damaged path may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairSource {
    /// A directory of store paths under the same base names, e.g. the real
    /// `/nix/store` of a Nix installation on this machine.
    StoreDir(PathBuf),
    /// A NAR file holding one path's serialisation.
    Nar { path: StorePath, file: PathBuf },
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Rehash every path and compare with its registered NAR hash.
    pub check_contents: bool,
    /// Fix what can be fixed.
    pub repair: bool,
    /// Tried in order for vanished or corrupted paths.
    pub sources: Vec<RepairSource>,
}

/// A path whose contents differ from its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupted {
    pub path: StorePath,
    pub expected: Hash,
    pub got: Hash,
    pub expected_size: u64,
    pub got_size: u64,
}

/// What verification found and did.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Registered, but missing on disk.
    pub vanished: Vec<StorePath>,
    /// Contents differ from the registered NAR hash or size.
    pub corrupted: Vec<Corrupted>,
    /// Present in the store directory but not registered (base names).
    pub unregistered: Vec<String>,
    /// Problems SQLite itself reports.
    pub database: Vec<String>,
    /// Paths restored from a source.
    pub repaired: Vec<StorePath>,
    /// Vanished paths unregistered during repair.
    pub invalidated: Vec<StorePath>,
    /// Unregistered entries deleted during repair.
    pub removed: Vec<String>,
}

impl VerifyReport {
    /// Nothing wrong was found.
    pub fn is_clean(&self) -> bool {
        self.vanished.is_empty()
            && self.corrupted.is_empty()
            && self.unregistered.is_empty()
            && self.database.is_empty()
    }

    /// Every problem found was fixed.
    pub fn all_repaired(&self) -> bool {
        let fixed: BTreeSet<&StorePath> = self
            .repaired
            .iter()
            .chain(self.invalidated.iter())
            .collect();
        self.database.is_empty()
            && self.vanished.iter().all(|p| fixed.contains(p))
            && self.corrupted.iter().all(|c| fixed.contains(&c.path))
            && self.unregistered.len() == self.removed.len()
    }
}

impl LocalStore {
    /// Verify the store (see the module docs).
    pub fn verify(&self, opts: &VerifyOptions) -> Result<VerifyReport, StoreError> {
        if opts.repair {
            self.sweep_after_crashes(true)?;
        }
        // Keep the collector out while we look at (and swap) paths.
        let _gc = FileLock::lock(&self.gc_lock_path(), LockMode::Shared)
            .map_err(io_ctx("locking gc.lock"))?;
        let mut report = VerifyReport {
            database: self.db().integrity_problems().map_err(db_err)?,
            ..Default::default()
        };
        let valid = self.all_valid_paths()?;

        // Unregistered entries in the store directory.
        let mut on_disk = BTreeSet::new();
        for e in std::fs::read_dir(self.real_store_dir()).map_err(io_ctx("listing the store"))? {
            let e = e.map_err(io_ctx("listing the store"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match StorePath::from_base_name(&name) {
                Ok(p) if valid.contains(&p) => {
                    on_disk.insert(p);
                }
                _ => report.unregistered.push(name),
            }
        }

        for p in &valid {
            if !on_disk.contains(p) && std::fs::symlink_metadata(self.real_path(p)).is_err() {
                report.vanished.push(p.clone());
                continue;
            }
            if opts.check_contents {
                let Some(info) = self.query_path_info_sync(p)? else {
                    continue;
                };
                let got = b3_nar::hash_path(&self.real_path(p))?;
                let got_hash = Hash::from_bytes(HashAlgo::Sha256, &got.sha256)
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                if got_hash != info.nar_hash || got.size != info.nar_size {
                    report.corrupted.push(Corrupted {
                        path: p.clone(),
                        expected: info.nar_hash,
                        got: got_hash,
                        expected_size: info.nar_size,
                        got_size: got.size,
                    });
                }
            }
        }

        if !opts.repair {
            return Ok(report);
        }
        let damaged: Vec<StorePath> = report
            .vanished
            .iter()
            .cloned()
            .chain(report.corrupted.iter().map(|c| c.path.clone()))
            .collect();
        for p in damaged {
            let Some(info) = self.query_path_info_sync(&p)? else {
                continue;
            };
            if self.repair_from_sources(&info, &opts.sources)? {
                report.repaired.push(p);
            } else if report.vanished.contains(&p) && self.query_referrers_sync(&p)?.is_empty() {
                self.db()
                    .unregister(&BTreeSet::from([self.print_path(&p)]))
                    .map_err(db_err)?;
                report.invalidated.push(p);
            }
        }
        for name in report.unregistered.clone() {
            if let Some(_l) = self
                .locks()
                .try_lock(&name)
                .map_err(io_ctx("locking a path"))?
            {
                let logical = format!("{}/{name}", self.store_dir());
                if !self.db().is_valid(&logical).map_err(db_err)? {
                    self.delete_physical(&self.real_store_dir().join(&name))?;
                    report.removed.push(name);
                }
            }
        }
        Ok(report)
    }

    /// Restore `info.path` from the first source holding a copy with the
    /// registered NAR hash. Returns whether it was restored.
    pub fn repair_from_sources(
        &self,
        info: &ValidPathInfo,
        sources: &[RepairSource],
    ) -> Result<bool, StoreError> {
        for s in sources {
            let tmp = self.new_tmp_node()?;
            let node = tmp.path().to_path_buf();
            let got = match s {
                RepairSource::StoreDir(dir) => {
                    let cand = dir.join(info.path.base_name());
                    if std::fs::symlink_metadata(&cand).is_err() {
                        continue;
                    }
                    match ingest::ingest(
                        &cand,
                        &node,
                        FileIngestionMethod::Recursive,
                        HashAlgo::Sha256,
                    ) {
                        Ok(i) => (i.nar_hash, i.nar_size),
                        Err(_) => continue,
                    }
                }
                RepairSource::Nar { path, file } => {
                    if path != &info.path {
                        continue;
                    }
                    let f =
                        File::open(file).map_err(io_ctx(format!("opening {}", file.display())))?;
                    let mut hr = b3_nar::HashingReader::new(BufReader::with_capacity(1 << 18, f));
                    if b3_nar::restore(&mut hr, &node).is_err() {
                        continue;
                    }
                    let (_, nh) = hr.finish_nar();
                    let h = Hash::from_bytes(HashAlgo::Sha256, &nh.sha256)
                        .map_err(|e| StoreError::Other(e.to_string()))?;
                    (h, nh.size)
                }
            };
            if got != (info.nar_hash, info.nar_size) {
                continue;
            }
            canonicalise_tree(&node).map_err(|e| StoreError::Other(e.to_string()))?;
            self.sync_tree(&node)?;
            let _lock = self
                .locks()
                .lock(&info.path.base_name())
                .map_err(io_ctx("locking the path"))?;
            let dest = self.real_path(&info.path);
            if std::fs::symlink_metadata(&dest).is_ok() {
                // Swap atomically; the damaged copy ends up in the temp dir.
                crate::os::exchange(&node, &dest)
                    .map_err(|e| StoreError::io(format!("swapping in {}", dest.display()), e))?;
            } else {
                std::fs::rename(&node, &dest)
                    .map_err(io_ctx(format!("moving into place {}", dest.display())))?;
            }
            self.sync_store_dir()?;
            return Ok(true);
        }
        Ok(false)
    }
}
