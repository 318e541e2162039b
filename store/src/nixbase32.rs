//! Nix's own base-32 encoding ("nix32"), used for store path digests and for
//! hashes printed in store paths, narinfo files and `nix-hash --base32`.
//!
//! It differs from RFC 4648 base32 twice: the alphabet omits `e o u t` (to
//! avoid accidental words), and the bit order is reversed: the first
//! character of the text carries the *most* significant bits of the *last*
//! byte. There is no padding; `n` bytes take `ceil(8n / 5)` characters.

use thiserror::Error;

/// The 32 digits, in value order. They also happen to be in ASCII order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a nix32 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("invalid nix-base32 character {0:?} at offset {1}")]
    InvalidChar(char, usize),
    #[error("nix-base32 string has length {got}, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("nix-base32 string has non-zero padding bits")]
    NonZeroPadding,
}

/// Number of characters needed to encode `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len * 8 - 1) / 5 + 1
    }
}

/// Number of bytes a string of `len` characters decodes to.
pub const fn decoded_len(len: usize) -> usize {
    len * 5 / 8
}

/// Value of one nix32 digit, or `None` if `c` is not one.
pub const fn digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'd' => Some(c - b'a' + 10),
        b'f'..=b'n' => Some(c - b'f' + 14),
        b'p'..=b's' => Some(c - b'p' + 23),
        b'v'..=b'z' => Some(c - b'v' + 27),
        _ => None,
    }
}

/// Encodes into `out`, which must be exactly `encoded_len(bytes.len())` long.
fn encode_into(bytes: &[u8], out: &mut [u8]) {
    let len = out.len();
    for (pos, slot) in out.iter_mut().enumerate() {
        // The text is written most significant digit first.
        let n = len - 1 - pos;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = bytes[i] >> j;
        let hi = if i + 1 < bytes.len() {
            // `j == 0` would shift by 8 bits: those bits are not part of this digit.
            (u16::from(bytes[i + 1]) << (8 - j)) as u8
        } else {
            0
        };
        *slot = ALPHABET[usize::from((lo | hi) & 0x1f)];
    }
}

/// Encodes `bytes` as nix32.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; encoded_len(bytes.len())];
    encode_into(bytes, &mut out);
    // Every byte comes from ALPHABET, which is ASCII.
    out.into_iter().map(char::from).collect()
}

/// Encodes a 20-byte store path digest into its 32 characters.
pub fn encode_digest(digest: &[u8; 20]) -> [u8; 32] {
    let mut out = [0u8; 32];
    encode_into(digest, &mut out);
    out
}

/// Decodes `s` into `out`; `s` must have exactly `encoded_len(out.len())` characters.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let expected = encoded_len(out.len());
    if s.len() != expected {
        return Err(DecodeError::WrongLength {
            got: s.len(),
            expected,
        });
    }
    out.fill(0);
    let size = out.len();
    for n in 0..s.len() {
        let pos = s.len() - 1 - n;
        let c = s[pos];
        let digit = digit_value(c).ok_or(DecodeError::InvalidChar(char::from(c), pos))?;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= ((u16::from(digit) << j) & 0xff) as u8;
        let carry = (u16::from(digit) >> (8 - j)) as u8;
        if i + 1 < size {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(DecodeError::NonZeroPadding);
        }
    }
    Ok(())
}

/// Decodes a nix32 string of any length (the byte count follows from it).
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = vec![0u8; decoded_len(s.len())];
    if encoded_len(out.len()) != s.len() {
        return Err(DecodeError::WrongLength {
            got: s.len(),
            expected: encoded_len(out.len()),
        });
    }
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_nix() {
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        assert_eq!(encoded_len(0), 0);
    }

    #[test]
    fn digit_values_follow_alphabet() {
        for (i, c) in ALPHABET.iter().enumerate() {
            assert_eq!(digit_value(*c), Some(i as u8));
        }
        for c in [b'e', b'o', b'u', b't', b'A', b'-', b'/'] {
            assert_eq!(digit_value(c), None);
        }
    }

    #[test]
    fn encodes_known_sha256_of_hello_newline() {
        // sha256("hello\n"), printed by `nix-hash --type sha256 --flat --base32`.
        let hex = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let s = encode(&bytes);
        assert_eq!(s, "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq");
        assert_eq!(decode(&s).unwrap(), bytes);
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
    fn rejects_bad_characters_and_lengths() {
        let s = "e".repeat(32);
        assert_eq!(decode(&s), Err(DecodeError::InvalidChar('e', 31)));
        assert!(matches!(
            decode(&"0".repeat(3)),
            Err(DecodeError::WrongLength { .. })
        ));
    }

    #[test]
    fn rejects_set_padding_bits() {
        // 20 bytes = 160 bits = 32 digits exactly: no padding. 32 bytes = 256
        // bits in 52 digits (260 bits): the top digit may only use 1 bit.
        let mut s = "0".repeat(52);
        s.replace_range(0..1, "2");
        assert_eq!(decode(&s), Err(DecodeError::NonZeroPadding));
        s.replace_range(0..1, "1");
        assert!(decode(&s).is_ok());
    }
}
