//! Network namespaces that pre-made sandboxes take in turn (as root).
//!
//! Setting up a network namespace costs the kernel about 0.3 ms of CPU
//! (the loopback device, its IPv4 and IPv6 configuration and their sysctl
//! tables), and tearing it down about as much again in a kernel worker
//! after its sandbox is gone. Builds of a few milliseconds on a small
//! machine spend a tenth of its CPU on that. A [`NetRing`] keeps the
//! namespaces its sandboxes were made in and hands them to the next ones:
//!
//! - A namespace serves one sandbox at a time. It comes back to the ring
//!   when its sandbox's process is reaped ([`NetLease`] is dropped then),
//!   and every process of the build is gone by then: they die with PID 1 of
//!   their PID namespace, whose exit completes only after theirs.
//! - It is taken again only if nothing of the last build is left in it:
//!   no socket, and no TCP connection in `TIME_WAIT` (which would keep its
//!   port for a minute). Otherwise it is dropped and a new one made.
//! - The build cannot change it: it is owned by the host's user namespace,
//!   in which a build has no capability, so its loopback (brought up when
//!   it is made), addresses, routes and settings stay as they were.
//!
//! Making and joining one takes privilege in the process's own user
//! namespace (`CAP_SYS_ADMIN`). As root, the pool's filling thread does
//! both and clones the sandbox; without root, the [`Keeper`] does, in a
//! user namespace of its own. If neither can, [`NetRing::enter`] answers
//! `None` and every sandbox makes a namespace of its own, as a fresh
//! sandbox does.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::keeper::Keeper;
use crate::platform::OsError;

/// Where a ring's namespaces are made and joined.
#[derive(Clone, Copy)]
pub(super) enum Host<'a> {
    /// The calling thread (as root): what it clones gets the namespace.
    ThisThread,
    /// The keeper (without root): the sandboxes it clones get it.
    Keeper(&'a Keeper),
}

impl Host<'_> {
    fn make(self) -> Result<OwnedFd, OsError> {
        match self {
            Host::ThisThread => make_one(),
            Host::Keeper(k) => k.make_net(),
        }
    }

    fn join(self, fd: &OwnedFd) -> bool {
        match self {
            // SAFETY: setns on a descriptor we own; it changes only this
            // thread's network namespace.
            Host::ThisThread => unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 },
            Host::Keeper(k) => k.join_net(fd).is_ok(),
        }
    }

    /// Whether the namespace it is in holds no socket (see
    /// [`holds_no_sockets`]).
    fn is_clean(self) -> bool {
        let stat = match self {
            Host::ThisThread => holds_no_sockets(SOCKSTAT),
            Host::Keeper(k) => holds_no_sockets(&k.sockstat()),
        };
        matches!(stat, Ok(true))
    }
}

/// Network namespaces kept for later sandboxes; see the module docs.
#[derive(Default)]
pub(super) struct NetRing {
    free: Mutex<Vec<OwnedFd>>,
    /// Set once making one failed: this process cannot.
    unable: AtomicBool,
    made: AtomicU64,
    reused: AtomicU64,
}

/// A namespace of a [`NetRing`] in use by one sandbox: it goes back to the
/// ring when dropped, which must happen only once that sandbox's process
/// has been reaped.
pub(super) struct NetLease {
    fd: Option<OwnedFd>,
    ring: Arc<NetRing>,
}

impl Drop for NetLease {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.ring
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(fd);
        }
    }
}

/// The calling thread's network namespace's socket counts. Its tables of
/// sockets (`net/tcp` and the like) would do, but reading one walks the
/// host's whole TCP hash table (about a millisecond here).
const SOCKSTAT: &str = "/proc/thread-self/net/sockstat";

impl NetRing {
    /// Moves `host` into a network namespace of the ring (a kept one if
    /// one is clean, else a new one with its loopback up), so that a
    /// sandbox it clones without `CLONE_NEWNET` has that namespace to
    /// itself; `None` (`host` unchanged or in some namespace of the ring
    /// that nothing else uses) if it cannot make one.
    pub(super) fn enter(self: &Arc<Self>, host: Host<'_>) -> Option<NetLease> {
        if self.unable.load(Ordering::Relaxed) {
            return None;
        }
        loop {
            let kept = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(fd) = kept else { break };
            if host.join(&fd) && host.is_clean() {
                self.reused.fetch_add(1, Ordering::Relaxed);
                return Some(self.lease(fd));
            }
            // Dropped: the kernel tears it down once its last user is gone.
        }
        match host.make() {
            Ok(fd) => {
                self.made.fetch_add(1, Ordering::Relaxed);
                Some(self.lease(fd))
            }
            Err(_) => {
                // Not privileged: no later attempt would do better.
                self.unable.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    fn lease(self: &Arc<Self>, fd: OwnedFd) -> NetLease {
        NetLease {
            fd: Some(fd),
            ring: self.clone(),
        }
    }

    /// How many namespaces it made, and how many times it handed out a
    /// kept one.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.made.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed),
        )
    }
}

/// A new network namespace for the calling thread, its loopback up, as a
/// descriptor.
fn make_one() -> Result<OwnedFd, OsError> {
    // SAFETY: unshare of the network namespace changes only this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(OsError::last("making a network namespace"));
    }
    // SAFETY: the function makes and closes its own socket.
    if unsafe { super::child::loopback_up() } < 0 {
        return Err(OsError::last("bringing up the loopback interface"));
    }
    std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| OsError::from_io("opening the new network namespace", &e))
}

/// Whether a network namespace (`sockstat`: its socket counts, as seen by
/// a task in it) holds no socket of a
/// process (of any kind) and no TCP connection waiting out its close
/// (`TIME_WAIT`). A socket being freed still counts, and an unreadable or
/// unexpected count means no.
fn holds_no_sockets(sockstat: &str) -> std::io::Result<bool> {
    let mut text = String::with_capacity(256);
    std::fs::File::open(sockstat)?.read_to_string(&mut text)?;
    Ok(no_sockets_in(&text))
}

/// [`holds_no_sockets`] on the text of `sockstat`: its first lines read
/// `sockets: used N` and `TCP: inuse N orphan N tw N ...`. Only `used`
/// and `tw` count this namespace alone (`orphan` counts the host's).
fn no_sockets_in(sockstat: &str) -> bool {
    let field = |line: &str, name: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    let mut lines = sockstat.lines();
    let used = lines
        .next()
        .filter(|l| l.starts_with("sockets:"))
        .and_then(|l| field(l, "used"));
    let waiting = lines
        .next()
        .filter(|l| l.starts_with("TCP:"))
        .and_then(|l| field(l, "tw"));
    used == Some(0) && waiting == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inode of the calling thread's network namespace.
    fn current() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("own namespace")
            .ino()
    }

    /// Runs `f` on a thread of its own: the ring moves its caller between
    /// namespaces.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f)
            .join()
            .expect("the test thread panicked")
    }

    #[test]
    fn only_a_namespace_without_sockets_or_closing_connections_counts_as_clean() {
        let stat = |used: u32, tw: u32| {
            format!(
                "sockets: used {used}\nTCP: inuse 0 orphan 3 tw {tw} alloc 9 mem 4\n\
                 UDP: inuse 0 mem 0\n"
            )
        };
        assert!(no_sockets_in(&stat(0, 0)));
        assert!(!no_sockets_in(&stat(1, 0)));
        assert!(!no_sockets_in(&stat(0, 1)));
        assert!(!no_sockets_in(""));
        assert!(!no_sockets_in("sockets: used 0\nUDP: inuse 0 mem 0\n"));
        assert!(!no_sockets_in(
            "sockets: used x\nTCP: inuse 0 orphan 0 tw 0\n"
        ));
    }

    #[test]
    fn a_namespace_given_back_clean_is_taken_again_and_one_with_a_socket_is_not() {
        let ring = Arc::new(NetRing::default());
        let host = current();
        let r = ring.clone();
        let outcome = on_thread(move || {
            // None without the privilege to make one.
            let first = r.enter(Host::ThisThread)?;
            let a = current();
            // Only one sandbox at a time: a namespace in use is not handed
            // out again.
            let second = r.enter(Host::ThisThread).expect("a second namespace");
            let b = current();
            drop(second);
            drop(first);
            // The last one given back is the first taken.
            let again = r.enter(Host::ThisThread).expect("a kept namespace");
            let reused = current();
            // A socket left in it: it is not handed out again.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback is up");
            drop(again);
            let next = r.enter(Host::ThisThread).expect("another namespace");
            let after = current();
            drop(listener);
            drop(next);
            Some((a, b, reused, after, r.counts()))
        });
        let Some((a, b, reused, after, (made, kept))) = outcome else {
            // Not privileged: sandboxes make their own, as before.
            assert!(ring.unable.load(Ordering::Relaxed));
            return;
        };
        assert_ne!(a, host);
        assert_ne!(a, b);
        assert_eq!(reused, a);
        assert_ne!(after, reused, "the namespace with a socket was handed out");
        assert_eq!(kept, 2, "a and the one given back before the socket");
        assert_eq!(made, 2);
        // This thread never moved.
        assert_eq!(current(), host);
    }
}
