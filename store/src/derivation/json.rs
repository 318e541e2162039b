//! `nix show-derivation` output, byte for byte as Nix 2.8 prints it: one
//! object keyed by drv path, each with `outputs`, `inputSrcs`, `inputDrvs`,
//! `system`, `builder`, `args`, `env` in that order, indented by two spaces
//! per level, `{}`/`[]` when empty, and Nix's string escaping (`\"` `\\`
//! `\n` `\r` `\t`, other control bytes as `\u00XX`, the rest raw).
//! Also reads that JSON back into derivations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Derivation, DerivationError, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{ContentAddress, ContentAddressMethod, StoreDir, StorePath};

/// A tiny writer reproducing the layout of Nix 2.8's `JSONWriter` with indentation.
struct Writer {
    out: String,
    depth: usize,
    first: Vec<bool>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            out: String::new(),
            depth: 0,
            first: Vec::new(),
        }
    }

    fn indent(&mut self) {
        self.out.push('\n');
        for _ in 0..self.depth * 2 {
            self.out.push(' ');
        }
    }

    /// Separator before an element or attribute of the innermost container.
    fn comma(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if *first {
                *first = false;
            } else {
                self.out.push(',');
            }
        }
        self.indent();
    }

    fn open(&mut self, c: char) {
        self.depth += 1;
        self.first.push(true);
        self.out.push(c);
    }

    fn close(&mut self, c: char) {
        self.depth -= 1;
        let first = self.first.pop().unwrap_or(true);
        if !first {
            self.indent();
        }
        self.out.push(c);
    }

    fn key(&mut self, k: &str) {
        self.comma();
        push_json_string(&mut self.out, k);
        self.out.push_str(": ");
    }

    fn attr(&mut self, k: &str, v: &str) {
        self.key(k);
        push_json_string(&mut self.out, v);
    }

    fn elem(&mut self, v: &str) {
        self.comma();
        push_json_string(&mut self.out, v);
    }
}

/// Nix 2.8's `toJSON(string)`.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 32 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_drv(w: &mut Writer, store_dir: &StoreDir, drv: &Derivation) {
    w.key("outputs");
    w.open('{');
    for (name, out) in &drv.outputs {
        w.key(name);
        w.open('{');
        match out {
            DerivationOutput::InputAddressed(p) => w.attr("path", &store_dir.display(p)),
            DerivationOutput::CaFixed { ca, path } => {
                w.attr("path", &store_dir.display(path));
                w.attr("hashAlgo", &ca.method_algo());
                w.attr("hash", &ca.hash.to_base16());
            }
            DerivationOutput::CaFloating { method, algo } => {
                w.attr("hashAlgo", &format!("{}{algo}", method.prefix()));
            }
            DerivationOutput::Deferred => {}
            DerivationOutput::Impure { method, algo } => {
                w.attr("hashAlgo", &format!("{}{algo}", method.prefix()));
                w.key("impure");
                w.out.push_str("true");
            }
        }
        w.close('}');
    }
    w.close('}');

    w.key("inputSrcs");
    w.open('[');
    for p in &drv.input_srcs {
        w.elem(&store_dir.display(p));
    }
    w.close(']');

    w.key("inputDrvs");
    w.open('{');
    for (p, outs) in &drv.input_drvs {
        w.key(&store_dir.display(p));
        w.open('[');
        for o in outs {
            w.elem(o);
        }
        w.close(']');
    }
    w.close('}');

    w.attr("system", &drv.system);
    w.attr("builder", &drv.builder);

    w.key("args");
    w.open('[');
    for a in &drv.args {
        w.elem(a);
    }
    w.close(']');

    w.key("env");
    w.open('{');
    // Non-UTF-8 entries (rare) cannot be JSON strings; shown with U+FFFD.
    for (k, v) in drv.env_entries() {
        w.attr(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
    }
    w.close('}');
}

/// The whole `nix show-derivation` output for these derivations, in the
/// order given (Nix sorts them by path), ending in a newline.
pub fn show_derivations<'a, I>(store_dir: &StoreDir, drvs: I) -> String
where
    I: IntoIterator<Item = (&'a StorePath, &'a Derivation)>,
{
    let mut w = Writer::new();
    w.open('{');
    for (path, drv) in drvs {
        w.key(&store_dir.display(path));
        w.open('{');
        write_drv(&mut w, store_dir, drv);
        w.close('}');
    }
    w.close('}');
    w.out.push('\n');
    w.out
}

impl Derivation {
    /// `nix show-derivation` output for this one derivation at `drv_path`.
    pub fn to_show_json(&self, store_dir: &StoreDir, drv_path: &StorePath) -> String {
        show_derivations(store_dir, [(drv_path, self)])
    }
}

fn json_err(msg: impl Into<String>) -> DerivationError {
    DerivationError::Json(msg.into())
}

fn str_field<'v>(obj: &'v Value, key: &str, ctx: &str) -> Result<&'v str, DerivationError> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| json_err(format!("{ctx}: '{key}' must be a string")))
}

fn str_list(v: &Value, ctx: &str) -> Result<Vec<String>, DerivationError> {
    v.as_array()
        .ok_or_else(|| json_err(format!("{ctx} must be a list")))?
        .iter()
        .map(|e| {
            e.as_str()
                .map(str::to_owned)
                .ok_or_else(|| json_err(format!("{ctx} must hold strings")))
        })
        .collect()
}

fn output_from_json(
    store_dir: &StoreDir,
    name: &str,
    v: &Value,
) -> Result<DerivationOutput, DerivationError> {
    let ctx = format!("output '{name}'");
    let obj = v
        .as_object()
        .ok_or_else(|| json_err(format!("{ctx} must be an object")))?;
    let path = match obj.get("path") {
        Some(p) => Some(
            store_dir.parse(
                p.as_str()
                    .ok_or_else(|| json_err(format!("{ctx}: 'path' must be a string")))?,
            )?,
        ),
        None => None,
    };
    let Some(algo) = obj.get("hashAlgo") else {
        return Ok(match path {
            Some(p) => DerivationOutput::InputAddressed(p),
            None => DerivationOutput::Deferred,
        });
    };
    let algo = algo
        .as_str()
        .ok_or_else(|| json_err(format!("{ctx}: 'hashAlgo' must be a string")))?;
    let (method, algo_name) = ContentAddressMethod::split_prefix(algo);
    let algo = HashAlgo::from_name(algo_name)
        .ok_or_else(|| json_err(format!("{ctx}: unknown hash algorithm '{algo_name}'")))?;
    if obj.get("impure").and_then(Value::as_bool) == Some(true) {
        return Ok(DerivationOutput::Impure { method, algo });
    }
    match obj.get("hash") {
        Some(h) => {
            let h = h
                .as_str()
                .ok_or_else(|| json_err(format!("{ctx}: 'hash' must be a string")))?;
            let hash = Hash::parse_unprefixed(h, algo)?;
            let path =
                path.ok_or_else(|| json_err(format!("{ctx}: a fixed output needs 'path'")))?;
            Ok(DerivationOutput::CaFixed {
                ca: ContentAddress { method, hash },
                path,
            })
        }
        None => Ok(DerivationOutput::CaFloating { method, algo }),
    }
}

/// One derivation from its `show-derivation` JSON object.
pub fn derivation_from_json(
    store_dir: &StoreDir,
    v: &Value,
) -> Result<Derivation, DerivationError> {
    let mut drv = Derivation::default();
    let outputs = v
        .get("outputs")
        .and_then(Value::as_object)
        .ok_or_else(|| json_err("'outputs' must be an object"))?;
    for (name, o) in outputs {
        drv.outputs
            .insert(name.clone(), output_from_json(store_dir, name, o)?);
    }
    let srcs = v
        .get("inputSrcs")
        .ok_or_else(|| json_err("'inputSrcs' is missing"))?;
    for s in str_list(srcs, "'inputSrcs'")? {
        drv.input_srcs.insert(store_dir.parse(&s)?);
    }
    let drvs = v
        .get("inputDrvs")
        .and_then(Value::as_object)
        .ok_or_else(|| json_err("'inputDrvs' must be an object"))?;
    for (p, outs) in drvs {
        let outs: BTreeSet<String> = str_list(outs, "an 'inputDrvs' entry")?
            .into_iter()
            .collect();
        drv.input_drvs.insert(store_dir.parse(p)?, outs);
    }
    drv.system = str_field(v, "system", "derivation")?.to_owned();
    drv.builder = str_field(v, "builder", "derivation")?.to_owned();
    drv.args = str_list(v.get("args").unwrap_or(&Value::Null), "'args'")?;
    let env = v
        .get("env")
        .and_then(Value::as_object)
        .ok_or_else(|| json_err("'env' must be an object"))?;
    for (k, val) in env {
        let val = val
            .as_str()
            .ok_or_else(|| json_err(format!("env '{k}' must be a string")))?;
        drv.env.insert(k.clone(), val.to_owned());
    }
    Ok(drv)
}

/// Reads `nix show-derivation` output back: drv path → derivation.
pub fn parse_show_derivations(
    store_dir: &StoreDir,
    text: &str,
) -> Result<BTreeMap<StorePath, Derivation>, DerivationError> {
    let v: Value = serde_json::from_str(text).map_err(|e| json_err(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| json_err("the top level must be an object"))?;
    obj.iter()
        .map(|(p, d)| Ok((store_dir.parse(p)?, derivation_from_json(store_dir, d)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_matches_nix_layout() {
        let sd = StoreDir::default();
        let text = r#"Derive([("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","hello"),("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"),("system","x86_64-linux")])"#;
        let d = Derivation::from_aterm(&sd, text.as_bytes()).unwrap();
        let p = sd
            .parse("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv")
            .unwrap();
        let expected = r#"{
  "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv": {
    "outputs": {
      "out": {
        "path": "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"
      }
    },
    "inputSrcs": [],
    "inputDrvs": {},
    "system": "x86_64-linux",
    "builder": "/bin/sh",
    "args": [
      "-c",
      "echo hi > $out"
    ],
    "env": {
      "builder": "/bin/sh",
      "name": "hello",
      "out": "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello",
      "system": "x86_64-linux"
    }
  }
}
"#;
        assert_eq!(d.to_show_json(&sd, &p), expected);
    }

    #[test]
    fn escapes_control_characters_like_nix() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\re\tf\u{1}g\u{7f}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\u{7f}é\"");
    }

    #[test]
    fn json_reads_back_what_it_prints() {
        let sd = StoreDir::default();
        let text = r#"Derive([("out","/nix/store/sxxkwa9z9yawpbhrv0ar6pgyihxvmcra-fod-flat-sha256","sha256","5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")],[("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv",["out"])],["/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"],"x86_64-linux","/bin/sh",["-c","x\ny"],[("out","/nix/store/sxxkwa9z9yawpbhrv0ar6pgyihxvmcra-fod-flat-sha256")])"#;
        let d = Derivation::from_aterm(&sd, text.as_bytes()).unwrap();
        let p = sd
            .parse("/nix/store/9y2ynaxg6yzjq80plhlxrfm3r7s1fqsa-fod-flat-sha256.drv")
            .unwrap();
        let back = parse_show_derivations(&sd, &d.to_show_json(&sd, &p)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[&p], d);
        assert!(matches!(
            parse_show_derivations(
                &sd,
                "{\"/nix/store/9y2ynaxg6yzjq80plhlxrfm3r7s1fqsa-x.drv\": {}}"
            ),
            Err(DerivationError::Json(_))
        ));
        assert!(parse_show_derivations(&sd, "[").is_err());
    }

    #[test]
    fn empty_set_is_braces() {
        let sd = StoreDir::default();
        assert_eq!(show_derivations(&sd, std::iter::empty()), "{}\n");
    }
}
