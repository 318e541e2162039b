//! Build logs: where they are kept and how a running build's output is
//! fanned out.
//!
//! Logs are kept as Nix keeps them, relative to the store's root:
//! `<root>/nix/var/log/nix/drvs/<first 2 chars of the drv base name>/<rest>.bz2`,
//! bzip2-compressed, for failed builds too. [`BuildOutput`] is the writer a
//! build's stdout/stderr goes to: it compresses into the log file (written
//! under a temporary name and renamed into place when the build ends),
//! relays complete lines to the build's activity (so `--log-format
//! internal-json` and the progress display see them), remembers the last
//! lines for the error message of a failed build, and optionally copies the
//! raw bytes to another writer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use b3_store::activity::{Activity, BuilderLog};

/// The directory holding per-derivation logs of the store rooted at `root`.
pub fn log_dir(root: &Path) -> PathBuf {
    root.join("nix/var/log/nix/drvs")
}

/// Where the log of the derivation with base name `drv_base`
/// (`<hash>-<name>.drv`) is kept.
pub fn log_path(root: &Path, drv_base: &str) -> PathBuf {
    let split = drv_base
        .char_indices()
        .nth(2)
        .map_or(drv_base.len(), |(i, _)| i);
    let (dir, rest) = drv_base.split_at(split);
    log_dir(root).join(dir).join(format!("{rest}.bz2"))
}

/// Streams the stored log of `drv_base` (decompressed) into `out`.
/// `Ok(false)` if there is none.
pub fn read_log(root: &Path, drv_base: &str, out: &mut dyn Write) -> io::Result<bool> {
    let path = log_path(root, drv_base);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut dec = bzip2::read::MultiBzDecoder::new(io::BufReader::new(file));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    Ok(true)
}

/// What bzip2 (block size 6, as [`bzip2::Compression::default`]) makes of
/// no input at all: the header and the end-of-stream marker with CRC 0.
const EMPTY_BZ2: &[u8] = b"BZh6\x17\x72\x45\x38\x50\x90\x00\x00\x00\x00";

/// A log file being written: compressed into a temporary file next to its
/// final name. The file and the compressor (which allocates megabytes) are
/// only made once the builder prints something; many builders print
/// nothing, and their log is the constant [`EMPTY_BZ2`].
struct LogFile {
    enc: Option<bzip2::write::BzEncoder<File>>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl LogFile {
    fn create(dest: PathBuf) -> LogFile {
        let tmp = dest.with_extension(format!("bz2.tmp-{}", std::process::id()));
        LogFile {
            enc: None,
            tmp,
            dest,
        }
    }

    fn open_tmp(&self) -> io::Result<File> {
        if let Some(parent) = self.dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        File::create(&self.tmp)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let enc = match &mut self.enc {
            Some(e) => e,
            None => self.enc.insert(bzip2::write::BzEncoder::new(
                self.open_tmp()?,
                bzip2::Compression::default(),
            )),
        };
        enc.write_all(buf)
    }

    /// Puts the log in place. Not flushed to disk: a log is no store
    /// object, and one lost in a crash invalidates nothing (Nix does not
    /// sync its logs either).
    fn finish(mut self) -> io::Result<PathBuf> {
        match self.enc.take() {
            Some(enc) => {
                enc.finish()?;
            }
            None => {
                let mut f = self.open_tmp()?;
                f.write_all(EMPTY_BZ2)?;
            }
        }
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(self.dest.clone())
    }
}

/// A finished build's log, still to be put in place.
pub struct PendingLog(LogFile);

impl PendingLog {
    /// Writes what is left of the log and renames it into place; its path.
    pub fn write(self) -> io::Result<PathBuf> {
        self.0.finish()
    }
}

/// A shared destination for the raw output of every build (e.g. the
/// caller's stderr), written from several build threads.
pub trait RawLog: Sync {
    fn write_raw(&self, buf: &[u8]);
    fn flush_raw(&self) {}
}

impl<W: Write + Send> RawLog for Mutex<W> {
    fn write_raw(&self, buf: &[u8]) {
        let mut w = match self.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        // A closed raw sink (e.g. a pipe) is no reason to kill the build.
        let _ = w.write_all(buf);
    }
    fn flush_raw(&self) {
        if let Ok(mut w) = self.lock() {
            let _ = w.flush();
        }
    }
}

/// Where one build's output goes; see the module docs.
pub struct BuildOutput<'a> {
    file: Option<LogFile>,
    file_error: Option<io::Error>,
    relay: BuilderLog<'a>,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    tail_max: usize,
    raw: Option<&'a dyn RawLog>,
}

impl<'a> BuildOutput<'a> {
    /// Output of the build running under `activity`, kept at `log_file`
    /// (none: not kept), remembering `tail_max` last lines, copied to `raw`.
    pub fn new(
        activity: &'a Activity,
        log_file: Option<PathBuf>,
        tail_max: usize,
        raw: Option<&'a dyn RawLog>,
    ) -> BuildOutput<'a> {
        BuildOutput {
            file: log_file.map(LogFile::create),
            file_error: None,
            relay: BuilderLog::new(activity),
            partial: Vec::new(),
            tail: VecDeque::new(),
            tail_max,
            raw,
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        self.relay.line(&text);
        if self.tail_max > 0 && !text.starts_with("@nix ") {
            if self.tail.len() == self.tail_max {
                self.tail.pop_front();
            }
            self.tail.push_back(text.into_owned());
        }
    }

    /// The last lines of output (at most the `tail_max` given).
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    /// Ends the log: relays an unterminated last line and puts the log file
    /// in place. Returns the file's path, or why it could not be written
    /// (the build itself is not failed for that).
    pub fn finish(&mut self) -> Result<Option<PathBuf>, io::Error> {
        match self.finish_later()? {
            Some(pending) => pending.write().map(Some),
            None => Ok(None),
        }
    }

    /// Like [`Self::finish`], but the log file is put in place by
    /// [`PendingLog::write`], which may come later (on another thread):
    /// for the many builders that print little or nothing, making the file
    /// (and its directory) is most of the log's cost.
    pub fn finish_later(&mut self) -> Result<Option<PendingLog>, io::Error> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        if let Some(e) = self.file_error.take() {
            return Err(e);
        }
        Ok(self.file.take().map(PendingLog))
    }
}

impl Write for BuildOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(buf) {
                self.file = None;
                self.file_error = Some(e);
            }
        }
        if let Some(raw) = self.raw {
            raw.write_raw(buf);
        }
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&rest[..i]);
            } else {
                let mut l = std::mem::take(&mut self.partial);
                l.extend_from_slice(&rest[..i]);
                self.line(&l);
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(raw) = self.raw {
            raw.flush_raw();
        }
        Ok(())
    }
}

impl Drop for BuildOutput<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(&f.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::activity::{
        ActivityId, ActivityType, Field, LogSink, Logger, ResultType, Verbosity,
    };
    use std::sync::Arc;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl LogSink for Lines {
        fn start(
            &self,
            _: ActivityId,
            _: Verbosity,
            _: ActivityType,
            _: &str,
            _: &[Field],
            _: ActivityId,
        ) {
        }
        fn stop(&self, _: ActivityId) {}
        fn result(&self, _: ActivityId, ty: ResultType, fields: &[Field]) {
            if let (ResultType::BuildLogLine, Some(Field::Str(s))) = (ty, fields.first()) {
                self.0.lock().unwrap().push(s.clone());
            }
        }
        fn log(&self, _: Verbosity, _: &str) {}
    }

    #[test]
    fn log_path_uses_nix_layout() {
        assert_eq!(
            log_path(
                Path::new("/r"),
                "zb6sxfjfqas8dfyn47h3dan8qxl9dwxw-bad-r1.drv"
            ),
            Path::new("/r/nix/var/log/nix/drvs/zb/6sxfjfqas8dfyn47h3dan8qxl9dwxw-bad-r1.drv.bz2")
        );
    }

    #[test]
    fn output_is_compressed_relayed_by_line_and_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Lines::default());
        let logger = Logger::new(sink.clone(), Verbosity::Info);
        let act = logger.start_build("/nix/store/x.drv", "", 0);
        let mut raw_buf: Vec<u8> = Vec::new();
        let dest = log_path(dir.path(), "abc-x.drv");
        {
            let raw = Mutex::new(&mut raw_buf);
            let mut out = BuildOutput::new(&act, Some(dest.clone()), 2, Some(&raw));
            out.write_all(b"one\ntw").unwrap();
            out.write_all(b"o\r\nthree\nfour").unwrap();
            assert_eq!(out.finish().unwrap(), Some(dest.clone()));
            assert_eq!(out.tail().collect::<Vec<_>>(), ["three", "four"]);
        }
        assert_eq!(*sink.0.lock().unwrap(), ["one", "two", "three", "four"]);
        assert_eq!(raw_buf, b"one\ntwo\r\nthree\nfour");
        // Really bzip2 on disk, and read back whole.
        assert_eq!(&std::fs::read(&dest).unwrap()[..3], b"BZh");
        let mut back = Vec::new();
        assert!(read_log(dir.path(), "abc-x.drv", &mut back).unwrap());
        assert_eq!(back, b"one\ntwo\r\nthree\nfour");
        assert!(!read_log(dir.path(), "zzz-none.drv", &mut back).unwrap());
        // A builder that printed nothing still has a (valid, empty) log.
        let silent = log_path(dir.path(), "qqq-y.drv");
        {
            let mut out = BuildOutput::new(&act, Some(silent.clone()), 2, None);
            assert_eq!(out.finish().unwrap(), Some(silent.clone()));
        }
        let mut back = Vec::new();
        assert!(read_log(dir.path(), "qqq-y.drv", &mut back).unwrap());
        assert!(back.is_empty());
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        enc.write_all(b"").unwrap();
        assert_eq!(enc.finish().unwrap(), EMPTY_BZ2);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
