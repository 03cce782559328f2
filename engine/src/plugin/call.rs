//! Calling a plugin: a fresh instance per message under its fuel, time,
//! memory and output limits, and what its answer or its failure means.

use super::*;

impl Runtime {
    /// Runs one plugin on one message in a fresh instance.
    pub async fn call(
        &self,
        plugin: &LoadedPlugin,
        env: &Envelope<'_>,
    ) -> Result<Outcome, PluginError> {
        self.call_with_stats(plugin, env).await.0
    }

    /// [`Runtime::call`], also returning time and peak memory.
    pub async fn call_with_stats(
        &self,
        plugin: &LoadedPlugin,
        env: &Envelope<'_>,
    ) -> (Result<Outcome, PluginError>, CallStats) {
        let started = Instant::now();
        let mut stats = CallStats::default();
        if !self.unlimited && env.hl7.len() > plugin.max_input {
            let e = PluginError::InputTooLarge {
                plugin: plugin.name.clone(),
                size: env.hl7.len(),
                limit: plugin.max_input,
            };
            return (Err(e), stats);
        }
        let Ok(_slot) = self.slots.acquire().await else {
            let detail = "the engine is shutting down".to_string();
            return (
                Err(PluginError::Instantiate {
                    plugin: plugin.name.clone(),
                    detail,
                }),
                stats,
            );
        };
        let _ticking = Ticking::start(&self.ticker);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = CallState {
            wasi: wasi.build(),
            table,
            limiter: Limiter {
                memory: (!self.unlimited).then_some(plugin.memory_limit),
                peak: 0,
            },
            grants: plugin.grants.clone(),
            log_lines: 0,
            deadline: started + plugin.time_limit,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if !self.unlimited {
            // Slightly above the output cap, so an answer just over it is
            // reported by the size check with the same error.
            store.set_hostcall_fuel(plugin.max_output.saturating_add(64 << 10));
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|ctx| {
                if Instant::now() >= ctx.data().deadline {
                    Err(wasmtime::Error::new(OutOfTime))
                } else {
                    Ok(UpdateDeadline::Yield(1))
                }
            });
        }
        let input = wit::Envelope {
            id: env.id.to_string(),
            route: env.route.to_string(),
            source: env.source.to_string(),
            received_at: env.received_at.to_string(),
            hl7: env.hl7.to_string(),
            attributes: env.attributes.to_vec(),
        };
        let began = Instant::now();
        stats.setup = began.saturating_duration_since(started);
        let mut instantiated_at = None;
        let result = async {
            let instantiated = plugin
                .pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await
                .map_err(|e| match classify(plugin, e) {
                    PluginError::Trap { plugin, detail } => {
                        PluginError::Instantiate { plugin, detail }
                    }
                    other => other,
                })?;
            instantiated_at = Some(Instant::now());
            let split = match plugin.split.filter(|_| !env.layout.is_empty()) {
                Some(index) => instantiated
                    .get_typed_func::<(&wit::Envelope, &[u32]), (Result<wit::Outcome, String>,)>(
                        &mut store, index,
                    )
                    .ok(),
                None => None,
            };
            let result = match split {
                Some(func) => func
                    .call_async(&mut store, (&input, env.layout))
                    .await
                    .map(|(result,)| result),
                // A component without `process-split` (or with another
                // signature for it) is called the plain way.
                None => match plugin.indices.load(&mut store, &instantiated) {
                    Ok(bound) => bound.call_process(&mut store, &input).await,
                    Err(e) => Err(e),
                },
            }
            .map_err(|e| classify(plugin, e))?;
            let outcome = result.map_err(|message| PluginError::Returned {
                plugin: plugin.name.clone(),
                message: truncate(message, 500),
            })?;
            convert(plugin, outcome, self.unlimited)
        }
        .await;
        let ran_at = Instant::now();
        stats.peak_memory = store.data().limiter.peak;
        drop(store);
        stats.elapsed = started.elapsed();
        stats.teardown = ran_at.elapsed();
        match instantiated_at {
            Some(at) => {
                stats.instantiate = at.saturating_duration_since(began);
                stats.run = ran_at.saturating_duration_since(at);
            }
            None => stats.instantiate = ran_at.saturating_duration_since(began),
        }
        (result, stats)
    }
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

pub(super) fn classify(plugin: &LoadedPlugin, e: wasmtime::Error) -> PluginError {
    let name = plugin.name.clone();
    if e.downcast_ref::<OutOfTime>().is_some() {
        return PluginError::TimeLimit {
            plugin: name,
            limit: plugin.time_limit,
        };
    }
    if e.downcast_ref::<OutOfMemory>().is_some() {
        return PluginError::MemoryLimit {
            plugin: name,
            limit_mib: plugin.memory_limit >> 20,
        };
    }
    let text = format!("{e:#}");
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        // The hostcall fuel caps what a guest can hand the host in one go.
        return PluginError::OutputTooLarge {
            plugin: name,
            limit: plugin.max_output,
        };
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => PluginError::StackOverflow { plugin: name },
        // Compiled languages keep large locals on a stack in linear memory
        // that starts at address 0: overflowing it reads below 0.
        Some(wasmtime::Trap::MemoryOutOfBounds) => PluginError::Trap {
            plugin: name,
            detail: "wasm trap: out of bounds memory access (a bug, or a stack overflow: \
                     the plugin's linear-memory stack is set by its linker)"
                .to_string(),
        },
        Some(trap) => PluginError::Trap {
            plugin: name,
            detail: trap.to_string(),
        },
        None => PluginError::Trap {
            plugin: name,
            detail: truncate(text.lines().next().unwrap_or("").to_string(), 300),
        },
    }
}

pub(super) fn convert_issue(i: wit::Issue) -> Issue {
    Issue {
        severity: match i.severity {
            wit::Severity::Error => Severity::Error,
            wit::Severity::Warning => Severity::Warning,
            wit::Severity::Info => Severity::Info,
        },
        code: truncate(i.code, 16),
        app_code: truncate(i.app_code, 16),
        location: truncate(i.location, 64),
        text: truncate(i.text, 500),
    }
}

pub(super) fn convert(
    plugin: &LoadedPlugin,
    o: wit::Outcome,
    unlimited: bool,
) -> Result<Outcome, PluginError> {
    let issue_size =
        |i: &wit::Issue| i.text.len() + i.location.len() + i.code.len() + i.app_code.len();
    let mut size = o.issues.iter().map(issue_size).sum::<usize>()
        + o.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    let mut items = o.issues.len() + o.attributes.len();
    match &o.verdict {
        wit::Verdict::Continue(text) => size += text.as_ref().map_or(0, String::len),
        wit::Verdict::Reject(issues) => {
            size += issues.iter().map(issue_size).sum::<usize>();
            items += issues.len();
        }
        wit::Verdict::RouteTo(dests) => {
            size += dests.iter().map(String::len).sum::<usize>();
            items += dests.len();
        }
    }
    if !unlimited && (size > plugin.max_output || items > MAX_ITEMS) {
        return Err(PluginError::OutputTooLarge {
            plugin: plugin.name.clone(),
            limit: plugin.max_output,
        });
    }
    let verdict = match o.verdict {
        wit::Verdict::Continue(text) => Verdict::Continue(text),
        wit::Verdict::Reject(issues) => {
            Verdict::Reject(issues.into_iter().map(convert_issue).collect())
        }
        wit::Verdict::RouteTo(dests) => Verdict::RouteTo(dests),
    };
    Ok(Outcome {
        verdict,
        issues: o.issues.into_iter().map(convert_issue).collect(),
        attributes: o.attributes,
    })
}
