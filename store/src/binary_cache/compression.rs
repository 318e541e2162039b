//! The compressions of NAR files in a binary cache, streaming both ways.
//!
//! Nix names them in the narinfo's `Compression:` field (`xz`, `bzip2`,
//! `zstd`, `none`; a missing field means `bzip2`) and in the NAR file's
//! extension (`.nar.xz`, `.nar.bz2`, `.nar.zst`, `.nar`). Nix can also read
//! `br`, `lzip`, `lz4` and `gzip`; b3 does not, and says so in a clear error.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;

use async_compression::tokio::bufread::{BzDecoder, XzDecoder, ZstdDecoder};
use async_compression::tokio::write::{BzEncoder, XzEncoder, ZstdEncoder};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

/// A compression b3 can read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    None,
    /// Nix's default for `nix copy`.
    #[default]
    Xz,
    Bzip2,
    Zstd,
}

/// A `Compression:` value b3 does not support.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown compression method '{0}' (b3 supports none, xz, bzip2, zstd)")]
pub struct UnknownCompression(pub String);

impl Compression {
    /// The name in narinfo files and in Nix's `?compression=` parameter.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The NAR file suffix Nix uses (`.nar` + this).
    pub const fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
            Compression::Zstd => ".zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Compression::None,
            "xz" => Compression::Xz,
            // Nix treats an empty `Compression:` like a missing one.
            "bzip2" | "" => Compression::Bzip2,
            "zstd" => Compression::Zstd,
            other => return Err(UnknownCompression(other.to_owned())),
        })
    }
}

/// A boxed reader, as returned by [`decompress_reader`].
pub type BoxReader<'a> = Pin<Box<dyn AsyncRead + Send + 'a>>;
/// A boxed writer, as returned by [`compress_writer`].
pub type BoxWriter<'a> = Pin<Box<dyn AsyncWrite + Send + 'a>>;

/// Wraps `inner` (compressed bytes) in a reader yielding the decompressed bytes.
pub fn decompress_reader<'a, R>(kind: Compression, inner: R) -> BoxReader<'a>
where
    R: AsyncRead + Send + 'a,
{
    let buffered = BufReader::new(inner);
    match kind {
        Compression::None => Box::pin(buffered),
        Compression::Xz => {
            let mut d = XzDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Bzip2 => {
            let mut d = BzDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
    }
}

/// The blocking counterpart of [`decompress_reader`], for consumers that
/// run on their own thread (the local store's NAR restore): `inner` is read
/// through its own buffer, so no extra copy sits between the network chunks
/// and the decoder.
pub fn decompress_read<'a, R>(kind: Compression, inner: R) -> std::io::Result<SyncReader<'a>>
where
    R: std::io::BufRead + Send + 'a,
{
    Ok(match kind {
        Compression::None => Box::new(inner),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(inner)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(inner)?),
    })
}

/// A boxed blocking reader, as returned by [`decompress_read`].
pub type SyncReader<'a> = Box<dyn std::io::Read + Send + 'a>;

/// Wraps `inner` in a writer that compresses what is written to it. Call
/// `shutdown()` on the result to flush the trailer (and shut `inner` down).
pub fn compress_writer<'a, W>(kind: Compression, inner: W) -> BoxWriter<'a>
where
    W: AsyncWrite + Send + 'a,
{
    match kind {
        Compression::None => Box::pin(inner),
        Compression::Xz => Box::pin(XzEncoder::new(inner)),
        Compression::Bzip2 => Box::pin(BzEncoder::new(inner)),
        Compression::Zstd => Box::pin(ZstdEncoder::new(inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
    ];

    #[test]
    fn names_round_trip_and_missing_means_bzip2() {
        for c in ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        assert_eq!("".parse::<Compression>().unwrap(), Compression::Bzip2);
        let err = "br".parse::<Compression>().unwrap_err();
        assert!(err.to_string().contains("unknown compression method 'br'"));
    }

    async fn round_trip(kind: Compression, data: &[u8]) -> Vec<u8> {
        let mut compressed = Vec::new();
        let mut w = compress_writer(kind, &mut compressed);
        // Several writes, so the encoder sees a stream rather than one buffer.
        for chunk in data.chunks(7777) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        drop(w);
        if kind == Compression::None {
            assert_eq!(compressed, data);
        } else {
            assert_ne!(compressed, data);
        }
        let mut out = Vec::new();
        decompress_reader(kind, &compressed[..])
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn every_compression_round_trips_a_stream() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in ALL {
            assert_eq!(round_trip(c, &data).await, data, "{c}");
            assert_eq!(round_trip(c, b"").await, b"", "{c} empty");
        }
    }

    #[tokio::test]
    async fn the_blocking_decoders_read_what_the_async_encoders_write() {
        use std::io::Read;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        for c in ALL {
            let mut compressed = Vec::new();
            let mut w = compress_writer(c, &mut compressed);
            // Two members/frames back to back, as concatenated uploads give.
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
            drop(w);
            let once = compressed.clone();
            compressed.extend_from_slice(&once);
            let mut out = Vec::new();
            decompress_read(c, &compressed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out.len(), 2 * data.len(), "{c}");
            assert!(
                out[..data.len()] == data[..] && out[data.len()..] == data[..],
                "{c}"
            );
        }
        let mut out = Vec::new();
        assert!(decompress_read(Compression::Zstd, &b"not zstd at all"[..])
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }

    #[tokio::test]
    async fn corrupt_xz_is_an_error_not_garbage() {
        let mut out = Vec::new();
        let res = decompress_reader(Compression::Xz, &b"definitely not xz data"[..])
            .read_to_end(&mut out)
            .await;
        assert!(res.is_err());
    }

    // Runs the system's `xz`.
    #[cfg(unix)]
    #[tokio::test]
    async fn reads_system_xz_output() {
        // Nix links liblzma too; `xz` here stands in for a Nix-written file.
        let Ok(out) = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf 'hello from xz\\n' | xz -c")
            .output()
        else {
            panic!("cannot run sh/xz");
        };
        assert!(out.status.success(), "xz failed");
        let mut text = String::new();
        decompress_reader(Compression::Xz, &out.stdout[..])
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello from xz\n");
    }
}
