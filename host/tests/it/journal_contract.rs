//! The journal's contract (`izhub::store::Store`), one suite run against
//! both backends: SQLite (the default, one engine) and PostgreSQL (shared
//! by nodes). Whatever a route journals must read back the same from
//! either.

use std::time::Duration;

use izhub::store::{Attempted, Filter, Journal, NewDelivery, Status, StoreError};

fn delivery(id: &str, destination: &str, key: &str) -> NewDelivery {
    NewDelivery {
        listener: "ehr".into(),
        route: "vxu".into(),
        sender: if id.starts_with('B') {
            "OTHER"
        } else {
            "CLINIC"
        }
        .into(),
        control_id: id.into(),
        message_type: "VXU^V04".into(),
        order_key: key.into(),
        destination: destination.into(),
        raw: format!("MSH|^~\\&|{id}").into_bytes(),
        payload: format!("MSH|^~\\&|{id}|out").into_bytes(),
        stages: format!("stamp-hie\tpass\tissues=0\tfalse ({id})"),
        dedupe: false,
    }
}

fn outcome(status: Status) -> Attempted {
    Attempted {
        status,
        attempts: 1,
        next_attempt_at: 0,
        error: (status != Status::Delivered).then(|| "IIS did not answer".into()),
        answer: (status == Status::Delivered).then(|| (b"MSA|AA".to_vec(), "accepted".into())),
    }
}

async fn count(j: &Journal, status: Status) -> i64 {
    j.count(status).await.unwrap()
}

/// The suite: every backend must pass it unchanged.
async fn contract(j: Journal) -> Result<(), StoreError> {
    // Inserts are durable and numbered in order.
    let ids = j
        .insert(vec![
            delivery("A1", "mi", "k1"),
            delivery("A2", "mi", "k2"),
            delivery("B1", "wa", "k3"),
        ])
        .await?;
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(count(&j, Status::Queued).await, 3);

    // A claim is one destination's queued deliveries, oldest first.
    let claimed = j.claim("mi", 10).await?;
    let got: Vec<&str> = claimed.iter().map(|p| p.control_id.as_str()).collect();
    assert_eq!(got, ["A1", "A2"]);
    assert_eq!(claimed[0].payload, b"MSH|^~\\&|A1|out");
    assert_eq!(claimed[0].route, "vxu");
    assert!(j.hold(claimed[0].id).await?, "the claimer holds its claim");

    // Recorded and flushed: visible to counts, status and selection, and
    // never claimed again.
    j.record(claimed[0].id, outcome(Status::Delivered)).await?;
    j.record(claimed[1].id, outcome(Status::Dead)).await?;
    j.flush().await?;
    assert_eq!(count(&j, Status::Delivered).await, 1);
    assert_eq!(count(&j, Status::Dead).await, 1);
    assert_eq!(count(&j, Status::Queued).await, 1);
    assert_eq!(j.status_of("A1").await?.as_deref(), Some("delivered"));
    assert_eq!(j.status_of("A2").await?.as_deref(), Some("dead"));
    assert_eq!(j.status_of("nope").await?, None);
    assert!(j.stages_of("A1").await?.is_some_and(|s| s.contains("(A1)")));
    assert!(j.claim("mi", 10).await?.is_empty());

    // Selections, oldest first.
    let dead = j
        .select(&Filter {
            status: Some("dead".into()),
            ..Filter::default()
        })
        .await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].control_id, "A2");
    assert_eq!(dead[0].raw, b"MSH|^~\\&|A2");
    let other = j
        .select(&Filter {
            sender: Some("OTHER".into()),
            ..Filter::default()
        })
        .await?;
    assert_eq!(other.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[2]]);

    // The operator's actions: retry a queued one now, requeue a dead one;
    // neither applies to a delivery in another state.
    assert_eq!(j.retry_now(ids[2]).await?.as_deref(), Some("wa"));
    assert_eq!(j.retry_now(ids[0]).await?, None);
    assert_eq!(j.requeue(ids[0]).await?, None);
    assert_eq!(j.requeue(ids[1]).await?.as_deref(), Some("mi"));
    j.flush().await?;
    assert_eq!(j.status_of("A2").await?.as_deref(), Some("queued"));
    let queued = j.queued_by_destination().await?;
    let mut names: Vec<(&str, i64)> = queued.iter().map(|(d, n, _)| (d.as_str(), *n)).collect();
    names.sort();
    assert_eq!(names, [("mi", 1), ("wa", 1)]);
    assert!(queued.iter().all(|(_, _, oldest)| *oldest > 0));

    // Pruning takes finished deliveries only, never queued ones.
    let pruned = j.prune(Duration::ZERO, None).await?;
    assert_eq!(pruned, 1);
    assert_eq!(count(&j, Status::Delivered).await, 0);
    assert_eq!(count(&j, Status::Queued).await, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_journal_contract() {
    let dir = tempfile::tempdir().unwrap();
    let j = izhub::store::open(&dir.path().join("journal.db")).unwrap();
    assert_eq!(j.node_number(), None, "one engine owns a SQLite journal");
    assert!(j.cluster().await.unwrap().is_none());
    contract(j).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_keeps_the_journal_contract() {
    let Some(j) = pg_journal("contract", "contract").await else {
        return;
    };
    assert!(j.node_number().is_some());
    contract(j).await.unwrap();
}

/// A PostgreSQL journal on a new database `db` of the shared test server,
/// as node `node`; `None` when the tests run without PostgreSQL.
async fn pg_journal(db: &str, node: &str) -> Option<Journal> {
    let pg = crate::pg_cluster::shared()?;
    let url = pg.database(db).await;
    let spec = crate::pg_cluster::spec(&url, node, Duration::from_secs(10));
    let store = izhub::store::postgres::PgStore::open(&spec).await.unwrap();
    Some(std::sync::Arc::new(store))
}

/// A PostgreSQL failure keeps the server's reason: its message and SQLSTATE
/// in the text (the driver alone says "db error"), and the error it came
/// from as its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_failure_names_its_sqlstate_and_keeps_its_cause() {
    let Some(pg) = crate::pg_cluster::shared() else {
        return;
    };
    let url = pg.database("contract_reason").await;
    let missing = url.replace("/contract_reason", "/no_such_database");
    let Err(e) = izhub::store::postgres::PgStore::open(&crate::pg_cluster::spec(
        &missing,
        "reason",
        Duration::from_secs(10),
    ))
    .await
    else {
        panic!("a database that does not exist was opened");
    };
    let text = e.to_string();
    assert!(text.contains("SQLSTATE 3D000"), "{text}");
    assert!(text.contains("no_such_database"), "{text}");
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
}

/// Messages journaled from many connections at once share transactions on
/// PostgreSQL, and so do delivery outcomes; what each caller is answered
/// stays its own: a message the database refuses (a NUL byte in a text
/// column) fails alone, the others around it are journaled once each and
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_writes_from_many_callers_answer_each_alone() {
    let Some(j) = pg_journal("contract_groups", "groups").await else {
        return;
    };
    let inserts: Vec<_> = (0..60)
        .map(|i| {
            let j = j.clone();
            let id = if i == 30 {
                "BAD\0ID".to_string()
            } else {
                format!("G{i}")
            };
            tokio::spawn(async move { j.insert(vec![delivery(&id, "mi", &format!("k{i}"))]).await })
        })
        .collect();
    let mut ids = Vec::new();
    for (i, insert) in inserts.into_iter().enumerate() {
        match insert.await.unwrap() {
            Ok(got) if i != 30 => {
                assert_eq!(got.len(), 1);
                ids.extend(got);
            }
            Err(e) if i == 30 => assert!(e.to_string().contains("22021"), "{e}"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 59, "one id per message");
    assert_eq!(count(&j, Status::Queued).await, 59);
    let claimed = j.claim("mi", 100).await.unwrap();
    assert_eq!(claimed.len(), 59);
    let records: Vec<_> = claimed
        .into_iter()
        .map(|p| {
            let j = j.clone();
            tokio::spawn(async move { j.record(p.id, outcome(Status::Delivered)).await })
        })
        .collect();
    for record in records {
        record.await.unwrap().unwrap();
    }
    assert_eq!(count(&j, Status::Delivered).await, 59);
    assert_eq!(count(&j, Status::Queued).await, 0);
}
