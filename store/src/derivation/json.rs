//! `nix show-derivation` output, byte for byte as Nix 2.8 prints it: one
//! object keyed by drv path, each with `outputs`, `inputSrcs`, `inputDrvs`,
//! `system`, `builder`, `args`, `env` in that order, indented by two spaces
//! per level, `{}`/`[]` when empty, and Nix's string escaping (`\"` `\\`
//! `\n` `\r` `\t`, other control bytes as `\u00XX`, the rest raw).
//! The output is bytes: like Nix 2.8, a builder, argument or environment
//! entry that is not UTF-8 is written through unchanged, so the JSON is not
//! UTF-8 either. Also reads (UTF-8) JSON back into derivations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Derivation, DerivationError, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{ContentAddress, ContentAddressMethod, StoreDir, StorePath};

/// A tiny writer reproducing the layout of Nix 2.8's `JSONWriter` with indentation.
struct Writer {
    out: Vec<u8>,
    depth: usize,
    first: Vec<bool>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            out: Vec::new(),
            depth: 0,
            first: Vec::new(),
        }
    }

    fn indent(&mut self) {
        self.out.push(b'\n');
        self.out.resize(self.out.len() + self.depth * 2, b' ');
    }

    /// Separator before an element or attribute of the innermost container.
    fn comma(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if *first {
                *first = false;
            } else {
                self.out.push(b',');
            }
        }
        self.indent();
    }

    fn open(&mut self, c: u8) {
        self.depth += 1;
        self.first.push(true);
        self.out.push(c);
    }

    fn close(&mut self, c: u8) {
        self.depth -= 1;
        let first = self.first.pop().unwrap_or(true);
        if !first {
            self.indent();
        }
        self.out.push(c);
    }

    fn key(&mut self, k: impl AsRef<[u8]>) {
        self.comma();
        push_json_string(&mut self.out, k.as_ref());
        self.out.extend_from_slice(b": ");
    }

    fn attr(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.key(k);
        push_json_string(&mut self.out, v.as_ref());
    }

    fn elem(&mut self, v: impl AsRef<[u8]>) {
        self.comma();
        push_json_string(&mut self.out, v.as_ref());
    }
}

/// Nix 2.8's `toJSON(string)`, byte by byte: bytes from 0x80 up (and so any
/// UTF-8 or non-UTF-8 sequence) pass through.
pub fn push_json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 32 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

fn write_drv(w: &mut Writer, store_dir: &StoreDir, drv: &Derivation) {
    w.key("outputs");
    w.open(b'{');
    for (name, out) in &drv.outputs {
        w.key(name);
        w.open(b'{');
        match out {
            DerivationOutput::InputAddressed(p) => w.attr("path", store_dir.display(p)),
            DerivationOutput::CaFixed { ca, path } => {
                w.attr("path", store_dir.display(path));
                w.attr("hashAlgo", ca.method_algo());
                w.attr("hash", ca.hash.to_base16());
            }
            DerivationOutput::CaFloating { method, algo } => {
                w.attr("hashAlgo", format!("{}{algo}", method.prefix()));
            }
            DerivationOutput::Deferred => {}
            DerivationOutput::Impure { method, algo } => {
                w.attr("hashAlgo", format!("{}{algo}", method.prefix()));
                w.key("impure");
                w.out.extend_from_slice(b"true");
            }
        }
        w.close(b'}');
    }
    w.close(b'}');

    w.key("inputSrcs");
    w.open(b'[');
    for p in &drv.input_srcs {
        w.elem(store_dir.display(p));
    }
    w.close(b']');

    w.key("inputDrvs");
    w.open(b'{');
    for (p, outs) in &drv.input_drvs {
        w.key(store_dir.display(p));
        w.open(b'[');
        for o in outs {
            w.elem(o);
        }
        w.close(b']');
    }
    w.close(b'}');

    w.attr("system", &drv.system);
    w.attr("builder", drv.builder_raw());

    w.key("args");
    w.open(b'[');
    for a in drv.args_raw() {
        w.elem(a);
    }
    w.close(b']');

    w.key("env");
    w.open(b'{');
    for (k, v) in drv.env_entries() {
        w.attr(k, v);
    }
    w.close(b'}');
}

/// The whole `nix show-derivation` output for these derivations, in the
/// order given (Nix sorts them by path), ending in a newline. Bytes, not
/// `String`: see the module header.
pub fn show_derivations<'a, I>(store_dir: &StoreDir, drvs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a StorePath, &'a Derivation)>,
{
    let mut w = Writer::new();
    w.open(b'{');
    for (path, drv) in drvs {
        w.key(store_dir.display(path));
        w.open(b'{');
        write_drv(&mut w, store_dir, drv);
        w.close(b'}');
    }
    w.close(b'}');
    w.out.push(b'\n');
    w.out
}

impl Derivation {
    /// `nix show-derivation` output for this one derivation at `drv_path`.
    pub fn to_show_json(&self, store_dir: &StoreDir, drv_path: &StorePath) -> Vec<u8> {
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
        assert_eq!(d.to_show_json(&sd, &p), expected.as_bytes());
    }

    #[test]
    fn escapes_control_characters_like_nix() {
        let mut s = Vec::new();
        push_json_string(
            &mut s,
            "a\"b\\c\nd\re\tf\u{1}g\u{8}\u{1f}\u{7f}é".as_bytes(),
        );
        assert_eq!(
            s,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u0008\\u001f\u{7f}é\"".as_bytes()
        );
        let mut raw = Vec::new();
        push_json_string(&mut raw, b"\xff\x80 \xe2\x82");
        assert_eq!(raw, b"\"\xff\x80 \xe2\x82\"");
    }

    #[test]
    fn json_reads_back_what_it_prints() {
        let sd = StoreDir::default();
        let text = r#"Derive([("out","/nix/store/sxxkwa9z9yawpbhrv0ar6pgyihxvmcra-fod-flat-sha256","sha256","5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")],[("/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv",["out"])],["/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"],"x86_64-linux","/bin/sh",["-c","x\ny"],[("out","/nix/store/sxxkwa9z9yawpbhrv0ar6pgyihxvmcra-fod-flat-sha256")])"#;
        let d = Derivation::from_aterm(&sd, text.as_bytes()).unwrap();
        let p = sd
            .parse("/nix/store/9y2ynaxg6yzjq80plhlxrfm3r7s1fqsa-fod-flat-sha256.drv")
            .unwrap();
        let json = String::from_utf8(d.to_show_json(&sd, &p)).unwrap();
        let back = parse_show_derivations(&sd, &json).unwrap();
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
        assert_eq!(show_derivations(&sd, std::iter::empty()), b"{}\n");
    }
}
