//! Semantic checks of a parsed configuration.
//!
//! There is no second copy of the rules here: validation compiles the
//! configuration with the same builders the server runs, so
//! `palisade check` accepts exactly what `palisade serve` accepts.

use super::load::Invalid;
use super::schema::Config;

pub fn validate(config: &Config) -> Vec<Invalid> {
    crate::app::App::check(config)
}
