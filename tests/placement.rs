//! The placement service end to end: real registry and placement processes on real
//! PostgreSQL and Tansu. Candidates must appear from registry events and from
//! `handover.reported_in` events (published here with the mesh's headers, as the handover
//! service would); matching must respect the county of supervision, offence exclusions and
//! closed openings; the last position of an opening must go to exactly one of many
//! concurrent acceptances.

use std::time::Duration;

use chrono::Utc;
use mesh_e2e::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, authorized, county_bureau, eventually, home_officer, jurisdiction,
    opening_request, prison, reported_in, supervisee_snapshot, today,
};
use mesh_kit::{
    auth::Caller,
    error::violated_fields,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{
    common::{self, OffenceCategory},
    handover as handover_pb, placement as pb, registry as registry_pb,
};
use prost::Message;
use tonic::Code;

const NEIGHBOUR_TOWNSHIP: &str = "620702005"; // 甘州区火车站街道, same county
const OTHER_TOWNSHIP: &str = "620721001"; // 肃南县红湾寺镇
const OTHER_COUNTY: &str = "620721";

/// Registry and placement processes sharing fresh topics.
async fn start_registry_and_placement() -> Mesh {
    Mesh::start(&["registry", "placement"]).await.expect("mesh")
}

/// County bureau of the home county.
fn home_bureau() -> Caller {
    county_bureau("bureau-ganzhou", HOME_COUNTY)
}

/// County bureau of another county.
fn sunan_bureau() -> Caller {
    county_bureau("bureau-sunan", OTHER_COUNTY)
}

/// Registers person `n` in the home township, reported in and needing work (or not).
async fn register(mesh: &Mesh, n: u16, needs_employment: bool) -> String {
    let request = registry_pb::RegisterSuperviseeRequest {
        needs_employment,
        ..reported_in(n, Utc::now())
    };
    mesh_e2e::register(mesh, request).await
}

async fn list_candidates(mesh: &Mesh, request: pb::ListCandidatesRequest, token: &str) -> Vec<pb::Candidate> {
    mesh.placement()
        .list_candidates(authorized(request, token))
        .await
        .expect("candidates listed")
        .into_inner()
        .candidates
}

/// Polls the home county's candidates (bounded) until `done` holds.
async fn wait_for_candidates(
    mesh: &Mesh,
    include_inactive: bool,
    done: impl Fn(&[pb::Candidate]) -> bool,
) -> Vec<pb::Candidate> {
    let bureau = mesh.token(&home_bureau());
    eventually(
        "the candidates to reach the expected state",
        Duration::from_secs(45),
        async || {
            let request = pb::ListCandidatesRequest {
                county_code: HOME_COUNTY.into(),
                include_inactive,
                page: Some(common::PageRequest {
                    page_size: 500,
                    page_token: String::new(),
                }),
                ..Default::default()
            };
            let candidates = list_candidates(mesh, request, &bureau).await;
            done(&candidates).then_some(candidates)
        },
    )
    .await
}

/// The candidate of supervisee `supervisee_id`, once the registry's event arrived.
async fn candidate_of(mesh: &Mesh, supervisee_id: &str) -> pb::Candidate {
    let id = supervisee_id.to_owned();
    wait_for_candidates(mesh, false, |list| list.iter().any(|c| c.supervisee_id == id))
        .await
        .into_iter()
        .find(|c| c.supervisee_id == supervisee_id)
        .expect("candidate")
}

async fn create_base(mesh: &Mesh, name: &str, township: &str, county: &str, token: &str) -> String {
    mesh.placement()
        .create_base(authorized(
            pb::CreateBaseRequest {
                name: name.into(),
                jurisdiction: Some(jurisdiction(township, county)),
                r#type: pb::BaseType::Enterprise as i32,
                contact_name: "王经理".into(),
                contact_phone: "13800001111".into(),
            },
            token,
        ))
        .await
        .expect("base created")
        .into_inner()
        .base
        .expect("base")
        .base_id
}

async fn create_opening(mesh: &Mesh, request: pb::CreateOpeningRequest, token: &str) -> pb::JobOpening {
    mesh.placement()
        .create_opening(authorized(request, token))
        .await
        .expect("opening created")
        .into_inner()
        .opening
        .expect("opening")
}

async fn set_profile(mesh: &Mesh, candidate_id: &str, offence: OffenceCategory, sectors: &[pb::Sector]) {
    mesh.placement()
        .update_candidate_profile(authorized(
            pb::UpdateCandidateProfileRequest {
                candidate_id: candidate_id.into(),
                skills: vec!["welding".into(), "forklift".into()],
                sector_preferences: sectors.iter().map(|s| *s as i32).collect(),
                offence_category: offence as i32,
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("profile updated");
}

async fn matches_of(mesh: &Mesh, candidate_id: &str, token: &str) -> Vec<pb::OpeningMatch> {
    mesh.placement()
        .match_openings(authorized(
            pb::MatchOpeningsRequest {
                candidate_id: candidate_id.into(),
                max_results: 50,
            },
            token,
        ))
        .await
        .expect("matched")
        .into_inner()
        .matches
}

async fn propose(
    mesh: &Mesh,
    candidate_id: &str,
    opening_id: &str,
    token: &str,
) -> Result<pb::Placement, tonic::Status> {
    mesh.placement()
        .propose_placement(authorized(
            pb::ProposePlacementRequest {
                candidate_id: candidate_id.into(),
                opening_id: opening_id.into(),
                note: "请于周一上午面试".into(),
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().placement.expect("placement"))
}

async fn listed_opening(mesh: &Mesh, base_id: &str, opening_id: &str) -> pb::JobOpening {
    mesh.placement()
        .list_openings(authorized(
            pb::ListOpeningsRequest {
                base_id: base_id.into(),
                ..Default::default()
            },
            &mesh.token(&home_bureau()),
        ))
        .await
        .expect("openings listed")
        .into_inner()
        .openings
        .into_iter()
        .find(|opening| opening.opening_id == opening_id)
        .expect("opening listed")
}

/// Publishes a `handover.reported_in` as the handover service would.
async fn publish_report_in(mesh: &Mesh, event: &handover_pb::HandoverReportedIn) {
    let handover_id = event
        .handover
        .as_ref()
        .map(|h| h.handover_id.clone())
        .unwrap_or_default();
    mesh.publish(
        &mesh.topics.handover,
        &handover_id,
        "handover.reported_in",
        &event.encode_to_vec(),
    )
    .await
    .expect("published");
}

/// Publishes a `supervisee.*` event as the registry would; returns its event id.
async fn publish_supervisee(
    mesh: &Mesh,
    event_type: &str,
    payload: Vec<u8>,
    supervisee_id: &str,
) -> uuid::Uuid {
    mesh.publish(&mesh.topics.registry, supervisee_id, event_type, &payload)
        .await
        .expect("published")
}

/// Waits until the placement service applied the event `event_id`.
async fn wait_applied(mesh: &Mesh, event_id: uuid::Uuid) {
    let pool = mesh.pool("placement").expect("pool");
    let what = format!("event {event_id} to be applied");
    eventually(&what, Duration::from_secs(30), async || {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM kit_inbox WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&pool)
            .await
            .expect("count");
        (applied == 1).then_some(())
    })
    .await;
}

/// A report-in of a released person (sentence completed unless `category` says otherwise).
fn report_in(
    name: &str,
    category: handover_pb::ReleaseCategory,
    township: &str,
    offence: OffenceCategory,
    needs_employment: bool,
) -> handover_pb::HandoverReportedIn {
    let now = Utc::now();
    handover_pb::HandoverReportedIn {
        handover: Some(handover_pb::HandoverSnapshot {
            handover_id: uuid::Uuid::now_v7().to_string(),
            prison_id: "zhangye-prison".into(),
            prison_reference: format!("ZY-{}", uuid::Uuid::new_v4().simple()),
            person_name: name.into(),
            category: category as i32,
            expected_release_date: Some(to_date(today())),
            destination: Some(jurisdiction(township, &township[..6])),
            key_assistance_target: true,
            offence_category: offence as i32,
            status: handover_pb::HandoverStatus::ReportedIn as i32,
            notified_at: Some(to_timestamp(now - chrono::Duration::days(30))),
            acknowledged_at: None,
            actual_release_time: Some(to_timestamp(now - chrono::Duration::days(2))),
            gate_collected_at: None,
            reported_in_at: Some(to_timestamp(now)),
            version: 4,
        }),
        registry_category: 0,
        supervision_level: 0,
        officer_id: "assistance-officer-1".into(),
        term_start: None,
        term_end: None,
        // Sealed for the registry alone: placement holds no key for it and needs none.
        sealed_personal: b"sealed for the registry".to_vec(),
        needs_employment,
        actor: Some(common::Actor {
            subject: "office-620702005".into(),
            role: "township_office".into(),
        }),
    }
}

/// A registry snapshot of supervisee `id`, as the registry's events carry it.
fn snapshot(
    id: &str,
    version: i64,
    township: &str,
    needs_employment: bool,
) -> registry_pb::SuperviseeSnapshot {
    registry_pb::SuperviseeSnapshot {
        jurisdiction: Some(jurisdiction(township, &township[..6])),
        needs_employment,
        ..supervisee_snapshot(id, version)
    }
}

fn ids(matches: &[pb::OpeningMatch]) -> Vec<String> {
    matches
        .iter()
        .filter_map(|m| m.opening.as_ref().map(|o| o.opening_id.clone()))
        .collect()
}

#[tokio::test]
async fn candidates_appear_from_registry_and_handover_events() {
    let mesh = start_registry_and_placement().await;
    let idle = register(&mesh, 1, false).await;
    let seeker = register(&mesh, 2, true).await;

    let candidate = candidate_of(&mesh, &seeker).await;
    assert_eq!(candidate.source(), pb::CandidateSource::Supervisee);
    assert_eq!(candidate.name, "测试人员2");
    assert_eq!(
        candidate.jurisdiction,
        Some(jurisdiction(HOME_TOWNSHIP, HOME_COUNTY))
    );
    assert!(candidate.active);
    assert_eq!(candidate.offence_category(), OffenceCategory::Unspecified);
    assert!(candidate.current_placement_id.is_empty());

    // The supervisee who does not need work was projected too, but is no candidate.
    let pool = mesh.pool("placement").expect("pool");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM supervisee_versions WHERE supervisee_id = $1")
                .bind(idle.parse::<uuid::Uuid>().expect("uuid"))
                .fetch_one(&pool)
                .await
                .expect("count");
        if seen == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registry event never projected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = wait_for_candidates(&mesh, true, |_| true).await;
    assert!(listed.iter().all(|c| c.supervisee_id != idle), "{listed:?}");

    // A released prisoner (sentence completed) who reports in needing work becomes a
    // resettlement candidate with the prison's offence category; one who does not need work
    // and a parolee (who comes through the registry instead) do not.
    let released = report_in(
        "刑满释放人员甲",
        handover_pb::ReleaseCategory::SentenceCompleted,
        NEIGHBOUR_TOWNSHIP,
        OffenceCategory::Drug,
        true,
    );
    let not_looking = report_in(
        "刑满释放人员乙",
        handover_pb::ReleaseCategory::SentenceCompleted,
        NEIGHBOUR_TOWNSHIP,
        OffenceCategory::Property,
        false,
    );
    let parolee = report_in(
        "假释人员丙",
        handover_pb::ReleaseCategory::Parole,
        NEIGHBOUR_TOWNSHIP,
        OffenceCategory::Violent,
        true,
    );
    publish_report_in(&mesh, &not_looking).await;
    publish_report_in(&mesh, &parolee).await;
    publish_report_in(&mesh, &released).await;
    let released_id = released
        .handover
        .as_ref()
        .map(|h| h.handover_id.clone())
        .unwrap_or_default();
    let wanted = released_id.clone();
    let listed = wait_for_candidates(&mesh, false, |list| list.iter().any(|c| c.handover_id == wanted)).await;
    let resettled = listed
        .iter()
        .find(|c| c.handover_id == released_id)
        .expect("resettlement candidate");
    assert_eq!(resettled.source(), pb::CandidateSource::ReleasedPrisoner);
    assert_eq!(resettled.name, "刑满释放人员甲");
    assert!(resettled.supervisee_id.is_empty());
    assert_eq!(resettled.offence_category(), OffenceCategory::Drug);
    assert!(resettled.key_assistance_target);
    assert_eq!(
        resettled.jurisdiction,
        Some(jurisdiction(NEIGHBOUR_TOWNSHIP, HOME_COUNTY))
    );

    // All three handovers were applied (their facts are recorded) but only one is a candidate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM handover_facts")
            .fetch_one(&pool)
            .await
            .expect("count");
        if facts == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handover events never projected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let from_handovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM candidates WHERE handover_id IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(from_handovers, 1);

    // The prison supplied the offence category, so an office cannot overwrite it.
    let status = mesh
        .placement()
        .update_candidate_profile(authorized(
            pb::UpdateCandidateProfileRequest {
                candidate_id: resettled.candidate_id.clone(),
                skills: vec![],
                sector_preferences: vec![],
                offence_category: OffenceCategory::Traffic as i32,
            },
            &mesh.token(&home_bureau()),
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Supervision ends: the supervisee stops being offered.
    mesh.registry()
        .change_status(authorized(
            registry_pb::ChangeStatusRequest {
                supervisee_id: seeker.clone(),
                status: registry_pb::SuperviseeStatus::Terminated as i32,
                reason: "矫正期满".into(),
                effective_at: None,
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("terminated");
    let ended = seeker.clone();
    let listed = wait_for_candidates(&mesh, true, |list| {
        list.iter().any(|c| c.supervisee_id == ended && !c.active)
    })
    .await;
    assert!(listed.iter().any(|c| c.supervisee_id == seeker));
    let active = wait_for_candidates(&mesh, false, |_| true).await;
    assert!(active.iter().all(|c| c.supervisee_id != seeker));
    let status = mesh
        .placement()
        .match_openings(authorized(
            pb::MatchOpeningsRequest {
                candidate_id: candidate.candidate_id.clone(),
                max_results: 0,
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect_err("no matching after supervision ended");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn matching_keeps_supervisees_in_their_county_and_respects_exclusions() {
    let mesh = start_registry_and_placement().await;
    let officer = mesh.token(&home_officer());
    let other_bureau = mesh.token(&sunan_bureau());
    let supervisee = register(&mesh, 11, true).await;
    let unknown_offence = register(&mesh, 12, true).await;
    let candidate = candidate_of(&mesh, &supervisee).await;
    let unknown = candidate_of(&mesh, &unknown_offence).await;
    set_profile(
        &mesh,
        &candidate.candidate_id,
        OffenceCategory::Property,
        &[pb::Sector::Manufacturing],
    )
    .await;

    let home_base = create_base(&mesh, "东街安置帮教基地", HOME_TOWNSHIP, HOME_COUNTY, &officer).await;
    let other_base = create_base(
        &mesh,
        "红湾寺安置帮教基地",
        OTHER_TOWNSHIP,
        OTHER_COUNTY,
        &other_bureau,
    )
    .await;
    // Allowed: home township, first preference, excludes only drug offences.
    let mut request = opening_request(&home_base, "焊工", HOME_TOWNSHIP, HOME_COUNTY);
    request.excluded_offence_categories = vec![OffenceCategory::Drug as i32];
    let allowed = create_opening(&mesh, request, &officer).await;
    // Allowed: same county, other township, another sector (ranked lower).
    let mut request = opening_request(&home_base, "食堂帮工", NEIGHBOUR_TOWNSHIP, HOME_COUNTY);
    request.sector = pb::Sector::Catering as i32;
    let neighbour = create_opening(&mesh, request, &officer).await;
    // Outside the supervisee's county.
    let mut request = opening_request(&other_base, "牧场工人", OTHER_TOWNSHIP, OTHER_COUNTY);
    request.work_location = Some(common::GeoPoint {
        latitude: 38.83,
        longitude: 99.62,
        accuracy_m: 0.0,
    });
    let other_county = create_opening(&mesh, request, &other_bureau).await;
    // Excludes the candidate's offence category.
    let mut request = opening_request(&home_base, "超市理货员", HOME_TOWNSHIP, HOME_COUNTY);
    request.excluded_offence_categories = vec![
        OffenceCategory::Property as i32,
        OffenceCategory::EconomicFraud as i32,
    ];
    let excluding = create_opening(&mesh, request, &officer).await;
    // Closed.
    let closed = create_opening(
        &mesh,
        opening_request(&home_base, "包装工", HOME_TOWNSHIP, HOME_COUNTY),
        &officer,
    )
    .await;
    mesh.placement()
        .close_opening(authorized(
            pb::CloseOpeningRequest {
                opening_id: closed.opening_id.clone(),
                reason: "岗位已招满".into(),
            },
            &officer,
        ))
        .await
        .expect("closed");

    let matches = matches_of(&mesh, &candidate.candidate_id, &officer).await;
    assert_eq!(
        ids(&matches),
        vec![allowed.opening_id.clone(), neighbour.opening_id.clone()],
        "{matches:#?}"
    );
    let best = &matches[0];
    assert_eq!(best.base_name, "东街安置帮教基地");
    assert!(best.score > matches[1].score && best.score <= 1.0);
    for reason in [
        "sector manufacturing matches the first preference",
        "1 of 1 required skills (welding)",
        "work in the candidate's township",
    ] {
        assert!(
            best.reasons.iter().any(|r| r == reason),
            "{reason} missing: {:?}",
            best.reasons
        );
    }
    assert!(
        matches[1]
            .reasons
            .iter()
            .any(|r| r == "work in the candidate's county")
    );

    // Proposing what matching would never offer fails, each for its reason.
    for (opening, expected) in [
        (&other_county, "county of supervision"),
        (&excluding, "excludes property offences"),
        (&closed, "closed"),
    ] {
        let status = propose(&mesh, &candidate.candidate_id, &opening.opening_id, &officer)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");
    }

    // Unknown offence category: never matched to openings that exclude any category.
    let matches = matches_of(&mesh, &unknown.candidate_id, &officer).await;
    assert_eq!(ids(&matches), vec![neighbour.opening_id.clone()]);

    // A released prisoner is not under supervision: work in another county is offered, but
    // never an opening that excludes drug offences.
    let released = report_in(
        "刑满释放人员丁",
        handover_pb::ReleaseCategory::SentenceCompleted,
        HOME_TOWNSHIP,
        OffenceCategory::Drug,
        true,
    );
    publish_report_in(&mesh, &released).await;
    let handover_id = released
        .handover
        .as_ref()
        .map(|h| h.handover_id.clone())
        .unwrap_or_default();
    let wanted = handover_id.clone();
    let resettled = wait_for_candidates(&mesh, false, |list| list.iter().any(|c| c.handover_id == wanted))
        .await
        .into_iter()
        .find(|c| c.handover_id == handover_id)
        .expect("candidate");
    let matches = matches_of(&mesh, &resettled.candidate_id, &officer).await;
    let matched = ids(&matches);
    assert!(matched.contains(&other_county.opening_id), "{matched:?}");
    assert!(matched.contains(&excluding.opening_id), "{matched:?}");
    assert!(matched.contains(&neighbour.opening_id), "{matched:?}");
    assert!(
        !matched.contains(&allowed.opening_id),
        "drug offence matched: {matched:?}"
    );
    assert!(!matched.contains(&closed.opening_id));
    let far = matches
        .iter()
        .find(|m| {
            m.opening
                .as_ref()
                .is_some_and(|o| o.opening_id == other_county.opening_id)
        })
        .expect("far match");
    assert!(
        far.reasons
            .iter()
            .any(|r| r.starts_with("work in another county"))
    );
    assert!(
        far.reasons
            .iter()
            .any(|r| r.contains("km from the candidate's county seat"))
    );
    propose(&mesh, &resettled.candidate_id, &other_county.opening_id, &officer)
        .await
        .expect("a released person may work in another county");
}

#[tokio::test]
async fn many_concurrent_acceptances_of_the_last_position_exactly_one_wins() {
    const CANDIDATES: u16 = 12;
    let mesh = start_registry_and_placement().await;
    let officer = mesh.token(&home_officer());
    let mut supervisees = Vec::new();
    for n in 0..CANDIDATES {
        supervisees.push(register(&mesh, 100 + n, true).await);
    }
    let latecomer = register(&mesh, 200, true).await;
    let latecomer = candidate_of(&mesh, &latecomer).await;
    let wanted = supervisees.clone();
    let candidates: Vec<pb::Candidate> = wait_for_candidates(&mesh, false, |list| {
        wanted
            .iter()
            .all(|id| list.iter().any(|c| &c.supervisee_id == id))
    })
    .await
    .into_iter()
    .filter(|c| supervisees.contains(&c.supervisee_id))
    .collect();
    let base = create_base(&mesh, "张掖绿洲农业合作社", HOME_TOWNSHIP, HOME_COUNTY, &officer).await;
    let mut request = opening_request(&base, "温室管理员", HOME_TOWNSHIP, HOME_COUNTY);
    request.positions_total = 1;
    let opening = create_opening(&mesh, request, &officer).await;

    // A proposal takes no position: every candidate can be proposed for the last one.
    let mut placements = Vec::new();
    for candidate in &candidates {
        let placement = propose(&mesh, &candidate.candidate_id, &opening.opening_id, &officer)
            .await
            .expect("proposed");
        assert_eq!(placement.status(), pb::PlacementStatus::Proposed);
        placements.push(placement.placement_id);
    }
    assert_eq!(placements.len(), usize::from(CANDIDATES));

    // Everyone accepts at once.
    let mut tasks = tokio::task::JoinSet::new();
    for placement_id in placements.clone() {
        let mut client = mesh.placement();
        let token = officer.clone();
        tasks.spawn(async move {
            client
                .accept_placement(authorized(pb::AcceptPlacementRequest { placement_id }, &token))
                .await
                .map(|response| response.into_inner().placement.expect("placement"))
        });
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(placement) => winners.push(placement),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("no position left"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one acceptance wins");
    assert_eq!(refused, usize::from(CANDIDATES) - 1);
    assert_eq!(winners[0].status(), pb::PlacementStatus::Accepted);
    let listed = listed_opening(&mesh, &base, &opening.opening_id).await;
    assert_eq!((listed.positions_filled, listed.positions_total), (1, 1));
    let pool = mesh.pool("placement").expect("pool");
    let (filled, accepted): (i32, i64) = sqlx::query_as(
        "SELECT o.positions_filled,
                (SELECT count(*) FROM placements p WHERE p.opening_id = o.id AND p.status IN ('accepted', 'started'))
         FROM openings o WHERE o.id = $1",
    )
    .bind(opening.opening_id.parse::<uuid::Uuid>().expect("uuid"))
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((filled, accepted), (1, 1));

    // The full opening is no longer offered, nor can anyone else be proposed for it.
    assert!(
        matches_of(&mesh, &latecomer.candidate_id, &officer)
            .await
            .is_empty()
    );
    let status = propose(&mesh, &latecomer.candidate_id, &opening.opening_id, &officer)
        .await
        .expect_err("full");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("no position left"), "{status:?}");
    let loser = placements
        .iter()
        .find(|id| **id != winners[0].placement_id)
        .cloned()
        .expect("a loser");

    // The winner's candidate declines after all: the position is free again and the next
    // acceptance takes it.
    mesh.placement()
        .decline_placement(authorized(
            pb::DeclinePlacementRequest {
                placement_id: winners[0].placement_id.clone(),
                declined_by: pb::DeclinedBy::Candidate as i32,
                reason: "已在外地找到工作".into(),
            },
            &officer,
        ))
        .await
        .expect("declined");
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        0
    );
    let accepted = mesh
        .placement()
        .accept_placement(authorized(
            pb::AcceptPlacementRequest {
                placement_id: loser.clone(),
            },
            &officer,
        ))
        .await
        .expect("the freed position is taken")
        .into_inner()
        .placement
        .expect("placement");
    assert_eq!(accepted.status(), pb::PlacementStatus::Accepted);
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        1
    );
}

#[tokio::test]
async fn lifecycle_is_enforced_and_every_step_is_a_placement_event() {
    let mesh = start_registry_and_placement().await;
    let officer = mesh.token(&home_officer());
    let first = register(&mesh, 21, true).await;
    let second = register(&mesh, 22, true).await;
    let first = candidate_of(&mesh, &first).await;
    let second = candidate_of(&mesh, &second).await;
    let base = create_base(&mesh, "甘州区阳光社区工坊", HOME_TOWNSHIP, HOME_COUNTY, &officer).await;
    let opening = create_opening(
        &mesh,
        opening_request(&base, "手工编织", HOME_TOWNSHIP, HOME_COUNTY),
        &officer,
    )
    .await;

    let proposed = propose(&mesh, &first.candidate_id, &opening.opening_id, &officer)
        .await
        .expect("proposed");
    let placement_id = proposed.placement_id.clone();
    assert_eq!(
        proposed.jurisdiction,
        Some(jurisdiction(HOME_TOWNSHIP, HOME_COUNTY))
    );
    assert_eq!(
        proposed.proposed_by.as_ref().map(|a| a.subject.as_str()),
        Some("officer-1")
    );
    // The same proposal twice is AlreadyExists; another one while this is current fails.
    let again = propose(&mesh, &first.candidate_id, &opening.opening_id, &officer)
        .await
        .expect_err("duplicate");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // Starting before accepting is an illegal transition.
    let start = |placement_id: &str| pb::StartPlacementRequest {
        placement_id: placement_id.into(),
        start_date: Some(to_date(today())),
    };
    let status = mesh
        .placement()
        .start_placement(authorized(start(&placement_id), &officer))
        .await
        .expect_err("not accepted yet");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "illegal transition from proposed to started");

    mesh.placement()
        .accept_placement(authorized(
            pb::AcceptPlacementRequest {
                placement_id: placement_id.clone(),
            },
            &officer,
        ))
        .await
        .expect("accepted");
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        1
    );
    let started = mesh
        .placement()
        .start_placement(authorized(start(&placement_id), &officer))
        .await
        .expect("started")
        .into_inner()
        .placement
        .expect("placement");
    assert_eq!(started.status(), pb::PlacementStatus::Started);
    assert_eq!(started.start_date, Some(to_date(today())));
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        1
    );
    let ended = mesh
        .placement()
        .end_placement(authorized(
            pb::EndPlacementRequest {
                placement_id: placement_id.clone(),
                end_date: Some(to_date(today())),
                reason: pb::EndReason::Completed as i32,
                note: String::new(),
            },
            &officer,
        ))
        .await
        .expect("ended")
        .into_inner()
        .placement
        .expect("placement");
    assert_eq!(ended.status(), pb::PlacementStatus::Ended);
    assert_eq!(ended.end_reason(), pb::EndReason::Completed);
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        0
    );
    let status = mesh
        .placement()
        .accept_placement(authorized(
            pb::AcceptPlacementRequest {
                placement_id: placement_id.clone(),
            },
            &officer,
        ))
        .await
        .expect_err("ended is final");
    assert_eq!(status.message(), "illegal transition from ended to accepted");

    // The second candidate declines the proposal and is free for the next one.
    let declined_placement = propose(&mesh, &second.candidate_id, &opening.opening_id, &officer)
        .await
        .expect("proposed");
    mesh.placement()
        .decline_placement(authorized(
            pb::DeclinePlacementRequest {
                placement_id: declined_placement.placement_id.clone(),
                declined_by: pb::DeclinedBy::Base as i32,
                reason: "岗位要求有驾驶证".into(),
            },
            &officer,
        ))
        .await
        .expect("declined");
    let second_now = candidate_of(&mesh, &second.supervisee_id).await;
    assert!(second_now.current_placement_id.is_empty());
    propose(&mesh, &second.candidate_id, &opening.opening_id, &officer)
        .await
        .expect("a declined proposal does not block a new one");

    // Every step reached Kafka as its placement.* event, keyed as the contract says.
    let events = mesh
        .tap(&mesh.topics.placement)
        .expect("tap")
        .collect(9, Duration::from_secs(20))
        .await
        .expect("events");
    let mut seen = Vec::new();
    for event in &events {
        assert_eq!(event.header("producer"), Some("placement"));
        let event_id: uuid::Uuid = event.header("event_id").expect("event_id").parse().expect("uuid");
        assert_eq!(event_id.get_version_num(), 7);
        assert!(event.header("occurred_at").is_some());
        let event_type = event.header("event_type").unwrap_or_default().to_owned();
        let payload = event.payload.as_slice();
        let (key, status) = match event_type.as_str() {
            "placement.base_created" => {
                let decoded = pb::BaseCreated::decode(payload).expect("decodes");
                (decoded.base.expect("base").base_id, None)
            }
            "placement.opening_created" => {
                let decoded = pb::OpeningCreated::decode(payload).expect("decodes");
                (decoded.opening.expect("opening").base_id, None)
            }
            "placement.proposed" => {
                let placement = pb::PlacementProposed::decode(payload).expect("decodes").placement;
                let placement = placement.expect("placement");
                (placement.candidate_id.clone(), Some(placement.status()))
            }
            "placement.accepted" => {
                let placement = pb::PlacementAccepted::decode(payload).expect("decodes").placement;
                let placement = placement.expect("placement");
                (placement.candidate_id.clone(), Some(placement.status()))
            }
            "placement.declined" => {
                let decoded = pb::PlacementDeclined::decode(payload).expect("decodes");
                assert_eq!(decoded.actor.expect("actor").subject, "officer-1");
                let placement = decoded.placement.expect("placement");
                assert_eq!(placement.declined_by(), pb::DeclinedBy::Base);
                (placement.candidate_id.clone(), Some(placement.status()))
            }
            "placement.started" => {
                let placement = pb::PlacementStarted::decode(payload).expect("decodes").placement;
                let placement = placement.expect("placement");
                (placement.candidate_id.clone(), Some(placement.status()))
            }
            "placement.ended" => {
                let placement = pb::PlacementEnded::decode(payload).expect("decodes").placement;
                let placement = placement.expect("placement");
                assert_eq!(placement.end_reason(), pb::EndReason::Completed);
                (placement.candidate_id.clone(), Some(placement.status()))
            }
            other => panic!("unexpected event type {other}"),
        };
        assert_eq!(event.key.as_deref(), Some(key.as_str()), "{event_type}");
        if let Some(status) = status {
            assert_ne!(status, pb::PlacementStatus::Unspecified);
        }
        seen.push(event_type);
    }
    seen.sort();
    let mut expected = vec![
        "placement.base_created",
        "placement.opening_created",
        "placement.proposed",
        "placement.accepted",
        "placement.started",
        "placement.ended",
        "placement.proposed",
        "placement.declined",
        "placement.proposed",
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn bad_inputs_name_the_field_and_other_jurisdictions_are_refused() {
    let mesh = start_registry_and_placement().await;
    let officer = mesh.token(&home_officer());
    let other_bureau = mesh.token(&sunan_bureau());
    let supervisee = register(&mesh, 31, true).await;
    let candidate = candidate_of(&mesh, &supervisee).await;
    let base = create_base(&mesh, "东街社区服务站", HOME_TOWNSHIP, HOME_COUNTY, &officer).await;

    let status = mesh
        .placement()
        .create_base(authorized(
            pb::CreateBaseRequest {
                name: " ".into(),
                jurisdiction: Some(jurisdiction("620702999", HOME_COUNTY)),
                r#type: 0,
                contact_name: "李".into(),
                contact_phone: "not a phone".into(),
            },
            &officer,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        vec!["name", "jurisdiction.township_code", "type", "contact_phone"]
    );

    type Mutation = fn(&mut pb::CreateOpeningRequest);
    let cases: Vec<(&str, Mutation)> = vec![
        ("positions_total", |r| r.positions_total = 0),
        ("positions_total", |r| r.positions_total = 1001),
        ("title", |r| r.title = String::new()),
        ("sector", |r| r.sector = 0),
        ("excluded_offence_categories[0]", |r| {
            r.excluded_offence_categories = vec![0]
        }),
        ("excluded_offence_categories[1]", |r| {
            r.excluded_offence_categories = vec![3, 3]
        }),
        ("closing_date", |r| {
            r.closing_date = Some(to_date(today() - chrono::Days::new(1)))
        }),
        ("work_location.latitude", |r| {
            r.work_location = Some(common::GeoPoint {
                latitude: 123.0,
                longitude: 100.0,
                accuracy_m: 0.0,
            })
        }),
        ("work_jurisdiction.county_code", |r| {
            r.work_jurisdiction = Some(jurisdiction(HOME_TOWNSHIP, OTHER_COUNTY))
        }),
        ("required_skills[0]", |r| r.required_skills = vec!["".into()]),
        ("base_id", |r| r.base_id = "not-a-uuid".into()),
    ];
    for (field, mutate) in cases {
        let mut request = opening_request(&base, "保洁员", HOME_TOWNSHIP, HOME_COUNTY);
        mutate(&mut request);
        let status = mesh
            .placement()
            .create_opening(authorized(request, &officer))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), vec![field], "{status:?}");
    }
    let pool = mesh.pool("placement").expect("pool");
    let openings: i64 = sqlx::query_scalar("SELECT count(*) FROM openings")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(openings, 0, "nothing stored from bad requests");

    let status = propose(&mesh, "x", "", &officer).await.expect_err("invalid");
    assert_eq!(violated_fields(&status), vec!["candidate_id", "opening_id"]);
    let status = mesh
        .placement()
        .end_placement(authorized(
            pb::EndPlacementRequest {
                placement_id: uuid::Uuid::now_v7().to_string(),
                end_date: Some(to_date(today())),
                reason: 0,
                note: String::new(),
            },
            &officer,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), vec!["reason"]);
    let status = mesh
        .placement()
        .update_candidate_profile(authorized(
            pb::UpdateCandidateProfileRequest {
                candidate_id: candidate.candidate_id.clone(),
                skills: vec!["焊接".into(), "焊接".into()],
                sector_preferences: vec![0],
                offence_category: 0,
            },
            &officer,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&status),
        vec!["skills[1]", "sector_preferences[0]"]
    );
    let status = mesh
        .placement()
        .list_candidates(authorized(pb::ListCandidatesRequest::default(), &officer))
        .await
        .expect_err("no scope");
    assert_eq!(violated_fields(&status), vec!["township_code"]);

    // Another county's office cannot touch this county's bases, candidates or people.
    let opening = create_opening(
        &mesh,
        opening_request(&base, "保洁员", HOME_TOWNSHIP, HOME_COUNTY),
        &officer,
    )
    .await;
    let status = mesh
        .placement()
        .create_base(authorized(
            pb::CreateBaseRequest {
                name: "越权基地".into(),
                jurisdiction: Some(jurisdiction(HOME_TOWNSHIP, HOME_COUNTY)),
                r#type: pb::BaseType::Farm as i32,
                contact_name: "赵".into(),
                contact_phone: "13800002222".into(),
            },
            &other_bureau,
        ))
        .await
        .expect_err("other county");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = mesh
        .placement()
        .list_candidates(authorized(
            pb::ListCandidatesRequest {
                county_code: HOME_COUNTY.into(),
                ..Default::default()
            },
            &other_bureau,
        ))
        .await
        .expect_err("other county");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = mesh
        .placement()
        .match_openings(authorized(
            pb::MatchOpeningsRequest {
                candidate_id: candidate.candidate_id.clone(),
                max_results: 0,
            },
            &other_bureau,
        ))
        .await
        .expect_err("other county");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = propose(&mesh, &candidate.candidate_id, &opening.opening_id, &other_bureau)
        .await
        .expect_err("other county");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = mesh
        .placement()
        .close_opening(authorized(
            pb::CloseOpeningRequest {
                opening_id: opening.opening_id.clone(),
                reason: "越权".into(),
            },
            &other_bureau,
        ))
        .await
        .expect_err("other county");
    assert_eq!(status.code(), Code::PermissionDenied);
    // An officer of another township of the same county manages neither the candidate nor
    // the base; a prison manages nothing here.
    let neighbour_officer = mesh.token(&mesh_e2e::officer("officer-neighbour", NEIGHBOUR_TOWNSHIP));
    let status = propose(
        &mesh,
        &candidate.candidate_id,
        &opening.opening_id,
        &neighbour_officer,
    )
    .await
    .expect_err("other township");
    assert_eq!(status.code(), Code::PermissionDenied);
    let prison_token = mesh.token(&prison("clerk", "zhangye-prison"));
    let status = mesh
        .placement()
        .list_bases(authorized(
            pb::ListBasesRequest {
                township_code: HOME_TOWNSHIP.into(),
                ..Default::default()
            },
            &prison_token,
        ))
        .await
        .expect_err("prison");
    assert_eq!(status.code(), Code::PermissionDenied);

    // The home county's bureau may do all of it.
    let placement = propose(
        &mesh,
        &candidate.candidate_id,
        &opening.opening_id,
        &mesh.token(&home_bureau()),
    )
    .await
    .expect("county bureau proposes");
    assert_eq!(placement.status(), pb::PlacementStatus::Proposed);
    let bases = mesh
        .placement()
        .list_bases(authorized(
            pb::ListBasesRequest {
                county_code: HOME_COUNTY.into(),
                ..Default::default()
            },
            &mesh.token(&home_bureau()),
        ))
        .await
        .expect("listed")
        .into_inner()
        .bases;
    assert_eq!(bases.len(), 1);
}

#[tokio::test]
async fn stale_snapshots_change_nothing_and_a_transfer_out_of_the_county_stops_the_job() {
    let mesh = start_registry_and_placement().await;
    let officer = mesh.token(&home_officer());
    let other_bureau = mesh.token(&sunan_bureau());
    // The registry's events for one person, published directly (same key: same partition,
    // in order): registered at version 2, then a stale version 1 saying "no work needed".
    let supervisee_id = uuid::Uuid::now_v7().to_string();
    let registered = registry_pb::SuperviseeRegistered {
        supervisee: Some(snapshot(&supervisee_id, 2, HOME_TOWNSHIP, true)),
        actor: None,
        handover_id: String::new(),
    };
    publish_supervisee(
        &mesh,
        "supervisee.registered",
        registered.encode_to_vec(),
        &supervisee_id,
    )
    .await;
    let stale = registry_pb::SuperviseeStatusChanged {
        supervisee: Some(snapshot(&supervisee_id, 1, HOME_TOWNSHIP, false)),
        previous_status: 0,
        reason: "old".into(),
        effective_at: None,
        actor: None,
    };
    let stale_id = publish_supervisee(
        &mesh,
        "supervisee.status_changed",
        stale.encode_to_vec(),
        &supervisee_id,
    )
    .await;
    wait_applied(&mesh, stale_id).await;
    let candidate = candidate_of(&mesh, &supervisee_id).await;
    assert!(
        candidate.active,
        "a stale snapshot must not switch the candidate off"
    );

    let base = create_base(&mesh, "甘州区物流园", HOME_TOWNSHIP, HOME_COUNTY, &officer).await;
    let opening = create_opening(
        &mesh,
        opening_request(&base, "分拣员", HOME_TOWNSHIP, HOME_COUNTY),
        &officer,
    )
    .await;
    let placement = propose(&mesh, &candidate.candidate_id, &opening.opening_id, &officer)
        .await
        .expect("proposed");
    mesh.placement()
        .accept_placement(authorized(
            pb::AcceptPlacementRequest {
                placement_id: placement.placement_id.clone(),
            },
            &officer,
        ))
        .await
        .expect("accepted");

    // The person is transferred to another county before starting work.
    let transferred = registry_pb::SuperviseeTransferred {
        supervisee: Some(snapshot(&supervisee_id, 3, OTHER_TOWNSHIP, true)),
        previous_jurisdiction: Some(jurisdiction(HOME_TOWNSHIP, HOME_COUNTY)),
        reason: "迁居".into(),
        actor: None,
    };
    let transfer_id = publish_supervisee(
        &mesh,
        "supervisee.transferred",
        transferred.encode_to_vec(),
        &supervisee_id,
    )
    .await;
    wait_applied(&mesh, transfer_id).await;
    // The placement follows the person to the new county's offices...
    let moved = mesh
        .placement()
        .get_placement(authorized(
            pb::GetPlacementRequest {
                placement_id: placement.placement_id.clone(),
            },
            &other_bureau,
        ))
        .await
        .expect("the new county sees the placement")
        .into_inner()
        .placement
        .expect("placement");
    assert_eq!(
        moved.jurisdiction,
        Some(jurisdiction(OTHER_TOWNSHIP, OTHER_COUNTY))
    );
    // ...but the job is outside the county the person may not leave: it cannot start.
    let status = mesh
        .placement()
        .start_placement(authorized(
            pb::StartPlacementRequest {
                placement_id: placement.placement_id.clone(),
                start_date: Some(to_date(today())),
            },
            &officer,
        ))
        .await
        .expect_err("outside the county of supervision");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("county of supervision"), "{status:?}");
    let matches = matches_of(&mesh, &candidate.candidate_id, &other_bureau).await;
    assert!(matches.is_empty(), "{matches:?}");
    // The employer declines; the position is free again.
    mesh.placement()
        .decline_placement(authorized(
            pb::DeclinePlacementRequest {
                placement_id: placement.placement_id.clone(),
                declined_by: pb::DeclinedBy::Base as i32,
                reason: "本人已迁居外县".into(),
            },
            &officer,
        ))
        .await
        .expect("declined by the base's office");
    assert_eq!(
        listed_opening(&mesh, &base, &opening.opening_id)
            .await
            .positions_filled,
        0
    );
}
