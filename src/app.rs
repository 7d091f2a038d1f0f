//! A configuration compiled into everything a running palisade needs: the
//! pipeline and the proxy settings. Building one validates the whole
//! configuration, so `check`, `serve` and reload all accept the same files.

use std::sync::Arc;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Invalid};
use crate::listen::ProxySettings;
use crate::pipeline::{Pipeline, PipelineBuilder};
use crate::request_id::RequestIds;
use crate::store::{CounterStore, LocalStore, RedisSettings, RedisStore};

#[derive(Debug)]
pub struct App {
    pub pipeline: Pipeline,
    pub proxy: ProxySettings,
    /// Capture mode (`[capture]`), when configured.
    pub capture: Option<Arc<crate::capture::CaptureSink>>,
}

impl App {
    /// Compile `config`, sharing `store` (counters survive reloads).
    pub fn build(
        config: &Config,
        store: Arc<CounterStore>,
        clock: SharedClock,
        request_id_seed: u64,
    ) -> Result<App, Vec<Invalid>> {
        let proxy = ProxySettings::from_config(config);
        let pipeline = PipelineBuilder::new(config).build(store, clock, RequestIds::new(request_id_seed));
        let capture = crate::capture::CaptureSink::from_config(config);
        // The store is built once at start (see `build_store`); compiling
        // checks its settings so `check` and reload report them.
        let redis = RedisSettings::from_config(config);
        match (pipeline, proxy, capture, redis) {
            (Ok(pipeline), Ok(proxy), Ok(capture), Ok(_)) => Ok(App { pipeline, proxy, capture }),
            (pipeline, proxy, capture, redis) => {
                let mut problems = pipeline.err().unwrap_or_default();
                problems.extend(proxy.err().unwrap_or_default());
                problems.extend(capture.err().unwrap_or_default());
                problems.extend(redis.err().unwrap_or_default());
                Err(problems)
            }
        }
    }

    /// Every problem in `config`, as `palisade check` reports them.
    pub fn check(config: &Config) -> Vec<Invalid> {
        let clock: SharedClock = Arc::new(SystemClock);
        let store = Arc::new(CounterStore::Local(LocalStore::new(clock.clone())));
        App::build(config, store, clock, 0).err().unwrap_or_default()
    }

    /// The counter store `config` asks for: Redis when `[store]` names
    /// one (connecting in the background if it is not reachable yet),
    /// else in process. Built once per process; reloads keep it.
    pub async fn build_store(config: &Config, clock: SharedClock) -> Result<Arc<CounterStore>, String> {
        let settings = RedisSettings::from_config(config).map_err(|problems| {
            problems.into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; ")
        })?;
        Ok(Arc::new(match settings {
            Some(settings) => CounterStore::Redis(RedisStore::start(settings, clock).await?),
            None => CounterStore::Local(LocalStore::new(clock)),
        }))
    }
}
