//! b3-builder: realising derivations.
//!
//! Owns the platform interface ([`platform`]: OS errors, locks, process
//! control, sandboxed spawning, with `linux` and `unsupported` siblings), the
//! Linux build sandbox described as data ([`sandbox`]), and the Nix builder
//! semantics on top of it ([`env`]: the environment, passAsFile and
//! structured attrs Nix gives a builder; [`job`]: one build from inputs to
//! outputs).

pub mod builtin_fetchurl;
pub mod drv;
pub mod env;
pub mod job;
pub mod platform;
pub mod realise;
pub mod sandbox;
