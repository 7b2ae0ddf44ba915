//! A township office's webhook receiver, for the demo, the tests and the bench: takes single
//! notifications and batches (`WebhookBatch`, told by the `X-Mesh-Batch-Size` header),
//! checks each POST's HMAC signature with the endpoint secret, records every notification
//! and every POST, can refuse the next POSTs (to play a failing receiver), and can be
//! started late (to play a receiver that was down) on a port reserved in advance.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use mesh_proto::json::alert::{
    self as alert_json, WebhookBatch, WebhookNotification, alert_subject::Id as SubjectId,
};
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

/// One POST, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// `X-Mesh-Batch-Size` when the POST was a batch; `None` for a single notification.
    pub batch_size: Option<usize>,
    /// Notifications in the body (1 for a single one that parsed).
    pub notifications: usize,
    pub signature_valid: bool,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Clone, Default)]
struct Shared {
    secret: String,
    received: Arc<Mutex<Vec<Received>>>,
    posts: Arc<Mutex<Vec<Post>>>,
    /// POSTs still to refuse with 503.
    refuse: Arc<AtomicUsize>,
}

/// A receiver on a fixed loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    pub secret: String,
    shared: Shared,
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
            shared: Shared {
                secret: secret.to_owned(),
                ..Shared::default()
            },
            server: None,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/alerts", self.addr)
    }

    pub async fn listen(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let app = Router::new()
            .route("/hooks/alerts", post(receive))
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(())
    }

    /// Every notification received (refused POSTs' are not), in the order they arrived.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many notifications arrived (without copying them).
    pub fn count(&self) -> usize {
        lock(&self.shared.received).len()
    }

    /// Every POST, refused or not, in the order they arrived.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared.posts).clone()
    }

    /// Answers the next `count` POSTs with 503 Service Unavailable, receiving nothing.
    pub fn refuse_next(&self, count: usize) {
        self.shared.refuse.store(count, Ordering::SeqCst);
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a POST as a receiver written from the contract does: verifies the signature over
/// the whole body, then parses one `WebhookNotification`, or a `WebhookBatch` when the batch
/// header is present, whose size must match it. A batch that does not parse is answered 400
/// (nothing in it is taken); a bad signature is recorded, not refused, so tests can see it.
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
    let batch_size = headers.contains_key(notify::HEADER_BATCH_SIZE).then(|| {
        header(notify::HEADER_BATCH_SIZE)
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let refused = shared
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let received_at = chrono::Utc::now();
    let (status, received) = if refused {
        (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
    } else {
        match batch_size {
            None => (
                StatusCode::NO_CONTENT,
                vec![Received {
                    notification_id: header(notify::HEADER_NOTIFICATION_ID),
                    event_type: header(notify::HEADER_EVENT_TYPE),
                    signature_valid,
                    body: serde_json::from_slice(&body).unwrap_or_default(),
                    notification: serde_json::from_slice(&body).ok(),
                    received_at,
                }],
            ),
            Some(size) => match batch(&body, size, signature_valid, received_at) {
                Some(received) => (StatusCode::NO_CONTENT, received),
                None => (StatusCode::BAD_REQUEST, Vec::new()),
            },
        }
    };
    lock(&shared.posts).push(Post {
        batch_size,
        notifications: received.len(),
        signature_valid,
        status: status.as_u16(),
    });
    lock(&shared.received).extend(received);
    status
}

/// The notifications of a batch body, if it parses as a `WebhookBatch` of `size`.
fn batch(
    body: &[u8],
    size: usize,
    signature_valid: bool,
    received_at: chrono::DateTime<chrono::Utc>,
) -> Option<Vec<Received>> {
    let parsed: WebhookBatch = serde_json::from_slice(body).ok()?;
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let bodies = json["notifications"].as_array()?;
    if parsed.notifications.len() != size || bodies.len() != size {
        return None;
    }
    Some(
        parsed
            .notifications
            .into_iter()
            .zip(bodies)
            .map(|(notification, body)| Received {
                notification_id: notification.notification_id.clone(),
                event_type: notification.event_type.clone(),
                signature_valid,
                body: body.clone(),
                notification: Some(notification),
                received_at,
            })
            .collect(),
    )
}
