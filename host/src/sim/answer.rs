//! What the simulated IIS answers: an ACK for a VXU (with the IIS's own
//! checks), an RSP^K11 for a QBP from the histories it has kept.

use super::*;

/// The answer to a message that came over a limit (`over` says which) is
/// AE, as a busy IIS answers; otherwise [`answer`].
pub(super) fn answer_within(
    text: &str,
    opts: &SimOptions,
    state: &SimState,
    over: Option<&str>,
) -> Option<String> {
    match over {
        Some(why) => {
            let msh = Msh::read(text).ok()?;
            Some(iis_ack(
                &msh,
                AckCode::AE,
                &[Issue::error("207").text(why)],
                &opts.name,
            ))
        }
        None => answer(text, opts, state),
    }
}

/// The simulator's answer to one message, or None when MSH is unreadable.
pub fn answer(text: &str, opts: &SimOptions, state: &SimState) -> Option<String> {
    let msh = Msh::read(text).ok()?;
    let ack = |code, issues: &[Issue]| Some(iis_ack(&msh, code, issues, &opts.name));
    if opts.refuse {
        return ack(
            AckCode::AR,
            &[Issue::error("207").text("The IIS is not accepting submissions at this time")],
        );
    }
    if let Err(e) = hl7::check_structure(text) {
        return ack(
            AckCode::AR,
            &[Issue::error("102").text(format!("message could not be parsed: {e}"))],
        );
    }
    let msg = Segments::new(text, msh.field_separator());
    match (msh.message_code(), msh.trigger()) {
        ("VXU", "V04") => Some(vxu(&msh, &msg, opts, state)),
        ("QBP", "Q11") => Some(qbp(&msh, &msg, opts, state)),
        (code, trigger) => ack(
            AckCode::AR,
            &[Issue::error("200")
                .text(format!("message type {code}^{trigger} is not supported"))
                .at("MSH-9")],
        ),
    }
}

/// The segments of a well-formed message, read with its field separator: the
/// simulator needs a handful of fields, so it splits only what it reads.
pub(super) struct Segments<'a> {
    list: Vec<&'a str>,
    separator: char,
}

impl<'a> Segments<'a> {
    fn new(text: &'a str, separator: char) -> Self {
        Segments {
            list: text.split(['\r', '\n']).filter(|s| !s.is_empty()).collect(),
            separator,
        }
    }

    /// The segments named `name`, in order.
    fn named(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.list.iter().copied().filter(move |s| {
            s.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(self.separator))
        })
    }

    /// The first segment named `name`.
    fn segment(&self, name: &'a str) -> Option<&'a str> {
        self.named(name).next()
    }

    /// Field `n` of a (non-MSH) segment; empty when absent.
    fn field_of(&self, segment: &'a str, n: usize) -> &'a str {
        segment.split(self.separator).nth(n).unwrap_or("")
    }
}

pub(super) fn field<'a>(msg: &Segments<'a>, seg: &'a str, n: usize) -> &'a str {
    msg.segment(seg).map_or("", |s| msg.field_of(s, n))
}

pub(super) fn component(value: &str, c: usize) -> &str {
    value
        .split('~')
        .next()
        .unwrap_or("")
        .split('^')
        .nth(c.saturating_sub(1))
        .unwrap_or("")
}

pub(super) fn iis_ack(msh: &Msh, code: AckCode, issues: &[Issue], name: &str) -> String {
    let ack = hl7::build_ack(msh, code, issues, &hl7::new_control_id(name));
    // Answer as the IIS: MSH-3 and MSH-4 carry the simulator's name.
    let (header, rest) = ack.split_once('\r').unwrap_or((ack.as_str(), ""));
    let mut fields: Vec<&str> = header.split('|').collect();
    for i in [2, 3] {
        if let Some(f) = fields.get_mut(i) {
            *f = name;
        }
    }
    format!("{}\r{rest}", fields.join("|"))
}

pub(super) fn vxu(msh: &Msh, msg: &Segments<'_>, opts: &SimOptions, state: &SimState) -> String {
    let mut issues = Vec::new();
    if msg.segment("PID").is_none() {
        issues.push(
            Issue::error("100")
                .text("PID segment is required")
                .at("PID"),
        );
    } else if field(msg, "PID", 7).is_empty() {
        let mut i = Issue::error("101").text("Patient birth date is required");
        i.location = "PID-7".into();
        i.app_code = "7".into();
        issues.push(i);
    }
    let rxas: Vec<_> = msg.named("RXA").collect();
    if rxas.is_empty() {
        issues.push(
            Issue::error("100")
                .text("RXA segment is required")
                .at("RXA"),
        );
    }
    for (i, rxa) in rxas.iter().enumerate() {
        if msg.field_of(rxa, 5).is_empty() {
            let mut issue = Issue::error("101").text("Vaccine code (RXA-5) is required");
            issue.location = format!("RXA[{}]-5", i + 1);
            issue.app_code = "7".into();
            issues.push(issue);
        }
    }
    if !issues.is_empty() {
        return iis_ack(msh, AckCode::AE, &issues, &opts.name);
    }
    let pid3 = field(msg, "PID", 3);
    let patient = Patient {
        id: component(pid3, 1).to_string(),
        name: field(msg, "PID", 5)
            .split('~')
            .next()
            .unwrap_or("")
            .to_string(),
        dob: field(msg, "PID", 7).to_string(),
        sex: field(msg, "PID", 8).to_string(),
        history: Vec::new(),
    };
    let doses = doses(msg);
    if let Ok(mut patients) = state.patients.lock() {
        let entry = patients
            .entry(patient.id.clone())
            .or_insert_with(|| patient.clone());
        entry.name = patient.name;
        entry.dob = patient.dob;
        entry.sex = patient.sex;
        for dose in doses {
            match entry.history.iter_mut().find(|d| d.key == dose.key) {
                Some(on_file) => *on_file = dose,
                None => entry.history.push(dose),
            }
        }
        let extra = entry.history.len().saturating_sub(KEEP_HISTORY);
        entry.history.drain(..extra);
    }
    iis_ack(msh, AckCode::AA, &[], &opts.name)
}

/// The message's vaccinations: each starts at an ORC (or at an RXA not
/// preceded by its own ORC) and takes the RXR and OBX segments after it.
pub(super) fn doses(msg: &Segments<'_>) -> Vec<Dose> {
    let mut doses: Vec<Dose> = Vec::new();
    for seg in msg.list.iter().copied() {
        let name = seg.get(..3).unwrap_or("");
        let starts = match name {
            "ORC" => true,
            "RXA" => doses.last().is_none_or(|d| d.rxa().is_some()),
            "RXR" | "OBX" => false,
            _ => continue,
        };
        if starts {
            doses.push(Dose {
                key: String::new(),
                segments: Vec::new(),
            });
        }
        // RXR and OBX segments before the first vaccination are not its.
        let Some(dose) = doses.last_mut() else {
            continue;
        };
        if name == "RXA" {
            let date = msg.field_of(seg, 3);
            let code = component(msg.field_of(seg, 5), 1);
            dose.key = format!("{}|{code}", date.get(..8).unwrap_or(date));
        }
        dose.segments.push(seg.to_string());
    }
    doses.retain(|d| d.rxa().is_some());
    doses
}

pub(super) fn qbp(msh: &Msh, msg: &Segments<'_>, opts: &SimOptions, state: &SimState) -> String {
    let qpd = msg.segment("QPD").unwrap_or("QPD");
    let query = field(msg, "QPD", 1);
    let forecast = component(query, 1) == "Z44";
    let tag = field(msg, "QPD", 2);
    if let Ok(mut tags) = state.tags.lock()
        && (tags.len() < KEEP_TAGS || tags.contains_key(tag))
    {
        *tags.entry(tag.to_string()).or_default() += 1;
    }
    let ids = field(msg, "QPD", 3);
    let name = field(msg, "QPD", 4);
    let family = component(name, 1);
    if !family.is_empty()
        && opts
            .query
            .invalid
            .iter()
            .any(|f| f.eq_ignore_ascii_case(family))
    {
        let issue = Issue::error("102")
            .text("The patient name is not valid for a query")
            .at("QPD-4");
        return iis_ack(msh, AckCode::AE, &[issue], &opts.name);
    }
    let dob = field(msg, "QPD", 6);
    let sex = field(msg, "QPD", 7);
    let given = component(name, 2);
    let key = format!(
        "{}|{}|{}",
        family.to_ascii_uppercase(),
        given.to_ascii_uppercase(),
        dob.get(..8).unwrap_or(dob)
    );
    let (found, ambiguous) = look_up(opts, state, &key, ids, name, dob, sex);
    let (profile, status) = match (&found, ambiguous) {
        (_, true) => ("Z31", "OK"),
        (Some(_), _) if forecast => ("Z42", "OK"),
        (Some(_), _) => ("Z32", "OK"),
        (None, _) => ("Z33", "NF"),
    };
    let mut out = format!(
        "MSH|^~\\&|{name}|{name}|{}|{}|{}||RSP^K11^RSP_K11|{}|{}|2.5.1|||NE|NE|||||{profile}^CDCPHINVS\r",
        msh.sending_application(),
        msh.sending_facility(),
        hl7::hl7_timestamp(),
        hl7::new_control_id(&opts.name),
        if msh.field(11).is_empty() {
            "P"
        } else {
            msh.field(11)
        },
        name = opts.name,
    );
    out.push_str(&format!("MSA|AA|{}\r", hl7::escape(msh.control_id())));
    let asked = if query.is_empty() {
        "Z34^Request Immunization History^CDCPHINVS"
    } else {
        query
    };
    out.push_str(&format!("QAK|{tag}|{status}|{asked}\r"));
    out.push_str(qpd);
    out.push('\r');
    if ambiguous {
        // Two people who both match what was asked: the IIS cannot tell.
        let first = name.split('~').next().unwrap_or("");
        for (n, street) in [(1, "1 Main St"), (2, "22 Elm St")] {
            out.push_str(&format!(
                "PID|{n}||C{n}{}^^^{}^SR||{first}||{dob}|{sex}|||{street}^^Springfield^MA^01101^^L\r",
                query::stable_hash(&key) % 100_000,
                opts.name
            ));
        }
    } else if let Some(p) = found {
        out.push_str(&format!(
            "PID|1||{}^^^{}^SR||{}||{}|{}\r",
            p.id, opts.name, p.name, p.dob, p.sex
        ));
        if forecast {
            let history: Vec<Vec<String>> = p.history.iter().map(|d| d.segments.clone()).collect();
            for seg in query::evaluated(&history, &p.dob, opts.query.registry_codes) {
                out.push_str(&seg);
                out.push('\r');
            }
        } else {
            for seg in p.history.iter().flat_map(|d| &d.segments) {
                out.push_str(seg);
                out.push('\r');
            }
        }
    }
    out
}

/// The patient a query finds: one on file (by id, else by name and birth
/// date), else a synthetic one when the simulator makes them up; none when
/// the name is set up as ambiguous (then `true`) or as not found.
fn look_up(
    opts: &SimOptions,
    state: &SimState,
    key: &str,
    ids: &str,
    name: &str,
    dob: &str,
    sex: &str,
) -> (Option<Patient>, bool) {
    let (family, given) = (component(name, 1), component(name, 2));
    let q = &opts.query;
    let ambiguous = q
        .ambiguous
        .iter()
        .any(|f| !family.is_empty() && f.eq_ignore_ascii_case(family));
    let not_found =
        q.not_found_percent > 0 && query::stable_hash(key) % 100 < u64::from(q.not_found_percent);
    let on_file = state.patients.lock().ok().and_then(|patients| {
        ids.split('~')
            .map(|cx| component(cx, 1))
            .filter(|id| !id.is_empty())
            .find_map(|id| patients.get(id).cloned())
            .or_else(|| {
                patients
                    .values()
                    .find(|p| {
                        !family.is_empty()
                            && component(&p.name, 1).eq_ignore_ascii_case(family)
                            && component(&p.name, 2).eq_ignore_ascii_case(given)
                            && p.dob.get(..8) == dob.get(..8)
                    })
                    .cloned()
            })
    });
    let found = if ambiguous || not_found {
        None
    } else {
        on_file.or_else(|| {
            q.synthetic.then(|| Patient {
                id: format!("S{}", query::stable_hash(key) % 1_000_000_000),
                name: name.split('~').next().unwrap_or("").to_string(),
                dob: dob.to_string(),
                sex: sex.to_string(),
                history: query::synthetic_history(key, dob)
                    .into_iter()
                    .map(|segments| Dose {
                        key: String::new(),
                        segments,
                    })
                    .collect(),
            })
        })
    };
    (found, ambiguous)
}
