//! `nix-cache-info`: the one file at the root of every binary cache.
//!
//! Nix writes just `StoreDir: /nix/store\n` when it creates a cache; HTTP
//! caches such as cache.nixos.org add `WantMassQuery` and `Priority`. Nix
//! reads it leniently (lines without a colon and unknown keys are skipped,
//! values are trimmed), and so do we, except that a malformed `Priority`
//! is an error rather than a C++ exception.

use thiserror::Error;

/// The name of the file in the cache root.
pub const FILE_NAME: &str = "nix-cache-info";

/// The MIME type Nix uploads it with.
pub const MIME_TYPE: &str = "text/x-nix-cache-info";

/// Parsed `nix-cache-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// The store directory the cache's paths live in (`/nix/store`).
    pub store_dir: String,
    /// Whether clients may query many narinfos up front; `None` if unstated.
    pub want_mass_query: Option<bool>,
    /// Substituter priority (lower wins); `None` if unstated.
    pub priority: Option<i64>,
}

/// Why a `nix-cache-info` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheInfoError {
    #[error("nix-cache-info line {line}: invalid Priority {value:?}")]
    BadPriority { line: usize, value: String },
    #[error("nix-cache-info has no StoreDir")]
    MissingStoreDir,
    #[error("nix-cache-info is not UTF-8")]
    NotUtf8,
}

impl CacheInfo {
    /// The file Nix writes for a fresh cache of `store_dir`.
    pub fn new(store_dir: impl Into<String>) -> Self {
        CacheInfo {
            store_dir: store_dir.into(),
            want_mass_query: None,
            priority: None,
        }
    }

    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, CacheInfoError> {
        Self::parse(std::str::from_utf8(bytes).map_err(|_| CacheInfoError::NotUtf8)?)
    }

    pub fn parse(text: &str) -> Result<Self, CacheInfoError> {
        let mut store_dir = None;
        let mut want_mass_query = None;
        let mut priority = None;
        for (idx, line) in text.split('\n').enumerate() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name {
                "StoreDir" => store_dir = Some(value.to_owned()),
                // Nix: anything but "1" means false.
                "WantMassQuery" => want_mass_query = Some(value == "1"),
                "Priority" => {
                    priority =
                        Some(
                            value
                                .parse::<i64>()
                                .map_err(|_| CacheInfoError::BadPriority {
                                    line: idx + 1,
                                    value: value.to_owned(),
                                })?,
                        )
                }
                _ => {}
            }
        }
        Ok(CacheInfo {
            store_dir: store_dir.ok_or(CacheInfoError::MissingStoreDir)?,
            want_mass_query,
            priority,
        })
    }

    /// Text form; for `CacheInfo::new(dir)` exactly what Nix writes.
    pub fn to_text(&self) -> String {
        let mut s = format!("StoreDir: {}\n", self.store_dir);
        if let Some(w) = self.want_mass_query {
            s.push_str(if w {
                "WantMassQuery: 1\n"
            } else {
                "WantMassQuery: 0\n"
            });
        }
        if let Some(p) = self.priority {
            s.push_str(&format!("Priority: {p}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_cache_info_matches_nix_bytes() {
        let text = CacheInfo::new("/nix/store").to_text();
        assert_eq!(text, "StoreDir: /nix/store\n");
        assert_eq!(text.len(), 21);
    }

    #[test]
    fn parses_cache_nixos_org_style() {
        let info =
            CacheInfo::parse("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n").unwrap();
        assert_eq!(info.store_dir, "/nix/store");
        assert_eq!(info.want_mass_query, Some(true));
        assert_eq!(info.priority, Some(40));
        assert_eq!(
            info.to_text(),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
        );
    }

    #[test]
    fn skips_junk_lines_and_unknown_keys_like_nix() {
        let info = CacheInfo::parse("garbage\nFoo: bar\nStoreDir:/x/store  \n").unwrap();
        assert_eq!(info.store_dir, "/x/store");
        assert_eq!(info.priority, None);
    }

    #[test]
    fn rejects_bad_priority_naming_the_line() {
        let err = CacheInfo::parse("StoreDir: /nix/store\nPriority: high\n").unwrap_err();
        assert_eq!(
            err,
            CacheInfoError::BadPriority {
                line: 2,
                value: "high".into()
            }
        );
        assert!(err.to_string().contains("line 2"));
    }

    #[test]
    fn requires_store_dir() {
        assert_eq!(
            CacheInfo::parse("Priority: 1\n").unwrap_err(),
            CacheInfoError::MissingStoreDir
        );
    }
}
