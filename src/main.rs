//! The `palisade` command: `serve`, `check`, `demo`, `replay`, `explain`, `import` and `train`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use palisade::app::App;
use palisade::clock::{SharedClock, SystemClock};
use palisade::config::{Config, ConfigError, load_file, unspanned};
use palisade::decision_log::DecisionLog;
use palisade::error::Error;
use palisade::listen::{Running, Server};
use palisade::metrics::Metrics;
use palisade::request_id::RequestIds;
use palisade::store::{CounterStore, RedisSettings};

/// mimalloc instead of the system allocator: forwarding a request allocates
/// and frees a few dozen small blocks (header names and values, bodies,
/// futures), and glibc's malloc and free were ~7 % of palisade's CPU under
/// load; mimalloc's thread-local free lists cut the instructions per
/// request by ~10 % (see Cargo.toml and benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "An inline filter that keeps bots and credential stuffing off login and payment APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in front of an upstream application.
    Serve(ServeArgs),
    /// Check a configuration file and report every problem with its line.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Replay captured requests through the pipeline and report what it decides
    /// (optionally against a baseline configuration, with gates for CI).
    Replay(palisade::replay::cli::ReplayArgs),
    /// Explain one request stage by stage: route, identity, signals, score, action.
    Explain(palisade::replay::explain::ExplainArgs),
    /// Make a capture from a HAR file or an nginx access log (secrets redacted).
    Import(palisade::replay::cli::ImportArgs),
    /// Train a classifier model on labelled captures (or import a LightGBM model).
    Train(palisade::replay::train::TrainArgs),
    /// Start palisade in front of a built-in demo login app on loopback.
    Demo {
        /// Where palisade listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the admin listener (metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream base URL, e.g. http://127.0.0.1:3000 (overrides server.upstream).
    #[arg(long)]
    upstream: Option<String>,
    /// Admin address for /metrics and /healthz (overrides server.admin).
    #[arg(long)]
    admin: Option<String>,
    /// Trusted proxy network; repeat for several (replaces server.trusted_proxies).
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// Share counters through this Redis, e.g. redis://127.0.0.1:6379 (overrides store.redis_url).
    #[arg(long)]
    redis: Option<String>,
}

impl ServeArgs {
    /// The file (or defaults) with the flags applied on top. Only its
    /// structure is checked here: compiling it (once, at start or reload)
    /// reports the rest with lines.
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => load_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = &self.listen {
            config.server.listen = unspanned(listen.clone());
        }
        if let Some(upstream) = &self.upstream {
            config.server.upstream = unspanned(upstream.clone());
        }
        if let Some(admin) = &self.admin {
            config.server.admin = unspanned(admin.clone());
        }
        if !self.trusted_proxies.is_empty() {
            config.server.trusted_proxies = self.trusted_proxies.iter().cloned().map(unspanned).collect();
        }
        if let Some(redis) = &self.redis {
            config.store.redis_url = unspanned(redis.clone());
            config.store.redis_cluster.clear();
        }
        Ok(config)
    }

    fn source_name(&self) -> String {
        self.config.as_ref().map_or_else(|| "(defaults and flags)".to_string(), |p| p.display().to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve(args) => run_async(serve(args)),
        Command::Demo { listen, admin } => run_async(demo(listen, admin)),
        Command::Replay(args) => palisade::replay::cli::replay(args),
        Command::Explain(args) => palisade::replay::explain::explain(args),
        Command::Import(args) => palisade::replay::cli::import(args),
        Command::Train(args) => palisade::replay::train::train_command(args),
    }
}

/// The process's own runtime: signals, the admin listener, store
/// maintenance and reloads. Client connections are served by the worker
/// threads [`Server::bind_and_start`] starts, each with a runtime of its own.
fn run_async(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("palisade: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Threads serving client connections: `TOKIO_WORKER_THREADS` when set
/// (the variable tokio itself reads, kept from when palisade ran one
/// multi-thread runtime), else one per core.
fn worker_count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|workers| workers.trim().parse::<usize>().ok())
        .filter(|workers| *workers > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn check(path: &std::path::Path) -> ExitCode {
    match palisade::app::load_file(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} routes, {} partners, {} signature rules)",
                path.display(),
                config.routes.len(),
                config.partners.len(),
                palisade::signatures::SignatureSet::from_config(&config).map_or(0, |set| set.rule_count())
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            let count = error.problems().len();
            if count > 0 {
                eprintln!("{}: {count} problem{} found", path.display(), if count == 1 { "" } else { "s" });
            }
            ExitCode::FAILURE
        }
    }
}

/// Compile a configuration, printing problems the way `check` does.
fn compile(config: &Config, source: &str, store: Arc<CounterStore>, clock: SharedClock) -> Result<App, Error> {
    match App::build(config, store, clock, RequestIds::random_seed()) {
        Ok(app) => {
            // Capture mode: open the file now, so a bad path stops a start or a reload.
            if let Some(capture) = app.lifecycle.capture()
                && let Err(error) = capture.open()
            {
                return Err(Error::write(format!(
                    "palisade: cannot open the capture file {}: {error}",
                    capture.path().display()
                )));
            }
            Ok(app)
        }
        Err(invalid) => Err(Error::config(palisade::app::located(config, source, invalid).to_string())),
    }
}

/// Start serving. The "listening" line is the caller's to print, once
/// everything a client may ask of the admin API (a reload) is in place:
/// scripts and tests take that line as the sign that palisade is ready.
async fn start(config: &Config, source: &str) -> Option<(Running, Arc<CounterStore>, SharedClock, String)> {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = match palisade::app::build_store(config, clock.clone()).await {
        Ok(store) => store,
        // Bad store settings: `compile` reports them with their lines.
        Err(_) => Arc::new(CounterStore::Local(palisade::store::local_store(config, clock.clone()))),
    };
    let app = compile(config, source, store.clone(), clock.clone()).map_err(|problems| eprintln!("{problems}")).ok()?;
    let metrics = Arc::new(Metrics::default());
    let log = match DecisionLog::open(&config.decision_log, metrics.clone()) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("palisade: cannot open the decision log {:?}: {error}", config.decision_log.path);
            return None;
        }
    };
    let upstream = app.proxy.upstream.clone();
    let scheme = if app.proxy.tls.is_some() { "https" } else { "http" };
    match Server::new(app, log, metrics).bind_and_start(worker_count()).await {
        Ok(running) => {
            let announce = format!(
                "palisade listening on {scheme}://{} (admin http://{}), forwarding to {upstream}",
                running.proxy_addr, running.admin_addr
            );
            Some((running, store, clock, announce))
        }
        Err(error) => {
            eprintln!("palisade: {error}");
            None
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let source = args.source_name();
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let Some(mut signals) = Signals::install() else { return ExitCode::FAILURE };
    let Some((running, store, clock, announce)) = start(&config, &source).await else { return ExitCode::FAILURE };
    let args = Arc::new(args);
    let store_at_shutdown = store.clone();
    let started_store = Arc::new(RedisSettings::from_config(&config).ok().flatten());
    // SIGHUP and the admin API's reload: re-read the file, re-apply the
    // flags; keep the running configuration if anything is wrong. On a
    // blocking thread: this thread's runtime also serves the admin API and
    // the Redis connection, which compiling a configuration must not stall.
    let reloader: palisade::admin::Reloader<App> = Arc::new(move || {
        let (args, source, store, clock) = (args.clone(), source.clone(), store.clone(), clock.clone());
        let started_store = started_store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let config = args.load().map_err(|e| Error::config(e.to_string()))?;
                if RedisSettings::from_config(&config).ok().flatten() != *started_store {
                    eprintln!(
                        "palisade: [store] Redis settings take effect on restart; the running connection is kept"
                    );
                }
                compile(&config, &source, store, clock)
            })
            .await
            .map_err(|e| Error::config(format!("the reload task failed: {e}")))?
        })
    });
    running.set_reloader(reloader.clone());
    eprintln!("{announce}");
    signals.wait(&running, async || reloader().await).await;
    eprintln!("palisade: shutting down, letting in-flight requests finish");
    let stopped = running.shutdown().await;
    // Counter writes still queued for Redis (login outcomes, bans) go out
    // before the process ends, if Redis answers within a second.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), store_at_shutdown.flush()).await;
    drop(stopped);
    eprintln!("palisade: stopped");
    ExitCode::SUCCESS
}

async fn demo(listen: String, admin: String) -> ExitCode {
    let app_addr = match palisade::demo::start_login_app("127.0.0.1:0".parse().expect("literal address")).await {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("palisade demo: cannot start the demo app: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = Config::default();
    config.server.listen = unspanned(listen);
    config.server.admin = unspanned(admin);
    config.server.upstream = unspanned(format!("http://{app_addr}"));
    let Some(mut signals) = Signals::install() else { return ExitCode::FAILURE };
    let Some((running, _, _, announce)) = start(&config, "demo").await else { return ExitCode::FAILURE };
    eprintln!("{announce}");
    println!("{}", palisade::demo::instructions(running.proxy_addr, running.admin_addr));
    signals.wait(&running, async || Err(Error::config("the demo has no configuration file to reload"))).await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT and SIGHUP, installed before palisade announces its
/// address so a signal sent right after the announcement is never lost.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(term), Ok(int), Ok(hup)) => Some(Signals { term, int, hup }),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                eprintln!("palisade: cannot install signal handlers: {error}");
                None
            }
        }
    }

    /// Wait for SIGTERM or SIGINT; reload on SIGHUP.
    async fn wait(&mut self, running: &Running, reload: impl AsyncFn() -> Result<App, Error>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match reload().await {
                    Ok(app) => {
                        running.reload(app);
                        eprintln!("palisade: configuration reloaded");
                    }
                    Err(error) => {
                        running.record_failed_reload();
                        eprintln!("palisade: reload failed, keeping the running configuration: {error}");
                    }
                },
            }
        }
    }
}
