//! The set of store path names a view shows at its top level.
//!
//! Built for closures of any size with no work per name until the first
//! lookup: the names live in one buffer (each followed by a NUL, which no
//! valid name contains), so a runtime's server takes the buffer it was
//! handed as is; the hash index over it is built on another thread (or at
//! the first lookup of a small set), with no allocation per name. Lookups
//! made before it is ready scan the buffer instead of waiting.
//!
//! A name that is not a valid store path name can never show: the kernel
//! only looks up single path components, and listings skip names the object
//! database refuses. So only [`ClosureSet::from_names`] (the API's entry,
//! which reports mistakes) checks each name.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::MountError;
use crate::odb::valid_root_name;

/// Sets at least this large get their index built on another thread.
const BACKGROUND_MIN: usize = 4096;

/// Store path base names (`<hash>-<name>`), checked once at construction.
pub struct ClosureSet {
    /// Each name followed by a NUL.
    names: Vec<u8>,
    count: usize,
    /// Offsets of the distinct names in `names`, by hash; built on first use.
    index: OnceLock<HashTable<u32>>,
    /// A thread is building `index` ([`ClosureSet::index_in_background`]).
    building: AtomicBool,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for ClosureSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosureSet")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl ClosureSet {
    /// Collects and checks names.
    pub fn from_names<I, S>(names: I) -> Result<Self, MountError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut buf = Vec::new();
        for n in names {
            let n = n.as_ref();
            if !valid_root_name(n) {
                return Err(MountError::BadName(n.to_owned()));
            }
            buf.extend_from_slice(n.as_bytes());
            buf.push(0);
        }
        Self::checked(buf)
    }

    /// Takes names each followed by a NUL (what [`ClosureSet::as_bytes`]
    /// gives) without checking them one by one (see the module's header):
    /// only a missing final NUL is an error.
    pub fn from_nul_terminated(buf: Vec<u8>) -> Result<Self, MountError> {
        if buf.last().is_some_and(|&b| b != 0) {
            let tail = buf.rsplit(|&b| b == 0).next().unwrap_or_default();
            return Err(MountError::BadName(
                String::from_utf8_lossy(tail).into_owned(),
            ));
        }
        Self::checked(buf)
    }

    fn checked(buf: Vec<u8>) -> Result<Self, MountError> {
        if u32::try_from(buf.len()).is_err() {
            return Err(MountError::BadName(format!(
                "a closure of {} bytes of names (at most 4 GiB)",
                buf.len()
            )));
        }
        let count = buf.iter().filter(|&&b| b == 0).count();
        Ok(ClosureSet {
            names: buf,
            count,
            index: OnceLock::new(),
            building: AtomicBool::new(false),
            hasher: DefaultHashBuilder::default(),
        })
    }

    /// Number of names given (duplicates included).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The names, each followed by a NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.names
    }

    /// The names in the order given (duplicates included; names that are
    /// not UTF-8, which no store path has, left out).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names
            .split(|&b| b == 0)
            .take(self.count)
            .filter_map(|n| std::str::from_utf8(n).ok())
    }

    fn name_at(&self, off: u32) -> &[u8] {
        let rest = &self.names[off as usize..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn index(&self) -> &HashTable<u32> {
        self.index.get_or_init(|| {
            let mut t = HashTable::with_capacity(self.count);
            let mut off = 0usize;
            for name in self.names.split(|&b| b == 0).take(self.count) {
                let h = self.hasher.hash_one(name);
                let at = off as u32;
                off += name.len() + 1;
                if t.find(h, |&o| self.name_at(o) == name).is_none() {
                    t.insert_unique(h, at, |&o| self.hasher.hash_one(self.name_at(o)));
                }
            }
            t
        })
    }

    /// Builds the lookup index now, on another thread, unless the set is
    /// small: lookups made meanwhile wait for it, and the work overlaps
    /// with whatever the caller does until the first lookup (mounting,
    /// starting a command).
    pub fn index_in_background(self: &std::sync::Arc<Self>) {
        if self.count >= BACKGROUND_MIN
            && self.index.get().is_none()
            && !self.building.swap(true, Ordering::AcqRel)
        {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("b3-vfs-index".into())
                .spawn(move || {
                    me.index();
                });
            if spawned.is_err() {
                self.building.store(false, Ordering::Release);
            }
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        let index = match self.index.get() {
            Some(i) => i,
            // Being built on another thread: a first lookup (often the only
            // one before the index is ready) need not wait for it.
            None if self.building.load(Ordering::Acquire) => return self.scan(name),
            None => self.index(),
        };
        let h = self.hasher.hash_one(name);
        index.find(h, |&o| self.name_at(o) == name).is_some()
    }

    /// `contains` without the index: one pass over the buffer.
    fn scan(&self, name: &[u8]) -> bool {
        if name.is_empty() || name.contains(&0) {
            return false;
        }
        if self.names.starts_with(name) && self.names.get(name.len()) == Some(&0) {
            return true;
        }
        let mut needle = Vec::with_capacity(name.len() + 2);
        needle.push(0);
        needle.extend_from_slice(name);
        needle.push(0);
        memchr::memmem::find(&self.names, &needle).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";
    const B: &str = "0gen0000000000000000000000000000-generated";

    #[test]
    fn names_are_found_and_others_are_not() {
        let s = ClosureSet::from_names([A, B, A]).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.contains(A.as_bytes()));
        assert!(s.contains(B.as_bytes()));
        assert!(!s.contains(b"b8zzzm23p9pd6h8zbaiz806gqid7q81v-b"));
        assert!(!s.contains(b""));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![A, B, A]);
    }

    #[test]
    fn the_byte_form_round_trips() {
        let s = ClosureSet::from_names([A, B]).unwrap();
        let again = ClosureSet::from_nul_terminated(s.as_bytes().to_vec()).unwrap();
        assert_eq!(again.iter().collect::<Vec<_>>(), vec![A, B]);
        assert!(again.contains(B.as_bytes()));
        assert!(matches!(
            ClosureSet::from_nul_terminated(b"a-x\0b-y".to_vec()),
            Err(MountError::BadName(n)) if n == "b-y"
        ));
        assert!(ClosureSet::from_nul_terminated(Vec::new())
            .unwrap()
            .is_empty());
        // Unchecked names never match a single valid name, nor list.
        let odd = ClosureSet::from_nul_terminated(b"a-\xff\0b/c\0..\0".to_vec()).unwrap();
        assert_eq!(odd.len(), 3);
        assert!(!odd.contains(b"b") && !odd.contains(b"c"));
        assert_eq!(odd.iter().collect::<Vec<_>>(), vec!["b/c", ".."]);
    }

    #[test]
    fn names_given_one_by_one_are_checked() {
        for bad in ["no/slash", "..", ".hidden", ""] {
            assert!(
                matches!(
                    ClosureSet::from_names(["ok-x", bad]),
                    Err(MountError::BadName(n)) if n == bad
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn scanning_finds_what_the_index_finds() {
        let names: Vec<String> = (0..5000).map(|i| format!("{i:032}-decl")).collect();
        let s = ClosureSet::from_names(&names).unwrap();
        for n in [&names[0], &names[1], &names[4999]] {
            assert!(s.scan(n.as_bytes()), "{n}");
        }
        for n in [
            &b""[..],
            b"decl",
            b"0000000000000000000000000000000",
            b"00000000000000000000000000000000-dec",
            b"00000000000000000000000000000000-decl\x000",
        ] {
            assert!(!s.scan(n), "{n:?}");
        }
        assert!(s.contains(names[42].as_bytes()));
        assert!(s.index.get().is_some(), "built at the first lookup");
    }

    #[test]
    fn a_large_closure_finds_every_name() {
        let names: Vec<String> = (0..20_000).map(|i| format!("{i:032}-decl")).collect();
        let s = ClosureSet::from_names(&names).unwrap();
        assert!(names.iter().all(|n| s.contains(n.as_bytes())));
        assert!(!s.contains(b"00000000000000000000000000020000-decl"));
    }
}
