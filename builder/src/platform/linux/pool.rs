//! Pre-made sandboxes: most of a sandbox's set-up is taken off the build's
//! critical path.
//!
//! Creating the namespaces (the network namespace above all) and laying out
//! the root (tmpfs, `/dev`, `/proc`, `/etc`, `/tmp`, the extra sandbox
//! paths) depends only on settings every build of a realisation shares, not
//! on the build. A [`Pool`] keeps up to `size` sandbox processes that have
//! done exactly that (the steps of [`super::plan::prepare_pooled`]): they
//! have stacked their host layers on the store directory (the physical
//! store read-only, the work directories' parent writable, each kept open
//! as a descriptor), pivoted into the root and detached the host's mounts,
//! and they wait. A build takes one and sends it the address of its late
//! steps ([`super::plan::prepare_pooled_late`]): make its inputs' mount
//! points, cover the host layers with its store layer, bind its inputs and
//! `/build` through the descriptors; then the process drops its ids and
//! executes the builder as a fresh sandbox's does. Nothing is unmounted on
//! the build's way (an unmount waits for an RCU grace period). One
//! or two background threads refill the pool while builds run. Every sandbox
//! serves one build: its namespaces, `/tmp` and processes die with it, as a
//! fresh sandbox's do.
//!
//! The waiting process shares the parent's memory (`CLONE_VM`, as
//! `posix_spawn` does), so the late steps need no encoding: the parent
//! writes the address of a [`ChildPlan`] it keeps alive until the child is
//! reaped. The child runs only async-signal-safe code on its own stack; it
//! shares the filling thread's `errno` slot, which can only blur the error
//! number of a failed set-up report. Its death signal is tied to the
//! filling thread, which lives as long as the pool, and the pool outlives
//! every build that uses it (each holds a reference).
//!
//! A pool serves specs with the *template* it was last offered: same store
//! directories, work directories' parent, extra paths (none inside the
//! store) and `/dev/kvm`, no network. Anything else (fixed-output builds,
//! builds through a vfs view) gets a fresh sandbox.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::child::{self, ChildPlan, WarmPlan};
use super::keeper::Keeper;
use super::netns::{Host, NetLease, NetRing};
use super::{
    clone_flags, clone_sandbox, hand_over, hold_namespaces, id_mapping, kill, pipe, plan,
    read_report, seccomp_filter, step_error, wait, write_id_maps, Held, SandboxedChild, Stack,
};
use crate::platform::{OsError, OsErrorKind, Pid};
use crate::sandbox::{SandboxError, SandboxPath, SandboxSpec, SANDBOX_GID, SANDBOX_UID};

/// What the early steps depend on: specs with equal keys can share
/// pre-made sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    logical_store_dir: String,
    physical_store_dir: PathBuf,
    extra_paths: Vec<SandboxPath>,
    kvm: bool,
    /// The directory holding the build's work directory (see
    /// [`plan::HostLayers`]).
    work_parent: PathBuf,
}

impl Key {
    fn of(spec: &SandboxSpec) -> Option<Key> {
        if spec.network {
            return None;
        }
        // Bound late and from the host, which a pre-made sandbox has left.
        let in_store = |p: &SandboxPath| {
            p.target
                .strip_prefix(spec.logical_store_dir.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if spec.extra_paths.iter().any(in_store) {
            return None;
        }
        // The build's directories are reached under one parent.
        let work_parent = spec.store_dir_host.parent()?.parent()?.to_path_buf();
        let under = |p: &Path| p.starts_with(&work_parent) && p != work_parent;
        if !under(&spec.build_dir) || !spec.scratch_dir.as_deref().is_none_or(under) {
            return None;
        }
        Some(Key {
            logical_store_dir: spec.logical_store_dir.clone(),
            physical_store_dir: spec.physical_store_dir.clone(),
            extra_paths: spec.extra_paths.clone(),
            kvm: spec.kvm,
            work_parent,
        })
    }
}

/// Pre-made sandboxes for the builds of one realisation; see the module
/// docs. Dropping it ends the waiting processes and removes its directory.
pub struct Pool {
    shared: Arc<Shared>,
    fillers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    size: usize,
    /// Mount point of the pooled sandboxes' roots (each in its own mount
    /// namespace, so one directory serves them all).
    dir: PathBuf,
    /// Whether `dir` is this pool's own, removed when it is dropped.
    own_dir: bool,
    served: AtomicU64,
    /// How many sandboxes were made.
    made: AtomicU64,
    /// How many builds are still to start (see [`Pool::set_demand`]);
    /// `usize::MAX` until someone says.
    demand: AtomicUsize,
    /// The kinds of the inputs its sandboxes exposed.
    kinds: plan::KindCache,
    /// The network namespaces its sandboxes take in turn.
    net: Arc<NetRing>,
    /// Without root, the process that makes them and clones the sandboxes
    /// into them; held while a filler uses it.
    keeper: Mutex<KeeperState>,
}

/// Whether a pool has a [`Keeper`].
#[derive(Default)]
enum KeeperState {
    #[default]
    Untried,
    Running(Keeper),
    /// It could not be started: sandboxes make their own namespaces.
    Unavailable,
}

impl KeeperState {
    /// The keeper, started on first use.
    fn get(&mut self) -> Option<&Keeper> {
        if matches!(self, KeeperState::Untried) {
            *self = match Keeper::start() {
                Ok(k) => KeeperState::Running(k),
                Err(_) => KeeperState::Unavailable,
            };
        }
        match self {
            KeeperState::Running(k) => Some(k),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    template: Option<(Key, SandboxSpec)>,
    warm: VecDeque<Warm>,
    /// Sandboxes being made, for these keys (one per busy filler).
    making: Vec<Key>,
    /// Why the pool stopped making sandboxes (their set-up failed).
    broken: Option<String>,
    stop: bool,
    /// The inputs of the last build taken here whose store is an overlay:
    /// the points new sandboxes make ahead of time (see `plan::Premade`).
    recent: Arc<Vec<String>>,
}

/// A waiting pre-made sandbox.
pub(crate) struct Warm {
    /// First, so that it is dropped first: the child, which reads `parts`,
    /// is gone before they are.
    guard: Guard,
    key: Key,
    go: Option<OwnedFd>,
    err_r: OwnedFd,
    log_r: OwnedFd,
    parts: Box<WarmParts>,
}

/// Ends and reaps a pre-made sandbox's process unless it was handed over.
struct Guard {
    pid: Pid,
    handed_over: bool,
    /// Held as a build's would be (see `hold_namespaces`).
    namespaces: Vec<OwnedFd>,
}

struct WarmParts {
    plan: WarmPlan,
    stack: Stack,
    /// Its descriptors to the host, for the late steps.
    host: plan::HostLayers,
    /// The points its store's lower layer has already.
    premade: plan::Premade,
    /// Its network namespace, if kept for later sandboxes: given back
    /// when this is dropped, after the process is reaped.
    _net: Option<NetLease>,
}

// SAFETY: the raw pointers in the plans point into strings the same
// structure owns; nothing mutates them after the child was started.
unsafe impl Send for WarmParts {}

/// What a build's sandbox process may still read: kept until it is reaped.
pub(crate) struct InUse {
    _warm: Box<WarmParts>,
    _late: Box<ChildPlan>,
}

// SAFETY: as for WarmParts.
unsafe impl Send for InUse {}

impl std::fmt::Debug for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InUse")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.handed_over {
            let _ = kill(self.pid);
            let _ = wait(self.pid);
        }
        super::release_later(std::mem::take(&mut self.namespaces));
    }
}

impl Pool {
    /// A pool keeping up to `size` sandboxes ready, their roots mounted on
    /// `dir` (created when first needed, removed on drop; put it where the
    /// store sweeps leftovers of dead processes).
    pub fn new(size: usize, dir: PathBuf) -> Pool {
        Pool::with_dir(size, dir, true)
    }

    /// A pool whose sandboxes mount their roots on `dir`, which other
    /// pools (of this process or others) may use at the same time: made
    /// if absent, never removed (see [`crate::sandbox::SandboxPool`]).
    pub fn with_shared_root(size: usize, dir: PathBuf) -> Pool {
        Pool::with_dir(size, dir, false)
    }

    fn with_dir(size: usize, dir: PathBuf, own_dir: bool) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                size: size.max(1),
                dir,
                own_dir,
                served: AtomicU64::new(0),
                made: AtomicU64::new(0),
                demand: AtomicUsize::new(usize::MAX),
                kinds: plan::KindCache::default(),
                net: Arc::default(),
                keeper: Mutex::default(),
            }),
            fillers: Mutex::new(Vec::new()),
        }
    }

    /// How many builds ran in a pre-made sandbox.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// How many sandboxes it made (served or not).
    pub fn made(&self) -> u64 {
        self.shared.made.load(Ordering::Relaxed)
    }

    /// How many network namespaces its sandboxes were made in, and how
    /// many times one was taken again (see [`NetRing`]).
    pub fn network_namespaces(&self) -> (u64, u64) {
        self.shared.net.counts()
    }

    /// Tells the pool how many builds are still to start: it keeps at most
    /// that many sandboxes ready (and never more than its size), so that a
    /// realisation does not make sandboxes nobody will use (none at all for
    /// a single build, which takes a fresh one).
    pub fn set_demand(&self, builds: usize) {
        let _st = self.shared.lock();
        let before = self.shared.demand.swap(builds, Ordering::Relaxed);
        if builds > before {
            self.shared.changed.notify_all();
        }
    }

    /// Waits until a sandbox for the current template (that of the last
    /// build offered one) is ready. An error says why none can be made.
    pub fn wait_ready(&self) -> Result<(), SandboxError> {
        let mut st = self.shared.lock();
        loop {
            if let Some(why) = &st.broken {
                return Err(SandboxError::Setup(OsError::new(
                    why.clone(),
                    OsErrorKind::Other,
                )));
            }
            let Some((key, _)) = &st.template else {
                return Err(SandboxError::InvalidSpec(
                    "no build has used the pool yet".into(),
                ));
            };
            if st.warm.iter().any(|w| &w.key == key) {
                return Ok(());
            }
            st = self.shared.wait(st);
        }
    }

    /// Starts making sandboxes for `template` before any build asks, so
    /// that a realisation's first build can take one (made while the rest
    /// of the realisation is planned). Specs no pool serves are ignored.
    pub fn warm_up(&self, template: &SandboxSpec) {
        if let Some(key) = Key::of(template) {
            drop(self.offer(template, &key));
        }
    }

    /// A ready sandbox for `spec`, if there is one or one is about to be;
    /// otherwise `spec` becomes the template for the next builds.
    pub(crate) fn take(&self, spec: &SandboxSpec) -> Option<Warm> {
        let key = Key::of(spec)?;
        let mut st = self.offer(spec, &key);
        if spec.scratch_dir.is_some() && st.recent.as_slice() != spec.inputs.as_slice() {
            st.recent = Arc::new(spec.inputs.clone());
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if st.broken.is_some() || st.stop {
                return None;
            }
            if let Some(i) = st.warm.iter().position(|w| w.key == key) {
                // The fillers hear of it once this build's builder runs
                // (see `spawn_in`): woken now, one would take this thread's
                // CPU (measured: up to 1.2 ms) while its build waits.
                return st.warm.remove(i);
            }
            // One being made is ready sooner than a fresh one would be.
            if !st.making.contains(&key) || Instant::now() >= deadline {
                return None;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline.saturating_duration_since(Instant::now()))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Sets the template to `spec` (if it differs) and starts the fillers.
    fn offer(&self, spec: &SandboxSpec, key: &Key) -> MutexGuard<'_, State> {
        let mut st = self.shared.lock();
        if st.template.as_ref().map(|(k, _)| k) != Some(key) {
            let mut t = spec.clone();
            // The template must not keep its pool (or a realisation's
            // cancel signal) alive.
            t.pool = None;
            t.cancel = None;
            st.template = Some((key.clone(), t));
            st.warm.retain(|w| &w.key == key);
            self.shared.changed.notify_all();
        }
        let mut fillers = self.fillers.lock().unwrap_or_else(|e| e.into_inner());
        while fillers.len() < self.shared.size.min(FILLERS) {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("b3-sandbox-pool".into())
                .spawn(move || fill(&shared))
            {
                Ok(f) => fillers.push(f),
                Err(e) => {
                    if fillers.is_empty() {
                        st.broken = Some(format!("starting the sandbox pool: {e}"));
                    }
                    break;
                }
            }
        }
        st
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        let fillers = std::mem::take(&mut *self.fillers.lock().unwrap_or_else(|e| e.into_inner()));
        for f in fillers {
            let _ = f.join();
        }
        if self.shared.own_dir {
            let _ = std::fs::remove_dir(&self.shared.dir);
        }
    }
}

/// How many threads make sandboxes at most (never more than the pool's
/// size). Parallel builds take sandboxes faster than one thread makes them
/// (a sandbox's early steps wait for the kernel: the new network namespace,
/// the detach of the host's mounts), and a build that waits for one being
/// made waits for all of that.
const FILLERS: usize = 2;

/// A filling thread: keeps `size` sandboxes of the template ready, with
/// the other fillers.
fn fill(shared: &Shared) {
    loop {
        let (key, spec, recent) = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    // Its children die with this thread (their death
                    // signal); end them now rather than by surprise.
                    st.warm.clear();
                    return;
                }
                let wanted = shared.size.min(shared.demand.load(Ordering::Relaxed));
                let want = st.broken.is_none() && st.warm.len() + st.making.len() < wanted;
                if let (true, Some((k, s))) = (want, &st.template) {
                    let job = (k.clone(), s.clone(), st.recent.clone());
                    st.making.push(job.0.clone());
                    break job;
                }
                st = shared.wait(st);
            }
        };
        let made = make(shared, &key, &spec, &recent);
        if made.is_ok() {
            shared.made.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = shared.lock();
        if let Some(i) = st.making.iter().position(|k| k == &key) {
            st.making.swap_remove(i);
        }
        match made {
            Ok(w) => {
                let current = st.template.as_ref().map(|(k, _)| k) == Some(&key);
                if current && !st.stop {
                    st.warm.push_back(w);
                }
            }
            Err(e) => st.broken = Some(e.to_string()),
        }
        shared.changed.notify_all();
    }
}

/// Starts one sandbox process and waits until its early steps are done.
fn make(
    shared: &Shared,
    key: &Key,
    template: &SandboxSpec,
    recent: &[String],
) -> Result<Warm, SandboxError> {
    let dir = shared.dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| {
        SandboxError::Setup(OsError::from_io(format!("creating {}", dir.display()), &e))
    })?;
    let ids = id_mapping();
    let chown_to = ids.root_mode.then_some((SANDBOX_UID, SANDBOX_GID));

    let (sync_r, sync_w) = pipe().map_err(SandboxError::Setup)?;
    let (err_r, err_w) = pipe().map_err(SandboxError::Setup)?;
    let (log_r, log_w) = pipe().map_err(SandboxError::Setup)?;
    let (go_r, go_w) = pipe().map_err(SandboxError::Setup)?;
    // The child keeps only its error and go pipes (see `warm_main`), so the
    // numbers above both are free for its host layers.
    let base = err_w.as_raw_fd().max(go_r.as_raw_fd()) + 1;
    let host = plan::HostLayers {
        lower: base,
        stage: base + 1,
        work: base + 2,
        work_parent: key.work_parent.clone(),
    };
    // The sandbox gets a namespace of the ring: as root, this thread joins
    // it and clones the sandbox; without root, the keeper does both (held
    // until it has, so that no other filler moves it meanwhile).
    let mut keeper_state =
        (!ids.root_mode).then(|| shared.keeper.lock().unwrap_or_else(|e| e.into_inner()));
    let keeper = keeper_state.as_deref_mut().and_then(KeeperState::get);
    let net_host = match (ids.root_mode, keeper) {
        (true, _) => Some(Host::ThisThread),
        (false, Some(k)) => Some(Host::Keeper(k)),
        (false, None) => None,
    };
    let lease = net_host.and_then(|h| shared.net.enter(h));
    let keeper = keeper.filter(|_| lease.is_some());
    let (network, mut flags) = match lease {
        Some(_) => (
            plan::NetSetup::Kept,
            clone_flags(false) & !libc::CLONE_NEWNET,
        ),
        None => (plan::NetSetup::Own, clone_flags(false)),
    };
    flags |= libc::CLONE_VM;
    let mut early_ops = plan::prepare_pooled(template, dir, &host, chown_to, network)?;
    let premade = plan::premade_kinds(&template.physical_store_dir, recent);
    early_ops.extend(plan::premade_points(&premade, host.lower, chown_to)?);
    let stdin = std::fs::File::open("/dev/null")
        .map_err(|e| SandboxError::Setup(OsError::from_io("opening /dev/null", &e)))?;
    let mut early = ChildPlan {
        ops: early_ops,
        argv: Vec::new(),
        envp: Vec::new(),
        builder: c"/".into(),
        argv_owned: Vec::new(),
        envp_owned: Vec::new(),
        uid: SANDBOX_UID,
        gid: SANDBOX_GID,
        drop_groups: ids.root_mode,
        seccomp: seccomp_filter()?,
        sync_read: sync_r.as_raw_fd(),
        sync_write: sync_w.as_raw_fd(),
        err_write: err_w.as_raw_fd(),
        log_write: log_w.as_raw_fd(),
        stdin: stdin.as_raw_fd(),
    };
    early.fill_pointers();
    let parts = Box::new(WarmParts {
        plan: WarmPlan {
            early,
            go_read: go_r.as_raw_fd(),
        },
        stack: Stack::new()?,
        host,
        premade,
        _net: lease,
    });
    let top = parts.stack.top();
    let arg = (&parts.plan as *const WarmPlan) as *mut libc::c_void;
    // SAFETY: the child shares our memory (CLONE_VM): `parts` (its plan and
    // stack) is kept alive, unchanged, until the child is reaped (`Warm`,
    // then `InUse`); it runs only async-signal-safe code (see child.rs).
    let pid = unsafe {
        match keeper {
            Some(k) => k.clone_sandbox(top, flags, arg),
            None => clone_sandbox(child::warm_main, top, flags, arg),
        }
    }?;
    // The keeper mapped the ids of what it cloned.
    let mapped = keeper.is_some();
    drop(keeper_state);
    // The child's ends (it has its own descriptor table).
    drop(sync_r);
    drop(err_w);
    drop(log_w);
    drop(go_r);
    drop(stdin);
    let mut warm = Warm {
        guard: Guard {
            pid: Pid(pid),
            handed_over: false,
            namespaces: hold_namespaces(pid),
        },
        key: key.clone(),
        go: Some(go_w),
        err_r,
        log_r,
        parts,
    };
    if !mapped {
        write_id_maps(pid, ids).map_err(SandboxError::Setup)?;
    }
    let mut sync_file = std::fs::File::from(sync_w);
    sync_file
        .write_all(&[1])
        .map_err(|e| SandboxError::Setup(OsError::from_io("starting the sandbox", &e)))?;
    drop(sync_file);
    match read_report(warm.err_r.as_raw_fd())? {
        Some((child::STEP_READY, _)) => Ok(warm),
        Some((step, errno)) => Err(step_error(
            step,
            errno,
            &warm.parts.plan.early.ops,
            &template.builder,
        )),
        None => {
            warm.guard.handed_over = true;
            let _ = wait(warm.guard.pid);
            Err(SandboxError::Setup(OsError::new(
                "a pre-made sandbox ended during its set-up",
                OsErrorKind::Other,
            )))
        }
    }
}

/// Runs `spec`'s build in the pre-made sandbox `warm`.
pub(super) fn spawn_in(
    spec: &SandboxSpec,
    mut warm: Warm,
    started: Instant,
) -> Result<SandboxedChild, SandboxError> {
    let shared = spec.pool.as_ref().map(|p| p.platform().shared.clone());
    let _refill = Refill(shared.clone());
    let ids = id_mapping();
    hand_over(spec, ids).map_err(SandboxError::Setup)?;
    let chown_to = ids.root_mode.then_some((SANDBOX_UID, SANDBOX_GID));
    let no_cache = plan::KindCache::default();
    let kinds = shared.as_ref().map_or(&no_cache, |s| &s.kinds);
    let prepared =
        plan::prepare_pooled_late(spec, &warm.parts.host, &warm.parts.premade, kinds, chown_to)?;
    let early = &warm.parts.plan.early;
    let mut late = Box::new(ChildPlan {
        ops: prepared.late,
        argv: Vec::new(),
        envp: Vec::new(),
        builder: prepared.builder,
        argv_owned: prepared.argv,
        envp_owned: prepared.envp,
        uid: early.uid,
        gid: early.gid,
        drop_groups: early.drop_groups,
        seccomp: early.seccomp.clone(),
        sync_read: -1,
        sync_write: -1,
        // The same descriptor number in the child's table.
        err_write: early.err_write,
        log_write: -1,
        stdin: -1,
    });
    late.fill_pointers();

    warm.guard.handed_over = true;
    let mut child = SandboxedChild {
        pid: warm.guard.pid,
        log: None,
        started,
        setup_time: Duration::ZERO,
        timeout: spec.timeout,
        max_silent: spec.max_silent,
        cancel: spec.cancel.clone(),
        reaped: false,
        held: Held {
            namespaces: std::mem::take(&mut warm.guard.namespaces),
            pooled: None,
        },
    };
    let addr = (&*late as *const ChildPlan) as usize;
    let sent = match warm.go.take() {
        Some(go) => std::fs::File::from(go).write_all(&addr.to_le_bytes()),
        None => Err(std::io::ErrorKind::BrokenPipe.into()),
    };
    let Warm {
        err_r,
        log_r,
        parts,
        ..
    } = warm;
    child.log = Some(log_r);
    // `parts` and `late` stay alive until the child is reaped: on the
    // error paths below it is killed and reaped before they are dropped.
    if let Err(e) = sent {
        let _ = child.kill_and_reap();
        return Err(SandboxError::Setup(OsError::from_io(
            "starting a pre-made sandbox",
            &e,
        )));
    }
    let report = read_report(err_r.as_raw_fd());
    child.setup_time = started.elapsed();
    match report {
        Ok(None) => {}
        Ok(Some((step, errno))) => {
            let _ = child.kill_and_reap();
            return Err(step_error(step, errno, &late.ops, &spec.builder));
        }
        Err(e) => {
            let _ = child.kill_and_reap();
            return Err(e);
        }
    }
    child.held.pooled = Some(InUse {
        _warm: parts,
        _late: late,
    });
    if let Some(pool) = &spec.pool {
        pool.platform()
            .shared
            .served
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(child)
}

/// Tells the fillers that a sandbox was taken, when dropped: at the end of
/// [`spawn_in`], once the build's builder runs (or its set-up failed).
struct Refill(Option<Arc<Shared>>);

impl Drop for Refill {
    fn drop(&mut self) {
        if let Some(shared) = &self.0 {
            shared.changed.notify_all();
        }
    }
}
