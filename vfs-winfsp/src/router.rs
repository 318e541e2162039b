//! Runtimes on Windows: one WinFSP file system serves every runtime, and
//! each request is routed to the runtime of the calling process by walking
//! that process's parent chain until a runtime's root process is found (the
//! approach spfs takes on Windows, where there are no mount namespaces). A
//! process that belongs to no runtime sees the empty view.
//!
//! Portable on purpose: the process table is passed in as a
//! [`ProcessTable`], so routing, pid-reuse handling and clean-up are unit
//! tested on every host. On Windows the table comes from a Toolhelp
//! snapshot (`winview::snapshot_processes`).
//!
//! Pid reuse: Windows reuses pids, and a process keeps the pid of a parent
//! that has exited. A parent link is trusted only if the parent started no
//! later than the child; otherwise the chain stops there. A runtime's root
//! is identified by pid and start time, so a new process that reuses the
//! root's pid is not taken for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::resolve::Closure;

/// One process as the OS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
    /// Creation time in any monotonic unit (FILETIME on Windows).
    pub start: u64,
}

/// The running processes at one moment, by pid.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
}

impl ProcessTable {
    pub fn new(procs: impl IntoIterator<Item = ProcessInfo>) -> Self {
        ProcessTable {
            procs: procs.into_iter().map(|p| (p.pid, p)).collect(),
        }
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// `pid` and its ancestors, nearest first, stopping at a missing parent,
    /// a parent that started after its child (its pid was reused), or a loop.
    pub fn ancestry(&self, pid: u32) -> Vec<ProcessInfo> {
        let mut chain = Vec::new();
        let Some(mut p) = self.procs.get(&pid).copied() else {
            return chain;
        };
        loop {
            chain.push(p);
            let Some(parent) = self.procs.get(&p.parent).copied() else {
                break;
            };
            if parent.pid == p.pid
                || parent.start > p.start
                || chain.iter().any(|c| c.pid == parent.pid)
            {
                break;
            }
            p = parent;
        }
        chain
    }
}

/// A runtime's identity: its root process (pid and start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeId {
    pub pid: u32,
    pub start: u64,
}

/// What a runtime serves.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: String,
    pub closure: Arc<Closure>,
}

/// Every live runtime, and the empty view for everyone else.
#[derive(Debug, Clone)]
pub struct Router {
    runtimes: HashMap<RuntimeId, Runtime>,
    empty: Arc<Closure>,
}

impl Router {
    /// A router whose fallback is `empty` (an empty closure of the same
    /// object database).
    pub fn new(empty: Closure) -> Self {
        Router {
            runtimes: HashMap::new(),
            empty: Arc::new(empty),
        }
    }

    /// Registers a runtime rooted at `root` (normally the shell or build
    /// process b3 starts for it). Replaces one with the same root.
    pub fn add(&mut self, root: RuntimeId, runtime: Runtime) {
        self.runtimes.insert(root, runtime);
    }

    pub fn remove(&mut self, root: &RuntimeId) -> Option<Runtime> {
        self.runtimes.remove(root)
    }

    pub fn runtimes(&self) -> impl Iterator<Item = (&RuntimeId, &Runtime)> {
        self.runtimes.iter()
    }

    /// The runtime `pid` belongs to: the nearest ancestor (or itself) that
    /// is a runtime's root, if any.
    pub fn runtime_of(&self, table: &ProcessTable, pid: u32) -> Option<RuntimeId> {
        table
            .ancestry(pid)
            .into_iter()
            .map(|p| RuntimeId {
                pid: p.pid,
                start: p.start,
            })
            .find(|id| self.runtimes.contains_key(id))
    }

    /// The closure a request from `pid` sees: its runtime's, or the empty view.
    pub fn route(&self, table: &ProcessTable, pid: u32) -> Arc<Closure> {
        match self.runtime_of(table, pid) {
            Some(id) => self.runtimes[&id].closure.clone(),
            None => self.empty.clone(),
        }
    }

    /// Removes every runtime none of whose processes is running any more:
    /// neither its root nor any process whose ancestry reaches the root.
    /// (A grandchild whose parent exited keeps a dangling parent pid and so
    /// loses its runtime, as in spfs; b3 starts runtimes with a long-lived
    /// root process to avoid that.) Returns the removed runtimes.
    pub fn reap(&mut self, table: &ProcessTable) -> Vec<(RuntimeId, Runtime)> {
        let mut alive: std::collections::HashSet<RuntimeId> = Default::default();
        for p in table.procs.values() {
            if let Some(id) = self.runtime_of(table, p.pid) {
                alive.insert(id);
            }
        }
        let dead: Vec<RuntimeId> = self
            .runtimes
            .keys()
            .filter(|id| !alive.contains(id))
            .copied()
            .collect();
        dead.into_iter()
            .filter_map(|id| self.runtimes.remove(&id).map(|r| (id, r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_vfs::odb::{Entry, Node, Odb};

    fn p(pid: u32, parent: u32, start: u64) -> ProcessInfo {
        ProcessInfo { pid, parent, start }
    }

    fn router() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let odb = Odb::open(dir.path()).unwrap();
        let (blob, size) = odb.put_blob(b"hi").unwrap();
        let top = odb
            .put_tree(&[Entry {
                name: b"f".to_vec(),
                node: Node::File {
                    executable: false,
                    size,
                    blob,
                },
            }])
            .unwrap();
        odb.set_root("aaaa-a", &top).unwrap();
        odb.set_root("bbbb-b", &top).unwrap();
        let mut r = Router::new(Closure::new(odb.clone(), Vec::<String>::new()));
        r.add(
            RuntimeId { pid: 10, start: 100 },
            Runtime {
                name: "one".into(),
                closure: Arc::new(Closure::new(odb.clone(), ["aaaa-a"])),
            },
        );
        r.add(
            RuntimeId { pid: 20, start: 200 },
            Runtime {
                name: "two".into(),
                closure: Arc::new(Closure::new(odb, ["bbbb-b"])),
            },
        );
        (dir, r)
    }

    fn names(c: &Closure) -> Vec<String> {
        let mut v: Vec<_> = c.names.iter().cloned().collect();
        v.sort();
        v
    }

    #[test]
    fn requests_route_to_the_runtime_of_the_nearest_root_ancestor() {
        let (_d, r) = router();
        let t = ProcessTable::new([
            p(1, 0, 1),
            p(10, 1, 100),
            p(11, 10, 110),
            p(12, 11, 120),
            p(20, 1, 200),
            p(21, 20, 210),
            p(30, 1, 300),
        ]);
        assert_eq!(names(&r.route(&t, 12)), ["aaaa-a"]);
        assert_eq!(names(&r.route(&t, 10)), ["aaaa-a"]);
        assert_eq!(names(&r.route(&t, 21)), ["bbbb-b"]);
        // Outside every runtime, or unknown: the empty view.
        assert!(r.route(&t, 30).names.is_empty());
        assert!(r.route(&t, 999).names.is_empty());
    }

    #[test]
    fn a_reused_parent_pid_does_not_join_a_runtime() {
        let (_d, r) = router();
        // 40's parent 10 exited; a new process reused pid 10 later (start
        // 500 > 40's start 150): the link is not trusted.
        let t = ProcessTable::new([p(10, 1, 500), p(40, 10, 150)]);
        assert!(r.route(&t, 40).names.is_empty());
        // The new process with the root's pid is not the root either.
        assert!(r.route(&t, 10).names.is_empty());
    }

    #[test]
    fn runtimes_are_reaped_when_all_their_processes_have_exited() {
        let (_d, mut r) = router();
        // Root 10 exited but its child 11 still runs; runtime two is gone.
        let t = ProcessTable::new([p(1, 0, 1), p(11, 10, 110)]);
        // 11's parent is missing, so its chain stops at itself: without
        // the root no process reaches runtime one either.
        let gone = r.reap(&t);
        assert_eq!(gone.len(), 2);
        let (_d2, mut r) = router();
        let t = ProcessTable::new([p(1, 0, 1), p(10, 1, 100), p(11, 10, 110)]);
        let gone: Vec<String> = r.reap(&t).into_iter().map(|(_, rt)| rt.name).collect();
        assert_eq!(gone, ["two"]);
        assert_eq!(r.runtimes().count(), 1);
    }

    #[test]
    fn parent_loops_end_the_walk() {
        let t = ProcessTable::new([p(5, 6, 50), p(6, 5, 50)]);
        assert_eq!(t.ancestry(5).len(), 2);
    }
}
