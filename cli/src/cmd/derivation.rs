//! `b3 derivation`: inspect `.drv` files.
//!
//! `show` prints Nix 2.8's `nix show-derivation` JSON. Arguments are drv
//! store paths or plain `.drv` files anywhere (whose store path is then
//! computed from their contents, as Nix would name them). A store path is
//! read from the b3 store when `--store`/`B3_STORE` names one that holds it
//! (`<root>/<store dir>/…`), else at its logical location (e.g. Nix's own
//! store on this machine).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use b3_store::derivation::json::show_derivations;
use b3_store::derivation::Derivation;
use b3_store::path::{StoreDir, StorePath};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print derivations as JSON, like `nix show-derivation`.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// `.drv` store paths or `.drv` files.
    #[arg(required = true, value_name = "DRV-PATH")]
    paths: Vec<String>,
    /// Also show the derivations these depend on, recursively.
    #[arg(short, long)]
    recursive: bool,
    /// Logical store directory the derivations refer to.
    #[arg(long, env = "NIX_STORE_DIR", default_value = "/nix/store")]
    store_dir: String,
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Show(a) => show(g, a),
    }
}

fn read_drv(store_dir: &StoreDir, file: &Path) -> anyhow::Result<Derivation> {
    let bytes = std::fs::read(file).with_context(|| format!("reading '{}'", file.display()))?;
    Derivation::from_aterm(store_dir, &bytes)
        .with_context(|| format!("parsing derivation '{}'", file.display()))
}

/// Where to read a store path: in the b3 store if it has it, else at the
/// logical path.
fn file_of(root: Option<&Path>, store_dir: &StoreDir, p: &StorePath) -> PathBuf {
    let logical = store_dir.display(p);
    if let Some(root) = root {
        let physical = root.join(logical.trim_start_matches('/'));
        if physical.is_file() {
            return physical;
        }
    }
    PathBuf::from(logical)
}

/// The store path a `.drv` argument stands for, and its parsed contents.
fn load(
    root: Option<&Path>,
    store_dir: &StoreDir,
    arg: &str,
) -> anyhow::Result<(StorePath, Derivation)> {
    if let Ok(p) = store_dir.parse(arg) {
        if !p.is_derivation() {
            bail!("'{arg}' is not a derivation");
        }
        let file = file_of(root, store_dir, &p);
        return Ok((p, read_drv(store_dir, &file)?));
    }
    let file = Path::new(arg);
    let drv = read_drv(store_dir, file)?;
    // A file outside the store: name it as Nix would have when writing it.
    let file_name = file
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let name = match file_name.strip_suffix(".drv") {
        // `<hash>-<name>.drv` copied out of a store keeps its name.
        Some(stem) => match StorePath::from_base_name(file_name) {
            Ok(p) => p.derivation_name().unwrap_or(stem).to_owned(),
            Err(_) => stem.to_owned(),
        },
        None => drv
            .name()
            .with_context(|| format!("'{arg}' has no .drv suffix and no 'name' variable"))?
            .to_owned(),
    };
    let path = drv.path(store_dir, &name)?;
    Ok((path, drv))
}

fn show(g: &Global, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let store_dir = StoreDir::new(&a.store_dir)?;
    let root = g.store.as_deref();
    let mut drvs: BTreeMap<StorePath, Derivation> = BTreeMap::new();
    for arg in &a.paths {
        let (p, d) = load(root, &store_dir, arg)?;
        drvs.insert(p, d);
    }
    if a.recursive {
        let mut todo: Vec<StorePath> = drvs
            .values()
            .flat_map(|d| d.input_drvs.keys().cloned())
            .collect();
        while let Some(p) = todo.pop() {
            if drvs.contains_key(&p) {
                continue;
            }
            let d = read_drv(&store_dir, &file_of(root, &store_dir, &p))?;
            todo.extend(d.input_drvs.keys().cloned());
            drvs.insert(p, d);
        }
    }
    let json = show_derivations(&store_dir, drvs.iter());
    let mut out = std::io::stdout().lock();
    out.write_all(&json)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
