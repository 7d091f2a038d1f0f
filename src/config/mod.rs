//! Configuration: the TOML schema, its built-in defaults, and loading with
//! errors that name the file, key and line.
//!
//! The schema types here are plain data (serde, `deny_unknown_fields`).
//! Turning them into the compiled structures the pipeline runs on (route
//! tables, CIDR sets, rule automata) is the job of each stage's builder, so a
//! configuration can be checked without starting anything.

mod load;
mod schema;
mod validate;

pub(crate) use load::line_of;
pub use load::{ConfigError, ConfigProblem, Invalid, load_file, parse_str};
pub use schema::*;
