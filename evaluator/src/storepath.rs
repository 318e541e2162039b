//! Store-path arithmetic needed during evaluation, as a thin string-typed
//! layer over b3-store (`nixbase32`, `StoreDir::make_*_path`) and b3-nar
//! (NAR hashing). The evaluator handles paths as strings; this module does
//! the conversions. Only the *filtered* NAR hash (`builtins.path` with a
//! `filter`, `filterSource`) is computed here, because b3-nar serialises whole
//! trees and the filter is an evaluator callback deciding entry by entry.

use std::collections::BTreeSet;
use std::io::Read;

use b3_store::hash::{Hash, HashAlgo, Hasher};
use b3_store::path::{FileIngestionMethod, StoreDir, StorePath};

pub fn nixbase32(h: &[u8]) -> String {
    b3_store::nixbase32::encode(h)
}

pub fn nixbase32_decode(s: &str) -> Option<Vec<u8>> {
    b3_store::nixbase32::decode(s).ok()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Hash::digest(HashAlgo::Sha256, data).as_bytes());
    out
}

pub fn hex(h: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(h)
}

pub fn store_dir(dir: &str) -> Result<StoreDir, String> {
    StoreDir::new(dir).map_err(|e| e.to_string())
}

fn parse_refs(sd: &StoreDir, refs: &[String]) -> Result<BTreeSet<StorePath>, String> {
    refs.iter()
        .map(|r| {
            sd.parse(r)
                .map_err(|e| format!("invalid reference '{r}': {e}"))
        })
        .collect()
}

/// `builtins.toFile`: the text path of `content` with `refs`.
pub fn make_text_path(
    dir: &str,
    name: &str,
    content: &[u8],
    refs: &[String],
) -> Result<String, String> {
    let sd = store_dir(dir)?;
    let refs = parse_refs(&sd, refs)?;
    let p = sd
        .compute_text_path(name, content, &refs)
        .map_err(|e| e.to_string())?;
    Ok(sd.display(&p))
}

/// A fixed-output path; `recursive` is NAR (as opposed to flat) hashing.
pub fn make_fixed_output_path(
    dir: &str,
    recursive: bool,
    algo: &str,
    hash: &[u8],
    name: &str,
    refs: &[String],
) -> Result<String, String> {
    let sd = store_dir(dir)?;
    let algo =
        HashAlgo::from_name(algo).ok_or_else(|| format!("unknown hash algorithm '{algo}'"))?;
    let hash = Hash::from_bytes(algo, hash).map_err(|e| e.to_string())?;
    let method = if recursive {
        FileIngestionMethod::Recursive
    } else {
        FileIngestionMethod::Flat
    };
    let p = sd
        .make_fixed_output_path(method, &hash, name, &parse_refs(&sd, refs)?, false)
        .map_err(|e| e.to_string())?;
    Ok(sd.display(&p))
}

/// Decides (full path, file type) whether an entry goes into a NAR.
pub type EntryFilter<'a> = dyn FnMut(&str, &str) -> Result<bool, String> + 'a;

/// NAR sha256 of `path`; `filter` decides (full path, type) whether an entry
/// below the root is included. Without a filter this is b3-nar's hash.
pub fn nar_hash(path: &str, filter: Option<&mut EntryFilter<'_>>) -> Result<[u8; 32], String> {
    match filter {
        None => b3_nar::hash_path(std::path::Path::new(path))
            .map(|h| h.sha256)
            .map_err(|e| format!("hashing '{path}': {e}")),
        Some(filter) => {
            let mut w = NarHashWriter {
                h: Hasher::new(HashAlgo::Sha256),
            };
            w.s("nix-archive-1");
            dump_filtered(&mut w, path, filter)?;
            let mut out = [0u8; 32];
            out.copy_from_slice(w.h.finish().as_bytes());
            Ok(out)
        }
    }
}

/// Feeds NAR framing (length-prefixed, 8-byte padded strings) to a hasher.
struct NarHashWriter {
    h: Hasher,
}

impl NarHashWriter {
    fn bytes(&mut self, b: &[u8]) {
        self.h.update(&(b.len() as u64).to_le_bytes());
        self.h.update(b);
        self.pad(b.len() as u64);
    }
    fn pad(&mut self, len: u64) {
        let pad = ((8 - len % 8) % 8) as usize;
        self.h.update(&[0u8; 8][..pad]);
    }
    fn s(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

fn dump_filtered(
    w: &mut NarHashWriter,
    path: &str,
    filter: &mut EntryFilter<'_>,
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
        let mut names = Vec::new();
        for e in std::fs::read_dir(path).map_err(|e| format!("reading directory '{path}': {e}"))? {
            let e = e.map_err(|e| format!("reading directory '{path}': {e}"))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for n in names {
            let child = format!("{}/{}", path.trim_end_matches('/'), n);
            let cmd = std::fs::symlink_metadata(&child)
                .map_err(|e| format!("getting status of '{child}': {e}"))?;
            if !filter(&child, file_type_name(&cmd.file_type()))? {
                continue;
            }
            w.s("entry");
            w.s("(");
            w.s("name");
            w.s(&n);
            w.s("node");
            dump_filtered(w, &child, filter)?;
            w.s(")");
        }
    } else {
        w.s("type");
        w.s("regular");
        if b3_store::os::is_executable(&md) {
            w.s("executable");
            w.s("");
        }
        w.s("contents");
        w.h.update(&md.len().to_le_bytes());
        let mut f = std::fs::File::open(path).map_err(|e| format!("opening '{path}': {e}"))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("reading '{path}': {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.h.update(&buf[..n]);
        }
        if total != md.len() {
            return Err(format!("file '{path}' changed while it was being hashed"));
        }
        w.pad(total);
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
        let p = make_text_path("/nix/store", "foo", b"bar", &[]).unwrap();
        assert_eq!(p, "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
    }

    // Builds a tree with a symlink.
    #[cfg(unix)]
    #[test]
    fn filtered_nar_hash_accepting_everything_equals_b3_nar() {
        let d = std::env::temp_dir().join(format!("b3-eval-narhash-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a"), b"hello").unwrap();
        std::fs::write(d.join("sub/b"), b"0123456789").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        let p = d.to_str().unwrap();
        let mut all = |_: &str, _: &str| Ok(true);
        let filtered = nar_hash(p, Some(&mut all)).unwrap();
        let whole = nar_hash(p, None).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(filtered, whole);
    }
}
