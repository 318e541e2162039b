//! Nix's base-32 encoding (the one in store paths and `sha256:…` hashes):
//! alphabet without `e o u t`, and digits emitted from the most significant
//! 5-bit group of the little-endian bit string first. Public so the store
//! crate can reuse it.

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Encodes `bytes` (e.g. a 32-byte SHA-256 gives 52 characters).
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Why a string is not valid Nix base-32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid character {0:?} in Nix base-32 string")]
    BadChar(char),
    #[error("Nix base-32 string has non-zero bits beyond its length")]
    Overflow,
}

/// Decodes a string made by [`encode`]; the output length is the largest
/// byte count whose encoding has `s.len()` characters.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let n_bytes = s.len() * 5 / 8;
    let mut out = vec![0u8; n_bytes];
    for (n, c) in s.chars().rev().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a as char == c)
            .ok_or(DecodeError::BadChar(c))? as u16;
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let v = digit << j;
        if i < n_bytes {
            out[i] |= (v & 0xff) as u8;
        } else if v & 0xff != 0 {
            return Err(DecodeError::Overflow);
        }
        let carry = (v >> 8) as u8;
        if i + 1 < n_bytes {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(DecodeError::Overflow);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_sha256_from_nix_hash() {
        // nix-hash --type sha256 --base32 of the `dep` store path (oracle facts).
        let hex = "9719d86ed7845764b8833f2a9d0b1c6dd7f018608608490137dd5093c9634fed";
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap();
        assert_eq!(
            encode(&bytes),
            "1vagcg4r6l6x6w0lj246c0cg1mvd3h5rsaizhfw68mw4sxpdh6cp"
        );
    }

    #[test]
    fn round_trips_all_lengths() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(len));
            assert_eq!(decode(&s).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn rejects_bad_characters_and_overflow() {
        assert_eq!(decode("0e"), Err(DecodeError::BadChar('e')));
        // 2 chars hold 10 bits but only one byte: the top digit's high bits overflow.
        assert_eq!(decode("z0"), Err(DecodeError::Overflow));
    }
}
