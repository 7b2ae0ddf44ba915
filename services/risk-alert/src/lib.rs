//! Risk-alert service: keeps every active supervisee's check-in deadlines (from registry and
//! check-in events), raises exactly one alert per missed deadline, escalates lost contact to
//! the county bureau with the recommended measure, and notifies township offices by signed
//! webhooks and a live stream.

pub mod alerts;
pub mod engine;
pub mod notify;
pub mod policy;
pub mod rules;
pub mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mesh_kit::{
    CancellationToken,
    auth::TokenKeys,
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, Reader, Source},
    consumer::{ConsumerConfig, EventConsumer},
    crypto::FieldCrypto,
    db, grpc,
    jurisdiction::Directory,
    outbox::{OutboxSignal, Relay, RelayConfig},
};
use mesh_proto::alert::{AlertChange, alert_service_server::AlertServiceServer};
use policy::{LevelPolicy, Obligation, Policy, Span};
use secrecy::{ExposeSecret, SecretBox};
use sqlx::{PgPool, migrate::Migrator, postgres::PgListener};
use tokio::{net::TcpListener, sync::broadcast};

/// The risk-alert service's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/risk-alert");

/// Conventional gRPC port of risk-alert.
pub const DEFAULT_PORT: u16 = 50055;

/// Risk-alert settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    pub policy: Policy,
    /// How often due deadlines and pending webhooks are looked for (`MESH_ALERT_TICK_MS`).
    pub tick: Duration,
    pub delivery: notify::DeliveryConfig,
    /// Accept plain-http webhook URLs (development only; `MESH_WEBHOOK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Key sealing webhook secrets at rest (`MESH_FIELD_ENCRYPTION_KEY`).
    pub field_encryption_key: SecretBox<[u8; 32]>,
    pub blind_index_key: SecretBox<[u8; 32]>,
}

fn grace(reader: &mut Reader<'_>, name: &str, default: Duration) -> Duration {
    match reader
        .maybe::<String>(name)
        .map(|text| policy::parse_grace(&text))
    {
        None => default,
        Some(Ok(parsed)) => parsed,
        Some(Err(problem)) => {
            reader.problem(format!("{name} is invalid: {problem}"));
            default
        }
    }
}

fn obligation(reader: &mut Reader<'_>, prefix: &str, interval: Span, default_grace: Duration) -> Obligation {
    let interval = reader.optional(&format!("{prefix}_INTERVAL"), interval);
    let grace = grace(reader, &format!("{prefix}_GRACE"), default_grace);
    Obligation { interval, grace }
}

fn level_policy(reader: &mut Reader<'_>, name: &str, default: LevelPolicy) -> LevelPolicy {
    let prefix = format!("MESH_POLICY_{name}");
    let checkin = obligation(reader, &prefix, default.checkin.interval, default.checkin.grace);
    let in_person = match default.in_person {
        Some(in_person) => {
            let off: String = reader.optional(&format!("{prefix}_IN_PERSON_INTERVAL"), String::new());
            if off == "off" {
                None
            } else {
                Some(obligation(
                    reader,
                    &format!("{prefix}_IN_PERSON"),
                    in_person.interval,
                    in_person.grace,
                ))
            }
        }
        None => None,
    };
    LevelPolicy { checkin, in_person }
}

impl Settings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let common = CommonSettings::read(&mut reader, "risk-alert", DEFAULT_PORT);
        let defaults = Policy::default();
        let policy = Policy {
            strict: level_policy(&mut reader, "STRICT", defaults.strict),
            normal: level_policy(&mut reader, "NORMAL", defaults.normal),
            lenient: level_policy(&mut reader, "LENIENT", defaults.lenient),
            absconding_warning: reader.optional("MESH_ABSCONDING_WARNING_AFTER", defaults.absconding_warning),
            absconding_revocation: reader
                .optional("MESH_ABSCONDING_REVOCATION_AFTER", defaults.absconding_revocation),
            handover: policy::HandoverPolicy {
                ack_period: reader.optional("MESH_HANDOVER_ACK_PERIOD", defaults.handover.ack_period),
                report_in_parole: reader
                    .optional("MESH_REPORT_IN_PERIOD_PAROLE", defaults.handover.report_in_parole),
                report_in_temporary_execution: reader.optional(
                    "MESH_REPORT_IN_PERIOD_TEMPORARY_EXECUTION",
                    defaults.handover.report_in_temporary_execution,
                ),
                report_in_sentence_completed: reader.optional(
                    "MESH_REPORT_IN_PERIOD_SENTENCE_COMPLETED",
                    defaults.handover.report_in_sentence_completed,
                ),
                gate_grace: grace(
                    &mut reader,
                    "MESH_HANDOVER_GATE_GRACE",
                    defaults.handover.gate_grace,
                ),
            },
        };
        let tick_ms: u64 = reader.optional("MESH_ALERT_TICK_MS", 500);
        let delivery = notify::DeliveryConfig {
            tick: Duration::from_millis(tick_ms.max(20)),
            retry_base: Duration::from_millis(reader.optional("MESH_WEBHOOK_RETRY_BASE_MS", 1000u64).max(10)),
            retry_max: reader.seconds("MESH_WEBHOOK_RETRY_MAX_SECS", 300, 1),
            request_timeout: reader.seconds("MESH_WEBHOOK_TIMEOUT_SECS", 10, 1),
            lease: reader.seconds("MESH_WEBHOOK_LEASE_SECS", 60, 5),
            batch_size: 50,
        };
        let allow_http = reader.optional("MESH_WEBHOOK_ALLOW_HTTP", false);
        let field_encryption_key = reader.key_32("MESH_FIELD_ENCRYPTION_KEY");
        let blind_index_key = reader.key_32("MESH_BLIND_INDEX_KEY");
        if let (Some(a), Some(b)) = (&field_encryption_key, &blind_index_key)
            && a.expose_secret() == b.expose_secret()
        {
            reader.problem("MESH_FIELD_ENCRYPTION_KEY and MESH_BLIND_INDEX_KEY must differ");
        }
        reader.finish()?;
        match (common, field_encryption_key, blind_index_key) {
            (Some(common), Some(field_encryption_key), Some(blind_index_key)) => Ok(Self {
                common,
                policy,
                tick: Duration::from_millis(tick_ms.max(20)),
                delivery,
                allow_http,
                field_encryption_key,
                blind_index_key,
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built risk-alert service, ready to run.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    keys: TokenKeys,
    relay: Relay,
    engine: Arc<engine::Engine>,
    consumer: EventConsumer<engine::EventHandler>,
    delivery: notify::DeliveryWorker,
    api: service::AlertApi,
    changes: broadcast::Sender<service::Change>,
    tick: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&settings.common, &MIGRATOR).await?;
        let crypto = Arc::new(FieldCrypto::new(
            &settings.field_encryption_key,
            settings.blind_index_key,
        ));
        let signal = OutboxSignal::default();
        let relay = Relay::new(
            pool.clone(),
            RelayConfig::from_settings(&settings.common, "risk-alert"),
            signal.clone(),
        )?;
        let topics = &settings.common.topics;
        let engine = Arc::new(engine::Engine {
            pool: pool.clone(),
            policy: settings.policy,
            tz: Directory::get().time_zone,
            clock: clock.clone(),
            publisher: alerts::Publisher {
                topic: topics.alert.clone(),
            },
            outbox_signal: signal,
        });
        let consumer = EventConsumer::new(
            pool.clone(),
            engine::EventHandler(engine.clone()),
            ConsumerConfig::from_settings(
                &settings.common,
                &[
                    topics.registry.as_str(),
                    topics.checkin.as_str(),
                    topics.handover.as_str(),
                ],
            ),
        )?;
        let delivery = notify::DeliveryWorker::new(pool.clone(), crypto.clone(), clock, settings.delivery)?;
        let (changes, _) = broadcast::channel(1024);
        let api = service::AlertApi::new(engine.clone(), crypto, changes.clone(), settings.allow_http);
        let listener = TcpListener::bind(settings.common.grpc_addr).await?;
        let keys = TokenKeys::new(&settings.common.jwt_secret);
        Ok(Self {
            listener,
            pool,
            keys,
            relay,
            engine,
            consumer,
            delivery,
            api,
            changes,
            tick: settings.tick,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown`; then drains calls, stops the workers, commits consumer
    /// offsets and flushes the outbox.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let fanout = tokio::spawn(fan_out_changes(
            self.pool.clone(),
            self.changes.clone(),
            shutdown.clone(),
        ));
        let scheduler = tokio::spawn(self.engine.clone().run_scheduler(self.tick, shutdown.clone()));
        let consumer = tokio::spawn(self.consumer.run(shutdown.clone()));
        let delivery = tokio::spawn(self.delivery.run(self.changes.subscribe(), shutdown.clone()));
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let service = tonic::service::interceptor::InterceptedService::new(
            AlertServiceServer::new(self.api).max_decoding_message_size(grpc::MAX_REQUEST_BYTES),
            self.keys.interceptor(),
        );
        tracing::info!(addr = %self.listener.local_addr()?, "risk-alert listening");
        let served = grpc::serve(self.listener, service, shutdown.clone()).await;
        shutdown.cancel();
        for task in [fanout, scheduler, consumer, delivery] {
            task.await?;
        }
        relay.await?;
        self.pool.close().await;
        served
    }
}

/// Forwards alert changes committed by any replica (PostgreSQL NOTIFY) to this replica's
/// live streams.
async fn fan_out_changes(
    pool: PgPool,
    changes: broadcast::Sender<service::Change>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for alert changes; retrying");
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(error) = listener.listen(alerts::CHANGES_CHANNEL).await {
            tracing::warn!(error = %error, "LISTEN failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(200);
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return,
                notification = listener.recv() => notification,
            };
            let Ok(notification) = notification else { break };
            let Some((id, change)) = notification.payload().split_once(':') else {
                continue;
            };
            let (Ok(id), Ok(change)) = (id.parse(), change.parse::<i32>()) else {
                continue;
            };
            let Ok(change) = AlertChange::try_from(change) else {
                continue;
            };
            let Ok(mut conn) = pool.acquire().await else {
                continue;
            };
            if let Ok(Some(alert)) = alerts::load(&mut conn, id).await {
                // No subscribers is fine: nobody is watching.
                let _ = changes.send((change, alert));
            }
        }
    }
}
