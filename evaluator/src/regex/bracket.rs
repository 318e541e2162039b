//! Bracket expressions (`[...]`) as libstdc++ evaluates them in the "C"
//! locale: single characters, ranges compared as *signed* `char` (so bytes
//! ≥ 0x80 sort below ASCII), `[:class:]` names (plus libstdc++'s `d`, `w`,
//! `s`), `[.name.]` collating symbols from the POSIX portable character set
//! names, and `[=x=]` equivalence classes (which libstdc++ reduces to a
//! case-insensitive single character). The result is a 256-entry byte set.

use super::{ErrorKind, RegexError};

/// A set of bytes, one bit each.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
    }
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1u64 << (b & 63);
    }
}

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes: Vec<u8> = (0..=255u8).filter(|b| self.contains(*b)).collect();
        write!(f, "ByteSet({:?})", String::from_utf8_lossy(&bytes))
    }
}

/// Character classes of the "C" locale, as a bit mask.
const DIGIT: u16 = 1;
const ALPHA: u16 = 2;
const UPPER: u16 = 4;
const LOWER: u16 = 8;
const SPACE: u16 = 16;
const BLANK: u16 = 32;
const CNTRL: u16 = 64;
const PRINT: u16 = 128;
const GRAPH: u16 = 256;
const PUNCT: u16 = 512;
const XDIGIT: u16 = 1024;
const UNDERSCORE: u16 = 2048;
const ALNUM: u16 = ALPHA | DIGIT;

fn class_mask(name: &[u8]) -> Option<u16> {
    let lower = name.to_ascii_lowercase();
    Some(match lower.as_slice() {
        b"d" | b"digit" => DIGIT,
        b"w" => ALNUM | UNDERSCORE,
        b"s" | b"space" => SPACE,
        b"alnum" => ALNUM,
        b"alpha" => ALPHA,
        b"blank" => BLANK,
        b"cntrl" => CNTRL,
        b"graph" => GRAPH,
        b"lower" => LOWER,
        b"print" => PRINT,
        b"punct" => PUNCT,
        b"upper" => UPPER,
        b"xdigit" => XDIGIT,
        _ => return None,
    })
}

fn is_class(c: u8, mask: u16) -> bool {
    let m = |bit: u16, p: bool| mask & bit != 0 && p;
    m(DIGIT, c.is_ascii_digit())
        || m(ALPHA, c.is_ascii_alphabetic())
        || m(UPPER, c.is_ascii_uppercase())
        || m(LOWER, c.is_ascii_lowercase())
        || m(
            SPACE,
            matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        )
        || m(BLANK, matches!(c, b' ' | b'\t'))
        || m(CNTRL, c < 0x20 || c == 0x7f)
        || m(PRINT, (0x20..0x7f).contains(&c))
        || m(GRAPH, (0x21..0x7f).contains(&c))
        || m(PUNCT, c.is_ascii_punctuation())
        || m(XDIGIT, c.is_ascii_hexdigit())
        || m(UNDERSCORE, c == b'_')
}

/// Names of the POSIX portable character set (index = character code);
/// the names libstdc++ accepts in `[.name.]` and `[=name=]`.
const COLLATE_NAMES: [&str; 128] = [
    "NUL",
    "SOH",
    "STX",
    "ETX",
    "EOT",
    "ENQ",
    "ACK",
    "alert",
    "backspace",
    "tab",
    "newline",
    "vertical-tab",
    "form-feed",
    "carriage-return",
    "SO",
    "SI",
    "DLE",
    "DC1",
    "DC2",
    "DC3",
    "DC4",
    "NAK",
    "SYN",
    "ETB",
    "CAN",
    "EM",
    "SUB",
    "ESC",
    "IS4",
    "IS3",
    "IS2",
    "IS1",
    "space",
    "exclamation-mark",
    "quotation-mark",
    "number-sign",
    "dollar-sign",
    "percent-sign",
    "ampersand",
    "apostrophe",
    "left-parenthesis",
    "right-parenthesis",
    "asterisk",
    "plus-sign",
    "comma",
    "hyphen",
    "period",
    "slash",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "colon",
    "semicolon",
    "less-than-sign",
    "equals-sign",
    "greater-than-sign",
    "question-mark",
    "commercial-at",
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "G",
    "H",
    "I",
    "J",
    "K",
    "L",
    "M",
    "N",
    "O",
    "P",
    "Q",
    "R",
    "S",
    "T",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "Z",
    "left-square-bracket",
    "backslash",
    "right-square-bracket",
    "circumflex",
    "underscore",
    "grave-accent",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
    "y",
    "z",
    "left-curly-bracket",
    "vertical-line",
    "right-curly-bracket",
    "tilde",
    "DEL",
];

pub(crate) fn lookup_collate(name: &[u8]) -> Option<u8> {
    COLLATE_NAMES
        .iter()
        .position(|n| n.as_bytes() == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Accumulates the parts of one bracket expression.
#[derive(Default)]
pub(crate) struct BracketBuilder {
    chars: Vec<u8>,
    ranges: Vec<(i8, i8)>,
    classes: u16,
    equiv: Vec<u8>,
}

/// libstdc++ compares range ends as plain (signed) `char`.
fn signed(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

impl BracketBuilder {
    pub(crate) fn add_char(&mut self, c: u8) {
        self.chars.push(c);
    }

    pub(crate) fn add_range(&mut self, lo: u8, hi: u8) -> Result<(), RegexError> {
        if signed(lo) > signed(hi) {
            return Err(RegexError::new(
                ErrorKind::Range,
                "Invalid range in bracket expression.",
            ));
        }
        self.ranges.push((signed(lo), signed(hi)));
        Ok(())
    }

    pub(crate) fn add_class(&mut self, name: &[u8]) -> Result<(), RegexError> {
        match class_mask(name) {
            Some(m) => {
                self.classes |= m;
                Ok(())
            }
            None => Err(RegexError::new(
                ErrorKind::Collate,
                "Invalid character class.",
            )),
        }
    }

    pub(crate) fn add_equiv(&mut self, name: &[u8]) -> Result<(), RegexError> {
        match lookup_collate(name) {
            Some(c) => {
                self.equiv.push(c.to_ascii_lowercase());
                Ok(())
            }
            None => Err(RegexError::new(
                ErrorKind::Collate,
                "Invalid equivalence class.",
            )),
        }
    }

    pub(crate) fn build(self, negate: bool) -> ByteSet {
        let mut set = ByteSet([0; 4]);
        for b in 0..=255u8 {
            let s = signed(b);
            let hit = self.chars.contains(&b)
                || self.ranges.iter().any(|&(lo, hi)| lo <= s && s <= hi)
                || is_class(b, self.classes)
                || self.equiv.contains(&b.to_ascii_lowercase());
            if hit != negate {
                set.insert(b);
            }
        }
        set
    }
}
