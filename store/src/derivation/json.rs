//! `nix show-derivation` output, byte for byte as Nix 2.8 prints it: one
//! object keyed by drv path, each with `outputs`, `inputSrcs`, `inputDrvs`,
//! `system`, `builder`, `args`, `env` in that order, indented by two spaces
//! per level, `{}`/`[]` when empty, and Nix's string escaping (`\"` `\\`
//! `\n` `\r` `\t`, other control bytes as `\u00XX`, the rest raw).

use super::{Derivation, DerivationOutput};
use crate::path::{StoreDir, StorePath};

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
    for (k, v) in &drv.env {
        w.attr(k, v);
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
    fn empty_set_is_braces() {
        let sd = StoreDir::default();
        assert_eq!(show_derivations(&sd, std::iter::empty()), "{}\n");
    }
}
