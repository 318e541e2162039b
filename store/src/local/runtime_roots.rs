//! Runtime roots: store paths that running processes are using.
//!
//! A program started from a store path, a library it mapped, a file it has
//! open or a path in its environment or command line keeps that store path
//! alive even when no GC root names it, as with Nix's runtime roots. Every
//! process under `/proc` is looked at: the `exe`, `cwd` and `root` links,
//! every `fd/*` link, and the text of `maps`, `environ` and `cmdline`.
//! Processes that vanish or that we may not inspect are skipped.
//!
//! Only hash parts are collected (the 32 characters after the store
//! directory): paths inside a mount namespace show the logical `/nix/store`,
//! others the physical directory; both name the same path by its hash.

use std::collections::BTreeSet;
use std::path::Path;

use memchr::memmem;

const HASH_LEN: usize = 32;

fn is_nixbase32(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'd' | b'f'..=b'n' | b'p'..=b's' | b'v'..=b'z')
}

/// Adds to `out` the hash part of every `<prefix><hash>-…` in `text`, for
/// each prefix (store directories ending in `/`).
pub(crate) fn scan_text(text: &[u8], prefixes: &[Vec<u8>], out: &mut BTreeSet<String>) {
    for prefix in prefixes {
        for at in memmem::find_iter(text, prefix) {
            let start = at + prefix.len();
            let Some(cand) = text.get(start..start + HASH_LEN + 1) else {
                continue;
            };
            if cand[HASH_LEN] == b'-' && cand[..HASH_LEN].iter().all(|&b| is_nixbase32(b)) {
                // The slice is ASCII by the check above.
                out.insert(String::from_utf8_lossy(&cand[..HASH_LEN]).into_owned());
            }
        }
    }
}

fn scan_link(p: &Path, prefixes: &[Vec<u8>], out: &mut BTreeSet<String>) {
    if let Ok(t) = std::fs::read_link(p) {
        scan_text(t.as_os_str().as_encoded_bytes(), prefixes, out);
    }
}

/// Hash parts of store paths in use by running processes. `prefixes` are
/// the store directories to look for, each ending in `/`.
pub(crate) fn find_runtime_roots(proc_dir: &Path, prefixes: &[Vec<u8>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(proc_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let pd = e.path();
        for l in ["exe", "cwd", "root"] {
            scan_link(&pd.join(l), prefixes, &mut out);
        }
        if let Ok(fds) = std::fs::read_dir(pd.join("fd")) {
            for fd in fds.flatten() {
                scan_link(&fd.path(), prefixes, &mut out);
            }
        }
        for f in ["maps", "environ", "cmdline"] {
            if let Ok(text) = std::fs::read(pd.join(f)) {
                scan_text(&text, prefixes, &mut out);
            }
        }
    }
    // Kernel helpers configured to run store programs (as Nix checks).
    for f in ["modprobe", "fbsplash", "poweroff_cmd"] {
        if let Ok(text) = std::fs::read(Path::new("/proc/sys/kernel").join(f)) {
            scan_text(&text, prefixes, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hashes_after_each_prefix_only_when_well_formed() {
        let prefixes = vec![b"/nix/store/".to_vec(), b"/data/b3/nix/store/".to_vec()];
        let mut out = BTreeSet::new();
        let text = b"PATH=/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello/bin:\
/data/b3/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo\0\
/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-bad-e-is-not-base32 \
/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7i-short /nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic";
        scan_text(text, &prefixes, &mut out);
        assert_eq!(
            out,
            BTreeSet::from([
                "mjs27ix6ig2bkbi3s3sm470vrv4lf7ic".to_string(),
                "vxjiwkjkn7x4079qvh1jkl5pn05j2aw0".to_string()
            ])
        );
    }
}
