//! `b3 build`: realise derivations in the local store, building them (and
//! their input derivations) in the sandbox, like `nix-build` /
//! `nix-store --realise`.
//!
//! Arguments are installables (`crate::installable`): a Nix file (default
//! `./default.nix`) or `-E` expressions with `-A attr`, evaluated and
//! written to the store, or `.drv` store paths optionally with `!out,dev`.
//! Output paths are printed one per line on stdout. Like `nix-build`, an
//! evaluated build leaves `result` links (indirect GC roots: `result`,
//! `result-dev`, `result-2`, ...) unless `--no-out-link`; for `.drv` paths
//! (the `nix-store --realise` form) only `-o` makes one. Settings come from nix.conf (`max-jobs`, `cores`,
//! `sandbox-paths`/`extra-sandbox-paths`, `keep-failed`, `keep-going`,
//! `timeout`, `max-silent-time`, `log-lines`) and `--option NAME VALUE`;
//! the flags here override them. Missing outputs are substituted from the
//! configured binary caches (`substituters`, `trusted-public-keys`,
//! `require-sigs`) before anything is built. Progress: a live display on a
//! terminal (counts, timers, the dependency tree of the running builds),
//! plain lines when piped (`-L` adds the build logs), Nix's records with
//! `--log-format internal-json`. The exit status is Nix's (100 build
//! failure, 101 timeout, 102 hash mismatch, 104 not deterministic).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use b3_builder::realise::RealiseSettings;
use b3_builder::sandbox::SandboxPath;
use b3_builder::schedule::{realise_goals, Goal};
use b3_store::activity::{self, Logger, Verbosity};
use b3_store::path::{StoreDir, StorePath};

use super::Global;
use crate::installable::{self, DefaultFile, InstallableArgs, Resolved};
use crate::logformat::LogFormat;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    inst: InstallableArgs,
    /// Builds to run at once (`auto` = number of cores; default: the
    /// `max-jobs` setting if set, else the number of cores).
    #[arg(long = "max-jobs", short = 'j', value_name = "N")]
    max_jobs: Option<String>,
    /// Keep building other derivations after one fails.
    #[arg(long = "keep-going", short = 'k')]
    keep_going: bool,
    /// Keep the build directory of failed builds.
    #[arg(long = "keep-failed", short = 'K')]
    keep_failed: bool,
    /// Rebuild derivations whose outputs are valid and report whether the
    /// result is bit-identical; registers nothing.
    #[arg(long)]
    check: bool,
    /// Show the full build logs.
    #[arg(long = "print-build-logs", short = 'L')]
    print_build_logs: bool,
    /// Set a Nix setting for this invocation (repeatable).
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    option: Vec<String>,
    /// Expose a host path in the sandbox, read-only (`TARGET=SOURCE`,
    /// `PATH`; a trailing `?` makes it optional). Repeatable, e.g.
    /// `--sandbox-path /bin/sh=/bin/busybox`. Added to `sandbox-paths`.
    #[arg(long = "sandbox-path", value_name = "SPEC")]
    sandbox_paths: Vec<String>,
    /// `NIX_BUILD_CORES` for the builders (default: the `cores` setting).
    #[arg(long)]
    cores: Option<u32>,
    /// Kill a build that runs longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Kill a build that prints nothing for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_silent_time: Option<u64>,
    /// Name of the result links (default `result`; indirect GC roots).
    #[arg(long, short = 'o', value_name = "PATH")]
    out_link: Option<PathBuf>,
    /// Do not create result links.
    #[arg(long)]
    no_out_link: bool,
    /// Print timing statistics (builds, sandbox set-up times) on stderr.
    #[arg(long)]
    stats: bool,
    /// Show each build its inputs through a FUSE view of exactly its input
    /// closure, served from the object database (`$B3_ODB`, default `odb/`
    /// under the store root), instead of bind mounts of the store.
    #[arg(long)]
    vfs: bool,
    /// Record every file the builds open in FILE (implies `--vfs`) and
    /// report which inputs each build used and which it never read.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// Where the records of this build go, and whether the logs are shown.
fn install_logger(
    g: &Global,
    print_build_logs: bool,
) -> (Logger, Option<Arc<crate::progress::ProgressSink>>, bool) {
    let verbosity = Verbosity::from_flags(g.verbose, 0);
    match g.log_format {
        // Machine formats (and an explicit raw) as `main` installed them.
        Some(LogFormat::InternalJson) => (activity::global(), None, print_build_logs),
        Some(LogFormat::Raw) => (activity::global(), None, true),
        Some(LogFormat::Bar) | Some(LogFormat::BarWithLogs) | None => {
            let logs = print_build_logs || g.log_format == Some(LogFormat::BarWithLogs);
            let (sink, display) = crate::progress::human_sink(verbosity, logs);
            let logger = Logger::new(sink, verbosity);
            activity::set_global(logger.clone());
            (logger, display, logs)
        }
    }
}

fn settings_from(
    g: &Global,
    a: &Args,
    logger: &Logger,
    logs_shown: bool,
    store_dir: &StoreDir,
) -> anyhow::Result<RealiseSettings> {
    let config = super::config::load(&a.option)?;
    for w in config.warnings() {
        logger.warn(&w.to_string());
    }
    let mut s = super::realise_config::from_config(&config, store_dir)?;
    s.logger = Some(logger.clone());
    for spec in &a.sandbox_paths {
        s.extra_paths.push(SandboxPath::parse(spec)?);
    }
    if let Some(c) = a.cores {
        s.cores = c;
    }
    match &a.max_jobs {
        Some(j) if j == "auto" => s.max_jobs = RealiseSettings::default().max_jobs,
        Some(j) => {
            s.max_jobs = j
                .parse()
                .map_err(|_| anyhow::anyhow!("'--max-jobs' should be 'auto' or an integer"))?
        }
        None => {}
    }
    if s.max_jobs == 0 {
        anyhow::bail!(
            "unable to start any build; either increase '--max-jobs' or enable remote builds"
        );
    }
    s.keep_going |= a.keep_going;
    s.keep_failed |= a.keep_failed;
    if let Some(t) = a.timeout {
        s.timeout = Some(Duration::from_secs(t));
    }
    if let Some(t) = a.max_silent_time {
        s.max_silent = Some(Duration::from_secs(t));
    }
    if logs_shown {
        s.log_lines = 0;
    }
    s.vfs = super::shell::vfs_builds_with(
        g,
        a.vfs || config.settings.b3_vfs_builds,
        a.trace.as_deref(),
    )?;
    Ok(s)
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    b3_builder::platform::sandbox_support()?;
    let (logger, display, logs_shown) = install_logger(g, a.print_build_logs);
    let store = super::store::open_store(g)?;
    if let Some(d) = &display {
        // The display's dependency tree reads the planned derivations.
        let s = store.clone();
        d.set_inputs_of(Box::new(move |drv| {
            let Ok(p) = s.store_dir().parse(drv) else {
                return Vec::new();
            };
            match b3_builder::realise::read_derivation(&s, &p) {
                Ok(d) => d.input_drvs.keys().map(|i| s.print_path(i)).collect(),
                Err(_) => Vec::new(),
            }
        }));
    }
    let settings = settings_from(g, &a, &logger, logs_shown, store.store_dir())?;
    let items = installable::resolve(&store, &a.inst, DefaultFile::Build)?;
    let evaluated = items.is_empty()
        || a.inst.from_expr
        || !a.inst.packages.is_empty()
        || a.inst.items.iter().any(|i| {
            store
                .resolve_user_path(i.split('!').next().unwrap_or(i))
                .is_err()
        });
    let mut goals = Vec::new();
    for item in &items {
        match item {
            Resolved::Derivation { drv, outputs } => goals.push(Goal {
                drv: drv.clone(),
                outputs: outputs.clone(),
                check: a.check,
            }),
            Resolved::Path(p) => {
                if !store.is_valid_sync(p)? {
                    anyhow::bail!("path '{}' is not valid", store.print_path(p));
                }
            }
        }
    }

    let started = std::time::Instant::now();
    let report = realise_goals(&store, &settings, &goals, None);
    if let Some(d) = &display {
        d.finish();
    }
    if a.stats {
        print_stats(&report, started.elapsed());
    }
    if let Some(v) = &settings.vfs {
        super::shell::report_build_traces(store.store_dir().as_str(), v);
    }
    let code = report.exit_code();
    let outputs = match report.into_result() {
        Ok(o) => o,
        Err(e) => {
            logger.error(&e.to_string());
            return Ok(ExitCode::from(code));
        }
    };
    let mut built = outputs.into_iter();
    let base = a
        .out_link
        .clone()
        .unwrap_or_else(|| PathBuf::from("result"))
        .to_string_lossy()
        .into_owned();
    let make_links = !a.no_out_link && (evaluated || a.out_link.is_some());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, item) in items.iter().enumerate() {
        let outs: Vec<(String, StorePath)> = match item {
            Resolved::Derivation { .. } => built.next().unwrap_or_default().into_iter().collect(),
            Resolved::Path(p) => vec![("out".to_string(), p.clone())],
        };
        for (name, path) in outs {
            if make_links {
                let link = PathBuf::from(crate::multicall::link_name(&base, i, &name));
                store
                    .create_result_link(&link, &path)
                    .with_context(|| format!("creating {}", link.display()))?;
            }
            writeln!(out, "{}", store.print_path(&path))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--stats`: how many derivations were built and what the sandbox cost.
fn print_stats(report: &b3_builder::schedule::RealiseReport, wall: Duration) {
    let mut setup: Vec<Duration> = report.built.iter().map(|b| b.setup).collect();
    setup.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = setup.get(setup.len() / 2).copied().unwrap_or_default();
    let mean = if setup.is_empty() {
        Duration::ZERO
    } else {
        setup.iter().sum::<Duration>() / setup.len() as u32
    };
    let max = setup.last().copied().unwrap_or_default();
    eprintln!(
        "stats: built {} derivations ({} by other processes, {} substituted) in {:.3} s; \
         sandbox set-up per build: median {:.2} ms, mean {:.2} ms, max {:.2} ms; \
         {} sandboxes made ahead of time ({} made in all, in {} network namespaces \
         made and {} taken again)",
        report.built.len(),
        report.built_elsewhere.len(),
        report.substituted.len(),
        wall.as_secs_f64(),
        ms(median),
        ms(mean),
        ms(max),
        report.premade_sandboxes,
        report.sandboxes_made,
        report.network_namespaces.0,
        report.network_namespaces.1
    );
    if report.built.is_empty() {
        return;
    }
    eprintln!(
        "stats: builds in a work directory an earlier build used (emptied): {}; \
         on the scheduling thread (nothing else could run): {}",
        report.reused_work_dirs, report.builds_in_line
    );
    // Median per phase of a build step, and what is left of the wall time
    // (start-up, evaluation of the goals, scheduling) when the steps'
    // own time is taken out (exact for a chain, where they run one by one).
    let phases = b3_builder::timing::median_phases(report.built.iter().map(|b| &b.timeline));
    let steps: Duration = report.built.iter().map(|b| b.timeline.total()).sum();
    let mut line = String::from("stats: per build (median):");
    let mut sum = Duration::ZERO;
    for (name, d) in &phases {
        sum += *d;
        line.push_str(&format!(" {name} {:.2}", ms(*d)));
    }
    line.push_str(&format!(
        " = {:.2} ms; sum of steps {:.3} s, wall minus steps {:.3} s",
        ms(sum),
        steps.as_secs_f64(),
        wall.saturating_sub(steps).as_secs_f64()
    ));
    eprintln!("{line}");
    // The means, where the slow builds show (a chain's wall time is the sum).
    let mut means: Vec<(&str, Duration)> =
        phases.iter().map(|(n, _)| (*n, Duration::ZERO)).collect();
    for b in &report.built {
        for (name, d) in b.timeline.phases() {
            match means.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += *d,
                None => means.push((name, *d)),
            }
        }
    }
    let n = report.built.len() as f64;
    let parts: Vec<String> = means
        .iter()
        .map(|(name, d)| format!("{name} {:.2}", ms(*d) / n))
        .collect();
    eprintln!(
        "stats: per build (mean): {} = {:.2} ms",
        parts.join(" "),
        ms(steps) / n
    );
    if !report.tail.is_empty() {
        let parts: Vec<String> = report
            .tail
            .iter()
            .map(|(name, d)| format!("{name} {:.2}", ms(*d)))
            .collect();
        eprintln!("stats: after the last build (ms): {}", parts.join(" "));
    }
    // Registering happens after the step, while later builds run.
    let mut reg = report.registrations.clone();
    if !reg.is_empty() {
        reg.sort();
        eprintln!(
            "stats: registration per build (overlapped with later builds): median {:.2} ms, max {:.2} ms",
            ms(reg[reg.len() / 2]),
            ms(reg[reg.len() - 1])
        );
    }
}
