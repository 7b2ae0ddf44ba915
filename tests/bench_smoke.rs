//! `mesh bench --smoke` runs through every stage in seconds and writes its report, so the
//! bench cannot rot: every figure it promises is measured (and positive), beside its
//! ceilings, and lands in bench.json and bench.md.

use mesh::{bench, harness::Infra};

#[tokio::test]
async fn the_bench_smoke_measures_every_stage_and_writes_its_report() {
    let out = std::env::temp_dir().join(format!("mesh-bench-smoke-{}", uuid::Uuid::new_v4().simple()));
    let report = bench::run(
        Infra::from_env(),
        bench::Options::smoke(out.clone()),
        "bench smoke".into(),
    )
    .await
    .expect("the bench completes");
    for figure in [
        "RecordCheckin: applied by risk-alert",
        "RecordCheckin latency p99",
        "SyncOfflineBatch: applied by risk-alert",
        "raw batched insert of the same rows",
        "broker raw produce",
        "end to end / raw insert",
        "risk-alert apply rate (events produced directly)",
        "deadline → signed webhook received p99",
        "seeding (COPY)",
        "at 2000: deadline → alert raised p99",
        "at 2000: deadline → signed webhook received p99",
        "wave of 500: all alerts raised",
        "wave of 500: all notifications delivered",
        "risk-alert peak RSS",
        "risk-alert database size",
    ] {
        let value = report
            .value(figure)
            .unwrap_or_else(|| panic!("{figure} measured"));
        assert!(value > 0.0, "{figure}: {value}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json"))
            .expect("json");
    assert_eq!(
        json["figures"].as_array().map(Vec::len),
        Some(report.figures.len())
    );
    assert!(json["cores"].as_u64().is_some_and(|cores| cores >= 1));
    assert!(
        std::fs::read_to_string(out.join("bench.md"))
            .expect("bench.md")
            .contains("| ceiling |")
    );
    std::fs::remove_dir_all(out).expect("cleaned");
}
