//! Reference scanning: which candidate store-path hash parts occur in a byte
//! stream (normally a NAR).
//!
//! A store path's hash part is 32 characters of nix-base32. The scanner keeps
//! the length of the current run of base32 characters; every position where
//! that run is at least 32 long ends a window that may be a hash part, and
//! only those windows are looked up in the candidate set. The last 31 bytes
//! of a run are carried over between chunks, so a hash split across two
//! writes is still found.

use std::collections::{BTreeSet, HashSet};
use std::io;

/// Length of a store path's hash part in characters.
pub const HASH_PART_LEN: usize = 32;

const BASE32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

const fn base32_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < BASE32_ALPHABET.len() {
        t[BASE32_ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
}

static IS_BASE32: [bool; 256] = base32_table();

/// Whether `b` is a nix-base32 digit.
pub fn is_base32_byte(b: u8) -> bool {
    IS_BASE32[b as usize]
}

/// A streaming scanner for a fixed set of candidate hash parts.
///
/// Feed it bytes with [`RefScanner::update`] (or through `io::Write`, so it
/// can sit in a tee), then read the hash parts seen with
/// [`RefScanner::found`].
#[derive(Debug, Clone)]
pub struct RefScanner {
    candidates: HashSet<[u8; HASH_PART_LEN]>,
    found: HashSet<[u8; HASH_PART_LEN]>,
    /// Up to the last 31 bytes of the current base32 run, from earlier chunks.
    tail: Vec<u8>,
    /// Length of the current run of base32 bytes (saturating; only `>= 32` matters).
    run: usize,
}

impl RefScanner {
    /// A scanner for the given hash parts. Strings that are not 32 nix-base32
    /// characters can never occur as hash parts and are ignored.
    pub fn new<I, S>(candidates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let candidates = candidates
            .into_iter()
            .filter_map(|c| {
                let c = c.as_ref();
                if c.len() == HASH_PART_LEN && c.iter().all(|&b| is_base32_byte(b)) {
                    let mut a = [0u8; HASH_PART_LEN];
                    a.copy_from_slice(c);
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        RefScanner {
            candidates,
            found: HashSet::new(),
            tail: Vec::with_capacity(HASH_PART_LEN),
            run: 0,
        }
    }

    /// Scan the next chunk of the stream.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.candidates.is_empty() || self.found.len() == self.candidates.len() {
            return;
        }
        let carried = self.tail.len();
        let mut run = self.run;
        for (i, &b) in chunk.iter().enumerate() {
            if !IS_BASE32[b as usize] {
                run = 0;
                continue;
            }
            run += 1;
            if run < HASH_PART_LEN {
                continue;
            }
            if i + 1 >= HASH_PART_LEN {
                self.check(&chunk[i + 1 - HASH_PART_LEN..=i]);
            } else {
                // The window starts in the carried tail: the run is unbroken
                // from there, so the tail's last bytes are the window's head.
                let from_tail = HASH_PART_LEN - (i + 1);
                let mut w = [0u8; HASH_PART_LEN];
                w[..from_tail].copy_from_slice(&self.tail[carried - from_tail..]);
                w[from_tail..].copy_from_slice(&chunk[..=i]);
                self.check(&w);
            }
        }
        // Carry the run's last (at most 31) bytes into the next chunk.
        let keep = run.min(HASH_PART_LEN - 1);
        if keep <= chunk.len() {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            // The whole chunk is part of a run that began earlier.
            let from_tail = keep - chunk.len();
            let start = self.tail.len() - from_tail;
            self.tail.drain(..start);
            self.tail.extend_from_slice(chunk);
        }
        self.run = run.min(usize::MAX / 2);
    }

    fn check(&mut self, window: &[u8]) {
        // The caller guarantees a 32-byte window.
        let mut w = [0u8; HASH_PART_LEN];
        w.copy_from_slice(window);
        if self.candidates.contains(&w) {
            self.found.insert(w);
        }
    }

    /// The candidate hash parts seen so far, sorted.
    pub fn found(&self) -> BTreeSet<String> {
        self.found
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

impl io::Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Scan a whole byte slice at once.
pub fn scan_bytes<S: AsRef<[u8]>>(
    data: &[u8],
    candidates: impl IntoIterator<Item = S>,
) -> BTreeSet<String> {
    let mut s = RefScanner::new(candidates);
    s.update(data);
    s.found()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "b8zzzm23p9pd6h8zbaiz806gqid7q81v";
    const H2: &str = "z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw";
    const H3: &str = "ap8llpmkx0n1cn5b6h321cfd1ggqc6bg";

    fn data() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(b"\x00\x01#!/nix/store/");
        d.extend_from_slice(H1.as_bytes());
        d.extend_from_slice(b"-bb/bin/sh\nexec ");
        d.extend_from_slice(H2.as_bytes());
        d.extend_from_slice(b"\xff\xfe tail");
        d
    }

    #[test]
    fn finds_hashes_in_one_chunk() {
        let found = scan_bytes(&data(), [H1, H2, H3]);
        assert_eq!(found, BTreeSet::from([H1.to_string(), H2.to_string()]));
    }

    #[test]
    fn finds_hashes_split_at_every_boundary() {
        let d = data();
        for split in 0..=d.len() {
            let mut s = RefScanner::new([H1, H2, H3]);
            s.update(&d[..split]);
            s.update(&d[split..]);
            assert_eq!(s.found().len(), 2, "split at {split}");
        }
    }

    #[test]
    fn finds_hashes_fed_one_byte_at_a_time() {
        let d = data();
        let mut s = RefScanner::new([H1, H2, H3]);
        for b in &d {
            s.update(std::slice::from_ref(b));
        }
        assert_eq!(s.found(), BTreeSet::from([H1.to_string(), H2.to_string()]));
    }

    #[test]
    fn finds_hash_inside_a_longer_base32_run() {
        let mut d = b"0000000".to_vec();
        d.extend_from_slice(H3.as_bytes());
        d.extend_from_slice(b"zzzz");
        for split in 0..=d.len() {
            let mut s = RefScanner::new([H3]);
            s.update(&d[..split]);
            s.update(&d[split..]);
            assert_eq!(s.found().len(), 1, "split at {split}");
        }
    }

    #[test]
    fn partial_or_broken_hash_is_not_found() {
        let mut d = H1.as_bytes()[..31].to_vec();
        d.push(b'-');
        d.extend_from_slice(&H1.as_bytes()[1..]);
        // 'e' is not in the nix-base32 alphabet.
        let mut broken = H2.as_bytes().to_vec();
        broken[10] = b'e';
        d.extend_from_slice(&broken);
        assert!(scan_bytes(&d, [H1, H2]).is_empty());
    }

    #[test]
    fn invalid_candidates_are_ignored() {
        let s = RefScanner::new(["short", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"]);
        assert!(s.candidates.is_empty());
    }

    #[test]
    fn random_chunking_matches_whole_scan() {
        // Deterministic pseudo-random data with hashes planted at odd offsets.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut d = Vec::new();
        for i in 0..20_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            d.push(BASE32_ALPHABET[(x % 32) as usize]);
            if i % 5000 == 1234 {
                d.extend_from_slice(H2.as_bytes());
            }
        }
        let whole = scan_bytes(&d, [H1, H2, H3]);
        assert!(whole.contains(H2));
        let mut s = RefScanner::new([H1, H2, H3]);
        let mut pos = 0;
        while pos < d.len() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = ((x % 97) as usize + 1).min(d.len() - pos);
            s.update(&d[pos..pos + n]);
            pos += n;
        }
        assert_eq!(s.found(), whole);
    }
}
