//! The live-stream fan-out: every replica LISTENs on the alert-changes channel, so a change
//! committed by any replica reaches the dashboards streaming from this one (and wakes this
//! replica's webhook delivery). Notifications sent while the LISTEN connection is down are
//! lost by PostgreSQL, so after every reconnect the alerts changed meanwhile are re-sent as
//! their current state: a dropped connection delays changes, never loses them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use mesh_kit::{CancellationToken, clock::SharedClock};
use sqlx::{
    PgPool,
    postgres::{PgListener, PgNotification},
};
use std::sync::Arc;
use tokio::sync::{Notify, broadcast};

use crate::{
    domain::{
        Jurisdiction,
        alert::{Alert, AlertEvent},
    },
    lifecycle::CHANGES_CHANNEL,
    store,
};

/// An alert change as fanned out to live streams.
#[derive(Debug, Clone)]
pub struct LiveChange {
    /// The step; `None` for an alert re-sent in its current state after a reconnect (its
    /// step's own notification may have been lost).
    pub event: Option<AlertEvent>,
    /// The alert after the change.
    pub alert: Alert,
    /// For a transfer, the jurisdiction the alert left (whose streams must see it go).
    pub previous: Option<Jurisdiction>,
}

impl LiveChange {
    /// Whether a stream of `scope` shows this change.
    pub fn concerns(&self, scope: &Jurisdiction) -> bool {
        scope.contains(&self.alert.jurisdiction)
            || self
                .previous
                .as_ref()
                .is_some_and(|previous| scope.contains(previous))
    }
}

/// How far before a lost connection was noticed changes are re-sent: a change's time is
/// stamped when its transaction starts, which may be a little before its notification.
const RESYNC_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most notifications read at once, so one burst's reads stay one short statement.
const BURST: usize = 500;

/// Where committed alert changes go.
pub struct Outlets {
    /// The live streams (each subscribes).
    pub live: broadcast::Sender<LiveChange>,
    /// This replica's webhook delivery, woken once per burst of changes.
    pub delivery: Arc<Notify>,
}

/// Forwards committed alert changes to `outlets` until shutdown, reconnecting with capped
/// backoff when the database connection is lost and then re-sending what changed meanwhile.
pub async fn run(pool: PgPool, clock: SharedClock, outlets: Outlets, shutdown: CancellationToken) {
    let changes = &outlets.live;
    let mut backoff = Duration::from_millis(200);
    // Set when notifications may have been lost: re-send changes since then.
    let mut lost_since: Option<DateTime<Utc>> = None;
    while !shutdown.is_cancelled() {
        let mut listener = match listen(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for alert changes; retrying");
                lost_since.get_or_insert_with(|| clock.now() - RESYNC_MARGIN);
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if let Some(since) = lost_since.take()
            && let Err(error) = resync(&pool, since, changes).await
        {
            tracing::warn!(error = %error, "alert changes not re-sent after reconnecting; retrying");
            lost_since = Some(since);
            continue;
        }
        loop {
            // `try_recv` (not `recv`, which reconnects silently) says when the connection was
            // lost, so the changes it missed can be re-sent.
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return,
                notification = listener.try_recv() => notification,
            };
            let Ok(Some(first)) = notification else {
                tracing::warn!("alert-change connection lost; reconnecting");
                lost_since = Some(clock.now() - RESYNC_MARGIN);
                break;
            };
            let (burst, connected) = drain(&mut listener, first);
            outlets.delivery.notify_one();
            forward(&pool, &burst, changes).await;
            if !connected {
                tracing::warn!("alert-change connection lost; reconnecting");
                lost_since = Some(clock.now() - RESYNC_MARGIN);
                break;
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}

/// `first` and the notifications already received behind it (up to [`BURST`]), without
/// waiting; and whether the connection is still up. `try_recv` is cancel-safe (it consumes
/// a message only once it has all of it), so polling it once loses nothing.
fn drain(listener: &mut PgListener, first: PgNotification) -> (Vec<String>, bool) {
    let mut burst = vec![first.payload().to_owned()];
    while burst.len() < BURST {
        match listener.try_recv().now_or_never() {
            None => break,
            Some(Ok(Some(notification))) => burst.push(notification.payload().to_owned()),
            Some(Ok(None) | Err(_)) => return (burst, false),
        }
    }
    (burst, true)
}

/// Sends the alerts a burst of notifications names, read in one statement, in the order
/// they were notified. Nothing is read while no stream is open: a midnight wave raising a
/// million alerts costs no reads when nobody is watching.
async fn forward(pool: &PgPool, payloads: &[String], changes: &broadcast::Sender<LiveChange>) {
    if changes.receiver_count() == 0 {
        return;
    }
    let steps: Vec<_> = payloads.iter().filter_map(|payload| parse(payload)).collect();
    let ids: Vec<uuid::Uuid> = steps.iter().map(|(id, _, _)| *id).collect();
    let alerts = match store::alerts::load_all(pool, &ids).await {
        Ok(alerts) => alerts,
        Err(error) => {
            tracing::warn!(error = %error, count = ids.len(), "changed alerts not read; their live notices are skipped");
            return;
        }
    };
    for (id, event, previous) in steps {
        if let Some(alert) = alerts.get(&id) {
            // No subscribers is fine: nobody is watching.
            let _ = changes.send(LiveChange {
                event: Some(event),
                alert: alert.clone(),
                previous,
            });
        }
    }
}

async fn resync(
    pool: &PgPool,
    since: DateTime<Utc>,
    changes: &broadcast::Sender<LiveChange>,
) -> Result<(), mesh_kit::error::ServiceError> {
    let changed = store::alerts::changed_since(pool, since).await?;
    tracing::info!(
        count = changed.len(),
        "re-sending alert changes made while disconnected"
    );
    for alert in changed {
        let _ = changes.send(LiveChange {
            event: None,
            alert,
            previous: None,
        });
    }
    Ok(())
}

/// `<alert id>:<change number>[:<old township>:<old county>]`, as written by `lifecycle`.
fn parse(payload: &str) -> Option<(uuid::Uuid, AlertEvent, Option<Jurisdiction>)> {
    let mut parts = payload.split(':');
    let id = parts.next()?.parse().ok()?;
    let event = AlertEvent::from_proto(parts.next()?.parse().ok()?)?;
    let previous = match (parts.next(), parts.next()) {
        (Some(township_code), Some(county_code)) => Some(Jurisdiction {
            township_code: township_code.to_owned(),
            county_code: county_code.to_owned(),
        }),
        _ => None,
    };
    Some((id, event, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_an_alert_a_step_and_where_a_transfer_came_from() {
        let id = uuid::Uuid::from_u128(9);
        assert_eq!(
            parse(&format!("{id}:{}", AlertEvent::Resolved.to_proto() as i32)),
            Some((id, AlertEvent::Resolved, None))
        );
        assert_eq!(
            parse(&format!(
                "{id}:{}:620702001:620702",
                AlertEvent::Transferred.to_proto() as i32
            )),
            Some((
                id,
                AlertEvent::Transferred,
                Some(Jurisdiction {
                    township_code: "620702001".into(),
                    county_code: "620702".into()
                })
            ))
        );
        assert_eq!(parse(&format!("{id}:1")), None, "CURRENT is never published");
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(&format!("{id}:x")), None);
    }

    #[test]
    fn a_transfer_concerns_the_streams_of_both_jurisdictions() {
        let mut alert = crate::domain::alert::tests::missed_checkin();
        let old = alert.jurisdiction.clone();
        let new = Jurisdiction {
            township_code: "620702002".into(),
            county_code: "620702".into(),
        };
        alert.move_to(new.clone(), alert.raised_at);
        let change = LiveChange {
            event: Some(AlertEvent::Transferred),
            alert,
            previous: Some(old.clone()),
        };
        assert!(change.concerns(&old));
        assert!(change.concerns(&new));
        assert!(!change.concerns(&Jurisdiction {
            township_code: "620702003".into(),
            county_code: "620702".into(),
        }));
    }
}
