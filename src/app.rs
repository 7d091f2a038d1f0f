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
    /// The admin API's token and the keyed hash that turns an address into
    /// its ban key.
    pub admin: AdminSettings,
}

/// What the admin API needs from the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub token: Option<AdminToken>,
    pub hasher: crate::credential::KeyHasher,
}

/// The admin API's bearer token; never printed.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<secret>)")
    }
}

impl AdminSettings {
    /// `[admin] token`, else `PALISADE_ADMIN_TOKEN`, else none.
    pub fn from_config(config: &Config) -> Self {
        let token = Some(config.admin.token.trim().to_string())
            .filter(|token| !token.is_empty())
            .or_else(|| std::env::var("PALISADE_ADMIN_TOKEN").ok().map(|t| t.trim().to_string()))
            .filter(|token| !token.is_empty())
            .map(AdminToken);
        AdminSettings { token, hasher: crate::credential::KeyHasher::from_config(config) }
    }
}

/// Put `new` in place of the running configuration; requests already
/// running keep the one they started with. SIGHUP and the admin API both
/// come here.
pub fn swap_in(current: &arc_swap::ArcSwap<App>, new: App, metrics: &crate::metrics::Metrics) {
    let old = current.load();
    if old.proxy.listen != new.proxy.listen || old.proxy.admin != new.proxy.admin {
        tracing::warn!("listen and admin addresses change only on restart; keeping the bound ones");
    }
    if old.proxy.tls.is_some() != new.proxy.tls.is_some() {
        tracing::warn!("TLS turned on or off: new connections on the listen address use the new setting");
    }
    current.store(Arc::new(new));
    metrics.reloads_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            (Ok(pipeline), Ok(proxy), Ok(capture), Ok(_)) => {
                Ok(App { pipeline, proxy, capture, admin: AdminSettings::from_config(config) })
            }
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
