//! A township office's webhook receiver, for the demo and the tests: records every POST,
//! checks its HMAC signature with the endpoint secret, and can be started late (to play a
//! receiver that was down) on a port reserved in advance.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use mesh_proto::json::alert::{self as alert_json, WebhookNotification, alert_subject::Id as SubjectId};
use risk_alert::notify;

/// One received notification.
#[derive(Debug, Clone)]
pub struct Received {
    pub notification_id: String,
    pub event_type: String,
    pub signature_valid: bool,
    /// The body as any JSON reader sees it (proto3 JSON mapping: lowerCamelCase names).
    pub body: serde_json::Value,
    /// The body parsed with the type generated from `alert.proto`, as a receiver written from
    /// the contract does; `None` when it does not parse.
    pub notification: Option<WebhookNotification>,
    /// When the receiver got it (for latency measurements).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl Received {
    /// The alert the notification carries, as parsed with the generated type.
    pub fn alert(&self) -> Option<&alert_json::Alert> {
        self.notification.as_ref()?.alert.as_ref()
    }

    pub fn alert_kind(&self) -> &str {
        self.alert().map_or("", |alert| alert.kind().as_str_name())
    }

    pub fn subject_id(&self) -> &str {
        match self.alert().and_then(|alert| alert.subject.as_ref()?.id.as_ref()) {
            Some(SubjectId::SuperviseeId(id) | SubjectId::HandoverId(id)) => id,
            None => "",
        }
    }
}

#[derive(Clone)]
struct Shared {
    secret: String,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A receiver on a fixed loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    pub secret: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts receiving now.
    pub async fn start(secret: &str) -> anyhow::Result<Self> {
        let mut receiver = Self::reserve(secret)?;
        receiver.listen().await?;
        Ok(receiver)
    }

    /// Reserves a port but does not listen yet: deliveries fail with "connection refused"
    /// until [`Receiver::listen`].
    pub fn reserve(secret: &str) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Self {
            addr,
            secret: secret.to_owned(),
            received: Arc::default(),
            server: None,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/alerts", self.addr)
    }

    pub async fn listen(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let shared = Shared {
            secret: self.secret.clone(),
            received: self.received.clone(),
        };
        let app = Router::new()
            .route("/hooks/alerts", post(receive))
            .with_state(shared);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(())
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many notifications arrived (without copying them).
    pub fn count(&self) -> usize {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until `predicate` holds for what was received, or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        predicate: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if predicate(&received) || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let timestamp: i64 = header(notify::HEADER_TIMESTAMP).parse().unwrap_or_default();
    let signature_valid = notify::verify(
        shared.secret.as_bytes(),
        timestamp,
        &body,
        &header(notify::HEADER_SIGNATURE),
    );
    let received = Received {
        notification_id: header(notify::HEADER_NOTIFICATION_ID),
        event_type: header(notify::HEADER_EVENT_TYPE),
        signature_valid,
        body: serde_json::from_slice(&body).unwrap_or_default(),
        notification: serde_json::from_slice(&body).ok(),
        received_at: chrono::Utc::now(),
    };
    shared
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(received);
    StatusCode::NO_CONTENT
}
