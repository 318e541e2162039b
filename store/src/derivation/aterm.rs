//! The ATerm text of `.drv` files: `Derive([outputs],[inputDrvs],[inputSrcs],
//! "system","builder",[args],[env])`.
//!
//! Printing follows Nix 2.8's `Derivation::unparse` to the byte: builder,
//! args and env are escaped (`\"` `\\` `\n` `\r` `\t`), while output names,
//! paths, hash fields, input output-names and `system` are written between
//! quotes unescaped, as Nix does. Parsing is strict about the syntax (a
//! malformed file gets the byte offset and what was expected) and otherwise
//! mirrors Nix: `\x` decodes to `x`, lists land in sorted maps/sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use super::{Derivation, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{ContentAddress, ContentAddressMethod, StoreDir, StorePath};

/// A `.drv` text that could not be parsed: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed derivation at byte {offset}: {kind}")]
pub struct AtermError {
    pub offset: usize,
    pub kind: AtermErrorKind,
}

/// What was wrong at the offset of an [`AtermError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtermErrorKind {
    /// Expected this text, found something else (or the end).
    Expected {
        expected: &'static str,
        found: Found,
    },
    UnterminatedString,
    InvalidUtf8,
    BadStorePath {
        path: String,
        reason: String,
    },
    BadOutput {
        output: String,
        reason: String,
    },
    Duplicate {
        what: &'static str,
        key: String,
    },
    TrailingData,
}

/// What the parser found instead of what it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Byte(u8),
    End,
}

impl fmt::Display for AtermErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtermErrorKind::Expected { expected, found } => {
                write!(f, "expected {expected}, found ")?;
                match found {
                    Found::Byte(b) if b.is_ascii_graphic() || *b == b' ' => {
                        write!(f, "'{}'", char::from(*b))
                    }
                    Found::Byte(b) => write!(f, "byte 0x{b:02x}"),
                    Found::End => f.write_str("end of input"),
                }
            }
            AtermErrorKind::UnterminatedString => f.write_str("unterminated string"),
            AtermErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            AtermErrorKind::BadStorePath { path, reason } => {
                write!(f, "bad store path '{path}': {reason}")
            }
            AtermErrorKind::BadOutput { output, reason } => {
                write!(f, "bad output '{output}': {reason}")
            }
            AtermErrorKind::Duplicate { what, key } => write!(f, "duplicate {what} '{key}'"),
            AtermErrorKind::TrailingData => f.write_str("unexpected data after the derivation"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    store_dir: &'a StoreDir,
}

impl<'a> Parser<'a> {
    fn err(&self, offset: usize, kind: AtermErrorKind) -> AtermError {
        AtermError { offset, kind }
    }

    fn found(&self) -> Found {
        match self.s.get(self.pos) {
            Some(b) => Found::Byte(*b),
            None => Found::End,
        }
    }

    fn expect(&mut self, lit: &'static str) -> Result<(), AtermError> {
        for (i, b) in lit.bytes().enumerate() {
            if self.s.get(self.pos + i) != Some(&b) {
                self.pos += i;
                return Err(self.err(
                    self.pos,
                    AtermErrorKind::Expected {
                        expected: lit,
                        found: self.found(),
                    },
                ));
            }
        }
        self.pos += lit.len();
        Ok(())
    }

    fn peek_is(&self, b: u8) -> bool {
        self.s.get(self.pos) == Some(&b)
    }

    /// Runs `item` for each element of a `[a,b,…]` list (the `[` already read).
    fn list(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), AtermError>,
    ) -> Result<(), AtermError> {
        if self.peek_is(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {
                    return Err(self.err(
                        self.pos,
                        AtermErrorKind::Expected {
                            expected: "',' or ']'",
                            found: self.found(),
                        },
                    ))
                }
            }
        }
    }

    /// A quoted string that must be UTF-8; returns it and its starting offset.
    fn string(&mut self) -> Result<(String, usize), AtermError> {
        let (bytes, start) = self.byte_string()?;
        let s =
            String::from_utf8(bytes).map_err(|_| self.err(start, AtermErrorKind::InvalidUtf8))?;
        Ok((s, start))
    }

    /// A quoted string as raw bytes (Nix strings are bytes; the builder,
    /// arguments and environment entries may hold arbitrary ones, see
    /// [`Derivation::env_bytes`]).
    fn byte_string(&mut self) -> Result<(Vec<u8>, usize), AtermError> {
        let start = self.pos;
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Err(self.err(start, AtermErrorKind::UnterminatedString));
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos) else {
                        return Err(self.err(start, AtermErrorKind::UnterminatedString));
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        Ok((out, start))
    }

    fn store_path(&mut self) -> Result<StorePath, AtermError> {
        let (s, at) = self.string()?;
        self.parse_path(&s, at)
    }

    fn parse_path(&self, s: &str, at: usize) -> Result<StorePath, AtermError> {
        self.store_dir.parse(s).map_err(|e| {
            self.err(
                at,
                AtermErrorKind::BadStorePath {
                    path: s.to_owned(),
                    reason: e.to_string(),
                },
            )
        })
    }

    fn output(&mut self) -> Result<(String, DerivationOutput), AtermError> {
        self.expect("(")?;
        let (name, _) = self.string()?;
        self.expect(",")?;
        let (path, path_at) = self.string()?;
        self.expect(",")?;
        let (algo, algo_at) = self.string()?;
        self.expect(",")?;
        let (hash, hash_at) = self.string()?;
        self.expect(")")?;
        let bad = |at: usize, reason: String| {
            self.err(
                at,
                AtermErrorKind::BadOutput {
                    output: name.clone(),
                    reason,
                },
            )
        };
        let out = if algo.is_empty() {
            if !hash.is_empty() {
                return Err(bad(hash_at, "a hash without a hash algorithm".into()));
            }
            if path.is_empty() {
                DerivationOutput::Deferred
            } else {
                DerivationOutput::InputAddressed(self.parse_path(&path, path_at)?)
            }
        } else {
            let (method, algo_name) = ContentAddressMethod::split_prefix(&algo);
            let algo = HashAlgo::from_name(algo_name)
                .ok_or_else(|| bad(algo_at, format!("unknown hash algorithm '{algo_name}'")))?;
            if hash == "impure" {
                if !path.is_empty() {
                    return Err(bad(path_at, "an impure output cannot have a path".into()));
                }
                DerivationOutput::Impure { method, algo }
            } else if hash.is_empty() {
                if !path.is_empty() {
                    return Err(bad(path_at, "a floating output cannot have a path".into()));
                }
                DerivationOutput::CaFloating { method, algo }
            } else {
                let hash =
                    Hash::parse_unprefixed(&hash, algo).map_err(|e| bad(hash_at, e.to_string()))?;
                let path = self.parse_path(&path, path_at)?;
                DerivationOutput::CaFixed {
                    ca: ContentAddress { method, hash },
                    path,
                }
            }
        };
        Ok((name, out))
    }

    fn derivation(&mut self) -> Result<Derivation, AtermError> {
        let mut drv = Derivation::default();
        self.expect("Derive([")?;
        self.list(|p| {
            let at = p.pos;
            let (name, out) = p.output()?;
            if drv.outputs.insert(name.clone(), out).is_some() {
                return Err(p.err(at, dup("output", name)));
            }
            Ok(())
        })?;
        self.expect(",[")?;
        self.list(|p| {
            let at = p.pos;
            p.expect("(")?;
            let path = p.store_path()?;
            p.expect(",[")?;
            let mut outs = BTreeSet::new();
            p.list(|p| {
                outs.insert(p.string()?.0);
                Ok(())
            })?;
            p.expect(")")?;
            let key = path.to_string();
            if drv.input_drvs.insert(path, outs).is_some() {
                return Err(p.err(at, dup("input derivation", key)));
            }
            Ok(())
        })?;
        self.expect(",[")?;
        self.list(|p| {
            drv.input_srcs.insert(p.store_path()?);
            Ok(())
        })?;
        self.expect(",")?;
        drv.system = self.string()?.0;
        self.expect(",")?;
        drv.set_builder_bytes(self.byte_string()?.0);
        self.expect(",[")?;
        self.list(|p| {
            drv.push_arg_bytes(p.byte_string()?.0);
            Ok(())
        })?;
        self.expect(",[")?;
        self.list(|p| {
            p.expect("(")?;
            let (k, at) = p.byte_string()?;
            p.expect(",")?;
            let (v, _) = p.byte_string()?;
            p.expect(")")?;
            let duplicate = match std::str::from_utf8(&k) {
                Ok(ks) => drv.env.contains_key(ks),
                Err(_) => false,
            } || drv.env_bytes.contains_key(&k);
            if duplicate {
                return Err(p.err(
                    at,
                    dup(
                        "environment variable",
                        String::from_utf8_lossy(&k).into_owned(),
                    ),
                ));
            }
            match (String::from_utf8(k), String::from_utf8(v)) {
                (Ok(k), Ok(v)) => {
                    drv.env.insert(k, v);
                }
                (k, v) => {
                    let bytes = |r: Result<String, std::string::FromUtf8Error>| {
                        r.map(String::into_bytes).unwrap_or_else(|e| e.into_bytes())
                    };
                    drv.env_bytes.insert(bytes(k), bytes(v));
                }
            }
            Ok(())
        })?;
        self.expect(")")?;
        if self.pos != self.s.len() {
            return Err(self.err(self.pos, AtermErrorKind::TrailingData));
        }
        Ok(drv)
    }
}

fn dup(what: &'static str, key: String) -> AtermErrorKind {
    AtermErrorKind::Duplicate { what, key }
}

/// Parses the text of a `.drv` file whose paths live in `store_dir`.
pub fn parse(store_dir: &StoreDir, text: &[u8]) -> Result<Derivation, AtermError> {
    Parser {
        s: text,
        pos: 0,
        store_dir,
    }
    .derivation()
}

fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    // Environment values can be long scripts with few characters to escape:
    // copy the runs between them whole rather than byte by byte.
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&s[run..i]);
        out.extend_from_slice(esc);
        run = i + 1;
    }
    out.extend_from_slice(&s[run..]);
    out.push(b'"');
}

fn push_unescaped(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn push_list<'a, I: IntoIterator<Item = &'a str>>(out: &mut Vec<u8>, items: I, escaped: bool) {
    out.push(b'[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if escaped {
            push_escaped(out, s.as_bytes());
        } else {
            push_unescaped(out, s);
        }
    }
    out.push(b']');
}

/// Prints a derivation as Nix writes its `.drv` file. Only exact for
/// derivations whose strings are all UTF-8 (see [`print_bytes`]).
pub fn print(drv: &Derivation, store_dir: &StoreDir) -> String {
    lossy(print_bytes(drv, store_dir))
}

/// Prints a derivation as Nix writes its `.drv` file, byte for byte, also
/// when environment entries are not UTF-8.
pub fn print_bytes(drv: &Derivation, store_dir: &StoreDir) -> Vec<u8> {
    print_bytes_with(drv, store_dir, false, None)
}

fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`print_bytes_with`] as text (lossy when an environment entry is not UTF-8).
#[allow(dead_code)]
pub(crate) fn print_with(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    actual_inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> String {
    lossy(print_bytes_with(
        drv,
        store_dir,
        mask_outputs,
        actual_inputs,
    ))
}

/// Nix's `unparse(store, maskOutputs, actualInputs)`: with `mask_outputs`,
/// output paths and the env vars named after outputs print as `""`; with
/// `actual_inputs`, those (hash → outputs) replace the input derivations.
pub(crate) fn print_bytes_with(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    actual_inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> Vec<u8> {
    let mut s = Vec::with_capacity(4096);
    s.extend_from_slice(b"Derive([");
    for (i, (name, out)) in drv.outputs.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        push_unescaped(&mut s, name);
        let masked_path = |p: &StorePath| {
            if mask_outputs {
                String::new()
            } else {
                store_dir.display(p)
            }
        };
        let (path, algo, hash) = match out {
            DerivationOutput::InputAddressed(p) => (masked_path(p), String::new(), String::new()),
            DerivationOutput::CaFixed { ca, path } => {
                (masked_path(path), ca.method_algo(), ca.hash.to_base16())
            }
            DerivationOutput::CaFloating { method, algo } => (
                String::new(),
                format!("{}{algo}", method.prefix()),
                String::new(),
            ),
            DerivationOutput::Deferred => (String::new(), String::new(), String::new()),
            DerivationOutput::Impure { method, algo } => (
                String::new(),
                format!("{}{algo}", method.prefix()),
                "impure".to_owned(),
            ),
        };
        for field in [path, algo, hash] {
            s.push(b',');
            push_unescaped(&mut s, &field);
        }
        s.push(b')');
    }
    s.extend_from_slice(b"],[");
    match actual_inputs {
        Some(inputs) => {
            for (i, (key, outs)) in inputs.iter().enumerate() {
                if i > 0 {
                    s.push(b',');
                }
                s.push(b'(');
                push_unescaped(&mut s, key);
                s.push(b',');
                push_list(&mut s, outs.iter().map(String::as_str), false);
                s.push(b')');
            }
        }
        None => {
            for (i, (path, outs)) in drv.input_drvs.iter().enumerate() {
                if i > 0 {
                    s.push(b',');
                }
                s.push(b'(');
                push_unescaped(&mut s, &store_dir.display(path));
                s.push(b',');
                push_list(&mut s, outs.iter().map(String::as_str), false);
                s.push(b')');
            }
        }
    }
    s.extend_from_slice(b"],");
    // Nix sorts the printed paths; with one store dir that is the StorePath order.
    let srcs: Vec<String> = drv
        .input_srcs
        .iter()
        .map(|p| store_dir.display(p))
        .collect();
    push_list(&mut s, srcs.iter().map(String::as_str), false);
    s.push(b',');
    push_unescaped(&mut s, &drv.system);
    s.push(b',');
    push_escaped(&mut s, drv.builder_raw());
    s.push(b',');
    s.push(b'[');
    for (i, a) in drv.args_raw().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        push_escaped(&mut s, a);
    }
    s.push(b']');
    s.extend_from_slice(b",[");
    for (i, (k, v)) in drv.env_entries().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.push(b'(');
        push_escaped(&mut s, k);
        s.push(b',');
        let masked =
            mask_outputs && std::str::from_utf8(k).is_ok_and(|k| drv.outputs.contains_key(k));
        push_escaped(&mut s, if masked { b"" } else { v });
        s.push(b')');
    }
    s.extend_from_slice(b"])");
    s
}

impl Derivation {
    /// Parses `.drv` text (see [`parse`]).
    pub fn from_aterm(store_dir: &StoreDir, text: &[u8]) -> Result<Self, AtermError> {
        parse(store_dir, text)
    }

    /// The `.drv` text, byte for byte as Nix writes it when every string is
    /// UTF-8 (always so for derivations b3 evaluates); otherwise lossy, use
    /// [`Self::to_aterm_bytes`].
    pub fn to_aterm(&self, store_dir: &StoreDir) -> String {
        print(self, store_dir)
    }

    /// The `.drv` file's bytes exactly as Nix writes them.
    pub fn to_aterm_bytes(&self, store_dir: &StoreDir) -> Vec<u8> {
        print_bytes(self, store_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"Derive([("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","hello"),("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"),("system","x86_64-linux")])"#;

    fn sd() -> StoreDir {
        StoreDir::default()
    }

    fn err_of(text: &str) -> AtermError {
        match parse(&sd(), text.as_bytes()) {
            Err(e) => e,
            Ok(d) => panic!("parsed malformed input {text:?} as {d:?}"),
        }
    }

    #[test]
    fn hello_round_trips() {
        let d = parse(&sd(), HELLO.as_bytes()).unwrap();
        assert_eq!(d.system, "x86_64-linux");
        assert_eq!(d.args, ["-c", "echo hi > $out"]);
        assert_eq!(d.env.len(), 4);
        assert_eq!(print(&d, &sd()), HELLO);
    }

    #[test]
    fn escapes_like_nix() {
        let mut d = parse(&sd(), HELLO.as_bytes()).unwrap();
        d.env
            .insert("weird".into(), "q\"b\\n\nr\rt\tu\u{1}é$".into());
        d.args.push("a\\b".into());
        let text = print(&d, &sd());
        assert!(text.contains(r#"("weird","q\"b\\n\nr\rt\tu"#));
        assert!(text.contains(r#""a\\b"]"#));
        assert_eq!(parse(&sd(), text.as_bytes()).unwrap(), d);
    }

    #[test]
    fn parses_other_escapes_as_the_character() {
        let text = HELLO.replace(r#""-c""#, r#""\-\c\q""#);
        let d = parse(&sd(), text.as_bytes()).unwrap();
        assert_eq!(d.args[0], "-cq");
    }

    #[test]
    fn malformed_inputs_report_offset_and_expectation() {
        let e = err_of("Derive(");
        assert_eq!(e.offset, 7);
        assert!(matches!(
            e.kind,
            AtermErrorKind::Expected {
                expected: "Derive([",
                found: Found::End
            }
        ));
        let e = err_of("Derivx([");
        assert_eq!(e.offset, 5);
        assert_eq!(
            e.to_string(),
            "malformed derivation at byte 5: expected Derive([, found 'x'"
        );
        let e =
            err_of(r#"Derive([("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello","","")"#);
        assert!(matches!(
            e.kind,
            AtermErrorKind::Expected {
                expected: "',' or ']'",
                found: Found::End
            }
        ));
        let e = err_of(r#"Derive([("out","/nix/store/mjs27"#);
        assert_eq!(e.kind, AtermErrorKind::UnterminatedString);
        assert_eq!(e.offset, 15);
        let e = err_of(&HELLO.replace(
            "mjs27ix6ig2bkbi3s3sm470vrv4lf7ic",
            "mjs27ix6ig2bkbi3s3sm470vrv4lf7ie",
        ));
        assert!(matches!(e.kind, AtermErrorKind::BadStorePath { .. }), "{e}");
        assert_eq!(e.offset, 15);
        let e = err_of(&format!("{HELLO}\n"));
        assert_eq!(e.kind, AtermErrorKind::TrailingData);
        assert_eq!(e.offset, HELLO.len());
        let e = err_of(&HELLO.replace(r#"("name","hello")"#, r#"("name","hello"),("name","x")"#));
        assert!(matches!(
            e.kind,
            AtermErrorKind::Duplicate {
                what: "environment variable",
                ..
            }
        ));
        let e = err_of(&HELLO.replace(r#","","")]"#, r#","sha257","abc")]"#));
        assert!(matches!(e.kind, AtermErrorKind::BadOutput { .. }), "{e}");
        let e = err_of(&HELLO.replace(r#","","")]"#, r#","sha256","abc")]"#));
        assert!(e.to_string().contains("wrong length"), "{e}");
        let e = err_of(&HELLO.replace(r#","","")]"#, r#","","abc")]"#));
        assert!(matches!(e.kind, AtermErrorKind::BadOutput { .. }), "{e}");
        let e = err_of("Derive([],[],[],\"s\",\"b\",[],[(\"a\" \"b\")])");
        assert!(matches!(
            e.kind,
            AtermErrorKind::Expected {
                expected: ",",
                found: Found::Byte(b' ')
            }
        ));
        // `system` (unlike the builder, arguments and environment) must be
        // UTF-8.
        let mut bytes = HELLO.as_bytes().to_vec();
        let at = HELLO.find("x86_64").unwrap();
        bytes[at] = 0xff;
        let e = parse(&sd(), &bytes).unwrap_err();
        assert_eq!(e.kind, AtermErrorKind::InvalidUtf8);
    }

    #[test]
    fn non_utf8_builder_and_args_round_trip_as_bytes() {
        let mut bytes = HELLO.as_bytes().to_vec();
        let at = HELLO.find("echo").unwrap();
        bytes[at] = 0xff;
        let b = HELLO.find("/bin/sh").unwrap();
        bytes[b + 1] = 0xfe;
        let d = parse(&sd(), &bytes).unwrap();
        assert_eq!(d.builder_raw(), b"/\xfein/sh");
        assert_eq!(d.builder, "/\u{fffd}in/sh");
        assert_eq!(d.args_bytes.len(), 1);
        assert_eq!(print_bytes(&d, &sd()), bytes);
    }

    #[test]
    fn non_utf8_env_entries_round_trip_as_bytes() {
        let mut bytes = HELLO.as_bytes().to_vec();
        // Drop the closing `])`, add two raw entries (one escaped quote, one
        // newline escape, bytes that are not UTF-8), close again.
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(b",(\"z\\\"\xff\",\"v\xfe\\n\xc3\"),(\"\xe9\",\"plain\")])");
        let d = parse(&sd(), &bytes).unwrap();
        assert_eq!(d.env.len(), 4);
        assert_eq!(d.env_bytes.len(), 2);
        assert_eq!(d.env_bytes[&b"z\"\xff"[..]], b"v\xfe\n\xc3");
        assert_eq!(d.env_bytes[&b"\xe9"[..]], b"plain");
        assert_eq!(print_bytes(&d, &sd()), bytes);
        // A raw key given twice is a duplicate.
        let mut dup_text = bytes.clone();
        let at = dup_text.len() - 2;
        dup_text.splice(at..at, b",(\"\xe9\",\"again\")".iter().copied());
        let err = parse(&sd(), &dup_text).unwrap_err();
        assert!(
            matches!(err.kind, AtermErrorKind::Duplicate { .. }),
            "{err}"
        );
    }

    #[test]
    fn masked_print_blanks_outputs() {
        let d = parse(&sd(), HELLO.as_bytes()).unwrap();
        let masked = print_with(&d, &sd(), true, None);
        assert_eq!(masked.as_bytes(), print_bytes_with(&d, &sd(), true, None));
        assert!(masked.starts_with(r#"Derive([("out","","","")]"#));
        assert!(masked.contains(r#"("out","")"#));
    }
}
