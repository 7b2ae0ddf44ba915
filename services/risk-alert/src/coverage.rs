//! The coverage reconciliation: every `interval` it pages through the registry's people
//! under supervision and the handover service's handovers awaiting report-in, compares
//! each with what this service watches (`domain::coverage`), and for every gap raises a
//! coverage-gap alert to the person's township and county and restores the watch in the
//! same transaction. A gap that may be events still in flight (an unknown subject, an
//! older version) is reported only when a later round still finds it and the consumer's
//! progress (kit `lag`) has passed the source record by `tolerance`, so a broker outage or a
//! backlog is not taken for a gap; a current record that is not watched is reported at once.

use std::{collections::HashMap, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use mesh_kit::{
    CancellationToken,
    auth::{Caller, Role, TokenIssuer, authorized},
    change::{Change, Changes},
    clock::SharedClock,
    error::ServiceError,
    lag::{self, CaughtUp},
    proto_time::from_timestamp,
};
use mesh_proto::{
    common::{PageRequest, PageResponse},
    handover::{self as handover_pb, handover_service_client::HandoverServiceClient},
    registry::{self as registry_pb, registry_service_client::RegistryServiceClient},
};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    convert::jurisdiction_from_proto,
    domain::{
        alert::{AlertKind, Subject, SubjectKind},
        coverage::{self, Gap, Truth},
        policy::{Level, Track},
        watch::{HandoverStatus, SuperviseeSnapshot, SuperviseeStatus},
    },
    lifecycle::Lifecycle,
    projection::Projection,
    store,
    watchlist::Watchlist,
};

/// Where the sources of truth are, and how often and how patiently to compare.
#[derive(Debug, Clone)]
pub struct CoverageConfig {
    pub registry_url: Option<String>,
    pub handover_url: Option<String>,
    pub interval: Duration,
    pub tolerance: Duration,
}

/// The services whose truth the reconciliation reads: the audiences of its tokens.
const SOURCES: [&str; 2] = ["registry", "handover"];

/// Runs the reconciliation.
pub struct Reconciler {
    pub config: CoverageConfig,
    pub changes: Changes,
    pub projection: Projection,
    pub watchlist: Watchlist,
    pub lifecycle: Lifecycle,
    pub clock: SharedClock,
    /// Risk-alert's own key, trusted by the registry and the handover service for `system`
    /// tokens addressed to them.
    pub issuer: Option<TokenIssuer>,
    /// Gaps that may be lag, with when they were first seen.
    pub suspects: HashMap<Uuid, DateTime<Utc>>,
    /// The projection consumer's progress (`None`: judged by the wall clock).
    pub caught_up: Option<CaughtUp>,
    /// How long the consumer's progress is waited for at most (as the scheduler does).
    pub max_defer: Duration,
}

/// One subject as its source service holds it.
struct Source {
    truth: Truth,
    level: Option<Level>,
    handover_status: Option<HandoverStatus>,
    snapshot: Option<SuperviseeSnapshot>,
}

impl Reconciler {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let registry = self.config.registry_url.as_deref().map(client).transpose();
        let handover = self.config.handover_url.as_deref().map(client).transpose();
        let (Ok(registry), Ok(handover)) = (registry, handover) else {
            tracing::error!("coverage reconciliation disabled: a source URL is invalid");
            return;
        };
        if registry.is_none() && handover.is_none() {
            tracing::warn!("coverage reconciliation disabled: no MESH_REGISTRY_URL or MESH_HANDOVER_URL");
            return;
        }
        if self.issuer.is_none() {
            tracing::error!(
                "coverage reconciliation disabled: no MESH_SIGNING_KEY_FILE to call the sources with"
            );
            return;
        }
        let registry = registry.map(RegistryServiceClient::new);
        let handover = handover.map(HandoverServiceClient::new);
        loop {
            if let Some(client) = &registry {
                let round = self
                    .reconcile(|page, token| {
                        let mut client = client.clone();
                        async move {
                            let request = registry_pb::ListUnderSupervisionRequest { page: Some(page) };
                            let response = client.list_under_supervision(authorized(request, &token)).await?;
                            let response = response.into_inner();
                            let sources = response.supervisees.into_iter().filter_map(supervisee_source);
                            Ok((sources.collect(), next_page(response.page)))
                        }
                    })
                    .await;
                if let Err(error) = round {
                    tracing::warn!(error = %error, "coverage round over the registry failed; retrying");
                }
            }
            if let Some(client) = &handover {
                let round = self
                    .reconcile(|page, token| {
                        let mut client = client.clone();
                        async move {
                            let request = handover_pb::ListAwaitingReportInRequest { page: Some(page) };
                            let response = client
                                .list_awaiting_report_in(authorized(request, &token))
                                .await?;
                            let response = response.into_inner();
                            let sources = response.handovers.into_iter().filter_map(handover_source);
                            Ok((sources.collect(), next_page(response.page)))
                        }
                    })
                    .await;
                if let Err(error) = round {
                    tracing::warn!(error = %error, "coverage round over handovers failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// A short-lived token of the reconciliation's system caller.
    fn token(&self) -> String {
        let now = self.clock.now();
        let caller = Caller::new("risk-alert.coverage", Role::System, None, None);
        self.issuer
            .as_ref()
            .map(|issuer| issuer.mint(&caller, &SOURCES, now, now + chrono::Duration::minutes(5)))
            .unwrap_or_default()
    }

    /// Compares a source's truth with the watch list, page after page: `fetch` gets the
    /// page to ask for and a fresh token, and returns the page's subjects and the next
    /// page's token (empty after the last).
    async fn reconcile<Fut>(
        &mut self,
        mut fetch: impl FnMut(PageRequest, String) -> Fut,
    ) -> anyhow::Result<()>
    where
        Fut: Future<Output = Result<(Vec<(Uuid, Source)>, String), tonic::Status>>,
    {
        let mut page_token = String::new();
        loop {
            let page = PageRequest {
                page_size: 500,
                page_token,
            };
            let (sources, next) = fetch(page, self.token()).await?;
            self.compare(sources).await?;
            if next.is_empty() {
                return Ok(());
            }
            page_token = next;
        }
    }

    /// Compares one page of sources with the watch list, unlocked; acts on each gap under
    /// the subject's lock after checking it again.
    async fn compare(&mut self, sources: Vec<(Uuid, Source)>) -> Result<(), ServiceError> {
        let ids: Vec<Uuid> = sources.iter().map(|(id, _)| *id).collect();
        let now = self.clock.now();
        let mut read = self.changes.begin().await?;
        let tracks = store::deadlines::tracks(&mut read, &ids).await?;
        let supervisees = store::watch::supervisees(&mut read, &ids).await?;
        let handovers = store::watch::handovers(&mut read, &ids).await?;
        read.commit().await?;
        for (id, source) in sources {
            let stored = tracks.get(&id).map(Vec::as_slice).unwrap_or_default();
            let gap = self.gap(&source, supervisees.get(&id), handovers.get(&id), stored);
            match gap {
                None => {
                    self.suspects.remove(&id);
                }
                Some(gap) if gap.may_be_lag() && !self.persists(id, &source, now) => {}
                Some(_) => {
                    self.suspects.remove(&id);
                    if let Err(error) = self.close(id, &source, now).await {
                        tracing::warn!(error = %error, subject_id = %id, "coverage gap not closed; retrying next round");
                    }
                }
            }
        }
        Ok(())
    }

    fn gap(
        &self,
        source: &Source,
        supervisee: Option<&crate::domain::watch::SuperviseeWatch>,
        handover: Option<&crate::domain::watch::HandoverWatch>,
        stored: &[Track],
    ) -> Option<Gap> {
        match (source.truth.subject.kind, source.level) {
            (SubjectKind::Supervisee, Some(level)) => coverage::supervisee_gap(
                &self.watchlist.policy,
                level,
                source.truth.version,
                supervisee,
                stored,
            ),
            (SubjectKind::Supervisee, None) => None,
            (SubjectKind::Handover, _) => coverage::handover_gap(source.truth.version, handover, stored),
        }
    }

    /// Whether a possible-lag gap has lasted (`coverage::lag_gap_persists`).
    fn persists(&mut self, id: Uuid, source: &Source, now: DateTime<Utc>) -> bool {
        let first_seen = *self.suspects.entry(id).or_insert(now);
        let tolerance = chrono::Duration::from_std(self.config.tolerance).unwrap_or_default();
        let applied_through = match &self.caught_up {
            Some(caught_up) => lag::firing_cutoff(now, *caught_up.borrow(), self.max_defer),
            None => now,
        };
        coverage::lag_gap_persists(
            first_seen,
            now,
            applied_through,
            source.truth.updated_at,
            tolerance,
        )
    }

    /// Under the subject's lock: checks the gap again, raises the coverage-gap alert (unless
    /// one is open for the subject) and restores the watch.
    async fn close(&self, id: Uuid, source: &Source, now: DateTime<Utc>) -> Result<(), ServiceError> {
        let mut change = self.changes.begin().await?;
        let handover = source.truth.subject.kind == SubjectKind::Handover;
        let (supervisee, handover_watch) = if handover {
            (None, store::watch::handover_for_update(&mut change, id).await?)
        } else {
            (store::watch::supervisee_for_update(&mut change, id).await?, None)
        };
        let stored: Vec<Track> = store::deadlines::of_subject(&mut change, id)
            .await?
            .iter()
            .map(|row| row.deadline.track)
            .collect();
        let Some(gap) = self.gap(source, supervisee.as_ref(), handover_watch.as_ref(), &stored) else {
            return Ok(());
        };
        let all_tracks = match (source.level, source.handover_status) {
            (Some(level), _) => self.watchlist.policy.tracks(level),
            (None, Some(status)) => coverage::handover_tracks(status),
            (None, None) => Vec::new(),
        };
        let open = store::alerts::open_for_subject(&mut change, &source.truth.subject.id).await?;
        if !open.iter().any(|alert| alert.kind == AlertKind::CoverageGap) {
            let draft = coverage::gap_alert(&source.truth, &gap, &all_tracks, now);
            tracing::error!(subject_id = %id, gap = ?gap, "coverage gap: a person was not watched");
            self.lifecycle.raise(&mut change, draft, now).await?;
        }
        self.restore(&mut change, id, source, &gap).await?;
        change.commit().await
    }

    /// Restores the watch: the registry's record is applied when this service lacks it or
    /// holds an older one; the deadlines are computed again in any case.
    async fn restore(
        &self,
        change: &mut Change,
        id: Uuid,
        source: &Source,
        gap: &Gap,
    ) -> Result<(), ServiceError> {
        if let (Some(snapshot), Gap::Unknown | Gap::Behind { .. } | Gap::NotWatched) = (&source.snapshot, gap)
        {
            self.projection
                .apply_supervisee(
                    change,
                    snapshot.clone(),
                    source.truth.updated_at,
                    // Recomputed below in any case.
                    &mut Default::default(),
                )
                .await?;
        }
        if source.truth.subject.kind == SubjectKind::Handover {
            self.watchlist.reschedule_handover(change, id).await?;
        } else {
            self.watchlist.reschedule_supervisee(change, id).await?;
        }
        Ok(())
    }
}

/// The token of the page after this one (empty after the last).
fn next_page(page: Option<PageResponse>) -> String {
    page.map(|page| page.next_page_token).unwrap_or_default()
}

fn client(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_lazy())
}

fn supervisee_source(entry: registry_pb::UnderSupervision) -> Option<(Uuid, Source)> {
    let id: Uuid = entry.supervisee_id.parse().ok()?;
    let level = Level::from_proto(entry.level);
    let status = SuperviseeStatus::from_proto(entry.status);
    let jurisdiction = jurisdiction_from_proto(entry.jurisdiction.as_ref());
    let updated_at = entry.updated_at.as_ref().and_then(from_timestamp)?;
    let snapshot = SuperviseeSnapshot {
        id,
        subject_id: entry.supervisee_id.clone(),
        name: entry.name.clone(),
        jurisdiction: jurisdiction.clone(),
        level,
        status,
        version: entry.version,
        reported_at: entry.reported_at.as_ref().and_then(from_timestamp),
        // Only people under supervision are listed; the report-in period no longer applies.
        term_start: None,
    };
    Some((
        id,
        Source {
            truth: Truth {
                subject: Subject {
                    kind: SubjectKind::Supervisee,
                    id: entry.supervisee_id,
                    name: entry.name,
                },
                jurisdiction,
                version: entry.version,
                updated_at,
            },
            level,
            handover_status: None,
            snapshot: Some(snapshot),
        },
    ))
}

fn handover_source(entry: handover_pb::AwaitingReportIn) -> Option<(Uuid, Source)> {
    let id: Uuid = entry.handover_id.parse().ok()?;
    let updated_at = entry.updated_at.as_ref().and_then(from_timestamp)?;
    Some((
        id,
        Source {
            truth: Truth {
                subject: Subject {
                    kind: SubjectKind::Handover,
                    id: entry.handover_id,
                    name: entry.person_name,
                },
                jurisdiction: jurisdiction_from_proto(entry.destination.as_ref()),
                version: entry.version,
                updated_at,
            },
            level: None,
            handover_status: HandoverStatus::from_proto(entry.status),
            snapshot: None,
        },
    ))
}
