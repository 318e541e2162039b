//! The builtins table, the global scope, `import` and search-path lookup.

pub mod attrs;
pub mod context;
pub mod derivation;
pub mod fetch;
pub mod flake;
pub mod hash;
pub mod json;
pub mod lists;
pub mod misc;
pub mod store;
pub mod strings;
pub mod toml;
pub mod xml;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::ast;
use crate::error::EvalError;
use crate::eval::{err, Ev, Options, R};
use crate::pos::{self, Pos};
use crate::value::*;

/// (name, arity, implementation). Names starting with `__` are global only
/// with that prefix; others are also global unprefixed when listed in
/// `UNPREFIXED`.
pub fn table() -> Vec<(&'static str, usize, PrimFn)> {
    let mut t: Vec<(&'static str, usize, PrimFn)> = Vec::new();
    misc::register(&mut t);
    lists::register(&mut t);
    attrs::register(&mut t);
    strings::register(&mut t);
    json::register(&mut t);
    toml::register(&mut t);
    xml::register(&mut t);
    hash::register(&mut t);
    context::register(&mut t);
    store::register(&mut t);
    derivation::register(&mut t);
    flake::register(&mut t);
    fetch::register(&mut t);
    t
}

const UNPREFIXED: &[&str] = &[
    "abort",
    "baseNameOf",
    "break",
    "derivation",
    "derivationStrict",
    "dirOf",
    "fetchGit",
    "fetchMercurial",
    "fetchTarball",
    "fetchTree",
    "fromTOML",
    "import",
    "isNull",
    "map",
    "placeholder",
    "removeAttrs",
    "scopedImport",
    "throw",
    "toString",
];

const DERIVATION_NIX: &str = r#"
attrs:
let
  outs = attrs.outputs or [ "out" ];
  strict = derivationStrict attrs;
  mkOut = name: {
    inherit name;
    value = common // {
      outPath = builtins.getAttr name strict;
      drvPath = strict.drvPath;
      type = "derivation";
      outputName = name;
    };
  };
  outList = map mkOut outs;
  common = attrs // builtins.listToAttrs outList // {
    all = map (o: o.value) outList;
    drvAttrs = attrs;
  };
in
(builtins.head outList).value
"#;

const FETCHURL_NIX: &str = r#"
{ url, hash ? "", sha256 ? "", sha1 ? "", sha512 ? "", name ? baseNameOf (toString url),
  executable ? false, unpack ? false, system ? "", ... }:
# A fixed-output derivation built by the builtin fetcher, as `<nix/fetchurl.nix>`
# is in Nix 2.8 (same env, hence the same drv path).
derivation {
  inherit name url executable unpack;
  builder = "builtin:fetchurl";
  system = "builtin";
  urls = [ url ];
  outputHash =
    if hash != "" then hash else if sha512 != "" then sha512
    else if sha1 != "" then sha1 else sha256;
  outputHashAlgo =
    if hash != "" then "" else if sha512 != "" then "sha512"
    else if sha1 != "" then "sha1" else "sha256";
  outputHashMode = if unpack || executable then "recursive" else "flat";
  impureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" ];
  preferLocalBuild = true;
}
"#;

pub fn make_ev(opts: Options) -> Rc<Ev> {
    let table = table();
    let mut builtin_entries: Vec<(Sym, Value, Pos)> = Vec::new();
    let mut global_names: Vec<Sym> = Vec::new();
    let mut global_vals: Vec<Value> = Vec::new();
    for (name, arity, f) in &table {
        let v = Value::PrimOp(Rc::new(PrimOp {
            name,
            arity: *arity,
            f: *f,
        }));
        builtin_entries.push((Sym::from(*name), v.clone(), Pos::none()));
        if UNPREFIXED.contains(name) {
            global_names.push(Sym::from(*name));
            global_vals.push(v.clone());
        }
        global_names.push(Sym::from(format!("__{name}").as_str()));
        global_vals.push(v);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut nix_path_list = Vec::new();
    for (prefix, path) in &opts.nix_path {
        nix_path_list.push(Value::attrs(Attrs::from_unsorted(vec![
            (
                Sym::from("path"),
                Value::str(path.as_bytes().to_vec()),
                Pos::none(),
            ),
            (
                Sym::from("prefix"),
                Value::str(prefix.as_bytes().to_vec()),
                Pos::none(),
            ),
        ])));
    }
    let consts: Vec<(&str, Value)> = vec![
        ("currentSystem", Value::str("x86_64-linux")),
        ("currentTime", Value::Int(now)),
        // The version of the oracle b3 is held to: nixpkgs reads it (irods
        // passes it to cmake; minver checks), so drv paths depend on it.
        ("nixVersion", Value::str("2.8.0")),
        ("langVersion", Value::Int(6)),
        ("storeDir", Value::str(opts.store_dir.as_bytes().to_vec())),
        ("nixPath", Value::list(nix_path_list)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("null", Value::Null),
    ];
    for (name, v) in consts {
        if !matches!(name, "true" | "false" | "null") {
            builtin_entries.push((Sym::from(name), v.clone(), Pos::none()));
            global_names.push(Sym::from(format!("__{name}").as_str()));
        } else {
            builtin_entries.push((Sym::from(name), v.clone(), Pos::none()));
            global_names.push(Sym::from(name));
        }
        global_vals.push(v);
    }
    // `builtins` and `derivation` are filled in once the env exists.
    global_names.push(Sym::from("builtins"));
    global_vals.push(Value::Null);
    let builtins_idx = global_vals.len() - 1;
    global_names.push(Sym::from("derivation"));
    global_vals.push(Value::Null);
    let drv_idx = global_vals.len() - 1;

    let env = Env::new(None, Slots::from_vec(global_vals));
    let drv_hashes = b3_store::derivation::DrvHashCache::new(
        b3_store::path::StoreDir::new(&opts.store_dir).unwrap_or_default(),
    );
    let ev = Rc::new(Ev {
        opts,
        globals_env: env.clone(),
        global_names: global_names.clone(),
        builtins: Value::Null,
        depth: Cell::new(0),
        depth_base: Cell::new(0),
        import_cache: RefCell::new(FxHashMap::default()),
        drv_hashes: RefCell::new(drv_hashes),
        sym_cache: RefCell::new(FxHashMap::default()),
        regex_cache: RefCell::new(crate::regex::RegexCache::new()),
        drv_outputs: RefCell::new(FxHashMap::default()),
        drvs: RefCell::new(FxHashMap::default()),
        sources: RefCell::new(FxHashMap::default()),
        store_io: Default::default(),
    });
    // derivation wrapper, written in Nix
    let fid = pos::add_file("«builtin:derivation.nix»", false, Rc::from(DERIVATION_NIX));
    let drv_val = match ast::parse(
        DERIVATION_NIX,
        fid,
        "/",
        &global_names,
        None,
        false,
        [crate::eval::Lint::Off; 3],
        false,
    ) {
        Ok(e) => {
            let e = ast::leak(e);
            ev.eval(e, &env).unwrap_or(Value::Null)
        }
        Err(_) => Value::Null,
    };
    builtin_entries.push((Sym::from("derivation"), drv_val.clone(), Pos::none()));
    let builtins_thunk = Rc::new(Thunk::new(ThunkState::Blackhole));
    builtin_entries.push((
        Sym::from("builtins"),
        Value::Thunk(builtins_thunk.clone()),
        Pos::none(),
    ));
    let battrs = Value::attrs(Attrs::from_unsorted(builtin_entries));
    builtins_thunk.set(ThunkState::Done(battrs.clone()));
    env.set(builtins_idx, battrs.clone());
    env.set(drv_idx, drv_val);
    // Safe: no other Rc clones of `ev` exist yet.
    match Rc::try_unwrap(ev) {
        Ok(mut e) => {
            e.builtins = battrs;
            Rc::new(e)
        }
        Err(e) => e,
    }
}

impl Ev {
    /// Parses a source text in the global scope (plus an optional extra
    /// scope of names for `scopedImport`).
    pub fn parse_source(
        &self,
        text: &str,
        name: &str,
        is_path: bool,
        base_dir: &str,
        extra: Option<&[Sym]>,
    ) -> R<&'static ast::Expr> {
        let normalised;
        let text = if text.contains('\r') {
            normalised = normalise_line_ends(text);
            normalised.as_str()
        } else {
            text
        };
        let fid = pos::add_file(name, is_path, Rc::from(text));
        let pipes = self.has_feature("pipe-operators");
        let lints = [
            self.opts.lint_abs_path,
            self.opts.lint_short_path,
            self.opts.lint_url,
        ];
        // U+F780..U+F7FF (escaped raw bytes) all start with byte 0xEF,
        // which plain ASCII sources lack: a memchr settles most files.
        let raw = text.as_bytes().contains(&0xEF)
            && text
                .chars()
                .any(|c| (0xF780..=0xF7FF).contains(&(c as u32)));
        let inputs = crate::parse_cache::Inputs {
            base_dir,
            globals: &self.global_names,
            extra,
            pipe_ops: pipes,
            lints,
            raw_bytes: raw,
        };
        let e = crate::parse_cache::parse(text, fid, &inputs, is_path)?;
        Ok(ast::leak(e))
    }

    pub fn eval_source(&self, text: &str, name: &str, is_path: bool, base_dir: &str) -> R<Value> {
        let e = self.parse_source(text, name, is_path, base_dir, None)?;
        self.eval(e, &self.globals_env)
    }

    pub fn import_file(&self, path: &str, pos: Pos) -> R<Value> {
        if let Some(v) = self.import_cache.borrow().get(path) {
            return Ok(v.clone());
        }
        let e = self.parse_file(path, pos, None)?;
        let v = self.eval(e, &self.globals_env)?;
        self.import_cache
            .borrow_mut()
            .insert(path.to_string(), v.clone());
        Ok(v)
    }

    fn resolve_import_path(&self, path: &str, pos: Pos) -> R<String> {
        let mut p = path.to_string();
        if let Some(rest) = p.strip_prefix("/__corepkgs__/") {
            return Ok(format!("/__corepkgs__/{rest}"));
        }
        // Store paths may live elsewhere on disk, or need building first.
        let real =
            crate::storepath::realise_path(self, &p).map_err(|e| EvalError::other(e, pos))?;
        match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => p = format!("{}/default.nix", p.trim_end_matches('/')),
            Ok(_) => {}
            Err(_) => return err(format!("path '{p}' does not exist"), pos),
        }
        Ok(p)
    }

    pub fn parse_file(&self, path: &str, pos: Pos, extra: Option<&[Sym]>) -> R<&'static ast::Expr> {
        let p = self.resolve_import_path(path, pos)?;
        if p == "/__corepkgs__/fetchurl.nix" {
            return self.parse_source(FETCHURL_NIX, &p, true, "/", extra);
        }
        let real =
            crate::storepath::realise_path(self, &p).map_err(|e| EvalError::other(e, pos))?;
        let bytes = std::fs::read(&real)
            .map_err(|e| EvalError::other(format!("opening file '{p}': {e}"), pos))?;
        // Valid UTF-8 (nearly every file) is used as read, without a copy.
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => ast::decode_source(e.as_bytes()).0,
        };
        let dir = match p.rfind('/') {
            Some(0) => "/".to_string(),
            Some(i) => p[..i].to_string(),
            None => ".".to_string(),
        };
        self.parse_source(&text, &p, true, &dir, extra)
    }

    /// `findFile`: resolves `<name/rest>` against a search path list.
    pub fn find_file(&self, search: &Value, name: &str, pos: Pos) -> R<Value> {
        let list = self.force_list(search, pos)?;
        for entry in list.iter() {
            let a = self.force_attrs(entry, pos)?;
            let prefix = match a.get("prefix") {
                Some(p) => self.force_string(p, pos)?,
                None => String::new(),
            };
            let path_v = match a.get("path") {
                Some(p) => p.clone(),
                None => return err("attribute 'path' missing", pos),
            };
            let rest = if prefix.is_empty() {
                name.to_string()
            } else if name == prefix {
                String::new()
            } else if let Some(r) = name.strip_prefix(&format!("{prefix}/")) {
                r.to_string()
            } else {
                continue;
            };
            let (base, _) = self.coerce_to_string(&path_v, false, false, pos)?;
            let base = String::from_utf8_lossy(&base).into_owned();
            if base.starts_with("http://") || base.starts_with("https://") {
                continue;
            }
            let full = if rest.is_empty() {
                base.clone()
            } else {
                format!("{}/{}", base.trim_end_matches('/'), rest)
            };
            let full = ast::canon_path(&full);
            if std::path::Path::new(&full).exists() {
                return Ok(Value::Path(full.into()));
            }
        }
        if let Some(rest) = name.strip_prefix("nix/") {
            return Ok(Value::Path(format!("/__corepkgs__/{rest}").into()));
        }
        Err(crate::error::EvalError::new(
            crate::error::ErrorKind::Throw,
            format!(
                "file '{name}' was not found in the Nix search path (add it using $NIX_PATH or -I)"
            ),
            pos,
        ))
    }
}

/// Helper used by builtins: an attribute set from (name, value) pairs.
pub fn mk_attrs(ev: &Ev, pairs: Vec<(&'static str, Value)>) -> Value {
    Value::attrs(Attrs::from_unsorted(
        pairs
            .into_iter()
            .map(|(k, v)| (ev.sym(k), v, Pos::none()))
            .collect(),
    ))
}

/// Nix 2.8 reads CR and CR LF as LF everywhere (in `"…"` strings too)
/// except in the text of indented strings, which it keeps verbatim; a lone
/// CR there changes how the string's indentation is stripped.
fn normalise_line_ends(text: &str) -> String {
    use rnix::SyntaxKind::*;
    #[derive(PartialEq)]
    enum Ctx {
        Code,
        Plain,
        Indented,
    }
    let lf = |t: &str| t.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut stack = vec![Ctx::Code];
    let mut seen = 0;
    for (kind, tok) in rnix::tokenize(text) {
        seen += tok.len();
        match kind {
            TOKEN_STRING_START => stack.push(if tok == "''" {
                Ctx::Indented
            } else {
                Ctx::Plain
            }),
            TOKEN_STRING_END | TOKEN_INTERPOL_END => {
                stack.pop();
            }
            TOKEN_INTERPOL_START => stack.push(Ctx::Code),
            _ => {}
        }
        if kind == TOKEN_STRING_CONTENT && stack.last() == Some(&Ctx::Indented) {
            out.push_str(tok);
        } else {
            out.push_str(&lf(tok));
        }
    }
    if seen != text.len() {
        // The tokenizer is lossless; if it ever is not, read every CR as a
        // line end rather than parse something else than the file.
        return lf(text);
    }
    out
}
