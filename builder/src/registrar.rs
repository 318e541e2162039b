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

use std::collections::{BTreeMap, BTreeSet};
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

/// Placed paths whose commit is queued or running, with their references.
#[derive(Default)]
struct Pending {
    paths: Mutex<BTreeMap<StorePath, BTreeSet<StorePath>>>,
    idle: Condvar,
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
                        state.remove(&paths);
                        done(r);
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
                p.insert(placed.path().clone(), placed.info().references.clone());
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
        self.state.remove(&paths);
        (back.1)(r);
    }

    /// Whether `p` is placed and its registration queued.
    pub(crate) fn is_pending(&self, p: &StorePath) -> bool {
        self.state.lock().contains_key(p)
    }

    /// The closure of `roots`, which may be registered or pending.
    pub(crate) fn closure(
        &self,
        store: &LocalStore,
        roots: &BTreeSet<StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        // Taken before the database is asked: a path leaves this map only
        // after it is registered, so whatever is not here is either in the
        // database or not valid at all.
        let pending = self.state.lock().clone();
        if pending.is_empty() {
            return store.query_closure_sync(roots);
        }
        let mut from_queue = BTreeSet::new();
        let mut from_db = BTreeSet::new();
        let mut todo: Vec<&StorePath> = roots.iter().collect();
        while let Some(p) = todo.pop() {
            match pending.get(p) {
                Some(refs) => {
                    if from_queue.insert(p.clone()) {
                        todo.extend(refs.iter().filter(|r| *r != p));
                    }
                }
                None => {
                    from_db.insert(p.clone());
                }
            }
        }
        let mut all = store.query_closure_sync(&from_db)?;
        all.extend(from_queue);
        Ok(all)
    }

    /// Waits until every queued commit is done (for steps that read their
    /// inputs' registrations, such as output checks on requisites).
    pub(crate) fn wait_idle(&self) {
        let mut p = self.state.lock();
        while !p.is_empty() {
            p = self.state.idle.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for every queued commit and ends the thread.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
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
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StorePath, BTreeSet<StorePath>>> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, paths: &[StorePath]) {
        let mut p = self.lock();
        for path in paths {
            p.remove(path);
        }
        if p.is_empty() {
            self.idle.notify_all();
        }
    }
}

/// Registers `c`'s outputs in order, then the derivation's output mapping;
/// on the first failure the outputs not yet registered are removed.
fn commit(store: &LocalStore, c: Commit) -> Result<(), RealiseError> {
    let Commit {
        drv_path,
        placed,
        outputs,
        locks,
    } = c;
    let mut rest = placed.into_iter();
    while let Some(p) = rest.next() {
        if let Err(e) = store.commit_adopted(p) {
            rest.for_each(|p| store.discard_adopted(p));
            return Err(e.into());
        }
    }
    store.register_derivation_outputs(&drv_path, &outputs)?;
    drop(locks);
    Ok(())
}
