//! `b3 env -qa -j N` on Unix: the walk over the top-level attributes split
//! between forked processes that share the evaluated package set.
//!
//! Values are `Rc`s and cannot cross threads, so the evaluation is shared
//! the way a fork shares memory. This process evaluates the package set and
//! walks the first share of its attributes (which evaluates what most
//! packages build on: stdenv, the compilers, the bootstrap). Then it keeps
//! `jobs - 1` children busy, each forked for one further share, and walks
//! shares itself in between: what it evaluates stays, so every later child
//! starts from a richer copy-on-write base and re-evaluates less of what
//! earlier shares already evaluated. Once this process has grown past
//! [`BASE_BUDGET`] it stops walking and keeps `jobs` children busy, so no
//! process grows past that base plus one share's own work. Each child sends
//! its findings back through a pipe and `_exit`s. Look-alike findings of
//! different shares are settled by one more child that re-reads their
//! paths (see `dedup`).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use b3_evaluator::value::Attrs;

use super::{dedup, Found, Row, Walk};

/// How large (resident) this process may grow by walking shares itself
/// before it only hands shares to children. Bounds the peak memory of the
/// query: a child is at most this base plus its share.
const BASE_BUDGET: u64 = 640 << 20;

/// Runs the walk of `top` (whose walked attributes are `names`) in `shares`
/// shares with at most `jobs` processes at a time; the rows in walk order.
pub(super) fn collect(
    walk: &Walk,
    top: &Attrs,
    names: &[usize],
    jobs: usize,
    shares: usize,
) -> Result<Vec<Row>, String> {
    let shares = shares.clamp(1, names.len().max(1));
    let share = |c: usize| &names[names.len() * c / shares..names.len() * (c + 1) / shares];
    let mut results: Vec<Option<Result<Vec<Found>, String>>> = vec![None; shares];
    results[0] = Some(Ok(walk.run_share(top, share(0), 0)?));
    let mut live: Vec<Child> = Vec::new();
    let mut next = 1;
    let mut failed = false;
    let mut walking = jobs > 1 && resident_bytes().is_some_and(|r| r < BASE_BUDGET);
    while (next < shares && !failed) || !live.is_empty() {
        let slots = if walking { jobs - 1 } else { jobs.max(1) };
        while live.len() < slots && next < shares && !failed {
            let c = next;
            live.push(spawn(walk, c, |w| {
                encode_found(&w.run_share(top, share(c), c))
            })?);
            next += 1;
        }
        let finished = if walking && next < shares && !failed {
            let c = next;
            next += 1;
            let r = walk.run_share(top, share(c), c);
            failed |= r.is_err();
            results[c] = Some(r);
            walking = resident_bytes().is_some_and(|r| r < BASE_BUDGET);
            wait_ready(&mut live, 0)?
        } else {
            wait_ready(&mut live, -1)?
        };
        for (c, bytes) in finished {
            let r = bytes.and_then(|b| decode_found(&b).unwrap_or_else(|| Err(garbled(c))));
            failed |= r.is_err();
            results[c] = Some(r);
        }
    }
    // The first error in walk order is the one a serial walk meets.
    let mut all = Vec::new();
    for r in results.into_iter().flatten() {
        all.extend(r?);
    }
    dedup(all, walk.setup.cols.attr_path, |groups| {
        resolve_in_child(walk, groups)
    })
}

/// This process's resident memory, from `/proc/self/statm` (Linux); `None`
/// where that is not known, and then this process walks no further shares.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn garbled(c: usize) -> String {
    format!("error: the evaluation process of share {c} sent a garbled answer\n")
}

/// Identities of each group's paths, all read in one forked child (which
/// evaluates each path to an attribute set, not the derivations' paths).
fn resolve_in_child(
    walk: &Walk,
    groups: &[Vec<String>],
) -> Result<Vec<Vec<Option<usize>>>, String> {
    let mut live = vec![spawn(walk, usize::MAX, |w| {
        let mut e = Enc::default();
        e.u64(groups.len() as u64);
        for g in groups {
            e.u64(g.len() as u64);
            for p in g {
                // 0 is no identity: a live attribute set is never at 0.
                e.u64(w.resolve(p).map_or(0, |id| id as u64));
            }
        }
        e.0
    })?];
    let mut got = None;
    while !live.is_empty() {
        for (_, bytes) in wait_ready(&mut live, -1)? {
            got = Some(bytes?);
        }
    }
    let bytes = got.ok_or_else(|| garbled(usize::MAX))?;
    let mut d = Dec(&bytes);
    let decode = |d: &mut Dec| -> Option<Vec<Vec<Option<usize>>>> {
        let n = d.u64()?;
        let mut out = Vec::new();
        for _ in 0..n {
            let k = d.u64()?;
            let mut ids = Vec::new();
            for _ in 0..k {
                let id = d.u64()?;
                ids.push((id != 0).then_some(id as usize));
            }
            out.push(ids);
        }
        Some(out)
    };
    decode(&mut d).ok_or_else(|| garbled(usize::MAX))
}

/// A forked child and what it has sent so far.
struct Child {
    pid: libc::pid_t,
    fd: OwnedFd,
    tag: usize,
    buf: Vec<u8>,
}

/// Forks a child that runs `body` on this process's evaluator and sends
/// back the bytes it returns.
fn spawn(walk: &Walk, tag: usize, body: impl FnOnce(&Walk) -> Vec<u8>) -> Result<Child, String> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "error: cannot make a pipe: {}\n",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptors were just made and are owned here alone.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A share's findings fit in a 1 MiB pipe, so a child that finishes
    // while this process walks a share of its own need not wait to be read
    // (best effort: the default 64 KiB is only slower).
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ on a pipe this function owns.
    unsafe {
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    let _ = std::io::stderr().flush();
    // SAFETY: the child only goes on evaluating on this thread (the other
    // threads of this process are parked in joins and hold no locks the
    // evaluator takes) and leaves by `_exit`, running no destructors that
    // would touch the parent's resources.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "error: cannot fork an evaluation process: {}\n",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        drop(rd);
        walk.ev.store_io.after_fork();
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(walk))) {
            Ok(bytes) => {
                let mut f = std::fs::File::from(wr);
                match f.write_all(&bytes) {
                    Ok(()) => 0,
                    Err(_) => 1,
                }
            }
            Err(_) => 101,
        };
        // The files this child lowered that no process had cached: `_exit`
        // runs no destructor that would write them.
        b3_evaluator::parse_cache::flush();
        walk.ev.store_io.finish_child();
        let _ = std::io::stderr().flush();
        // SAFETY: ends this child at once; its memory is a copy.
        unsafe { libc::_exit(code) }
    }
    drop(wr);
    Ok(Child {
        pid,
        fd: rd,
        tag,
        buf: Vec::new(),
    })
}

/// What one finished child sent (or why it failed), with its tag.
type Finished = (usize, Result<Vec<u8>, String>);

/// Reads what the children have sent so far (so none blocks on a full
/// pipe) and returns what each finished child sent, by tag, forgetting
/// those children. With `timeout` -1 it waits until at least one child has
/// finished; with 0 it only takes what is ready.
fn wait_ready(live: &mut Vec<Child>, timeout: libc::c_int) -> Result<Vec<Finished>, String> {
    let mut done = Vec::new();
    let mut rounds = 0;
    while done.is_empty() && !live.is_empty() && (timeout < 0 || rounds == 0) {
        rounds += 1;
        let mut pfds: Vec<libc::pollfd> = live
            .iter()
            .map(|c| libc::pollfd {
                fd: c.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("error: waiting for evaluation processes: {e}\n"));
        }
        let mut finished = Vec::new();
        for (k, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let c = &mut live[k];
            let mut chunk = [0u8; 1 << 16];
            // SAFETY: reads into `chunk`, at most its length.
            let m = unsafe { libc::read(c.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            match m {
                0 => finished.push(k),
                m if m > 0 => c.buf.extend_from_slice(&chunk[..m as usize]),
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => finished.push(k),
            }
        }
        for k in finished.into_iter().rev() {
            let c = live.swap_remove(k);
            let mut status = 0;
            // SAFETY: `c.pid` is a child of this process not yet reaped.
            let r = loop {
                let r = unsafe { libc::waitpid(c.pid, &mut status, 0) };
                if r >= 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break r;
                }
            };
            let ok = r == c.pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            done.push((
                c.tag,
                if ok {
                    Ok(c.buf)
                } else {
                    Err(format!(
                        "error: an evaluation process failed (wait status {status})\n"
                    ))
                },
            ));
        }
    }
    Ok(done)
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.0.split_first_chunk::<8>()?;
        self.0 = t;
        Some(u64::from_le_bytes(*h))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        String::from_utf8(h.to_vec()).ok()
    }
}

/// A share's result as sent through the pipe.
fn encode_found(r: &Result<Vec<Found>, String>) -> Vec<u8> {
    let mut e = Enc::default();
    match r {
        Err(msg) => {
            e.u64(1);
            e.str(msg);
        }
        Ok(found) => {
            e.u64(0);
            e.u64(found.len() as u64);
            for f in found {
                e.u64(f.order.0 as u64);
                e.u64(f.order.1 as u64);
                e.str(&f.path);
                e.str(&f.name);
                e.u64(f.ptr as u64);
                match &f.columns {
                    None => e.u64(u64::MAX),
                    Some(cells) => {
                        e.u64(cells.len() as u64);
                        for c in cells {
                            e.str(c);
                        }
                    }
                }
            }
        }
    }
    e.0
}

/// The inverse of [`encode_found`]; `None` if the bytes are cut short.
fn decode_found(b: &[u8]) -> Option<Result<Vec<Found>, String>> {
    let mut d = Dec(b);
    if d.u64()? == 1 {
        return Some(Err(d.str()?));
    }
    let n = d.u64()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let order = (d.u64()? as usize, d.u64()? as usize);
        let path = d.str()?;
        let name = d.str()?;
        let ptr = d.u64()? as usize;
        let k = d.u64()?;
        let columns = if k == u64::MAX {
            None
        } else {
            let mut cells = Vec::new();
            for _ in 0..k {
                cells.push(d.str()?);
            }
            Some(cells)
        };
        out.push(Found {
            order,
            path,
            name,
            ptr,
            columns,
        });
    }
    d.0.is_empty().then_some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_survive_the_pipe_encoding() {
        let found = vec![
            Found {
                order: (3, 0),
                path: "a.b".into(),
                name: "b-1.0".into(),
                ptr: 0xdead_beef,
                columns: Some(vec!["b-1.0".into(), "/nix/store/x-b.drv".into()]),
            },
            Found {
                order: (3, 1),
                path: "c".into(),
                name: "c".into(),
                ptr: 8,
                columns: None,
            },
        ];
        let b = encode_found(&Ok(found.clone()));
        assert_eq!(decode_found(&b), Some(Ok(found)));
        let e = encode_found(&Err("error: boom\n".into()));
        assert_eq!(decode_found(&e), Some(Err("error: boom\n".into())));
        // Cut short: no answer rather than a partial one.
        assert_eq!(decode_found(&b[..b.len() - 3]), None);
    }
}
