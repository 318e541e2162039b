//! The environment Nix gives a builder, computed from a derivation's `env`
//! and outputs: fixed variables (`PATH=/path-not-set`, `HOME=/homeless-shelter`,
//! `NIX_STORE`, `NIX_BUILD_CORES`, `NIX_BUILD_TOP`/`TMPDIR`/... `=/build`,
//! `PWD`, `NIX_LOG_FD=2`, `TERM=xterm-256color`), the derivation's own
//! variables, `passAsFile` (the value goes to `/build/.attr-<nix32 sha256 of
//! the name>` and `<name>Path` points at it), `__structuredAttrs`
//! (`.attrs.json` and `.attrs.sh` in the build directory) and, for
//! fixed-output derivations, `NIX_OUTPUT_CHECKED=1` and the `impureEnvVars`
//! taken from the caller's environment.
//!
//! The precedence follows Nix 2.8: the first four fixed variables can be
//! overridden by the derivation, the later ones cannot. Pure: the files are
//! returned, not written.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::sandbox::SANDBOX_BUILD_DIR;

/// What the environment depends on besides the derivation.
pub struct EnvOptions<'a> {
    /// The logical store directory (`NIX_STORE`).
    pub store_dir: &'a str,
    /// `NIX_BUILD_CORES`.
    pub cores: u32,
    /// A fixed-output derivation: gets `NIX_OUTPUT_CHECKED` and its
    /// `impureEnvVars`.
    pub fixed_output: bool,
    /// Looks up the caller's environment for `impureEnvVars` (absent → "").
    pub impure_lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// The builder's environment and the files to place in its build directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderEnv {
    pub vars: BTreeMap<String, String>,
    /// Variables whose name or value is not UTF-8 (see
    /// [`apply_env_bytes`]), passed to the builder byte for byte.
    pub bytes_vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// `(file name in the build directory, contents)`.
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("the derivation's __json attribute is not valid JSON: {0}")]
    BadStructuredAttrs(#[source] serde_json::Error),
    #[error("the derivation's __json attribute is not a JSON object")]
    StructuredAttrsNotObject,
}

/// Name of the file that holds a `passAsFile` attribute.
pub fn pass_as_file_name(attr: &str) -> String {
    format!(
        ".attr-{}",
        b3_nar::nixbase32::encode(&Sha256::digest(attr.as_bytes()))
    )
}

/// Builds the environment for a derivation with environment `drv_env` and
/// outputs `outputs` (name → store path).
pub fn builder_env(
    drv_env: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, String>,
    opts: &EnvOptions<'_>,
) -> Result<BuilderEnv, EnvError> {
    let mut vars = BTreeMap::new();
    let mut files = Vec::new();
    let set = |vars: &mut BTreeMap<String, String>, k: &str, v: &str| {
        vars.insert(k.to_string(), v.to_string());
    };
    set(&mut vars, "PATH", "/path-not-set");
    set(&mut vars, "HOME", "/homeless-shelter");
    set(&mut vars, "NIX_STORE", opts.store_dir);
    set(&mut vars, "NIX_BUILD_CORES", &opts.cores.to_string());

    let structured = drv_env.get("__json");
    if structured.is_none() {
        let pass_as_file = pass_as_file_names(drv_env);
        for (k, v) in drv_env {
            if pass_as_file.contains(&k.as_str()) {
                let name = pass_as_file_name(k);
                vars.insert(format!("{k}Path"), format!("{SANDBOX_BUILD_DIR}/{name}"));
                files.push((name, v.as_bytes().to_vec()));
            } else {
                vars.insert(k.clone(), v.clone());
            }
        }
        // Input-addressed derivations already carry their outputs in `env`;
        // make sure every output is there whatever produced the map.
        for (name, path) in outputs {
            vars.entry(name.clone()).or_insert_with(|| path.clone());
        }
    }

    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        set(&mut vars, k, SANDBOX_BUILD_DIR);
    }
    if opts.fixed_output {
        set(&mut vars, "NIX_OUTPUT_CHECKED", "1");
        if let Some(list) = drv_env.get("impureEnvVars") {
            for name in words(list) {
                let value = (opts.impure_lookup)(name).unwrap_or_default();
                vars.insert(name.to_string(), value);
            }
        }
    }
    set(&mut vars, "NIX_LOG_FD", "2");
    set(&mut vars, "TERM", "xterm-256color");

    if let Some(json) = structured {
        let (json_text, sh_text) = structured_attrs(json, outputs)?;
        files.push((".attrs.json".to_string(), json_text.into_bytes()));
        files.push((".attrs.sh".to_string(), sh_text.into_bytes()));
        // Nix 2.8 points these at the *host* build directory (a bug fixed
        // later); b3 uses the path that exists inside the sandbox.
        vars.insert(
            "NIX_ATTRS_JSON_FILE".into(),
            format!("{SANDBOX_BUILD_DIR}/.attrs.json"),
        );
        vars.insert(
            "NIX_ATTRS_SH_FILE".into(),
            format!("{SANDBOX_BUILD_DIR}/.attrs.sh"),
        );
    }
    Ok(BuilderEnv {
        vars,
        bytes_vars: Vec::new(),
        files,
    })
}

/// The whitespace-separated words of a list-valued attribute, as Nix
/// splits `passAsFile` and `impureEnvVars`.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty())
}

/// The variables `passAsFile` names.
fn pass_as_file_names(drv_env: &BTreeMap<String, String>) -> Vec<&str> {
    drv_env
        .get("passAsFile")
        .map(|s| words(s).collect())
        .unwrap_or_default()
}

/// Adds a derivation's non-UTF-8 environment entries (`env_bytes`, which
/// are disjoint from `env`) to `env` with the precedence of the UTF-8 ones:
/// they override `PATH`, `HOME`, `NIX_STORE` and `NIX_BUILD_CORES`, lose to
/// the variables Nix sets after the derivation's (`NIX_BUILD_TOP`, ...,
/// `TERM`, a fixed-output build's impure ones), go to a file when named in
/// `passAsFile`, and are not used at all with structured attrs (whose
/// values come from `__json`).
pub fn apply_env_bytes(
    env: &mut BuilderEnv,
    drv_env: &BTreeMap<String, String>,
    env_bytes: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    if env_bytes.is_empty() || drv_env.contains_key("__json") {
        return;
    }
    let pass_as_file = pass_as_file_names(drv_env);
    const OVERRIDABLE: [&str; 4] = ["PATH", "HOME", "NIX_STORE", "NIX_BUILD_CORES"];
    for (k, v) in env_bytes {
        match std::str::from_utf8(k) {
            Ok(name) if pass_as_file.contains(&name) => {
                let file = pass_as_file_name(name);
                env.vars
                    .insert(format!("{name}Path"), format!("{SANDBOX_BUILD_DIR}/{file}"));
                env.files.push((file, v.clone()));
            }
            Ok(name) if env.vars.contains_key(name) && !OVERRIDABLE.contains(&name) => {}
            Ok(name) => {
                env.vars.remove(name);
                env.bytes_vars.push((k.clone(), v.clone()));
            }
            Err(_) => env.bytes_vars.push((k.clone(), v.clone())),
        }
    }
}

/// `.attrs.json` (the `__json` object with `outputs` replaced by the map of
/// output paths, keys sorted, compact) and `.attrs.sh`.
fn structured_attrs(
    json: &str,
    outputs: &BTreeMap<String, String>,
) -> Result<(String, String), EnvError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(EnvError::BadStructuredAttrs)?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(EnvError::StructuredAttrsNotObject);
    };
    let outs: serde_json::Map<String, serde_json::Value> = outputs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    obj.insert("outputs".into(), serde_json::Value::Object(outs));
    // serde_json's Map is a BTreeMap here (no preserve_order), so keys come
    // out sorted byte-wise, as Nix's JSON library prints them.
    let json_text = serde_json::Value::Object(obj.clone()).to_string();
    Ok((json_text, attrs_sh(&obj)))
}

/// Shell quoting as Nix does it: single quotes, `'` → `'\''`.
fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A scalar as `.attrs.sh` writes it, or `None` for floats, arrays and
/// objects. Nix 2.8 reads integers as a C `int` (so larger values wrap to 32
/// bits), writes `true` as `1` and `false` as nothing, and `null` as `''`.
fn simple(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(shell_escape(s)),
        serde_json::Value::Bool(true) => Some("1".into()),
        serde_json::Value::Bool(false) => Some(String::new()),
        serde_json::Value::Null => Some("''".into()),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some((i as i32).to_string())
            } else {
                n.as_u64().map(|u| (u as i32).to_string())
            }
        }
        _ => None,
    }
}

fn is_shell_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn attrs_sh(obj: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut out = String::new();
    for (k, v) in obj {
        if !is_shell_name(k) {
            continue;
        }
        if let Some(s) = simple(v) {
            out.push_str(&format!("declare {k}={s}\n"));
        } else if let serde_json::Value::Array(items) = v {
            let parts: Option<Vec<String>> = items.iter().map(simple).collect();
            if let Some(parts) = parts {
                let body: String = parts.iter().map(|p| format!("{p} ")).collect();
                out.push_str(&format!("declare -a {k}=({body})\n"));
            }
        } else if let serde_json::Value::Object(m) = v {
            // Nix 2.8 writes nothing for an empty object (observed).
            if m.is_empty() {
                continue;
            }
            let parts: Option<Vec<String>> = m
                .iter()
                .map(|(k2, v2)| simple(v2).map(|s| format!("[{}]={s} ", shell_escape(k2))))
                .collect();
            if let Some(parts) = parts {
                out.push_str(&format!("declare -A {k}=({})\n", parts.concat()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn opts(fixed: bool) -> EnvOptions<'static> {
        EnvOptions {
            store_dir: "/nix/store",
            cores: 2,
            fixed_output: fixed,
            impure_lookup: &no_env,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pass_as_file_name_matches_nix() {
        // Observed in a Nix 2.8 build with passAsFile = [ "big" ].
        assert_eq!(
            pass_as_file_name("big"),
            ".attr-1lak0mvllw8rv9i9ygkglvhqsq19qi9ynl4bi7gbf69ab5nzw89a"
        );
    }

    #[test]
    fn plain_env_matches_nix_2_8_layout() {
        let drv = map(&[
            ("builder", "/bin/sh"),
            ("name", "x"),
            ("out", "/nix/store/aaa-x"),
            ("passAsFile", "big"),
            ("big", "hello file"),
            ("PATH", "/p"),
            ("TMPDIR", "/ignored"),
        ]);
        let outs = map(&[("out", "/nix/store/aaa-x")]);
        let env = builder_env(&drv, &outs, &opts(false)).unwrap();
        let want = map(&[
            ("HOME", "/homeless-shelter"),
            ("NIX_BUILD_CORES", "2"),
            ("NIX_BUILD_TOP", "/build"),
            ("NIX_LOG_FD", "2"),
            ("NIX_STORE", "/nix/store"),
            ("PATH", "/p"),
            ("PWD", "/build"),
            ("TEMP", "/build"),
            ("TEMPDIR", "/build"),
            ("TERM", "xterm-256color"),
            ("TMP", "/build"),
            ("TMPDIR", "/build"),
            (
                "bigPath",
                "/build/.attr-1lak0mvllw8rv9i9ygkglvhqsq19qi9ynl4bi7gbf69ab5nzw89a",
            ),
            ("builder", "/bin/sh"),
            ("name", "x"),
            ("out", "/nix/store/aaa-x"),
            ("passAsFile", "big"),
        ]);
        assert_eq!(env.vars, want);
        assert_eq!(
            env.files,
            vec![(
                ".attr-1lak0mvllw8rv9i9ygkglvhqsq19qi9ynl4bi7gbf69ab5nzw89a".to_string(),
                b"hello file".to_vec()
            )]
        );
    }

    #[test]
    fn non_utf8_entries_keep_their_bytes_and_nix_precedence() {
        let drv = map(&[("passAsFile", "blob"), ("x", "1")]);
        let outs = map(&[("out", "/o")]);
        let mut env = builder_env(&drv, &outs, &opts(false)).unwrap();
        let bytes: BTreeMap<Vec<u8>, Vec<u8>> = [
            (b"v".to_vec(), b"a\xffb".to_vec()),
            (b"k\xfe".to_vec(), b"plain".to_vec()),
            (b"blob".to_vec(), b"\x00\x80".to_vec()),
            (b"HOME".to_vec(), b"/h\xff".to_vec()),
            (b"TMPDIR".to_vec(), b"/t\xff".to_vec()),
        ]
        .into_iter()
        .collect();
        apply_env_bytes(&mut env, &drv, &bytes);
        let got: BTreeMap<_, _> = env.bytes_vars.iter().cloned().collect();
        assert_eq!(got[&b"v"[..]], b"a\xffb");
        assert_eq!(got[&b"k\xfe"[..]], b"plain");
        assert_eq!(got[&b"HOME"[..]], b"/h\xff");
        assert!(!env.vars.contains_key("HOME"));
        assert!(!got.contains_key(&b"TMPDIR"[..]));
        assert_eq!(env.vars["TMPDIR"], "/build");
        let file = pass_as_file_name("blob");
        assert_eq!(env.vars["blobPath"], format!("/build/{file}"));
        assert!(env.files.contains(&(file, b"\x00\x80".to_vec())));
        assert!(!got.contains_key(&b"blob"[..]));
    }

    #[test]
    fn fixed_output_gets_checked_flag_and_impure_vars() {
        let drv = map(&[("impureEnvVars", "FOO_IMPURE BAR_NOTSET"), ("out", "/o")]);
        let lookup = |k: &str| (k == "FOO_IMPURE").then(|| "hello".to_string());
        let o = EnvOptions {
            impure_lookup: &lookup,
            ..opts(true)
        };
        let env = builder_env(&drv, &map(&[("out", "/o")]), &o).unwrap();
        assert_eq!(env.vars["NIX_OUTPUT_CHECKED"], "1");
        assert_eq!(env.vars["FOO_IMPURE"], "hello");
        assert_eq!(env.vars["BAR_NOTSET"], "");
    }

    #[test]
    fn structured_attrs_files_match_nix_2_8() {
        // The __json of sa2.nix from the Nix 2.8 oracle run, and its output.
        let json = r#"{"builder":"/bb/sh","e2":{},"emp":[],"f":false,"big":12345678901,"name":"sa2","neg":-7,"obj":{"b":false,"n":-4,"s":"x","t":true,"z":null},"outputs":["out"],"str":"a b\nc","system":"x86_64-linux","u":null,"flt":2.5,"bad-name":"q","list":["a","b'c",1,true]}"#;
        let drv = map(&[("__json", json)]);
        let outs = map(&[("out", "/nix/store/r2f-sa2")]);
        let env = builder_env(&drv, &outs, &opts(false)).unwrap();
        assert_eq!(env.vars["PATH"], "/path-not-set");
        assert_eq!(env.vars["NIX_ATTRS_JSON_FILE"], "/build/.attrs.json");
        assert!(!env.vars.contains_key("name"));
        let files: BTreeMap<_, _> = env.files.into_iter().collect();
        assert_eq!(
            String::from_utf8(files[".attrs.json"].clone()).unwrap(),
            r#"{"bad-name":"q","big":12345678901,"builder":"/bb/sh","e2":{},"emp":[],"f":false,"flt":2.5,"list":["a","b'c",1,true],"name":"sa2","neg":-7,"obj":{"b":false,"n":-4,"s":"x","t":true,"z":null},"outputs":{"out":"/nix/store/r2f-sa2"},"str":"a b\nc","system":"x86_64-linux","u":null}"#
        );
        assert_eq!(
            String::from_utf8(files[".attrs.sh"].clone()).unwrap(),
            "declare big=-539222987\n\
             declare builder='/bb/sh'\n\
             declare -a emp=()\n\
             declare f=\n\
             declare -a list=('a' 'b'\\''c' 1 1 )\n\
             declare name='sa2'\n\
             declare neg=-7\n\
             declare -A obj=(['b']= ['n']=-4 ['s']='x' ['t']=1 ['z']='' )\n\
             declare -A outputs=(['out']='/nix/store/r2f-sa2' )\n\
             declare str='a b\nc'\n\
             declare system='x86_64-linux'\n\
             declare u=''\n"
        );
    }
}
