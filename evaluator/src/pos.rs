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
    /// Where each line starts, found on the first position resolved in the
    /// file: most files of an evaluation never have one resolved.
    line_starts: std::cell::OnceCell<Vec<u32>>,
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
    FILES.with(|f| {
        let mut f = f.borrow_mut();
        f.push(Rc::new(SourceFile {
            base,
            name: name.into(),
            is_path,
            text,
            line_starts: std::cell::OnceCell::new(),
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
        let starts = f.line_starts();
        let line = match starts.binary_search(&off) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = starts[line];
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
    fn line_starts(&self) -> &[u32] {
        self.line_starts.get_or_init(|| {
            let mut v = vec![0u32];
            for (i, b) in self.text.bytes().enumerate() {
                if b == b'\n' {
                    v.push(i as u32 + 1);
                }
            }
            v
        })
    }
    pub fn line_text(&self, line: u32) -> Option<&str> {
        let i = line.checked_sub(1)? as usize;
        let starts = self.line_starts();
        let start = *starts.get(i)? as usize;
        let end = starts
            .get(i + 1)
            .map(|e| *e as usize - 1)
            .unwrap_or(self.text.len());
        self.text.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_resolve_to_line_and_column_once_lines_are_found_on_demand() {
        let text = "a\nbé c\n\nlast";
        let base = add_file("/t/pos-test.nix", true, Rc::from(text));
        let at = |off: usize| {
            let r = Pos::new(base, off as u32)
                .resolve()
                .expect("a registered file");
            (r.line, r.col)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(1), (1, 2));
        assert_eq!(at(2), (2, 1));
        // Columns count characters: `é` is two bytes.
        assert_eq!(at(text.find(" c").unwrap() + 1), (2, 4));
        assert_eq!(at(text.find("last").unwrap()), (4, 1));
        let f = Pos::new(base, 0).resolve().unwrap().file;
        assert_eq!(f.line_text(2), Some("bé c"));
        assert_eq!(f.line_text(3), Some(""));
        assert_eq!(f.line_text(4), Some("last"));
        assert_eq!(f.line_text(5), None);
        assert_eq!(f.line_text(0), None);
    }
}
