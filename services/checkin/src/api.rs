//! The check-in gRPC API, thin: each handler gets the caller, checks its role, converts the
//! request (`request`), loads through `store`, applies the `domain` rules, writes through
//! `store` in one transaction (rows, `checkin.recorded` event and audit record together) and
//! converts the result (`response`). Check-ins are recorded a group at a time (`record`):
//! RecordCheckin through the group commit (`ingest`), an offline batch a chunk at a time.

use std::{collections::HashMap, sync::Arc};

use mesh_kit::{
    auth::{self, Caller, Role},
    change::{Changes, Tx},
    clock::SharedClock,
    error::ServiceError,
    page::Cursors,
    telemetry,
};
use mesh_proto::checkin as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{AreaPolicy, Checkin, PermittedArea, Rules, sync::ItemFailure},
    ingest::Ingest,
    record::{Failure, Recorded, Recorder, Submission, ensure_access, replay},
    request, response, store,
};

/// Most check-ins of an offline batch recorded in one transaction.
const BATCH_CHUNK: usize = crate::ingest::MAX_GROUP;

/// Roles that record and read check-ins (prisons do not).
const RECORDERS: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// Roles that set a township's permitted area: the township office itself, its county
/// bureau, or an admin (not individual officers).
const AREA_SETTERS: &[Role] = &[Role::TownshipOffice, Role::CountyBureau, Role::Admin];

/// The check-in service's handlers and what they share.
#[derive(Clone)]
pub struct Checkins {
    changes: Changes,
    cursors: Cursors,
    clock: SharedClock,
    rules: Arc<Rules>,
    areas: AreaPolicy,
    recorder: Recorder,
    ingest: Ingest,
}

/// A submitted check-in after validation: ready to record, or already answered.
enum Prepared {
    Valid(Submission),
    Answered(Result<Recorded, Failure>),
}

/// How a batch item that was not stored is answered: rejected or retry later, with its
/// reason and field; `None` fails the whole call (see [`rejection`]).
fn item_failure(failure: &Failure) -> Option<(ItemFailure, String, String)> {
    match failure {
        Failure::Record(error) => Some((error.item_failure(), error.to_string(), error.field().to_owned())),
        Failure::Service(error) => {
            rejection(error).map(|(reason, field)| (ItemFailure::Rejected, reason, field))
        }
    }
}

/// How a batch item failing with anything but a check-in rule is reported: rejected (a bad
/// field, say) with its reason and the field it blames, or `None` for failures that are no
/// fault of the item (infrastructure, authentication), which fail the
/// whole call so the client retries the batch (safe: items are idempotent).
fn rejection(error: &ServiceError) -> Option<(String, String)> {
    let field = match error {
        ServiceError::Invalid(_) => error.field().unwrap_or_default(),
        ServiceError::Conflict(_) => "checkin_id",
        ServiceError::FailedPrecondition(_) | ServiceError::Denied(_) | ServiceError::NotFound(_) => {
            "supervisee_id"
        }
        ServiceError::Unauthenticated(_)
        | ServiceError::DataLoss(_)
        | ServiceError::Unavailable(_)
        | ServiceError::Internal(_) => return None,
    };
    Some((error.public_message(), field.to_owned()))
}

/// Answers an item refused as invalid whose id an earlier item of the batch was accepted
/// under as a retry of that one (a reuse of its id, unless the content is the same), as if
/// the batch had been stored one item at a time.
fn answer_invalid_as_retries(
    caller: &Caller,
    items: &[pb::NewCheckin],
    answers: &mut [Option<Result<Recorded, Failure>>],
) {
    let mut accepted: HashMap<Uuid, Checkin> = HashMap::new();
    for (item, answer) in items.iter().zip(answers.iter_mut()) {
        match answer {
            Some(Ok(Recorded::Accepted(checkin))) => {
                accepted
                    .entry(checkin.checkin_id)
                    .or_insert_with(|| checkin.clone());
            }
            Some(Err(Failure::Service(ServiceError::Invalid(_)))) => {
                let earlier = item
                    .checkin_id
                    .trim()
                    .parse::<Uuid>()
                    .ok()
                    .and_then(|id| accepted.get(&id));
                if let Some(earlier) = earlier {
                    *answer = Some(replay(caller, earlier.clone(), &request::fingerprint(item)));
                }
            }
            _ => {}
        }
    }
}

impl Checkins {
    /// The handlers, with the ingesters of RecordCheckin started on the current runtime.
    pub fn new(
        changes: Changes,
        cursors: Cursors,
        clock: SharedClock,
        topic: String,
        rules: Rules,
        areas: AreaPolicy,
    ) -> Self {
        let rules = Arc::new(rules);
        let recorder = Recorder::new(changes.clone(), topic, rules.clone(), areas);
        Self {
            changes,
            cursors,
            clock,
            rules,
            areas,
            ingest: Ingest::start(recorder.clone()),
            recorder,
        }
    }

    /// Validates each submitted check-in; field paths in errors start with `prefix`. A
    /// check-in that is not valid (any more) may still be a retry of a stored one, which is
    /// answered from what is stored whatever has changed since (the device-time window has
    /// moved on, the supervisee's status has changed): same question, same answer. Valid
    /// retries are recognised when they are recorded.
    async fn prepare(
        &self,
        caller: &Caller,
        items: &[pb::NewCheckin],
        prefix: &str,
    ) -> Result<Vec<Prepared>, ServiceError> {
        let now = self.clock.now();
        let officer_subject = (caller.role == Role::Officer).then_some(caller.subject.as_str());
        let trace_headers = serde_json::to_value(telemetry::current_trace_headers()).unwrap_or_default();
        let mut prepared = Vec::with_capacity(items.len());
        let mut invalid = Vec::new();
        for (index, new) in items.iter().enumerate() {
            let fingerprint = request::fingerprint(new);
            prepared.push(
                match request::checkin(new, prefix, now, &self.rules, officer_subject) {
                    Ok(valid) => Prepared::Valid(Submission {
                        caller: caller.clone(),
                        valid,
                        fingerprint,
                        received_at: now,
                        trace_headers: trace_headers.clone(),
                    }),
                    Err(error) => {
                        if let Ok(id) = new.checkin_id.trim().parse::<Uuid>() {
                            invalid.push((index, id, fingerprint));
                        }
                        Prepared::Answered(Err(error.into()))
                    }
                },
            );
        }
        if !invalid.is_empty() {
            let ids: Vec<Uuid> = invalid.iter().map(|(_, id, _)| *id).collect();
            let stored = store::find_checkins(self.changes.pool(), &ids).await?;
            for (index, id, fingerprint) in invalid {
                if let (Some(stored), Some(slot)) = (stored.get(&id), prepared.get_mut(index)) {
                    *slot = Prepared::Answered(replay(caller, stored.clone(), &fingerprint));
                }
            }
        }
        Ok(prepared)
    }

    async fn record_checkin(
        &self,
        request: Request<pb::RecordCheckinRequest>,
    ) -> Result<pb::RecordCheckinResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let new = request::record(request.into_inner())?;
        let prepared = self.prepare(&caller, &[new], "checkin.").await?.pop();
        let recorded = match prepared {
            Some(Prepared::Valid(submission)) => self.ingest.record(submission).await?,
            Some(Prepared::Answered(answer)) => answer?,
            None => return Err(ServiceError::internal("no check-in prepared")),
        };
        let (checkin, duplicate) = match recorded {
            Recorded::Accepted(checkin) => (checkin, false),
            Recorded::Duplicate(checkin) => (checkin, true),
        };
        Ok(pb::RecordCheckinResponse {
            checkin: Some(response::checkin(&checkin)),
            duplicate,
        })
    }

    async fn sync_offline_batch(
        &self,
        request: Request<pb::SyncOfflineBatchRequest>,
    ) -> Result<pb::SyncOfflineBatchResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let request = request.into_inner();
        tracing::Span::current().record("items", request.checkins.len());
        let items = request::batch(request)?;
        let mut answers = Vec::with_capacity(items.len());
        let (mut positions, mut submissions) = (Vec::new(), Vec::new());
        for (index, prepared) in self.prepare(&caller, &items, "").await?.into_iter().enumerate() {
            match prepared {
                Prepared::Valid(submission) => {
                    answers.push(None);
                    positions.push(index);
                    submissions.push(submission);
                }
                Prepared::Answered(answer) => answers.push(Some(answer)),
            }
        }
        // One transaction per chunk: an item the chunk cannot store never costs the others
        // (see `Recorder::record`), and a batch cut short by an outage is simply sent again.
        for (positions, chunk) in positions.chunks(BATCH_CHUNK).zip(submissions.chunks(BATCH_CHUNK)) {
            let results = self.recorder.record(chunk).await;
            for (&index, result) in positions.iter().zip(results) {
                if let Some(answer) = answers.get_mut(index) {
                    *answer = Some(result);
                }
            }
        }
        answer_invalid_as_retries(&caller, &items, &mut answers);
        let mut results = Vec::with_capacity(items.len());
        let (mut accepted, mut duplicates, mut rejected, mut retry_later) = (0u32, 0u32, 0u32, 0u32);
        for (index, (item, answer)) in items.iter().zip(answers).enumerate() {
            let mut result = pb::SyncItemResult {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                checkin_id: item.checkin_id.clone(),
                ..Default::default()
            };
            let answer =
                answer.unwrap_or_else(|| Err(ServiceError::internal("batch item left unanswered").into()));
            match answer {
                Ok(Recorded::Accepted(checkin)) => {
                    accepted += 1;
                    result.set_outcome(pb::SyncItemOutcome::Accepted);
                    result.checkin = Some(response::checkin(&checkin));
                }
                Ok(Recorded::Duplicate(checkin)) => {
                    duplicates += 1;
                    result.set_outcome(pb::SyncItemOutcome::Duplicate);
                    result.checkin = Some(response::checkin(&checkin));
                }
                Err(failure) => {
                    let Some((outcome, reason, field)) = item_failure(&failure) else {
                        return Err(failure.into());
                    };
                    let outcome = match outcome {
                        ItemFailure::Rejected => {
                            rejected += 1;
                            pb::SyncItemOutcome::Rejected
                        }
                        ItemFailure::RetryLater => {
                            retry_later += 1;
                            pb::SyncItemOutcome::RetryLater
                        }
                    };
                    result.set_outcome(outcome);
                    result.reject_reason = reason;
                    result.reject_field = field;
                }
            }
            results.push(result);
        }
        tracing::info!(
            accepted,
            duplicates,
            rejected,
            retry_later,
            "offline batch synced"
        );
        Ok(pb::SyncOfflineBatchResponse { results })
    }

    async fn list_checkins(
        &self,
        request: Request<pb::ListCheckinsRequest>,
    ) -> Result<pb::ListCheckinsResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let query = request::list(request.get_ref(), &self.cursors)?;
        let mut change = self.changes.begin().await?;
        let supervisee = store::find_supervisee(&mut change, query.supervisee_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("no such supervisee"))?;
        ensure_access(&caller, &supervisee.jurisdiction)?;
        let rows = store::list_checkins(
            &mut change,
            query.supervisee_id,
            (query.start, query.end),
            query.page.after,
            query.page.fetch_limit(),
        )
        .await?;
        let (checkins, page) = self
            .cursors
            .finish(&query.scope(), query.page.size, rows, |checkin| {
                (checkin.device_time, checkin.checkin_id)
            });
        let detail = serde_json::json!({
            "start": query.start, "end": query.end, "returned": checkins.len(),
        });
        change
            .audit(&caller, "checkin.list", Some(query.supervisee_id), None, detail)
            .await?;
        change.commit().await?;
        Ok(pb::ListCheckinsResponse {
            checkins: checkins.iter().map(response::checkin).collect(),
            page: Some(page),
        })
    }

    async fn set_permitted_area(
        &self,
        request: Request<pb::SetPermittedAreaRequest>,
    ) -> Result<pb::SetPermittedAreaResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(AREA_SETTERS)?;
        let request = request.into_inner();
        let township = request::township("township_code", &request.township_code)?;
        tracing::Span::current().record("township_code", township.township_code.as_str());
        let circles = request::circles(&request.circles)?;
        ensure_access(&caller, &township)?;
        let now = self.clock.now();

        let mut change = self.changes.begin().await?;
        let version = store::replace_area(&mut change, &township, &circles, &caller, now).await?;
        let detail = serde_json::json!({
            "township_code": township.township_code, "circles": circles.len(), "version": version.version,
        });
        change
            .audit(&caller, "permitted_area.set", None, None, detail)
            .await?;
        change.commit().await?;
        tracing::info!(
            version = version.version,
            circles = circles.len(),
            "permitted area set"
        );
        Ok(pb::SetPermittedAreaResponse {
            area: Some(response::area(&PermittedArea {
                jurisdiction: township,
                circles,
                set: Some(version),
            })),
        })
    }

    async fn get_permitted_area(
        &self,
        request: Request<pb::GetPermittedAreaRequest>,
    ) -> Result<pb::GetPermittedAreaResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let township = request::township("township_code", &request.get_ref().township_code)?;
        ensure_access(&caller, &township)?;
        let mut conn = self.changes.pool().acquire().await?;
        let stored = store::find_area(&mut conn, &township.township_code).await?;
        let area = self.areas.area(township, stored)?;
        Ok(pb::GetPermittedAreaResponse {
            area: Some(response::area(&area)),
        })
    }
}

#[tonic::async_trait]
impl pb::checkin_service_server::CheckinService for Checkins {
    #[tracing::instrument(skip_all)]
    async fn record_checkin(
        &self,
        request: Request<pb::RecordCheckinRequest>,
    ) -> Result<Response<pb::RecordCheckinResponse>, Status> {
        Ok(Response::new(Checkins::record_checkin(self, request).await?))
    }

    #[tracing::instrument(skip_all, fields(items))]
    async fn sync_offline_batch(
        &self,
        request: Request<pb::SyncOfflineBatchRequest>,
    ) -> Result<Response<pb::SyncOfflineBatchResponse>, Status> {
        Ok(Response::new(Checkins::sync_offline_batch(self, request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_checkins(
        &self,
        request: Request<pb::ListCheckinsRequest>,
    ) -> Result<Response<pb::ListCheckinsResponse>, Status> {
        Ok(Response::new(Checkins::list_checkins(self, request).await?))
    }

    #[tracing::instrument(skip_all, fields(township_code))]
    async fn set_permitted_area(
        &self,
        request: Request<pb::SetPermittedAreaRequest>,
    ) -> Result<Response<pb::SetPermittedAreaResponse>, Status> {
        Ok(Response::new(Checkins::set_permitted_area(self, request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_permitted_area(
        &self,
        request: Request<pb::GetPermittedAreaRequest>,
    ) -> Result<Response<pb::GetPermittedAreaResponse>, Status> {
        Ok(Response::new(Checkins::get_permitted_area(self, request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordError;

    #[test]
    fn infrastructure_errors_fail_the_batch_and_the_rest_reject_the_item() {
        assert_eq!(rejection(&ServiceError::internal("x")), None);
        assert_eq!(rejection(&ServiceError::Unavailable("x".into())), None);
        assert_eq!(rejection(&ServiceError::Unauthenticated("x".into())), None);
        assert_eq!(
            rejection(&ServiceError::conflict("taken")),
            Some(("taken".to_owned(), "checkin_id".to_owned()))
        );
        assert_eq!(
            rejection(&ServiceError::invalid("device_time", "too old")),
            Some(("device_time: too old".to_owned(), "device_time".to_owned()))
        );
        for error in [ServiceError::denied("no"), ServiceError::not_found("no")] {
            assert_eq!(
                rejection(&error).map(|(_, field)| field),
                Some("supervisee_id".to_owned())
            );
        }
    }

    #[test]
    fn a_check_in_rule_decides_between_rejected_and_retry_later() {
        let unknown = item_failure(&Failure::Record(RecordError::UnknownSupervisee));
        assert_eq!(
            unknown,
            Some((
                ItemFailure::RetryLater,
                RecordError::UnknownSupervisee.to_string(),
                "supervisee_id".to_owned()
            ))
        );
        let reused = item_failure(&Failure::Record(RecordError::IdReused));
        assert_eq!(
            reused.map(|(failure, _, field)| (failure, field)),
            Some((ItemFailure::Rejected, "checkin_id".to_owned()))
        );
        let invalid = item_failure(&Failure::Service(ServiceError::invalid("device_time", "too old")));
        assert_eq!(
            invalid.map(|(failure, _, _)| failure),
            Some(ItemFailure::Rejected)
        );
        assert_eq!(
            item_failure(&Failure::Service(ServiceError::Unavailable("x".into()))),
            None
        );
        // The single-check-in RPC keeps its status codes.
        assert!(matches!(
            ServiceError::from(Failure::Record(RecordError::OutsideJurisdiction)),
            ServiceError::Denied(_)
        ));
    }
}
