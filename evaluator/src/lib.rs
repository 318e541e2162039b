//! b3-evaluator: the Nix language.
//!
//! Owns: parsing (via rnix), lazy evaluation, values and string contexts, every
//! builtin, and Nix-compatible printing and error reporting.
pub mod ast;
pub mod builtins;
pub mod driver;
pub mod error;
pub mod eval;
pub mod float_fmt;
pub mod nix_cli;
pub mod parse_cache;
pub mod parse_print;
pub mod pos;
pub mod print;
pub mod regex;
pub mod storepath;
pub mod value;

pub use error::{ErrorKind, EvalError};
pub use eval::{Ev, Lint, Options};
pub use value::Value;
