//! Recording check-ins, a group in one transaction: the group's stored ids, supervisees,
//! supervision histories and permitted areas are read once each, the new check-ins with
//! their `checkin.recorded` events and audit records are written set-based, and each
//! check-in gets its own answer. RecordCheckin's group commit (`ingest`) and each chunk of
//! an offline batch come through here; a group of one is the unbatched path.
//!
//! Idempotency: the client-generated check-in id is the primary key and the stored content
//! fingerprint tells a retry (same content: the stored check-in is returned, nothing is
//! written or published) from a conflicting reuse of the id (`AlreadyExists`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use mesh_kit::{
    auth::Caller,
    change::{Change, Changes, Tx},
    error::ServiceError,
};
use prost::Message;
use uuid::Uuid;

use crate::{
    domain::{
        self, AreaPolicy, Checkin, Jurisdiction, RecordError, Rules, ValidCheckin,
        sync::{self, Supervision},
    },
    response,
    store::{self, Publication},
};

/// Event type of a stored check-in.
const CHECKIN_RECORDED: &str = "checkin.recorded";

/// A validated check-in to record, with who sent it and when it arrived.
pub struct Submission {
    pub caller: Caller,
    pub valid: ValidCheckin,
    /// Fingerprint of the submitted content (see `request::fingerprint`).
    pub fingerprint: [u8; 32],
    /// When it arrived: the time its device time was judged against.
    pub received_at: DateTime<Utc>,
    /// W3C trace context of the request, carried on to its event.
    pub trace_headers: serde_json::Value,
}

/// What recording one check-in came to.
pub enum Recorded {
    /// Stored now (and `checkin.recorded` enqueued).
    Accepted(Checkin),
    /// Already stored with the same content: the stored check-in, nothing written.
    Duplicate(Checkin),
}

/// Why one check-in was not stored: a rule of check-ins (which an offline batch tells the app
/// to drop or to retry), or any other error.
#[derive(Debug)]
pub enum Failure {
    Record(RecordError),
    Service(ServiceError),
}

impl From<RecordError> for Failure {
    fn from(error: RecordError) -> Self {
        Failure::Record(error)
    }
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Failure::Service(error)
    }
}

impl From<Failure> for ServiceError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Record(error) => error.into(),
            Failure::Service(error) => error,
        }
    }
}

/// Whether `caller` may act for `jurisdiction`.
pub fn ensure_access(caller: &Caller, jurisdiction: &Jurisdiction) -> Result<(), ServiceError> {
    caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)
}

/// Answers a check-in whose id is already stored: to a caller outside the stored check-in's
/// jurisdiction, `PermissionDenied` whatever it sent (checked first, so whether the content
/// matches is not revealed to them); to others, the stored one for a retry with the same
/// content, `AlreadyExists` otherwise.
pub fn replay(caller: &Caller, stored: Checkin, fingerprint: &[u8]) -> Result<Recorded, Failure> {
    ensure_access(caller, &stored.jurisdiction)?;
    domain::check_retry(&stored, fingerprint)?;
    Ok(Recorded::Duplicate(stored))
}

/// What becomes of one check-in of a group.
enum Step {
    /// Answered already: a retry, or refused.
    Answered(Result<Recorded, Failure>),
    /// To be stored.
    Store(Checkin),
    /// Answered from what is stored under its id once the group is written: a second copy
    /// within the group.
    AsStored,
}

/// Records groups of check-ins on the service's database.
#[derive(Clone)]
pub struct Recorder {
    changes: Changes,
    /// Topic of `checkin.recorded`.
    topic: String,
    rules: Arc<Rules>,
    areas: AreaPolicy,
}

impl Recorder {
    pub fn new(changes: Changes, topic: String, rules: Arc<Rules>, areas: AreaPolicy) -> Self {
        Self {
            changes,
            topic,
            rules,
            areas,
        }
    }

    /// Records `group` in one transaction and answers each check-in, in order. If the
    /// transaction fails for anything but an outage, one check-in's data may be the cause:
    /// each is then recorded alone, so one bad check-in never costs the others and each
    /// caller hears its own precise error.
    pub async fn record(&self, group: &[Submission]) -> Vec<Result<Recorded, Failure>> {
        match self.record_together(group).await {
            Ok(results) => results,
            // Nothing of the group is stored: every caller hears so, and may retry.
            Err(ServiceError::Unavailable(reason)) => group
                .iter()
                .map(|_| Err(ServiceError::Unavailable(reason.clone()).into()))
                .collect(),
            Err(error) if group.len() == 1 => vec![Err(error.into())],
            Err(error) => {
                tracing::warn!(error = %error, checkins = group.len(), "group of check-ins failed; recording each alone");
                let mut results = Vec::with_capacity(group.len());
                for submission in group {
                    let alone = self.record_together(std::slice::from_ref(submission)).await;
                    results.push(match alone.map(|mut results| results.pop()) {
                        Ok(Some(result)) => result,
                        Ok(None) => Err(ServiceError::internal("no answer for a check-in").into()),
                        Err(error) => Err(error.into()),
                    });
                }
                results
            }
        }
    }

    /// [`Recorder::record`] in one transaction: the answers, or the error that rolled it back.
    async fn record_together(
        &self,
        group: &[Submission],
    ) -> Result<Vec<Result<Recorded, Failure>>, ServiceError> {
        let mut change = self.changes.begin().await?;
        let ids: Vec<Uuid> = group
            .iter()
            .map(|submission| submission.valid.checkin_id)
            .collect();
        let stored = store::find_checkins(&mut *change, &ids).await?;
        let fresh: Vec<&Submission> = group
            .iter()
            .filter(|submission| !stored.contains_key(&submission.valid.checkin_id))
            .collect();
        // In the order of `fresh`, which is the group's without the stored ones.
        let mut judged = self.judge(&mut change, &fresh).await?.into_iter();
        let mut storing = HashSet::new();
        let mut steps = Vec::with_capacity(group.len());
        for submission in group {
            let step = match stored.get(&submission.valid.checkin_id) {
                Some(stored) => Step::Answered(replay(
                    &submission.caller,
                    stored.clone(),
                    &submission.fingerprint,
                )),
                None => match judged.next() {
                    Some(Ok(checkin)) if storing.insert(checkin.checkin_id) => Step::Store(checkin),
                    Some(Ok(_)) => Step::AsStored,
                    Some(Err(error)) => Step::Answered(Err(error.into())),
                    None => return Err(ServiceError::internal("check-in left unjudged")),
                },
            };
            steps.push(step);
        }

        let to_store: Vec<(&Checkin, &Caller)> = steps
            .iter()
            .zip(group)
            .filter_map(|(step, submission)| match step {
                Step::Store(checkin) => Some((checkin, &submission.caller)),
                _ => None,
            })
            .collect();
        let mut inserted = match to_store.is_empty() {
            true => HashMap::new(),
            false => store::insert_checkins(&mut change, &to_store).await?,
        };
        // A twin within the group, or one a concurrent caller committed first, is read as
        // stored: answered as a retry would be.
        let twins: Vec<Uuid> = steps
            .iter()
            .zip(group)
            .filter(|(step, _)| match step {
                Step::Store(checkin) => !inserted.contains_key(&checkin.checkin_id),
                Step::AsStored => true,
                Step::Answered(_) => false,
            })
            .map(|(_, submission)| submission.valid.checkin_id)
            .collect();
        let twins = match twins.is_empty() {
            true => HashMap::new(),
            false => store::find_checkins(&mut *change, &twins).await?,
        };

        let mut results = Vec::with_capacity(group.len());
        let mut publications = Vec::new();
        for (step, submission) in steps.into_iter().zip(group) {
            let id = submission.valid.checkin_id;
            results.push(match step {
                Step::Answered(result) => result,
                Step::Store(_) if let Some(stored) = inserted.remove(&id) => {
                    publications.push(self.publication(&stored, submission));
                    Ok(Recorded::Accepted(stored))
                }
                Step::Store(_) | Step::AsStored => match twins.get(&id) {
                    Some(stored) => replay(&submission.caller, stored.clone(), &submission.fingerprint),
                    None => Err(ServiceError::internal("check-in missing after an id conflict").into()),
                },
            });
        }
        if !publications.is_empty() {
            store::publish_all(&mut change, &publications).await?;
            change.note_published();
        }
        change.commit().await?;
        for result in &results {
            if let Ok(Recorded::Accepted(checkin)) = result {
                log_recorded(checkin);
            }
        }
        Ok(results)
    }

    /// Who each of `fresh` is recorded for and how it is judged on arrival, in order; or why
    /// it is refused.
    async fn judge(
        &self,
        change: &mut Change,
        fresh: &[&Submission],
    ) -> Result<Vec<Result<Checkin, RecordError>>, ServiceError> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let supervisee_ids: Vec<Uuid> = fresh
            .iter()
            .map(|submission| submission.valid.supervisee_id)
            .collect();
        let supervisees = store::find_supervisees(change, &supervisee_ids).await?;
        let moments: Vec<_> = fresh
            .iter()
            .map(|submission| (submission.valid.supervisee_id, submission.valid.device_time))
            .collect();
        let at_capture = store::supervisions_at(change, &moments).await?;
        let jurisdictions: Vec<Result<Jurisdiction, RecordError>> = fresh
            .iter()
            .zip(at_capture)
            .map(|(submission, then)| {
                let now = supervisees
                    .get(&submission.valid.supervisee_id)
                    .ok_or(RecordError::UnknownSupervisee)?;
                let supervision = Supervision {
                    now: (now.jurisdiction.clone(), now.status),
                    at_capture: then.map(|then| (then.jurisdiction, then.status)),
                };
                sync::attribute(&supervision, |jurisdiction| {
                    ensure_access(&submission.caller, jurisdiction).is_ok()
                })
            })
            .collect();
        // Without a position there is nothing to test against the area.
        let townships: Vec<String> = fresh
            .iter()
            .zip(&jurisdictions)
            .filter(|(submission, _)| submission.valid.position.is_some())
            .filter_map(|(_, jurisdiction)| jurisdiction.as_ref().ok())
            .map(|jurisdiction| jurisdiction.township_code.clone())
            .collect();
        let set = match townships.is_empty() {
            true => HashMap::new(),
            false => store::circles_of(change, &townships).await?,
        };
        Ok(fresh
            .iter()
            .zip(jurisdictions)
            .map(|(submission, jurisdiction)| {
                let jurisdiction = jurisdiction?;
                let circles = match submission.valid.position {
                    Some(_) => {
                        let own = set.get(&jurisdiction.township_code).cloned().unwrap_or_default();
                        self.areas.circles(own, &jurisdiction.county_code)
                    }
                    None => Vec::new(),
                };
                Ok(domain::assess(
                    submission.valid.clone(),
                    jurisdiction,
                    &circles,
                    submission.received_at,
                    &self.rules,
                    submission.fingerprint,
                ))
            })
            .collect())
    }

    /// The `checkin.recorded` event of `stored` and its audit record.
    fn publication<'a>(&'a self, stored: &Checkin, submission: &'a Submission) -> Publication<'a> {
        Publication {
            topic: &self.topic,
            key: stored.supervisee_id.to_string(),
            event_type: CHECKIN_RECORDED,
            payload: response::recorded(stored, &submission.caller).encode_to_vec(),
            occurred_at: stored.received_at,
            trace_headers: submission.trace_headers.clone(),
            caller: &submission.caller,
            subject_id: stored.supervisee_id,
            detail: serde_json::json!({
                "checkin_id": stored.checkin_id,
                "method": stored.method.as_str(),
                "captured_offline": stored.captured_offline,
                "out_of_area": stored.area.out_of_area,
            }),
        }
    }
}

/// Ids and flags only: positions are personal data and stay out of logs.
fn log_recorded(checkin: &Checkin) {
    tracing::info!(
        checkin_id = %checkin.checkin_id,
        supervisee_id = %checkin.supervisee_id,
        method = checkin.method.as_str(),
        captured_offline = checkin.captured_offline,
        out_of_area = checkin.area.out_of_area,
        identity_verified = checkin.identity_verified,
        "check-in recorded"
    );
}
