//! Reading the log: searches, one message whole, the audit trail, data
//! quality; on the reader connection, never waiting for the writer.

use super::*;
use rusqlite::types::Value;

impl MessageLog {
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, LogError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| LogError::Read(Cause::new(e)))
    }

    /// Messages matching `search`, newest first.
    pub fn search(&self, search: &Search, cancel: &dyn Fn() -> bool) -> Result<Page, LogError> {
        let limit = search.limit.clamp(1, 200);
        let filter = Filter::of(search);
        let Some(needle) = &search.matching.contains else {
            let (mut sql, mut args) = (filter.sql, filter.args);
            let key = filter.key;
            if let Some(before) = search.before {
                sql.push_str(&format!(" AND {key} < ?"));
                args.push(Value::Integer(before));
            }
            sql.push_str(&format!(" ORDER BY {key} DESC LIMIT ?"));
            args.push(Value::Integer(limit as i64 + 1));
            let mut items = self.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args.iter()), meta_of)?;
                rows.collect::<rusqlite::Result<Vec<Meta>>>()
            })?;
            let next = (items.len() > limit).then(|| {
                items.truncate(limit);
                items.last().map(|m| m.id)
            });
            return Ok(Page {
                items,
                next: next.flatten(),
                partial: false,
            });
        };
        self.search_bodies(&filter, search.before, needle.as_bytes(), limit, cancel)
    }

    /// Content search: batches of ids walked newest first, each body looked
    /// at, until the page is full, the time is up or the asker went away.
    fn search_bodies(
        &self,
        filter: &Filter,
        before: Option<i64>,
        needle: &[u8],
        limit: usize,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Page, LogError> {
        let key = filter.key;
        let started = Instant::now();
        let mut items = Vec::new();
        let mut cursor = before;
        let mut partial = false;
        loop {
            let mut batch_sql = filter.sql.clone();
            let mut batch_args = filter.args.clone();
            if let Some(c) = cursor {
                batch_sql.push_str(&format!(" AND {key} < ?"));
                batch_args.push(Value::Integer(c));
            }
            batch_sql.push_str(&format!(" ORDER BY {key} DESC LIMIT 500"));
            let batch = self.read(|c| {
                let mut stmt = c.prepare_cached(&batch_sql)?;
                let rows = stmt.query_map(params_from_iter(batch_args.iter()), meta_of)?;
                rows.collect::<rusqlite::Result<Vec<Meta>>>()
            })?;
            let Some(last) = batch.last().map(|m| m.id) else {
                break;
            };
            for m in batch {
                let body = self.body(m.id)?;
                if body.is_some_and(|b| memchr::memmem::find(&b.received, needle).is_some()) {
                    items.push(m);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if items.len() > limit {
                break;
            }
            cursor = Some(last);
            if started.elapsed() > Duration::from_secs(2) || cancel() {
                partial = true;
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.id)
        } else if partial {
            cursor
        } else {
            None
        };
        Ok(Page {
            items,
            next,
            partial,
        })
    }

    /// Every message a search finds, newest first, at most `cap`, walked
    /// page by page (for actions on a filtered set and for reports).
    pub fn search_all(&self, search: &Search, cap: usize) -> Result<Vec<Meta>, LogError> {
        let mut search = search.clone();
        search.limit = 500;
        let mut all = Vec::new();
        loop {
            let page = self.search(&search, &|| false)?;
            all.extend(page.items);
            match page.next {
                Some(n) if all.len() < cap => search.before = Some(n),
                _ => break,
            }
        }
        all.truncate(cap);
        Ok(all)
    }

    /// One message in full.
    pub fn get(&self, id: i64) -> Result<Option<Full>, LogError> {
        let found = self.read(|c| {
            let meta = c
                .prepare_cached("SELECT id, received_at, listener, sender, type, control_id, patient_id, route, destination, status, ack, detections, latency_us, resolved FROM messages WHERE id = ?")?
                .query_row(params![id], meta_of)
                .optional()?;
            let Some(meta) = meta else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT at, destination, result, class, answer FROM attempts WHERE message_id = ? ORDER BY at, rowid",
            )?;
            let attempts = stmt
                .query_map(params![id], |r| {
                    Ok(AttemptRow {
                        time: r.get(0)?,
                        destination: r.get(1)?,
                        result: r.get(2)?,
                        class: r.get(3)?,
                        answer: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let reprocess_of: Option<i64> = c
                .prepare_cached("SELECT reprocess_of FROM messages WHERE id = ?")?
                .query_row(params![id], |r| r.get(0))
                .optional()?
                .flatten();
            let reprocessed_as = c
                .prepare_cached("SELECT id FROM messages WHERE reprocess_of = ? ORDER BY id LIMIT 100")?
                .query_map(params![id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            let place = body_place(c, id)?;
            Ok(Some((meta, reprocess_of, reprocessed_as, attempts, place)))
        })?;
        let Some((meta, reprocess_of, reprocessed_as, attempts, place)) = found else {
            return Ok(None);
        };
        let body = self.read_body(id, place)?.unwrap_or_default();
        let mut attempts: Vec<AttemptRow> = attempts
            .into_iter()
            .map(|mut a| {
                if a.answer.as_deref() == Some(SAME_AS_ANSWER) {
                    a.answer = Some(body.answer.clone());
                }
                a
            })
            .collect();
        // The relay-mode delivery, kept in the body.
        if let Ok(a) = serde_json::from_slice::<BodyAttempt>(&body.attempt) {
            attempts.push(AttemptRow {
                time: a.at,
                destination: a.destination,
                result: a.result,
                class: a.class,
                answer: match a.answer {
                    AttemptAnswer::Same => Some(body.answer.clone()),
                    AttemptAnswer::Own => Some(body.iis_answer.clone()),
                    AttemptAnswer::None => None,
                },
            });
            attempts.sort_by_key(|a| a.time);
        }
        Ok(Some(Full {
            meta,
            reprocess_of,
            reprocessed_as,
            received: body.received,
            stages: body.stages,
            issues: body.issues,
            answer: body.answer,
            attempts,
        }))
    }

    /// A message's body: from its segment, or from `message_bodies` for a
    /// message logged before bodies moved out of the file.
    fn body(&self, id: i64) -> Result<Option<Body>, LogError> {
        let place = self.read(|c| body_place(c, id))?;
        self.read_body(id, place)
    }

    fn read_body(&self, id: i64, place: Option<BodyPlace>) -> Result<Option<Body>, LogError> {
        match place {
            None => Ok(None),
            Some(BodyPlace::Segment(at)) => bodies::read(&self.bodies, at, id)
                .map_err(|e| LogError::Read(Cause::text(format!("message {id}'s body: {e}")))),
            Some(BodyPlace::Row(old)) => Ok(old),
        }
    }

    /// The newest audit entries.
    pub fn audit_entries(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LogError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at, user, action, target, result FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            )?;
            stmt.query_map(params![before.unwrap_or(i64::MAX), limit.clamp(1, 500) as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    user: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: r.get(5)?,
                })
            })?
            .collect()
        })
    }

    /// Per sender and day since `since_ms`: messages, rejections, and how
    /// complete race and ethnicity were (as the race-ethnicity plugin
    /// reported them).
    #[allow(clippy::type_complexity)]
    pub fn quality(
        &self,
        since_ms: i64,
        sender: Option<&str>,
    ) -> Result<Vec<(String, String, i64, i64, serde_json::Value)>, LogError> {
        self.read(|c| {
            // One sender: its index, not every message of the period.
            let sql = match sender {
                Some(_) => format!(
                    "SELECT {QUALITY_COLUMNS} FROM messages INDEXED BY messages_sender
                     WHERE sender = ?2 AND received_at >= ?1 GROUP BY day ORDER BY day"
                ),
                None => format!(
                    "SELECT {QUALITY_COLUMNS} FROM messages WHERE received_at >= ?1 AND ?2 IS NULL
                     GROUP BY sender, day ORDER BY sender, day"
                ),
            };
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params![since_ms, sender], |r| {
                let n = |i: usize| -> rusqlite::Result<i64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0))
                };
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    n(2)?,
                    n(3)?,
                    serde_json::json!({
                        "race_reported": n(4)?, "race_complete": n(5)?,
                        "ethnicity_reported": n(6)?, "ethnicity_complete": n(7)?,
                    }),
                ))
            })?
            .collect()
        })
    }

    /// Per route, destination and minute from `since_ms` up to `until_ms`,
    /// oldest first: messages and rejections (by izhub or the IIS). What the
    /// dashboard's charts start from after a restart.
    #[allow(clippy::type_complexity)]
    pub fn traffic(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(String, String, i64, i64, i64)>, LogError> {
        self.read(|c| {
            c.prepare(
                "SELECT route, destination, received_at / 60000 AS minute, COUNT(*),
                        SUM(status IN ('rejected_by_izhub', 'rejected_by_iis'))
                 FROM messages WHERE received_at >= ?1 AND received_at < ?2
                 GROUP BY minute, route, destination ORDER BY minute",
            )?
            .query_map(params![since_ms, until_ms], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                ))
            })?
            .collect()
        })
    }

    /// The journal rows of a logged message (commit mode).
    pub fn journal_ids(&self, id: i64) -> Result<Vec<i64>, LogError> {
        self.read(|c| {
            c.prepare_cached("SELECT journal_id FROM journal_links WHERE id = ?1")?
                .query_map(params![id], |r| r.get(0))?
                .collect()
        })
    }

    /// The detections of a sender's messages since `since_ms`: id → messages.
    /// Per sender, the detections found since `since_ms`, most messages
    /// first (at most `limit` each), with the newest message that had it.
    /// One walk over the detections, not one per sender.
    pub fn detections_by_sender(
        &self,
        since_ms: i64,
        sender: Option<&str>,
        limit: usize,
    ) -> Result<HashMap<String, Vec<DetectionCount>>, LogError> {
        let rows: Vec<(String, String, i64, i64)> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.sender, md.detection, COUNT(*), MAX(m.id) FROM message_detections md JOIN messages m ON m.id = md.id
                 WHERE m.received_at >= ?1 AND (?2 IS NULL OR m.sender = ?2)
                 GROUP BY m.sender, md.detection",
            )?;
            stmt.query_map(params![since_ms, sender], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })?;
        let mut out: HashMap<String, Vec<DetectionCount>> = HashMap::new();
        for (s, d, n, example) in rows {
            out.entry(s).or_default().push((d, n, example));
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(limit);
        }
        Ok(out)
    }
}

pub(super) fn meta_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Meta> {
    let detections: String = r.get(11)?;
    Ok(Meta {
        id: r.get(0)?,
        time: r.get(1)?,
        listener: r.get(2)?,
        sender: r.get(3)?,
        message_type: r.get(4)?,
        control_id: r.get(5)?,
        patient_id: r.get(6)?,
        route: r.get(7)?,
        destination: r.get(8)?,
        status: r.get(9)?,
        ack: r.get(10)?,
        detections: detections
            .split(' ')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        latency_ms: r.get::<_, i64>(12)? as f64 / 1000.0,
        resolved: r.get::<_, i64>(13)? != 0,
    })
}

/// Where a logged message's body is.
pub(super) enum BodyPlace {
    /// In a segment file.
    Segment(BodyRef),
    /// Logged before bodies had files of their own: in `message_bodies`.
    Row(Option<Body>),
}

/// Where message `id`'s body is (`None`: no such message).
pub(super) fn body_place(c: &Connection, id: i64) -> rusqlite::Result<Option<BodyPlace>> {
    let at = c
        .prepare_cached("SELECT body_ref, body_len FROM messages WHERE id = ?")?
        .query_row(params![id], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    Ok(match at {
        None => None,
        Some((Some(at), Some(len))) => Some(BodyPlace::Segment(BodyRef { at, len })),
        Some(_) => Some(BodyPlace::Row(
            c.prepare_cached(
                "SELECT received, stages, issues, answer FROM message_bodies WHERE id = ?",
            )?
            .query_row(params![id], |r| {
                Ok(Body {
                    received: r.get(0)?,
                    stages: r.get(1)?,
                    issues: r.get(2)?,
                    answer: r.get(3)?,
                    iis_answer: Vec::new(),
                    attempt: Vec::new(),
                })
            })
            .optional()?,
        )),
    })
}

/// A search's conditions as SQL: the query up to its `WHERE` clauses, its
/// arguments, and the id column it pages by.
struct Filter {
    sql: String,
    args: Vec<Value>,
    key: &'static str,
}

impl Filter {
    fn of(search: &Search) -> Filter {
        let (mut sql, mut args) = (String::new(), Vec::<Value>::new());
        sql.push_str("SELECT m.id, m.received_at, m.listener, m.sender, m.type, m.control_id, m.patient_id, m.route, m.destination, m.status, m.ack, m.detections, m.latency_us, m.resolved FROM messages m");
        // With a detection, walk its index (detection, id) newest first and
        // look each message up; else walk the messages newest first.
        let key = if search.matching.detection.is_some() {
            "md.id"
        } else {
            "m.id"
        };
        if let Some(d) = &search.matching.detection {
            sql.push_str(" JOIN message_detections md ON md.id = m.id AND md.detection = ?");
            args.push(Value::Text(d.clone()));
        }
        sql.push_str(" WHERE 1=1");
        let mut eq = |col: &str, v: &Option<String>| {
            if let Some(v) = v {
                sql.push_str(&format!(" AND m.{col} = ?"));
                args.push(Value::Text(v.clone()));
            }
        };
        eq("sender", &search.matching.sender);
        eq("type", &search.matching.message_type);
        eq("control_id", &search.matching.control_id);
        eq("patient_id", &search.matching.patient_id);
        eq("status", &search.matching.status);
        eq("route", &search.matching.route);
        eq("destination", &search.matching.destination);
        if let Some(from) = search.from_ms {
            sql.push_str(" AND m.received_at >= ?");
            args.push(Value::Integer(from));
        }
        if let Some(to) = search.to_ms {
            sql.push_str(" AND m.received_at <= ?");
            args.push(Value::Integer(to));
        }
        if search.unresolved {
            sql.push_str(" AND m.resolved = 0 AND m.status IN ('rejected_by_izhub','rejected_by_iis','errored')");
        }
        for (col, allowed) in [
            ("route", &search.routes_allowed),
            ("destination", &search.destinations_allowed),
        ] {
            if let Some(allowed) = allowed {
                sql.push_str(&format!(" AND m.{col} IN ("));
                for (i, a) in allowed.iter().enumerate() {
                    sql.push_str(if i == 0 { "?" } else { ",?" });
                    args.push(Value::Text(a.clone()));
                }
                if allowed.is_empty() {
                    sql.push_str("NULL");
                }
                sql.push(')');
            }
        }
        Filter { sql, args, key }
    }
}
