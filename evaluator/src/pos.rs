//! Source files and positions. Every parsed file is registered once and
//! given a range of position numbers (its first byte's number is the file's
//! base); a `Pos` is one 4-byte number, resolved to file, line and column
//! only on demand. Attribute entries and AST nodes hold one each.

use std::cell::RefCell;
use std::rc::Rc;

/// A byte of a registered source file; 0 means "no position".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos(pub u32);

pub struct SourceFile {
    /// The position number of the file's first byte.
    base: u32,
    /// Display name: an absolute path, `«stdin»` or `«string»`.
    pub name: Rc<str>,
    /// Whether `name` is a real path (vs a pseudo-origin).
    pub is_path: bool,
    pub text: Rc<str>,
    line_starts: Vec<u32>,
}

thread_local! {
    /// Sorted by base.
    static FILES: RefCell<Vec<Rc<SourceFile>>> = const { RefCell::new(Vec::new()) };
    static NEXT_BASE: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

/// Registers a file and returns its base, to be given to [`Pos::new`]; 0
/// (positions of this file are unknown) once 4 GiB of text have been read.
pub fn add_file(name: &str, is_path: bool, text: Rc<str>) -> u32 {
    let base = NEXT_BASE.with(|n| {
        let base = n.get();
        let next = u32::try_from(text.len())
            .ok()
            .and_then(|l| base.checked_add(l)?.checked_add(1));
        match next {
            Some(next) => {
                n.set(next);
                base
            }
            None => 0,
        }
    });
    if base == 0 {
        return 0;
    }
    let mut line_starts = vec![0u32];
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            line_starts.push(i as u32 + 1);
        }
    }
    FILES.with(|f| {
        let mut f = f.borrow_mut();
        f.push(Rc::new(SourceFile {
            base,
            name: name.into(),
            is_path,
            text,
            line_starts,
        }));
    });
    base
}

/// The file holding position `p`.
fn file_of(p: u32) -> Option<Rc<SourceFile>> {
    if p == 0 {
        return None;
    }
    FILES.with(|f| {
        let f = f.borrow();
        let i = f.partition_point(|x| x.base <= p).checked_sub(1)?;
        f.get(i).cloned()
    })
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
    /// Byte `off` of the file registered with `base` (see [`add_file`]).
    #[inline]
    pub fn new(base: u32, off: u32) -> Pos {
        if base == 0 {
            Pos(0)
        } else {
            Pos(base.saturating_add(off))
        }
    }
    pub fn is_none(&self) -> bool {
        self.0 == 0
    }
    pub fn resolve(&self) -> Option<Resolved> {
        let f = file_of(self.0)?;
        let off = self.0 - f.base;
        let line = match f.line_starts.binary_search(&off) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = f.line_starts[line];
        let col = f
            .text
            .get(start as usize..off as usize)
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
