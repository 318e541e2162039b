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
    pub max_silent: Option<Duration>,
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
    #[error("a '{system}' with features {{}} is required to build '{drv}', but I am a '{host}'")]
    WrongSystem {
        system: String,
        drv: String,
        host: &'static str,
    },
    #[error(
        "builder '{builder}' of '{drv}' is a Nix built-in builder, which b3 does not have yet"
    )]
    BuiltinBuilder { builder: String, drv: String },
}

/// The `system` this build of b3 runs builders for.
pub fn host_system() -> &'static str {
    match (std::env::consts::ARCH, std::env::consts::OS) {
        ("x86_64", "linux") => "x86_64-linux",
        ("aarch64", "linux") => "aarch64-linux",
        ("x86", "linux") => "i686-linux",
        ("x86_64", "macos") => "x86_64-darwin",
        ("aarch64", "macos") => "aarch64-darwin",
        _ => "unknown",
    }
}

/// Systems whose builders run here (an x86_64 kernel also runs i686 code).
fn can_build(system: &str) -> bool {
    let host = host_system();
    system == host || (host == "x86_64-linux" && system == "i686-linux")
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
    if drv.builder.starts_with("builtin:") {
        return Err(DrvJobError::BuiltinBuilder {
            builder: drv.builder.clone(),
            drv: drv_s,
        });
    }
    if !can_build(&drv.system) {
        return Err(DrvJobError::WrongSystem {
            system: drv.system.clone(),
            drv: drv_s,
            host: host_system(),
        });
    }
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
        drv_env_bytes: drv.env_bytes.clone(),
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
        max_silent: settings.max_silent,
        kvm: settings.kvm,
        impure_env: settings.impure_env.clone(),
        cancel: None,
        overlay: crate::job::overlay_from_env(),
        pool: None,
        work_dirs: None,
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
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn foreign_system_and_builtin_builders_are_refused() {
        let sd = StoreDir::default();
        let drv_path = sd
            .parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv")
            .unwrap();
        let text = "Derive([(\"out\",\"/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello\",\"\",\"\")],[],[],\"x86_64-linux\",\"/bin/sh\",[\"-c\",\"echo hi > $out\"],[(\"builder\",\"/bin/sh\"),(\"name\",\"hello\"),(\"out\",\"/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello\"),(\"system\",\"x86_64-linux\")])";
        let drv = b3_store::derivation::aterm::parse(&sd, text.as_bytes()).unwrap();
        let settings = BuildSettings {
            physical_store_dir: "/nix/store".into(),
            work_parent: "/tmp".into(),
            extra_paths: vec![],
            cores: 1,
            timeout: None,
            max_silent: None,
            kvm: false,
            impure_env: None,
        };
        let job = job_from_derivation(&sd, &drv_path, &drv, &BTreeSet::new(), &settings).unwrap();
        assert_eq!(job.name, "hello");
        assert_eq!(
            job.outputs["out"],
            "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"
        );
        assert!(!job.fixed_output);

        let mut other = drv.clone();
        other.system = "riscv64-linux".into();
        let err =
            job_from_derivation(&sd, &drv_path, &other, &BTreeSet::new(), &settings).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a 'riscv64-linux' with features {} is required to build \
             '/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv', but I am a 'x86_64-linux'"
        );
        let mut builtin = drv.clone();
        builtin.builder = "builtin:fetchurl".into();
        assert!(matches!(
            job_from_derivation(&sd, &drv_path, &builtin, &BTreeSet::new(), &settings),
            Err(DrvJobError::BuiltinBuilder { .. })
        ));
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
