//! `b3 config show [--json] [NAME]`: every setting with its value and where
//! the value came from, like `nix config show` plus an origin.
//!
//! Text form: `NAME = VALUE  # ORIGIN`, one per line, sorted by name; the
//! origin is a comment so the output is still valid nix.conf. `--json` is
//! `nix show-config --json`'s shape with `origin`, `appendedFrom` and
//! `interpreted` added. Settings come from the nix.conf files and
//! `NIX_CONFIG` Nix would read, then `--option NAME VALUE` given here.
//! Warnings (unknown names) go to stderr.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use b3_store::settings::{Config, Entry};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show settings, their values and origins.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Print JSON (the shape of `nix show-config --json`, plus origins).
    #[arg(long)]
    json: bool,
    /// Only settings b3 acts on (leave out Nix settings it merely records).
    #[arg(long)]
    interpreted: bool,
    /// Set a setting for this invocation (repeatable).
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    option: Vec<String>,
    /// Show only this setting (its value alone, like `nix config show NAME`).
    name: Option<String>,
}

/// Loads settings the way every b3 command should: Nix's files and
/// `NIX_CONFIG`, then `--option` pairs.
pub fn load(options: &[String]) -> anyhow::Result<Config> {
    let mut config = Config::load_from_process().context("reading nix.conf settings")?;
    for pair in options.chunks(2) {
        if let [name, value] = pair {
            config.apply_option(name, value)?;
        }
    }
    Ok(config)
}

pub fn run(_g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Show(a) => {
            let config = load(&a.option)?;
            show(config, a)
        }
    }
}

fn render_text(e: &Entry) -> String {
    format!("{} = {}  # {}", e.name, e.value_text, e.provenance)
}

fn show(config: Config, a: ShowArgs) -> anyhow::Result<ExitCode> {
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    let entries: Vec<Entry> = config
        .entries()
        .into_iter()
        .filter(|e| !a.interpreted || e.interpreted)
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(name) = &a.name {
        let Some(e) = entries
            .iter()
            .find(|e| e.name == name.as_str() || e.aliases.contains(&name.as_str()))
        else {
            anyhow::bail!("could not find setting '{name}'");
        };
        if a.json {
            let all = config.to_json();
            writeln!(out, "{}", serde_json::to_string(&all[e.name])?)?;
        } else {
            writeln!(out, "{}", e.value_text)?;
            eprintln!("# {}", e.provenance);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        let mut all = config.to_json();
        if let Some(map) = all.as_object_mut() {
            map.retain(|k, _| entries.iter().any(|e| e.name == k.as_str()));
        }
        writeln!(out, "{}", serde_json::to_string(&all)?)?;
    } else {
        for e in &entries {
            writeln!(out, "{}", render_text(e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::settings::ConfigEnv;

    #[test]
    fn text_rows_carry_origin_as_comment() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("nix.conf"),
            "cores = 3\nextra-substituters = x\n",
        )
        .unwrap();
        let c = Config::load(&ConfigEnv::isolated(t.path())).unwrap();
        let rows: Vec<String> = c.entries().iter().map(render_text).collect();
        let conf = t.path().join("nix.conf");
        assert!(rows.contains(&format!("cores = 3  # {}:1", conf.display())));
        assert!(rows.contains(&format!(
            "substituters = https://cache.nixos.org/ x  # default + {}:2",
            conf.display()
        )));
        assert!(rows.contains(&"keep-outputs = false  # default".to_owned()));
    }
}
