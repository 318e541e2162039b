//! From a parsed [`Derivation`] to a [`BuildJob`], and the check of a
//! fixed-output derivation's result against its declared hash.
//!
//! The builder's environment is the derivation's `env` plus its outputs, as
//! Nix computes it (see [`crate::env`]); the sandbox sees the input closure
//! the caller passes (the closure of the input sources and of the wanted
//! outputs of the input derivations). Content-addressed floating, deferred
//! and impure outputs are not supported yet.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b3_store::derivation::{Derivation, DerivationError, DerivationKind, DerivationOutput};
use b3_store::hash::{Hash, Hasher};
use b3_store::path::{
    ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath,
};

use crate::job::BuildJob;
use crate::sandbox::SandboxPath;

/// The per-machine settings a build runs with.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Where store objects live on the host (`<root>/nix/store`).
    pub physical_store_dir: PathBuf,
    /// Parent of the per-build work directory; on the store's file system.
    pub work_parent: PathBuf,
    /// Nix's `sandbox-paths` / `extra-sandbox-paths`.
    pub extra_paths: Vec<SandboxPath>,
    pub cores: u32,
    pub timeout: Option<Duration>,
    pub kvm: bool,
    /// `None`: fixed-output builds read `impureEnvVars` from this process.
    pub impure_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrvJobError {
    #[error("{0}")]
    Derivation(#[from] DerivationError),
    #[error("derivation '{drv}' has an output kind b3 cannot build yet ({kind})")]
    Unsupported { drv: String, kind: &'static str },
}

/// The job that builds `drv` (stored at `drv_path`), whose input closure
/// (every store path the builder may read) is `input_closure`.
pub fn job_from_derivation(
    store_dir: &StoreDir,
    drv_path: &StorePath,
    drv: &Derivation,
    input_closure: &BTreeSet<StorePath>,
    settings: &BuildSettings,
) -> Result<BuildJob, DrvJobError> {
    let kind = drv.kind()?;
    let drv_s = store_dir.display(drv_path);
    let unsupported = |kind| DrvJobError::Unsupported {
        drv: drv_s.clone(),
        kind,
    };
    match kind {
        DerivationKind::InputAddressed | DerivationKind::Fixed => {}
        DerivationKind::DeferredInputAddressed => return Err(unsupported("deferred")),
        DerivationKind::Floating => return Err(unsupported("floating content-addressed")),
        DerivationKind::Impure => return Err(unsupported("impure")),
    }
    let mut outputs = BTreeMap::new();
    for (name, out) in &drv.outputs {
        let p = out
            .path()
            .ok_or_else(|| unsupported("output without a path"))?;
        outputs.insert(name.clone(), store_dir.display(p));
    }
    let name = drv
        .name()
        .map(str::to_string)
        .or_else(|| drv_path.derivation_name().map(str::to_string))
        .unwrap_or_else(|| drv_path.name().to_string());
    Ok(BuildJob {
        name,
        builder: drv.builder.clone(),
        args: drv.args.clone(),
        drv_env: drv.env.clone(),
        outputs,
        inputs: input_closure.iter().map(|p| store_dir.display(p)).collect(),
        logical_store_dir: store_dir.as_str().to_string(),
        physical_store_dir: settings.physical_store_dir.clone(),
        work_parent: settings.work_parent.clone(),
        work_prefix: crate::job::DEFAULT_WORK_PREFIX.to_string(),
        fixed_output: kind == DerivationKind::Fixed,
        extra_paths: settings.extra_paths.clone(),
        cores: settings.cores,
        timeout: settings.timeout,
        kvm: settings.kvm,
        impure_env: settings.impure_env.clone(),
    })
}

/// The declared content address of a fixed-output derivation's `out`.
pub fn fixed_output_ca(drv: &Derivation) -> Option<&ContentAddress> {
    match drv.outputs.get("out") {
        Some(DerivationOutput::CaFixed { ca, .. }) => Some(ca),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixedOutputError {
    #[error("hash mismatch in fixed-output derivation '{drv}':\n         specified: {specified}\n            got:    {got}")]
    HashMismatch {
        drv: String,
        specified: String,
        got: String,
    },
    #[error("output path '{0}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)")]
    NotFlatFile(String),
    #[error("fixed-output derivation '{0}' uses text hashing, which is only for text files")]
    TextMethod(String),
    #[error("hashing output '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing output '{path}': {source}")]
    Nar {
        path: String,
        #[source]
        source: b3_nar::Error,
    },
}

/// Hash of `path` (a built output on the host) the way `ca` says to hash
/// it: the file's bytes (flat) or its NAR serialisation (recursive).
pub fn hash_output(ca: &ContentAddress, drv: &str, path: &Path) -> Result<Hash, FixedOutputError> {
    let io = |source| FixedOutputError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut hasher = Hasher::new(ca.hash.algo());
    match ca.method {
        ContentAddressMethod::Text => return Err(FixedOutputError::TextMethod(drv.to_string())),
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => {
            let meta = std::fs::symlink_metadata(path).map_err(io)?;
            if !meta.is_file() || is_executable(&meta) {
                return Err(FixedOutputError::NotFlatFile(path.display().to_string()));
            }
            let mut f = std::fs::File::open(path).map_err(io)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => {
            let (h, _) =
                b3_nar::dump_path(path, hasher).map_err(|source| FixedOutputError::Nar {
                    path: path.display().to_string(),
                    source,
                })?;
            hasher = h;
        }
    }
    Ok(hasher.finish())
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Checks a fixed-output derivation's built `out` (at host path `path`)
/// against the declared hash, with Nix's error message on mismatch.
pub fn check_fixed_output(
    ca: &ContentAddress,
    drv_display: &str,
    path: &Path,
) -> Result<(), FixedOutputError> {
    let got = hash_output(ca, drv_display, path)?;
    if got != ca.hash {
        return Err(FixedOutputError::HashMismatch {
            drv: drv_display.to_string(),
            specified: ca.hash.to_sri(),
            got: got.to_sri(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::hash::HashAlgo;

    fn ca(method: FileIngestionMethod, hex: &str) -> ContentAddress {
        ContentAddress {
            method: ContentAddressMethod::Fixed(method),
            hash: Hash::parse_unprefixed(hex, HashAlgo::Sha256).unwrap(),
        }
    }

    #[test]
    fn flat_hash_mismatch_reads_like_nix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("o");
        std::fs::write(&f, "hello\n").unwrap();
        let good = ca(
            FileIngestionMethod::Flat,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        );
        check_fixed_output(&good, "/nix/store/x.drv", &f).unwrap();
        let bad = ca(
            FileIngestionMethod::Flat,
            "0000000000000000000000000000000000000000000000000000000000000000",
        );
        let err = check_fixed_output(
            &bad,
            "/nix/store/7kh0fy81cpqkr93akfwl3lmq231h4qk1-fod-hello.txt.drv",
            &f,
        )
        .unwrap_err();
        // Nix 2.8's message for the same output (nix-oracle-facts.md).
        assert_eq!(
            err.to_string(),
            "hash mismatch in fixed-output derivation '/nix/store/7kh0fy81cpqkr93akfwl3lmq231h4qk1-fod-hello.txt.drv':\n         specified: sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n            got:    sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="
        );
    }

    #[test]
    fn recursive_hash_is_the_nar_hash() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hello.txt");
        std::fs::write(&f, "hello\n").unwrap();
        // `nix-hash --type sha256` of a file holding "hello\n" (NAR hash);
        // the recursive FOD path in nix-oracle-facts.md uses this hash.
        let got = hash_output(
            &ca(FileIngestionMethod::Recursive, &"0".repeat(64)),
            "d",
            &f,
        )
        .unwrap();
        let nar = b3_nar::hash_path(&f).unwrap();
        assert_eq!(got.as_bytes(), &nar.sha256[..]);
    }

    #[test]
    fn flat_output_must_be_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_fixed_output(
            &ca(FileIngestionMethod::Flat, &"0".repeat(64)),
            "d",
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, FixedOutputError::NotFlatFile(_)));
    }
}
