//! The demo scenario run by the README's main command. Against the local broker and
//! PostgreSQL it starts the registry, check-in, handover, placement and risk-alert services (second-scale
//! check-in policy so the story fits in a minute) and a township office's webhook receiver,
//! then plays the core loop against 脱管: supervisees registered, officers' check-ins
//! arriving, one supervisee missing a deadline, the alert and its signed notification
//! reaching the township endpoint, a late check-in resolving it. Then a prison hands over two
//! parolees: one reports in and is registered for supervision, the other does not and the
//! 漏管 alert reaches the township; a third, released at the end of his sentence, becomes a
//! resettlement candidate and is matched and placed at a resettlement base. Refused requests
//! and the events on Kafka are shown along the way.

use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use mesh_kit::{
    auth::{Caller, Role},
    kafka::Topics,
    national_id::synthesize,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{
    alert::{self as alert_pb, alert_service_client::AlertServiceClient},
    checkin::{self as checkin_pb, checkin_service_client::CheckinServiceClient},
    common::{Jurisdiction, OffenceCategory},
    handover::{self as handover_pb, handover_service_client::HandoverServiceClient},
    placement::{self as placement_pb, placement_service_client::PlacementServiceClient},
    registry::{self as pb, registry_service_client::RegistryServiceClient},
};
use tonic::transport::Channel;

use crate::{
    harness::{
        Infra, Mesh, PRISON_A, authorized, check_in, county_bureau, new_checkin, notice, officer, prison,
        report_in_request, today, whole_seconds_ago,
    },
    receiver::Receiver,
};

/// Services of the demo, each on a database recreated on every run (the demo's keys are
/// fresh each time).
const SERVICES: [&str; 5] = ["registry", "checkin", "handover", "placement", "risk-alert"];

/// Every level checks in every 6 s with 2 s of grace, so a missed deadline happens live.
const DEMO_POLICY: &[(&str, &str)] = &[
    ("MESH_POLICY_STRICT_INTERVAL", "6s"),
    ("MESH_POLICY_STRICT_GRACE", "2s"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_POLICY_NORMAL_INTERVAL", "6s"),
    ("MESH_POLICY_NORMAL_GRACE", "2s"),
    ("MESH_POLICY_LENIENT_INTERVAL", "6s"),
    ("MESH_POLICY_LENIENT_GRACE", "2s"),
    ("MESH_ABSCONDING_WARNING_AFTER", "240h"),
    ("MESH_ABSCONDING_REVOCATION_AFTER", "1mo"),
    // Released people must report in within 8 s (the law: 10 days).
    ("MESH_REPORT_IN_PERIOD_PAROLE", "8s"),
    ("MESH_REPORT_IN_PERIOD_TEMPORARY_EXECUTION", "8s"),
    ("MESH_REPORT_IN_PERIOD_SENTENCE_COMPLETED", "8s"),
    ("MESH_ALERT_TICK_MS", "200"),
    ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
];

const WEBHOOK_SECRET: &str = "dongjie-judicial-office-webhook-secret-2026";
/// The most notifications the township's endpoint takes in one POST.
const DEMO_BATCH: u32 = 50;

/// 甘州区 东街街道 司法所.
fn dongjie() -> Jurisdiction {
    Jurisdiction {
        township_code: "620702001".into(),
        county_code: "620702".into(),
    }
}

pub async fn run(infra: Infra) -> anyhow::Result<()> {
    println!("== community-corrections mesh demo ==");
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let log_dir = std::env::temp_dir().join("mesh-demo");
    let topics = Topics::unique(&format!("demo.{run_id}"));
    let mut mesh = Mesh::builder()
        .infra(infra.clone())
        .log_dir(&log_dir)
        .topics(topics)
        .build()
        .await
        .context("creating topics: is the broker up? run scripts/infra up")?;
    for service in SERVICES {
        let database = format!("mesh_demo_{}", service.replace('-', "_"));
        // A fresh start, kept afterwards for a look at what the run left.
        infra.drop_database(&database).await?;
        infra.ensure_database(&database).await?;
        mesh.use_database(service, &database);
    }
    println!(
        "topics of this run: {}.*",
        mesh.topics.registry.trim_end_matches(".registry")
    );

    let registry = mesh.spawn("registry", &[]).await?;
    let checkin = mesh.spawn("checkin", &[]).await?;
    let handover = mesh.spawn("handover", &[]).await?;
    let placement = mesh.spawn("placement", &[]).await?;
    // Risk-alert reconciles its watch list with the registry's and the handover service's.
    let (registry_url, handover_url) = (registry.endpoint(), handover.endpoint());
    let mut risk_env = DEMO_POLICY.to_vec();
    risk_env.extend([
        ("MESH_REGISTRY_URL", registry_url.as_str()),
        ("MESH_HANDOVER_URL", handover_url.as_str()),
    ]);
    let risk = mesh.spawn("risk-alert", &risk_env).await?;
    for service in [&registry, &checkin, &handover, &placement, &risk] {
        println!(
            "{:<10} up at {}  (log: {})",
            service.name,
            service.endpoint(),
            service.log_path.display()
        );
    }
    let mut registry_client = RegistryServiceClient::new(registry.channel().await?);
    let mut checkins = CheckinServiceClient::new(checkin.channel().await?);
    let mut alerts = AlertServiceClient::new(risk.channel().await?);
    let mut handovers = HandoverServiceClient::new(handover.channel().await?);
    let mut placements = PlacementServiceClient::new(placement.channel().await?);

    let officer_token = mesh.token(&officer("officer-dongjie-1", "620702001"));
    let other_township = mesh.token(&officer("officer-nanjie-1", "620702002"));
    let office_token = mesh.token(&Caller {
        subject: "office-dongjie".into(),
        role: Role::TownshipOffice,
        township: Some("620702001".into()),
        county: Some("620702".into()),
        prison: None,
    });
    let bureau_token = mesh.token(&county_bureau("bureau-ganzhou", "620702"));

    println!("\n-- 东街司法所 registers its webhook endpoint --");
    let receiver = Receiver::start(WEBHOOK_SECRET).await?;
    alerts
        .register_endpoint(authorized(
            alert_pb::RegisterEndpointRequest {
                jurisdiction: Some(dongjie()),
                url: receiver.url(),
                secret: WEBHOOK_SECRET.into(),
                description: "东街司法所值班系统".into(),
                // A township's duty system takes what falls due together in one POST
                // (a midnight wave), so the demo registers the way a real office would.
                max_batch_size: DEMO_BATCH,
            },
            &office_token,
        ))
        .await?;
    println!(
        "endpoint {} (HMAC-SHA256 signed, batches of up to {DEMO_BATCH})",
        receiver.url()
    );

    println!("\n-- registering supervisees at 东街街道 --");
    let zhang = register(
        &mut registry_client,
        &officer_token,
        "张伟",
        1,
        pb::SupervisionLevel::Strict,
    )
    .await?;
    let li = register(
        &mut registry_client,
        &officer_token,
        "李娜",
        2,
        pb::SupervisionLevel::Normal,
    )
    .await?;
    let wang = register(
        &mut registry_client,
        &officer_token,
        "王芳",
        3,
        pb::SupervisionLevel::Normal,
    )
    .await?;

    println!("\n-- requests the mesh refuses --");
    let mut bad = registration("赵敏", 4, pb::SupervisionLevel::Normal);
    bad.national_id
        .replace_range(17..18, if bad.national_id.ends_with('0') { "1" } else { "0" });
    show_refusal(
        "wrong ID check digit",
        registry_client
            .register_supervisee(authorized(bad, &officer_token))
            .await,
    );
    let duplicate = registration("张伟", 1, pb::SupervisionLevel::Strict);
    show_refusal(
        "same person registered twice",
        registry_client
            .register_supervisee(authorized(duplicate, &officer_token))
            .await,
    );
    let get = pb::GetSuperviseeRequest {
        supervisee_id: zhang.clone(),
    };
    show_refusal(
        "officer of 南街街道 reads a 东街 supervisee",
        registry_client
            .get_supervisee(authorized(get, &other_township))
            .await,
    );
    let foreign = new_checkin(&li, Utc::now());
    show_refusal(
        "officer of 南街街道 records a check-in for 李娜",
        checkins
            .record_checkin(authorized(
                checkin_pb::RecordCheckinRequest {
                    checkin: Some(foreign),
                },
                &other_township,
            ))
            .await,
    );

    println!("\n-- check-ins arrive for 张伟 and 李娜; 王芳 misses her 6 s deadline (+2 s grace) --");
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        for (name, id) in [("张伟", &zhang), ("李娜", &li)] {
            let checkin_id = check_in(&mut checkins, &officer_token, id).await?;
            println!("  check-in {name} ({})", &checkin_id[..8]);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    println!("\n-- the township endpoint receives the alert --");
    let received = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.iter().any(|n| n.event_type == "alert.raised")
        })
        .await;
    let raised = received
        .iter()
        .find(|n| n.event_type == "alert.raised")
        .context("no alert notification arrived")?;
    let alert = &raised.body["alert"];
    println!(
        "notification {} signature valid: {}",
        raised.notification_id, raised.signature_valid
    );
    println!(
        "  {} about {} ({})",
        alert["kind"], alert["subject"]["name"], alert["severity"]
    );
    println!("  rule: {}", alert["rule"]["description"]);
    println!("  legal basis: {}", alert["legalBasis"]);
    println!("  last contact: {}", alert["evidence"]["lastContactAt"]);
    println!(
        "  deadline: {} (+{} s grace)",
        alert["deadline"], alert["evidence"]["gracePeriodSeconds"]
    );
    println!(
        "  recommended measure: {} → {}",
        alert["recommendedMeasure"], alert["escalationTarget"]
    );
    let listed = alerts
        .list_alerts(authorized(
            alert_pb::ListAlertsRequest {
                jurisdiction: Some(dongjie()),
                ..Default::default()
            },
            &bureau_token,
        ))
        .await?
        .into_inner()
        .alerts;
    println!("county bureau lists {} alert(s) for 东街街道", listed.len());

    println!("\n-- 王芳 checks in late; the alert resolves itself --");
    let late = check_in(&mut checkins, &officer_token, &wang).await?;
    println!("  check-in 王芳 ({})", &late[..8]);
    let received = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.iter().any(|n| n.event_type == "alert.resolved")
        })
        .await;
    let resolved = received
        .iter()
        .find(|n| n.event_type == "alert.resolved")
        .context("no resolution notification arrived")?;
    println!(
        "notification {} signature valid: {}: {} — {}",
        resolved.notification_id,
        resolved.signature_valid,
        resolved.body["alert"]["status"],
        resolved.body["alert"]["resolutionNote"]
    );

    println!("\n-- 张掖监狱 hands over two parolees to 东街街道 --");
    // Expected tomorrow, released today: until a release is confirmed the report-in period
    // runs from the expected day, which must not lapse while the demo runs.
    let tomorrow = today() + chrono::Days::new(1);
    let prison_token = mesh.token(&prison("records-clerk-1", PRISON_A));
    let mut handed_over = Vec::new();
    for (n, name) in [(11u16, "陈刚"), (12, "刘洋")] {
        let mut request = notice(n);
        request.person_name = name.into();
        request.key_assistance_target = false;
        request.expected_release_date = Some(to_date(tomorrow));
        let id = handovers
            .submit_release_notice(authorized(request, &prison_token))
            .await?
            .into_inner()
            .handover
            .context("no handover")?
            .handover_id;
        handovers
            .acknowledge_notice(authorized(
                handover_pb::AcknowledgeNoticeRequest {
                    handover_id: id.clone(),
                },
                &office_token,
            ))
            .await?;
        handovers
            .confirm_release(authorized(
                handover_pb::ConfirmReleaseRequest {
                    handover_id: id.clone(),
                    actual_release_time: Some(to_timestamp(whole_seconds_ago(1))),
                },
                &prison_token,
            ))
            .await?;
        println!(
            "  {name}: notice {} acknowledged by 东街司法所, released now; report-in due in 8 s",
            &id[..13]
        );
        handed_over.push((name, id));
    }
    let (_, chen) = &handed_over[0];
    let (_, liu) = &handed_over[1];
    handovers
        .record_report_in(authorized(
            report_in_request(chen, whole_seconds_ago(0)),
            &office_token,
        ))
        .await?;
    println!("  陈刚 reports in at once (报到)");
    let registered = wait_until(Duration::from_secs(20), async || {
        let listed = registry_client
            .list_supervisees(authorized(
                pb::ListSuperviseesRequest {
                    township_code: "620702001".into(),
                    status: 0,
                    page: None,
                },
                &bureau_token,
            ))
            .await
            .ok()?
            .into_inner()
            .supervisees;
        listed.into_iter().find(|s| s.name == "陈刚")
    })
    .await
    .context("陈刚 was not registered from his report-in")?;
    println!(
        "  registry registered 陈刚 from the handover: {} {:?}, level {:?} — his check-ins are now watched",
        registered.national_id_masked,
        registered.status(),
        registered.level()
    );
    println!("  刘洋 does not report in …");
    let received = receiver
        .wait_for(Duration::from_secs(30), |r| {
            r.iter().any(|n| n.alert_kind() == "ALERT_KIND_REPORT_IN_OVERDUE")
        })
        .await;
    let overdue = received
        .iter()
        .find(|n| n.alert_kind() == "ALERT_KIND_REPORT_IN_OVERDUE")
        .context("no 漏管 alert arrived")?;
    let alert = &overdue.body["alert"];
    println!(
        "notification {} signature valid: {}",
        overdue.notification_id, overdue.signature_valid
    );
    println!(
        "  {} about {} → {}",
        alert["kind"], alert["subject"]["name"], alert["escalationTarget"]
    );
    println!("  rule: {}", alert["rule"]["description"]);
    println!("  legal basis: {}", alert["legalBasis"]);
    println!(
        "  released: {}, deadline: {}",
        alert["evidence"]["lastContactAt"], alert["deadline"]
    );
    println!("  evidence: {}", alert["evidence"]["facts"]);
    anyhow::ensure!(
        overdue.subject_id() == liu.as_str(),
        "the 漏管 alert is about 刘洋"
    );

    println!("\n-- a released prisoner is matched and placed at a resettlement base --");
    let mut request = notice(13);
    request.person_name = "周明".into();
    request.category = handover_pb::ReleaseCategory::SentenceCompleted as i32;
    request.key_assistance_target = false;
    request.expected_release_date = Some(to_date(tomorrow));
    request.offence_category = OffenceCategory::Property as i32;
    let zhou = handovers
        .submit_release_notice(authorized(request, &prison_token))
        .await?
        .into_inner()
        .handover
        .context("no handover")?
        .handover_id;
    handovers
        .acknowledge_notice(authorized(
            handover_pb::AcknowledgeNoticeRequest {
                handover_id: zhou.clone(),
            },
            &office_token,
        ))
        .await?;
    handovers
        .confirm_release(authorized(
            handover_pb::ConfirmReleaseRequest {
                handover_id: zhou.clone(),
                actual_release_time: Some(to_timestamp(whole_seconds_ago(1))),
            },
            &prison_token,
        ))
        .await?;
    // Sentence completed: resettlement, not supervision, so no level or term.
    let mut report_in = report_in_request(&zhou, whole_seconds_ago(0));
    report_in.supervision_level = 0;
    report_in.term_start = None;
    report_in.term_end = None;
    report_in.needs_employment = true;
    handovers
        .record_report_in(authorized(report_in, &office_token))
        .await?;
    println!("  周明 (sentence completed, property offence) released and reported in, needs work");
    let candidate = wait_until(Duration::from_secs(20), async || {
        placements
            .list_candidates(authorized(
                placement_pb::ListCandidatesRequest {
                    township_code: "620702001".into(),
                    ..Default::default()
                },
                &office_token,
            ))
            .await
            .ok()?
            .into_inner()
            .candidates
            .into_iter()
            .find(|c| c.name == "周明")
    })
    .await
    .context("周明 never became a placement candidate")?;
    println!(
        "  placement candidate from the handover event: {:?}",
        candidate.source()
    );
    let base = placements
        .create_base(authorized(
            placement_pb::CreateBaseRequest {
                name: "甘州区绿洲农业安置帮教基地".into(),
                jurisdiction: Some(dongjie()),
                r#type: placement_pb::BaseType::Farm as i32,
                contact_name: "马经理".into(),
                contact_phone: "13900000001".into(),
            },
            &office_token,
        ))
        .await?
        .into_inner()
        .base
        .context("no base")?;
    for (title, sector, excluded) in [
        ("温室种植工", placement_pb::Sector::Agriculture, vec![]),
        (
            "超市收银员",
            placement_pb::Sector::Retail,
            vec![OffenceCategory::Property as i32],
        ),
    ] {
        placements
            .create_opening(authorized(
                placement_pb::CreateOpeningRequest {
                    base_id: base.base_id.clone(),
                    title: title.into(),
                    sector: sector as i32,
                    description: String::new(),
                    required_skills: vec![],
                    positions_total: 2,
                    work_jurisdiction: Some(dongjie()),
                    work_location: None,
                    closing_date: Some(to_date(today() + chrono::Days::new(30))),
                    excluded_offence_categories: excluded,
                },
                &office_token,
            ))
            .await?;
        println!("  opening {title} at {}", base.name);
    }
    let matches = placements
        .match_openings(authorized(
            placement_pb::MatchOpeningsRequest {
                candidate_id: candidate.candidate_id.clone(),
                max_results: 10,
            },
            &office_token,
        ))
        .await?
        .into_inner()
        .matches;
    for found in &matches {
        let opening = found.opening.clone().unwrap_or_default();
        println!(
            "  match: {} (score {:.2}) — {}",
            opening.title,
            found.score,
            found.reasons.join("; ")
        );
    }
    println!("  (超市收银员 excludes property offences, so it is not offered)");
    let best = matches
        .first()
        .and_then(|m| m.opening.clone())
        .context("no match for 周明")?;
    let proposed = placements
        .propose_placement(authorized(
            placement_pb::ProposePlacementRequest {
                candidate_id: candidate.candidate_id.clone(),
                opening_id: best.opening_id.clone(),
                note: "本人有务农经验".into(),
            },
            &office_token,
        ))
        .await?
        .into_inner()
        .placement
        .context("no placement")?;
    placements
        .accept_placement(authorized(
            placement_pb::AcceptPlacementRequest {
                placement_id: proposed.placement_id.clone(),
            },
            &office_token,
        ))
        .await?;
    let started = placements
        .start_placement(authorized(
            placement_pb::StartPlacementRequest {
                placement_id: proposed.placement_id.clone(),
                start_date: Some(to_date(today())),
            },
            &office_token,
        ))
        .await?
        .into_inner()
        .placement
        .context("no placement")?;
    println!(
        "  周明 proposed → accepted → {:?} as {} today",
        started.status(),
        best.title
    );

    println!("\n-- events on Kafka --");
    for (name, topic) in [
        ("registry", &mesh.topics.registry),
        ("checkin", &mesh.topics.checkin),
        ("handover", &mesh.topics.handover),
        ("placement", &mesh.topics.placement),
        ("risk-alert", &mesh.topics.alert),
    ] {
        let events = mesh.tap(topic)?.collect(10_000, Duration::from_secs(3)).await?;
        let mut counts = std::collections::BTreeMap::new();
        for event in &events {
            *counts
                .entry(event.header("event_type").unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        let traced = events
            .iter()
            .filter(|e| e.header("traceparent").is_some())
            .count();
        println!(
            "  {name:<10} {topic}: {counts:?} ({traced}/{} carry traceparent)",
            events.len()
        );
    }

    for service in [risk, placement, handover, checkin, registry] {
        let name = service.name.clone();
        let status = service.stop(Duration::from_secs(20)).await?;
        println!("{name} stopped gracefully ({status})");
    }
    anyhow::ensure!(
        raised.signature_valid && resolved.signature_valid,
        "a notification was not signed correctly"
    );
    println!("\ndemo complete");
    Ok(())
}

/// Polls `probe` until it yields something or `timeout` passes.
async fn wait_until<T>(timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = probe().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn registration(name: &str, sequence: u16, level: pb::SupervisionLevel) -> pb::RegisterSuperviseeRequest {
    let birth = NaiveDate::from_ymd_opt(1985 + i32::from(sequence), 3, 14).unwrap_or_default();
    pb::RegisterSuperviseeRequest {
        name: name.into(),
        national_id: synthesize("620702", birth, sequence),
        category: pb::Category::Probation as i32,
        term_start: NaiveDate::from_ymd_opt(2026, 9, 1).map(to_date),
        term_end: NaiveDate::from_ymd_opt(2028, 8, 31).map(to_date),
        level: level as i32,
        township_code: "620702001".into(),
        county_code: "620702".into(),
        officer_id: "officer-dongjie-1".into(),
        phone: "13800000000".into(),
        address: "张掖市甘州区东街 demo address".into(),
        // Reported in now: supervision is active and the check-in schedule starts.
        reported_at: Some(to_timestamp(Utc::now())),
        needs_employment: sequence.is_multiple_of(2),
    }
}

async fn register(
    client: &mut RegistryServiceClient<Channel>,
    token: &str,
    name: &str,
    sequence: u16,
    level: pb::SupervisionLevel,
) -> anyhow::Result<String> {
    let supervisee = client
        .register_supervisee(authorized(registration(name, sequence, level), token))
        .await?
        .into_inner()
        .supervisee
        .context("response without supervisee")?;
    println!(
        "registered {} ({}) level {:?} → {} {:?}",
        supervisee.name,
        supervisee.national_id_masked,
        supervisee.level(),
        &supervisee.supervisee_id[..13],
        supervisee.status()
    );
    Ok(supervisee.supervisee_id)
}

fn show_refusal<T>(what: &str, result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(_) => println!("UNEXPECTED: {what} was accepted"),
        Err(status) => println!("{what}: {:?} — {}", status.code(), status.message()),
    }
}
