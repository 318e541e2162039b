//! One derivation, from "its inputs are valid" to "its outputs are
//! registered": take the per-output locks (so two processes never build
//! the same thing at once) and look again whether someone else made the
//! outputs valid meanwhile; make sure the input sources are there
//! (substituting them if need be); run the builder in the sandbox with its
//! log kept (see [`crate::buildlog`]) and relayed as a `building '…'`
//! activity; check fixed-output hashes and the derivation's output checks;
//! canonicalise and measure each output where the builder left it (NAR
//! hash, size and references in one walk) and have the store adopt it:
//! moved, not copied, then registered. Nothing is registered when any of this
//! fails, and with `keep_failed` the build directory is kept.
//!
//! In check mode (`--check`) the outputs, which must already be valid, are
//! built again and compared with the registered ones instead of being
//! registered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use b3_store::activity::{ActivityType, Logger, Verbosity};
use b3_store::derivation::Derivation;
use b3_store::local::adopt::Prepared;
use b3_store::local::LocalStore;
use b3_store::lock::{FileLock, PathLocks};
use b3_store::path::{ContentAddress, StorePath};
use b3_store::substitute::Substituted;
use b3_store::traits::{StoreError, ValidPathInfo};

use crate::buildlog::{log_path, BuildOutput, RawLog};
use crate::builtin_fetchurl;
use crate::checks::check_outputs;
use crate::drv::{check_fixed_output, fixed_output_ca, job_from_derivation, BuildSettings};
use crate::job::{BuildResult, Trash, WorkDir, WorkDirStock};
use crate::platform::{Cancel, ExitStatus};
use crate::realise::{failure_text, scan_output, RealiseError, RealiseSettings};
use crate::registrar::{Commit, Registrar};
use crate::sandbox::{RunOutcome, SandboxPool};
use crate::timing::Timeline;

/// Prefix of work directories in the store directory. The local store
/// sweeps `.b3-tmp-<pid>-…` entries of dead processes, so a crashed build
/// leaves nothing behind for long.
const WORK_PREFIX: &str = ".b3-tmp-";

/// What one realisation shares with every step.
pub(crate) struct StepCtx<'a> {
    pub store: &'a LocalStore,
    pub settings: &'a RealiseSettings,
    pub logger: &'a Logger,
    pub raw: Option<&'a dyn RawLog>,
    pub locks: &'a PathLocks,
    /// Cancelled when the realisation stops (a build failed without
    /// `keep_going`): running builds are killed, nothing more registered.
    pub cancel: &'a Cancel,
    /// Runs the chores that may follow a build's end (emptying or removing
    /// its work directory, writing its log).
    pub trash: &'a Trash,
    /// Pre-made sandboxes for this realisation's builds.
    pub pool: Option<&'a SandboxPool>,
    /// Registers finished builds' outputs while later builds run.
    pub registrar: &'a Registrar,
    /// Work directories made ahead of the builds or left by finished ones
    /// (see [`work_prefix`]).
    pub work_dirs: &'a WorkDirStock,
}

/// Name prefix of this process's build work directories.
pub(crate) fn work_prefix() -> String {
    format!("{WORK_PREFIX}{}-build-", std::process::id())
}

/// How a step ended well.
#[derive(Debug)]
pub enum StepDone {
    /// Built here; times of the sandbox set-up and of the builder's run,
    /// and where the whole step's time went. The outputs are in place;
    /// `commit` registers them (see [`crate::registrar`]).
    Built {
        setup: Duration,
        total: Duration,
        timeline: Timeline,
        commit: Option<Commit>,
    },
    /// Another process made the outputs valid while we waited for the lock.
    AlreadyValid,
    /// `--check`: rebuilt and bit-identical.
    Checked,
}

/// The lock directory for builds and substitutions (separate from the
/// store's own path locks, which its ingest and repair take).
pub(crate) fn build_locks(store: &LocalStore) -> std::io::Result<PathLocks> {
    PathLocks::new(store.state_dir().join("build-locks"))
}

/// Locks `paths` in a global order, saying so when someone else holds one.
pub(crate) fn lock_paths(
    ctx: &StepCtx<'_>,
    paths: &BTreeSet<&StorePath>,
) -> Result<Vec<FileLock>, RealiseError> {
    let mut held = Vec::new();
    for p in paths {
        let base = p.base_name();
        let err = |source| RealiseError::Lock {
            path: ctx.store.print_path(p),
            source,
        };
        match ctx.locks.try_lock(&base).map_err(err)? {
            Some(l) => held.push(l),
            None => {
                ctx.logger.log(
                    Verbosity::Info,
                    &format!("waiting for lock on '{}'", ctx.store.print_path(p)),
                );
                let _waiting = ctx.logger.start(
                    Verbosity::Info,
                    ActivityType::BuildWaiting,
                    format!("waiting for lock on '{}'", ctx.store.print_path(p)),
                    vec![],
                    0,
                );
                held.push(ctx.locks.lock(&base).map_err(err)?);
            }
        }
    }
    Ok(held)
}

/// Builds `drv` (stored at `drv_path`, outputs `outputs`) whose input
/// derivations' outputs `input_outputs` are valid.
pub(crate) fn build_step(
    ctx: &StepCtx<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    input_outputs: &BTreeSet<StorePath>,
    check: bool,
    mut tl: Timeline,
) -> Result<StepDone, RealiseError> {
    let store = ctx.store;
    let drv_s = store.print_path(drv_path);
    tl.mark("start");
    let locks = lock_paths(ctx, &outputs.values().collect())?;
    let mut valid = BTreeMap::new();
    for (name, p) in outputs {
        if let Some(info) = store.query_path_info_sync(p)? {
            valid.insert(name.clone(), info);
        }
    }
    tl.mark("lock");
    if ctx.cancel.is_cancelled() {
        return Err(RealiseError::Cancelled(drv_s));
    }
    if check {
        if valid.len() != outputs.len() {
            return Err(RealiseError::CheckInvalid(drv_s));
        }
    } else if valid.len() == outputs.len() {
        let pairs: Vec<(String, StorePath)> = outputs.clone().into_iter().collect();
        store.register_derivation_outputs(drv_path, &pairs)?;
        return Ok(StepDone::AlreadyValid);
    }

    if !check {
        // The store's lock file for each output, which registering it
        // takes: made meanwhile, off the build's critical path (a new
        // inode can cost a good part of a millisecond).
        let store = store.clone();
        let missing: Vec<StorePath> = outputs
            .iter()
            .filter(|(name, _)| !valid.contains_key(*name))
            .map(|(_, p)| p.clone())
            .collect();
        ctx.trash.later(move || {
            for p in &missing {
                // A failure here only leaves the file to the adoption.
                let _ = store.make_adoption_lock(p);
            }
        });
    }

    // Input sources are normally valid (they are the .drv's references);
    // one that was collected is substituted or reported.
    for src in &drv.input_srcs {
        if store.is_valid_sync(src)? {
            continue;
        }
        let got = match &ctx.settings.substituter {
            Some(s) => s.substitute(store, src).ok(),
            None => None,
        };
        if got != Some(Substituted::Done) {
            return Err(RealiseError::MissingInput(store.print_path(src)));
        }
    }
    let mut roots: BTreeSet<StorePath> = drv.input_srcs.clone();
    roots.extend(input_outputs.iter().cloned());
    store.add_temp_roots(roots.iter())?;
    // Inputs built by this realisation may be placed and not registered
    // yet: the registrar knows their references.
    let closure = ctx.registrar.closure(store, &roots)?;
    tl.mark("closure");

    let text = if check {
        format!("checking outputs of '{drv_s}'")
    } else {
        format!("building '{drv_s}'")
    };
    let activity = ctx.logger.start(
        Verbosity::Info,
        ActivityType::Build,
        text,
        vec![drv_s.as_str().into(), "".into(), 1.into(), 1.into()],
        0,
    );
    let tail_lines = if ctx.raw.is_some() {
        0
    } else {
        ctx.settings.log_lines
    };
    let log_file = log_path(store.root(), &drv_path.base_name());
    let mut out = BuildOutput::new(&activity, Some(log_file), tail_lines, ctx.raw);
    tl.mark("log open");
    if ctx.settings.vfs.is_some() {
        // A build through a vfs view reads its inputs' registrations.
        ctx.registrar.wait_idle();
    }
    let run = if drv.builder == builtin_fetchurl::BUILDER {
        run_builtin_fetchurl(ctx, drv_path, drv, outputs, &mut out)
    } else {
        let declared: Vec<String> = roots.iter().map(|p| p.base_name()).collect();
        sandboxed_job(ctx, drv_path, drv, &closure).and_then(|job| {
            crate::vfs_build::run_job(
                ctx.settings.vfs.as_deref(),
                &drv_s,
                &declared,
                job,
                &mut out,
            )
            .map_err(RealiseError::from)
        })
    };
    tl.mark("job");
    if let Ok(r) = &run {
        let setup = r.outcome.setup_time;
        tl.split("job", "sandbox set-up", setup);
        tl.split("job", "builder", r.outcome.total_time.saturating_sub(setup));
    }
    let could_not =
        |drv: &str, e: std::io::Error| format!("could not store the build log of '{drv}': {e}");
    match out.finish_later() {
        Ok(Some(pending)) => {
            // Off the critical path; the realisation waits for it at its end.
            let logger = ctx.logger.clone();
            let drv = drv_s.clone();
            ctx.trash.later(move || {
                if let Err(e) = pending.write() {
                    logger.warn(&could_not(&drv, e));
                }
            });
        }
        Ok(None) => {}
        Err(e) => ctx.logger.warn(&could_not(&drv_s, e)),
    }
    let result = run?;
    let tail: Vec<String> = out.tail().map(str::to_string).collect();
    drop(out);
    drop(activity);
    tl.mark("log close");

    let ended = finish(
        ctx, drv_path, drv, outputs, &closure, &result, &valid, check, &tail, &mut tl, locks,
    );
    if ended.is_err() && ctx.settings.keep_failed {
        keep_build_dir(ctx, drv_path, result);
    } else {
        // Its outputs are in the store (or unwanted): emptied, the
        // directory serves a later build (see crate::recycle).
        ctx.work_dirs.recycle(result.work_dir, ctx.trash);
    }
    match ended {
        Ok(StepDone::Built {
            setup,
            total,
            commit,
            ..
        }) => {
            tl.mark("clean up");
            Ok(StepDone::Built {
                setup,
                total,
                timeline: tl,
                commit,
            })
        }
        other => other,
    }
}

/// The sandboxed job for `drv`, with its work directory in the store.
fn sandboxed_job(
    ctx: &StepCtx<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    closure: &BTreeSet<StorePath>,
) -> Result<crate::job::BuildJob, RealiseError> {
    let store = ctx.store;
    let build_settings = BuildSettings {
        physical_store_dir: store.real_store_dir().to_path_buf(),
        work_parent: store.real_store_dir().to_path_buf(),
        extra_paths: ctx.settings.extra_paths.clone(),
        cores: ctx.settings.cores,
        timeout: ctx.settings.timeout,
        max_silent: ctx.settings.max_silent,
        kvm: ctx.settings.kvm,
        impure_env: ctx.settings.impure_env.clone(),
    };
    let mut job = job_from_derivation(store.store_dir(), drv_path, drv, closure, &build_settings)?;
    job.work_prefix = work_prefix();
    job.work_dirs = Some(ctx.work_dirs.clone());
    job.cancel = Some(ctx.cancel.clone());
    // A build through a vfs view has a store of its own: a fresh sandbox.
    if ctx.settings.vfs.is_none() {
        job.pool = ctx.pool.cloned();
    }

    Ok(job)
}

/// `builtin:fetchurl` runs in this process (as in Nix, outside the
/// sandbox): the download lands in a work directory like a sandboxed
/// build's output, and a failure is reported in the log with exit code 1.
fn run_builtin_fetchurl(
    ctx: &StepCtx<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    log: &mut dyn std::io::Write,
) -> Result<BuildResult, RealiseError> {
    let started = std::time::Instant::now();
    let name = drv_path.derivation_name().unwrap_or("fetchurl");
    let work = match ctx.work_dirs.take() {
        Some(w) => w,
        None => WorkDir::create(ctx.store.real_store_dir(), &work_prefix(), name)
            .map_err(crate::job::JobError::WorkDir)?,
    };
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    let status = match outputs.get("out") {
        Some(out) => {
            let host = work.store().join(out.base_name());
            let status = match builtin_fetchurl::run(drv, &host) {
                Ok(()) => ExitStatus::Code(0),
                Err(e) => {
                    let _ = writeln!(log, "error: {e}");
                    ExitStatus::Code(1)
                }
            };
            if std::fs::symlink_metadata(&host).is_ok() {
                found.insert("out".to_string(), host);
            }
            status
        }
        None => ExitStatus::Code(1),
    };
    for name in outputs.keys() {
        if !found.contains_key(name) {
            missing.push(name.clone());
        }
    }
    Ok(BuildResult {
        outcome: RunOutcome {
            status,
            setup_time: Duration::ZERO,
            total_time: started.elapsed(),
            timed_out: false,
            silent_too_long: false,
            cancelled: false,
        },
        outputs: found,
        missing_outputs: missing,
        work_dir: work,
    })
}

/// Moves the work directory of a failed build somewhere it is not swept
/// and says where, as Nix's `--keep-failed` does.
fn keep_build_dir(ctx: &StepCtx<'_>, drv_path: &StorePath, result: BuildResult) {
    let base = drv_path.base_name();
    let name = base.split_once('-').map_or(base.as_str(), |(_, n)| n);
    let parent = ctx.store.state_dir().join("failed-builds");
    let mut n = 0;
    let dest = loop {
        let d = parent.join(format!("{name}-{n}"));
        if !d.exists() {
            break d;
        }
        n += 1;
    };
    match result.work_dir.keep(&dest) {
        Ok(kept) => ctx.logger.log(
            Verbosity::Error,
            &format!(
                "note: keeping build directory '{}'",
                kept.join("build").display()
            ),
        ),
        Err(e) => ctx
            .logger
            .warn(&format!("could not keep the build directory: {e}")),
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &StepCtx<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    closure: &BTreeSet<StorePath>,
    result: &BuildResult,
    valid: &BTreeMap<String, ValidPathInfo>,
    check: bool,
    tail: &[String],
    tl: &mut Timeline,
    locks: Vec<FileLock>,
) -> Result<StepDone, RealiseError> {
    let store = ctx.store;
    let settings = ctx.settings;
    let drv_s = store.print_path(drv_path);
    if result.outcome.cancelled {
        return Err(RealiseError::Cancelled(drv_s));
    }
    if result.outcome.timed_out {
        return Err(RealiseError::TimedOut {
            drv: drv_s,
            secs: settings.timeout.map_or(0, |t| t.as_secs()),
        });
    }
    if result.outcome.silent_too_long {
        return Err(RealiseError::Silent {
            drv: drv_s,
            secs: settings.max_silent.map_or(0, |t| t.as_secs()),
        });
    }
    if !result.outcome.status.success() {
        let tail = if tail.is_empty() {
            String::new()
        } else {
            let mut t = format!(";\n       last {} log lines:", tail.len());
            for l in tail {
                t.push_str(&format!("\n       > {l}"));
            }
            t.push_str(&format!("\n       For full logs, run 'b3 log {drv_s}'."));
            t
        };
        return Err(RealiseError::BuildFailed {
            drv: drv_s,
            how: failure_text(result.outcome.status),
            tail,
        });
    }
    if let Some(name) = result.missing_outputs.first() {
        return Err(RealiseError::MissingOutput {
            drv: drv_s,
            output: name.clone(),
            path: store.print_path(&outputs[name]),
        });
    }
    let fod = fixed_output_ca(drv).copied();

    // Scan every output for references to the closure and to the outputs.
    // Outside check mode, each output is canonicalised and measured where
    // the builder left it (on the store's file system), to be moved into
    // the store later rather than copied.
    let mut candidates: BTreeMap<String, StorePath> =
        closure.iter().map(|p| (p.hash_part(), p.clone())).collect();
    for p in outputs.values() {
        candidates.insert(p.hash_part(), p.clone());
    }
    let mut infos: BTreeMap<String, ValidPathInfo> = BTreeMap::new();
    let mut prepared: BTreeMap<String, Prepared> = BTreeMap::new();
    for (name, host) in &result.outputs {
        let path = outputs[name].clone();
        let (hash, size, found) = if check {
            scan_output(host, candidates.keys())?
        } else {
            let p = store.prepare_adoption(host, candidates.keys())?;
            let measured = (p.nar_hash(), p.nar_size(), p.found().clone());
            prepared.insert(name.clone(), p);
            measured
        };
        let mut info = ValidPathInfo::new(path, hash, size);
        info.references = found
            .iter()
            .filter_map(|h| candidates.get(h).cloned())
            .collect();
        info.deriver = Some(drv_path.clone());
        info.ultimate = true;
        if let Some(ca) = &fod {
            check_fixed_output(ca, &drv_s, host)?;
            if !info.references.is_empty() {
                return Err(RealiseError::FixedOutputReferences(drv_s));
            }
            info.ca = Some(ContentAddress {
                method: ca.method,
                hash: ca.hash,
            });
        }
        infos.insert(name.clone(), info);
    }
    tl.mark("scan");
    if !crate::checks::output_checks(drv)?.is_empty() {
        // The checks read the references' registrations (closures,
        // derivation outputs): let those of this realisation land first.
        ctx.registrar.wait_idle();
    }
    check_outputs(store, drv, &infos)?;
    tl.mark("checks");

    if check {
        for (name, info) in &infos {
            let old = &valid[name];
            if old.nar_hash != info.nar_hash {
                let shown = store.print_path(&info.path);
                let kept = if settings.keep_failed {
                    keep_check_output(store, &info.path, &result.outputs[name])
                } else {
                    None
                };
                return Err(RealiseError::NotDeterministic {
                    drv: drv_s,
                    output: shown,
                    kept,
                });
            }
        }
        return Ok(StepDone::Checked);
    }

    // Place outputs after the outputs they refer to; they are registered
    // in the same order (see crate::registrar).
    let mut added: BTreeSet<StorePath> = valid.values().map(|i| i.path.clone()).collect();
    let mut placed = Vec::new();
    let discard = |placed: Vec<b3_store::local::adopt::Placed>| {
        placed.into_iter().for_each(|p| store.discard_adopted(p));
    };
    let mut todo: Vec<&String> = infos.keys().filter(|n| !valid.contains_key(*n)).collect();
    while !todo.is_empty() {
        let before = todo.len();
        let mut i = 0;
        while i < todo.len() {
            let info = &infos[todo[i]];
            let ready = info
                .references
                .iter()
                .all(|r| r == &info.path || added.contains(r) || !outputs.values().any(|o| o == r));
            if ready {
                if ctx.cancel.is_cancelled() {
                    discard(placed);
                    return Err(RealiseError::Cancelled(drv_s));
                }
                if let Some(p) = prepared.remove(todo[i]) {
                    let pending = |r: &StorePath| {
                        added.contains(r) || ctx.registrar.is_pending_or_registered(r)
                    };
                    match store.place_adopted(p, info, &pending) {
                        Ok(Some(p)) => placed.push(p),
                        Ok(None) => {}
                        Err(e) => {
                            discard(placed);
                            return Err(e.into());
                        }
                    }
                }
                added.insert(info.path.clone());
                todo.remove(i);
            } else {
                i += 1;
            }
        }
        if todo.len() == before {
            discard(placed);
            return Err(RealiseError::OutputCycle(drv_s));
        }
    }
    tl.mark("add");
    Ok(StepDone::Built {
        setup: result.outcome.setup_time,
        total: result.outcome.total_time,
        timeline: Timeline::new(),
        commit: Some(Commit {
            drv_path: drv_path.clone(),
            placed,
            outputs: outputs.clone().into_iter().collect(),
            locks,
        }),
    })
}

/// Puts a differing `--check` output next to the valid one as
/// `<path>.check`, like Nix with `--keep-failed`.
fn keep_check_output(
    store: &LocalStore,
    path: &StorePath,
    host: &std::path::Path,
) -> Option<String> {
    let mut dest: PathBuf = store.real_path(path);
    dest.as_mut_os_string().push(".check");
    let _ = crate::job::remove_tree(&dest);
    std::fs::rename(host, &dest).ok()?;
    Some(format!("{}.check", store.print_path(path)))
}

/// Substitutes the missing `paths` (outputs of one derivation) under their
/// locks. `Ok(true)`: all valid now.
pub(crate) fn substitute_step(
    ctx: &StepCtx<'_>,
    paths: &BTreeSet<StorePath>,
) -> Result<bool, RealiseError> {
    let Some(subst) = &ctx.settings.substituter else {
        return Ok(false);
    };
    let _locks = lock_paths(ctx, &paths.iter().collect())?;
    for p in paths {
        if ctx.store.is_valid_sync(p)? {
            continue;
        }
        match subst.substitute(ctx.store, p) {
            Ok(Substituted::Done) => {}
            Ok(Substituted::NotAvailable) => return Ok(false),
            Err(e) => {
                ctx.logger.warn(&format!(
                    "substituting '{}' failed: {e}; building it instead",
                    ctx.store.print_path(p)
                ));
                return Ok(false);
            }
        }
        if !ctx.store.is_valid_sync(p)? {
            return Err(StoreError::InvalidPath(ctx.store.print_path(p)).into());
        }
    }
    Ok(true)
}
