//! The check-in gRPC API, thin: each handler gets the caller, checks its role, converts the
//! request (`request`), loads through `store`, applies the `domain` rules, writes through
//! `store` in one [`Change`] (rows, `checkin.recorded` event and audit record together) and
//! converts the result (`response`).
//!
//! Idempotency: the client-generated check-in id is the primary key and the stored content
//! fingerprint tells a retry (same content: the stored check-in is returned, nothing is
//! written or published) from a conflicting reuse of the id (`AlreadyExists`).

use std::sync::Arc;

use mesh_kit::{
    auth::{self, Caller, Role},
    change::{Changes, Tx},
    clock::SharedClock,
    error::ServiceError,
    outbox::NewEvent,
    page::Cursors,
};
use mesh_proto::checkin as pb;
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        self, AreaPolicy, Checkin, Jurisdiction, PermittedArea, RecordError, Rules,
        sync::{self, ItemFailure, Supervision},
    },
    request, response, store,
};

/// Event type of a stored check-in.
const CHECKIN_RECORDED: &str = "checkin.recorded";

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
    /// Topic of `checkin.recorded`.
    topic: String,
    rules: Arc<Rules>,
    areas: AreaPolicy,
}

/// What recording one check-in came to.
enum Recorded {
    /// Stored now (and `checkin.recorded` enqueued).
    Accepted(Checkin),
    /// Already stored with the same content: the stored check-in, nothing written.
    Duplicate(Checkin),
}

fn ensure_access(caller: &Caller, jurisdiction: &Jurisdiction) -> Result<(), ServiceError> {
    caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)
}

/// Why one check-in was not stored: a rule of check-ins (which an offline batch tells the app
/// to drop or to retry), or any other error.
#[derive(Debug)]
enum Failure {
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

/// Answers a check-in whose id is already stored: the stored one for a retry with the
/// same content (to callers who may see it), `AlreadyExists` otherwise.
fn replay(caller: &Caller, stored: Checkin, fingerprint: &[u8]) -> Result<Recorded, Failure> {
    domain::check_retry(&stored, fingerprint)?;
    ensure_access(caller, &stored.jurisdiction)?;
    Ok(Recorded::Duplicate(stored))
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

impl Checkins {
    pub fn new(
        changes: Changes,
        cursors: Cursors,
        clock: SharedClock,
        topic: String,
        rules: Rules,
        areas: AreaPolicy,
    ) -> Self {
        Self {
            changes,
            cursors,
            clock,
            topic,
            rules: Arc::new(rules),
            areas,
        }
    }

    /// Records one check-in (RecordCheckin, or one item of an offline batch). Field paths in
    /// errors start with `prefix`.
    async fn record(&self, caller: &Caller, new: &pb::NewCheckin, prefix: &str) -> Result<Recorded, Failure> {
        let fingerprint = request::fingerprint(new);
        // A retry answers from what is stored, whatever has changed since (the device-time
        // window has moved on, the supervisee's status has changed): same question, same answer.
        if let Ok(id) = new.checkin_id.trim().parse::<Uuid>()
            && let Some(stored) = store::find_checkin(self.changes.pool(), id).await?
        {
            return replay(caller, stored, &fingerprint);
        }

        let now = self.clock.now();
        let officer_subject = (caller.role == Role::Officer).then_some(caller.subject.as_str());
        let valid = request::checkin(new, prefix, now, &self.rules, officer_subject)?;

        let mut change = self.changes.begin().await?;
        let supervisee = store::find_supervisee(&mut change, valid.supervisee_id)
            .await?
            .ok_or(RecordError::UnknownSupervisee)?;
        let at_capture = store::supervision_at(&mut change, valid.supervisee_id, valid.device_time).await?;
        let supervision = Supervision {
            now: (supervisee.jurisdiction, supervisee.status),
            at_capture: at_capture.map(|then| (then.jurisdiction, then.status)),
        };
        let jurisdiction = sync::attribute(&supervision, |jurisdiction| {
            ensure_access(caller, jurisdiction).is_ok()
        })?;
        // Without a position there is nothing to test against the area.
        let circles = match valid.position {
            Some(_) => {
                let set = store::area_circles(&mut change, &jurisdiction.township_code).await?;
                self.areas.circles(set, &jurisdiction.county_code)
            }
            None => Vec::new(),
        };
        let checkin = domain::assess(valid, jurisdiction, &circles, now, &self.rules, fingerprint);
        let Some(stored) = store::insert_checkin(&mut change, &checkin, caller).await? else {
            // A concurrent call with the same id committed first: answer as a retry would.
            drop(change);
            let stored = store::find_checkin(self.changes.pool(), checkin.checkin_id)
                .await?
                .ok_or_else(|| ServiceError::internal("check-in missing after an id conflict"))?;
            return replay(caller, stored, &fingerprint);
        };

        let event = NewEvent {
            topic: self.topic.clone(),
            key: stored.supervisee_id.to_string(),
            event_type: CHECKIN_RECORDED,
            payload: response::recorded(&stored, caller).encode_to_vec(),
            occurred_at: stored.received_at,
        };
        let detail = serde_json::json!({
            "checkin_id": stored.checkin_id,
            "method": stored.method.as_str(),
            "captured_offline": stored.captured_offline,
            "out_of_area": stored.area.out_of_area,
        });
        change
            .publish(caller, event, Some(stored.supervisee_id), detail)
            .await?;
        change.commit().await?;
        // Ids and flags only: positions are personal data and stay out of logs.
        tracing::info!(
            checkin_id = %stored.checkin_id,
            supervisee_id = %stored.supervisee_id,
            method = stored.method.as_str(),
            captured_offline = stored.captured_offline,
            out_of_area = stored.area.out_of_area,
            identity_verified = stored.identity_verified,
            "check-in recorded"
        );
        Ok(Recorded::Accepted(stored))
    }

    async fn record_checkin(
        &self,
        request: Request<pb::RecordCheckinRequest>,
    ) -> Result<pb::RecordCheckinResponse, ServiceError> {
        let caller = auth::caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let new = request::record(request.into_inner())?;
        let (checkin, duplicate) = match self.record(&caller, &new, "checkin.").await? {
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
        // Items are stored one by one, each in its own transaction: one bad item never
        // costs the others, and a batch cut short by an outage is simply sent again.
        let mut results = Vec::with_capacity(items.len());
        let (mut accepted, mut duplicates, mut rejected, mut retry_later) = (0u32, 0u32, 0u32, 0u32);
        for (index, item) in items.iter().enumerate() {
            let mut result = pb::SyncItemResult {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                checkin_id: item.checkin_id.clone(),
                ..Default::default()
            };
            match self.record(&caller, item, "").await {
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
