//! The Nix language conformance harness: runs a folder of upstream-layout
//! tests against `b3 instantiate` and prints `N passed, N failed`.

fn main() {}
