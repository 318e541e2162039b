//! `b3 eval`: evaluate a Nix expression (`-E`) or file and print the result
//! as Nix text, JSON or a raw string.

use std::process::ExitCode;

use b3_evaluator::driver::{AutoArg, OutputMode};
use b3_evaluator::nix_cli::{self, Cmdline};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// File to evaluate (default: ./default.nix), or `-` for stdin.
    pub file: Option<String>,
    /// Evaluate this expression instead of a file.
    #[arg(
        short = 'E',
        long = "expr",
        value_name = "EXPR",
        conflicts_with = "file"
    )]
    pub expr: Option<String>,
    /// Force the whole result (lists and sets deeply).
    #[arg(long)]
    pub strict: bool,
    /// Print the result as JSON.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Print a string result without quotes or escapes.
    #[arg(long)]
    pub raw: bool,
    /// Select an attribute path of the result (repeatable).
    #[arg(short = 'A', long = "attr", value_name = "PATH")]
    pub attr: Vec<String>,
    /// Pass NAME=EXPR to a top-level function with formals.
    #[arg(long, num_args = 2, value_names = ["NAME", "EXPR"], action = clap::ArgAction::Append)]
    pub arg: Vec<String>,
    /// Pass NAME=STRING to a top-level function with formals.
    #[arg(long, num_args = 2, value_names = ["NAME", "STRING"], action = clap::ArgAction::Append)]
    pub argstr: Vec<String>,
    /// Add a search-path entry (`path` or `prefix=path`), before NIX_PATH.
    #[arg(short = 'I', value_name = "PATH")]
    pub include: Vec<String>,
    /// Show the evaluation trace on errors.
    #[arg(long)]
    pub show_trace: bool,
    /// Maximum function-call depth.
    #[arg(long, value_name = "N")]
    pub max_call_depth: Option<usize>,
    /// Enable experimental language features (e.g. pipe-operators).
    #[arg(long, value_name = "FEATURES")]
    pub extra_experimental_features: Vec<String>,
}

pub fn cmdline(a: Args) -> Cmdline {
    let mut c = Cmdline {
        eval: true,
        strict: a.strict || a.json,
        show_trace: a.show_trace,
        ..Default::default()
    };
    c.mode = Some(if a.json {
        OutputMode::Json
    } else if a.raw {
        OutputMode::Raw
    } else {
        OutputMode::Nix
    });
    if let Some(e) = a.expr {
        c.from_expr = true;
        c.exprs.push(e);
    } else if let Some(f) = a.file {
        c.exprs.push(f);
    }
    c.attr_paths = a.attr;
    for pair in a.arg.chunks(2) {
        if let [n, e] = pair {
            c.auto_args.push(AutoArg::Expr(n.clone(), e.clone()));
        }
    }
    for pair in a.argstr.chunks(2) {
        if let [n, s] = pair {
            c.auto_args.push(AutoArg::Str(n.clone(), s.clone()));
        }
    }
    c.include = a.include;
    c.max_call_depth = a.max_call_depth;
    c.experimental = a
        .extra_experimental_features
        .iter()
        .flat_map(|s| s.split_whitespace().map(String::from))
        .collect();
    c
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    super::instantiate::install_realise_hook();
    Ok(ExitCode::from(nix_cli::run_cmdline(cmdline(a))))
}
