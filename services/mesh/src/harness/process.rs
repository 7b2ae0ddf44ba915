//! The processes a mesh runs: service binaries (gRPC on port 0, address read back from the
//! log, healthy once they answer SERVING).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::watch,
};
use tonic::transport::Channel;

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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
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

    /// SIGKILL, then wait up to 5 s for the exit, without awaiting: for clean-up in `Drop`,
    /// which must know the process holds no database connection any more.
    pub(super) fn kill_now(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
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
