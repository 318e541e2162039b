//! The NAR wire encoding shared by the reader and the writer: every token is
//! a little-endian u64 length, the bytes, and zero padding to 8 bytes.

/// The first string of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Longest entry name accepted (Linux NAME_MAX).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target accepted (Linux PATH_MAX minus the NUL).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Longest structural token (`(`, `type`, `executable`, …); all are shorter.
pub const MAX_TAG_LEN: u64 = 16;
/// Default limit on directory nesting; each level costs the reader one
/// remembered name, so this bounds its memory.
pub const DEFAULT_MAX_DEPTH: usize = 4096;

/// Zero bytes that follow a string of `len` bytes.
pub fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// Appends one token to `out`.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&[0u8; 8][..padding(s.len() as u64)]);
}
