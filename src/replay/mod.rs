//! Replay: captured traffic through the pipeline, to see what a
//! configuration (or a change to one) does before it goes live.
//!
//! - [`run`]: the engine (a pipeline on a manual clock) and the captures
//!   read in time order;
//! - `headers`: a capture's header blocks turned into `http` types once each;
//! - [`report`]: requests by action, detection and route; confusion
//!   matrix, precision and recall against the captures' labels;
//! - [`diff`]: what changes between a baseline configuration and a new one;
//! - [`expect`], [`gates`]: conditions a replay must meet (for CI);
//! - [`explain`]: one request, stage by stage;
//! - [`cli`]: the `replay`, `explain` and `import` commands;
//! - [`train`]: the `train` command (a replay into a model's training rows).

pub mod cli;
pub mod diff;
pub mod expect;
pub mod explain;
pub mod gates;
mod headers;
pub mod html;
pub mod report;
pub mod run;
pub mod train;

pub use run::{Engine, Inputs, Meta, Prepared};
