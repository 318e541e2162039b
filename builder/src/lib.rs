//! b3-builder: realising derivations.
//!
//! Will own: scheduling builds of a derivation closure, the Linux sandbox (user,
//! mount, PID, network, IPC and UTS namespaces, entered without root), the
//! platform interface that keeps OS-specific code in sibling `linux`/`windows`
//! modules, build logs, and `StoreBuild` for the local store. Not written yet.
