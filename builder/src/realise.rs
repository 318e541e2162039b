//! Realising derivations into the local store: read the `.drv`, realise its
//! input derivations first (depth first), run the builder in the sandbox
//! with its outputs in a work directory inside the store, check
//! fixed-output hashes, then hand each output to the store's `add_nar`
//! (which restores, verifies, canonicalises and registers it atomically)
//! with the references found by scanning its NAR, and record the
//! derivation's outputs.
//!
//! [`LocalBuilder`] wraps a [`LocalStore`] and implements the async
//! [`StoreBuild`] trait (plus `StoreRead`/`StoreWrite` by delegation).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use b3_store::derivation::{aterm, Derivation, DerivationError};
use b3_store::hash::{Hash, HashAlgo, Hasher};
use b3_store::local::LocalStore;
use b3_store::path::{ContentAddress, FileIngestionMethod, StoreDir, StorePath};
use b3_store::refscan::RefScanner;
use b3_store::traits::{StoreBuild, StoreError, StoreRead, StoreWrite, ValidPathInfo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drv::{
    check_fixed_output, fixed_output_ca, job_from_derivation, BuildSettings, DrvJobError,
    FixedOutputError,
};
use crate::job::JobError;
use crate::platform::ExitStatus;
use crate::sandbox::SandboxPath;

/// Prefix of work directories in the store directory. The local store
/// sweeps `.b3-tmp-<pid>-…` entries of dead processes, so a crashed build
/// leaves nothing behind for long.
const WORK_PREFIX: &str = ".b3-tmp-";

#[derive(Debug, thiserror::Error)]
pub enum RealiseError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Derivation(#[from] DerivationError),
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("{0}")]
    DrvJob(#[from] DrvJobError),
    #[error("{0}")]
    FixedOutput(#[from] FixedOutputError),
    #[error("reading derivation '{path}': {source}")]
    ReadDrv {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("builder for '{drv}' {how}")]
    BuildFailed { drv: String, how: String },
    #[error("building of '{drv}' timed out after {secs} seconds")]
    TimedOut { drv: String, secs: u64 },
    #[error("building of '{drv}' timed out after {secs} seconds of silence")]
    Silent { drv: String, secs: u64 },
    #[error("builder for '{drv}' failed to produce output path for output '{output}' at '{path}'")]
    MissingOutput {
        drv: String,
        output: String,
        path: String,
    },
    #[error("derivation '{drv}' has no output '{output}'")]
    NoSuchOutput { drv: String, output: String },
    #[error("illegal path references in fixed-output derivation '{0}'")]
    FixedOutputReferences(String),
    #[error("cycle detected in the references of the outputs of '{0}'")]
    OutputCycle(String),
    #[error("serialising output '{path}': {source}")]
    Nar {
        path: String,
        #[source]
        source: b3_nar::Error,
    },
}

/// Nix's wording for a builder that did not succeed.
fn failure_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("failed with exit code {c}"),
        ExitStatus::Signal(s) => {
            let name = match s {
                1 => "Hangup",
                2 => "Interrupt",
                3 => "Quit",
                4 => "Illegal instruction",
                6 => "Aborted",
                7 => "Bus error",
                8 => "Floating point exception",
                9 => "Killed",
                11 => "Segmentation fault",
                13 => "Broken pipe",
                14 => "Alarm clock",
                15 => "Terminated",
                _ => "Unknown signal",
            };
            format!("failed due to signal {s} ({name})")
        }
    }
}

/// Per-machine build settings, without the store-specific parts.
#[derive(Debug, Clone)]
pub struct RealiseSettings {
    pub extra_paths: Vec<SandboxPath>,
    pub cores: u32,
    pub timeout: Option<Duration>,
    pub max_silent: Option<Duration>,
    pub kvm: bool,
    pub impure_env: Option<BTreeMap<String, String>>,
}

impl Default for RealiseSettings {
    fn default() -> Self {
        RealiseSettings {
            extra_paths: Vec::new(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            timeout: None,
            max_silent: None,
            kvm: Path::new("/dev/kvm").exists(),
            impure_env: None,
        }
    }
}

/// Reads and parses the `.drv` at `drv_path` (which must be valid).
pub fn read_derivation(
    store: &LocalStore,
    drv_path: &StorePath,
) -> Result<Derivation, RealiseError> {
    let shown = store.print_path(drv_path);
    store.add_temp_roots([drv_path])?;
    if !store.is_valid_sync(drv_path)? {
        return Err(StoreError::InvalidPath(shown).into());
    }
    let text =
        std::fs::read(store.real_path(drv_path)).map_err(|source| RealiseError::ReadDrv {
            path: shown,
            source,
        })?;
    Ok(aterm::parse(store.store_dir(), &text).map_err(DerivationError::from)?)
}

/// Realises the `wanted` outputs (all if empty) of `drv_path`, building its
/// inputs first as needed. Builder output goes to `log`.
pub fn realise_sync(
    store: &LocalStore,
    settings: &RealiseSettings,
    drv_path: &StorePath,
    wanted: &BTreeSet<String>,
    log: &mut dyn Write,
) -> Result<BTreeMap<String, StorePath>, RealiseError> {
    let mut done = BTreeMap::new();
    realise_inner(store, settings, drv_path, wanted, log, &mut done)
}

fn realise_inner(
    store: &LocalStore,
    settings: &RealiseSettings,
    drv_path: &StorePath,
    wanted: &BTreeSet<String>,
    log: &mut dyn Write,
    done: &mut BTreeMap<StorePath, BTreeMap<String, StorePath>>,
) -> Result<BTreeMap<String, StorePath>, RealiseError> {
    let drv_s = store.print_path(drv_path);
    let all = match done.get(drv_path) {
        Some(outs) => outs.clone(),
        None => {
            let drv = read_derivation(store, drv_path)?;
            let outs = build_if_needed(store, settings, drv_path, &drv, log, done)?;
            done.insert(drv_path.clone(), outs.clone());
            outs
        }
    };
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut picked = BTreeMap::new();
    for w in wanted {
        let p = all.get(w).ok_or_else(|| RealiseError::NoSuchOutput {
            drv: drv_s.clone(),
            output: w.clone(),
        })?;
        picked.insert(w.clone(), p.clone());
    }
    Ok(picked)
}

fn build_if_needed(
    store: &LocalStore,
    settings: &RealiseSettings,
    drv_path: &StorePath,
    drv: &Derivation,
    log: &mut dyn Write,
    done: &mut BTreeMap<StorePath, BTreeMap<String, StorePath>>,
) -> Result<BTreeMap<String, StorePath>, RealiseError> {
    let drv_s = store.print_path(drv_path);
    let mut outputs = BTreeMap::new();
    for (name, out) in &drv.outputs {
        match out.path() {
            Some(p) => {
                outputs.insert(name.clone(), p.clone());
            }
            None => {
                return Err(DrvJobError::Unsupported {
                    drv: drv_s,
                    kind: "output without a path",
                }
                .into())
            }
        }
    }
    store.add_temp_roots(outputs.values())?;
    let mut all_valid = true;
    for p in outputs.values() {
        all_valid &= store.is_valid_sync(p)?;
    }
    if all_valid {
        let pairs: Vec<(String, StorePath)> = outputs.clone().into_iter().collect();
        store.register_derivation_outputs(drv_path, &pairs)?;
        return Ok(outputs);
    }

    // Inputs: sources must be valid; input derivations are realised first.
    let mut roots: BTreeSet<StorePath> = drv.input_srcs.clone();
    for (input_drv, input_outs) in &drv.input_drvs {
        let got = realise_inner(store, settings, input_drv, input_outs, log, done)?;
        roots.extend(got.into_values());
    }
    store.add_temp_roots(roots.iter())?;
    let closure = store.query_closure_sync(&roots)?;

    let build_settings = BuildSettings {
        physical_store_dir: store.real_store_dir().to_path_buf(),
        work_parent: store.real_store_dir().to_path_buf(),
        extra_paths: settings.extra_paths.clone(),
        cores: settings.cores,
        timeout: settings.timeout,
        max_silent: settings.max_silent,
        kvm: settings.kvm,
        impure_env: settings.impure_env.clone(),
    };
    let mut job = job_from_derivation(store.store_dir(), drv_path, drv, &closure, &build_settings)?;
    job.work_prefix = format!("{WORK_PREFIX}{}-build-", std::process::id());
    let result = job.run(log)?;
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
        return Err(RealiseError::BuildFailed {
            drv: drv_s,
            how: failure_text(result.outcome.status),
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
    if let Some(ca) = &fod {
        check_fixed_output(ca, &drv_s, &result.outputs["out"])?;
    }

    // Scan every output for references to the closure and to the outputs.
    let mut candidates: BTreeMap<String, StorePath> =
        closure.iter().map(|p| (p.hash_part(), p.clone())).collect();
    for p in outputs.values() {
        candidates.insert(p.hash_part(), p.clone());
    }
    let mut infos: BTreeMap<String, ValidPathInfo> = BTreeMap::new();
    for (name, host) in &result.outputs {
        let path = outputs[name].clone();
        let (hash, size, found) = scan_output(host, candidates.keys())?;
        let mut info = ValidPathInfo::new(path, hash, size);
        info.references = found
            .iter()
            .filter_map(|h| candidates.get(h).cloned())
            .collect();
        info.deriver = Some(drv_path.clone());
        info.ultimate = true;
        if let Some(ca) = &fod {
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

    // Add outputs after the outputs they refer to.
    let mut added: BTreeSet<StorePath> = BTreeSet::new();
    while added.len() < infos.len() {
        let before = added.len();
        for (name, info) in &infos {
            if added.contains(&info.path) {
                continue;
            }
            let ready = info
                .references
                .iter()
                .all(|r| r == &info.path || added.contains(r) || !outputs.values().any(|o| o == r));
            if ready {
                add_output(store, info, &result.outputs[name])?;
                added.insert(info.path.clone());
            }
        }
        if added.len() == before {
            return Err(RealiseError::OutputCycle(drv_s));
        }
    }
    let pairs: Vec<(String, StorePath)> = outputs.clone().into_iter().collect();
    store.register_derivation_outputs(drv_path, &pairs)?;
    Ok(outputs)
}

/// NAR hash, NAR size and the candidate hash parts the NAR contains.
fn scan_output<'a>(
    host: &Path,
    candidates: impl Iterator<Item = &'a String>,
) -> Result<(Hash, u64, BTreeSet<String>), RealiseError> {
    struct Sink {
        hasher: Hasher,
        scanner: RefScanner,
    }
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.hasher.update(buf);
            self.scanner.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink {
        hasher: Hasher::new(HashAlgo::Sha256),
        scanner: RefScanner::new(candidates),
    };
    let (sink, size) = b3_nar::dump_path(host, sink).map_err(|source| RealiseError::Nar {
        path: host.display().to_string(),
        source,
    })?;
    let found = sink.scanner.found();
    Ok((sink.hasher.finish(), size, found))
}

/// Streams the output's NAR into the store's verified, atomic add.
fn add_output(store: &LocalStore, info: &ValidPathInfo, host: &Path) -> Result<(), RealiseError> {
    let (reader, writer) = std::io::pipe().map_err(|e| StoreError::io("creating a pipe", e))?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || b3_nar::dump_path(host, writer).map(|_| ()));
        let added = store.add_nar_sync(info, reader);
        let dumped = producer.join();
        match (added, dumped) {
            (Ok(()), Ok(Ok(()))) => Ok(()),
            (_, Ok(Err(source))) => Err(RealiseError::Nar {
                path: host.display().to_string(),
                source,
            }),
            (Err(e), _) => Err(e.into()),
            (Ok(()), Err(_)) => Err(StoreError::Other("NAR serialiser panicked".into()).into()),
        }
    })
}

/// A local store that can build: `StoreRead`/`StoreWrite` are the store's,
/// `StoreBuild::realise` runs builds in the sandbox (logs to stderr).
#[derive(Debug, Clone)]
pub struct LocalBuilder {
    pub store: LocalStore,
    pub settings: RealiseSettings,
}

impl LocalBuilder {
    pub fn new(store: LocalStore, settings: RealiseSettings) -> LocalBuilder {
        LocalBuilder { store, settings }
    }
}

#[async_trait]
impl StoreRead for LocalBuilder {
    fn store_dir(&self) -> &StoreDir {
        self.store.store_dir()
    }

    async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError> {
        StoreRead::is_valid_path(&self.store, path).await
    }

    async fn query_path_info(&self, path: &StorePath) -> Result<Option<ValidPathInfo>, StoreError> {
        StoreRead::query_path_info(&self.store, path).await
    }

    async fn nar_from_path(
        &self,
        path: &StorePath,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, StoreError> {
        StoreRead::nar_from_path(&self.store, path, sink).await
    }

    async fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        StoreRead::query_referrers(&self.store, path).await
    }
}

#[async_trait]
impl StoreWrite for LocalBuilder {
    async fn add_nar(
        &self,
        info: &ValidPathInfo,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        StoreWrite::add_nar(&self.store, info, source).await
    }

    async fn add_text(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        StoreWrite::add_text(&self.store, name, text, references).await
    }

    async fn add_path(
        &self,
        name: &str,
        source: &Path,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        StoreWrite::add_path(&self.store, name, source, method, algo).await
    }
}

#[async_trait]
impl StoreBuild for LocalBuilder {
    async fn realise(
        &self,
        drv_path: &StorePath,
        outputs: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let (store, settings) = (self.store.clone(), self.settings.clone());
        let (drv, wanted) = (drv_path.clone(), outputs.clone());
        tokio::task::spawn_blocking(move || {
            let mut stderr = std::io::stderr();
            realise_sync(&store, &settings, &drv, &wanted, &mut stderr)
        })
        .await
        .map_err(|e| StoreError::Other(format!("build worker failed: {e}")))?
        .map_err(|e| match e {
            RealiseError::Store(s) => s,
            other => StoreError::Backend(Box::new(other)),
        })
    }
}
