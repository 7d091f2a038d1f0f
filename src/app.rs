//! The composition root: reading a configuration and checking all of it,
//! building the counter store, and the compiled [`App`] (defined by the
//! listen stage that serves it, so the server never imports its caller).

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, Invalid};
use crate::error::Error;
use crate::store::{CounterStore, RedisSettings, RedisStore};

/// Read a configuration file and check all of it — its structure and
/// what it means — reporting every problem with its line, as `palisade
/// check` does.
pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigError> {
    crate::config::load_file_with(path, &mut |config| App::check(config))
}

/// The same for configuration text; `file` names it in errors.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    crate::config::parse_str_with(text, file, &mut |config| App::check(config))
}

/// Problems found while compiling `config`, with their lines when the
/// configuration was read from text.
pub fn located(config: &Config, file: &str, invalid: Vec<Invalid>) -> ConfigError {
    let text = config.source.0.as_deref();
    let mut problems: Vec<_> = invalid.into_iter().map(|i| i.locate(text)).collect();
    problems.sort_by_key(|problem| (problem.file.is_some(), problem.line.unwrap_or(usize::MAX)));
    ConfigError::Invalid { file: file.to_string(), problems }
}

pub use crate::listen::App;

/// The counter store `config` asks for: Redis when `[store]` names one
/// (connecting in the background if it is not reachable yet), else in
/// process. Built once per process; reloads keep it.
pub async fn build_store(config: &Config, clock: SharedClock) -> Result<Arc<CounterStore>, Error> {
    let settings = RedisSettings::from_config(config).map_err(|problems| {
        Error::config(problems.into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))
    })?;
    Ok(Arc::new(match settings {
        Some(settings) => CounterStore::Redis(RedisStore::start(settings, clock).await?),
        None => CounterStore::Local(crate::store::local_store(config, clock)),
    }))
}
