//! Binary-cache URLs, with Nix's query parameters.
//!
//! `file:///path/to/cache`, `s3://bucket[/prefix]?region=…&endpoint=…&profile=…`
//! and `http(s)://host/path` (read-only here: plain HTTP caches take no
//! uploads). Parameters shared by all caches: `compression`
//! (`xz` default, `bzip2`, `zstd`, `none`), `secret-key` (a key *file*, as
//! in Nix), `priority`, `want-mass-query`. Parameters Nix knows but b3
//! ignores are kept in `ignored` so callers can warn, as Nix warns about
//! unknown settings.

use std::path::PathBuf;

use thiserror::Error;

use super::compression::{Compression, UnknownCompression};

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A directory on the local file system.
    File(PathBuf),
    /// An S3 bucket (or S3-compatible service).
    S3 {
        bucket: String,
        /// Key prefix inside the bucket (empty: the bucket root).
        prefix: String,
        region: Option<String>,
        /// Full endpoint URL (`http://127.0.0.1:9000`); Nix's deprecated
        /// bare `host:port` form gets `scheme` (default https) prepended.
        endpoint: Option<String>,
        profile: Option<String>,
    },
    /// An HTTP(S) cache, such as cache.nixos.org.
    Http(String),
}

/// A parsed cache URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUrl {
    pub location: CacheLocation,
    pub compression: Compression,
    /// `secret-key=FILE`: sign what is uploaded with this key.
    pub secret_key_file: Option<PathBuf>,
    pub priority: Option<i64>,
    pub want_mass_query: Option<bool>,
    /// `write-nar-listing=1`: upload `.ls` listings with NARs.
    pub write_nar_listing: bool,
    /// Parameters recognised but not acted on (`name=value`).
    pub ignored: Vec<String>,
}

/// Why a cache URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheUrlError {
    #[error("invalid binary cache URL '{url}': {reason}")]
    Invalid { url: String, reason: String },
    #[error(
        "binary cache URL '{0}': unsupported scheme (use file://, s3://, http:// or https://)"
    )]
    Scheme(String),
    #[error("binary cache URL '{url}': {source}")]
    Compression {
        url: String,
        source: UnknownCompression,
    },
    #[error("binary cache URL '{url}': parameter {name} has invalid value '{value}'")]
    BadParam {
        url: String,
        name: String,
        value: String,
    },
}

impl CacheUrl {
    pub fn parse(s: &str) -> Result<Self, CacheUrlError> {
        let invalid = |reason: String| CacheUrlError::Invalid {
            url: s.to_owned(),
            reason,
        };
        let url = ::url::Url::parse(s).map_err(|e| invalid(e.to_string()))?;
        let mut out = CacheUrl {
            location: CacheLocation::File(PathBuf::new()),
            compression: Compression::Xz,
            secret_key_file: None,
            priority: None,
            want_mass_query: None,
            write_nar_listing: false,
            ignored: Vec::new(),
        };
        let (mut region, mut endpoint, mut profile, mut scheme) = (None, None, None, None);
        for (k, v) in url.query_pairs() {
            let (k, v) = (k.into_owned(), v.into_owned());
            let bad = || CacheUrlError::BadParam {
                url: s.to_owned(),
                name: k.clone(),
                value: v.clone(),
            };
            match k.as_str() {
                "compression" => {
                    out.compression = v.parse().map_err(|source| CacheUrlError::Compression {
                        url: s.to_owned(),
                        source,
                    })?
                }
                "secret-key" => out.secret_key_file = Some(PathBuf::from(v)),
                "priority" => out.priority = Some(v.parse().map_err(|_| bad())?),
                "want-mass-query" => {
                    out.want_mass_query = Some(match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    })
                }
                "write-nar-listing" => {
                    out.write_nar_listing = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    }
                }
                "region" => region = Some(v),
                "endpoint" => endpoint = Some(v),
                "profile" => profile = Some(v),
                "scheme" => scheme = Some(v),
                _ => out.ignored.push(format!("{k}={v}")),
            }
        }
        out.location = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("not an absolute local path".into()))?;
                CacheLocation::File(path)
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("missing bucket name".into()))?
                    .to_owned();
                let endpoint = endpoint.map(|e| {
                    if e.contains("://") {
                        e
                    } else {
                        format!("{}://{e}", scheme.as_deref().unwrap_or("https"))
                    }
                });
                CacheLocation::S3 {
                    bucket,
                    prefix: url.path().trim_matches('/').to_owned(),
                    region,
                    endpoint,
                    profile,
                }
            }
            "http" | "https" => {
                let mut base = url.clone();
                base.set_query(None);
                let text = base.as_str().trim_end_matches('/').to_owned();
                CacheLocation::Http(text)
            }
            _ => return Err(CacheUrlError::Scheme(s.to_owned())),
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(windows)]
    #[test]
    fn file_url_with_a_drive_letter_is_a_windows_path() {
        let u = CacheUrl::parse("file:///C:/b3/cache?compression=zstd").unwrap();
        assert_eq!(u.location, CacheLocation::File("C:\\b3\\cache".into()));
        assert_eq!(u.compression, Compression::Zstd);
    }

    // `/tmp/c` is an absolute path on Unix only.
    #[cfg(unix)]
    #[test]
    fn file_url_with_nix_params() {
        let u =
            CacheUrl::parse("file:///tmp/c?compression=zstd&secret-key=/k/sk&priority=30").unwrap();
        assert_eq!(u.location, CacheLocation::File("/tmp/c".into()));
        assert_eq!(u.compression, Compression::Zstd);
        assert_eq!(u.secret_key_file, Some(PathBuf::from("/k/sk")));
        assert_eq!(u.priority, Some(30));
        assert!(u.ignored.is_empty());
        assert_eq!(
            CacheUrl::parse("file:///tmp/c").unwrap().compression,
            Compression::Xz
        );
    }

    #[test]
    fn s3_url_with_region_endpoint_profile() {
        let u = CacheUrl::parse(
            "s3://my-bucket/sub/dir?region=eu-west-1&endpoint=http://127.0.0.1:9000&profile=ci&parallel-compression=true",
        )
        .unwrap();
        assert_eq!(
            u.location,
            CacheLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "sub/dir".into(),
                region: Some("eu-west-1".into()),
                endpoint: Some("http://127.0.0.1:9000".into()),
                profile: Some("ci".into()),
            }
        );
        assert_eq!(u.ignored, vec!["parallel-compression=true".to_owned()]);
        // Deprecated bare endpoint plus scheme.
        let u = CacheUrl::parse("s3://b?endpoint=minio:9000&scheme=http").unwrap();
        let CacheLocation::S3 { endpoint, .. } = u.location else {
            panic!("not s3")
        };
        assert_eq!(endpoint.as_deref(), Some("http://minio:9000"));
    }

    #[test]
    fn http_url_and_errors() {
        let u = CacheUrl::parse("https://cache.nixos.org/").unwrap();
        assert_eq!(
            u.location,
            CacheLocation::Http("https://cache.nixos.org".into())
        );
        assert!(matches!(
            CacheUrl::parse("ftp://x/y"),
            Err(CacheUrlError::Scheme(_))
        ));
        assert!(matches!(
            CacheUrl::parse("file:///c?compression=br"),
            Err(CacheUrlError::Compression { .. })
        ));
        assert!(matches!(
            CacheUrl::parse("file:///c?priority=x"),
            Err(CacheUrlError::BadParam { .. })
        ));
        assert!(CacheUrl::parse("not a url").is_err());
    }
}
