//! One webhook POST: the leased notifications it carries (one, or a batch for an endpoint
//! that opted in), its body and headers, and what its outcome means for each notification
//! (`domain::redelivery` per notification: a batch fails or succeeds as a whole, but each of
//! its notifications keeps its own attempts, backoff, escalation and end).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::failure::Failure;
use crate::{
    domain::redelivery::{self, RetryPolicy},
    notify::{self, HEADER_BATCH_SIZE, HEADER_EVENT_TYPE, HEADER_NOTIFICATION_ID},
    store::deliveries::{Attempt, Leased},
};

/// The notifications of one POST to one endpoint.
#[derive(Debug)]
pub struct Post {
    pub endpoint_id: Uuid,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    /// The endpoint's township; empty for a county bureau's endpoint.
    pub endpoint_township: String,
    /// The endpoint takes batches (even of one), else single notifications.
    pub batched: bool,
    /// In the order they came due; exactly one unless `batched`.
    pub notifications: Vec<Leased>,
}

/// The largest batch body, in bytes: under the 1 MiB a common reverse proxy accepts by
/// default (nginx's `client_max_body_size`), so a township's receiver never refuses a
/// midnight batch for its size. A batch is cut short before it would pass this; a single
/// notification is always sent, whatever its size.
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// Groups a lease into its POSTs (the lease numbered each endpoint's), each in due order,
/// a batch split where its body would pass `max_bytes`.
pub fn group(leased: Vec<Leased>, max_bytes: usize) -> Vec<Post> {
    let mut posts: BTreeMap<(Uuid, i64), Vec<Leased>> = BTreeMap::new();
    for notification in leased {
        posts
            .entry((notification.endpoint_id, notification.post))
            .or_default()
            .push(notification);
    }
    posts
        .into_values()
        .flat_map(|mut notifications| {
            notifications.sort_by_key(|n| (n.due_at, n.notification_id));
            split_by_size(notifications, max_bytes)
        })
        .filter_map(|notifications| {
            let first = notifications.first()?;
            Some(Post {
                endpoint_id: first.endpoint_id,
                url: first.url.clone(),
                secret_sealed: first.secret_sealed.clone(),
                endpoint_township: first.endpoint_township.clone(),
                batched: first.max_batch_size > 1,
                notifications,
            })
        })
        .collect()
}

/// Cuts notifications, in order, into runs whose batch body (`notify::batch_body`: each body,
/// a comma between them, and the envelope) stays within `max_bytes`; a notification larger
/// than that on its own goes alone.
fn split_by_size(notifications: Vec<Leased>, max_bytes: usize) -> Vec<Vec<Leased>> {
    let envelope = notify::batch_body(std::iter::empty()).len();
    let mut runs: Vec<Vec<Leased>> = Vec::new();
    // The size of the last run's body as `batch_body` writes it.
    let mut size = 0;
    for notification in notifications {
        let len = notification.body.len();
        match runs.last_mut() {
            Some(run) if size + 1 + len <= max_bytes => {
                size += 1 + len;
                run.push(notification);
            }
            _ => {
                size = envelope + len;
                runs.push(vec![notification]);
            }
        }
    }
    runs
}

impl Post {
    /// The body: the notification's own, or the `WebhookBatch` of them all.
    pub fn body(&self) -> Vec<u8> {
        match self.notifications.as_slice() {
            [single] if !self.batched => single.body.clone(),
            notifications => notify::batch_body(notifications.iter().map(|n| n.body.as_slice())),
        }
    }

    /// The headers besides content type, timestamp and signature: a single notification's
    /// id and event type, or a batch's size.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self.notifications.as_slice() {
            [single] if !self.batched => vec![
                (HEADER_NOTIFICATION_ID, single.notification_id.to_string()),
                (HEADER_EVENT_TYPE, single.event_type.clone()),
            ],
            notifications => vec![(HEADER_BATCH_SIZE, notifications.len().to_string())],
        }
    }
}

/// How one POST went: the 2xx status, or why not.
pub type Outcome = Result<u16, Failure>;

/// A notification's attempt in a POST and whether its alert must now be escalated.
#[derive(Debug)]
pub struct Recorded {
    pub notification_id: Uuid,
    pub alert_id: Uuid,
    pub attempt: Attempt,
    pub escalate: bool,
}

/// Each notification's attempt: the POST's outcome, numbered and scheduled for that
/// notification by `domain::redelivery`.
pub fn attempts(
    post: &Post,
    outcome: &Outcome,
    attempted_at: DateTime<Utc>,
    duration_ms: i32,
    retry: &RetryPolicy,
) -> Vec<Recorded> {
    let (delivered, http_status, error) = match outcome {
        Ok(status) => (true, i32::from(*status), String::new()),
        Err(failure) => (false, i32::from(failure.http_status()), failure.to_string()),
    };
    post.notifications
        .iter()
        .map(|notification| {
            let attempt_number = notification.attempts + 1;
            let after = (!delivered).then(|| {
                redelivery::after_failure(
                    retry,
                    u32::try_from(attempt_number).unwrap_or(u32::MAX),
                    notification.created_at,
                    attempted_at,
                )
            });
            Recorded {
                notification_id: notification.notification_id,
                alert_id: notification.alert_id,
                attempt: Attempt {
                    attempt_number,
                    attempted_at,
                    http_status,
                    delivered,
                    gave_up: after.is_some_and(|after| after.next_attempt_at.is_none()),
                    error: error.clone(),
                    duration_ms,
                    next_attempt_at: after.and_then(|after| after.next_attempt_at),
                },
                escalate: after.is_some_and(|after| after.escalate),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::alert::tests::utc;

    fn leased(endpoint: u128, post: i64, id: u128, due: &str, max_batch_size: i32) -> Leased {
        Leased {
            notification_id: Uuid::from_u128(id),
            alert_id: Uuid::from_u128(id + 1000),
            event_type: "alert.raised".into(),
            endpoint_id: Uuid::from_u128(endpoint),
            body: format!("{{\"notificationId\":\"{id}\"}}").into_bytes(),
            attempts: 0,
            created_at: utc("2026-12-05T00:00:00Z"),
            due_at: utc(due),
            url: format!("https://office{endpoint}.example/hook"),
            secret_sealed: Vec::new(),
            endpoint_township: "620702001".into(),
            max_batch_size,
            post,
        }
    }

    fn group_all(leased: Vec<Leased>) -> Vec<Post> {
        group(leased, MAX_BATCH_BYTES)
    }

    fn ids(post: &Post) -> Vec<u128> {
        post.notifications
            .iter()
            .map(|n| n.notification_id.as_u128())
            .collect()
    }

    #[test]
    fn a_lease_is_grouped_into_its_posts_each_in_due_order() {
        let posts = group_all(vec![
            leased(1, 0, 12, "2026-12-05T00:00:02Z", 3),
            leased(2, 0, 20, "2026-12-05T00:00:01Z", 1),
            leased(1, 0, 11, "2026-12-05T00:00:01Z", 3),
            leased(1, 1, 14, "2026-12-05T00:00:04Z", 3),
            leased(2, 1, 21, "2026-12-05T00:00:02Z", 1),
        ]);
        let shape: Vec<(u128, bool, Vec<u128>)> = posts
            .iter()
            .map(|post| (post.endpoint_id.as_u128(), post.batched, ids(post)))
            .collect();
        assert_eq!(
            shape,
            [
                (1, true, vec![11, 12]),
                (1, true, vec![14]),
                (2, false, vec![20]),
                (2, false, vec![21]),
            ]
        );
        assert_eq!(posts[0].url, "https://office1.example/hook");
    }

    #[test]
    fn a_batch_is_cut_where_its_body_would_pass_the_byte_cap() {
        let lease: Vec<Leased> = (11..=15)
            .map(|id| leased(1, 0, id, "2026-12-05T00:00:01Z", 100))
            .collect();
        let two = notify::batch_body([lease[0].body.as_slice(), lease[1].body.as_slice()]).len();
        let posts = group(lease.clone(), two);
        let shape: Vec<Vec<u128>> = posts.iter().map(ids).collect();
        assert_eq!(shape, [vec![11, 12], vec![13, 14], vec![15]]);
        assert!(posts.iter().all(|post| post.body().len() <= two));
        // One byte less, and every batch holds one; a notification larger than the cap still
        // goes, alone.
        let shape: Vec<Vec<u128>> = group(lease.clone(), two - 1).iter().map(ids).collect();
        assert_eq!(shape, [vec![11], vec![12], vec![13], vec![14], vec![15]]);
        assert_eq!(group(lease, 1).len(), 5);
    }

    #[test]
    fn a_single_notification_goes_as_today_and_a_batch_as_a_webhook_batch() {
        let single = &group_all(vec![leased(2, 0, 20, "2026-12-05T00:00:01Z", 1)])[0];
        assert_eq!(single.body(), single.notifications[0].body);
        assert_eq!(
            single.headers(),
            [
                (HEADER_NOTIFICATION_ID, Uuid::from_u128(20).to_string()),
                (HEADER_EVENT_TYPE, "alert.raised".to_owned())
            ]
        );
        let batch = &group_all(vec![
            leased(1, 0, 11, "2026-12-05T00:00:01Z", 3),
            leased(1, 0, 12, "2026-12-05T00:00:02Z", 3),
        ])[0];
        assert_eq!(
            batch.body(),
            b"{\"notifications\":[{\"notificationId\":\"11\"},{\"notificationId\":\"12\"}]}"
        );
        assert_eq!(batch.headers(), [(HEADER_BATCH_SIZE, "2".to_owned())]);
        // An endpoint that takes batches gets one even when only one notification is due.
        let one = &group_all(vec![leased(1, 0, 11, "2026-12-05T00:00:01Z", 3)])[0];
        assert_eq!(one.headers(), [(HEADER_BATCH_SIZE, "1".to_owned())]);
    }

    #[test]
    fn a_failed_batch_schedules_each_notification_by_its_own_attempts() {
        let retry = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            escalate_after: 3,
            max_attempts: 4,
            give_up_after: Duration::from_secs(3600),
        };
        let mut notifications = vec![
            leased(1, 0, 11, "2026-12-05T00:00:01Z", 10),
            leased(1, 0, 12, "2026-12-05T00:00:01Z", 10),
            leased(1, 0, 13, "2026-12-05T00:00:01Z", 10),
        ];
        // A fresh one, one at the escalation threshold, one at its last attempt.
        notifications[1].attempts = 2;
        notifications[2].attempts = 3;
        let post = &group_all(notifications)[0];
        let at = utc("2026-12-05T00:00:10Z");
        let failed = attempts(post, &Err(Failure::Status(503)), at, 7, &retry);
        let got: Vec<(i32, Option<DateTime<Utc>>, bool, bool)> = failed
            .iter()
            .map(|r| {
                (
                    r.attempt.attempt_number,
                    r.attempt.next_attempt_at,
                    r.escalate,
                    r.attempt.gave_up,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, Some(utc("2026-12-05T00:00:11Z")), false, false),
                (3, Some(utc("2026-12-05T00:00:14Z")), true, false),
                (4, None, false, true),
            ]
        );
        assert!(
            failed
                .iter()
                .all(|r| r.attempt.http_status == 503 && r.attempt.error == "HTTP 503")
        );

        let delivered = attempts(post, &Ok(204), at, 7, &retry);
        assert!(delivered.iter().all(|r| r.attempt.delivered
            && r.attempt.next_attempt_at.is_none()
            && !r.escalate
            && r.attempt.error.is_empty()));
        assert_eq!(delivered[2].attempt.attempt_number, 4);
    }
}
