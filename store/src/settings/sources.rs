//! Where settings come from before the command line: which nix.conf files,
//! in which order, and `NIX_CONFIG` — decided from the environment exactly as
//! Nix decides it (`conf-file-prefix.md`, `globals.cc`):
//!
//! 1. `$NIX_CONF_DIR/nix.conf` (default `/etc/nix/nix.conf`);
//! 2. if `NIX_USER_CONF_FILES` is set, its `:`-separated files, applied in
//!    reverse so the first listed wins; otherwise `nix/nix.conf` under
//!    `$XDG_CONFIG_HOME` (default `~/.config`) then each of `XDG_CONFIG_DIRS`
//!    (default `/etc/xdg`), also applied in reverse (so `XDG_CONFIG_HOME` wins);
//! 3. `NIX_CONFIG`, newline-separated nix.conf text.

use std::path::PathBuf;

/// The inputs Nix's configuration layering depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEnv {
    /// `$NIX_CONF_DIR` (default `/etc/nix`); `nix.conf` is read from it.
    pub nix_conf_dir: PathBuf,
    /// User files in the order Nix lists them (first = highest precedence).
    pub user_files: Vec<PathBuf>,
    /// `NIX_CONFIG` contents.
    pub nix_config: Option<String>,
}

impl ConfigEnv {
    /// Reads the process environment.
    pub fn from_process() -> ConfigEnv {
        ConfigEnv::from_vars(|k| std::env::var(k).ok())
    }

    /// Builds from a variable lookup (so tests need not touch the process env).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> ConfigEnv {
        let nix_conf_dir = get("NIX_CONF_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/nix"));
        let user_files = match get("NIX_USER_CONF_FILES") {
            Some(list) => list
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => {
                let home_cfg = get("XDG_CONFIG_HOME")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".config")));
                let dirs = get("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".to_owned());
                home_cfg
                    .into_iter()
                    .chain(dirs.split(':').filter(|s| !s.is_empty()).map(PathBuf::from))
                    .map(|d| d.join("nix").join("nix.conf"))
                    .collect()
            }
        };
        ConfigEnv {
            nix_conf_dir,
            user_files,
            nix_config: get("NIX_CONFIG"),
        }
    }

    /// Only `DIR/nix.conf`: no user files, no `NIX_CONFIG`.
    pub fn isolated(nix_conf_dir: impl Into<PathBuf>) -> ConfigEnv {
        ConfigEnv {
            nix_conf_dir: nix_conf_dir.into(),
            user_files: Vec::new(),
            nix_config: None,
        }
    }

    /// The files in the order they are applied (last applied wins).
    pub fn files_in_apply_order(&self) -> Vec<PathBuf> {
        std::iter::once(self.nix_conf_dir.join("nix.conf"))
            .chain(self.user_files.iter().rev().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ConfigEnv {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConfigEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn xdg_files_home_first_and_applied_last() {
        let e = env(&[("XDG_CONFIG_HOME", "/h"), ("XDG_CONFIG_DIRS", "/d1:/d2")]);
        assert_eq!(
            e.user_files,
            ["/h/nix/nix.conf", "/d1/nix/nix.conf", "/d2/nix/nix.conf"].map(PathBuf::from)
        );
        assert_eq!(
            e.files_in_apply_order(),
            [
                "/etc/nix/nix.conf",
                "/d2/nix/nix.conf",
                "/d1/nix/nix.conf",
                "/h/nix/nix.conf"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn defaults_use_home_config_and_etc_xdg() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            e.user_files,
            ["/home/u/.config/nix/nix.conf", "/etc/xdg/nix/nix.conf"].map(PathBuf::from)
        );
    }

    #[test]
    fn nix_user_conf_files_replaces_xdg() {
        let e = env(&[
            ("NIX_USER_CONF_FILES", "/a.conf:/b.conf"),
            ("XDG_CONFIG_HOME", "/h"),
            ("NIX_CONF_DIR", "/c"),
        ]);
        assert_eq!(
            e.files_in_apply_order(),
            ["/c/nix.conf", "/b.conf", "/a.conf"].map(PathBuf::from)
        );
    }
}
