//! Starts and drives real mesh processes: creates databases, spawns service binaries with
//! their environment (gRPC on port 0, address read back from the log), waits for health,
//! mints tokens, creates Kafka topics and reads events back. Used by the demo and the
//! end-to-end tests so both exercise the same binaries the same way.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use base64::Engine;
use chrono::Utc;
use mesh_kit::{
    auth::{Caller, Role, TokenKeys},
    kafka::Topics,
};
use mesh_proto::{
    checkin::{self as checkin_pb, checkin_service_client::CheckinServiceClient},
    common::GeoPoint,
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{Consumer, StreamConsumer},
    message::Headers,
    types::RDKafkaErrorCode,
};
use secrecy::SecretString;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::watch,
};
use tonic::transport::Channel;

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

    /// Creates a new, uniquely named database (one per test).
    pub async fn fresh_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("test_{prefix}_{}", uuid::Uuid::new_v4().simple());
        self.ensure_database(&name).await?;
        Ok(name)
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.database_url("postgres"))
            .await
            .context("connecting to PostgreSQL (is it running? see scripts/infra)")?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            // Identifiers cannot be bound; callers pass generated names only.
            sqlx::query(&format!("CREATE DATABASE \"{}\"", database.replace('"', "")))
                .execute(&mut conn)
                .await?;
        }
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

/// Infrastructure, secrets and topics shared by the services of one test or demo run.
pub struct Mesh {
    pub infra: Infra,
    pub secrets: Secrets,
    pub topics: Topics,
    databases: HashMap<String, String>,
    log_dir: PathBuf,
}

impl Mesh {
    /// Fresh topics (and their dead-letter topics) on the shared broker.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Infra::from_env(), 2, &std::env::temp_dir().join("mesh-e2e-logs")).await
    }

    /// Fresh topics of `partitions` partitions each on `infra`'s broker; service logs go to
    /// `log_dir`.
    pub async fn on(infra: Infra, partitions: i32, log_dir: &Path) -> anyhow::Result<Self> {
        Self::with_topics(infra, partitions, log_dir, Topics::unique("test")).await
    }

    /// Like [`Mesh::on`] with the given topic names.
    pub async fn with_topics(
        infra: Infra,
        partitions: i32,
        log_dir: &Path,
        topics: Topics,
    ) -> anyhow::Result<Self> {
        for topic in topics.all() {
            infra.create_topic(topic, partitions).await?;
            infra
                .create_topic(&mesh_kit::kafka::dead_letter_topic(topic), 1)
                .await?;
        }
        Ok(Self {
            infra,
            secrets: Secrets::random(),
            topics,
            databases: HashMap::new(),
            log_dir: log_dir.to_owned(),
        })
    }

    /// Uses `database` for `service` instead of a fresh one.
    pub fn use_database(&mut self, service: &str, database: &str) {
        self.databases.insert(service.to_owned(), database.to_owned());
    }

    /// The database of `service` in this mesh (created on first use).
    pub async fn database(&mut self, service: &str) -> anyhow::Result<String> {
        if let Some(name) = self.databases.get(service) {
            return Ok(name.clone());
        }
        let name = self.infra.fresh_database(&service.replace('-', "_")).await?;
        self.databases.insert(service.to_owned(), name.clone());
        Ok(name)
    }

    pub async fn pool(&mut self, service: &str) -> anyhow::Result<sqlx::PgPool> {
        let database = self.database(service).await?;
        Ok(sqlx::PgPool::connect(&self.infra.database_url(&database)).await?)
    }

    /// Starts the `binary` of `service` with the mesh's environment plus `extra_env`. Several
    /// replicas of one service share its database.
    pub async fn spawn(
        &mut self,
        service: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let database = self.database(service).await?;
        let mut env = service_env(&self.infra, &self.secrets, &database);
        for (key, value) in self.topics.env() {
            env.insert(key.to_owned(), value.to_owned());
        }
        // Replicas of one service in this mesh share a consumer group; meshes running side by
        // side on one broker must not, or they would rebalance each other's partitions.
        env.insert(
            "MESH_CONSUMER_GROUP".to_owned(),
            format!("{service}-{}", self.topics.registry),
        );
        for (key, value) in extra_env {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        ServiceProcess::spawn(service, &env, &self.log_dir).await
    }

    pub fn token(&self, caller: &Caller) -> String {
        self.secrets.token(caller)
    }

    pub fn tap(&self, topic: &str) -> anyhow::Result<EventTap> {
        EventTap::from_beginning(&self.infra, topic)
    }
}

/// Random keys and secrets for one run of the mesh (demo or test).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub jwt_secret: String,
    pub field_encryption_key: String,
    pub blind_index_key: String,
}

impl Secrets {
    pub fn random() -> Self {
        let key = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        Self {
            jwt_secret: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 48]>()),
            field_encryption_key: key(),
            blind_index_key: key(),
        }
    }

    pub fn token_keys(&self) -> TokenKeys {
        TokenKeys::new(&SecretString::from(self.jwt_secret.clone()))
    }

    /// A token for `caller`, valid for a day.
    pub fn token(&self, caller: &Caller) -> String {
        let now = Utc::now();
        self.token_keys()
            .mint(caller, now, now + chrono::Duration::hours(24))
    }
}

/// Callers for demos and tests.
pub fn officer(subject: &str, township: &str) -> Caller {
    let county = township.get(..6).map(str::to_owned);
    Caller {
        subject: subject.to_owned(),
        role: Role::Officer,
        township: Some(township.to_owned()),
        county,
        prison: None,
    }
}

/// A township judicial office (司法所) as an organisation.
pub fn township_office(township: &str) -> Caller {
    Caller {
        subject: format!("office-{township}"),
        role: Role::TownshipOffice,
        township: Some(township.to_owned()),
        county: township.get(..6).map(str::to_owned),
        prison: None,
    }
}

pub fn county_bureau(subject: &str, county: &str) -> Caller {
    Caller {
        subject: subject.to_owned(),
        role: Role::CountyBureau,
        township: None,
        county: Some(county.to_owned()),
        prison: None,
    }
}

pub fn prison(subject: &str, prison_id: &str) -> Caller {
    Caller {
        subject: subject.to_owned(),
        role: Role::Prison,
        township: None,
        county: None,
        prison: Some(prison_id.to_owned()),
    }
}

/// Attaches a bearer token to a request.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Finds a workspace binary: `MESH_BIN_DIR`, else next to the running executable (also when
/// that is a test binary under `target/<profile>/deps`).
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("MESH_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        candidates.push(dir.join(name));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| format!("binary `{name}` not found: run `cargo build --workspace --bins` first"))
}

/// A running service process. Killed when dropped.
pub struct ServiceProcess {
    pub name: String,
    child: Child,
    pub addr: std::net::SocketAddr,
    pub log_path: PathBuf,
    log_lines: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Spawns `binary` with `env`, waits until it logs its listening address and answers
    /// health checks as SERVING.
    pub async fn spawn(binary: &str, env: &HashMap<String, String>, log_dir: &Path) -> anyhow::Result<Self> {
        let path = binary_path(binary)?;
        std::fs::create_dir_all(log_dir)?;
        let log_path = log_dir.join(format!("{binary}-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(&path)
            .envs(env)
            .env(
                "MESH_GRPC_ADDR",
                env.get("MESH_GRPC_ADDR")
                    .map(String::as_str)
                    .unwrap_or("127.0.0.1:0"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let log_lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = watch::channel(None);
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut file = tokio::fs::File::create(&log_path).await?;
        let lines = log_lines.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            let mut err = BufReader::new(stderr).lines();
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let line = tokio::select! {
                    line = out.next_line(), if out_open => line.ok().flatten().or_else(|| { out_open = false; None }),
                    line = err.next_line(), if err_open => line.ok().flatten().or_else(|| { err_open = false; None }),
                };
                let Some(line) = line else { continue };
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(Some(addr));
                }
                let _ = file.write_all(line.as_bytes()).await;
                let _ = file.write_all(b"\n").await;
                let _ = file.flush().await;
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(addr) = *addr_rx.borrow_and_update() {
                    return Ok(addr);
                }
                if addr_rx.changed().await.is_err() {
                    bail!("exited before listening");
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("no listening address logged within 60 s"))
        .and_then(|inner| inner)
        .with_context(|| format!("{binary} did not start; log: {}", log_path.display()))?;
        let process = Self {
            name: binary.to_owned(),
            child,
            addr,
            log_path,
            log_lines,
        };
        process.wait_serving().await?;
        Ok(process)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.endpoint())?.connect().await?)
    }

    async fn wait_serving(&self) -> anyhow::Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut client = HealthClient::new(self.channel().await?);
        for _ in 0..100 {
            if let Ok(response) = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && response.get_ref().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} never reported SERVING", self.name)
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        self.log_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// SIGTERM, then wait for a graceful exit (SIGKILL after `timeout`).
    pub async fn stop(mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within {timeout:?}", self.name)
            }
        }
    }

    /// SIGKILL: a crash, with no chance to flush or commit.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The `addr` of a JSON log line whose message ends in "listening".
fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if !fields.get("message")?.as_str()?.ends_with("listening") {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// An event read back from Kafka.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl ReceivedEvent {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads a topic from a given position, outside any consumer group's commits.
pub struct EventTap {
    consumer: StreamConsumer,
}

impl EventTap {
    /// Reads `topic` from the beginning.
    pub fn from_beginning(infra: &Infra, topic: &str) -> anyhow::Result<Self> {
        Self::open(infra, topic, |_, _| Ok(Offset::Beginning))
    }

    /// Reads only what is published to `topic` from now on.
    pub fn from_now(infra: &Infra, topic: &str) -> anyhow::Result<Self> {
        Self::open(infra, topic, |consumer, partition| {
            let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            Ok(Offset::Offset(high))
        })
    }

    fn open(
        infra: &Infra,
        topic: &str,
        start: impl Fn(&StreamConsumer, i32) -> anyhow::Result<Offset>,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &infra.brokers)
            .set("group.id", format!("tap-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            bail!("topic {topic} has no partitions (does it exist?)");
        }
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment.add_partition_offset(topic, partition, start(&consumer, partition)?)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self { consumer })
    }

    /// The next event, or `None` if nothing arrives within `timeout`.
    pub async fn next(&self, timeout: Duration) -> anyhow::Result<Option<ReceivedEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Connection errors (a broker still starting) are transient: keep waiting.
        let message = loop {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => return Ok(None),
                Ok(Ok(message)) => break message,
                Ok(Err(error)) => {
                    eprintln!("event tap: {error}; still waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut headers = HashMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                if let Some(value) = header.value {
                    headers.insert(header.key.to_owned(), String::from_utf8_lossy(value).into_owned());
                }
            }
        }
        Ok(Some(ReceivedEvent {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        }))
    }

    /// Collects events until `count` arrived or `timeout` passed with nothing new.
    pub async fn collect(&self, count: usize, idle_timeout: Duration) -> anyhow::Result<Vec<ReceivedEvent>> {
        let mut events = Vec::new();
        while events.len() < count {
            match self.next(idle_timeout).await? {
                Some(event) => events.push(event),
                None => break,
            }
        }
        Ok(events)
    }
}

/// The environment a service needs to run against `infra` with `secrets` and `database`.
pub fn service_env(infra: &Infra, secrets: &Secrets, database: &str) -> HashMap<String, String> {
    HashMap::from([
        ("MESH_DATABASE_URL".to_owned(), infra.database_url(database)),
        ("MESH_KAFKA_BROKERS".to_owned(), infra.brokers.clone()),
        ("MESH_JWT_SECRET".to_owned(), secrets.jwt_secret.clone()),
        (
            "MESH_FIELD_ENCRYPTION_KEY".to_owned(),
            secrets.field_encryption_key.clone(),
        ),
        ("MESH_BLIND_INDEX_KEY".to_owned(), secrets.blind_index_key.clone()),
        ("MESH_OUTBOX_POLL_MS".to_owned(), "100".to_owned()),
        // Tansu cannot take idempotent producers across a broker restart (see kit::kafka).
        ("MESH_KAFKA_IDEMPOTENT_PRODUCER".to_owned(), "false".to_owned()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("MESH_SERVICE_LOG").unwrap_or_else(|_| "info".to_owned()),
        ),
    ])
}

/// A private Tansu broker (for tests that stop and restart the broker without disturbing
/// the shared one). Its SQLite storage lives in `dir`, so a restart keeps every record.
pub struct TansuProcess {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TansuProcess {
    /// Starts a broker on a free loopback port.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        // The broker is another program, so the port must be chosen before it binds; the
        // window between releasing it here and Tansu binding it is tiny on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(dir)?;
        // Tansu reads `.env` from its working directory and its parents; pin an empty one.
        std::fs::write(dir.join(".env"), "")?;
        let mut broker = Self {
            dir: dir.to_owned(),
            port,
            child: None,
        };
        broker.restart().await?;
        Ok(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn binary() -> PathBuf {
        let home_bin = std::env::var("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/tansu"));
        match home_bin {
            Ok(path) if path.is_file() => path,
            _ => PathBuf::from("tansu"),
        }
    }

    /// (Re)starts the broker on the same port and storage; waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log"))?;
        let child = Command::new(Self::binary())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--kafka-cluster-id=test",
                "--storage-engine=sqlite://tansu.db",
                &format!("--kafka-listener-url={url}"),
                &format!("--kafka-advertised-listener-url={url}"),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting tansu (run scripts/infra up to install it)")?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("tansu did not listen on port {} within 10 s", self.port)
    }

    /// Kills the broker abruptly (SIGKILL), as a crash or outage would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// A face-verified app check-in near the Ganzhou district seat (inside the default
/// permitted area) at `at`.
pub fn new_checkin(supervisee_id: &str, at: chrono::DateTime<Utc>) -> checkin_pb::NewCheckin {
    checkin_pb::NewCheckin {
        checkin_id: uuid::Uuid::new_v4().to_string(),
        supervisee_id: supervisee_id.to_owned(),
        method: checkin_pb::CheckinMethod::AppSelfCheckin as i32,
        recording_officer_id: String::new(),
        device_time: Some(mesh_kit::proto_time::to_timestamp(at)),
        position: Some(GeoPoint {
            latitude: 38.931,
            longitude: 100.452,
            accuracy_m: 12.0,
        }),
        identity_verification: Some(checkin_pb::IdentityVerification {
            verification: Some(checkin_pb::identity_verification::Verification::FaceMatch(
                checkin_pb::FaceMatch { score: 0.96 },
            )),
        }),
        captured_offline: false,
        note: String::new(),
    }
}

/// Records a check-in made now, retrying while the check-in service has not yet learnt of
/// the supervisee from the registry's events (it follows them asynchronously).
pub async fn check_in(
    client: &mut CheckinServiceClient<Channel>,
    token: &str,
    supervisee_id: &str,
) -> anyhow::Result<String> {
    record_checkin(client, token, || new_checkin(supervisee_id, chrono::Utc::now())).await
}

/// Records the check-in `make` builds (a fresh one per attempt), retrying while the
/// check-in service does not know the supervisee yet. Returns the recorded check-in id.
pub async fn record_checkin(
    client: &mut CheckinServiceClient<Channel>,
    token: &str,
    make: impl Fn() -> checkin_pb::NewCheckin,
) -> anyhow::Result<String> {
    for _ in 0..100 {
        let checkin = make();
        let id = checkin.checkin_id.clone();
        let request = checkin_pb::RecordCheckinRequest {
            checkin: Some(checkin),
        };
        match client.record_checkin(authorized(request, token)).await {
            Ok(_) => return Ok(id),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    anyhow::bail!("the check-in service never accepted the check-in (supervisee unknown?)")
}

/// The prison of the demo's and tests' release notices.
pub const PRISON_A: &str = "zhangye-prison";
/// 甘州区东街街道, where the demo's and tests' people live.
pub const HOME_TOWNSHIP: &str = "620702001";
pub const HOME_COUNTY: &str = "620702";

/// Today in the office time zone (the service decides "in the past" the same way).
pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&mesh_kit::jurisdiction::Directory::get().time_zone)
        .date_naive()
}

pub fn whole_seconds_ago(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - seconds, 0).unwrap_or_default()
}

/// A valid parole release notice of prison A for person number `n`, to township 620702001.
pub fn notice(n: u16) -> mesh_proto::handover::SubmitReleaseNoticeRequest {
    let birth = chrono::NaiveDate::from_ymd_opt(
        1970 + i32::from(n % 40),
        1 + u32::from(n % 12),
        1 + u32::from(n % 28),
    )
    .unwrap_or_default();
    mesh_proto::handover::SubmitReleaseNoticeRequest {
        prison_reference: format!("ZY-2026-{n:04}"),
        prison_id: PRISON_A.into(),
        person_name: format!("刑释人员{n}"),
        national_id: mesh_kit::national_id::synthesize("620702", birth, n),
        date_of_birth: Some(mesh_kit::proto_time::to_date(birth)),
        category: mesh_proto::handover::ReleaseCategory::Parole as i32,
        expected_release_date: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(30))),
        destination: Some(mesh_proto::common::Jurisdiction {
            township_code: HOME_TOWNSHIP.into(),
            county_code: HOME_COUNTY.into(),
        }),
        key_assistance_target: true,
        risk_notes: format!("风险提示{n}: 有酗酒史, 家属联系电话见档案"),
        offence_category: mesh_proto::common::OffenceCategory::Property as i32,
    }
}

pub fn report_in_request(
    id: &str,
    reported_in_at: chrono::DateTime<chrono::Utc>,
) -> mesh_proto::handover::RecordReportInRequest {
    mesh_proto::handover::RecordReportInRequest {
        handover_id: id.to_owned(),
        reported_in_at: Some(mesh_kit::proto_time::to_timestamp(reported_in_at)),
        supervision_level: mesh_proto::registry::SupervisionLevel::Strict as i32,
        officer_id: "officer-1".into(),
        term_start: Some(mesh_kit::proto_time::to_date(today())),
        term_end: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(365))),
        phone: "13912345678".into(),
        address: "甘州区东街 1 号".into(),
        needs_employment: true,
    }
}

/// A producer for publishing events as a service would (tests, benchmark).
pub fn producer(brokers: &str) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Publishes one event with the mesh's Kafka headers (`event_id`, `event_type`,
/// `occurred_at`, `producer` = the event type's prefix), as its producing service would, and
/// waits for the broker's acknowledgement. Returns the event id.
pub async fn publish_event(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    event_type: &str,
    payload: &[u8],
) -> anyhow::Result<uuid::Uuid> {
    use mesh_kit::kafka::headers;
    use rdkafka::message::{Header, OwnedHeaders};
    let id = uuid::Uuid::now_v7();
    let event_id = id.to_string();
    let occurred_at = chrono::Utc::now().to_rfc3339();
    let record_headers = OwnedHeaders::new()
        .insert(Header {
            key: headers::EVENT_ID,
            value: Some(event_id.as_str()),
        })
        .insert(Header {
            key: headers::EVENT_TYPE,
            value: Some(event_type),
        })
        .insert(Header {
            key: headers::OCCURRED_AT,
            value: Some(occurred_at.as_str()),
        })
        .insert(Header {
            key: headers::PRODUCER,
            value: Some(event_type.split('.').next().unwrap_or_default()),
        });
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(record_headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)?;
    Ok(id)
}
