//! The typed evaluation error and its Nix-style rendering (message, position,
//! code frame and, with `--show-trace`, the chain of frames).

use std::fmt::Write;

use crate::pos::Pos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `throw`: catchable by `tryEval`.
    Throw,
    /// A failed `assert`: catchable by `tryEval`.
    Assert,
    Abort,
    Parse,
    InfiniteRecursion,
    StackOverflow,
    /// Every other evaluation error (type errors, missing attributes…).
    Other,
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub pos: Pos,
    pub msg: String,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.inner.msg)]
pub struct EvalError {
    pub inner: Box<Inner>,
}

#[derive(Clone, Debug)]
pub struct Inner {
    pub kind: ErrorKind,
    pub msg: String,
    pub pos: Pos,
    pub trace: Vec<Frame>,
}

impl EvalError {
    pub fn new(kind: ErrorKind, msg: impl Into<String>, pos: Pos) -> Self {
        EvalError {
            inner: Box::new(Inner {
                kind,
                msg: msg.into(),
                pos,
                trace: Vec::new(),
            }),
        }
    }
    pub fn other(msg: impl Into<String>, pos: Pos) -> Self {
        Self::new(ErrorKind::Other, msg, pos)
    }
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }
    pub fn msg(&self) -> &str {
        &self.inner.msg
    }
    pub fn is_catchable(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Throw | ErrorKind::Assert)
    }
    /// Fills in a position if the error has none yet.
    pub fn at(mut self, pos: Pos) -> Self {
        if self.inner.pos.is_none() {
            self.inner.pos = pos;
        }
        self
    }
    pub fn with_frame(mut self, pos: Pos, msg: impl Into<String>) -> Self {
        if self.inner.trace.len() < 10_000 {
            self.inner.trace.push(Frame {
                pos,
                msg: msg.into(),
            });
        }
        self
    }

    /// Renders like Nix: trace frames (outermost first) when `show_trace`,
    /// then `error: msg` with the position and a code frame (omitted when
    /// the innermost frame already shows the same position).
    pub fn render(&self, show_trace: bool) -> String {
        let mut out = String::from("error:\n");
        if !show_trace || self.inner.trace.is_empty() {
            let mut out = format!("error: {}\n", indent(&self.inner.msg));
            out.push_str(&frame(self.inner.pos, "       "));
            return out;
        }
        let mut last: Option<(crate::pos::Pos, String)> = None;
        let mut dup = 0usize;
        for f in self.inner.trace.iter().rev() {
            let key = (f.pos, f.msg.clone());
            if last.as_ref() == Some(&key) {
                dup += 1;
                continue;
            }
            if dup > 0 {
                let _ = writeln!(out, "       ({dup} duplicate frames omitted)\n");
                dup = 0;
            }
            last = Some(key);
            let _ = writeln!(out, "       … {}", f.msg);
            out.push_str(&frame(f.pos, "         "));
            out.push('\n');
        }
        if dup > 0 {
            let _ = writeln!(out, "       ({dup} duplicate frames omitted)\n");
        }
        let _ = writeln!(out, "       error: {}", indent(&self.inner.msg));
        let innermost = self.inner.trace.first().map(|f| f.pos);
        if innermost != Some(self.inner.pos) {
            out.push_str(&frame(self.inner.pos, "       "));
        }
        out
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n       ")
}

fn frame(pos: Pos, lead: &str) -> String {
    let Some(r) = pos.resolve() else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(out, "{lead}at {}:{}:{}:", r.file.name, r.line, r.col);
    let line = |out: &mut String, n: u32, t: &str| {
        if t.is_empty() {
            let _ = writeln!(out, "{n:>13}|");
        } else {
            let _ = writeln!(out, "{n:>13}| {t}");
        }
    };
    if r.line > 1 {
        if let Some(t) = r.file.line_text(r.line - 1) {
            line(&mut out, r.line - 1, t);
        }
    }
    if let Some(t) = r.file.line_text(r.line) {
        line(&mut out, r.line, t);
        let _ = writeln!(
            out,
            "{:>13}| {}^",
            "",
            " ".repeat(r.col.saturating_sub(1) as usize)
        );
    }
    if let Some(t) = r.file.line_text(r.line + 1) {
        line(&mut out, r.line + 1, t);
    }
    out
}
