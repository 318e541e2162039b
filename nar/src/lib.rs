//! b3-nar: the Nix ARchive format, streaming both ways.
//!
//! Owns: writing NARs from a filesystem path or an in-memory tree, a pull-based
//! reader that validates every byte (sync and async), restoring a NAR into a
//! directory atomically, and hashing a NAR while it streams. Pure format code:
//! no store, no database, no network.
