//! b3-builder: realising derivations.
//!
//! Owns the platform interface ([`platform`]: OS errors, locks, process
//! control, sandboxed spawning, with `linux` and `unsupported` siblings), the
//! Linux build sandbox described as data ([`sandbox`]), and the Nix builder
//! semantics on top of it ([`env`]: the environment, passAsFile and
//! structured attrs Nix gives a builder; [`job`]: one build from inputs to
//! outputs), and realisation into the local store: [`schedule`] (the
//! derivation graph, parallel builds and substitutions), [`step`] (one
//! derivation: locks, build, [`checks`], placing the outputs),
//! [`registrar`] (registering them while later builds run), [`buildlog`]
//! (kept logs) and [`realise`] (settings, errors, entry points,
//! `StoreBuild`).

pub mod buildlog;
pub mod builtin_fetchurl;
pub mod checks;
pub mod drv;
pub mod env;
pub mod job;
pub mod platform;
pub mod realise;
mod recycle;
pub mod registrar;
pub mod sandbox;
pub mod schedule;
pub mod step;
pub mod timing;
pub mod vfs_build;
mod workers;
