//! `b3 store`: the local store from the command line.
//!
//! The store is opened at `--store DIR` / `$B3_STORE` / the user's data
//! directory (`$XDG_DATA_HOME/b3`); paths are printed in the logical store
//! directory `/nix/store`, as Nix prints them.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{GcOptions, LocalStore, LocalStoreConfig, RepairSource, VerifyOptions};
use b3_store::path::{FileIngestionMethod, StorePath};
use b3_store::traits::ValidPathInfo;

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add files or directories to the store (as `nix-store --add`): recursive
    /// SHA-256, named after the file. Prints each store path.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Add files with a given hash algorithm (as `nix-store --add-fixed`).
    AddFixed {
        /// Hash the NAR serialisation instead of the file's bytes.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// md5, sha1, sha256 or sha512.
        algo: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write the NAR serialisation of a store path to stdout (as `nix-store --dump`).
    Dump { path: String },
    /// Export store paths on stdout. `--format nar` (the default): the NAR
    /// of one path (same bytes as `dump`). `--format nix`: the paths (not
    /// their closure) in the format of `nix-store --export`, readable by
    /// `nix-store --import` and `b3 store import --format nix`.
    Export {
        #[arg(long, value_enum, default_value = "nar")]
        format: ExportFormat,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Import a NAR stream from stdin (or --file).
    ///
    /// Two forms:
    ///   b3 store import --name NAME < x.nar
    ///     content-addressed: the path is what `b3 store add` would give for
    ///     the unpacked contents (fixed:r:sha256); prints it.
    ///   b3 store import --path /nix/store/HASH-NAME --nar-hash sha256:… [--nar-size N]
    ///                   [--reference P]… [--deriver D] < x.nar
    ///     input-addressed: the NAR must have exactly that hash (and size);
    ///     references must already be valid.
    ///   b3 store import --format nix < x.export
    ///     a `nix-store --export` stream (any number of paths with their
    ///     references and deriver); prints each path.
    /// A NAR that is malformed or does not match is rejected and nothing is added.
    #[command(verbatim_doc_comment)]
    Import {
        /// `nar` (one NAR, with --name or --path) or `nix` (an export stream).
        #[arg(long, value_enum, default_value = "nar")]
        format: ExportFormat,
        /// Content-addressed import under this name.
        #[arg(long, conflicts_with_all = ["path", "nar_hash", "nar_size", "reference", "deriver"])]
        name: Option<String>,
        /// The store path the NAR is for.
        #[arg(long, requires = "nar_hash")]
        path: Option<String>,
        /// Expected NAR hash (`sha256:<nix32>`, SRI, or base16 with prefix).
        #[arg(long)]
        nar_hash: Option<String>,
        /// Expected NAR size in bytes.
        #[arg(long)]
        nar_size: Option<u64>,
        /// A store path the imported path refers to (repeatable).
        #[arg(long)]
        reference: Vec<String>,
        #[arg(long)]
        deriver: Option<String>,
        /// Read the NAR from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Query store path metadata (as `nix-store --query`).
    Query {
        #[command(flatten)]
        what: QueryWhat,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Delete unreachable paths (as `nix-store --gc`).
    Gc {
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Do not keep paths that running processes use (their executables,
        /// mapped libraries, open files, environment, command line).
        #[arg(long)]
        no_runtime_roots: bool,
        /// Stop after freeing at least this many bytes (suffixes K, M, G).
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        max_freed: Option<u64>,
    },
    /// Check the store: vanished, corrupted and unregistered paths.
    Verify {
        /// Rehash every path and compare with the registered NAR hash.
        #[arg(long)]
        check_contents: bool,
        /// Restore damaged paths from a source holding a good copy, drop
        /// vanished paths nothing refers to, delete unregistered entries.
        #[arg(long)]
        repair: bool,
        /// A directory of store paths to repair from (repeatable). By
        /// default the machine's real store directory (/nix/store) is used
        /// when it is not this store's physical directory.
        #[arg(long)]
        repair_from: Vec<PathBuf>,
        /// A NAR file to repair one path from: `STOREPATH=FILE` (repeatable).
        #[arg(long)]
        repair_nar: Vec<String>,
    },
    /// Make a store path a permanent GC root named NAME.
    AddRoot { name: String, path: String },
    /// Create a symlink LINK to a store path and make it an indirect GC root
    /// (as `nix-build` does with `result`).
    Link { path: String, link: PathBuf },
    /// List every valid path.
    List,
    /// Print where the store lives.
    Info,
}

/// The stream `b3 store export`/`import` speak.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A bare NAR of one path.
    Nar,
    /// Nix's export format (`nix-store --export`).
    Nix,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct QueryWhat {
    #[arg(long)]
    references: bool,
    #[arg(long)]
    referrers: bool,
    /// The closure (as `-R`).
    #[arg(long, short = 'R')]
    requisites: bool,
    #[arg(long)]
    deriver: bool,
}

/// Open the store selected by the global options.
pub fn open_store(g: &Global) -> anyhow::Result<LocalStore> {
    let cfg = LocalStoreConfig::resolve(g.store.clone())?;
    let root = cfg.root.clone();
    LocalStore::open(cfg).with_context(|| format!("opening the store at {}", root.display()))
}

fn name_of(p: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    let n = abs
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: cannot name a store path after it", p.display()))?;
    Ok(n.to_string())
}

fn parse_algo(s: &str) -> anyhow::Result<HashAlgo> {
    HashAlgo::from_name(s).with_context(|| format!("unknown hash algorithm '{s}'"))
}

fn parse_hash(s: &str) -> anyhow::Result<Hash> {
    Hash::parse_any(s, None)
        .or_else(|_| Hash::parse_sri(s))
        .map_err(|e| anyhow::anyhow!("invalid hash '{s}': {e}"))
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match c {
        Command::Add { paths } => {
            for p in paths {
                let sp = store.add_path_sync(
                    &name_of(&p)?,
                    &p,
                    FileIngestionMethod::Recursive,
                    HashAlgo::Sha256,
                )?;
                writeln!(out, "{}", store.print_path(&sp))?;
            }
        }
        Command::AddFixed {
            recursive,
            algo,
            paths,
        } => {
            let algo = parse_algo(&algo)?;
            let method = if recursive {
                FileIngestionMethod::Recursive
            } else {
                FileIngestionMethod::Flat
            };
            for p in paths {
                let sp = store.add_path_sync(&name_of(&p)?, &p, method, algo)?;
                writeln!(out, "{}", store.print_path(&sp))?;
            }
        }
        Command::Dump { path } => {
            let sp = store.resolve_user_path(&path)?;
            let mut w = BufWriter::with_capacity(1 << 18, std::io::stdout().lock());
            store.nar_from_path_sync(&sp, &mut w)?;
            w.flush()?;
        }
        Command::Export { format, paths } => {
            let sps: BTreeSet<StorePath> = paths
                .iter()
                .map(|p| store.resolve_user_path(p))
                .collect::<Result<_, _>>()?;
            let mut w = BufWriter::with_capacity(1 << 18, std::io::stdout().lock());
            match format {
                ExportFormat::Nar => {
                    let [sp] = <[StorePath; 1]>::try_from(sps.into_iter().collect::<Vec<_>>())
                        .map_err(|_| anyhow::anyhow!("--format nar exports exactly one path"))?;
                    store.nar_from_path_sync(&sp, &mut w)?;
                }
                ExportFormat::Nix => {
                    b3_store::export::export_paths(&store, &sps, &mut w)?;
                }
            }
            w.flush()?;
        }
        Command::Import {
            format: ExportFormat::Nix,
            file,
            name,
            path,
            nar_hash,
            nar_size,
            reference,
            deriver,
        } => {
            if name.is_some()
                || path.is_some()
                || nar_hash.is_some()
                || nar_size.is_some()
                || !reference.is_empty()
                || deriver.is_some()
            {
                bail!("an export stream names its own paths: --format nix takes only --file");
            }
            let input = open_input(file.as_deref())?;
            let input = std::io::BufReader::with_capacity(1 << 18, input);
            for sp in b3_store::export::import_paths(&store, input)? {
                writeln!(out, "{}", store.print_path(&sp))?;
            }
        }
        Command::Import {
            format: ExportFormat::Nar,
            name,
            path,
            nar_hash,
            nar_size,
            reference,
            deriver,
            file,
        } => {
            let input = open_input(file.as_deref())?;
            let sp = match (name, path) {
                (Some(name), None) => store.import_nar_ca_sync(&name, input)?,
                (None, Some(path)) => {
                    let sp = store.resolve_user_path(&path)?;
                    let nar_hash =
                        parse_hash(nar_hash.as_deref().context("--path needs --nar-hash")?)?;
                    let mut info = ValidPathInfo::new(sp.clone(), nar_hash, 0);
                    info.references = reference
                        .iter()
                        .map(|r| store.resolve_user_path(r))
                        .collect::<Result<_, _>>()?;
                    info.deriver = deriver
                        .as_deref()
                        .map(|d| store.resolve_user_path(d))
                        .transpose()?;
                    match nar_size {
                        Some(n) => {
                            info.nar_size = n;
                            store.add_nar_sync(&info, input)?;
                        }
                        None => store.add_nar_unsized_sync(&mut info, input)?,
                    }
                    sp
                }
                _ => bail!("give either --name NAME or --path PATH --nar-hash HASH"),
            };
            writeln!(out, "{}", store.print_path(&sp))?;
        }
        Command::Query { what, paths } => {
            let sps: Vec<StorePath> = paths
                .iter()
                .map(|p| store.resolve_user_path(p))
                .collect::<Result<_, _>>()?;
            let mut result: BTreeSet<StorePath> = BTreeSet::new();
            let mut derivers: Vec<String> = Vec::new();
            for sp in &sps {
                let info = store
                    .query_path_info_sync(sp)?
                    .with_context(|| format!("path '{}' is not valid", store.print_path(sp)))?;
                if what.references {
                    result.extend(info.references);
                } else if what.referrers {
                    result.extend(store.query_referrers_sync(sp)?);
                } else if what.deriver {
                    derivers.push(match &info.deriver {
                        Some(d) => store.print_path(d),
                        None => "unknown-deriver".to_string(),
                    });
                }
            }
            if what.requisites {
                result = store.query_closure_sync(&sps.iter().cloned().collect())?;
            }
            for d in derivers {
                writeln!(out, "{d}")?;
            }
            for p in result {
                writeln!(out, "{}", store.print_path(&p))?;
            }
        }
        Command::Gc {
            dry_run,
            no_runtime_roots,
            max_freed,
        } => {
            let r = store.collect_garbage(&GcOptions {
                dry_run,
                no_runtime_roots,
                max_freed,
            })?;
            for p in &r.deleted {
                writeln!(out, "{}", store.print_path(p))?;
            }
            let mib = r.bytes_freed as f64 / (1024.0 * 1024.0);
            if dry_run {
                writeln!(
                    out,
                    "{} store paths would be deleted, {mib:.2} MiB would be freed",
                    r.deleted.len()
                )?;
            } else {
                writeln!(
                    out,
                    "{} store paths deleted, {mib:.2} MiB freed",
                    r.deleted.len()
                )?;
            }
        }
        Command::Verify {
            check_contents,
            repair,
            repair_from,
            repair_nar,
        } => {
            let mut sources: Vec<RepairSource> = Vec::new();
            for spec in &repair_nar {
                let (p, f) = spec
                    .split_once('=')
                    .with_context(|| format!("--repair-nar wants STOREPATH=FILE, got '{spec}'"))?;
                sources.push(RepairSource::Nar {
                    path: store.resolve_user_path(p)?,
                    file: PathBuf::from(f),
                });
            }
            sources.extend(repair_from.into_iter().map(RepairSource::StoreDir));
            if sources
                .iter()
                .all(|s| !matches!(s, RepairSource::StoreDir(_)))
            {
                let real = PathBuf::from(store.store_dir().as_str());
                if real.is_dir()
                    && std::fs::canonicalize(&real).ok()
                        != std::fs::canonicalize(store.real_store_dir()).ok()
                {
                    sources.push(RepairSource::StoreDir(real));
                }
            }
            let r = store.verify(&VerifyOptions {
                check_contents,
                repair,
                sources,
            })?;
            for p in &r.vanished {
                eprintln!("path '{}' disappeared", store.print_path(p));
            }
            for c in &r.corrupted {
                eprintln!(
                    "path '{}' was modified! expected hash '{}' ({} bytes), got '{}' ({} bytes)",
                    store.print_path(&c.path),
                    c.expected,
                    c.expected_size,
                    c.got,
                    c.got_size
                );
            }
            for u in &r.unregistered {
                eprintln!(
                    "unregistered entry '{}' in the store directory",
                    store.real_store_dir().join(u).display()
                );
            }
            for d in &r.database {
                eprintln!("database problem: {d}");
            }
            for p in &r.repaired {
                eprintln!("repaired '{}'", store.print_path(p));
            }
            for p in &r.invalidated {
                eprintln!("invalidated vanished path '{}'", store.print_path(p));
            }
            for u in &r.removed {
                eprintln!("removed unregistered entry '{u}'");
            }
            let ok = if repair {
                r.all_repaired()
            } else {
                r.is_clean()
            };
            if !ok {
                if repair {
                    eprintln!("error: some problems could not be repaired");
                } else {
                    eprintln!("error: the store has problems (run with --repair to fix what can be fixed)");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::AddRoot { name, path } => {
            let sp = store.resolve_user_path(&path)?;
            if !store.is_valid_sync(&sp)? {
                bail!("path '{}' is not valid", store.print_path(&sp));
            }
            let link = store.add_root(&name, &sp)?;
            writeln!(out, "{}", link.display())?;
        }
        Command::Link { path, link } => {
            let sp = store.resolve_user_path(&path)?;
            store.create_result_link(&link, &sp)?;
        }
        Command::List => {
            for p in store.all_valid_paths()? {
                writeln!(out, "{}", store.print_path(&p))?;
            }
        }
        Command::Info => {
            writeln!(out, "store directory: {}", store.store_dir())?;
            writeln!(out, "physical store:  {}", store.real_store_dir().display())?;
            writeln!(out, "state directory: {}", store.state_dir().display())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A byte count with an optional binary suffix (`K`, `M`, `G`, `T`).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix '{c}'")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `--file F`, or stdin when it is absent.
fn open_input(file: Option<&std::path::Path>) -> anyhow::Result<Box<dyn std::io::Read>> {
    Ok(match file {
        Some(f) => {
            Box::new(std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?)
        }
        None => Box::new(std::io::stdin().lock()),
    })
}
