//! `mesh dlq`: the dead letters each service keeps in its own database (`kit_dead_letters`),
//! listed, and replayed on request. The CLI only reads and marks rows; each service's
//! consumer applies a requested replay itself, through its own handler and inbox, and
//! records the outcome (`replayed` or `replay failed: …` in the listing).

use anyhow::{Context, bail};
use chrono::Utc;
use mesh_kit::dead_letter::{self, DeadLetter, Selection};
use sqlx::postgres::PgPoolOptions;

/// What to replay.
#[derive(Debug, Clone)]
pub enum Replay {
    /// One dead letter; `service` (may be empty) tells apart equal ids of several databases.
    One { id: i64, service: String },
    /// Every dead letter of `service` not yet replayed.
    AllOf { service: String },
}

/// The dead letters of the databases at `urls`, as a table: all not yet replayed, or with
/// `include_replayed` every one; only `service`'s when it is not empty.
pub async fn list(urls: &[String], service: &str, include_replayed: bool) -> anyhow::Result<String> {
    let selection = Selection {
        id: None,
        service: service.to_owned(),
        include_replayed,
    };
    let mut rows = Vec::new();
    for url in databases(urls)? {
        let pool = connect(url).await?;
        rows.extend(dead_letter::list(&pool, &selection).await?);
        pool.close().await;
    }
    Ok(table(&rows))
}

/// Requests the replay `what` selects; returns what was requested, for the operator.
pub async fn replay(urls: &[String], what: &Replay) -> anyhow::Result<String> {
    let selection = match what {
        Replay::One { id, service } => Selection {
            id: Some(*id),
            service: service.clone(),
            include_replayed: false,
        },
        Replay::AllOf { service } => {
            if service.is_empty() {
                bail!("replaying all dead letters needs --service");
            }
            Selection {
                id: None,
                service: service.clone(),
                include_replayed: false,
            }
        }
    };
    let mut pools = Vec::new();
    for url in databases(urls)? {
        let pool = connect(url).await?;
        let found = dead_letter::list(&pool, &selection).await?;
        pools.push((pool, found.len()));
    }
    // Ids count per database: one id in two databases is two different records.
    if let Replay::One { id, .. } = what {
        match pools.iter().filter(|(_, found)| *found > 0).count() {
            0 => bail!("no dead letter {id} awaiting replay"),
            1 => {}
            _ => bail!(
                "dead letter {id} exists in several databases: name its --service or one --database-url"
            ),
        }
    }
    let now = Utc::now();
    let mut requested = Vec::new();
    for (pool, found) in pools {
        if found > 0 {
            requested.extend(dead_letter::request_replay(&pool, &selection, now).await?);
        }
        pool.close().await;
    }
    Ok(format!(
        "replay requested for {} dead letter(s): {:?}; the consumer applies them within seconds \
         (see `mesh dlq list --all`)",
        requested.len(),
        requested
    ))
}

fn databases(urls: &[String]) -> anyhow::Result<impl Iterator<Item = &str>> {
    if urls.iter().all(|url| url.trim().is_empty()) {
        bail!("no database: pass --database-url (or set MESH_DATABASE_URL) for each service to look at");
    }
    Ok(urls.iter().map(|url| url.trim()).filter(|url| !url.is_empty()))
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {}", redacted(url)))
}

/// A URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// One line per dead letter: id, service, where it came from, its type, why, when, and its
/// replay state.
fn table(rows: &[DeadLetter]) -> String {
    let mut out = String::from(
        "ID\tSERVICE\tSOURCE (topic/partition@offset)\tEVENT TYPE\tDEAD-LETTERED AT\tREPLAY\tREASON\n",
    );
    for row in rows {
        out.push_str(&format!(
            "{}\t{}\t{}/{}@{}\t{}\t{}\t{}\t{}\n",
            row.id,
            row.service,
            row.source_topic,
            row.source_partition,
            row.source_offset,
            row.event_type.as_deref().unwrap_or("-"),
            row.dead_lettered_at.format("%Y-%m-%d %H:%M:%S UTC"),
            row.replay_state(),
            row.reason.replace(['\n', '\t'], " "),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("postgres://user:secret@db:5432/mesh_registry"),
            "postgres://…@db:5432/mesh_registry"
        );
        assert_eq!(redacted("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn no_database_is_an_error_not_an_empty_list() {
        assert!(databases(&[]).is_err());
        assert!(databases(&[" ".to_owned()]).is_err());
    }
}
