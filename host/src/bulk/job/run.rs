//! Running a job: the cohort's queries through the routes, many at once
//! and throttled by each IIS's gate, their answers written as FHIR NDJSON,
//! and the state kept so a killed job resumes where it stopped.

use super::*;

impl Job {
    /// Runs the job until every patient is done or it is cancelled; safe to
    /// call again after any stop (see the module docs).
    pub async fn run(
        self: &Arc<Self>,
        env: RunEnv,
        cancel: CancellationToken,
    ) -> Result<State, JobError> {
        match self.state()? {
            State::Running => {}
            other => return Ok(other),
        }
        let committed = self.cut_back()?;
        let ehr = match self.spec.ehr_history {
            true => Arc::new(load_ehr(&self.dir.join("ehr-history.ndjson"))?),
            false => Arc::new(HashMap::new()),
        };
        let (tx, rx) = mpsc::channel::<Done>(BATCH * 2);
        let writer = {
            let job = self.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || job.write_loop(rx, committed, cancel))
        };
        let tasks = Arc::new(Semaphore::new(MAX_TASKS));
        let env = Arc::new(env);
        let mut after = 0i64;
        let mut running = tokio::task::JoinSet::new();
        'pages: loop {
            if cancel.is_cancelled() {
                break;
            }
            let page: Vec<(i64, String)> = self.db(|c| {
                c.prepare_cached(
                    "SELECT idx, data FROM patients WHERE done = 0 AND idx > ?1 ORDER BY idx LIMIT 1000",
                )?
                .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
            })?;
            let Some(last) = page.last().map(|p| p.0) else {
                break;
            };
            after = last;
            for (idx, data) in page {
                let permit = tokio::select! {
                    _ = cancel.cancelled() => break 'pages,
                    p = tasks.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'pages,
                    },
                };
                let Ok(patient) = serde_json::from_str::<Patient>(&data) else {
                    let _ = tx.send(unreadable(idx)).await;
                    continue;
                };
                let (job, env, tx, cancel, ehr) = (
                    self.clone(),
                    env.clone(),
                    tx.clone(),
                    cancel.clone(),
                    ehr.clone(),
                );
                running.spawn(async move {
                    let done = job.query_one(idx, &patient, &env, &cancel, &ehr).await;
                    if let Some(done) = done {
                        let _ = tx.send(done).await;
                    }
                    drop(permit);
                });
                // Reap finished tasks as we go, so the set stays small.
                while running.try_join_next().is_some() {}
            }
        }
        while running.join_next().await.is_some() {}
        drop(tx);
        match writer.await {
            Ok(r) => r?,
            Err(e) => return Err(JobError::Invalid(format!("the bulk writer stopped: {e}"))),
        }
        if cancel.is_cancelled() || self.state()? == State::Cancelled {
            return Ok(State::Cancelled);
        }
        let pending: i64 = self.db(|c| {
            c.query_row("SELECT COUNT(*) FROM patients WHERE done = 0", [], |r| {
                r.get(0)
            })
        })?;
        if pending == 0 {
            self.set_state(State::Completed)?;
            Ok(State::Completed)
        } else {
            Ok(State::Running)
        }
    }

    /// One patient: the query (again on AE or no answer, with backoff; later
    /// when its destination's gate says not now), the answer as FHIR.
    pub(super) async fn query_one(
        &self,
        idx: i64,
        patient: &Patient,
        env: &RunEnv,
        cancel: &CancellationToken,
        ehr: &HashMap<String, Vec<Value>>,
    ) -> Option<Done> {
        let tag = format!("p{idx}");
        let mut attempt = 0u32;
        let mut last_words = String::new();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let query = build_qbp(
                patient,
                &QueryParams {
                    tag: tag.clone(),
                    forecast: self.spec.forecast,
                    control_id: crate::hl7::new_control_id("BQ"),
                    sending_app: env.bulk.sending_application.clone(),
                    sending_facility: env.bulk.sending_facility.clone(),
                    receiving_app: String::new(),
                    receiving_facility: String::new(),
                    limit: env.bulk.max_records,
                    timestamp: crate::hl7::hl7_timestamp(),
                },
            );
            let pipeline = (env.pipeline)();
            self.progress.queries.fetch_add(1, Ordering::Relaxed);
            let asked = pipeline
                .bulk_query(&env.listener, query.as_bytes(), &env.gates)
                .await;
            let answer = asked.answer;
            if let Some(wait) = asked.not_now {
                // Not a failed attempt: the IIS's hours or cap.
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait.wait().min(Duration::from_secs(60))) => {}
                }
                continue;
            }
            attempt += 1;
            let retry = match &answer {
                Answer::Close(why) => {
                    last_words = why.clone();
                    true
                }
                Answer::Reply(bytes) => {
                    let text = match crate::hl7::decode(bytes) {
                        Ok((t, _)) => t,
                        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
                    };
                    let iis = asked.destination.as_deref().unwrap_or("iis");
                    let converted = fhir::convert(
                        &text,
                        &Context {
                            patient,
                            tag: &tag,
                            since: self.spec.since.as_deref(),
                            iis,
                        },
                    );
                    // Ask again only what can change (see `Outcome::Refused`).
                    let transient =
                        matches!(&converted.outcome, Outcome::Refused { retry: true, .. });
                    if !transient || attempt >= env.bulk.max_attempts {
                        return Some(self.done(idx, patient, converted, ehr));
                    }
                    if let Outcome::Refused { text, .. } = &converted.outcome {
                        last_words = text.clone();
                    }
                    true
                }
            };
            if retry && attempt >= env.bulk.max_attempts {
                return Some(gave_up(idx, patient, &tag, attempt, &last_words));
            }
            let backoff = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)))
                .min(Duration::from_secs(10));
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// The output lines of one converted answer.
    pub(super) fn done(
        &self,
        idx: i64,
        patient: &Patient,
        converted: fhir::Converted,
        ehr: &HashMap<String, Vec<Value>>,
    ) -> Done {
        let outcome = match &converted.outcome {
            Outcome::Found => "found",
            Outcome::NotFound => "not_found",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Refused { .. } => "failed",
        };
        let wanted =
            |kind: &str| self.spec.types.is_empty() || self.spec.types.iter().any(|t| t == kind);
        let mut lines = Vec::new();
        let mut immunizations = Vec::new();
        for (kind, resource) in converted.resources {
            if kind == "Immunization" && self.spec.ehr_history {
                immunizations.push(resource.clone());
            }
            if let Some(kind) = TYPES.iter().find(|t| **t == kind)
                && wanted(kind)
            {
                lines.push((*kind, resource.to_string()));
            }
        }
        for e in converted.errors {
            lines.push((ERRORS, e.to_string()));
        }
        if self.spec.ehr_history && outcome == "found" {
            let key = [&patient.member_id, &patient.mrn]
                .into_iter()
                .find(|k| !k.is_empty() && ehr.contains_key(k.as_str()))
                .or([&patient.member_id, &patient.mrn]
                    .into_iter()
                    .find(|k| !k.is_empty()));
            if let Some(key) = key {
                let theirs = ehr.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                for d in reconcile::reconcile(key, &immunizations, theirs, self.spec.tolerance_days)
                {
                    lines.push((RECONCILIATION, d.to_json().to_string()));
                    lines.push(("reconciliation.csv", d.to_csv_line()));
                }
            }
        }
        Done {
            idx,
            outcome,
            lines,
        }
    }

    /// The single writer: appends each finished patient's lines, syncs the
    /// files, then commits the batch (patients done, file lengths).
    pub(super) fn write_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Done>,
        committed: HashMap<String, (u64, u64)>,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        let mut files: HashMap<String, (std::fs::File, u64, u64)> = HashMap::new();
        for (key, (length, lines)) in committed {
            let name = if key.ends_with(".csv") {
                key.clone()
            } else {
                file_name(&key)
            };
            let path = self.dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| file_err(&path, e))?;
            files.insert(key, (file, length, lines));
        }
        let mut last_check = Instant::now();
        loop {
            let Some(first) = rx.blocking_recv() else {
                return Ok(());
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            let mut buffers: HashMap<&str, (String, u64)> = HashMap::new();
            for d in &batch {
                for (kind, line) in &d.lines {
                    let (text, n) = buffers.entry(kind).or_default();
                    text.push_str(line);
                    // CSV rows come terminated (CRLF); NDJSON lines do not.
                    if !kind.ends_with(".csv") {
                        text.push('\n');
                    }
                    *n += 1;
                }
            }
            for (kind, (text, n)) in &buffers {
                let Some((file, length, lines)) = files.get_mut(*kind) else {
                    continue;
                };
                file.write_all(text.as_bytes())
                    .and_then(|_| file.sync_data())
                    .map_err(|e| file_err(&self.dir.join(file_name(kind)), e))?;
                *length += text.len() as u64;
                *lines += n;
            }
            self.db(|c| {
                let tx = c.transaction()?;
                {
                    let mut mark = tx.prepare_cached(
                        "UPDATE patients SET done = 1, outcome = ?2 WHERE idx = ?1",
                    )?;
                    for d in &batch {
                        mark.execute(params![d.idx, d.outcome])?;
                    }
                    let mut len = tx.prepare_cached(
                        "INSERT OR REPLACE INTO files (name, length, lines) VALUES (?1, ?2, ?3)",
                    )?;
                    for (key, (_, length, lines)) in &files {
                        len.execute(params![key, *length as i64, *lines as i64])?;
                    }
                    // Queries sent so far, for the manifest of a job read
                    // back from disk (finished, or resumed elsewhere).
                    let queries = self.progress.queries.load(Ordering::Relaxed);
                    tx.execute(
                        "INSERT OR REPLACE INTO job (key, value) VALUES ('queries', ?1)",
                        params![queries.to_string()],
                    )?;
                }
                tx.commit()
            })?;
            for d in &batch {
                self.progress.done.fetch_add(1, Ordering::Relaxed);
                self.progress.count(d.outcome, 1);
            }
            // Another process (`izhub bulk cancel`) may have cancelled it.
            if last_check.elapsed() > Duration::from_secs(1) {
                last_check = Instant::now();
                if self.state()? == State::Cancelled {
                    cancel.cancel();
                }
            }
        }
    }
}

impl Progress {
    pub(super) fn count(&self, outcome: &str, n: u64) {
        let slot = match outcome {
            "found" => &self.found,
            "not_found" => &self.not_found,
            "ambiguous" => &self.ambiguous,
            "failed" => &self.failed,
            _ => return,
        };
        slot.fetch_add(n, Ordering::Relaxed);
    }
}

/// Tags an OperationOutcome with the patient it is about (the cohort row).
pub(super) fn with_tag(mut oo: Value, tag: &str, row: u64) -> Value {
    if let Some(issue) = oo.pointer_mut("/issue/0")
        && let Some(obj) = issue.as_object_mut()
    {
        obj.insert(
            "expression".into(),
            serde_json::json!([format!("cohort row {row} (query {tag})")]),
        );
    }
    oo
}

/// The EHR's Immunizations by the patient key they name.
pub(super) fn load_ehr(path: &Path) -> Result<HashMap<String, Vec<Value>>, JobError> {
    let file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        if n >= MAX_EHR_LINES {
            return Err(file_err(path, format!("more than {MAX_EHR_LINES} lines")));
        }
        let line = line.map_err(|e| file_err(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| file_err(path, format!("line {}: {e}", n + 1)))?;
        if value.get("resourceType").and_then(Value::as_str) != Some("Immunization") {
            return Err(file_err(
                path,
                format!("line {}: not an Immunization resource", n + 1),
            ));
        }
        if let Some(key) = reconcile::ehr_patient_key(&value) {
            out.entry(key.to_string()).or_default().push(value);
        }
    }
    Ok(out)
}

/// What a run needs from the engine around it.
pub struct RunEnv {
    /// The pipeline to query through (the current one, across reloads).
    pub pipeline: Box<dyn Fn() -> Arc<Pipeline> + Send + Sync>,
    /// The listener queries are taken as arriving on.
    pub listener: ListenerSpec,
    pub gates: Gates,
    pub bulk: BulkSpec,
}

/// A patient the IIS did not answer for after every attempt: an
/// OperationOutcome in the errors file, without the values the last error
/// quoted.
fn gave_up(idx: i64, patient: &Patient, tag: &str, attempt: u32, last_words: &str) -> Done {
    let text = format!(
        "no answer after {attempt} attempts: {}",
        crate::report::without_value(last_words)
    );
    let outcome = fhir::operation_outcome("error", "transient", &text, None);
    Done {
        idx,
        outcome: "failed",
        lines: vec![(ERRORS, with_tag(outcome, tag, patient.row).to_string())],
    }
}

/// A stored patient row that no longer reads: failed, with an
/// OperationOutcome saying so.
fn unreadable(idx: i64) -> Done {
    let text = "the stored patient could not be read";
    let outcome = fhir::operation_outcome("error", "exception", text, None);
    Done {
        idx,
        outcome: "failed",
        lines: vec![(ERRORS, outcome.to_string())],
    }
}
