//! Risk-alert service: keeps every active supervisee's check-in deadlines and every open
//! handover's deadlines (from registry, check-in and handover events), raises exactly one
//! alert per missed deadline, escalates lost contact to the county bureau with the
//! recommended measure, and notifies township offices by signed webhooks and a live stream.
//!
//! Layers: `api` (gRPC handlers) with `request` (validation) and `convert` (protos);
//! `domain` (pure rules); `store` (SQL); `lifecycle` (how an alert change is written and
//! announced). Workers: `projection` (the event consumer), `operations` (alerts on dead
//! letters and stalled consumers of every service), `scheduler` (missed deadlines),
//! `delivery` (webhooks, signed as `notify` says, sent only where `egress` allows) and
//! `fanout` (live streams).

pub mod api;
pub mod convert;
pub mod coverage;
pub mod delivery;
pub mod domain;
pub mod egress;
pub mod fanout;
pub mod inbound;
pub mod lifecycle;
pub mod notify;
pub mod operations;
pub mod projection;
pub mod request;
pub mod scheduler;
pub mod store;
pub mod watchlist;

use std::{sync::Arc, time::Duration};

use domain::{
    compose::Composer,
    destination::Destinations,
    policy::{self, LevelPolicy, Obligation, Policy, Span},
};
use mesh_kit::{
    clock::{SharedClock, SystemClock},
    config::{CommonSettings, ConfigError, FieldKeys, Reader, Source},
    crypto::FieldCrypto,
    grpc,
    host::{Host, Served},
    jurisdiction::Directory,
    lag::LagMonitor,
    rotation::SealedColumn,
};
use mesh_proto::alert::alert_service_server::AlertServiceServer;
use sqlx::migrate::Migrator;
use tokio::sync::broadcast;

/// The risk-alert service's own schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/risk-alert");

/// What risk-alert seals: webhook secrets, re-sealed under the current key after a rotation.
const SEALED_COLUMNS: &[SealedColumn] = &[SealedColumn {
    table: "endpoints",
    key: "endpoint_id",
    column: "secret_sealed",
    context: notify::SECRET_CONTEXT,
}];

/// Conventional gRPC port of risk-alert.
pub const DEFAULT_PORT: u16 = 50055;

/// Risk-alert settings, read from the environment.
pub struct Settings {
    pub common: CommonSettings,
    pub policy: Policy,
    /// The scheduler's fallback poll (`MESH_ALERT_TICK_MS`): it wakes at the next deadline
    /// and on deadline-change notices, and polls in case a notice was lost.
    pub tick: Duration,
    pub delivery: delivery::DeliveryConfig,
    /// Accept plain-http webhook URLs (development only; `MESH_WEBHOOK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Where webhooks may go: public addresses, and the development allow-list
    /// (`MESH_WEBHOOK_ALLOW_PRIVATE`, empty by default).
    pub webhook_destinations: Destinations,
    /// Risk-alert's own key ring sealing webhook secrets at rest (`MESH_FIELD_KEYS`).
    pub field_keys: FieldKeys,
    pub coverage: coverage::CoverageConfig,
    /// How often the consumer's progress is probed, and how long a deadline waits at most
    /// for events in flight (lag-aware firing).
    pub lag_probe: Duration,
    pub lag_settle: Duration,
    pub max_defer: Duration,
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
            report_in_direct: reader.optional("MESH_REPORT_IN_PERIOD_DIRECT", defaults.report_in_direct),
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
        let tick_ms: u64 = reader.optional("MESH_ALERT_TICK_MS", 30_000);
        let delivery = delivery::DeliveryConfig {
            // New alerts wake delivery at once; the poll finds retries that came due.
            tick: Duration::from_millis(reader.optional("MESH_WEBHOOK_POLL_MS", 500u64).max(20)),
            retry: domain::redelivery::RetryPolicy {
                base: Duration::from_millis(reader.optional("MESH_WEBHOOK_RETRY_BASE_MS", 1000u64).max(10)),
                max: reader.seconds("MESH_WEBHOOK_RETRY_MAX_SECS", 300, 1),
                escalate_after: reader
                    .optional("MESH_WEBHOOK_ESCALATE_AFTER_ATTEMPTS", 5u32)
                    .max(1),
                max_attempts: reader.optional("MESH_WEBHOOK_MAX_ATTEMPTS", 50u32).max(1),
                give_up_after: reader.seconds("MESH_WEBHOOK_GIVE_UP_AFTER_SECS", 3 * 86_400, 1),
            },
            request_timeout: reader.seconds("MESH_WEBHOOK_TIMEOUT_SECS", 10, 1),
            lease: reader.seconds("MESH_WEBHOOK_LEASE_SECS", 60, 5),
            concurrency: 64,
            per_endpoint: 4,
            body_retention: reader.seconds("MESH_NOTIFICATION_BODY_RETENTION_SECS", 86_400, 1),
        };
        let allow_http = reader.optional("MESH_WEBHOOK_ALLOW_HTTP", false);
        let webhook_destinations = reader.optional("MESH_WEBHOOK_ALLOW_PRIVATE", Destinations::public_only());
        // The coverage reconciliation asks the registry and the handover service for their
        // truth; without their URLs it cannot run (and says so at start).
        let lag_probe = Duration::from_millis(reader.optional("MESH_LAG_PROBE_MS", 1000u64).max(50));
        // Longer than the outbox relay's longest pause between attempts (10 s), so after an
        // outage every producer has retried before a probe is trusted again.
        let lag_settle = Duration::from_millis(reader.optional("MESH_LAG_SETTLE_MS", 15_000u64));
        let max_defer = reader.seconds("MESH_LAG_MAX_DEFER_SECS", 600, 0);
        let coverage = coverage::CoverageConfig {
            registry_url: reader.maybe("MESH_REGISTRY_URL"),
            handover_url: reader.maybe("MESH_HANDOVER_URL"),
            interval: Duration::from_millis(reader.optional("MESH_COVERAGE_INTERVAL_MS", 20_000u64).max(100)),
            tolerance: Duration::from_millis(reader.optional("MESH_COVERAGE_TOLERANCE_MS", 30_000u64)),
        };
        let field_keys = FieldKeys::read(&mut reader);
        let reads_sources = coverage.registry_url.is_some() || coverage.handover_url.is_some();
        if reads_sources && common.as_ref().is_some_and(|common| common.signing_key.is_none()) {
            reader.problem(
                "MESH_SIGNING_KEY_FILE and MESH_SIGNING_KID are required with MESH_REGISTRY_URL or MESH_HANDOVER_URL \
                 (the reconciliation signs its calls)",
            );
        }
        reader.finish()?;
        match (common, field_keys) {
            (Some(common), Some(field_keys)) => Ok(Self {
                common,
                policy,
                tick: Duration::from_millis(tick_ms.max(20)),
                delivery,
                allow_http,
                webhook_destinations,
                field_keys,
                coverage,
                lag_probe,
                lag_settle,
                max_defer,
            }),
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// A built risk-alert service, ready to run.
pub type Application = Served<AlertServiceServer<api::AlertApi>>;

/// Builds the service on the system clock: database migrated, listener bound.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// Builds the service on `clock` (tests move time instead of sleeping).
pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Application> {
    let mut host = Host::build("risk-alert", &settings.common, &MIGRATOR).await?;
    let topics = &settings.common.topics;
    let lifecycle = lifecycle::Lifecycle {
        topic: topics.alert.clone(),
    };
    let composer = Composer {
        policy: settings.policy,
        tz: Directory::get().time_zone,
    };
    host.reseal(&settings.field_keys, SEALED_COLUMNS);
    let crypto = Arc::new(FieldCrypto::new(
        settings.field_keys.ring,
        settings.field_keys.blind_index,
    ));
    // Live streams subscribe to `live`; webhook delivery is woken by `woken` once per burst
    // of changes (so the fan-out reads alerts only while someone streams them).
    let live = broadcast::Sender::new(1024);
    let egress = egress::Egress::system(settings.webhook_destinations);
    let woken = Arc::new(tokio::sync::Notify::new());

    let watchlist = watchlist::Watchlist {
        policy: settings.policy,
        tz: composer.tz,
    };
    let projection = projection::Projection {
        watchlist,
        clock: clock.clone(),
        lifecycle: lifecycle.clone(),
    };
    let consumed = [
        topics.registry.as_str(),
        topics.checkin.as_str(),
        topics.handover.as_str(),
    ];
    let monitor = LagMonitor::new(
        (&settings.common.kafka_brokers, &settings.common.consumer_group),
        host.pool().clone(),
        &consumed,
        clock.clone(),
        (settings.lag_probe, settings.lag_settle),
    )?;
    let caught_up = monitor.caught_up();
    host.spawn("consumer lag", move |shutdown| monitor.run(shutdown));
    let reconciler = coverage::Reconciler {
        config: settings.coverage.clone(),
        changes: host.changes(),
        projection: projection::Projection {
            watchlist,
            clock: clock.clone(),
            lifecycle: lifecycle.clone(),
        },
        watchlist,
        lifecycle: lifecycle.clone(),
        clock: clock.clone(),
        issuer: host.issuer().cloned(),
        suspects: Default::default(),
        caught_up: Some(caught_up.clone()),
        max_defer: settings.max_defer,
    };
    host.spawn("coverage reconciliation", move |shutdown| {
        reconciler.run(shutdown)
    });
    host.consume(projection, &consumed)?;
    // Apart, so a stalled projection cannot hold up the alert that says it is stalled.
    let operations = operations::Operations {
        clock: clock.clone(),
        lifecycle: lifecycle.clone(),
    };
    host.consume_apart("ops", operations, &[topics.ops.as_str()])?;
    let scheduler = scheduler::Scheduler {
        changes: host.changes(),
        composer,
        clock: clock.clone(),
        lifecycle: lifecycle.clone(),
        tick: settings.tick,
        caught_up: Some(caught_up),
        max_defer: settings.max_defer,
    };
    host.spawn("deadline scheduler", move |shutdown| scheduler.run(shutdown));
    let delivery = delivery::DeliveryWorker::new(
        host.changes(),
        crypto.clone(),
        clock.clone(),
        settings.delivery,
        lifecycle.clone(),
        egress.clone(),
    )?;
    let wake_delivery = woken.clone();
    host.spawn("webhook delivery", move |shutdown| delivery.run(woken, shutdown));
    let (pool, fanned_out, fanout_clock) = (host.pool().clone(), live.clone(), clock.clone());
    host.spawn("alert fan-out", move |shutdown| {
        fanout::run(
            pool,
            fanout_clock,
            fanout::Outlets {
                live: fanned_out,
                delivery: wake_delivery,
            },
            shutdown,
        )
    });

    let api = api::AlertApi {
        changes: host.changes(),
        cursors: host.cursors(),
        clock,
        lifecycle,
        crypto,
        live,
        allow_http: settings.allow_http,
        egress,
    };
    let server = AlertServiceServer::new(api)
        .max_decoding_message_size(grpc::MAX_REQUEST_BYTES)
        .max_encoding_message_size(grpc::MAX_RESPONSE_BYTES);
    Ok(Served::new(host, server))
}
