//! b3-evaluator: the Nix language.
//!
//! Owns: parsing (via rnix), lazy evaluation, values and string contexts, every
//! builtin, and Nix-compatible printing and error reporting.
pub mod float_fmt;
pub mod regex;
