//! Group commit of RecordCheckin: the handlers queue validated check-ins and a few
//! ingesters each take what is queued (up to [`MAX_GROUP`]), record it in one transaction
//! ([`Recorder::record`]) and answer every caller with its own result. Nobody waits for a
//! group to fill: an idle ingester takes a lone check-in at once, and check-ins group up
//! only while the ingesters are busy committing, which is when grouping pays. A caller is
//! answered only after its check-in has committed, so nothing acknowledged is lost.

use std::sync::Arc;

use mesh_kit::error::ServiceError;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::record::{Failure, Recorded, Recorder, Submission};

/// Most check-ins one transaction takes: bounds the statements and the locks it holds.
pub const MAX_GROUP: usize = 128;
/// Transactions in flight at once: one groups while another commits; fewer than the pool's
/// connections, which the consumer and the other RPCs share.
const INGESTERS: usize = 3;
/// Check-ins that may wait; beyond, callers wait to queue (backpressure).
const QUEUE: usize = 4 * MAX_GROUP;

/// A queued check-in and where its answer goes.
struct Job {
    submission: Submission,
    reply: oneshot::Sender<Result<Recorded, Failure>>,
}

/// The handlers' side of the queue. The ingesters stop once it is dropped and the queue
/// is empty (after the server has drained its calls).
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the ingesters on the current runtime.
    pub fn start(recorder: Recorder) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..INGESTERS {
            tokio::spawn(ingest(recorder.clone(), jobs.clone()));
        }
        Self { queue }
    }

    /// Records `submission` with whatever else is queued, and answers it.
    pub async fn record(&self, submission: Submission) -> Result<Recorded, Failure> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ServiceError::Unavailable("check-in ingest stopped".into());
        self.queue
            .send(Job { submission, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One ingester: takes a group, records it, answers, until the queue is closed.
async fn ingest(recorder: Recorder, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    while let Some(group) = next_group(&jobs).await {
        let (submissions, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|job| (job.submission, job.reply)).unzip();
        let results = recorder.record(&submissions).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that gave up no longer listens; its check-in stays stored and a
            // retry is answered from it.
            let _ = reply.send(result);
        }
    }
}

/// The next check-in and whatever else is queued behind it, up to [`MAX_GROUP`]; `None`
/// once the queue is closed and empty.
async fn next_group(jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut jobs = jobs.lock().await;
    let first = jobs.recv().await?;
    let mut group = vec![first];
    while group.len() < MAX_GROUP
        && let Ok(job) = jobs.try_recv()
    {
        group.push(job);
    }
    Some(group)
}
