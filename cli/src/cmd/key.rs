//! `b3 key`: binary-cache signing keys in Nix's format (as `nix key` /
//! `nix-store --generate-binary-cache-key`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use b3_store::binary_cache::SecretKey;

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Generate a signing key pair. The secret key goes to stdout unless
    /// --secret-file is given.
    Generate {
        /// Key name, conventionally `<host>-<n>` (e.g. `cache.example.org-1`).
        #[arg(long)]
        name: String,
        /// Write the secret key here (created with mode 0600).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Also write the public key here.
        #[arg(long)]
        public_file: Option<PathBuf>,
    },
    /// Read a secret key on stdin and print its public key.
    Public,
}

pub fn run(_g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Generate {
            name,
            secret_file,
            public_file,
        } => {
            let sk = SecretKey::generate(&name)?;
            match &secret_file {
                Some(f) => write_private(f, sk.to_text().as_bytes())?,
                None => println!("{}", sk.to_text()),
            }
            if let Some(f) = &public_file {
                std::fs::write(f, sk.public().to_string())
                    .with_context(|| format!("writing '{}'", f.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Public => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the secret key from stdin")?;
            let sk: SecretKey = text.parse()?;
            println!("{}", sk.public());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating '{}'", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing '{}'", path.display()))?;
    Ok(())
}
