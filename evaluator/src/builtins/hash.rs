//! `hashString`, `hashFile`, `convertHash` and Nix hash parsing/printing.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::storepath::{hex, nixbase32, nixbase32_decode};
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("hashString", 2, hash_string));
    t.push(("hashFile", 2, hash_file));
    t.push(("convertHash", 1, convert_hash));
}

pub fn algo_size(algo: &str) -> Option<usize> {
    match algo {
        "md5" => Some(16),
        "sha1" => Some(20),
        "sha256" => Some(32),
        "sha512" => Some(64),
        _ => None,
    }
}

pub fn digest(algo: &str, data: &[u8]) -> Option<Vec<u8>> {
    Some(match algo {
        "md5" => Md5::digest(data).to_vec(),
        "sha1" => Sha1::digest(data).to_vec(),
        "sha256" => Sha256::digest(data).to_vec(),
        "sha512" => Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

fn bad_algo(a: &str, p: Pos) -> crate::error::EvalError {
    crate::error::EvalError::other(
        format!(
            "unknown hash algorithm '{a}', expect 'blake3', 'md5', 'sha1', 'sha256', or 'sha512'"
        ),
        p,
    )
}

fn hash_string(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let algo = ev.force_string(&a[0], p)?;
    let (s, _) = ev.coerce_to_string(&a[1], false, false, p)?;
    let h = digest(&algo, &s).ok_or_else(|| bad_algo(&algo, p))?;
    Ok(Value::str(hex(&h)))
}

fn hash_file(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let algo = ev.force_string(&a[0], p)?;
    let logical = ev.coerce_to_path(&a[1], p)?;
    // A fetched path may live in a scratch directory or the b3 store.
    let path = crate::storepath::realise_path(ev, &logical)
        .map_err(|e| crate::error::EvalError::other(e, p))?;
    let data = std::fs::read(&path)
        .map_err(|e| crate::error::EvalError::other(format!("opening file '{logical}': {e}"), p))?;
    let h = digest(&algo, &data).ok_or_else(|| bad_algo(&algo, p))?;
    Ok(Value::str(hex(&h)))
}

pub fn b64() -> data_encoding::Encoding {
    data_encoding::BASE64
}

/// Parses a hash in any of Nix's notations; `algo` is required when the
/// string does not name one.
pub fn parse_hash(s: &str, algo: Option<&str>) -> Result<(String, Vec<u8>), String> {
    let (algo, body, sri) = if let Some((a, b)) = s.split_once(':') {
        (a.to_string(), b, false)
    } else if let Some((a, b)) = s.split_once('-').filter(|(a, _)| algo_size(a).is_some()) {
        (a.to_string(), b, true)
    } else {
        match algo {
            Some(a) => (a.to_string(), s, false),
            None => {
                return Err(format!(
                "hash '{s}' does not include a type, nor is the type otherwise known from context"
            ))
            }
        }
    };
    let size = algo_size(&algo).ok_or_else(|| format!("unknown hash algorithm '{algo}', expect 'blake3', 'md5', 'sha1', 'sha256', or 'sha512'"))?;
    let bytes = if sri {
        b64()
            .decode(body.as_bytes())
            .map_err(|_| format!("invalid SRI hash '{s}'"))?
    } else if body.len() == size * 2 {
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(body.as_bytes())
            .map_err(|_| format!("invalid base-16 hash '{s}'"))?
    } else if body.len() == (size * 8 - 1) / 5 + 1 {
        nixbase32_decode(body).ok_or_else(|| format!("invalid base-32 hash '{s}'"))?
    } else if body.len() == size.div_ceil(3) * 4 {
        b64()
            .decode(body.as_bytes())
            .map_err(|_| format!("invalid base-64 hash '{s}'"))?
    } else {
        return Err(format!(
            "hash '{s}' has wrong length for hash algorithm '{algo}'"
        ));
    };
    if bytes.len() != size {
        return Err(format!(
            "hash '{s}' has wrong length for hash algorithm '{algo}'"
        ));
    }
    Ok((algo, bytes))
}

pub fn format_hash(algo: &str, h: &[u8], fmt: &str) -> Option<String> {
    Some(match fmt {
        "base16" => hex(h),
        "nix32" | "base32" => nixbase32(h),
        "base64" => b64().encode(h),
        "sri" => format!("{algo}-{}", b64().encode(h)),
        _ => return None,
    })
}

fn convert_hash(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let args = ev.force_attrs(&a[0], p)?;
    let hash = match args.get("hash") {
        Some(h) => ev.force_string(h, p)?,
        None => return err("attribute 'hash' missing", p),
    };
    let algo = match args.get("hashAlgo") {
        Some(h) => Some(ev.force_string(h, p)?),
        None => None,
    };
    let fmt = match args.get("toHashFormat") {
        Some(h) => ev.force_string(h, p)?,
        None => return err("attribute 'toHashFormat' missing", p),
    };
    let (algo, bytes) =
        parse_hash(&hash, algo.as_deref()).map_err(|e| crate::error::EvalError::other(e, p))?;
    match format_hash(&algo, &bytes, &fmt) {
        Some(s) => Ok(Value::str(s)),
        None => err(
            format!("unknown hash format '{fmt}', expect 'base16', 'base32', 'base64', or 'sri'"),
            p,
        ),
    }
}
