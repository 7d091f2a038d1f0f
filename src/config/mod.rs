//! Configuration: the TOML schema, its built-in defaults, and loading with
//! errors that name the file, key and line.
//!
//! The schema types here are plain data (serde, `deny_unknown_fields`).
//! Turning them into the compiled structures the pipeline runs on (route
//! tables, CIDR sets, rule automata) is the job of each stage's builder, so a
//! configuration can be checked without starting anything.
//!
//! This module is a leaf: it depends on no other part of palisade. The
//! whole check (structure and meaning) is [`crate::app::load_file`], which
//! hands the compiler to [`load_file_with`].

mod load;
pub mod ranges;
mod schema;

pub(crate) use load::line_of;
pub use load::{ConfigError, ConfigProblem, Invalid, Validate, load_file, load_file_with, parse_str, parse_str_with};
pub use schema::*;
