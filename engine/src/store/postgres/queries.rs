//! The journal's and the cluster's statements on PostgreSQL: claims under
//! a lease with a fencing token, attempts, heartbeats, job leases, the
//! operator's queries.

use super::*;

impl Inner {
    pub(super) async fn heartbeat(&self, first: bool) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at, name, console_url)
             VALUES ($1, {DB_NOW}, {DB_NOW}, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = {DB_NOW}"
        );
        client
            .execute(sql.as_str(), &[&self.node, &self.name, &self.console_url])
            .await
            .map_err(write_err)?;
        if first {
            let forget = format!("DELETE FROM nodes WHERE heartbeat_at < {DB_NOW} - $1");
            client
                .execute(forget.as_str(), &[&FORGET_NODES_MS])
                .await
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// Extends the leases of the deliveries being sent now, as long as
    /// their tokens still match.
    pub(super) async fn renew(&self) -> Result<(), StoreError> {
        let (ids, tokens): (Vec<i64>, Vec<i64>) = self
            .claims
            .lock()
            .map_err(|_| StoreError::Closed)?
            .iter()
            .filter(|(_, c)| c.sending)
            .map(|(id, c)| (*id, c.token))
            .unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "UPDATE deliveries d SET lease_until = {DB_NOW} + $3
             FROM unnest($1::bigint[], $2::bigint[]) AS h(id, token)
             WHERE d.id = h.id AND d.lease_token = h.token AND d.status = 'queued'"
        );
        let renew = client.prepare_cached(&sql).await.map_err(write_err)?;
        client
            .execute(&renew, &[&ids, &tokens, &self.lease_ms])
            .await
            .map_err(write_err)?;
        Ok(())
    }

    pub(super) async fn insert(&self, message: Vec<NewDelivery>) -> Result<Vec<i64>, StoreError> {
        self.inserts
            .ask(message)
            .await
            .unwrap_or(Err(StoreError::Closed))
    }

    pub(super) async fn claim(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let asked = tokio::time::Instant::now();
        // Heads only: the oldest queued delivery of each order key. The lock
        // re-checks status and lease on the current row, so a head recorded
        // meanwhile by another node is passed over.
        let sql = format!(
            "WITH heads AS (
                SELECT DISTINCT ON (order_key) id FROM deliveries
                WHERE destination = $1 AND status = 'queued'
                ORDER BY order_key, id
            ), picked AS (
                SELECT d.id FROM deliveries d JOIN heads h ON h.id = d.id
                WHERE d.status = 'queued' AND d.next_attempt_at <= $5
                  AND (d.lease_until < {DB_NOW} OR d.lease_node = $3)
                ORDER BY d.id LIMIT $2
                FOR UPDATE OF d SKIP LOCKED
            )
            UPDATE deliveries d SET lease_node = $3, lease_until = {DB_NOW} + $4,
                lease_token = nextval('fencing_tokens')
            FROM picked, bodies b
            WHERE d.id = picked.id AND b.id = d.id
            RETURNING d.id, d.order_key, d.control_id,
                CASE WHEN length(b.payload) = 0 THEN b.raw ELSE b.payload END,
                d.attempts, d.next_attempt_at, d.received_at, d.route, d.lease_token, d.sender"
        );
        let claim = client.prepare_cached(&sql).await.map_err(read_err)?;
        let rows = client
            .query(
                &claim,
                &[
                    &destination,
                    &(limit as i64),
                    &self.node,
                    &self.lease_ms,
                    &now_ms(),
                ],
            )
            .await
            .map_err(read_err)?;
        let mut pending = Vec::with_capacity(rows.len());
        let mut claims = self.claims.lock().map_err(|_| StoreError::Closed)?;
        for r in rows {
            let id: i64 = r.get(0);
            let claim = Claim {
                token: r.get(8),
                sending: false,
                asked,
            };
            claims.insert(id, claim);
            pending.push(Pending {
                id,
                order_key: r.get(1),
                control_id: r.get(2),
                payload: r.get(3),
                attempts: r.get::<_, i32>(4).max(0) as u32,
                next_attempt_at: r.get(5),
                received_at: r.get(6),
                route: r.get(7),
                sender: r.get(9),
            });
        }
        pending.sort_by_key(|p| p.id);
        Ok(pending)
    }

    pub(super) async fn hold(&self, id: i64) -> Result<bool, StoreError> {
        let asked = tokio::time::Instant::now();
        // A claim asked for less than an eighth of the lease ago holds by
        // itself: its lease runs past the send window of a hold asked now
        // (`send_window`, three quarters of the lease), and no other node
        // can have taken it meanwhile. One round trip less per delivery;
        // from here on it is renewed with the others being sent.
        let lease = Duration::from_millis(self.lease_ms.max(0) as u64);
        let claim = {
            let Ok(mut claims) = self.claims.lock() else {
                return Ok(false);
            };
            let Some(claim) = claims.get_mut(&id) else {
                return Ok(false);
            };
            if asked.saturating_duration_since(claim.asked) < lease / 8 {
                claim.sending = true;
                return Ok(true);
            }
            *claim
        };
        let token = claim.token;
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "UPDATE deliveries SET lease_until = {DB_NOW} + $3
             WHERE id = $1 AND lease_token = $2 AND status = 'queued'"
        );
        let hold = client.prepare_cached(&sql).await.map_err(write_err)?;
        let held = client
            .execute(&hold, &[&id, &token, &self.lease_ms])
            .await
            .map_err(write_err)?
            == 1;
        if let Ok(mut claims) = self.claims.lock() {
            if held {
                claims.insert(
                    id,
                    Claim {
                        sending: true,
                        ..claim
                    },
                );
            } else {
                claims.remove(&id);
            }
        }
        Ok(held)
    }

    pub(super) async fn release(&self, id: i64) -> Result<(), StoreError> {
        let token = self.claims.lock().ok().and_then(|mut c| c.remove(&id));
        let Some(Claim { token, .. }) = token else {
            return Ok(());
        };
        let client = self.pool.get().await.map_err(write_err)?;
        let release = client
            .prepare_cached(
                "UPDATE deliveries SET lease_node = NULL, lease_until = 0
                 WHERE id = $1 AND lease_token = $2",
            )
            .await
            .map_err(write_err)?;
        client
            .execute(&release, &[&id, &token])
            .await
            .map_err(write_err)?;
        Ok(())
    }

    pub(super) async fn record(&self, id: i64, outcome: Attempted) -> Result<(), StoreError> {
        let token = self.claims.lock().ok().and_then(|mut c| c.remove(&id));
        let Some(Claim { token, .. }) = token else {
            self.fenced.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Fenced(id));
        };
        let attempted = Arc::new(outcome);
        // A database restarting is waited for, within the lease: past it the
        // delivery is another node's anyway.
        let give_up = tokio::time::Instant::now() + Duration::from_millis(self.lease_ms as u64);
        loop {
            let outcome = group::Outcome {
                id,
                token,
                attempted: attempted.clone(),
            };
            let result = self
                .records
                .ask(outcome)
                .await
                .unwrap_or(Err(StoreError::Closed));
            match result {
                Ok(1) => return Ok(()),
                Ok(_) => {
                    self.fenced.fetch_add(1, Ordering::Relaxed);
                    return Err(StoreError::Fenced(id));
                }
                Err(e) if tokio::time::Instant::now() >= give_up => return Err(e),
                Err(StoreError::Closed) => return Err(StoreError::Closed),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Takes or renews this node's lease on bulk job `job`: false while
    /// another node's lease on it runs.
    pub(super) async fn job_lease(&self, job: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let sql = format!(
            "INSERT INTO bulk_jobs (id, node, lease_until) VALUES ($1, $2, {DB_NOW} + $3)
             ON CONFLICT (id) DO UPDATE SET node = $2, lease_until = {DB_NOW} + $3
             WHERE bulk_jobs.node = $2 OR bulk_jobs.lease_until < {DB_NOW}"
        );
        let n = client
            .execute(sql.as_str(), &[&job, &self.node, &self.lease_ms])
            .await
            .map_err(write_err)?;
        Ok(n == 1)
    }

    pub(super) async fn job_release(&self, job: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        client
            .execute(
                "DELETE FROM bulk_jobs WHERE id = $1 AND node = $2",
                &[&job, &self.node],
            )
            .await
            .map_err(write_err)?;
        Ok(())
    }

    /// The other live nodes with a console address, one per name (the
    /// newest process of each), with their numbers.
    pub(super) async fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT DISTINCT ON (n.name) n.name, n.console_url, k.number
             FROM nodes n JOIN node_numbers k ON k.name = n.name
             WHERE n.name <> $1 AND n.console_url <> ''
               AND n.heartbeat_at >= {DB_NOW} - $2
             ORDER BY n.name, n.heartbeat_at DESC"
        );
        let rows = client
            .query(sql.as_str(), &[&self.name, &(self.lease_ms * 3)])
            .await
            .map_err(read_err)?;
        Ok(rows
            .iter()
            .map(|r| Peer {
                name: r.get(0),
                console_url: r.get(1),
                number: r.get(2),
            })
            .collect())
    }

    pub(super) async fn cluster(&self) -> Result<ClusterState, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT n.node_id, n.started_at, n.heartbeat_at, {DB_NOW} - n.heartbeat_at,
                (SELECT COUNT(*) FROM deliveries d WHERE d.lease_node = n.node_id
                    AND d.status = 'queued' AND d.lease_until >= {DB_NOW})
             FROM nodes n ORDER BY n.node_id"
        );
        let rows = client.query(sql.as_str(), &[]).await.map_err(read_err)?;
        Ok(ClusterState {
            node: self.node.clone(),
            lease_ms: self.lease_ms,
            fenced: self.fenced.load(Ordering::Relaxed),
            nodes: rows
                .iter()
                .map(|r| NodeState {
                    id: r.get(0),
                    started_at: r.get(1),
                    heartbeat_at: r.get(2),
                    heartbeat_age_ms: r.get(3),
                    leases: r.get(4),
                })
                .collect(),
        })
    }

    pub(super) async fn select(&self, filter: &Filter) -> Result<Vec<Journaled>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let mut conditions = String::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |cond: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            conditions.push_str(&cond.replace('?', &format!("${}", args.len())));
        };
        if !filter.ids.is_empty() {
            add(" AND d.id = ANY(?)", Box::new(filter.ids.clone()));
        }
        if let Some(s) = &filter.sender {
            add(" AND d.sender = ?", Box::new(s.clone()));
        }
        if let Some(s) = &filter.status {
            add(" AND d.status = ?", Box::new(s.clone()));
        }
        if let Some(t) = filter.since_ms {
            add(" AND d.received_at >= ?", Box::new(t));
        }
        let sql = format!(
            "SELECT id, listener, raw, control_id FROM (
                SELECT DISTINCT ON (d.received_at, d.control_id, d.listener)
                    d.id, d.listener, b.raw, d.control_id
                FROM deliveries d JOIN bodies b ON b.id = d.id WHERE true{conditions}
                ORDER BY d.received_at, d.control_id, d.listener, d.id
             ) s ORDER BY id LIMIT 100000"
        );
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client
            .query(sql.as_str(), &params)
            .await
            .map_err(read_err)?;
        Ok(rows
            .iter()
            .map(|r| Journaled {
                id: r.get(0),
                listener: r.get(1),
                raw: r.get(2),
                control_id: r.get(3),
            })
            .collect())
    }

    pub(super) async fn prune(
        &self,
        max_age: Duration,
        max_finished: Option<u64>,
    ) -> Result<usize, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let mut deleted = client
            .execute(
                "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < $1",
                &[&cutoff],
            )
            .await
            .map_err(write_err)?;
        if let Some(keep) = max_finished {
            deleted += client
                .execute(
                    "DELETE FROM deliveries WHERE status IN ('delivered', 'dead') AND id NOT IN
                     (SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') ORDER BY id DESC LIMIT $1)",
                    &[&(keep.min(i64::MAX as u64) as i64)],
                )
                .await
                .map_err(write_err)?;
        }
        Ok(deleted as usize)
    }

    /// One text column of the newest delivery with this MSH-10.
    pub(super) async fn newest(
        &self,
        control_id: &str,
        column: &'static str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(read_err)?;
        let sql = format!(
            "SELECT {column} FROM deliveries d JOIN bodies b ON b.id = d.id
             WHERE d.control_id = $1 ORDER BY d.id DESC LIMIT 1"
        );
        let row = client
            .query_opt(sql.as_str(), &[&control_id])
            .await
            .map_err(read_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// An update returning the destination of the row it changed.
    pub(super) async fn update_one(
        &self,
        sql: &'static str,
        id: i64,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(write_err)?;
        let row = client
            .query_opt(sql, &[&id, &now_ms()])
            .await
            .map_err(write_err)?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// Heartbeat and lease renewal, a third of a lease apart, for as long as
/// the store lives.
pub(super) async fn keep_alive(inner: Weak<Inner>) {
    let mut failing = false;
    loop {
        let every = match inner.upgrade() {
            Some(i) => Duration::from_millis((i.lease_ms / 3).max(200) as u64),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let result = async {
            inner.heartbeat(false).await?;
            inner.renew().await
        }
        .await;
        match result {
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster heartbeat failed; deliveries in flight may be taken over by another node");
                failing = true;
            }
            Err(_) => {}
            Ok(()) if failing => {
                tracing::info!("cluster heartbeat works again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
}
