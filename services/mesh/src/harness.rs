//! The mesh as one fixture: fresh topics on a broker, a fresh database per service, the
//! service binaries started with their environment, typed gRPC clients, tokens for any
//! caller, event taps and a township's webhook receiver. The end-to-end tests, the demo and
//! the benchmark drive the same binaries the same way through it. A [`Mesh`] cleans up after
//! itself: dropping it, also when a test fails or panics, kills the processes it runs and
//! drops the databases it created.

mod broker;
mod events;
mod process;
mod requests;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
    time::Duration,
};

use anyhow::{Context, bail};
use base64::Engine;
use chrono::Utc;
use mesh_kit::{
    auth::{
        Caller, TokenIssuer,
        keygen::{GeneratedKey, SERVICES, jwks},
    },
    config::{FIELD_RING, HANDOVER_TRANSIT_RING, Reader, read_ring},
    kafka::Topics,
    keyring::KeyRing,
};
use mesh_proto::{
    alert::{self as alert_pb, alert_service_client::AlertServiceClient},
    checkin::checkin_service_client::CheckinServiceClient,
    handover::handover_service_client::HandoverServiceClient,
    placement::placement_service_client::PlacementServiceClient,
    registry::registry_service_client::RegistryServiceClient,
};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};
use tonic::transport::Channel;

pub use self::{
    broker::TansuProcess,
    events::{EventTap, ReceivedEvent, producer, publish_event, publish_record},
    process::{ServiceProcess, binary_path},
    requests::{
        HOME_COUNTY, HOME_TOWNSHIP, PRISON_A, authorized, check_in, county_bureau, home_jurisdiction,
        jurisdiction, new_checkin, notice, officer, prison, record_checkin, report_in_request,
        supervisee_snapshot, today, township_office, whole_seconds_ago,
    },
};
use crate::receiver::Receiver;

/// The secret of the township webhook endpoint [`Mesh::register_webhook`] registers.
pub const WEBHOOK_SECRET: &str = "township-620702001-webhook-secret-0123456789";

/// Where the local infrastructure is (from the environment `scripts/infra` sets up).
#[derive(Debug, Clone)]
pub struct Infra {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// PostgreSQL server URL without a database name.
    pub database_url_base: String,
}

impl Infra {
    pub fn from_env() -> Self {
        Self {
            brokers: std::env::var("MESH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
            database_url_base: std::env::var("MESH_DATABASE_URL_BASE")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned()),
        }
    }

    pub fn database_url(&self, database: &str) -> String {
        format!("{}/{database}", self.database_url_base.trim_end_matches('/'))
    }

    /// A connection to the server's `postgres` database, to create and drop others.
    async fn admin_connection(&self) -> anyhow::Result<sqlx::PgConnection> {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.database_url("postgres"))
            .await
            .context("connecting to PostgreSQL (is it running? see scripts/infra)")
    }

    /// Creates a new, uniquely named database (one per test).
    pub async fn fresh_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("test_{prefix}_{}", uuid::Uuid::new_v4().simple());
        self.ensure_database(&name).await?;
        Ok(name)
    }

    pub async fn database_exists(&self, database: &str) -> anyhow::Result<bool> {
        let mut conn = self.admin_connection().await?;
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await?,
        )
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        if !self.database_exists(database).await? {
            // Identifiers cannot be bound; callers pass generated names only.
            sqlx::query(&format!("CREATE DATABASE \"{}\"", database.replace('"', "")))
                .execute(&mut self.admin_connection().await?)
                .await?;
        }
        Ok(())
    }

    /// Drops `database` if it exists, disconnecting whoever is still connected to it.
    pub async fn drop_database(&self, database: &str) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            database.replace('"', "")
        ))
        .execute(&mut self.admin_connection().await?)
        .await?;
        Ok(())
    }

    /// Creates a topic; an existing topic is fine. (Never delete topics: Tansu 0.6 deletes
    /// them all.)
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }
}

/// How to set up a [`Mesh`]; [`MeshBuilder::start`] sets it up.
pub struct MeshBuilder {
    infra: Option<Infra>,
    partitions: i32,
    log_dir: PathBuf,
    topics: Option<Topics>,
    env: HashMap<String, Vec<(String, String)>>,
    receiver_listening: bool,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            infra: None,
            partitions: 2,
            // Kept after the run, for reading a failed test's service logs.
            log_dir: std::env::temp_dir().join("mesh-e2e-logs"),
            topics: None,
            env: HashMap::new(),
            receiver_listening: true,
        }
    }
}

impl MeshBuilder {
    /// The broker and PostgreSQL server (default [`Infra::from_env`]), e.g. a private broker
    /// that a test stops and restarts.
    pub fn infra(mut self, infra: Infra) -> Self {
        self.infra = Some(infra);
        self
    }

    /// Partitions of every topic (default 2; 1 where a test checks the total order of events).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Where the services' logs go (default `mesh-e2e-logs` in the temp directory).
    pub fn log_dir(mut self, log_dir: &Path) -> Self {
        log_dir.clone_into(&mut self.log_dir);
        self
    }

    /// The topic names (default fresh, unique ones).
    pub fn topics(mut self, topics: Topics) -> Self {
        self.topics = Some(topics);
        self
    }

    /// Extra environment for every process of `service` the mesh launches: seconds-scale
    /// policies, a log level, a timeout.
    pub fn env(mut self, service: &str, env: &[(&str, &str)]) -> Self {
        self.env.entry(service.to_owned()).or_default().extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        self
    }

    /// Reserves the webhook receiver's port without listening, so deliveries fail until
    /// [`Receiver::listen`] (a township's system that is down).
    pub fn receiver_down(mut self) -> Self {
        self.receiver_listening = false;
        self
    }

    /// Creates the topics (the services' and the operations topic); starts nothing.
    pub async fn build(self) -> anyhow::Result<Mesh> {
        let infra = self.infra.unwrap_or_else(Infra::from_env);
        let topics = self.topics.unwrap_or_else(|| Topics::unique("test"));
        for topic in topics.all() {
            infra.create_topic(topic, self.partitions).await?;
        }
        Ok(Mesh {
            infra,
            secrets: Secrets::random()?,
            topics,
            log_dir: self.log_dir,
            databases: HashMap::new(),
            created: Vec::new(),
            env: self.env,
            running: Vec::new(),
            pools: Mutex::default(),
            producer: OnceLock::new(),
            receiver: None,
        })
    }

    /// Builds the mesh and starts `services` in order, each on a fresh database (a name given
    /// twice starts two replicas sharing one). With risk-alert comes a webhook receiver.
    pub async fn start(self, services: &[&str]) -> anyhow::Result<Mesh> {
        let listening = self.receiver_listening;
        let mut mesh = self.build().await?;
        if services.contains(&"risk-alert") {
            let mut receiver = Receiver::reserve(WEBHOOK_SECRET)?;
            if listening {
                receiver.listen().await?;
            }
            mesh.receiver = Some(receiver);
        }
        for service in services {
            mesh.launch(service).await?;
        }
        Ok(mesh)
    }
}

/// A process the mesh runs itself, with a channel for its clients.
struct Running {
    process: ServiceProcess,
    channel: Channel,
}

/// Infrastructure, secrets and topics shared by the services of one test, demo or benchmark
/// run, and the processes it runs.
///
/// Dropping it kills those processes and drops the databases it created. Topics stay: Tansu
/// 0.6 deletes every topic when one is deleted, which would pull the shared broker's topics
/// from under every other test running on it.
pub struct Mesh {
    pub infra: Infra,
    pub secrets: Secrets,
    pub topics: Topics,
    log_dir: PathBuf,
    /// The database of each service (and of anything else that asked for one).
    databases: HashMap<String, String>,
    /// The databases this mesh created, dropped with it; not those given by `use_database`.
    created: Vec<String>,
    env: HashMap<String, Vec<(String, String)>>,
    /// Oldest first; clients talk to a service's oldest running process.
    running: Vec<Running>,
    pools: Mutex<HashMap<String, sqlx::PgPool>>,
    producer: OnceLock<FutureProducer>,
    receiver: Option<Receiver>,
}

impl Mesh {
    /// A mesh of `services` with the defaults of [`MeshBuilder`].
    pub async fn start(services: &[&str]) -> anyhow::Result<Self> {
        Self::builder().start(services).await
    }

    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// Uses `database` for `service` instead of a fresh one; the mesh leaves it in place.
    pub fn use_database(&mut self, service: &str, database: &str) {
        self.databases.insert(service.to_owned(), database.to_owned());
    }

    /// The database of `service` in this mesh (created on first use; any name will do, for
    /// a test that needs a database but no service).
    pub async fn database(&mut self, service: &str) -> anyhow::Result<String> {
        if let Some(name) = self.databases.get(service) {
            return Ok(name.clone());
        }
        let name = self.infra.fresh_database(&service.replace('-', "_")).await?;
        self.created.push(name.clone());
        self.databases.insert(service.to_owned(), name.clone());
        Ok(name)
    }

    /// A pool on the database of `service`, which must have one already (it is started, or
    /// [`Mesh::database`] made one). Connects on first use.
    pub fn pool(&self, service: &str) -> anyhow::Result<sqlx::PgPool> {
        let database = self
            .databases
            .get(service)
            .with_context(|| format!("{service} has no database in this mesh"))?;
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(service) {
            return Ok(pool.clone());
        }
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy(&self.infra.database_url(database))?;
        pools.insert(service.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Starts the `binary` of `service` with the mesh's environment plus `extra_env`, for the
    /// caller to own. Several replicas of one service share its database.
    pub async fn spawn(
        &mut self,
        service: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let database = self.database(service).await?;
        let mut env = service_env(&self.infra, &self.secrets, service, &database);
        for (key, value) in self.topics.env() {
            env.insert(key.to_owned(), value.to_owned());
        }
        // Replicas of one service in this mesh share a consumer group; meshes running side by
        // side on one broker must not, or they would rebalance each other's partitions.
        env.insert(
            "MESH_CONSUMER_GROUP".to_owned(),
            format!("{service}-{}", self.topics.registry),
        );
        // Risk-alert's coverage reconciliation reads the registry's and the handover
        // service's truth, when the mesh runs them (started before it).
        if service == "risk-alert" {
            env.extend(self.secrets.risk_alert_env());
            // The webhook receivers of the tests, the demo and the benchmark listen on
            // loopback, which risk-alert refuses in production; they open that address
            // alone (a test of the refusal sets the variable empty).
            env.insert("MESH_WEBHOOK_ALLOW_PRIVATE".to_owned(), "127.0.0.1/32".to_owned());
            for (source, variable) in [
                ("registry", "MESH_REGISTRY_URL"),
                ("handover", "MESH_HANDOVER_URL"),
            ] {
                if let Some(running) = self.replicas(source).next() {
                    env.insert(variable.to_owned(), running.process.endpoint());
                }
            }
        }
        for (key, value) in extra_env {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        ServiceProcess::spawn(service, &env, &self.log_dir).await
    }

    /// Starts (another) process of `service` with the environment the builder gave it, run by
    /// the mesh: after a [`Mesh::kill`] or [`Mesh::stop`], the restarted service.
    pub async fn launch(&mut self, service: &str) -> anyhow::Result<()> {
        let env = self.env.get(service).cloned().unwrap_or_default();
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let process = self.spawn(service, &env).await?;
        let channel = process.channel().await?;
        self.running.push(Running { process, channel });
        Ok(())
    }

    fn replicas<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Running> + use<'a> {
        let service = service.to_owned();
        self.running
            .iter()
            .filter(move |running| running.process.name == service)
    }

    fn take(&mut self, service: &str) -> Vec<Running> {
        let (taken, kept) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|running| running.process.name == service);
        self.running = kept;
        taken
    }

    /// The oldest running process of `service` (its log, its address).
    ///
    /// # Panics
    /// If the mesh runs no `service`: a test set up wrongly.
    pub fn process(&self, service: &str) -> &ServiceProcess {
        match self.replicas(service).next() {
            Some(running) => &running.process,
            None => panic!("{service} is not running in this mesh"),
        }
    }

    /// A channel to replica `replica` (0 the oldest) of `service`.
    ///
    /// # Panics
    /// If the mesh runs no such replica: a test set up wrongly.
    pub fn channel(&self, service: &str, replica: usize) -> Channel {
        match self.replicas(service).nth(replica) {
            Some(running) => running.channel.clone(),
            None => panic!("{service} replica {replica} is not running in this mesh"),
        }
    }

    pub fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel("registry", 0))
    }

    pub fn checkin(&self) -> CheckinServiceClient<Channel> {
        CheckinServiceClient::new(self.channel("checkin", 0))
    }

    pub fn handover(&self) -> HandoverServiceClient<Channel> {
        HandoverServiceClient::new(self.channel("handover", 0))
    }

    pub fn placement(&self) -> PlacementServiceClient<Channel> {
        PlacementServiceClient::new(self.channel("placement", 0))
    }

    pub fn risk_alert(&self) -> AlertServiceClient<Channel> {
        AlertServiceClient::new(self.channel("risk-alert", 0))
    }

    /// SIGKILLs every process of `service` the mesh runs: a crash.
    pub async fn kill(&mut self, service: &str) -> anyhow::Result<()> {
        for running in self.take(service) {
            running.process.kill().await?;
        }
        Ok(())
    }

    /// Stops every process of `service` the mesh runs; each must exit successfully within
    /// 20 s of SIGTERM.
    pub async fn stop(&mut self, service: &str) -> anyhow::Result<()> {
        stop_gracefully(self.take(service)).await
    }

    /// Stops every process the mesh runs, newest first, as [`Mesh::stop`] does.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        stop_gracefully(std::mem::take(&mut self.running)).await
    }

    pub fn token(&self, caller: &Caller) -> String {
        self.secrets.token(caller)
    }

    pub fn tap(&self, topic: &str) -> anyhow::Result<EventTap> {
        EventTap::from_beginning(&self.infra, topic)
    }

    /// Publishes an event to `topic` as its producing service would (see [`publish_event`]);
    /// returns its event id.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        event_type: &str,
        payload: &[u8],
    ) -> anyhow::Result<uuid::Uuid> {
        publish_event(self.producer()?, topic, key, event_type, payload).await
    }

    /// The mesh's producer, made on first use, for publishing to its broker.
    pub fn producer(&self) -> anyhow::Result<&FutureProducer> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer);
        }
        let created = producer(&self.infra.brokers)?;
        Ok(self.producer.get_or_init(|| created))
    }

    /// The township's webhook receiver (started with risk-alert).
    ///
    /// # Panics
    /// If risk-alert was not among the services the mesh started.
    pub fn receiver(&self) -> &Receiver {
        self.receiver
            .as_ref()
            .unwrap_or_else(|| panic!("no webhook receiver: start the mesh with risk-alert"))
    }

    /// The receiver, to start listening late.
    ///
    /// # Panics
    /// If risk-alert was not among the services the mesh started.
    pub fn receiver_mut(&mut self) -> &mut Receiver {
        self.receiver
            .as_mut()
            .unwrap_or_else(|| panic!("no webhook receiver: start the mesh with risk-alert"))
    }

    /// Registers the receiver as the home township office's alert endpoint, signed with
    /// [`WEBHOOK_SECRET`], taking one notification per POST.
    pub async fn register_webhook(&self) -> anyhow::Result<()> {
        self.register_batched_webhook(0).await
    }

    /// Registers the receiver as the home township office's alert endpoint, signed with
    /// [`WEBHOOK_SECRET`], taking batches of up to `max_batch_size` notifications (0 or 1:
    /// one per POST).
    pub async fn register_batched_webhook(&self, max_batch_size: u32) -> anyhow::Result<()> {
        let request = alert_pb::RegisterEndpointRequest {
            jurisdiction: Some(home_jurisdiction()),
            url: self.receiver().url(),
            secret: WEBHOOK_SECRET.into(),
            description: "东街司法所值班系统".into(),
            max_batch_size,
        };
        let token = self.token(&township_office(HOME_TOWNSHIP));
        self.risk_alert()
            .register_endpoint(authorized(request, &token))
            .await?;
        Ok(())
    }
}

/// Stops `processes` newest first; each must exit successfully within 20 s of SIGTERM.
async fn stop_gracefully(processes: Vec<Running>) -> anyhow::Result<()> {
    for running in processes.into_iter().rev() {
        let name = running.process.name.clone();
        let status = running.process.stop(Duration::from_secs(20)).await?;
        anyhow::ensure!(status.success(), "{name} exited with {status}");
    }
    Ok(())
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // The processes go first, so that nothing reconnects to a database being dropped.
        for running in &mut self.running {
            running.process.kill_now();
        }
        self.running.clear();
        self.pools.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if !self.created.is_empty() {
            drop_databases_now(&self.infra, std::mem::take(&mut self.created));
        }
        if let Err(error) = std::fs::remove_dir_all(&self.secrets.key_dir) {
            eprintln!("mesh: keys left in {}: {error}", self.secrets.key_dir.display());
        }
    }
}

/// Drops `databases` before returning, from a thread with a runtime of its own: `Drop` runs
/// inside the test's runtime (also while a panic unwinds through it), where it cannot await.
/// Failures are reported, never raised: panicking in `Drop` would abort the test binary.
fn drop_databases_now(infra: &Infra, databases: Vec<String>) {
    let infra = infra.clone();
    let outcome = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut failed = Vec::new();
            for database in &databases {
                if let Err(error) = infra.drop_database(database).await {
                    failed.push(format!("{database}: {error:#}"));
                }
            }
            anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
            Ok(())
        })
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("mesh: databases left behind: {error:#}"),
        Err(_) => eprintln!("mesh: dropping the databases panicked; some may be left behind"),
    }
}

/// Random keys and secrets for one run of the mesh (demo or test). Every service gets field
/// keys of its own (none can open another's values); handover and registry alone share the
/// transit ring of the report-in's personal fields.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The identity provider's key: every token the tests and the demo present.
    pub idp: GeneratedKey,
    /// Risk-alert's own key, trusted for `system` tokens to the registry and handover.
    pub risk_alert: GeneratedKey,
    /// Where the key set (`jwks.json`) and risk-alert's private key are written.
    pub key_dir: PathBuf,
    pub cursor_secret: String,
    /// Each service's field keys, by service name.
    pub field_keys: HashMap<String, ServiceKeys>,
    /// The key of the handover → registry transit ring (key id [`TRANSIT_KID`]), base64.
    pub transit_key: String,
}

/// One service's field keys, base64: its ring of one key (id [`FIELD_KID`]) and its
/// blind-index key.
#[derive(Debug, Clone)]
pub struct ServiceKeys {
    pub field_key: String,
    pub blind_index_key: String,
}

/// The key id of every service's field key in a mesh run.
pub const FIELD_KID: &str = "k1";
/// The key id of the transit key in a mesh run.
pub const TRANSIT_KID: &str = "t1";

impl Secrets {
    /// New keys, written to a fresh directory under the system temp directory.
    pub fn random() -> anyhow::Result<Self> {
        let key = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let [idp, risk_alert] = crate::keys::deployment_keys();
        let secrets = Self {
            idp,
            risk_alert,
            key_dir: std::env::temp_dir().join(format!("mesh-keys-{}", uuid::Uuid::new_v4())),
            cursor_secret: key(),
            field_keys: SERVICES
                .iter()
                .map(|service| {
                    let keys = ServiceKeys {
                        field_key: key(),
                        blind_index_key: key(),
                    };
                    ((*service).to_owned(), keys)
                })
                .collect(),
            transit_key: key(),
        };
        std::fs::create_dir_all(&secrets.key_dir)?;
        secrets.write_key_set([&secrets.idp, &secrets.risk_alert])?;
        std::fs::write(secrets.risk_alert_key_file(), &secrets.risk_alert.private_pem)?;
        Ok(secrets)
    }

    /// The key variables of `service`: its own field ring and blind-index key, and for
    /// handover and registry the transit ring.
    pub fn key_env(&self, service: &str) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(keys) = self.field_keys.get(service) {
            env.push((
                FIELD_RING.keys.to_owned(),
                format!("{FIELD_KID}:{}", keys.field_key),
            ));
            env.push((FIELD_RING.current.to_owned(), FIELD_KID.to_owned()));
            env.push(("MESH_BLIND_INDEX_KEY".to_owned(), keys.blind_index_key.clone()));
        }
        if matches!(service, "handover" | "registry") {
            let transit = format!("{TRANSIT_KID}:{}", self.transit_key);
            env.push((HANDOVER_TRANSIT_RING.keys.to_owned(), transit));
            env.push((HANDOVER_TRANSIT_RING.current.to_owned(), TRANSIT_KID.to_owned()));
        }
        env
    }

    /// `service`'s field ring, as the service reads it (for a test to open its values).
    pub fn field_ring(&self, service: &str) -> anyhow::Result<KeyRing> {
        let keys = self
            .field_keys
            .get(service)
            .with_context(|| format!("{service} has no field keys"))?;
        key_ring(&format!("{FIELD_KID}:{}", keys.field_key), FIELD_KID)
    }

    /// The transit ring handover seals and registry opens the report-in's personal fields
    /// with (for a test publishing a report-in as the handover service would).
    pub fn transit_ring(&self) -> anyhow::Result<KeyRing> {
        key_ring(&format!("{TRANSIT_KID}:{}", self.transit_key), TRANSIT_KID)
    }

    /// The key set every service verifies tokens against (`MESH_JWKS_FILE`).
    pub fn key_set_file(&self) -> PathBuf {
        self.key_dir.join("jwks.json")
    }

    fn risk_alert_key_file(&self) -> PathBuf {
        self.key_dir.join("risk-alert.pem")
    }

    /// Replaces the key set the services trust (they pick it up within
    /// `MESH_JWKS_REFRESH_SECS`, or at once when a token names a key they lack). Written
    /// beside and renamed, so a service never reads half a file.
    pub fn write_key_set<'a>(&self, keys: impl IntoIterator<Item = &'a GeneratedKey>) -> anyhow::Result<()> {
        let partial = self.key_dir.join("jwks.json.partial");
        std::fs::write(&partial, jwks(keys))?;
        std::fs::rename(partial, self.key_set_file())?;
        Ok(())
    }

    pub fn token_issuer(&self) -> TokenIssuer {
        self.idp.issuer()
    }

    /// A token for `caller` to every service, valid for eight hours.
    pub fn token(&self, caller: &Caller) -> String {
        let now = Utc::now();
        self.token_issuer()
            .mint(caller, &SERVICES, now, now + chrono::Duration::hours(8))
    }

    /// A `system` token signed with risk-alert's own key, as its calls to the registry and
    /// the handover service carry (the identity provider's key vouches for people only).
    pub fn system_token(&self, subject: &str) -> String {
        let now = Utc::now();
        let caller = Caller::new(subject, mesh_kit::auth::Role::System, None, None);
        let audiences: Vec<&str> = self.risk_alert.audiences.iter().map(String::as_str).collect();
        self.risk_alert
            .issuer()
            .mint(&caller, &audiences, now, now + chrono::Duration::hours(1))
    }

    /// What risk-alert needs to sign its own calls.
    fn risk_alert_env(&self) -> [(String, String); 2] {
        [
            (
                "MESH_SIGNING_KEY_FILE".to_owned(),
                self.risk_alert_key_file().display().to_string(),
            ),
            ("MESH_SIGNING_KID".to_owned(), self.risk_alert.kid.clone()),
        ]
    }
}

/// A key ring of `keys` (`id:base64-key` pairs, newest first) sealing with `current`, read
/// as a service reads `MESH_FIELD_KEYS` and `MESH_FIELD_KEY_CURRENT`.
pub fn key_ring(keys: &str, current: &str) -> anyhow::Result<KeyRing> {
    let source = vec![
        (FIELD_RING.keys.to_owned(), keys.to_owned()),
        (FIELD_RING.current.to_owned(), current.to_owned()),
    ];
    let mut reader = Reader::new(&source);
    let ring = read_ring(&mut reader, &FIELD_RING);
    reader.finish()?;
    ring.context("no key ring")
}

/// The environment `service` needs to run against `infra` with `secrets` and `database`.
pub fn service_env(
    infra: &Infra,
    secrets: &Secrets,
    service: &str,
    database: &str,
) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("MESH_DATABASE_URL".to_owned(), infra.database_url(database)),
        ("MESH_KAFKA_BROKERS".to_owned(), infra.brokers.clone()),
        (
            "MESH_JWKS_FILE".to_owned(),
            secrets.key_set_file().display().to_string(),
        ),
        ("MESH_CURSOR_SECRET".to_owned(), secrets.cursor_secret.clone()),
        ("MESH_OUTBOX_POLL_MS".to_owned(), "100".to_owned()),
        // Second-scale policies: the consumer's progress is probed often, and producers'
        // outboxes (polled every 100 ms) flush well within the settle time after an outage.
        ("MESH_LAG_PROBE_MS".to_owned(), "250".to_owned()),
        ("MESH_LAG_SETTLE_MS".to_owned(), "2000".to_owned()),
        // Tansu cannot take idempotent producers across a broker restart (see kit::kafka).
        ("MESH_KAFKA_IDEMPOTENT_PRODUCER".to_owned(), "false".to_owned()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("MESH_SERVICE_LOG").unwrap_or_else(|_| "info".to_owned()),
        ),
    ]);
    env.extend(secrets.key_env(service));
    env
}

#[cfg(test)]
mod tests {
    //! The fixture's own promise, against the real PostgreSQL, broker and registry binary
    //! (`cargo build --workspace --bins` first, as for the end-to-end tests).

    use super::*;

    #[tokio::test]
    async fn a_mesh_leaves_no_database_behind_also_when_its_test_panics() {
        let infra = Infra::from_env();
        let exists = async |database: &str| infra.database_exists(database).await.expect("PostgreSQL");

        // The registry is still connected to its database when the mesh goes.
        let mut mesh = Mesh::start(&["registry"]).await.expect("mesh");
        let registry = mesh.database("registry").await.expect("database");
        let scratch = mesh.database("scratch").await.expect("database");
        assert!(exists(&registry).await && exists(&scratch).await);
        drop(mesh);
        assert!(!exists(&registry).await, "{registry} left behind");
        assert!(!exists(&scratch).await, "{scratch} left behind");

        let (name_tx, name_rx) = tokio::sync::oneshot::channel();
        let failing_test = tokio::spawn(async move {
            let mut mesh = Mesh::start(&["registry"]).await.expect("mesh");
            let _ = name_tx.send(mesh.database("registry").await.expect("database"));
            panic!("a failing test");
        });
        assert!(failing_test.await.expect_err("it panicked").is_panic());
        let registry = name_rx.await.expect("database name");
        assert!(
            !exists(&registry).await,
            "{registry} left behind by a panicking test"
        );

        // A database the mesh was given (the demo's) is not the mesh's to drop.
        let given = infra.fresh_database("given").await.expect("database");
        let mut mesh = Mesh::builder().build().await.expect("mesh");
        mesh.use_database("registry", &given);
        drop(mesh);
        assert!(exists(&given).await, "a given database was dropped");
        infra.drop_database(&given).await.expect("dropped");
    }
}
