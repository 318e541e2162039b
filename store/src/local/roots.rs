//! Garbage-collector roots of the local store, and temporary roots.
//!
//! - Direct roots: symlinks anywhere under `<state>/gcroots/` whose target is
//!   a store path (logical or physical spelling, or a file inside one).
//! - Indirect roots: `<state>/gcroots/auto/<name>` symlinks to a link the user
//!   owns (a `result` link); that link's target is the root. When the user's
//!   link is gone, the auto entry is stale and removed by the collector.
//! - Temporary roots: each process that opens the store for writing owns
//!   `<state>/temproots/<pid>`, holds an exclusive `flock` on it for its whole
//!   life, and appends the base names it must keep alive. A file whose lock
//!   can be taken belongs to a dead process.
//!
//! Appending a temporary root takes `gc.lock` shared, so it cannot interleave
//! with the collector's mark phase (which holds it exclusively).

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::lock::{FileLock, LockMode};

/// The live process's temporary-roots file.
#[derive(Debug)]
pub struct TempRoots {
    lock: FileLock,
    /// The names in the file: a root is written once, however often the
    /// process asks for it (a chain of builds asks again for every path
    /// of the chain at each step).
    written: HashSet<String>,
}

impl TempRoots {
    /// Create and lock `<dir>/<pid>-<n>` (one file per open store, so a
    /// process may open several stores, or one store twice).
    pub fn create(dir: &Path) -> io::Result<TempRoots> {
        static INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}", std::process::id()));
        // A leftover file of a dead process with our pid: start it afresh.
        let lock = FileLock::lock(&path, LockMode::Exclusive)?;
        lock.file().set_len(0)?;
        Ok(TempRoots {
            lock,
            written: HashSet::new(),
        })
    }

    /// Whether every one of `base_names` is in the file already.
    pub fn has_all<'a>(&self, mut base_names: impl Iterator<Item = &'a str>) -> bool {
        base_names.all(|n| self.written.contains(n))
    }

    /// Append the roots (store path base names) not in the file yet. The
    /// caller holds `gc.lock` shared.
    pub fn append<'a>(&mut self, base_names: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        let mut s = String::new();
        let mut new = Vec::new();
        for n in base_names {
            if !self.written.contains(n) && !new.contains(&n) {
                s.push_str(n);
                s.push('\n');
                new.push(n);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let mut f = self.lock.file();
        f.write_all(s.as_bytes())?;
        self.written.extend(new.into_iter().map(String::from));
        Ok(())
    }

    /// Remove the file (normal process exit).
    pub fn remove(self) -> io::Result<()> {
        self.lock.unlink()
    }
}

/// What the temporary-roots directory holds right now.
#[derive(Debug, Default)]
pub struct TempRootScan {
    /// Roots of live processes.
    pub roots: BTreeSet<String>,
    /// Files of dead processes, locked by us (drop to release, or unlink).
    pub dead: Vec<(u32, FileLock)>,
    /// Pids whose files are held by live processes.
    pub live_pids: BTreeSet<u32>,
}

/// Read every temporary-roots file in `dir` (`<pid>-<n>`). A file whose lock
/// we can take belongs to a dead process; files held by this process (other
/// open stores) are live like any other.
pub fn scan_temp_roots(dir: &Path) -> io::Result<TempRootScan> {
    let mut scan = TempRootScan::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        match FileLock::try_lock(&path, LockMode::Exclusive)? {
            Some(l) => scan.dead.push((pid, l)),
            None => {
                read_roots_into(&path, &mut scan.roots)?;
                scan.live_pids.insert(pid);
            }
        }
    }
    Ok(scan)
}

fn read_roots_into(path: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    let s = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // A line being appended may be cut short; it cannot name a valid path then.
    out.extend(s.lines().filter(|l| !l.is_empty()).map(String::from));
    Ok(())
}

/// A root found on disk: where it lives and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRoot {
    /// The link that makes it a root (the user's link for indirect roots).
    pub link: PathBuf,
    /// The link's target as read.
    pub target: PathBuf,
}

/// Collect roots under `gcroots` (following `auto/` entries to the user's
/// links). Stale indirect roots are removed when `remove_stale` is set.
pub fn find_roots(gcroots: &Path, remove_stale: bool) -> io::Result<Vec<FoundRoot>> {
    let mut out = Vec::new();
    walk_roots(gcroots, gcroots, remove_stale, &mut out)?;
    Ok(out)
}

fn walk_roots(
    base: &Path,
    dir: &Path,
    remove_stale: bool,
    out: &mut Vec<FoundRoot>,
) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let auto = base.join("auto");
    for entry in rd {
        let entry = entry?;
        let p = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk_roots(base, &p, remove_stale, out)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p)?;
            if dir == auto {
                // Indirect: `target` is the user's link.
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let t2 = std::fs::read_link(&target)?;
                        out.push(FoundRoot {
                            link: target,
                            target: t2,
                        });
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if remove_stale {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                    Err(e) => return Err(e),
                }
            } else {
                out.push(FoundRoot { link: p, target });
            }
        }
    }
    Ok(())
}

/// The file name used in `gcroots/auto/` for an indirect root at `link`:
/// stable for a given absolute link path, so re-adding is idempotent.
pub fn auto_root_name(link: &Path) -> String {
    // FNV-1a over the link path: only uniqueness matters, not secrecy.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in link.as_os_str().as_encoded_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let readable: String = link
        .file_name()
        .map(|f| {
            f.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
                .take(40)
                .collect()
        })
        .unwrap_or_default();
    format!("{h:016x}-{readable}")
}

// Roots are Unix symlinks here.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn temp_roots_of_live_and_dead_processes() {
        let d = tempfile::tempdir().unwrap();
        let mut tr = TempRoots::create(d.path()).unwrap();
        tr.append(["aaa-x", "bbb-y"]).unwrap();
        // A "dead" process's file: present, unlocked.
        let mut tr2 = TempRoots::create(d.path()).unwrap();
        tr2.append(["ddd-w"]).unwrap();
        std::fs::write(d.path().join("999999-0"), "ccc-z\n").unwrap();
        let scan = scan_temp_roots(d.path()).unwrap();
        assert!(scan.roots.contains("aaa-x") && scan.roots.contains("bbb-y"));
        assert!(scan.roots.contains("ddd-w"));
        assert!(!scan.roots.contains("ccc-z"));
        assert_eq!(scan.dead.len(), 1);
        assert_eq!(scan.dead[0].0, 999_999);
        assert!(scan.live_pids.contains(&std::process::id()));
        drop(scan);
        tr.remove().unwrap();
        tr2.remove().unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_temp_root_asked_for_again_is_written_once() {
        let d = tempfile::tempdir().unwrap();
        let mut tr = TempRoots::create(d.path()).unwrap();
        assert!(!tr.has_all(["aaa-x"].into_iter()));
        tr.append(["aaa-x", "bbb-y", "aaa-x"]).unwrap();
        assert!(tr.has_all(["bbb-y", "aaa-x"].into_iter()));
        assert!(!tr.has_all(["bbb-y", "ccc-z"].into_iter()));
        tr.append(["bbb-y", "ccc-z", "aaa-x"]).unwrap();
        let file = d.path().join(format!("{}-", std::process::id()));
        let text: String = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().starts_with(&*file.to_string_lossy()))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(text, "aaa-x\nbbb-y\nccc-z\n");
        let scan = scan_temp_roots(d.path()).unwrap();
        assert_eq!(scan.roots.len(), 3);
        drop(scan);
        tr.remove().unwrap();
    }

    #[test]
    fn direct_and_indirect_roots_and_stale_removal() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("gcroots");
        std::fs::create_dir_all(g.join("auto")).unwrap();
        std::fs::create_dir_all(g.join("profiles")).unwrap();
        std::os::unix::fs::symlink("/nix/store/aaa-x", g.join("profiles/p1")).unwrap();
        let user_link = d.path().join("result");
        std::os::unix::fs::symlink("/nix/store/bbb-y", &user_link).unwrap();
        std::os::unix::fs::symlink(&user_link, g.join("auto").join(auto_root_name(&user_link)))
            .unwrap();
        let gone = d.path().join("gone");
        std::os::unix::fs::symlink(&gone, g.join("auto/stale")).unwrap();

        let roots = find_roots(&g, true).unwrap();
        let targets: BTreeSet<_> = roots.iter().map(|r| r.target.clone()).collect();
        assert_eq!(
            targets,
            BTreeSet::from([
                PathBuf::from("/nix/store/aaa-x"),
                PathBuf::from("/nix/store/bbb-y")
            ])
        );
        assert!(std::fs::symlink_metadata(g.join("auto/stale")).is_err());
    }

    #[test]
    fn auto_root_names_are_stable_and_distinct() {
        let a = auto_root_name(Path::new("/home/u/p/result"));
        assert_eq!(a, auto_root_name(Path::new("/home/u/p/result")));
        assert_ne!(a, auto_root_name(Path::new("/home/u/q/result")));
        assert!(a.ends_with("-result"));
    }
}
