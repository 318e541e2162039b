//! Source files and positions. Every parsed file is registered once; a `Pos`
//! is a (file, byte offset) pair resolved to line and column only on demand.

use std::cell::RefCell;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// 0 means "no position".
    pub file: u32,
    pub off: u32,
}

pub struct SourceFile {
    /// Display name: an absolute path, `«stdin»` or `«string»`.
    pub name: Rc<str>,
    /// Whether `name` is a real path (vs a pseudo-origin).
    pub is_path: bool,
    pub text: Rc<str>,
    line_starts: Vec<u32>,
}

thread_local! {
    static FILES: RefCell<Vec<Rc<SourceFile>>> = const { RefCell::new(Vec::new()) };
}

pub fn add_file(name: &str, is_path: bool, text: Rc<str>) -> u32 {
    let mut line_starts = vec![0u32];
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            line_starts.push(i as u32 + 1);
        }
    }
    FILES.with(|f| {
        let mut f = f.borrow_mut();
        f.push(Rc::new(SourceFile {
            name: name.into(),
            is_path,
            text,
            line_starts,
        }));
        f.len() as u32
    })
}

pub fn file(id: u32) -> Option<Rc<SourceFile>> {
    if id == 0 {
        return None;
    }
    FILES.with(|f| f.borrow().get(id as usize - 1).cloned())
}

/// A position resolved to 1-based line and column.
#[derive(Clone)]
pub struct Resolved {
    pub file: Rc<SourceFile>,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn none() -> Pos {
        Pos::default()
    }
    pub fn is_none(&self) -> bool {
        self.file == 0
    }
    pub fn resolve(&self) -> Option<Resolved> {
        let f = file(self.file)?;
        let line = match f.line_starts.binary_search(&self.off) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = f.line_starts[line];
        let col = f
            .text
            .get(start as usize..self.off as usize)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        Some(Resolved {
            file: f,
            line: line as u32 + 1,
            col: col as u32 + 1,
        })
    }
}

impl SourceFile {
    pub fn line_text(&self, line: u32) -> Option<&str> {
        let i = line.checked_sub(1)? as usize;
        let start = *self.line_starts.get(i)? as usize;
        let end = self
            .line_starts
            .get(i + 1)
            .map(|e| *e as usize - 1)
            .unwrap_or(self.text.len());
        self.text.get(start..end)
    }
}
