//! Registration of built outputs, overlapped with the builds that follow.
//!
//! A build step ends once its outputs are in place: canonical, measured
//! and moved to their store paths with their final metadata (see
//! [`b3_store::local::LocalStore::place_adopted`]), their bytes final. What
//! is left, waiting for their flushes to reach the disk and registering
//! them (and the derivation's outputs) in the database, is a
//! [`Commit`] that the scheduler queues here, and the builds waiting for
//! those outputs start at once: they read the placed paths, whose closure
//! [`Registrar::closure`] answers from the queue where the database cannot
//! yet.
//!
//! Crash safety: one thread commits in the order the scheduler queued, and
//! the scheduler queues a build's commit before it starts the builds that
//! depend on it, so every path is registered after everything it refers
//! to (the database also checks, in the registering transaction, that each
//! reference is registered). A crash leaves a prefix of the queue
//! registered and the rest placed but unregistered, which the next add of
//! such a path or the sweep after a crash removes, as for any interrupted
//! add; nothing registered ever lacks its references or its bytes on disk.
//! A commit that fails removes its paths, and the commits of builds that
//! used them then fail on their missing references.
//!
//! The references of every path registered here are kept for the rest of
//! the realisation, so the closure of a build's inputs that were built in
//! the same realisation (a chain's every step) is walked in memory rather
//! than asked of the database each time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use b3_store::local::adopt::Placed;
use b3_store::local::LocalStore;
use b3_store::lock::FileLock;
use b3_store::path::StorePath;
use b3_store::traits::StoreError;

use crate::realise::RealiseError;

/// What is left of a successful build step: register its placed outputs.
#[derive(Debug)]
pub struct Commit {
    pub(crate) drv_path: StorePath,
    /// In registration order (an output after those it refers to).
    pub(crate) placed: Vec<Placed>,
    /// Every output of the derivation (name → path), for the derivation's
    /// output mapping.
    pub(crate) outputs: Vec<(String, StorePath)>,
    /// The build's locks on its outputs, released once they are registered
    /// (another process waiting for them then finds them valid).
    pub(crate) locks: Vec<FileLock>,
}

type Done = Box<dyn FnOnce(Result<Duration, RealiseError>) + Send>;

/// The commits of one realisation, done in order on a thread of its own;
/// see the module docs. Dropping it waits for the queued commits.
pub struct Registrar {
    tx: Mutex<Option<mpsc::Sender<(Commit, Done)>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    state: std::sync::Arc<Pending>,
}

/// Placed paths whose commit is queued or running, and the paths this
/// realisation registered, with their references.
#[derive(Default)]
struct Pending {
    paths: Mutex<Known>,
    idle: Condvar,
}

#[derive(Default)]
struct Known {
    /// Queued or being committed.
    pending: BTreeMap<StorePath, BTreeSet<StorePath>>,
    /// Registered by this realisation (valid paths' references never
    /// change).
    registered: HashMap<StorePath, BTreeSet<StorePath>>,
}

impl Known {
    fn references(&self, p: &StorePath) -> Option<&BTreeSet<StorePath>> {
        self.pending.get(p).or_else(|| self.registered.get(p))
    }
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registrar")
    }
}

impl Registrar {
    pub fn new(store: &LocalStore) -> Registrar {
        let state = std::sync::Arc::new(Pending::default());
        let (tx, rx) = mpsc::channel::<(Commit, Done)>();
        let worker = {
            let store = store.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name("b3-register".into())
                .spawn(move || {
                    // Registration overlaps the builds after it, which come
                    // first; it holds the database's write lock, so it must
                    // not starve either (not `Idle`). The store's flushing
                    // threads, which it waits for, keep their priority.
                    b3_store::os::yield_to_foreground(b3_store::os::Background::Low);
                    let mut since_checkpoint = 0;
                    for (c, done) in rx {
                        let started = Instant::now();
                        let paths: Vec<StorePath> =
                            c.placed.iter().map(|p| p.path().clone()).collect();
                        // A panic must still report (the scheduler waits
                        // for every commit it queued).
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            commit(&store, c)
                        }))
                        .unwrap_or_else(|_| {
                            Err(StoreError::Other("the registering thread panicked".into()).into())
                        })
                        .map(|()| started.elapsed());
                        state.settle(&paths, r.is_ok());
                        done(r);
                        since_checkpoint += 1;
                        if since_checkpoint >= CHECKPOINT_EVERY && state.lock().pending.is_empty() {
                            checkpoint(&store);
                            since_checkpoint = 0;
                        }
                    }
                    // Queue closed (see `close`): what the last commits
                    // wrote goes too, while the realisation ends its pool.
                    if since_checkpoint > 0 {
                        checkpoint(&store);
                    }
                })
                .ok()
        };
        Registrar {
            tx: Mutex::new(worker.as_ref().map(|_| tx)),
            worker: Mutex::new(worker),
            state,
        }
    }

    /// Queues `c`; `done` gets its outcome (and how long it took) on the
    /// registering thread. The placed paths count as pending (see
    /// [`Self::is_pending`]) from now until they are registered or given
    /// up. Without a thread, commits at once.
    pub(crate) fn submit(
        &self,
        store: &LocalStore,
        c: Commit,
        done: impl FnOnce(Result<Duration, RealiseError>) + Send + 'static,
    ) {
        let paths: Vec<StorePath> = c.placed.iter().map(|p| p.path().clone()).collect();
        {
            let mut p = self.state.lock();
            for placed in &c.placed {
                p.pending
                    .insert(placed.path().clone(), placed.info().references.clone());
            }
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let back = match tx.as_ref() {
            Some(tx) => match tx.send((c, Box::new(done))) {
                Ok(()) => return,
                Err(mpsc::SendError((c, done))) => (c, done),
            },
            None => (c, Box::new(done) as Done),
        };
        drop(tx);
        let started = Instant::now();
        let r = commit(store, back.0).map(|()| started.elapsed());
        self.state.settle(&paths, r.is_ok());
        (back.1)(r);
    }

    /// Whether `p` is placed and queued, or registered here: valid (or
    /// about to be) without asking the database. A path registered here
    /// stays valid: its registration made it a temporary root of this
    /// process, which no collector deletes.
    pub(crate) fn is_pending_or_registered(&self, p: &StorePath) -> bool {
        let state = self.state.lock();
        state.pending.contains_key(p) || state.registered.contains_key(p)
    }

    /// The closure of `roots`, which may be registered or pending.
    pub(crate) fn closure(
        &self,
        store: &LocalStore,
        roots: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        // Walked under the lock, before the database is asked: a path
        // leaves `pending` only for `registered` or for good, so whatever
        // is in neither is either in the database or not valid at all.
        let mut known = BTreeSet::new();
        let mut from_db = BTreeSet::new();
        {
            let state = self.state.lock();
            let mut todo: Vec<&StorePath> = roots.iter().collect();
            while let Some(p) = todo.pop() {
                match state.references(p) {
                    Some(refs) => {
                        if known.insert(p.clone()) {
                            todo.extend(refs.iter().filter(|r| *r != p));
                        }
                    }
                    None => {
                        from_db.insert(p.clone());
                    }
                }
            }
        }
        if from_db.is_empty() {
            return Ok(known);
        }
        let mut all = store.query_closure_sync(&from_db)?;
        all.extend(known);
        Ok(all)
    }

    /// Waits until every queued commit is done (for steps that read their
    /// inputs' registrations, such as output checks on requisites).
    pub(crate) fn wait_idle(&self) {
        let mut p = self.state.lock();
        while !p.pending.is_empty() {
            p = self.state.idle.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes no more commits: the thread ends after the queued ones (and
    /// a last checkpoint), without waiting for it here (see `finish`).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Waits for every queued commit and ends the thread.
    pub fn finish(&self) {
        self.close();
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `paths` are no longer pending: registered (`ok`) or given up (any of
    /// them may then be missing, so the database answers for all).
    fn settle(&self, paths: &[StorePath], ok: bool) {
        let mut p = self.lock();
        for path in paths {
            if let Some(refs) = p.pending.remove(path) {
                if ok {
                    p.registered.insert(path.clone(), refs);
                }
            }
        }
        if p.pending.is_empty() {
            self.idle.notify_all();
        }
    }
}

/// After this many commits, once none is queued, the registering thread
/// has the store copy its write-ahead log into the database (about eight
/// pages a build): the builds after them go on meanwhile, and the close at
/// the end of the process, which the user waits for, finds little left to
/// sync (see [`LocalStore::checkpoint_wal`]).
const CHECKPOINT_EVERY: usize = 8;

/// See [`CHECKPOINT_EVERY`]. A checkpoint that fails changes nothing: the
/// WAL stays as it was, for the next one or the close.
fn checkpoint(store: &LocalStore) {
    if let Err(e) = store.checkpoint_wal() {
        tracing::debug!("checkpointing the store's WAL: {e}");
    }
}

/// Registers `c`'s outputs and the derivation's output mapping in one
/// transaction; on failure none is registered and all are removed.
fn commit(store: &LocalStore, c: Commit) -> Result<(), RealiseError> {
    let Commit {
        drv_path,
        placed,
        outputs,
        locks,
    } = c;
    store.commit_built(placed, &drv_path, &outputs)?;
    drop(locks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::local::LocalStoreConfig;
    use b3_store::traits::ValidPathInfo;

    fn path_of(s: &LocalStore, c: char, name: &str) -> StorePath {
        let text = format!("{}/{}-{name}", s.store_dir(), c.to_string().repeat(32));
        s.store_dir().parse(&text).unwrap()
    }

    /// Places a one-file output at `path` that names `refs`.
    fn place(s: &LocalStore, path: &StorePath, refs: &[&StorePath]) -> Placed {
        let work = s.real_store_dir().join(format!(
            ".b3-tmp-{}-reg-{}",
            std::process::id(),
            path.hash_part()
        ));
        std::fs::create_dir_all(&work).unwrap();
        let out = work.join("out");
        let text: String = refs.iter().map(|r| s.print_path(r) + "\n").collect();
        std::fs::write(&out, text).unwrap();
        let hashes: Vec<String> = refs.iter().map(|r| r.hash_part()).collect();
        let prepared = s.prepare_adoption(&out, hashes.iter()).unwrap();
        let mut info = ValidPathInfo::new(path.clone(), prepared.nar_hash(), prepared.nar_size());
        info.references = refs.iter().map(|r| (*r).clone()).collect();
        let pending: BTreeSet<StorePath> = refs.iter().map(|r| (*r).clone()).collect();
        s.place_adopted(prepared, &info, &|r| pending.contains(r))
            .unwrap()
            .unwrap()
    }

    fn commit_of(s: &LocalStore, drv: char, placed: Placed) -> Commit {
        let out = placed.path().clone();
        let text = format!("a derivation {drv}");
        let drv_path = s
            .add_text_sync(&format!("{drv}.drv"), text.as_bytes(), &BTreeSet::new())
            .unwrap();
        Commit {
            drv_path,
            placed: vec![placed],
            outputs: vec![("out".into(), out)],
            locks: Vec::new(),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn registration_gives_way_to_the_builds_but_is_not_left_idle() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(LocalStoreConfig::new(d.path().join("root"))).unwrap();
        let reg = Registrar::new(&s);
        let a = path_of(&s, 'a', "a");
        let (tx, rx) = std::sync::mpsc::channel();
        // The report runs on the registering thread.
        reg.submit(&s, commit_of(&s, 'f', place(&s, &a, &[])), move |r| {
            // SAFETY: both calls only read the calling thread's settings.
            let seen = unsafe {
                (
                    libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t),
                    libc::sched_getscheduler(0),
                )
            };
            let _ = tx.send((r.is_ok(), seen));
        });
        let (ok, (nice, policy)) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        reg.finish();
        assert!(ok);
        assert_eq!((nice, policy), (19, libc::SCHED_OTHER));
    }

    #[test]
    fn registrations_reach_the_database_file_itself_before_the_store_closes() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(LocalStoreConfig::new(d.path().join("root"))).unwrap();
        let reg = Registrar::new(&s);
        let a = path_of(&s, 'a', "a");
        let b = path_of(&s, 'b', "b");
        reg.submit(&s, commit_of(&s, 'f', place(&s, &a, &[])), |r| {
            assert!(r.is_ok())
        });
        reg.submit(&s, commit_of(&s, 'h', place(&s, &b, &[&a])), |r| {
            assert!(r.is_ok())
        });
        reg.close();
        reg.finish();
        // The store is still open, so nothing has checkpointed at a close:
        // the database file alone, read without its WAL, has them only if
        // the registering thread checkpointed before it ended.
        let file = d.path().join("root/nix/var/b3/db.sqlite");
        let copy = d.path().join("copy.sqlite");
        std::fs::copy(&file, &copy).unwrap();
        let db = b3_store::local::db::Db::open(&copy, s.store_dir().as_str()).unwrap();
        for p in [&a, &b] {
            assert!(
                db.is_valid(&s.print_path(p)).unwrap(),
                "{p:?} only in the WAL"
            );
        }
    }

    #[test]
    fn closures_of_paths_registered_here_match_the_database_and_failed_ones_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(LocalStoreConfig::new(d.path().join("root"))).unwrap();
        let reg = Registrar::new(&s);
        let a = path_of(&s, 'a', "a");
        let b = path_of(&s, 'b', "b");
        let c = path_of(&s, 'c', "c");
        // Each commit's outcome, in order (the registering thread reports
        // after it has settled the paths, so waiting for idle is not
        // enough to see the report).
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let report = |tx: &std::sync::mpsc::Sender<bool>| {
            let tx = tx.clone();
            move |r: Result<Duration, RealiseError>| {
                let _ = tx.send(r.is_ok());
            }
        };
        reg.submit(&s, commit_of(&s, 'f', place(&s, &a, &[])), report(&tx));
        reg.submit(&s, commit_of(&s, 'h', place(&s, &b, &[&a])), report(&tx));
        // While pending or registered, the closure is the same.
        let roots = BTreeSet::from([b.clone()]);
        assert_eq!(
            reg.closure(&s, &roots).unwrap(),
            BTreeSet::from([a.clone(), b.clone()])
        );
        assert!(
            rx.recv().unwrap() && rx.recv().unwrap(),
            "both commits succeed"
        );
        assert_eq!(
            reg.closure(&s, &roots).unwrap(),
            s.query_closure_sync(&roots).unwrap()
        );

        // C refers to a path that is given up before C's commit: C's commit
        // fails and its closure is no longer answered from memory (the
        // database does not know C, so asking is an error).
        let gone = path_of(&s, 'g', "gone");
        let placed_gone = place(&s, &gone, &[]);
        reg.state
            .lock()
            .pending
            .insert(gone.clone(), BTreeSet::new());
        let placed_c = place(&s, &c, &[&gone]);
        s.discard_adopted(placed_gone);
        reg.state.settle(std::slice::from_ref(&gone), false);
        reg.submit(&s, commit_of(&s, 'i', placed_c), report(&tx));
        assert!(!rx.recv().unwrap(), "the commit of C fails");
        assert!(!s.is_valid_sync(&c).unwrap());
        assert!(reg.closure(&s, &BTreeSet::from([c.clone()])).is_err());
        // The registered ones are still answered, and known valid without
        // the database; the failed and given-up ones are not.
        assert!(reg.is_pending_or_registered(&a) && reg.is_pending_or_registered(&b));
        assert!(!reg.is_pending_or_registered(&c) && !reg.is_pending_or_registered(&gone));
        assert_eq!(reg.closure(&s, &roots).unwrap(), BTreeSet::from([a, b]));
    }
}
