//! palisade: an inline filter in front of login and payment APIs that
//! separates people and allowlisted partners from bots and credential
//! stuffing.
//!
//! A request flows one way through explicit stages, each a module:
//! [`listen`] (sockets, limits, forwarding) → [`view`] (one normalized,
//! read-only picture of the request) → [`identify`] (partner allowlist) →
//! [`detect`] (independent pure detectors) → [`decide`] (score and action)
//! → act and observe ([`listen`], [`decision_log`], [`metrics`]). State
//! lives behind the [`store`] interface and time behind [`clock`], so the
//! same [`pipeline`] runs behind the proxy, in replay and in benches.

pub mod admin;
pub mod app;
pub mod capture;
pub mod cidr;
pub mod clock;
pub mod config;
pub mod credential;
pub mod decide;
pub mod decision_headers;
pub mod decision_log;
pub mod demo;
pub mod detect;
pub mod error;
pub mod fingerprint;
pub mod form;
pub mod identify;
pub mod ja4;
pub mod json_pointer;
pub mod keyed_hash;
pub mod lifecycle;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod network;
pub mod normalize;
pub mod outcome;
pub mod payment;
pub mod pipeline;
pub mod replay;
pub mod request_id;
pub mod routes;
pub mod session;
pub mod signal;
pub mod signatures;
pub mod store;
pub mod thread_cache;
#[cfg(feature = "tower")]
pub mod tower;
pub mod view;
pub mod words;

#[cfg(test)]
mod test_support;
