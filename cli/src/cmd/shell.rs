//! `b3 shell` (also `nix-shell` through a symlink): build a derivation's
//! inputs and start bash with its build environment, as `nix-shell` does,
//! inside a mount namespace where the store's physical directory is visible
//! at the logical store directory (`/nix/store`) wherever it really lives.
//!
//! `--run CMD` runs CMD non-interactively and exits with its status;
//! `--command CMD` runs it in an interactive shell; `--pure` starts from a
//! nearly empty environment. The environment is computed in [`super::dev_env`];
//! the namespace is set up by [`ns`]. With `--vfs` the store is instead a
//! FUSE view of exactly the environment's closure, served from the object
//! database by a `b3 runtime` (see `b3_vfs::runtime`). On Windows the shell
//! is PowerShell with the environment applied by a start-up script
//! ([`powershell`]).
#![cfg_attr(not(target_os = "linux"), allow(unused_imports, dead_code))]

#[cfg(target_os = "linux")]
pub mod ns;
pub mod powershell;

/// Elsewhere the shell cannot enter a namespace yet (Windows support
/// belongs to the vfs/WinFSP work).
#[cfg(not(target_os = "linux"))]
pub mod ns {
    pub const ENTER_ARG: &str = "__b3-shell-enter";
    pub fn enter_main(_args: &[std::ffi::OsString]) -> std::process::ExitCode {
        eprintln!("error: b3 shell's namespaces need Linux");
        std::process::ExitCode::FAILURE
    }
}

use std::ffi::OsString;
#[cfg(target_os = "linux")]
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use b3_store::local::LocalStore;

use super::dev_env::{self, DevEnv, EnvOptions, Then};
use super::Global;
use crate::installable::{self, DefaultFile, InstallableArgs};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    #[command(flatten)]
    pub inst: InstallableArgs,
    /// Run CMD in a non-interactive shell and exit with its status.
    #[arg(long, value_name = "CMD", conflicts_with = "command")]
    pub run: Option<String>,
    /// Run CMD in an interactive shell, then exit.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    #[command(flatten)]
    pub env: EnvArgs,
    /// Show the store through a FUSE view of exactly the environment's
    /// closure, served from the object database (a `b3 runtime`), instead
    /// of bind-mounting the whole store.
    #[arg(long)]
    pub vfs: bool,
    /// Record every file the shell's processes open in FILE (implies
    /// `--vfs`) and report, on exit, which inputs were used and which never read.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// How the shell sees the store.
#[derive(Debug, Clone)]
pub enum StoreView {
    /// The store's physical directory bind-mounted at the store directory.
    Bind,
    /// A runtime: a FUSE view of these store paths (base names), served
    /// from the object database at `odb`.
    Vfs {
        odb: PathBuf,
        closure: Vec<String>,
        trace: Option<PathBuf>,
    },
}

/// Options shared by `b3 shell` and `b3 print-env`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EnvArgs {
    /// Clear the environment first (keeping HOME, USER, PATH, TERM, …).
    #[arg(long)]
    pub pure: bool,
    /// The default: keep the caller's environment.
    #[arg(long, conflicts_with = "pure")]
    pub impure: bool,
    /// Also keep this variable with `--pure` (repeatable).
    #[arg(long = "keep", value_name = "NAME")]
    pub keep: Vec<String>,
    /// Expose a host path in the sandbox of the input builds (`TARGET=SOURCE`).
    #[arg(long = "sandbox-path", value_name = "SPEC")]
    pub sandbox_paths: Vec<String>,
    /// `NIX_BUILD_CORES` (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub cores: u32,
    /// Set a Nix setting for this invocation (repeatable), after nix.conf.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub option: Vec<String>,
}

impl EnvArgs {
    pub fn options(&self) -> EnvOptions {
        EnvOptions {
            pure: self.pure,
            clean: false,
            keep: self.keep.clone(),
            sandbox_paths: self.sandbox_paths.clone(),
            cores: self.cores,
            options: self.option.clone(),
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open_store(g)?;
    let items = installable::resolve(&store, &a.inst, DefaultFile::Shell)?;
    let opts = a.env.options();
    let env = dev_env::prepare(&store, &items, &opts)?;
    let (then, interactive) = match (&a.run, &a.command) {
        (Some(cmd), _) => (Then::Run(cmd.clone()), false),
        (None, Some(cmd)) => (Then::Run(cmd.clone()), true),
        (None, None) => (Then::Interactive, true),
    };
    let view = if a.vfs || a.trace.is_some() {
        vfs_view(g, &store, &env, a.trace.clone())?
    } else {
        StoreView::Bind
    };
    let code = run_in_env(&store, &env, &then, opts.pure, interactive, false, &view)?;
    if let Some(log) = &a.trace {
        report_trace(&store, &env, log)?;
    }
    Ok(code)
}

/// `--trace`: which of the environment's inputs the shell used (and how
/// many of their files), and which it never read; on stderr.
#[cfg(target_os = "linux")]
fn report_trace(store: &LocalStore, env: &DevEnv, log: &Path) -> anyhow::Result<()> {
    let declared: Vec<String> = env.roots.iter().map(|p| p.base_name()).collect();
    let rep = b3_vfs::view::trace::report_from_log(log, &declared)
        .with_context(|| format!("reading the trace {}", log.display()))?;
    print_trace_report(store.store_dir().as_str(), &rep.used, &rep.unused);
    Ok(())
}

/// The `--trace` report on stderr (`b3 shell` and `b3 build`): one `used
/// STORE-PATH (N files)` line per store path touched, one `unused
/// STORE-PATH` per declared input never read.
pub fn print_trace_report(
    store_dir: &str,
    used: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    unused: &[String],
) {
    for (path, files) in used {
        eprintln!("used {store_dir}/{path} ({} files)", files.len());
    }
    for path in unused {
        eprintln!("unused {store_dir}/{path}");
    }
}

/// `--vfs`/`--trace` of `b3 build`: vfs-backed build settings over the
/// object database [`odb_dir`] (the trace log starts empty). `vfs` is also
/// true when nix.conf (or `NIX_CONFIG`, or `--option`) sets
/// `b3-vfs-builds = true`, a b3-only setting real Nix warns about and
/// ignores.
pub fn vfs_builds_with(
    g: &Global,
    vfs: bool,
    trace: Option<&Path>,
) -> anyhow::Result<Option<std::sync::Arc<b3_builder::vfs_build::VfsBuilds>>> {
    if !vfs && trace.is_none() {
        return Ok(None);
    }
    let trace = match trace {
        Some(t) => {
            std::fs::write(t, b"").with_context(|| format!("creating {}", t.display()))?;
            Some(std::path::absolute(t).unwrap_or_else(|_| t.to_path_buf()))
        }
        None => None,
    };
    Ok(Some(std::sync::Arc::new(
        b3_builder::vfs_build::VfsBuilds::new(odb_dir(g)?, trace),
    )))
}

/// After a vfs-backed build: each build's trace report, headed by its
/// derivation when there were several.
pub fn report_build_traces(store_dir: &str, vfs: &b3_builder::vfs_build::VfsBuilds) {
    if !vfs.tracing() {
        return;
    }
    let traces = vfs.traces();
    for t in &traces {
        if traces.len() > 1 {
            eprintln!("trace of {}:", t.drv);
        }
        print_trace_report(store_dir, &t.used, &t.unused);
    }
}

/// The object database views are served from: `$B3_ODB`, default `odb/`
/// under the store root.
pub fn odb_dir(g: &Global) -> anyhow::Result<PathBuf> {
    Ok(match std::env::var_os("B3_ODB") {
        Some(p) => PathBuf::from(p),
        None => b3_store::local::LocalStoreConfig::resolve(g.store.clone())?
            .root
            .join("odb"),
    })
}

#[cfg(not(target_os = "linux"))]
fn report_trace(_: &LocalStore, _: &DevEnv, _: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn vfs_view(
    _: &Global,
    _: &LocalStore,
    _: &DevEnv,
    _: Option<PathBuf>,
) -> anyhow::Result<StoreView> {
    anyhow::bail!("--vfs needs Linux (FUSE) for now")
}

/// The closure of what `env` uses, imported into the object database
/// (`$B3_ODB`, default `odb/` under the store root) where missing.
#[cfg(target_os = "linux")]
fn vfs_view(
    g: &Global,
    store: &LocalStore,
    env: &DevEnv,
    trace: Option<PathBuf>,
) -> anyhow::Result<StoreView> {
    let odb_path = odb_dir(g)?;
    let odb = b3_vfs::odb::Odb::open(&odb_path)
        .with_context(|| format!("opening the object database {}", odb_path.display()))?;
    let mut closure = Vec::new();
    for p in store.query_closure_sync(&env.roots)? {
        let name = p.base_name();
        if !odb.has_root(&name)? {
            odb.import_path(&name, &store.real_path(&p))
                .with_context(|| format!("importing {}", store.print_path(&p)))?;
        }
        closure.push(name);
    }
    // The trace is appended to: start from an empty file.
    if let Some(t) = &trace {
        std::fs::write(t, b"").with_context(|| format!("creating {}", t.display()))?;
    }
    Ok(StoreView::Vfs {
        odb: odb_path,
        closure,
        trace: trace.map(|t| std::path::absolute(&t).unwrap_or(t)),
    })
}

/// The shell to start: `$NIX_BUILD_SHELL`, else bash from `PATH`, else `sh`.
pub fn shell_program() -> PathBuf {
    if let Some(s) = std::env::var_os("NIX_BUILD_SHELL").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    find_in_path("bash").unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_bash(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("bash"))
}

/// On Windows: PowerShell with the environment applied by its start-up
/// script (see [`powershell`]); the store is used where it is, so store
/// paths in the environment keep their logical spelling.
#[cfg(windows)]
pub fn run_in_env(
    store: &LocalStore,
    env: &DevEnv,
    then: &Then,
    _pure: bool,
    interactive: bool,
    _to_stderr: bool,
    view: &StoreView,
) -> anyhow::Result<ExitCode> {
    if !matches!(view, StoreView::Bind) {
        anyhow::bail!("--vfs needs Linux (FUSE) for now");
    }
    let program = powershell::find_program(
        std::env::var_os("PATH").as_deref(),
        std::env::var_os("SystemRoot").as_deref(),
        |p| p.is_file(),
    )
    .context("neither pwsh.exe nor powershell.exe was found")?;
    let before: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let changes = super::print_env::diff(&before, &env.vars);
    let prefix: Vec<String> = env
        .path_prefix
        .iter()
        .map(|p| dev_env::physical(store, p).map(|p| p.to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    let text = powershell::script(
        &changes,
        &prefix,
        then,
        env.vars.contains_key("NIX_SHELL_PRESERVE_PROMPT"),
    );
    let code = powershell::spawn(env.tmp.path(), &program, &text, interactive, &before)
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn run_in_env(
    _store: &LocalStore,
    _env: &DevEnv,
    _then: &Then,
    _pure: bool,
    _interactive: bool,
    _to_stderr: bool,
    _view: &StoreView,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("b3 shell needs Linux namespaces; not available on this platform yet")
}

/// Starts the shell for `env` and waits for it. With `to_stderr`, the
/// shell's standard output goes to standard error (for callers that print
/// something else on stdout).
#[cfg(target_os = "linux")]
pub fn run_in_env(
    store: &LocalStore,
    env: &DevEnv,
    then: &Then,
    pure: bool,
    interactive: bool,
    to_stderr: bool,
    view: &StoreView,
) -> anyhow::Result<ExitCode> {
    let shell = shell_program();
    let rc = env.tmp.path().join("rc");
    std::fs::write(&rc, env.rc_script(then, pure)).context("writing the shell's start-up file")?;
    let mut args: Vec<OsString> = Vec::new();
    let mut vars = env.vars.clone();
    if interactive {
        if is_bash(&shell) {
            // `-i`: bash reads --rcfile only when interactive, and without a
            // terminal on stdin it would not be.
            args.extend(["--rcfile".into(), rc.clone().into_os_string(), "-i".into()]);
        } else {
            // POSIX shells read $ENV when interactive.
            vars.insert("ENV".into(), rc.to_string_lossy().into_owned());
            args.push("-i".into());
        }
    } else {
        args.push(rc.clone().into_os_string());
    }
    let staging = env.tmp.path().join("root");
    std::fs::create_dir(&staging).context("creating the shell's staging directory")?;
    // Kept open until the runtime's server has started (see `launch`).
    let mut _closure_fd = None;
    let mut cmd = match view {
        StoreView::Bind => ns::command(
            store.real_store_dir(),
            Path::new(store.store_dir().as_str()),
            &staging,
            shell.as_os_str(),
            &args,
        )?,
        StoreView::Vfs {
            odb,
            closure,
            trace,
        } => {
            let spec = b3_vfs::runtime::RuntimeSpec {
                odb: odb.clone(),
                store_dir: PathBuf::from(store.store_dir().as_str()),
                registry: b3_vfs::runtime::default_registry(),
                trace_log: trace.clone(),
                closure: closure.clone(),
                command: std::iter::once(shell.clone().into_os_string())
                    .chain(args.iter().cloned())
                    .collect(),
            };
            let exe = std::env::current_exe().context("locating the b3 executable")?;
            // `--`: the spec's options (`--odb`) are not `runtime serve`'s.
            let (cmd, fd) =
                b3_vfs::runtime::launch(&exe, &["runtime", "serve", "--"], &spec)?.into_parts();
            _closure_fd = Some(fd);
            cmd
        }
    };
    cmd.env_clear().envs(&vars);
    if to_stderr {
        let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
        cmd.stdout(Stdio::from(fd));
    }
    let status = {
        let _guard = IgnoreInterrupts::new();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", shell.display()))?;
        child.wait()?
    };
    Ok(exit_code(status))
}

/// Exit status of a child as ours (128+signal when killed).
#[cfg(target_os = "linux")]
pub fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Like `system(3)`: while the shell runs, ^C and ^\ are for it, not for b3
/// (which must survive to clean up the build directory).
#[cfg(target_os = "linux")]
struct IgnoreInterrupts {
    int: libc::sighandler_t,
    quit: libc::sighandler_t,
}

#[cfg(target_os = "linux")]
impl IgnoreInterrupts {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN; the previous handlers are restored on drop.
        unsafe {
            IgnoreInterrupts {
                int: libc::signal(libc::SIGINT, libc::SIG_IGN),
                quit: libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        // SAFETY: restoring the handlers saved in `new`.
        unsafe {
            libc::signal(libc::SIGINT, self.int);
            libc::signal(libc::SIGQUIT, self.quit);
        }
    }
}

/// `nix-shell ARGS`: the same as `b3 shell`, with nix-shell's spelling.
pub fn main_multicall(args: Vec<String>) -> ExitCode {
    use clap::Parser;
    #[derive(Parser)]
    #[command(name = "nix-shell")]
    struct Cli {
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        shell: Args,
    }
    let cli = match Cli::try_parse_from(std::iter::once("nix-shell".to_string()).chain(args)) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    super::init_logging(&cli.global);
    match run(&cli.global, cli.shell) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
