//! Batched webhook delivery end to end (issue 11, item 3): an endpoint registered with a
//! batch size receives a wave of notifications in a few signed `WebhookBatch` POSTs, a batch
//! the receiver refuses is retried without losing any of its notifications (each attempt
//! recorded per notification), and an endpoint that did not opt in still gets one
//! notification per POST.

use std::{collections::HashSet, time::Duration};

use mesh::{
    harness::WEBHOOK_SECRET,
    receiver::{Post, Receiver},
};
use mesh_e2e::{
    HOME_COUNTY, Mesh, authorized, count, county_bureau, eventually, fast_risk_alert, jurisdiction, register,
    reported_in,
};
use mesh_proto::alert as pb;

/// How many people miss their check-in at once.
const WAVE: usize = 24;
/// The township endpoint's batch size: the wave needs at least three POSTs.
const BATCH: u32 = 10;

async fn mesh() -> Mesh {
    fast_risk_alert(&[
        ("MESH_WEBHOOK_RETRY_BASE_MS", "200"),
        ("MESH_WEBHOOK_RETRY_MAX_SECS", "1"),
    ])
    .start(&["registry", "risk-alert"])
    .await
    .expect("mesh")
}

/// Registers `count` people of the home township who reported in now; under the fast
/// policy each misses a check-in 5 s later. Returns their ids.
async fn wave(mesh: &Mesh, count: usize, first: u16) -> HashSet<String> {
    let mut ids = HashSet::new();
    for n in 0..count {
        let n = first + u16::try_from(n).expect("small wave");
        ids.insert(register(mesh, reported_in(n, chrono::Utc::now())).await);
    }
    ids
}

/// Waits until risk-alert has raised a missed check-in alert for `count` people.
async fn raised(mesh: &Mesh, count: usize) {
    let want = i64::try_from(count).expect("small");
    eventually("the wave's alerts", Duration::from_secs(60), async || {
        let raised = mesh_e2e::count(
            mesh,
            "risk-alert",
            "SELECT count(DISTINCT subject_id) FROM alerts WHERE kind = 'missed_checkin'",
        )
        .await;
        (raised >= want).then_some(())
    })
    .await;
}

/// The subjects of the `event_type` notifications `receiver` got, checking that each came
/// once and signed.
fn subjects(receiver: &Receiver, event_type: &str) -> HashSet<String> {
    let received: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|n| n.event_type == event_type)
        .collect();
    assert!(received.iter().all(|n| n.signature_valid), "every POST signed");
    let ids: HashSet<&str> = received.iter().map(|n| n.notification_id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "no notification twice");
    received.iter().map(|n| n.subject_id().to_owned()).collect()
}

#[tokio::test]
async fn a_batch_endpoint_receives_a_wave_in_few_signed_posts_and_a_single_endpoint_one_per_post() {
    let mesh = mesh().await;
    // The county bureau did not opt in: it hears of the wave one notification per POST,
    // standing in for the township that has no endpoint yet.
    let bureau = Receiver::start(WEBHOOK_SECRET).await.expect("receiver");
    mesh.risk_alert()
        .register_endpoint(authorized(
            pb::RegisterEndpointRequest {
                jurisdiction: Some(jurisdiction("", HOME_COUNTY)),
                url: bureau.url(),
                secret: WEBHOOK_SECRET.into(),
                description: "县区司法局".into(),
                max_batch_size: 0,
            },
            &mesh.token(&county_bureau("bureau-ganzhou", HOME_COUNTY)),
        ))
        .await
        .expect("bureau endpoint");
    let people = wave(&mesh, WAVE, 300).await;
    raised(&mesh, WAVE).await;
    bureau
        .wait_for(Duration::from_secs(30), |r| r.len() >= WAVE)
        .await;
    assert_eq!(subjects(&bureau, "alert.raised"), people);
    let posts = bureau.posts();
    assert_eq!(posts.len(), WAVE, "one POST per notification: {posts:?}");
    assert!(posts.iter().all(|post| *post
        == Post {
            batch_size: None,
            notifications: 1,
            signature_valid: true,
            status: 204
        }));

    // The township registers with batches: it hears at once of the whole wave still open,
    // in a few POSTs of at most BATCH.
    mesh.register_batched_webhook(BATCH)
        .await
        .expect("township endpoint");
    let township = mesh.receiver();
    township
        .wait_for(Duration::from_secs(30), |r| r.len() >= WAVE)
        .await;
    assert_eq!(subjects(township, "alert.current"), people);
    let posts = township.posts();
    let expected = WAVE.div_ceil(BATCH as usize);
    assert!(
        (expected..=expected + 2).contains(&posts.len()),
        "{WAVE} notifications in batches of {BATCH}: {posts:?}"
    );
    for post in &posts {
        let size = post.batch_size.expect("a batch");
        assert!((1..=BATCH as usize).contains(&size), "{post:?}");
        assert_eq!(post.notifications, size, "the header counts the body");
        assert!(post.signature_valid && post.status == 204, "{post:?}");
    }
    // Every notification's attempt is recorded, each once.
    let recorded = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM delivery_attempts WHERE event_type = 'alert.current' AND delivered",
    )
    .await;
    assert_eq!(recorded, WAVE as i64);
}

#[tokio::test]
async fn a_refused_batch_is_retried_and_none_of_its_notifications_is_lost() {
    let mesh = mesh().await;
    let people = wave(&mesh, 12, 400).await;
    raised(&mesh, 12).await;
    // The township's system answers 503 to the first two POSTs, then recovers.
    mesh.receiver().refuse_next(2);
    mesh.register_batched_webhook(BATCH)
        .await
        .expect("township endpoint");
    let township = mesh.receiver();
    township
        .wait_for(Duration::from_secs(30), |r| r.len() >= people.len())
        .await;
    assert_eq!(subjects(township, "alert.current"), people);

    let posts = township.posts();
    let refused: Vec<&Post> = posts.iter().filter(|post| post.status == 503).collect();
    assert_eq!(refused.len(), 2, "{posts:?}");
    let refused_notifications: usize = refused.iter().filter_map(|post| post.batch_size).sum();
    // Each refused notification has its own failed attempt and was delivered on a later one.
    let failed = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM delivery_attempts WHERE http_status = 503 AND NOT delivered
             AND attempt_number = 1 AND next_attempt_at IS NOT NULL",
    )
    .await;
    assert_eq!(failed, refused_notifications as i64);
    let retried = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM notifications WHERE delivered_at IS NOT NULL AND attempts = 2",
    )
    .await;
    assert_eq!(retried, refused_notifications as i64);
    let pending = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM notifications WHERE delivered_at IS NULL",
    )
    .await;
    assert_eq!(pending, 0);
}
