//! A configuration compiled into everything a running palisade needs: the
//! pipeline and the proxy settings. Building one validates the whole
//! configuration, so `check`, `serve` and reload all accept the same files.

use std::sync::Arc;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Invalid};
use crate::listen::ProxySettings;
use crate::pipeline::{Pipeline, PipelineBuilder};
use crate::request_id::RequestIds;
use crate::store::{CounterStore, LocalStore};

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
        match (pipeline, proxy, capture) {
            (Ok(pipeline), Ok(proxy), Ok(capture)) => Ok(App { pipeline, proxy, capture }),
            (pipeline, proxy, capture) => {
                let mut problems = pipeline.err().unwrap_or_default();
                problems.extend(proxy.err().unwrap_or_default());
                problems.extend(capture.err().unwrap_or_default());
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
}
