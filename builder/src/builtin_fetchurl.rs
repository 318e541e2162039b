//! Nix's `builtin:fetchurl` builder (what `<nix/fetchurl.nix>` produces):
//! runs in the b3 process instead of in the sandbox, downloading the
//! derivation's `url` through b3-store's network module into the output.
//!
//! As in Nix: TLS certificates are not verified (the caller checks the
//! output against the fixed-output hash, which is the real guarantee);
//! `unpack = "1"` means the download is a NAR (xz-compressed when the URL
//! ends in `.xz`) restored as the output; `executable = "1"` makes the file
//! mode 0755. Nix's hashed mirrors are not consulted.

use std::io::{BufReader, Read};
use std::path::Path;

use b3_store::derivation::Derivation;
use b3_store::fetch::{self, FetchOptions};

/// The builder name this module implements.
pub const BUILDER: &str = "builtin:fetchurl";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("builtin:fetchurl: attribute '{0}' missing")]
    MissingAttr(&'static str),
    #[error("{0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("{op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unpacking the NAR downloaded from '{url}': {source}")]
    Nar {
        url: String,
        #[source]
        source: b3_nar::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Io { op, path, source }
}

/// Builds `drv` (whose builder is `builtin:fetchurl`) by creating its output
/// at host path `out`, which must not exist. The fixed-output hash is not
/// checked here: the builder's usual check does that.
pub fn run(drv: &Derivation, out: &Path) -> Result<(), Error> {
    let url = drv.env.get("url").ok_or(Error::MissingAttr("url"))?;
    let flag = |k: &str| drv.env.get(k).is_some_and(|v| v == "1");
    let opts = FetchOptions {
        verify_tls: false,
        ..FetchOptions::default()
    };
    if flag("unpack") {
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(".download");
        let tmp = std::path::PathBuf::from(tmp);
        let r = (|| -> Result<(), Error> {
            fetch::download_to_file(url, &tmp, &opts)?;
            let f = std::fs::File::open(&tmp).map_err(io("opening", &tmp))?;
            let f = BufReader::new(f);
            let nar: Box<dyn Read> = if url.ends_with(".xz") {
                Box::new(fetch::unpack::xz_reader(f))
            } else {
                Box::new(f)
            };
            b3_nar::restore(nar, out).map_err(|source| Error::Nar {
                url: url.clone(),
                source,
            })?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&tmp);
        r?;
    } else {
        fetch::download_to_file(url, out, &opts)?;
    }
    if flag("executable") {
        b3_store::os::set_mode(out, 0o755).map_err(io("making executable", out))?;
    }
    Ok(())
}
