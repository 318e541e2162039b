//! Typed setting values: how each kind of setting parses its text, appends
//! (`extra-NAME`), and renders itself for `config show` (text and JSON in the
//! shape `nix show-config --json` uses).

use std::collections::BTreeSet;

/// A value that does not parse for its setting; the message follows Nix's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

/// One kind of setting value.
pub trait SettingValue: Sized {
    /// Whether `extra-NAME` may append to it (lists and sets).
    const APPENDABLE: bool = false;
    /// Whether the command line spells it `--NAME` / `--no-NAME` without a value.
    const IS_BOOL: bool = false;
    fn parse(name: &str, text: &str) -> Result<Self, ValueError>;
    /// Append `more` (only called when `APPENDABLE`).
    fn append(&mut self, _more: Self) {}
    fn to_json(&self) -> serde_json::Value;
    /// The form `nix show-config` prints (and nix.conf accepts back).
    fn to_text(&self) -> String;
}

fn invalid(name: &str, text: &str) -> ValueError {
    ValueError(format!("setting '{name}' has invalid value '{text}'"))
}

impl SettingValue for bool {
    const IS_BOOL: bool = true;
    fn parse(name: &str, text: &str) -> Result<Self, ValueError> {
        match text {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(ValueError(format!(
                "Boolean setting '{name}' has invalid value '{text}'"
            ))),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Bool(*self)
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// Parses an unsigned integer with an optional binary unit suffix
/// (`K`, `M`, `G`, `T`, either case), as current Nix does. Nix 2.8 accepts
/// plain digits only; a suffix is a b3 (and newer Nix) extension.
pub fn parse_int_with_suffix(text: &str) -> Option<u64> {
    let (digits, shift) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return None,
            };
            (&text[..text.len() - 1], shift)
        }
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

impl SettingValue for u64 {
    fn parse(name: &str, text: &str) -> Result<Self, ValueError> {
        parse_int_with_suffix(text).ok_or_else(|| invalid(name, text))
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(*self)
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for String {
    fn parse(_name: &str, text: &str) -> Result<Self, ValueError> {
        Ok(text.to_owned())
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::String(self.clone())
    }
    fn to_text(&self) -> String {
        self.clone()
    }
}

/// An ordered, whitespace-separated list (`substituters`, `trusted-substituters`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Strings(pub Vec<String>);

impl SettingValue for Strings {
    const APPENDABLE: bool = true;
    fn parse(_name: &str, text: &str) -> Result<Self, ValueError> {
        Ok(Strings(
            text.split_whitespace().map(str::to_owned).collect(),
        ))
    }
    fn append(&mut self, more: Self) {
        self.0.extend(more.0);
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(self.0.clone())
    }
    fn to_text(&self) -> String {
        self.0.join(" ")
    }
}

/// A whitespace-separated set, kept sorted and without duplicates as Nix's
/// `std::set` settings are (`trusted-public-keys`, `experimental-features`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringSet(pub BTreeSet<String>);

impl SettingValue for StringSet {
    const APPENDABLE: bool = true;
    fn parse(_name: &str, text: &str) -> Result<Self, ValueError> {
        Ok(StringSet(
            text.split_whitespace().map(str::to_owned).collect(),
        ))
    }
    fn append(&mut self, more: Self) {
        self.0.extend(more.0);
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(self.0.iter().cloned().collect::<Vec<_>>())
    }
    fn to_text(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

impl StringSet {
    pub fn contains(&self, s: &str) -> bool {
        self.0.contains(s)
    }
}

/// `max-jobs`: a count, or `auto` for the number of CPUs (resolved when parsed,
/// as Nix does, so `config show` prints the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxJobs(pub u64);

pub(crate) fn available_cores() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

impl SettingValue for MaxJobs {
    fn parse(name: &str, text: &str) -> Result<Self, ValueError> {
        if text == "auto" {
            return Ok(MaxJobs(available_cores()));
        }
        parse_int_with_suffix(text).map(MaxJobs).ok_or_else(|| {
            ValueError(format!(
                "configuration setting '{name}' should be 'auto' or an integer"
            ))
        })
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(self.0)
    }
    fn to_text(&self) -> String {
        self.0.to_string()
    }
}

/// `sandbox`: `true`, `false` or `relaxed` (fixed-output and `__noChroot`
/// derivations may then run unsandboxed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Enabled,
    Relaxed,
    Disabled,
}

impl SettingValue for SandboxMode {
    // `--sandbox` / `--no-sandbox` on the command line, like a Boolean.
    const IS_BOOL: bool = true;
    fn parse(name: &str, text: &str) -> Result<Self, ValueError> {
        match text {
            "true" => Ok(SandboxMode::Enabled),
            "relaxed" => Ok(SandboxMode::Relaxed),
            "false" => Ok(SandboxMode::Disabled),
            _ => Err(ValueError(format!(
                "option '{name}' has invalid value '{text}'"
            ))),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        match self {
            SandboxMode::Enabled => serde_json::Value::Bool(true),
            SandboxMode::Disabled => serde_json::Value::Bool(false),
            SandboxMode::Relaxed => serde_json::Value::String("relaxed".into()),
        }
    }
    fn to_text(&self) -> String {
        match self {
            SandboxMode::Enabled => "true",
            SandboxMode::Disabled => "false",
            SandboxMode::Relaxed => "relaxed",
        }
        .into()
    }
}

/// One `sandbox-paths` entry: `TARGET`, `TARGET=SOURCE`, either with a
/// trailing `?` meaning "skip if the source does not exist".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SandboxPath {
    /// The entry as written; the set is ordered by it, as Nix's `PathSet` is.
    pub spec: String,
    /// Where it appears inside the sandbox.
    pub target: String,
    /// What is bind-mounted there (equal to `target` without `=`).
    pub source: String,
    pub optional: bool,
}

impl SandboxPath {
    pub fn parse(spec: &str) -> SandboxPath {
        let (body, optional) = match spec.strip_suffix('?') {
            Some(b) => (b, true),
            None => (spec, false),
        };
        let (target, source) = match body.split_once('=') {
            Some((t, s)) => (t, s),
            None => (body, body),
        };
        SandboxPath {
            spec: spec.to_owned(),
            target: target.to_owned(),
            source: source.to_owned(),
            optional,
        }
    }
}

/// `sandbox-paths`: a set of [`SandboxPath`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxPaths(pub BTreeSet<SandboxPath>);

impl SettingValue for SandboxPaths {
    const APPENDABLE: bool = true;
    fn parse(_name: &str, text: &str) -> Result<Self, ValueError> {
        Ok(SandboxPaths(
            text.split_whitespace().map(SandboxPath::parse).collect(),
        ))
    }
    fn append(&mut self, more: Self) {
        self.0.extend(more.0);
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(self.0.iter().map(|p| p.spec.clone()).collect::<Vec<_>>())
    }
    fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|p| p.spec.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_suffixes_are_binary_units() {
        assert_eq!(parse_int_with_suffix("3"), Some(3));
        assert_eq!(parse_int_with_suffix("1K"), Some(1024));
        assert_eq!(parse_int_with_suffix("2m"), Some(2 << 20));
        assert_eq!(parse_int_with_suffix("1G"), Some(1 << 30));
        assert_eq!(parse_int_with_suffix("1T"), Some(1 << 40));
        assert_eq!(parse_int_with_suffix("K"), None);
        assert_eq!(parse_int_with_suffix("1X"), None);
        assert_eq!(parse_int_with_suffix("-1"), None);
        assert_eq!(parse_int_with_suffix("99999999999999T"), None);
    }

    #[test]
    fn sandbox_path_forms() {
        let p = SandboxPath::parse("/bin/sh=/nix/store/x-busybox/bin/sh?");
        assert_eq!(p.target, "/bin/sh");
        assert_eq!(p.source, "/nix/store/x-busybox/bin/sh");
        assert!(p.optional);
        let q = SandboxPath::parse("/dev/kvm");
        assert_eq!(
            (q.target.as_str(), q.source.as_str(), q.optional),
            ("/dev/kvm", "/dev/kvm", false)
        );
    }

    #[test]
    fn booleans_accept_nix_spellings() {
        for t in ["true", "yes", "1"] {
            assert_eq!(bool::parse("x", t), Ok(true));
        }
        for f in ["false", "no", "0"] {
            assert_eq!(bool::parse("x", f), Ok(false));
        }
        assert!(bool::parse("x", "maybe").is_err());
    }
}
