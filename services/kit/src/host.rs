//! The service host: everything a mesh service runs besides its own rules. It connects and
//! migrates the database, binds the gRPC listener, runs the outbox relay, the service's
//! consumers and background workers, serves the API behind the token interceptor and the
//! per-caller write limit with health and reflection, and on shutdown drains calls, stops
//! the workers (consumers commit their offsets), flushes the outbox last and closes the
//! pool. A service's `lib.rs` then
//! says only what is its own: its settings, its handlers, its consumers and workers.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use sqlx::{PgPool, migrate::Migrator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use crate::{
    auth::{TokenIssuer, TokenVerifier, service_issuer},
    change::Changes,
    config::{CommonSettings, FieldKeys},
    consumer::{ConsumerConfig, EventConsumer, Handler, inbox},
    db,
    grpc::{self, rate::WriteLimiter},
    outbox::{OutboxSignal, Relay, RelayConfig},
    page::Cursors,
    readiness::Readiness,
    rotation::{Rotation, SealedColumn},
};

/// A generated gRPC server (`XServiceServer<Api>`) the host can serve.
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

type Worker = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A service's runtime, built before its handlers (which take its pool, changes and cursors).
pub struct Host {
    name: &'static str,
    common: CommonSettings,
    pool: PgPool,
    listener: TcpListener,
    verifier: TokenVerifier,
    /// This service's own key, for the calls it makes to others.
    issuer: Option<TokenIssuer>,
    signal: OutboxSignal,
    relay: Relay,
    workers: Vec<(&'static str, Worker)>,
    /// Whether the inbox retention worker runs: one per service, with its first consumer.
    sweeps_inbox: bool,
    /// What the health service reports: NOT_SERVING while a consumer is stuck.
    readiness: Readiness,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Connects and migrates `name`'s database (its `migrator` plus the kit's tables),
    /// prepares the relay and binds the listener. Fails before binding if the database or
    /// the producer cannot be set up.
    pub async fn build(
        name: &'static str,
        common: &CommonSettings,
        migrator: &Migrator,
    ) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(common, migrator).await?;
        let signal = OutboxSignal::default();
        let relay = Relay::new(
            pool.clone(),
            RelayConfig::from_settings(common, name),
            signal.clone(),
        )?;
        let keys = common
            .token_keys
            .load()
            .await
            .map_err(|problem| anyhow::anyhow!("token key set: {problem}"))?;
        let verifier = TokenVerifier::new(name, keys, common.token_max_lifetime);
        let issuer = match &common.signing_key {
            None => None,
            Some(key) => {
                let pem = tokio::fs::read(&key.file).await.map_err(|error| {
                    anyhow::anyhow!("MESH_SIGNING_KEY_FILE {}: {error}", key.file.display())
                })?;
                let issuer =
                    TokenIssuer::from_pem(&pem, &key.kid, &service_issuer(name)).map_err(|problem| {
                        anyhow::anyhow!("MESH_SIGNING_KEY_FILE {}: {problem}", key.file.display())
                    })?;
                Some(issuer)
            }
        };
        let listener = TcpListener::bind(common.grpc_addr).await?;
        let mut host = Self {
            name,
            common: common.clone(),
            pool,
            listener,
            verifier: verifier.clone(),
            issuer,
            signal,
            relay,
            workers: Vec::new(),
            sweeps_inbox: false,
            readiness: Readiness::default(),
        };
        let (source, every) = (common.token_keys.clone(), common.token_keys_refresh);
        host.spawn("token key set", move |shutdown| {
            verifier.keep_fresh(source, every, shutdown)
        });
        Ok(host)
    }

    /// This service's signing key (`MESH_SIGNING_KEY_FILE`), for its calls to others.
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn settings(&self) -> &CommonSettings {
        &self.common
    }

    /// Writers of state changes with their events and audit records.
    pub fn changes(&self) -> Changes {
        Changes::new(self.pool.clone(), self.signal.clone())
    }

    /// The page-cursor codec of this service's list RPCs.
    pub fn cursors(&self) -> Cursors {
        Cursors::new(&self.common.cursor_secret)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Consumes `topics` in the service's group with `handler`; events the handler writes to
    /// the outbox leave as soon as each record's transaction commits. Records it can never
    /// apply are set aside in this service's `kit_dead_letters`, replayed on request.
    pub fn consume<H: Handler>(&mut self, handler: H, topics: &[&str]) -> anyhow::Result<()> {
        let config = ConsumerConfig::from_settings(&self.common, self.name, topics);
        self.run_consumer(handler, config)
    }

    /// [`Host::consume`] in a group of its own, `<service group>.<suffix>`: for a consumer
    /// whose progress must not wait on the service's main one (the operations topic).
    pub fn consume_apart<H: Handler>(
        &mut self,
        suffix: &str,
        handler: H,
        topics: &[&str],
    ) -> anyhow::Result<()> {
        let mut config = ConsumerConfig::from_settings(&self.common, self.name, topics);
        config.group_id = format!("{}.{suffix}", config.group_id);
        self.run_consumer(handler, config)
    }

    fn run_consumer<H: Handler>(&mut self, handler: H, config: ConsumerConfig) -> anyhow::Result<()> {
        let consumer = EventConsumer::new(self.pool.clone(), handler, config)?
            .waking(self.signal.clone())
            .reporting_to(self.readiness.clone());
        self.spawn("consumer", move |shutdown| consumer.run(shutdown));
        if !std::mem::replace(&mut self.sweeps_inbox, true) {
            let (pool, retention) = (self.pool.clone(), self.common.inbox_retention);
            self.spawn("inbox retention", move |shutdown| {
                inbox::run(pool, retention, shutdown)
            });
        }
        Ok(())
    }

    /// Runs a background worker from start to shutdown; it must return soon after
    /// `shutdown` is cancelled.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, worker: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .push((name, Box::new(move |shutdown| Box::pin(worker(shutdown)))));
    }

    /// Re-seals in the background the values of `columns` still under older keys of the
    /// service's ring (`crate::rotation`): after a rotation, nothing else is needed.
    pub fn reseal(&mut self, keys: &FieldKeys, columns: &'static [SealedColumn]) {
        let rotation = Rotation::new(self.pool.clone(), keys.ring.clone(), columns, keys.rotation_batch);
        self.spawn("field key rotation", move |shutdown| rotation.run(shutdown));
    }

    /// Serves `service` until `shutdown`; then drains calls, stops the workers, flushes the
    /// outbox and closes the pool.
    pub async fn serve<S: GrpcService>(self, service: S, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let workers: Vec<_> = self
            .workers
            .into_iter()
            .map(|(name, worker)| (name, tokio::spawn(worker(shutdown.clone()))))
            .collect();
        // The guard inside the interceptor: it reads the caller the interceptor verified.
        let limiter = self
            .common
            .write_rate
            .map(|rate| Arc::new(WriteLimiter::new(rate)));
        let service = tonic::service::interceptor::InterceptedService::new(
            grpc::Guarded::new(service, limiter),
            self.verifier.interceptor(),
        );
        tracing::info!(addr = %self.listener.local_addr()?, service = self.name, "listening");
        let served = grpc::serve(self.listener, service, self.readiness, shutdown.clone()).await;
        shutdown.cancel();
        for (name, worker) in workers {
            if let Err(error) = worker.await {
                tracing::error!(worker = name, error = %error, "worker failed");
            }
        }
        // Last, so it flushes what the workers wrote while stopping.
        relay.await?;
        self.pool.close().await;
        served
    }
}

/// A built service: its host and its gRPC API, database migrated and listener bound, ready
/// to run. Each service's `Application` is this type over its generated server.
pub struct Served<S> {
    host: Host,
    service: S,
}

impl<S> std::fmt::Debug for Served<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl<S: GrpcService> Served<S> {
    pub fn new(host: Host, service: S) -> Self {
        Self { host, service }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.local_addr()
    }

    pub fn pool(&self) -> &PgPool {
        self.host.pool()
    }

    /// Serves until `shutdown`; then drains calls, stops the workers (consumers commit
    /// their offsets), flushes the outbox and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.host.serve(self.service, shutdown).await
    }
}
