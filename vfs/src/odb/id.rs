//! Object identifiers: the BLAKE3 digest of an object's bytes.
//!
//! BLAKE3 rather than SHA-256 because every imported byte is hashed once and
//! the object database sits on the hot path of imports; the measured figures
//! are printed by `examples/vfs_bench.rs`.

use std::fmt;
use std::str::FromStr;

/// Length in bytes of an object identifier.
pub const ID_LEN: usize = 32;

/// The BLAKE3 digest that names one object (a blob or a tree).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; ID_LEN]);

impl ObjectId {
    /// Hashes `bytes` in one go (for small objects such as trees).
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Lower-case hex, the spelling used for file names on disk.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

impl From<blake3::Hash> for ObjectId {
    fn from(h: blake3::Hash) -> Self {
        ObjectId(*h.as_bytes())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

/// A string that is not 64 lower-case hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an object id (64 lower-case hex digits): {0:?}")]
pub struct BadObjectId(pub String);

impl FromStr for ObjectId {
    type Err = BadObjectId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadObjectId(s.to_owned());
        if s.len() != ID_LEN * 2 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let v = data_encoding::HEXLOWER
            .decode(s.as_bytes())
            .map_err(|_| bad())?;
        let arr: [u8; ID_LEN] = v.try_into().map_err(|_| bad())?;
        Ok(ObjectId(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = ObjectId::of(b"hello");
        let s = id.to_hex();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ObjectId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_spellings() {
        assert!("xyz".parse::<ObjectId>().is_err());
        let upper = ObjectId::of(b"x").to_hex().to_uppercase();
        assert!(upper.parse::<ObjectId>().is_err());
    }

    #[test]
    fn known_blake3_vector() {
        // BLAKE3 of the empty input, from the BLAKE3 specification's test vectors.
        assert_eq!(
            ObjectId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
