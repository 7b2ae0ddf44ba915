//! The live-stream fan-out: every replica LISTENs on the alert-changes channel, so a change
//! committed by any replica reaches the dashboards streaming from this one (and wakes this
//! replica's webhook delivery).

use std::time::Duration;

use mesh_kit::CancellationToken;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;

use crate::{
    domain::alert::{Alert, AlertEvent},
    lifecycle::CHANGES_CHANNEL,
    store,
};

/// An alert change as fanned out to live streams: the step and the alert after it.
pub type LiveChange = (AlertEvent, Alert);

/// Forwards committed alert changes to `changes` until shutdown, reconnecting with backoff
/// when the database connection is lost.
pub async fn run(pool: PgPool, changes: broadcast::Sender<LiveChange>, shutdown: CancellationToken) {
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
        if let Err(error) = listener.listen(CHANGES_CHANNEL).await {
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
            let Some((id, event)) = parse(notification.payload()) else {
                continue;
            };
            if let Ok(Some(alert)) = store::alerts::load(&pool, id).await {
                // No subscribers is fine: nobody is watching.
                let _ = changes.send((event, alert));
            }
        }
    }
}

/// `<alert id>:<change number>`, as written by `lifecycle`.
fn parse(payload: &str) -> Option<(uuid::Uuid, AlertEvent)> {
    let (id, change) = payload.split_once(':')?;
    Some((id.parse().ok()?, AlertEvent::from_proto(change.parse().ok()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_an_alert_and_a_step() {
        let id = uuid::Uuid::from_u128(9);
        assert_eq!(
            parse(&format!("{id}:{}", AlertEvent::Resolved.to_proto() as i32)),
            Some((id, AlertEvent::Resolved))
        );
        assert_eq!(parse(&format!("{id}:1")), None, "CURRENT is never published");
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(&format!("{id}:x")), None);
    }
}
