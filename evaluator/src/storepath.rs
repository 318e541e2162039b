//! Store-path arithmetic needed during evaluation (read-only mode): Nix
//! base-32, the `makeStorePath` fingerprint scheme, and NAR hashing of a
//! filesystem tree with an optional filter.

use std::io::Read;

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

pub fn nixbase32(h: &[u8]) -> String {
    if h.is_empty() {
        return String::new();
    }
    let len = (h.len() * 8 - 1) / 5 + 1;
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (h[i] as u32) >> j;
        let hi = if i + 1 < h.len() {
            (h[i + 1] as u32) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

pub fn nixbase32_decode(s: &str) -> Option<Vec<u8>> {
    let len = s.len() * 5 / 8;
    let mut out = vec![0u8; len];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|x| *x == c)? as u32;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        if i < len {
            out[i] |= (digit << j) as u8;
        }
        let hi = digit >> (8 - j);
        if i + 1 < len {
            out[i + 1] |= hi as u8;
        } else if hi != 0 {
            return None;
        }
    }
    Some(out)
}

pub fn compress(h: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    for (i, b) in h.iter().enumerate() {
        out[i % n] ^= b;
    }
    out
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn make_store_path(store_dir: &str, ty: &str, inner: &[u8; 32], name: &str) -> String {
    let s = format!("{ty}:sha256:{}:{store_dir}:{name}", hex(inner));
    let h = sha256(s.as_bytes());
    format!("{store_dir}/{}-{name}", nixbase32(&compress(&h, 20)))
}

pub fn make_type(base: &str, refs: &[String], self_ref: bool) -> String {
    let mut t = base.to_string();
    let mut refs: Vec<&String> = refs.iter().collect();
    refs.sort();
    for r in refs {
        t.push(':');
        t.push_str(r);
    }
    if self_ref {
        t.push_str(":self");
    }
    t
}

pub fn make_text_path(store_dir: &str, name: &str, content: &[u8], refs: &[String]) -> String {
    make_store_path(
        store_dir,
        &make_type("text", refs, false),
        &sha256(content),
        name,
    )
}

/// A fixed-output path: `method_r` is recursive (NAR) hashing.
pub fn make_fixed_output_path(
    store_dir: &str,
    recursive: bool,
    algo: &str,
    hash: &[u8],
    name: &str,
    refs: &[String],
) -> String {
    if recursive && algo == "sha256" {
        let mut h = [0u8; 32];
        h.copy_from_slice(&hash[..32.min(hash.len())]);
        return make_store_path(store_dir, &make_type("source", refs, false), &h, name);
    }
    let inner = format!(
        "fixed:out:{}{algo}:{}:",
        if recursive { "r:" } else { "" },
        hex(hash)
    );
    make_store_path(store_dir, "output:out", &sha256(inner.as_bytes()), name)
}

struct NarWriter<'a> {
    h: &'a mut Sha256,
}

impl NarWriter<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.h.update((b.len() as u64).to_le_bytes());
        self.h.update(b);
        let pad = (8 - b.len() % 8) % 8;
        self.h.update(&[0u8; 8][..pad]);
    }
    fn s(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Streams the NAR serialisation of `path` into a SHA-256 hasher. `filter`
/// decides (full path, type) whether an entry below the root is included.
pub fn nar_hash(
    path: &str,
    filter: &mut dyn FnMut(&str, &str) -> Result<bool, String>,
) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    {
        let mut w = NarWriter { h: &mut h };
        w.s("nix-archive-1");
        dump(&mut w, path, filter)?;
    }
    Ok(h.finalize().into())
}

fn dump(
    w: &mut NarWriter,
    path: &str,
    filter: &mut dyn FnMut(&str, &str) -> Result<bool, String>,
) -> Result<(), String> {
    let md =
        std::fs::symlink_metadata(path).map_err(|e| format!("getting status of '{path}': {e}"))?;
    w.s("(");
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| format!("reading link '{path}': {e}"))?;
        w.s("type");
        w.s("symlink");
        w.s("target");
        w.bytes(t.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        w.s("type");
        w.s("directory");
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| format!("reading directory '{path}': {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let child = format!("{}/{}", path.trim_end_matches('/'), n);
            let cmd = std::fs::symlink_metadata(&child).map_err(|e| e.to_string())?;
            let ty = file_type_name(&cmd.file_type());
            if !filter(&child, ty)? {
                continue;
            }
            w.s("entry");
            w.s("(");
            w.s("name");
            w.s(&n);
            w.s("node");
            dump(w, &child, filter)?;
            w.s(")");
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        w.s("type");
        w.s("regular");
        if md.permissions().mode() & 0o100 != 0 {
            w.s("executable");
            w.s("");
        }
        w.s("contents");
        let len = md.len();
        w.h.update(len.to_le_bytes());
        let mut f = std::fs::File::open(path).map_err(|e| format!("opening '{path}': {e}"))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.h.update(&buf[..n]);
        }
        let pad = ((8 - total % 8) % 8) as usize;
        w.h.update(&[0u8; 8][..pad]);
    }
    w.s(")");
    Ok(())
}

pub fn file_type_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nixbase32_roundtrip() {
        let h = sha256(b"hello");
        let e = nixbase32(&h);
        assert_eq!(e.len(), 52);
        assert_eq!(nixbase32_decode(&e).unwrap(), h.to_vec());
    }

    #[test]
    fn text_path_matches_nix() {
        // nix-instantiate --eval -E 'builtins.toFile "foo" "bar"' (Nix 2.8)
        let p = make_text_path("/nix/store", "foo", b"bar", &[]);
        assert_eq!(p, "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
    }
}
