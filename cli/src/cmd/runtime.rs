//! `b3 runtime`: commands that see exactly one closure at the store
//! directory, served from b3's object database through a FUSE view in their
//! own user + mount namespace (the `b3 shell --vfs` machinery).
//!
//! The object database lives at `--odb DIR` / `$B3_ODB`, by default `odb/`
//! under the store root. Running runtimes are recorded in `--registry DIR` /
//! `$B3_RUNTIME_REGISTRY` (default: `/run/b3/runtimes` for root, else under
//! `$XDG_RUNTIME_DIR`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use b3_store::local::LocalStoreConfig;
use b3_vfs::odb::Odb;
use b3_vfs::runtime::{self, RuntimeSpec};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Object database directory (default: `odb/` under the store root).
    #[arg(long, global = true, env = "B3_ODB")]
    odb: Option<PathBuf>,
    /// Registry of running runtimes.
    #[arg(long, global = true, env = "B3_RUNTIME_REGISTRY")]
    registry: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new runtime that sees the closure of PATHS (and
    /// nothing else) at the store directory. Paths missing from the object
    /// database are imported from the local store first.
    Run {
        /// Where the closure appears inside the runtime.
        #[arg(long, default_value = "/nix/store")]
        store_dir: PathBuf,
        /// Append every file access (pid, start time, cmdline, file) here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// PATHS are directories on disk (e.g. in Nix's /nix/store), imported
        /// as they are; no closure is computed.
        #[arg(long)]
        from_disk: bool,
        /// Store paths (e.g. /nix/store/…-hello).
        #[arg(required = true)]
        paths: Vec<String>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// List running runtimes.
    List,
    /// Run a command (default /bin/sh) inside a running runtime.
    Enter {
        id: String,
        #[arg(last = true)]
        command: Vec<OsString>,
    },
    /// Stop a runtime: SIGTERM to all its processes, SIGKILL after the grace time.
    Stop {
        id: String,
        /// Seconds to wait before SIGKILL.
        #[arg(long, default_value_t = 5)]
        grace: u64,
    },
    /// Which declared inputs a traced runtime used, and which it never read.
    Trace {
        log: PathBuf,
        /// Declared store paths (base names or full paths).
        declared: Vec<String>,
    },
    /// Internal: the runtime server (started by `run` in new namespaces).
    #[command(hide = true)]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn base_name(p: &str) -> String {
    p.rsplit('/').next().unwrap_or(p).to_owned()
}

fn odb_dir(g: &Global, a: &Args) -> anyhow::Result<PathBuf> {
    if let Some(d) = &a.odb {
        return Ok(d.clone());
    }
    Ok(LocalStoreConfig::resolve(g.store.clone())?.root.join("odb"))
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let registry = a.registry.clone().unwrap_or_else(runtime::default_registry);
    match &a.command {
        Command::Run {
            store_dir,
            trace,
            from_disk,
            paths,
            command,
        } => {
            let odb_path = odb_dir(g, &a)?;
            let odb = Odb::open(&odb_path)
                .with_context(|| format!("opening the object database {}", odb_path.display()))?;
            let closure = if *from_disk {
                let mut names = Vec::new();
                for p in paths {
                    let name = base_name(p);
                    if !odb.has_root(&name)? {
                        odb.import_path(&name, Path::new(p))
                            .with_context(|| format!("importing {p}"))?;
                    }
                    names.push(name);
                }
                names
            } else {
                let store = super::store::open_store(g)?;
                let mut roots = BTreeSet::new();
                for p in paths {
                    roots.insert(store.resolve_user_path(p)?);
                }
                let mut names = Vec::new();
                for p in store.query_closure_sync(&roots)? {
                    let name = p.base_name();
                    if !odb.has_root(&name)? {
                        odb.import_path(&name, &store.real_path(&p))
                            .with_context(|| format!("importing {}", store.print_path(&p)))?;
                    }
                    names.push(name);
                }
                names
            };
            let spec = RuntimeSpec {
                odb: odb_path,
                store_dir: store_dir.clone(),
                registry,
                trace_log: trace.clone(),
                closure,
                command: command.clone(),
            };
            let exe = std::env::current_exe().context("locating the b3 executable")?;
            // `--`: the spec has options (`--odb`) that clap would take as ours.
            let status = runtime::launch(&exe, &["runtime", "serve", "--"], &spec)?
                .status()
                .context("starting the runtime")?;
            Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            ))
        }
        Command::List => {
            for r in runtime::list(&registry)? {
                println!(
                    "{}\tpid {}\t{} paths at {}\t{}",
                    r.id,
                    r.pid,
                    r.closure.len(),
                    r.store_dir.display(),
                    r.command.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Enter { id, command } => {
            let command = if command.is_empty() {
                vec![OsString::from("/bin/sh")]
            } else {
                command.clone()
            };
            let err = runtime::enter(&registry, id, &command)?.exec();
            bail!("entering runtime {id}: {err}")
        }
        Command::Stop { id, grace } => {
            runtime::stop(&registry, id, Duration::from_secs(*grace))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace { log, declared } => {
            let declared: Vec<String> = declared.iter().map(|d| base_name(d)).collect();
            let rep = b3_vfs::view::trace::report_from_log(log, &declared)
                .with_context(|| format!("reading {}", log.display()))?;
            for (path, files) in &rep.used {
                println!("used {path} ({} files)", files.len());
            }
            for u in &rep.unused {
                println!("unused {u}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { args } => {
            let code = runtime::serve_main(args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}
