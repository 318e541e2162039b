//! `b3 hash`: hashes of paths (NAR serialisation) and files (flat), printed
//! the ways Nix prints them. The default is SRI, as `nix hash path` does;
//! `--base32` gives what `nix-hash --type sha256 --base32` prints.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use b3_nar::{AnyHash, HashAlgo};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Hash the NAR serialisation of each PATH (like `nix hash path`).
    Path(Args),
    /// Hash the contents of each FILE as a flat byte stream (like `nix hash file`).
    File(Args),
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Paths to hash.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Hash algorithm: md5, sha1, sha256 or sha512.
    #[arg(long = "type", default_value = "sha256")]
    algo: HashAlgo,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Args, Debug)]
#[group(multiple = false)]
struct Format {
    /// Print `ALGO-BASE64` (the default).
    #[arg(long)]
    sri: bool,
    /// Print Nix's base-32 (as `nix-hash --base32`).
    #[arg(long)]
    base32: bool,
    /// Print lower-case hexadecimal (as `nix-hash`).
    #[arg(long)]
    base16: bool,
    /// Print plain base-64.
    #[arg(long)]
    base64: bool,
}

impl Format {
    fn render(&self, h: &AnyHash) -> String {
        if self.base32 {
            h.to_nix_base32()
        } else if self.base16 {
            h.to_base16()
        } else if self.base64 {
            h.to_base64()
        } else {
            h.to_sri()
        }
    }
}

pub fn run(_g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let (args, flat) = match c {
        Command::Path(a) => (a, false),
        Command::File(a) => (a, true),
    };
    for p in &args.paths {
        let h = if flat {
            let f = File::open(p).with_context(|| format!("opening '{}'", p.display()))?;
            b3_nar::hash_reader(f, args.algo)
                .with_context(|| format!("reading '{}'", p.display()))?
                .0
        } else {
            b3_nar::hash_path_with(p, args.algo)
                .with_context(|| format!("hashing '{}'", p.display()))?
                .0
        };
        println!("{}", args.format.render(&h));
    }
    Ok(ExitCode::SUCCESS)
}
