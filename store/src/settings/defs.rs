//! The typed [`Settings`] b3 interprets, with Nix's names, aliases and
//! defaults, and the table that lets the loader set and show them by name.
//!
//! Defaults follow current Nix. Known differences from Nix 2.8 (the oracle
//! here): `log-lines` is 25 (2.8: 10); `max-substitution-jobs` does not exist
//! in 2.8; `build-users-group` stays empty when running as root (Nix then
//! picks `nixbld`; b3 builds in user namespaces, not as build users).
//!
//! `substituters` keeps Nix's `https://cache.nixos.org/`; b3 works offline
//! regardless (an unreachable substituter is skipped, not fatal).

use super::value::{
    available_cores, MaxJobs, SandboxMode, SandboxPaths, SettingValue, StringSet, Strings,
    ValueError,
};

/// How the loader reaches one typed setting.
pub(crate) struct TypedDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub appendable: bool,
    pub is_bool: bool,
    pub set: fn(&mut Settings, &str, bool) -> Result<(), ValueError>,
    pub json: fn(&Settings) -> serde_json::Value,
    pub text: fn(&Settings) -> String,
}

macro_rules! typed_settings {
    ($(
        #[doc = $doc:literal]
        $field:ident : $ty:ty = $name:literal [$($alias:literal),*] => $default:expr;
    )*) => {
        /// The settings b3 acts on, typed. Build one with
        /// [`Config`](super::Config) to get Nix's layering and provenance.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $( #[doc = $doc] pub $field: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )* }
            }
        }

        pub(crate) static TYPED: &[TypedDef] = &[
            $( TypedDef {
                name: $name,
                aliases: &[$($alias),*],
                description: $doc,
                appendable: <$ty as SettingValue>::APPENDABLE,
                is_bool: <$ty as SettingValue>::IS_BOOL,
                set: |s, text, append| {
                    let v = <$ty as SettingValue>::parse($name, text)?;
                    if append { s.$field.append(v) } else { s.$field = v }
                    Ok(())
                },
                json: |s| s.$field.to_json(),
                text: |s| s.$field.to_text(),
            }, )*
        ];
    };
}

fn strings(items: &[&str]) -> Strings {
    Strings(items.iter().map(|s| (*s).to_owned()).collect())
}

typed_settings! {
    /// Binary caches to substitute from, in order of preference.
    substituters: Strings = "substituters" ["binary-caches"]
        => strings(&["https://cache.nixos.org/"]);
    /// Substituters unprivileged users may additionally enable.
    trusted_substituters: StringSet = "trusted-substituters" ["trusted-binary-caches"]
        => StringSet::default();
    /// Public keys (`name:base64`) whose signatures are accepted.
    trusted_public_keys: Strings = "trusted-public-keys" ["binary-cache-public-keys"]
        => strings(&["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]);
    /// Whether non-content-addressed paths need a trusted signature.
    require_sigs: bool = "require-sigs" [] => true;
    /// Builds run in parallel (`auto` = number of CPUs; 0 = remote only).
    max_jobs: MaxJobs = "max-jobs" ["build-max-jobs"] => MaxJobs(1);
    /// `NIX_BUILD_CORES` given to builders (0 = all cores).
    cores: u64 = "cores" ["build-cores"] => available_cores();
    /// Build in a sandbox: true, false or relaxed.
    sandbox: SandboxMode = "sandbox" ["build-use-chroot", "build-use-sandbox"]
        => if cfg!(target_os = "linux") { SandboxMode::Enabled } else { SandboxMode::Disabled };
    /// Host paths bind-mounted into the sandbox (`target=source`, `?` = optional).
    sandbox_paths: SandboxPaths = "sandbox-paths" ["build-chroot-dirs", "build-sandbox-paths"]
        => SandboxPaths::default();
    /// Build unsandboxed when the sandbox cannot be set up.
    sandbox_fallback: bool = "sandbox-fallback" [] => true;
    /// Keep outputs of live derivations during garbage collection.
    keep_outputs: bool = "keep-outputs" ["gc-keep-outputs"] => false;
    /// Keep derivations of live outputs during garbage collection.
    keep_derivations: bool = "keep-derivations" ["gc-keep-derivations"] => true;
    /// Keep the build directory of failed builds.
    keep_failed: bool = "keep-failed" [] => false;
    /// Keep building other derivations when one fails.
    keep_going: bool = "keep-going" [] => false;
    /// b3 only (Nix ignores it with a warning): builds see their inputs through vfs views, as `b3 build --vfs`.
    b3_vfs_builds: bool = "b3-vfs-builds" [] => false;
    /// Substitutions run in parallel.
    max_substitution_jobs: u64 = "max-substitution-jobs" ["substitution-max-jobs"] => 16;
    /// Lines of a failed build's log tail to show.
    log_lines: u64 = "log-lines" [] => 25;
    /// Build from source when substitution fails.
    fallback: bool = "fallback" ["build-fallback"] => false;
    /// Whether to use substituters at all.
    substitute: bool = "substitute" ["build-use-substitutes"] => true;
    /// Seconds a builder may stay silent before it is killed (0 = no limit).
    max_silent_time: u64 = "max-silent-time" ["build-max-silent-time"] => 0;
    /// Seconds a build may run before it is killed (0 = no limit).
    timeout: u64 = "timeout" ["build-timeout"] => 0;
    /// Seconds to wait for a connection to a substituter (0 = b3's default, 10).
    connect_timeout: u64 = "connect-timeout" [] => 0;
    /// Seconds a download may receive nothing before it is abandoned.
    stalled_download_timeout: u64 = "stalled-download-timeout" [] => 300;
    /// Tries per download from one substituter before moving to the next.
    download_attempts: u64 = "download-attempts" [] => 5;
    /// Experimental features enabled.
    experimental_features: StringSet = "experimental-features" [] => StringSet::default();
    /// Secret keys used to sign locally built paths.
    secret_key_files: Strings = "secret-key-files" [] => Strings::default();
    /// The store URL to use (`auto`, a path, `daemon`, `file://`...).
    store: String = "store" [] => "auto".to_owned();
    /// Unix group of the build users (empty: build as the calling user).
    build_users_group: String = "build-users-group" [] => String::new();
    /// Seconds a "not in this cache" answer is remembered.
    narinfo_cache_negative_ttl: u64 = "narinfo-cache-negative-ttl" [] => 3600;
    /// Seconds a positive narinfo answer is remembered.
    narinfo_cache_positive_ttl: u64 = "narinfo-cache-positive-ttl" [] => 2_592_000;
    /// Parallel HTTP connections to caches (0 = no limit).
    http_connections: u64 = "http-connections" ["binary-caches-parallel-connections"] => 25;
}

/// Experimental feature names Nix has known (any version); others warn.
pub(crate) const KNOWN_EXPERIMENTAL_FEATURES: &[&str] = &[
    "auto-allocate-uids",
    "blake3-hashes",
    "build-time-fetch-tree",
    "ca-derivations",
    "cgroups",
    "configurable-impure-env",
    "daemon-trustless",
    "discard-references",
    "dynamic-derivations",
    "external-builders",
    "fetch-closure",
    "fetch-tree",
    "flakes",
    "git-hashing",
    "impure-derivations",
    "local-overlay-store",
    "mounted-ssh-store",
    "nix-command",
    "no-url-literals",
    "parse-toml-timestamps",
    "pipe-operators",
    "read-only-local-store",
    "recursive-nix",
    "repl-flake",
    "verified-fetches",
];

impl Settings {
    /// Whether an experimental feature is enabled.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.experimental_features.contains(feature)
    }
}
