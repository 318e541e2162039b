//! `b3 print-env` and `b3 print-dev-env`.
//!
//! `print-env --shell bash|zsh|fish|powershell` prints, as a script for that
//! shell, the variables `b3 shell` would set or remove compared with the
//! caller's environment: the shell's start-up file runs (stdenv `setup`,
//! `shellHook`) and its final environment is compared with ours.
//!
//! `print-dev-env [--json]` prints the build environment in the form Nix's
//! `nix print-dev-env` does, so tools such as nix-direnv can use b3: bash
//! runs the start-up file from a clean environment and dumps every variable
//! (with its kind: `exported`, `var`, `array`, `associative`) and function;
//! the JSON is `{"bashFunctions": {NAME: BODY}, "variables": {NAME: {"type":
//! …, "value": …}}}` and the bash form declares the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::dev_env::{self, sh_quote, Then};
use super::shell::{self, EnvArgs};
use super::Global;
use crate::installable::{self, DefaultFile, InstallableArgs};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShellKind {
    #[default]
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub inst: InstallableArgs,
    /// The shell to print for.
    #[arg(long, value_enum, default_value_t = ShellKind::Bash)]
    pub shell: ShellKind,
    #[command(flatten)]
    pub env: EnvArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub inst: InstallableArgs,
    /// Print JSON (`nix print-dev-env --json`'s schema) instead of bash.
    #[arg(long)]
    pub json: bool,
    /// Expose a host path in the sandbox of the input builds (`TARGET=SOURCE`).
    #[arg(long = "sandbox-path", value_name = "SPEC")]
    pub sandbox_paths: Vec<String>,
    /// Set a Nix setting for this invocation (repeatable), after nix.conf.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub option: Vec<String>,
}

/// Variables that describe one shell session, not the environment: never
/// printed (Nix ignores the same ones in `print-dev-env`).
const SESSION_VARS: &[&str] = &[
    "BASHOPTS",
    "HOME",
    "NIX_BUILD_TOP",
    "NIX_ENFORCE_PURITY",
    "NIX_LOG_FD",
    "NIX_REMOTE",
    "PPID",
    "SHELLOPTS",
    "SSL_CERT_FILE",
    "SYSTEM_CERTIFICATE_PATH",
    "TEMP",
    "TEMPDIR",
    "TERM",
    "TMP",
    "TMPDIR",
    "TZ",
    "UID",
    // Set by the shell itself.
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "ENV",
];

/// Variables bash defines for itself, left out of `print-dev-env`.
fn bash_internal(name: &str) -> bool {
    name.starts_with("BASH")
        || name.starts_with("COMP_")
        || name.starts_with("HIST")
        || name.starts_with("__b3_")
        || matches!(
            name,
            "COLUMNS"
                | "DIRSTACK"
                | "EPOCHREALTIME"
                | "EPOCHSECONDS"
                | "EUID"
                | "FUNCNAME"
                | "GROUPS"
                | "HOSTNAME"
                | "HOSTTYPE"
                | "IFS"
                | "LINENO"
                | "LINES"
                | "MACHTYPE"
                | "MAILCHECK"
                | "OPTERR"
                | "OPTIND"
                | "OSTYPE"
                | "PIPESTATUS"
                | "PS1"
                | "PS2"
                | "PS4"
                | "RANDOM"
                | "SECONDS"
                | "SRANDOM"
        )
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

/// Runs the shell for `inst` with `script` as its command, after the
/// start-up file; returns the contents of the file `script` writes to
/// `$__b3_out`.
fn capture(
    g: &Global,
    inst: &InstallableArgs,
    opts: &dev_env::EnvOptions,
    script: &str,
) -> anyhow::Result<Vec<u8>> {
    let store = super::store::open_store(g)?;
    let items = installable::resolve(&store, inst, DefaultFile::Shell)?;
    let env = dev_env::prepare(&store, &items, opts)?;
    let out = env.tmp.path().join("dump");
    let cmd = format!("__b3_out={}\n{script}", sh_quote(&out.to_string_lossy()));
    let code = shell::run_in_env(
        &store,
        &env,
        &Then::Run(cmd),
        opts.pure,
        false,
        true,
        &shell::StoreView::Bind,
    )?;
    if code != ExitCode::SUCCESS {
        bail!("the shell's start-up failed ({code:?})");
    }
    std::fs::read(&out).context("reading the environment the shell dumped")
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let dump = capture(g, &a.inst, &a.env.options(), "env -0 > \"$__b3_out\"")?;
    let after = parse_env0(&dump);
    let before: BTreeMap<String, String> = std::env::vars().collect();
    let changes = diff(&before, &after);
    let text = render(a.shell, &changes);
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `NAME=VALUE\0…` as `env -0` prints it.
fn parse_env0(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|rec| {
            let s = String::from_utf8_lossy(rec);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// One change to make to the caller's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Unset(String),
}

/// The changes that turn `before` into `after` (session variables and
/// names no shell can spell left out).
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, v) in after {
        if SESSION_VARS.contains(&k.as_str()) || !valid_name(k) {
            continue;
        }
        if before.get(k) != Some(v) {
            out.push(Change::Set(k.clone(), v.clone()));
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) && !SESSION_VARS.contains(&k.as_str()) && valid_name(k) {
            out.push(Change::Unset(k.clone()));
        }
    }
    out
}

/// Fish single quotes: only `\\` and `\'` are escapes.
pub fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

/// PowerShell single quotes: a quote is doubled; PowerShell also takes the
/// typographic single quotes (U+2018–U+201B) as quotes, so those are doubled too.
pub fn powershell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `${env:NAME}` with `}` and backtick escaped (PowerShell's braced names).
fn powershell_env_name(name: &str) -> String {
    let mut out = String::from("${env:");
    for c in name.chars() {
        if matches!(c, '}' | '`' | '{') {
            out.push('`');
        }
        out.push(c);
    }
    out.push('}');
    out
}

/// Renders `changes` as a script for `shell`.
pub fn render(shell: ShellKind, changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        let _ = match (shell, c) {
            (ShellKind::Bash | ShellKind::Zsh, Change::Set(k, v)) => {
                writeln!(s, "export {k}={}", sh_quote(v))
            }
            (ShellKind::Bash | ShellKind::Zsh, Change::Unset(k)) => writeln!(s, "unset {k}"),
            (ShellKind::Fish, Change::Set(k, v)) if k.ends_with("PATH") && v.contains(':') => {
                let parts: Vec<String> = v.split(':').map(fish_quote).collect();
                writeln!(s, "set -gx {k} {}", parts.join(" "))
            }
            (ShellKind::Fish, Change::Set(k, v)) => writeln!(s, "set -gx {k} {}", fish_quote(v)),
            (ShellKind::Fish, Change::Unset(k)) => writeln!(s, "set -e {k}"),
            (ShellKind::Powershell, Change::Set(k, v)) => {
                writeln!(s, "{} = {}", powershell_env_name(k), powershell_quote(v))
            }
            (ShellKind::Powershell, Change::Unset(k)) => writeln!(
                s,
                "Remove-Item -LiteralPath {} -ErrorAction SilentlyContinue",
                powershell_quote(&format!("Env:{k}"))
            ),
        };
    }
    s
}

/// The bash that dumps variables and functions as NUL-separated records:
/// `x|v NAME VALUE`, `a NAME COUNT ITEMS…`, `A NAME COUNT (KEY VALUE)…`,
/// `f NAME DEFINITION`.
const DUMP_SCRIPT: &str = r#"
__b3_dump() {
    local __b3_n __b3_d __b3_f __b3_k __b3_v __b3_fn
    local -a __b3_keys __b3_vals
    for __b3_n in $(compgen -v); do
        case "$__b3_n" in __b3_*) continue ;; esac
        __b3_d=$(declare -p "$__b3_n" 2>/dev/null) || continue
        case "$__b3_d" in *=*) ;; *) continue ;; esac
        __b3_f=${__b3_d#declare -}
        __b3_f=${__b3_f%% *}
        case "$__b3_f" in
        *A*)
            eval "__b3_keys=(\"\${!$__b3_n[@]}\")"
            printf 'A\0%s\0%s\0' "$__b3_n" "${#__b3_keys[@]}"
            for __b3_k in "${__b3_keys[@]}"; do
                eval "__b3_v=\${$__b3_n[\$__b3_k]}"
                printf '%s\0%s\0' "$__b3_k" "$__b3_v"
            done
            ;;
        *a*)
            eval "__b3_vals=(\"\${$__b3_n[@]}\")"
            printf 'a\0%s\0%s\0' "$__b3_n" "${#__b3_vals[@]}"
            if [ "${#__b3_vals[@]}" -gt 0 ]; then printf '%s\0' "${__b3_vals[@]}"; fi
            ;;
        *x*) printf 'x\0%s\0%s\0' "$__b3_n" "${!__b3_n}" ;;
        *) printf 'v\0%s\0%s\0' "$__b3_n" "${!__b3_n}" ;;
        esac
    done
    for __b3_fn in $(compgen -A function); do
        case "$__b3_fn" in __b3_*) continue ;; esac
        printf 'f\0%s\0%s\0' "$__b3_fn" "$(declare -f "$__b3_fn")"
    done
}
__b3_dump > "$__b3_out"
"#;

/// A variable of the development environment (Nix's JSON kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevVar {
    Exported(String),
    Var(String),
    Array(Vec<String>),
    Associative(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevEnvDump {
    pub variables: BTreeMap<String, DevVar>,
    /// Function name → body (between the outer braces, as Nix keeps it).
    pub functions: BTreeMap<String, String>,
}

/// Parses the records [`DUMP_SCRIPT`] writes.
pub fn parse_dump(bytes: &[u8]) -> anyhow::Result<DevEnvDump> {
    let mut it = bytes
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut d = DevEnvDump::default();
    let mut next = |what: &str| {
        it.next()
            .with_context(|| format!("truncated dump: no {what}"))
    };
    loop {
        let kind = match next("kind") {
            Ok(k) if k.is_empty() => break,
            Ok(k) => k,
            Err(_) => break,
        };
        let name = next("name")?;
        let skip = SESSION_VARS.contains(&name.as_str()) || bash_internal(&name);
        match kind.as_str() {
            "x" | "v" => {
                let v = next("value")?;
                if !skip {
                    d.variables.insert(
                        name,
                        if kind == "x" {
                            DevVar::Exported(v)
                        } else {
                            DevVar::Var(v)
                        },
                    );
                }
            }
            "a" => {
                let n: usize = next("count")?.parse().context("bad array length")?;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(next("item")?);
                }
                if !skip {
                    d.variables.insert(name, DevVar::Array(items));
                }
            }
            "A" => {
                let n: usize = next("count")?.parse().context("bad array length")?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = next("key")?;
                    m.insert(k, next("value")?);
                }
                if !skip {
                    d.variables.insert(name, DevVar::Associative(m));
                }
            }
            "f" => {
                let def = next("function")?;
                // `declare -f` prints `NAME () \n{ BODY\n}`: keep what the braces hold.
                let body = match (def.find('{'), def.rfind('}')) {
                    (Some(a), Some(b)) if a < b => def[a + 1..b].to_string(),
                    _ => def,
                };
                d.functions.insert(name, body);
            }
            other => bail!("unknown record kind '{other}' in the environment dump"),
        }
    }
    Ok(d)
}

impl DevEnvDump {
    /// `nix print-dev-env --json`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let mut vars = Map::new();
        for (k, v) in &self.variables {
            let (ty, val) = match v {
                DevVar::Exported(s) => ("exported", Value::from(s.clone())),
                DevVar::Var(s) => ("var", Value::from(s.clone())),
                DevVar::Array(a) => ("array", Value::from(a.clone())),
                DevVar::Associative(m) => (
                    "associative",
                    Value::Object(
                        m.iter()
                            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                            .collect(),
                    ),
                ),
            };
            vars.insert(k.clone(), json!({ "type": ty, "value": val }));
        }
        let funcs: Map<String, Value> = self
            .functions
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        json!({ "bashFunctions": funcs, "variables": vars })
    }

    /// `nix print-dev-env` (bash to source).
    pub fn to_bash(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.variables {
            if !valid_name(k) {
                continue;
            }
            let _ = match v {
                DevVar::Exported(x) => writeln!(s, "{k}={}\nexport {k}", sh_quote(x)),
                DevVar::Var(x) => writeln!(s, "{k}={}", sh_quote(x)),
                DevVar::Array(a) => {
                    let items: Vec<String> = a.iter().map(|x| sh_quote(x)).collect();
                    writeln!(s, "declare -a {k}=({})", items.join(" "))
                }
                DevVar::Associative(m) => {
                    let items: Vec<String> = m
                        .iter()
                        .map(|(a, b)| format!("[{}]={}", sh_quote(a), sh_quote(b)))
                        .collect();
                    writeln!(s, "declare -A {k}=({})", items.join(" "))
                }
            };
        }
        for (name, body) in &self.functions {
            let _ = writeln!(s, "{name} ()\n{{{body}}}");
        }
        s
    }
}

pub fn run_dev(g: &Global, a: DevArgs) -> anyhow::Result<ExitCode> {
    if !shell::shell_program()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("bash"))
    {
        bail!("print-dev-env needs bash (set NIX_BUILD_SHELL or put bash on PATH)");
    }
    let opts = dev_env::EnvOptions {
        pure: true,
        clean: true,
        sandbox_paths: a.sandbox_paths.clone(),
        options: a.option.clone(),
        ..Default::default()
    };
    let dump = capture(g, &a.inst, &opts, DUMP_SCRIPT)?;
    let d = parse_dump(&dump)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &d.to_json())?;
        writeln!(out)?;
    } else {
        out.write_all(d.to_bash().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powershell_quote_doubles_every_kind_of_single_quote() {
        assert_eq!(powershell_quote("a'b"), "'a''b'");
        assert_eq!(powershell_quote("it\u{2019}s"), "'it\u{2019}\u{2019}s'");
        assert_eq!(
            powershell_quote("\u{2018}x\u{201B}"),
            "'\u{2018}\u{2018}x\u{201B}\u{201B}'"
        );
        // `$` and backticks are literal inside single quotes: left alone.
        assert_eq!(powershell_quote("$HOME `n"), "'$HOME `n'");
        assert_eq!(powershell_quote(""), "''");
    }

    #[test]
    fn powershell_names_escape_braces_and_backticks() {
        assert_eq!(powershell_env_name("PATH"), "${env:PATH}");
        assert_eq!(powershell_env_name("a}b`c"), "${env:a`}b``c}");
    }

    #[test]
    fn powershell_script_sets_and_removes() {
        let s = render(
            ShellKind::Powershell,
            &[
                Change::Set("out".into(), "/nix/store/x-'q'".into()),
                Change::Unset("FOO".into()),
            ],
        );
        assert_eq!(
            s,
            "${env:out} = '/nix/store/x-''q'''\nRemove-Item -LiteralPath 'Env:FOO' -ErrorAction SilentlyContinue\n"
        );
    }

    #[test]
    fn fish_quote_escapes_backslash_and_quote() {
        assert_eq!(fish_quote(r"a\b'c"), r"'a\\b\'c'");
        let s = render(
            ShellKind::Fish,
            &[Change::Set("PATH".into(), "/a:/b c".into())],
        );
        assert_eq!(s, "set -gx PATH '/a' '/b c'\n");
    }

    #[test]
    fn diff_skips_session_variables_and_invalid_names() {
        let before: BTreeMap<String, String> =
            [("KEEP".into(), "1".into()), ("GONE".into(), "x".into())].into();
        let after: BTreeMap<String, String> = [
            ("KEEP".into(), "1".into()),
            ("NEW".into(), "y".into()),
            ("TMPDIR".into(), "/tmp/x".into()),
            ("bad-name".into(), "z".into()),
        ]
        .into();
        assert_eq!(
            diff(&before, &after),
            vec![
                Change::Set("NEW".into(), "y".into()),
                Change::Unset("GONE".into())
            ]
        );
    }

    #[test]
    fn dump_records_parse_into_nix_kinds() {
        let raw = b"x\0out\0/nix/store/a\0v\0local\0l v\0a\0arr\x002\0one\0two\0A\0map\x001\0k\0v\0f\0hi\0hi () \n{ \n    echo hi\n}\0";
        let d = parse_dump(raw).unwrap();
        assert_eq!(d.variables["out"], DevVar::Exported("/nix/store/a".into()));
        assert_eq!(d.variables["local"], DevVar::Var("l v".into()));
        assert_eq!(
            d.variables["arr"],
            DevVar::Array(vec!["one".into(), "two".into()])
        );
        assert_eq!(
            d.variables["map"],
            DevVar::Associative([("k".to_string(), "v".to_string())].into())
        );
        assert_eq!(d.functions["hi"], " \n    echo hi\n");
        let j = d.to_json();
        assert_eq!(j["variables"]["out"]["type"], "exported");
        assert_eq!(j["variables"]["arr"]["value"][1], "two");
        assert_eq!(j["variables"]["map"]["type"], "associative");
        assert_eq!(j["bashFunctions"]["hi"], " \n    echo hi\n");
    }
}
