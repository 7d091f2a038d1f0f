//! The lightweight classifier: palisade's own model file format, inference
//! over it, the features it reads, a trainer and the `model` stage.
//!
//! - [`file`]: the versioned JSON model file (feature schema and its hash,
//!   trees as flat node arrays, base score, link, training metadata) and
//!   the compiled, allocation-free [`Model`] evaluated per request (its
//!   trees laid out for speed in `forest`: complete trees walked without
//!   a branch per split);
//! - [`lightgbm`]: an importer for LightGBM's text model format;
//! - [`features`]: the documented, versioned feature table, computed from
//!   the request view and counter readings, live and in replay alike;
//! - [`train`]: gradient-boosted trees (default) and logistic regression,
//!   with held-out metrics by source;
//! - [`stage`]: the stage that scores requests (`[[model]]` in the
//!   configuration), in shadow or enforce mode;
//! - `value_cache`: per-thread memory of the work the features do on
//!   header values many clients share (the user agent, the header names,
//!   the fingerprint);
//!
//! `palisade train` (captures replayed into rows, then [`train`]) is in
//! [`crate::replay::train`], so this module stays below the pipeline.

pub mod features;
pub mod file;
mod forest;
pub mod lightgbm;
pub mod stage;
pub mod train;
mod value_cache;

pub use features::{FEATURE_COUNT, FeatureVector, schema_hash};
pub use file::{Contribution, MAX_TOP, Model, ModelError, ModelErrorKind, ModelFile, TopContributions};
pub use forest::Leaves;
pub use stage::{ModelReport, ModelStage};
