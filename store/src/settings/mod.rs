//! Settings, read as Nix reads them: nix.conf files in Nix's order,
//! `NIX_CONFIG`, then the command line (`--option NAME VALUE`, `--NAME VALUE`,
//! `--NAME`/`--no-NAME` for Booleans, `--extra-NAME VALUE` for lists).
//!
//! Owns the layering, the nix.conf syntax (`conffile`), the typed
//! [`Settings`] b3 acts on (`defs`), the Nix settings b3 recognises without
//! interpreting (`opaque`), and provenance: for every setting, where its
//! value came from. Unknown names become [`Warning`]s (collected, never
//! printed here); bad values and broken includes are [`SettingsError`]s that
//! name the file and line.

mod conffile;
mod defs;
mod opaque;
mod sources;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use defs::Settings;
pub use opaque::{Opaque, OPAQUE};
pub use sources::ConfigEnv;
pub use value::{
    parse_int_with_suffix, MaxJobs, SandboxMode, SandboxPath, SandboxPaths, SettingValue,
    StringSet, Strings, ValueError,
};

use defs::{TypedDef, KNOWN_EXPERIMENTAL_FEATURES, TYPED};

/// Includes nested deeper than this are taken to be a cycle.
const MAX_INCLUDE_DEPTH: usize = 32;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File {
        path: PathBuf,
        line: usize,
    },
    /// A line of the `NIX_CONFIG` environment variable.
    NixConfig {
        line: usize,
    },
    /// A command-line flag, as written (`--option cores`, `--no-sandbox`).
    CommandLine {
        flag: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::NixConfig { line } => write!(f, "NIX_CONFIG:{line}"),
            Origin::CommandLine { flag } => write!(f, "command line ({flag})"),
        }
    }
}

impl Origin {
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Origin::Default => json!({"kind": "default"}),
            Origin::File { path, line } => {
                json!({"kind": "file", "path": path.to_string_lossy(), "line": line})
            }
            Origin::NixConfig { line } => json!({"kind": "NIX_CONFIG", "line": line}),
            Origin::CommandLine { flag } => json!({"kind": "command-line", "flag": flag}),
        }
    }
}

/// How a setting got its value: the last assignment, plus the `extra-`
/// appends made after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub set: Origin,
    pub appended: Vec<Origin>,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            set: Origin::Default,
            appended: Vec::new(),
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.set)?;
        for a in &self.appended {
            write!(f, " + {a}")?;
        }
        Ok(())
    }
}

/// Something worth telling the user that does not stop loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    UnknownSetting {
        name: String,
        origin: Origin,
    },
    UnknownExperimentalFeature {
        feature: String,
        origin: Origin,
    },
    /// A top-level configuration file exists but could not be read (Nix
    /// skips it silently).
    UnreadableFile {
        path: PathBuf,
        error: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownSetting { name, origin } => {
                write!(f, "unknown setting '{name}' ({origin})")
            }
            Warning::UnknownExperimentalFeature { feature, origin } => {
                write!(f, "unknown experimental feature '{feature}' ({origin})")
            }
            Warning::UnreadableFile { path, error } => {
                write!(
                    f,
                    "cannot read configuration file '{}': {error}",
                    path.display()
                )
            }
        }
    }
}

/// A configuration that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{origin}: {message}")]
    InvalidValue {
        origin: Origin,
        name: String,
        message: String,
    },
    #[error("{origin}: illegal configuration line '{text}'")]
    IllegalLine { origin: Origin, text: String },
    #[error("{origin}: included file '{}' not found", path.display())]
    MissingInclude { origin: Origin, path: PathBuf },
    #[error("{origin}: cannot read included file '{}': {source}", path.display())]
    UnreadableInclude {
        origin: Origin,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: relative include '{path}' is only allowed inside a file")]
    RelativeInclude { origin: Origin, path: String },
    #[error("{origin}: includes nested more than {MAX_INCLUDE_DEPTH} deep at '{}' (a cycle?)", path.display())]
    IncludeTooDeep { origin: Origin, path: PathBuf },
    #[error("'{flag}' needs {wanted} argument(s)")]
    MissingFlagValue { flag: String, wanted: usize },
}

/// What a setting name refers to.
#[derive(Clone, Copy)]
enum Target {
    Typed(&'static TypedDef),
    Opaque(&'static Opaque),
}

impl Target {
    fn canonical(self) -> &'static str {
        match self {
            Target::Typed(d) => d.name,
            Target::Opaque(o) => o.name,
        }
    }
    fn appendable(self) -> bool {
        match self {
            Target::Typed(d) => d.appendable,
            Target::Opaque(o) => o.list,
        }
    }
    fn is_bool(self) -> bool {
        match self {
            Target::Typed(d) => d.is_bool,
            Target::Opaque(o) => o.default == "true" || o.default == "false",
        }
    }
}

fn lookup(name: &str) -> Option<Target> {
    if let Some(d) = TYPED
        .iter()
        .find(|d| d.name == name || d.aliases.contains(&name))
    {
        return Some(Target::Typed(d));
    }
    OPAQUE
        .iter()
        .find(|o| o.name == name || o.aliases.contains(&name))
        .map(Target::Opaque)
}

/// A text being applied: decides origins and how includes resolve.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    NixConfig,
}

impl Source<'_> {
    fn origin(&self, line: usize) -> Origin {
        match self {
            Source::File(p) => Origin::File {
                path: p.to_path_buf(),
                line,
            },
            Source::NixConfig => Origin::NixConfig { line },
        }
    }
}

/// One row of `config show`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    /// Whether b3 acts on it (typed) or only records it.
    pub interpreted: bool,
    pub value_text: String,
    pub value_json: serde_json::Value,
    pub default_json: serde_json::Value,
    pub provenance: Provenance,
}

/// The outcome of offering a command-line argument to [`Config::apply_flag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagUse {
    /// Not a settings flag; leave it for the caller's parser.
    NotASetting,
    /// A settings flag that used this many following arguments.
    Consumed(usize),
}

/// Settings plus where each came from and what was worth a warning.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    conf_dir: PathBuf,
    opaque: BTreeMap<&'static str, String>,
    provenance: BTreeMap<&'static str, Provenance>,
    warnings: Vec<Warning>,
    files_read: Vec<PathBuf>,
}

impl Config {
    /// Defaults only; `conf_dir` fills in defaults Nix derives from it
    /// (`builders`, `netrc-file`).
    pub fn new(conf_dir: impl Into<PathBuf>) -> Config {
        let conf_dir = conf_dir.into();
        let opaque = OPAQUE
            .iter()
            .map(|o| (o.name, opaque_default(o, &conf_dir)))
            .collect();
        Config {
            settings: Settings::default(),
            conf_dir,
            opaque,
            provenance: BTreeMap::new(),
            warnings: Vec::new(),
            files_read: Vec::new(),
        }
    }

    /// Defaults, then the files and `NIX_CONFIG` that `env` names, in Nix's order.
    pub fn load(env: &ConfigEnv) -> Result<Config, SettingsError> {
        let mut c = Config::new(&env.nix_conf_dir);
        for f in env.files_in_apply_order() {
            c.apply_file(&f)?;
        }
        if let Some(text) = &env.nix_config {
            c.apply_nix_config(text)?;
        }
        Ok(c)
    }

    /// Defaults plus the process environment's files and `NIX_CONFIG`.
    pub fn load_from_process() -> Result<Config, SettingsError> {
        Config::load(&ConfigEnv::from_process())
    }

    /// Applies a top-level configuration file. A missing file is skipped, as
    /// Nix skips it; an unreadable one is skipped with a warning.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.files_read.push(path.to_path_buf());
                self.apply_text(&text, Source::File(path), 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                self.warnings.push(Warning::UnreadableFile {
                    path: path.to_path_buf(),
                    error: e.to_string(),
                });
                Ok(())
            }
        }
    }

    /// Applies `NIX_CONFIG`-style text (includes must be absolute).
    pub fn apply_nix_config(&mut self, text: &str) -> Result<(), SettingsError> {
        self.apply_text(text, Source::NixConfig, 0)
    }

    fn apply_text(
        &mut self,
        text: &str,
        source: Source<'_>,
        depth: usize,
    ) -> Result<(), SettingsError> {
        let directives = conffile::parse(text).map_err(|e| SettingsError::IllegalLine {
            origin: source.origin(e.line),
            text: e.text,
        })?;
        for d in directives {
            match d {
                conffile::Directive::Assign { line, name, value } => {
                    self.set(&name, &value, source.origin(line))?;
                }
                conffile::Directive::Include {
                    line,
                    path,
                    optional,
                } => {
                    let origin = source.origin(line);
                    let resolved = if Path::new(&path).is_absolute() {
                        PathBuf::from(&path)
                    } else {
                        match source {
                            Source::File(f) => f.parent().unwrap_or(Path::new("/")).join(&path),
                            Source::NixConfig => {
                                return Err(SettingsError::RelativeInclude { origin, path })
                            }
                        }
                    };
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(SettingsError::IncludeTooDeep {
                            origin,
                            path: resolved,
                        });
                    }
                    match std::fs::read_to_string(&resolved) {
                        Ok(text) => {
                            self.files_read.push(resolved.clone());
                            self.apply_text(&text, Source::File(&resolved), depth + 1)?;
                        }
                        Err(_) if optional => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(SettingsError::MissingInclude {
                                origin,
                                path: resolved,
                            })
                        }
                        Err(e) => {
                            return Err(SettingsError::UnreadableInclude {
                                origin,
                                path: resolved,
                                source: e,
                            })
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets `name` (a setting, an alias, or `extra-` + a list setting) from
    /// text. Returns `false`, recording a warning, when the name is unknown.
    pub fn set(&mut self, name: &str, value: &str, origin: Origin) -> Result<bool, SettingsError> {
        let (target, append) = match lookup(name) {
            Some(t) => (t, false),
            None => match name.strip_prefix("extra-").and_then(lookup) {
                Some(t) if t.appendable() => (t, true),
                _ => {
                    self.warnings.push(Warning::UnknownSetting {
                        name: name.to_owned(),
                        origin,
                    });
                    return Ok(false);
                }
            },
        };
        match target {
            Target::Typed(def) => {
                (def.set)(&mut self.settings, value, append).map_err(|e| {
                    SettingsError::InvalidValue {
                        origin: origin.clone(),
                        name: name.to_owned(),
                        message: e.0,
                    }
                })?;
                if def.name == "experimental-features" {
                    for f in value.split_whitespace() {
                        if !KNOWN_EXPERIMENTAL_FEATURES.contains(&f) {
                            self.warnings.push(Warning::UnknownExperimentalFeature {
                                feature: f.to_owned(),
                                origin: origin.clone(),
                            });
                        }
                    }
                }
            }
            Target::Opaque(o) => {
                let slot = self.opaque.entry(o.name).or_default();
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                if append && !slot.is_empty() && !value.is_empty() {
                    slot.push(' ');
                    slot.push_str(&value);
                } else if append {
                    slot.push_str(&value);
                } else {
                    *slot = value;
                }
            }
        }
        let p = self.provenance.entry(target.canonical()).or_default();
        if append {
            p.appended.push(origin);
        } else {
            *p = Provenance {
                set: origin,
                appended: Vec::new(),
            };
        }
        Ok(true)
    }

    /// `--option NAME VALUE`.
    pub fn apply_option(&mut self, name: &str, value: &str) -> Result<bool, SettingsError> {
        self.set(
            name,
            value,
            Origin::CommandLine {
                flag: format!("--option {name}"),
            },
        )
    }

    /// Offers one command-line flag (with up to two following arguments in
    /// `rest`) to the settings: `--option N V`, `--NAME V`, `--NAME` /
    /// `--no-NAME` for Booleans, `--extra-NAME V` for lists, `-j N`.
    pub fn apply_flag(&mut self, flag: &str, rest: &[&str]) -> Result<FlagUse, SettingsError> {
        let need = |n: usize| -> Result<(), SettingsError> {
            if rest.len() < n {
                Err(SettingsError::MissingFlagValue {
                    flag: flag.to_owned(),
                    wanted: n,
                })
            } else {
                Ok(())
            }
        };
        let origin = || Origin::CommandLine {
            flag: flag.to_owned(),
        };
        if flag == "--option" {
            need(2)?;
            self.apply_option(rest[0], rest[1])?;
            return Ok(FlagUse::Consumed(2));
        }
        let name = match flag {
            "-j" => "max-jobs",
            _ => match flag.strip_prefix("--") {
                Some(n) => n,
                None => return Ok(FlagUse::NotASetting),
            },
        };
        if let Some(t) = lookup(name) {
            if t.is_bool() {
                self.set(name, "true", origin())?;
                return Ok(FlagUse::Consumed(0));
            }
            need(1)?;
            self.set(name, rest[0], origin())?;
            return Ok(FlagUse::Consumed(1));
        }
        if let Some(base) = name.strip_prefix("no-") {
            if lookup(base).is_some_and(|t| t.is_bool()) {
                self.set(base, "false", origin())?;
                return Ok(FlagUse::Consumed(0));
            }
        }
        if let Some(base) = name.strip_prefix("extra-") {
            if lookup(base).is_some_and(|t| t.appendable()) {
                need(1)?;
                self.set(name, rest[0], origin())?;
                return Ok(FlagUse::Consumed(1));
            }
        }
        Ok(FlagUse::NotASetting)
    }

    /// Takes every settings flag out of `args` (applying it) and returns the
    /// rest for the command's own parser. Flags named in `reserved` (e.g.
    /// `--store`, which b3 uses for its store root) are left alone; so is
    /// everything after `--`.
    pub fn take_setting_args(
        &mut self,
        args: Vec<String>,
        reserved: &[&str],
    ) -> Result<Vec<String>, SettingsError> {
        let mut out = Vec::with_capacity(args.len());
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                out.extend(args[i..].iter().cloned());
                break;
            }
            if reserved.contains(&a) {
                out.push(args[i].clone());
                i += 1;
                continue;
            }
            let rest: Vec<&str> = args[i + 1..].iter().take(2).map(String::as_str).collect();
            match self.apply_flag(a, &rest)? {
                FlagUse::NotASetting => {
                    out.push(args[i].clone());
                    i += 1;
                }
                FlagUse::Consumed(n) => i += 1 + n,
            }
        }
        Ok(out)
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Files actually read, in order (includes included).
    pub fn files_read(&self) -> &[PathBuf] {
        &self.files_read
    }

    /// Where `name` (canonical or alias) got its value; `None` if unknown.
    pub fn provenance(&self, name: &str) -> Option<Provenance> {
        let t = lookup(name)?;
        Some(
            self.provenance
                .get(t.canonical())
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The text value of a recognised setting b3 does not interpret.
    pub fn opaque_value(&self, name: &str) -> Option<&str> {
        match lookup(name)? {
            Target::Opaque(o) => self.opaque.get(o.name).map(String::as_str),
            Target::Typed(_) => None,
        }
    }

    /// Every known setting with value, default and origin, sorted by name.
    pub fn entries(&self) -> Vec<Entry> {
        let defaults = Settings::default();
        let mut out: Vec<Entry> = TYPED
            .iter()
            .map(|d| Entry {
                name: d.name,
                aliases: d.aliases,
                description: d.description.trim(),
                interpreted: true,
                value_text: (d.text)(&self.settings),
                value_json: (d.json)(&self.settings),
                default_json: (d.json)(&defaults),
                provenance: self.provenance.get(d.name).cloned().unwrap_or_default(),
            })
            .collect();
        for o in OPAQUE {
            let text = self.opaque.get(o.name).cloned().unwrap_or_default();
            out.push(Entry {
                name: o.name,
                aliases: o.aliases,
                description: "",
                interpreted: false,
                value_json: opaque_json(o, &text),
                default_json: opaque_json(o, &opaque_default(o, &self.conf_dir)),
                value_text: text,
                provenance: self.provenance.get(o.name).cloned().unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(b.name));
        out
    }

    /// `{NAME: {value, defaultValue, aliases, description, origin, appendedFrom, interpreted}}`,
    /// the shape of `nix show-config --json` plus b3's provenance keys.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for e in self.entries() {
            map.insert(
                e.name.to_owned(),
                serde_json::json!({
                    "value": e.value_json,
                    "defaultValue": e.default_json,
                    "aliases": e.aliases,
                    "description": e.description,
                    "origin": e.provenance.set.to_json(),
                    "appendedFrom": e.provenance.appended.iter().map(Origin::to_json).collect::<Vec<_>>(),
                    "interpreted": e.interpreted,
                }),
            );
        }
        serde_json::Value::Object(map)
    }
}

fn opaque_default(o: &Opaque, conf_dir: &Path) -> String {
    let conf = conf_dir.to_string_lossy();
    let platform = match o.name {
        "system" => format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        _ => String::new(),
    };
    o.default
        .replace("{conf}", &conf)
        .replace("{platform}", &platform)
}

/// JSON for a recorded value, typed the way its default is (Booleans and
/// integers as JSON scalars, lists as arrays), falling back to a string.
fn opaque_json(o: &Opaque, text: &str) -> serde_json::Value {
    if o.list {
        return serde_json::Value::from(
            text.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    if o.default == "true" || o.default == "false" {
        if let Ok(b) = bool::parse(o.name, text) {
            return serde_json::Value::Bool(b);
        }
    }
    if !o.default.is_empty() && o.default.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(n) = parse_int_with_suffix(text) {
            return serde_json::Value::from(n);
        }
    }
    serde_json::Value::String(text.to_owned())
}
