//! The scheduler: realises a set of derivation goals by walking their
//! graph and running the missing work in dependency order, in parallel.
//!
//! Each derivation is one node. A node whose wanted outputs are valid is
//! done at once. Otherwise, if a substituter claims every missing output,
//! the node is substituted *without* looking at its inputs; if that fails
//! (or nothing claims the outputs) its input derivations become nodes too
//! and it is built once they are done. Builds run on their own threads, at
//! most `max_jobs` at a time (substitutions: `max_substitution_jobs`); the
//! per-output locks in [`crate::step`] make a derivation that another
//! process is building wait for it and then count as done.
//!
//! Failures follow Nix: a failed node fails the nodes waiting for it
//! (`N dependencies of derivation '…' failed to build`); without
//! `keep_going` nothing new is started after the first failure (running
//! builds finish) and waiting nodes fail at once; errors of nodes that
//! others wait for are logged as they happen, those of the requested goals
//! are returned in the [`RealiseReport`]. Progress goes to the logger as
//! Nix's `Realise`/`Builds`/`CopyPaths` activities, so `--log-format
//! internal-json` consumers (nix-output-monitor) can follow it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use b3_store::activity::{Activity, ActivityType, Logger, Verbosity};
use b3_store::derivation::Derivation;
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::traits::StoreError;

use crate::buildlog::RawLog;
use crate::drv::DrvJobError;
use crate::job::{Trash, WorkDirStock};
use crate::platform::Cancel;
use crate::realise::{read_derivation, RealiseError, RealiseSettings};
use crate::registrar::Registrar;
use crate::sandbox::{SandboxPool, SandboxSpec};
use crate::step::{build_locks, build_step, substitute_step, work_prefix, StepCtx, StepDone};
use crate::timing::Timeline;
use crate::workers::{Job, Workers};

/// One thing asked for: outputs (all if empty) of a derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub drv: StorePath,
    pub outputs: BTreeSet<String>,
    /// Rebuild the (valid) outputs and compare (`--check`).
    pub check: bool,
}

/// A finished build, for statistics and benchmarks.
#[derive(Debug, Clone)]
pub struct BuiltDrv {
    pub drv: StorePath,
    pub setup: Duration,
    pub total: Duration,
    /// Where the step's wall time went, phase by phase (the first,
    /// `start`, is the scheduler's: from deciding to run the build until
    /// its worker began).
    pub timeline: Timeline,
}

/// What a realisation did.
#[derive(Debug)]
pub struct RealiseReport {
    /// Per goal, in order: the wanted outputs, or the goal's error (`None`:
    /// not attempted because another build failed first).
    pub goals: Vec<Result<BTreeMap<String, StorePath>, Option<RealiseError>>>,
    /// Derivations built here.
    pub built: Vec<BuiltDrv>,
    /// Derivations whose outputs were substituted.
    pub substituted: Vec<StorePath>,
    /// Derivations another process built while we waited for their lock.
    pub built_elsewhere: Vec<StorePath>,
    /// Derivations checked (`--check`) and found identical.
    pub checked: Vec<StorePath>,
    /// How many builds ran in a sandbox made ahead of time (the others'
    /// sandboxes were made when they started).
    pub premade_sandboxes: u64,
    /// How many sandboxes were made ahead of time (used or not).
    pub sandboxes_made: u64,
    /// How many network namespaces the sandboxes made ahead of time were
    /// made in, and how many times one was taken again
    /// ([`SandboxPool::network_namespaces`]).
    pub network_namespaces: (u64, u64),
    /// How many builds ran in a work directory an earlier build of this
    /// realisation had used (emptied in between, see
    /// [`WorkDirStock::recycle`]).
    pub reused_work_dirs: u64,
    /// How many builds ran on the scheduling thread itself, because
    /// nothing else could start before they ended (a chain's steps).
    pub builds_in_line: u64,
    /// Per build, how long registering its outputs took (waiting for their
    /// flushes, then the database), overlapped with the builds after it.
    pub registrations: Vec<Duration>,
    /// What the realisation waited for after its last build: the
    /// registrations still queued, ending the unused pre-made sandboxes,
    /// and the clean-up chores (removing work directories, writing logs).
    pub tail: Vec<(&'static str, Duration)>,
    /// Nix's failure bits (0x04 build failure, 0x01 timeout, 0x02 hash
    /// mismatch, 0x08 not deterministic).
    pub status_mask: u8,
    goal_names: Vec<String>,
    logger: Logger,
}

impl RealiseReport {
    /// Nix's exit status: 0 on success, `0x60 | mask` for build failures,
    /// 1 for other errors.
    pub fn exit_code(&self) -> u8 {
        if self.goals.iter().all(Result::is_ok) {
            0
        } else if self.status_mask != 0 {
            0x60 | self.status_mask
        } else {
            1
        }
    }

    /// The outputs of every goal, or Nix's error: a single failed goal's
    /// own error, else each goal's error is logged and `build of … failed`
    /// is returned.
    pub fn into_result(self) -> Result<Vec<BTreeMap<String, StorePath>>, RealiseError> {
        let failed: Vec<usize> = (0..self.goals.len())
            .filter(|i| self.goals[*i].is_err())
            .collect();
        if failed.is_empty() {
            return Ok(self.goals.into_iter().filter_map(Result::ok).collect());
        }
        let mut goals = self.goals;
        if let [only] = failed[..] {
            if let Err(Some(e)) = std::mem::replace(&mut goals[only], Ok(BTreeMap::new())) {
                return Err(e);
            }
        }
        for i in &failed {
            if let Err(Some(e)) = &goals[*i] {
                self.logger.error(&e.to_string());
            }
        }
        Err(RealiseError::BuildsFailed(
            failed.iter().map(|i| self.goal_names[*i].clone()).collect(),
        ))
    }

    /// [`Self::into_result`] for a realisation of one goal.
    pub fn into_single(self) -> Result<BTreeMap<String, StorePath>, RealiseError> {
        let mut all = self.into_result()?;
        Ok(all.pop().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Substituting,
    Waiting,
    Queued,
    Running,
    Done,
    Failed,
}

struct Node {
    drv_path: StorePath,
    drv: Option<Arc<Derivation>>,
    outputs: BTreeMap<String, StorePath>,
    /// Empty: all outputs.
    wanted: BTreeSet<String>,
    check: bool,
    state: State,
    tried_subst: bool,
    subst_paths: BTreeSet<StorePath>,
    waiters: Vec<usize>,
    pending: usize,
    failed_inputs: usize,
    error: Option<RealiseError>,
}

enum JobResult {
    Build(Result<StepDone, RealiseError>),
    Subst(Result<bool, RealiseError>),
    /// A build's outputs were registered (or not) by the registrar.
    Registered(Result<Duration, RealiseError>),
}

struct Sched<'a> {
    store: &'a LocalStore,
    settings: &'a RealiseSettings,
    logger: Logger,
    nodes: Vec<Node>,
    index: HashMap<StorePath, usize>,
    to_init: VecDeque<usize>,
    build_queue: VecDeque<usize>,
    subst_queue: VecDeque<usize>,
    running_builds: usize,
    running_substs: usize,
    /// Commits queued at the registrar and not yet reported.
    running_commits: usize,
    stopping: bool,
    /// Some derivation needs building (see [`Sched::warm_up`]).
    wants_build: bool,
    warmed_up: bool,
    done_builds: u64,
    failed_builds: u64,
    done_substs: u64,
    report: RealiseReport,
    builds_act: Activity,
    substs_act: Activity,
    cancel: Cancel,
}

/// Realises `goals`; see the module docs. `raw` receives every builder's
/// raw output (error messages then carry no log tail).
pub fn realise_goals(
    store: &LocalStore,
    settings: &RealiseSettings,
    goals: &[Goal],
    raw: Option<&dyn RawLog>,
) -> RealiseReport {
    let logger = settings.logger();
    let _realise = logger.start(Verbosity::Error, ActivityType::Realise, "", vec![], 0);
    let builds_act = logger.start(Verbosity::Error, ActivityType::Builds, "", vec![], 0);
    let substs_act = logger.start(Verbosity::Error, ActivityType::CopyPaths, "", vec![], 0);
    let report = RealiseReport {
        goals: Vec::new(),
        built: Vec::new(),
        substituted: Vec::new(),
        built_elsewhere: Vec::new(),
        checked: Vec::new(),
        premade_sandboxes: 0,
        sandboxes_made: 0,
        network_namespaces: (0, 0),
        reused_work_dirs: 0,
        builds_in_line: 0,
        registrations: Vec::new(),
        tail: Vec::new(),
        status_mask: 0,
        goal_names: goals.iter().map(|g| store.print_path(&g.drv)).collect(),
        logger: logger.clone(),
    };
    let mut s = Sched {
        store,
        settings,
        logger: logger.clone(),
        nodes: Vec::new(),
        index: HashMap::new(),
        to_init: VecDeque::new(),
        build_queue: VecDeque::new(),
        subst_queue: VecDeque::new(),
        running_builds: 0,
        running_substs: 0,
        running_commits: 0,
        stopping: false,
        wants_build: false,
        warmed_up: false,
        done_builds: 0,
        failed_builds: 0,
        done_substs: 0,
        report,
        builds_act,
        substs_act,
        cancel: Cancel::new(),
    };
    let locks = match build_locks(store) {
        Ok(l) => l,
        Err(source) => {
            for g in goals {
                s.report.goals.push(Err(Some(RealiseError::Lock {
                    path: store.print_path(&g.drv),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                })));
            }
            return s.report;
        }
    };
    let top: Vec<usize> = goals
        .iter()
        .map(|g| s.node_for(&g.drv, &g.outputs, g.check))
        .collect();
    let cancel = s.cancel.clone();
    let trash = Trash::new();
    let pool = sandbox_pool(store, settings);
    let registrar = Registrar::new(store);
    let work_dirs = WorkDirStock::keeping_spares(
        store.real_store_dir(),
        &work_prefix(),
        settings.max_jobs.max(1),
    );
    let ctx = StepCtx {
        store,
        settings,
        logger: &logger,
        raw,
        locks: &locks,
        cancel: &cancel,
        trash: &trash,
        pool: pool.as_ref(),
        registrar: &registrar,
        work_dirs: &work_dirs,
    };
    s.run(&ctx);
    let mut t = std::time::Instant::now();
    let mut lap = |name: &'static str, tail: &mut Vec<(&'static str, Duration)>| {
        let now = std::time::Instant::now();
        tail.push((name, now - t));
        t = now;
    };
    // Every commit is done (the loop waited for them); the registering
    // thread's last checkpoint runs while the pool ends.
    registrar.close();
    lap("registrations", &mut s.report.tail);
    s.report.premade_sandboxes = pool.as_ref().map_or(0, SandboxPool::served);
    s.report.sandboxes_made = pool.as_ref().map_or(0, SandboxPool::made);
    s.report.network_namespaces = pool
        .as_ref()
        .map_or((0, 0), SandboxPool::network_namespaces);
    s.report.reused_work_dirs = work_dirs.reused();
    // No build is left to take a directory: those still being emptied are
    // removed instead, on the trash's threads while this one ends the
    // pool's sandboxes.
    work_dirs.set_demand(0);
    for w in work_dirs.drain() {
        work_dirs.put_away(w, &trash);
    }
    drop(pool);
    lap("sandbox pool", &mut s.report.tail);
    trash.finish();
    registrar.finish();
    lap("clean-up", &mut s.report.tail);
    for (g, i) in goals.iter().zip(top) {
        let n = &mut s.nodes[i];
        let r = match n.state {
            State::Done => pick_outputs(store, &n.drv_path, &n.outputs, &g.outputs).map_err(Some),
            State::Failed => Err(n.error.take()),
            _ => Err(None),
        };
        s.report.goals.push(r);
    }
    s.report
}

/// Where every pool of the store mounts its sandboxes' roots (see
/// [`SandboxPool::with_shared_root`]).
pub const SANDBOX_ROOT: &str = ".b3-sandbox-root";

/// Pre-made sandboxes for one realisation (`B3_SANDBOX_POOL=0`: none),
/// their roots mounted on the store's [`SANDBOX_ROOT`].
fn sandbox_pool(store: &LocalStore, settings: &RealiseSettings) -> Option<SandboxPool> {
    if std::env::var_os("B3_SANDBOX_POOL").is_some_and(|v| v == "0") {
        return None;
    }
    let dir = store.real_store_dir().join(SANDBOX_ROOT);
    // Twice the builds that may run at once: making one takes 1.3 to 7 ms
    // (measured on a chain of 50, median 2.4 ms), longer than a short
    // build, so one spare per slot ran dry and a tenth of the builds
    // waited for theirs (p90 1.2 ms). The pool never keeps more than the
    // builds still to start.
    Some(SandboxPool::with_shared_root(
        (2 * settings.max_jobs).clamp(2, 16),
        dir,
    ))
}

fn pick_outputs(
    store: &LocalStore,
    drv: &StorePath,
    all: &BTreeMap<String, StorePath>,
    wanted: &BTreeSet<String>,
) -> Result<BTreeMap<String, StorePath>, RealiseError> {
    if wanted.is_empty() {
        return Ok(all.clone());
    }
    wanted
        .iter()
        .map(|w| {
            all.get(w)
                .map(|p| (w.clone(), p.clone()))
                .ok_or_else(|| RealiseError::NoSuchOutput {
                    drv: store.print_path(drv),
                    output: w.clone(),
                })
        })
        .collect()
}

impl<'a> Sched<'a> {
    fn node_for(&mut self, drv: &StorePath, wanted: &BTreeSet<String>, check: bool) -> usize {
        if let Some(&i) = self.index.get(drv) {
            let n = &mut self.nodes[i];
            let grows = !n.wanted.is_empty() && (wanted.is_empty() || !wanted.is_subset(&n.wanted));
            if grows {
                if wanted.is_empty() {
                    n.wanted.clear();
                } else {
                    n.wanted.extend(wanted.iter().cloned());
                }
                if n.state == State::Done {
                    // Outputs not wanted before may be missing: look again.
                    n.state = State::Init;
                    self.to_init.push_back(i);
                }
            }
            if check && !n.check {
                n.check = true;
                if n.state == State::Done {
                    n.state = State::Init;
                    self.to_init.push_back(i);
                }
            }
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(Node {
            drv_path: drv.clone(),
            drv: None,
            outputs: BTreeMap::new(),
            wanted: wanted.clone(),
            check,
            state: State::Init,
            tried_subst: false,
            subst_paths: BTreeSet::new(),
            waiters: Vec::new(),
            pending: 0,
            failed_inputs: 0,
            error: None,
        });
        self.index.insert(drv.clone(), i);
        self.to_init.push_back(i);
        i
    }

    fn run<'c>(&mut self, ctx: &'c StepCtx<'_>) {
        let (tx, rx) = mpsc::channel::<(usize, JobResult)>();
        let workers: Workers<'c> = Workers::new();
        std::thread::scope(|scope| {
            let run_job = |job: Job<'c>| {
                if workers.push(job) {
                    scope.spawn(|| workers.work());
                }
            };
            self.run_loop(ctx, &tx, &rx, &run_job);
            workers.close();
        });
    }

    fn run_loop<'c>(
        &mut self,
        ctx: &'c StepCtx<'_>,
        tx: &mpsc::Sender<(usize, JobResult)>,
        rx: &mpsc::Receiver<(usize, JobResult)>,
        run_job: &dyn Fn(Job<'c>),
    ) {
        let mut announced = false;
        loop {
            while let Some(i) = self.to_init.pop_front() {
                if self.nodes[i].state == State::Init {
                    self.init(i);
                }
                if self.wants_build && !self.warmed_up {
                    self.warm_up(ctx);
                }
            }
            if !announced {
                self.announce();
                self.make_lock_files(ctx);
                announced = true;
            }
            while !self.stopping && self.running_builds < self.settings.max_jobs.max(1) {
                let Some(i) = self.build_queue.pop_front() else {
                    break;
                };
                self.nodes[i].state = State::Running;
                self.running_builds += 1;
                self.progress();
                self.tell_pool(ctx);
                let (drv_path, drv, outputs, check) = {
                    let n = &self.nodes[i];
                    (
                        n.drv_path.clone(),
                        n.drv.clone(),
                        n.outputs.clone(),
                        n.check,
                    )
                };
                let inputs = self.input_outputs(i);
                let tx = tx.clone();
                let tl = Timeline::new();
                let alone = self.running_builds == 1
                    && self.running_substs == 0
                    && self.build_queue.is_empty()
                    && self.subst_queue.is_empty()
                    && self.to_init.is_empty();
                let job: Job<'c> = Box::new(move || {
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| match &drv {
                        Some(d) => build_step(ctx, &drv_path, d, &outputs, &inputs, check, tl),
                        None => Err(StoreError::Other("derivation not loaded".into()).into()),
                    }))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Other("a build worker panicked".into()).into())
                    });
                    let _ = tx.send((i, JobResult::Build(r)));
                });
                // Nothing else can start before this build ends (a chain's
                // next step needs it): it runs on this thread, without two
                // hand-overs between threads on each step's path.
                if alone {
                    self.report.builds_in_line += 1;
                    job();
                } else {
                    run_job(job);
                }
            }
            while !self.stopping && self.running_substs < self.settings.max_substitution_jobs.max(1)
            {
                let Some(i) = self.subst_queue.pop_front() else {
                    break;
                };
                self.running_substs += 1;
                self.progress();
                let paths = self.nodes[i].subst_paths.clone();
                let tx = tx.clone();
                run_job(Box::new(move || {
                    let r =
                        std::panic::catch_unwind(AssertUnwindSafe(|| substitute_step(ctx, &paths)))
                            .unwrap_or_else(|_| {
                                Err(StoreError::Other("a substitution worker panicked".into())
                                    .into())
                            });
                    let _ = tx.send((i, JobResult::Subst(r)));
                }));
            }
            if self.running_builds + self.running_substs + self.running_commits == 0 {
                break;
            }
            self.tell_pool(ctx);
            let Ok((i, result)) = rx.recv() else { break };
            match result {
                JobResult::Build(r) => {
                    self.running_builds -= 1;
                    let r = match r {
                        Ok(StepDone::Built {
                            setup,
                            total,
                            timeline,
                            commit,
                        }) => {
                            if let Some(c) = commit {
                                // Queued before any build that depends on
                                // this one starts (see crate::registrar).
                                self.running_commits += 1;
                                let tx = tx.clone();
                                ctx.registrar.submit(ctx.store, c, move |r| {
                                    let _ = tx.send((i, JobResult::Registered(r)));
                                });
                            }
                            Ok(StepDone::Built {
                                setup,
                                total,
                                timeline,
                                commit: None,
                            })
                        }
                        other => other,
                    };
                    self.build_done(i, r);
                }
                JobResult::Registered(r) => {
                    self.running_commits -= 1;
                    match r {
                        Ok(d) => self.report.registrations.push(d),
                        Err(e) => {
                            // The build's outputs are not valid after all;
                            // builds that used them fail to register too.
                            self.done_builds = self.done_builds.saturating_sub(1);
                            self.failed_builds += 1;
                            self.fail(i, e);
                        }
                    }
                }
                JobResult::Subst(r) => {
                    self.running_substs -= 1;
                    self.subst_done(i, r);
                }
            }
            self.progress();
        }
    }

    /// Has the sandbox pool start making a sandbox as soon as one build
    /// is known to be needed, so that the first build finds it made while
    /// the rest of the graph was read (a sandbox takes milliseconds to
    /// make, about as long as planning fifty derivations). Builds in a
    /// fresh sandbox (through a vfs view) need none.
    fn warm_up(&mut self, ctx: &StepCtx<'_>) {
        self.warmed_up = true;
        let Some(pool) = ctx.pool else { return };
        if ctx.settings.vfs.is_some() {
            return;
        }
        let store = ctx.store;
        let work = store
            .real_store_dir()
            .join(format!("{}template", work_prefix()));
        let template = SandboxSpec {
            builder: "/bin/sh".into(),
            args: Vec::new(),
            env: Vec::new(),
            env_bytes: Vec::new(),
            logical_store_dir: store.store_dir().as_str().to_string(),
            physical_store_dir: store.real_store_dir().to_path_buf(),
            inputs: Vec::new(),
            store_dir_host: work.join("store"),
            build_dir: work.join("build"),
            root_dir: work.join("root"),
            scratch_dir: None,
            made_points: BTreeMap::new(),
            network: false,
            extra_paths: ctx.settings.extra_paths.clone(),
            kvm: ctx.settings.kvm,
            timeout: None,
            max_silent: None,
            cancel: None,
            pool: None,
        };
        pool.set_demand(1);
        pool.warm_up(&template);
    }

    /// Makes the lock files the builds to come will take (the build lock
    /// and the store's lock of each output) on the trash thread, ahead of
    /// them: a new file costs an inode, which on some file systems is a
    /// good part of a millisecond, on each build's critical path otherwise.
    /// Only for outputs about to be built, whose lock files their builds
    /// would make anyway.
    fn make_lock_files(&self, ctx: &StepCtx<'_>) {
        // Dependencies first (a node is added after those that need it):
        // the first builds find theirs made.
        let outputs: Vec<StorePath> = self
            .nodes
            .iter()
            .rev()
            .filter(|n| !n.check && matches!(n.state, State::Waiting | State::Queued))
            .flat_map(|n| n.outputs.values().cloned())
            .collect();
        if outputs.is_empty() {
            return;
        }
        let locks = ctx.locks.clone();
        let store = ctx.store.clone();
        ctx.trash.later(move || {
            for p in &outputs {
                // A failure only leaves the file to the build.
                let _ = locks.make_file(&p.base_name());
                let _ = store.make_adoption_lock(p);
            }
        });
    }

    /// Tells the sandbox pool how many builds are still to start, so that
    /// it makes no sandbox nobody will use (a single build, the end of a
    /// realisation). Told each time a build is marked running, before its
    /// thread starts, so that the pool never counts it. Work directories
    /// for the next builds (as many as may run at once) are made ahead on
    /// a chore thread, when finished builds' directories do not serve them.
    fn tell_pool(&self, ctx: &StepCtx<'_>) {
        let to_start = self
            .nodes
            .iter()
            .filter(|n| matches!(n.state, State::Waiting | State::Queued))
            .count();
        if let Some(pool) = ctx.pool {
            pool.set_demand(to_start);
        }
        let want = to_start.min(self.settings.max_jobs.max(1));
        ctx.work_dirs.set_demand(want);
        if to_start == 0 {
            // The last builds run: the directories no build will take go
            // now, on idle CPUs, rather than after them.
            for w in ctx.work_dirs.drain() {
                ctx.work_dirs.put_away(w, ctx.trash);
            }
        }
        // Only when short: a chore's wake-up costs the builds' CPUs too.
        if want > 0 && ctx.work_dirs.short_of(want) {
            let stock = ctx.work_dirs.clone();
            ctx.trash.later(move || stock.top_up(want));
        }
    }

    /// Nix's "these N derivations will be built:" (dependencies first).
    fn announce(&self) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for i in 0..self.nodes.len() {
            self.topo(i, &mut seen, &mut order);
        }
        let builds: Vec<String> = order
            .iter()
            .filter(|i| matches!(self.nodes[**i].state, State::Waiting | State::Queued))
            .map(|i| self.store.print_path(&self.nodes[*i].drv_path))
            .collect();
        let fetch_paths: Vec<&StorePath> = order
            .iter()
            .filter(|i| self.nodes[**i].state == State::Substituting)
            .flat_map(|i| self.nodes[*i].subst_paths.iter())
            .collect();
        let fetches: Vec<String> = fetch_paths
            .iter()
            .map(|p| self.store.print_path(p))
            .collect();
        let sizes = self.settings.substituter.as_ref().and_then(|s| {
            fetch_paths.iter().try_fold((0u64, 0u64), |(d, n), p| {
                let (pd, pn) = s.fetch_sizes(p)?;
                Some((d + pd, n + pn))
            })
        });
        let say = |items: &[String], one: &str, many: String| {
            if items.is_empty() {
                return;
            }
            let mut msg = if items.len() == 1 {
                one.to_string()
            } else {
                many
            };
            for d in items {
                msg.push_str(&format!("\n  {d}"));
            }
            self.logger.log(Verbosity::Info, &msg);
        };
        say(
            &builds,
            "this derivation will be built:",
            format!("these {} derivations will be built:", builds.len()),
        );
        let (one, many) = match sizes {
            Some((download, nar)) => {
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                let sizes = format!(
                    " ({:.2} MiB download, {:.2} MiB unpacked):",
                    mib(download),
                    mib(nar)
                );
                (
                    format!("this path will be fetched{sizes}"),
                    format!("these {} paths will be fetched{sizes}", fetches.len()),
                )
            }
            None => (
                "this path will be fetched:".to_string(),
                format!("these {} paths will be fetched:", fetches.len()),
            ),
        };
        say(&fetches, &one, many);
        self.builds_act
            .set_expected(ActivityType::Build, builds.len() as u64);
    }

    fn topo(&self, i: usize, seen: &mut BTreeSet<usize>, order: &mut Vec<usize>) {
        if !seen.insert(i) {
            return;
        }
        if let Some(drv) = &self.nodes[i].drv {
            for input in drv.input_drvs.keys() {
                if let Some(&j) = self.index.get(input) {
                    self.topo(j, seen, order);
                }
            }
        }
        order.push(i);
    }

    fn progress(&self) {
        let expected = self
            .nodes
            .iter()
            .filter(|n| matches!(n.state, State::Waiting | State::Queued | State::Running))
            .count() as u64;
        self.builds_act.progress(
            self.done_builds,
            self.done_builds + self.failed_builds + expected,
            self.running_builds as u64,
            self.failed_builds,
        );
        let substs = self
            .nodes
            .iter()
            .filter(|n| n.state == State::Substituting)
            .count() as u64;
        self.substs_act.progress(
            self.done_substs,
            self.done_substs + substs,
            self.running_substs as u64,
            0,
        );
    }

    /// Outputs of the input derivations the build of `i` reads.
    fn input_outputs(&self, i: usize) -> BTreeSet<StorePath> {
        let mut set = BTreeSet::new();
        if let Some(drv) = &self.nodes[i].drv {
            for (input, outs) in &drv.input_drvs {
                if let Some(&j) = self.index.get(input) {
                    let all = &self.nodes[j].outputs;
                    if outs.is_empty() {
                        set.extend(all.values().cloned());
                    } else {
                        set.extend(outs.iter().filter_map(|o| all.get(o).cloned()));
                    }
                }
            }
        }
        set
    }

    fn init(&mut self, i: usize) {
        if let Err(e) = self.try_init(i) {
            self.fail(i, e);
        }
    }

    fn try_init(&mut self, i: usize) -> Result<(), RealiseError> {
        let store = self.store;
        let drv_path = self.nodes[i].drv_path.clone();
        let drv_s = store.print_path(&drv_path);
        if self.nodes[i].drv.is_none() {
            let drv = read_derivation(store, &drv_path)?;
            let mut outputs = BTreeMap::new();
            for (name, out) in &drv.outputs {
                let p = out.path().ok_or_else(|| DrvJobError::Unsupported {
                    drv: drv_s.clone(),
                    kind: "output without a path",
                })?;
                outputs.insert(name.clone(), p.clone());
            }
            store.add_temp_roots(outputs.values())?;
            let n = &mut self.nodes[i];
            n.outputs = outputs;
            n.drv = Some(Arc::new(drv));
        }
        let n = &self.nodes[i];
        let wanted = pick_outputs(store, &drv_path, &n.outputs, &n.wanted)?;
        let mut missing = BTreeSet::new();
        for p in wanted.values() {
            if !store.is_valid_sync(p)? {
                missing.insert(p.clone());
            }
        }
        if n.check {
            for p in n.outputs.values() {
                if !store.is_valid_sync(p)? {
                    return Err(RealiseError::CheckInvalid(drv_s));
                }
            }
            self.expand(i);
            return Ok(());
        }
        if missing.is_empty() {
            self.register_valid(i)?;
            self.done(i);
            return Ok(());
        }
        if let Some(subst) = &self.settings.substituter {
            if !n.tried_subst && missing.iter().all(|p| subst.has(p)) {
                let n = &mut self.nodes[i];
                n.state = State::Substituting;
                n.subst_paths = missing;
                self.subst_queue.push_back(i);
                return Ok(());
            }
        }
        self.expand(i);
        Ok(())
    }

    /// Records the derivation → output mapping for the outputs that are valid.
    fn register_valid(&self, i: usize) -> Result<(), RealiseError> {
        let n = &self.nodes[i];
        let mut pairs = Vec::new();
        for (name, p) in &n.outputs {
            if self.store.is_valid_sync(p)? {
                pairs.push((name.clone(), p.clone()));
            }
        }
        self.store
            .register_derivation_outputs(&n.drv_path, &pairs)?;
        Ok(())
    }

    /// Makes the node wait for its input derivations.
    fn expand(&mut self, i: usize) {
        let Some(drv) = self.nodes[i].drv.clone() else {
            return;
        };
        self.nodes[i].state = State::Waiting;
        self.wants_build = true;
        self.nodes[i].pending = 0;
        self.nodes[i].failed_inputs = 0;
        for (input, outs) in &drv.input_drvs {
            let j = self.node_for(input, outs, false);
            match self.nodes[j].state {
                State::Done => {}
                State::Failed => self.nodes[i].failed_inputs += 1,
                _ => {
                    self.nodes[i].pending += 1;
                    self.nodes[j].waiters.push(i);
                }
            }
        }
        let n = &self.nodes[i];
        if n.failed_inputs > 0 && (n.pending == 0 || !self.settings.keep_going) {
            self.fail_dependencies(i);
        } else if n.pending == 0 {
            self.queue_build(i);
        }
    }

    fn queue_build(&mut self, i: usize) {
        self.nodes[i].state = State::Queued;
        self.build_queue.push_back(i);
    }

    fn fail_dependencies(&mut self, i: usize) {
        let e = RealiseError::DependencyFailed {
            count: self.nodes[i].failed_inputs,
            drv: self.store.print_path(&self.nodes[i].drv_path),
        };
        self.fail(i, e);
    }

    fn done(&mut self, i: usize) {
        self.nodes[i].state = State::Done;
        for w in std::mem::take(&mut self.nodes[i].waiters) {
            let n = &mut self.nodes[w];
            if n.state != State::Waiting {
                continue;
            }
            n.pending -= 1;
            if n.pending == 0 {
                if n.failed_inputs > 0 {
                    self.fail_dependencies(w);
                } else {
                    self.queue_build(w);
                }
            }
        }
    }

    fn fail(&mut self, i: usize, e: RealiseError) {
        if let Some(bits) = status_bits(&e) {
            self.report.status_mask |= bits;
        }
        if !self.settings.keep_going {
            self.stopping = true;
            // Running builds are killed and register nothing (Nix stops
            // its other goals the same way).
            self.cancel.cancel();
        }
        let n = &mut self.nodes[i];
        n.state = State::Failed;
        if matches!(e, RealiseError::Cancelled(_)) {
            // Not a failure of its own: only the build that failed is
            // reported, and the goals waiting for this one were failed
            // already when the realisation stopped.
            n.waiters.clear();
            return;
        }
        let waiters = std::mem::take(&mut n.waiters);
        if waiters.is_empty() {
            n.error = Some(e);
        } else {
            // Nix logs the errors of goals others wait for as they happen.
            self.logger.error(&e.to_string());
        }
        for w in waiters {
            let keep_going = self.settings.keep_going;
            let n = &mut self.nodes[w];
            if n.state != State::Waiting {
                continue;
            }
            n.pending -= 1;
            n.failed_inputs += 1;
            if n.pending == 0 || !keep_going {
                self.fail_dependencies(w);
            }
        }
    }

    fn build_done(&mut self, i: usize, r: Result<StepDone, RealiseError>) {
        let drv = self.nodes[i].drv_path.clone();
        match r {
            Ok(StepDone::Built {
                setup,
                total,
                timeline,
                ..
            }) => {
                self.done_builds += 1;
                self.report.built.push(BuiltDrv {
                    drv,
                    setup,
                    total,
                    timeline,
                });
                self.done(i);
            }
            Ok(StepDone::AlreadyValid) => {
                self.done_builds += 1;
                self.report.built_elsewhere.push(drv);
                self.done(i);
            }
            Ok(StepDone::Checked) => {
                self.done_builds += 1;
                self.report.checked.push(drv);
                self.done(i);
            }
            Err(e) => {
                self.failed_builds += 1;
                self.fail(i, e);
            }
        }
    }

    fn subst_done(&mut self, i: usize, r: Result<bool, RealiseError>) {
        match r {
            Ok(true) => {
                self.done_substs += 1;
                self.report.substituted.push(self.nodes[i].drv_path.clone());
                if let Err(e) = self.register_valid(i) {
                    self.fail(i, e);
                    return;
                }
                // Outputs wanted after the substitution started may still
                // be missing: look again (builds them if so).
                self.nodes[i].state = State::Init;
                self.nodes[i].tried_subst = true;
                self.init(i);
            }
            Ok(false) | Err(_) => {
                if let Err(e) = r {
                    self.logger.warn(&format!(
                        "substituting the outputs of '{}' failed: {e}; building them instead",
                        self.store.print_path(&self.nodes[i].drv_path)
                    ));
                }
                self.nodes[i].state = State::Init;
                self.nodes[i].tried_subst = true;
                self.init(i);
            }
        }
    }
}

/// Nix's failure bits for an error that ended a build (see
/// [`RealiseReport::status_mask`]).
fn status_bits(e: &RealiseError) -> Option<u8> {
    let bits = e.nix_status_bits()?;
    Some(match bits {
        4 => 0x08,
        b => 0x04 | b,
    })
}
