//! `b3 shell` on Windows: PowerShell (`pwsh` if present, else Windows
//! PowerShell) started with the derivation's environment applied.
//!
//! Everything here except [`spawn`] is platform-independent and unit-tested
//! on Linux and under wine: which program to start ([`find_program`]), the
//! start-up script ([`script`]: the variable changes as `b3 print-env
//! --shell powershell` prints them, the inputs' `bin` directories in front
//! of `PATH`, a prompt, then `--run`'s command and its exit status) and the
//! command line ([`arguments`]).
//!
//! A derivation's `shellHook` is bash and is not run; stdenv's `setup` is
//! not sourced either (there is no bash to source it).
// Used by the Windows `run_in_env` only; elsewhere just tested.
#![cfg_attr(not(windows), allow(dead_code))]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::super::dev_env::Then;
use super::super::print_env::{powershell_quote, render, Change, ShellKind};

/// The PowerShell executables, preferred first.
const PROGRAMS: &[&str] = &["pwsh.exe", "powershell.exe"];

/// The PowerShell to start: `pwsh.exe` or `powershell.exe` found in `path`
/// (a `PATH` value, `;`-separated on Windows), else Windows PowerShell at
/// its fixed place under `system_root` (`%SystemRoot%`). `exists` says
/// whether a file exists (a parameter so that tests choose the machine).
pub fn find_program(
    path: Option<&OsStr>,
    system_root: Option<&OsStr>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path.map(split_windows_path).unwrap_or_default();
    for prog in PROGRAMS {
        if let Some(p) = dirs.iter().map(|d| d.join(prog)).find(|p| exists(p)) {
            return Some(p);
        }
    }
    let root = system_root?;
    let fixed = Path::new(root)
        .join("System32")
        .join("WindowsPowerShell")
        .join("v1.0")
        .join("powershell.exe");
    exists(&fixed).then_some(fixed)
}

/// `PATH` split at `;` (Windows' separator whatever the host), empty
/// entries and surrounding quotes dropped.
fn split_windows_path(path: &OsStr) -> Vec<PathBuf> {
    path.to_string_lossy()
        .split(';')
        .map(|d| d.trim().trim_matches('"'))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The start-up script: `changes` applied, `path_prefix` put in front of
/// `PATH`, a `[b3-shell]` prompt (unless `preserve_prompt`), then for
/// [`Then::Run`] the command and an `exit` with its status.
pub fn script(
    changes: &[Change],
    path_prefix: &[String],
    then: &Then,
    preserve_prompt: bool,
) -> String {
    let mut s = String::from("# b3 shell start-up script (PowerShell)\n");
    s.push_str(&render(ShellKind::Powershell, changes));
    if !path_prefix.is_empty() {
        let quoted: Vec<String> = path_prefix.iter().map(|p| powershell_quote(p)).collect();
        s.push_str(&format!(
            "$env:PATH = (@({}) + @($env:PATH | Where-Object {{ $_ }})) -join [IO.Path]::PathSeparator\n",
            quoted.join(", ")
        ));
    }
    if !preserve_prompt {
        s.push_str(
            "function global:prompt { \"[b3-shell] PS $($executionContext.SessionState.Path.CurrentLocation)> \" }\n",
        );
    }
    if let Then::Run(cmd) = then {
        // A native command's status is $LASTEXITCODE; a failing cmdlet only
        // clears $?.
        s.push_str("$global:LASTEXITCODE = 0\n");
        s.push_str(cmd);
        s.push_str(
            "\nif (-not $?) { if ($LASTEXITCODE) { exit $LASTEXITCODE } else { exit 1 } }\n",
        );
        s.push_str("exit $LASTEXITCODE\n");
    }
    s
}

/// The arguments after the program: without a profile (the environment is
/// the derivation's, as with `nix-shell`), the script dot-sourced into an
/// interactive session (`-NoExit`), or run as a file for `--run`.
pub fn arguments(script_path: &Path, interactive: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-NoLogo".into(), "-NoProfile".into()];
    // Windows PowerShell refuses unsigned scripts by default; this applies
    // to this process only.
    a.extend(["-ExecutionPolicy".into(), "Bypass".into()]);
    if interactive {
        a.push("-NoExit".into());
        a.push("-Command".into());
        a.push(format!(". {}", powershell_quote(&script_path.to_string_lossy())).into());
    } else {
        a.push("-NonInteractive".into());
        a.push("-File".into());
        a.push(script_path.as_os_str().to_owned());
    }
    a
}

/// Writes the script into `dir` and starts PowerShell on it with `vars` as
/// its whole environment; returns its exit code.
#[cfg(windows)]
pub fn spawn(
    dir: &Path,
    program: &Path,
    script_text: &str,
    interactive: bool,
    vars: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<i32> {
    let path = dir.join("b3-shell.ps1");
    // A byte-order mark makes Windows PowerShell read the script as UTF-8.
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(script_text.as_bytes());
    std::fs::write(&path, bytes)?;
    let status = std::process::Command::new(program)
        .args(arguments(&path, interactive))
        .env_clear()
        .envs(vars)
        .status()?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn pwsh_is_preferred_to_windows_powershell() {
        let path = os(r"C:\Windows\System32;C:\Program Files\PowerShell\7");
        // Windows PowerShell is in the first directory, pwsh in the second.
        let have = |p: &Path| {
            let s = p.to_string_lossy();
            (s.contains(r"PowerShell\7") && s.ends_with("pwsh.exe"))
                || s.ends_with("powershell.exe")
        };
        let got = find_program(Some(&path), None, have).unwrap();
        assert!(got.to_string_lossy().ends_with("pwsh.exe"), "{got:?}");
        assert!(got.starts_with(r"C:\Program Files\PowerShell\7"), "{got:?}");
    }

    #[test]
    fn windows_powershell_from_path_or_its_fixed_place() {
        let have_only_v1 = |p: &Path| p.to_string_lossy().ends_with("powershell.exe");
        let got = find_program(Some(&os(r#""C:\x";;C:\y"#)), None, have_only_v1).unwrap();
        assert_eq!(got, Path::new(r"C:\x").join("powershell.exe"));
        let got = find_program(None, Some(&os(r"C:\Windows")), have_only_v1).unwrap();
        assert!(
            got.to_string_lossy().contains("WindowsPowerShell"),
            "{got:?}"
        );
        assert_eq!(find_program(Some(&os(r"C:\x")), None, |_| false), None);
    }

    #[test]
    fn script_applies_the_environment_then_runs_the_command() {
        let changes = vec![
            Change::Set("out".into(), "/nix/store/abc-x".into()),
            Change::Set("msg".into(), "it's".into()),
            Change::Unset("GONE".into()),
        ];
        let s = script(
            &changes,
            &[r"C:\store\abc-x\bin".into()],
            &Then::Run("greet 'you'".into()),
            false,
        );
        // The same lines as `b3 print-env --shell powershell`.
        assert!(s.contains(&render(ShellKind::Powershell, &changes)), "{s}");
        assert!(s.contains("${env:msg} = 'it''s'\n"), "{s}");
        assert!(s.contains("Remove-Item -LiteralPath 'Env:GONE'"), "{s}");
        assert!(
            s.contains(r"$env:PATH = (@('C:\store\abc-x\bin') + @($env:PATH"),
            "{s}"
        );
        assert!(s.contains("function global:prompt"), "{s}");
        let run_at = s.find("greet 'you'\n").unwrap();
        assert!(run_at > s.find("${env:msg}").unwrap());
        assert!(s.trim_end().ends_with("exit $LASTEXITCODE"), "{s}");
    }

    #[test]
    fn interactive_script_stays_open_and_can_keep_the_prompt() {
        let s = script(&[], &[], &Then::Interactive, true);
        assert!(!s.contains("exit"), "{s}");
        assert!(!s.contains("prompt"), "{s}");
        assert!(!s.contains("$env:PATH"), "{s}");
    }

    #[test]
    fn command_line_dot_sources_when_interactive_and_runs_the_file_otherwise() {
        let p = Path::new(r"C:\Temp\b3 shell\it's.ps1");
        let a = arguments(p, true);
        let i = a.iter().position(|x| x == "-NoExit").unwrap();
        assert_eq!(a[i + 1], "-Command");
        assert_eq!(a[i + 2], os(r". 'C:\Temp\b3 shell\it''s.ps1'"));
        assert!(a.contains(&os("-NoProfile")));
        let a = arguments(p, false);
        assert_eq!(a[a.len() - 2], "-File");
        assert_eq!(a[a.len() - 1], p.as_os_str());
        assert!(a.contains(&os("-NonInteractive")));
        assert!(!a.contains(&os("-NoExit")));
    }
}
