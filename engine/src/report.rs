//! The validation report: what a batch of a clinic's messages would meet on
//! a route. Per detection: how often it fired, in what share of messages,
//! and one place it fired; then each message that would be blocked, with the
//! sentences the clinic would read. `izhub validate` writes it as text, CSV
//! or a printable HTML page; the operator console's per-sender report is the
//! same [`Report`].
//!
//! Values quoted from a message (`Value sent: '…'`) are left out unless asked
//! for: the report is often mailed to a clinic or printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::hl7::{Issue, Severity, detection_id};
use crate::pipeline::{DryOutcome, DryRun};

/// How many different detections a report keeps apart; any more are counted
/// together (a plugin with free-text issues cannot grow a report without end).
const MAX_DETECTIONS: usize = 1000;

/// How one detection fared across the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionStats {
    /// The detection id (`patient-birth-date-missing`), or the issue's text
    /// when its plugin gives none.
    pub id: String,
    /// The highest severity it had.
    pub severity: Severity,
    /// How many times it fired.
    pub count: usize,
    /// How many messages it fired in.
    pub messages: usize,
    /// Where it fired first: `file.hl7:12 RXA[1]-5`.
    pub example: String,
    /// The sentence the sender reads (values left out unless asked for).
    pub text: String,
}

/// A message that would not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// `file.hl7:12` (the line its MSH starts on).
    pub source: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-4.1.
    pub sender: String,
    /// The answer's code (AE, AR), or `closed` when none could be built.
    pub answer: String,
    /// The sentences of its errors, as the sender would read them.
    pub sentences: Vec<String>,
}

/// The report on one batch.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was run: the configuration and route.
    pub title: String,
    /// Messages read.
    pub messages: usize,
    /// Messages that would be delivered with no issue.
    pub clean: usize,
    /// Messages that would be delivered with warnings.
    pub with_warnings: usize,
    /// Messages that would be blocked (or not even answered).
    pub blocked: Vec<Blocked>,
    /// Messages delivered, per destination.
    pub destinations: BTreeMap<String, usize>,
    /// Per detection, by id.
    pub detections: BTreeMap<String, DetectionStats>,
    /// Whether quoted values stay in the sentences.
    pub show_values: bool,
}

/// The text without the quoted value (`Value sent: '…'.`) a plugin added.
pub fn without_value(text: &str) -> String {
    let Some(start) = text.find(" Value sent: '") else {
        return text.to_string();
    };
    let rest = text.get(start + 1..).unwrap_or("");
    match rest.find("'. ").or_else(|| rest.rfind("'.")) {
        Some(end) => {
            let after = rest.get(end + 2..).unwrap_or("");
            format!("{}{after}", text.get(..start).unwrap_or(""))
        }
        None => text.get(..start).unwrap_or("").to_string(),
    }
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Error => 3,
        Severity::Warning => 2,
        Severity::Info => 1,
    }
}

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>, show_values: bool) -> Self {
        Report {
            title: title.into(),
            show_values,
            ..Report::default()
        }
    }

    fn sentence(&self, issue: &Issue) -> String {
        let text = if self.show_values {
            issue.text.clone()
        } else {
            without_value(&issue.text)
        };
        clean(&text, 400)
    }

    /// Adds one message's dry run; `source` says where it was read.
    pub fn add(&mut self, source: &str, run: &DryRun) {
        self.messages += 1;
        let mut seen_here: Vec<String> = Vec::new();
        for issue in &run.issues {
            let sentence = self.sentence(issue);
            let key = match detection_id(&issue.text) {
                Some(id) => id.to_string(),
                None => sentence.clone(),
            };
            let key =
                if self.detections.len() >= MAX_DETECTIONS && !self.detections.contains_key(&key) {
                    "(other issues)".to_string()
                } else {
                    key
                };
            let example = if issue.location.is_empty() {
                source.to_string()
            } else {
                format!("{source} {}", clean(&issue.location, 40))
            };
            let stats = self
                .detections
                .entry(key.clone())
                .or_insert_with(|| DetectionStats {
                    id: key.clone(),
                    severity: issue.severity,
                    count: 0,
                    messages: 0,
                    example,
                    text: sentence,
                });
            stats.count += 1;
            if rank(issue.severity) > rank(stats.severity) {
                stats.severity = issue.severity;
            }
            if !seen_here.contains(&key) {
                stats.messages += 1;
                seen_here.push(key);
            }
        }
        match &run.outcome {
            DryOutcome::Delivered(destinations) => {
                if run.issues.is_empty() {
                    self.clean += 1;
                } else {
                    self.with_warnings += 1;
                }
                for d in destinations {
                    *self.destinations.entry(d.clone()).or_default() += 1;
                }
            }
            DryOutcome::Blocked(code) => self.blocked.push(Blocked {
                source: source.to_string(),
                control_id: clean(&run.control_id, 80),
                sender: clean(&run.sender, 80),
                answer: code.as_str().to_string(),
                sentences: run
                    .issues
                    .iter()
                    .filter(|i| i.severity == Severity::Error)
                    .map(|i| self.sentence(i))
                    .collect(),
            }),
            DryOutcome::Unanswerable(why) => self.blocked.push(Blocked {
                source: source.to_string(),
                control_id: String::new(),
                sender: String::new(),
                answer: "closed".to_string(),
                sentences: vec![clean(why, 400)],
            }),
        }
    }

    /// The detections, most frequent first (errors before warnings on ties).
    pub fn ranked(&self) -> Vec<&DetectionStats> {
        let mut all: Vec<&DetectionStats> = self.detections.values().collect();
        all.sort_by(|a, b| {
            b.messages
                .cmp(&a.messages)
                .then(rank(b.severity).cmp(&rank(a.severity)))
                .then(a.id.cmp(&b.id))
        });
        all
    }

    fn share(&self, n: usize) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            100.0 * n as f64 / self.messages as f64
        }
    }

    /// The report as plain text, listing at most `max_blocked` blocked messages.
    pub fn to_text(&self, max_blocked: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        let _ = writeln!(
            out,
            "{} messages: {} delivered clean, {} delivered with warnings, {} would be blocked",
            self.messages,
            self.clean,
            self.with_warnings,
            self.blocked.len()
        );
        for (dest, n) in &self.destinations {
            let _ = writeln!(out, "  to {dest}: {n}");
        }
        if !self.detections.is_empty() {
            let _ = writeln!(
                out,
                "\nDetections (messages, share, times, level, example):"
            );
            for d in self.ranked() {
                let _ = writeln!(
                    out,
                    "  {:<48} {:>6} {:>6.1}% {:>6}  {:<7}  {}",
                    d.id,
                    d.messages,
                    self.share(d.messages),
                    d.count,
                    severity_word(d.severity),
                    d.example
                );
            }
        }
        if !self.blocked.is_empty() {
            let _ = writeln!(out, "\nMessages that would be blocked:");
            for b in self.blocked.iter().take(max_blocked) {
                let _ = writeln!(
                    out,
                    "  {}  MSH-10 {}  sender {}  -> {}",
                    b.source,
                    or_dash(&b.control_id),
                    or_dash(&b.sender),
                    b.answer
                );
                for s in &b.sentences {
                    let _ = writeln!(out, "      {s}");
                }
            }
            if self.blocked.len() > max_blocked {
                let _ = writeln!(
                    out,
                    "  … and {} more (the CSV lists every one)",
                    self.blocked.len() - max_blocked
                );
            }
        }
        out
    }

    /// The report as CSV: one row per detection, then one per sentence of
    /// each blocked message (a `section` column tells them apart).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "section,id,level,messages,share_percent,count,example,source,control_id,sender,answer,sentence\r\n",
        );
        for d in self.ranked() {
            let row = [
                "detection".to_string(),
                d.id.clone(),
                severity_word(d.severity).to_string(),
                d.messages.to_string(),
                format!("{:.1}", self.share(d.messages)),
                d.count.to_string(),
                d.example.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                d.text.clone(),
            ];
            push_csv_row(&mut out, &row);
        }
        for b in &self.blocked {
            // A message refused without a word still gets its row.
            let none = [String::new()];
            let sentences: &[String] = if b.sentences.is_empty() {
                &none
            } else {
                &b.sentences
            };
            for s in sentences {
                let row = [
                    "blocked".to_string(),
                    detection_id(s).unwrap_or("").to_string(),
                    "error".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    b.source.clone(),
                    b.control_id.clone(),
                    b.sender.clone(),
                    b.answer.clone(),
                    s.clone(),
                ];
                push_csv_row(&mut out, &row);
            }
        }
        out
    }

    /// The report as one printable HTML page (no scripts, nothing fetched).
    pub fn to_html(&self, max_blocked: usize) -> String {
        let mut out = String::new();
        out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        let _ = writeln!(out, "<title>{}</title>", html(&self.title));
        out.push_str(
            "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#111}\
             table{border-collapse:collapse;width:100%;margin:1em 0}\
             th,td{border:1px solid #bbb;padding:4px 6px;text-align:left;vertical-align:top}\
             th{background:#eee}td.n{text-align:right}.error{color:#a00;font-weight:bold}\
             .summary td{border:none}@media print{body{margin:0}a{color:inherit}}</style>\n",
        );
        out.push_str("</head><body>\n");
        let _ = writeln!(
            out,
            "<h1>Validation report</h1>\n<p>{}</p>",
            html(&self.title)
        );
        let _ = writeln!(
            out,
            "<table class=\"summary\"><tr><td>Messages</td><td class=\"n\">{}</td></tr>\
             <tr><td>Delivered clean</td><td class=\"n\">{}</td></tr>\
             <tr><td>Delivered with warnings</td><td class=\"n\">{}</td></tr>\
             <tr><td class=\"error\">Would be blocked</td><td class=\"n\">{}</td></tr></table>",
            self.messages,
            self.clean,
            self.with_warnings,
            self.blocked.len()
        );
        if !self.detections.is_empty() {
            out.push_str("<h2>Detections</h2>\n<table><tr><th>Detection</th><th>Level</th><th>Messages</th><th>Share</th><th>Times</th><th>Example</th><th>What the sender reads</th></tr>\n");
            for d in self.ranked() {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                    html(&d.id),
                    severity_word(d.severity),
                    severity_word(d.severity),
                    d.messages,
                    self.share(d.messages),
                    d.count,
                    html(&d.example),
                    html(&d.text)
                );
            }
            out.push_str("</table>\n");
        }
        if !self.blocked.is_empty() {
            out.push_str("<h2>Messages that would be blocked</h2>\n<table><tr><th>Where</th><th>MSH-10</th><th>Sender</th><th>Answer</th><th>What the sender reads</th></tr>\n");
            for b in self.blocked.iter().take(max_blocked) {
                let sentences: Vec<String> = b.sentences.iter().map(|s| html(s)).collect();
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td><td>{}</td></tr>",
                    html(&b.source),
                    html(&b.control_id),
                    html(&b.sender),
                    html(&b.answer),
                    sentences.join("<br>")
                );
            }
            out.push_str("</table>\n");
            if self.blocked.len() > max_blocked {
                let _ = writeln!(
                    out,
                    "<p>… and {} more (the CSV lists every one).</p>",
                    self.blocked.len() - max_blocked
                );
            }
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// Text from a message or a plugin, fit for one line of a report: control
/// characters become spaces and it is cut at `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Appends one CSV row (RFC 4180). A cell that a spreadsheet would run as
/// a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
fn push_csv_row(out: &mut String, cells: &[String]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let guarded = if cell.starts_with(['=', '+', '-', '@']) {
            format!("'{cell}")
        } else {
            cell.clone()
        };
        if guarded.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::AckCode;

    fn issue(sev: Severity, text: &str, at: &str) -> Issue {
        let mut i = Issue::error("101").text(text).at(at);
        i.severity = sev;
        i
    }

    fn run(outcome: DryOutcome, issues: Vec<Issue>) -> DryRun {
        DryRun {
            control_id: "C1".into(),
            sender: "CLINIC".into(),
            route: Some("vxu".into()),
            outcome,
            issues,
        }
    }

    #[test]
    fn counts_shares_examples_and_blocked_sentences() {
        let mut r = Report::new("demo", false);
        r.add(
            "a.hl7:1",
            &run(
                DryOutcome::Blocked(AckCode::AE),
                vec![
                    issue(
                        Severity::Error,
                        "Birth date is empty. [patient-birth-date-missing]",
                        "PID-7",
                    ),
                    issue(
                        Severity::Warning,
                        "Lot is odd. Value sent: 'N/A'. [vaccination-lot-invalid]",
                        "RXA[1]-15",
                    ),
                ],
            ),
        );
        r.add(
            "a.hl7:9",
            &run(
                DryOutcome::Delivered(vec!["mi-iis".into()]),
                vec![
                    issue(
                        Severity::Warning,
                        "Lot is odd. Value sent: 'UNK'. [vaccination-lot-invalid]",
                        "RXA[1]-15",
                    ),
                    issue(
                        Severity::Warning,
                        "Lot is odd. Value sent: 'X'. [vaccination-lot-invalid]",
                        "RXA[2]-15",
                    ),
                ],
            ),
        );
        r.add(
            "b.hl7:1",
            &run(DryOutcome::Delivered(vec!["mi-iis".into()]), vec![]),
        );
        assert_eq!(
            (r.messages, r.clean, r.with_warnings, r.blocked.len()),
            (3, 1, 1, 1)
        );
        let lot = &r.detections["vaccination-lot-invalid"];
        assert_eq!((lot.count, lot.messages), (3, 2));
        assert_eq!(lot.example, "a.hl7:1 RXA[1]-15");
        assert_eq!(
            lot.text, "Lot is odd. [vaccination-lot-invalid]",
            "values left out"
        );
        assert_eq!(
            r.blocked[0].sentences,
            vec!["Birth date is empty. [patient-birth-date-missing]"]
        );
        let text = r.to_text(10);
        assert!(
            text.contains(
                "3 messages: 1 delivered clean, 1 delivered with warnings, 1 would be blocked"
            ),
            "{text}"
        );
        assert!(text.contains("66.7%"), "{text}");
        assert!(!text.contains("N/A"), "{text}");
        let csv = r.to_csv();
        assert!(csv.contains("detection,vaccination-lot-invalid,warning,2,66.7,3,a.hl7:1 RXA[1]-15,,,,,Lot is odd. [vaccination-lot-invalid]\r\n"), "{csv}");
        assert!(
            csv.contains("blocked,patient-birth-date-missing,error,,,,,a.hl7:1,C1,CLINIC,AE,"),
            "{csv}"
        );
        let shown = Report::new("x", true);
        assert!(
            shown
                .sentence(&issue(Severity::Warning, "v Value sent: 'N/A'. [x]", ""))
                .contains("N/A")
        );
    }

    #[test]
    fn html_and_csv_escape_what_came_from_messages() {
        let mut r = Report::new("<b>t</b>", true);
        r.add(
            "<x>.hl7:1",
            &run(
                DryOutcome::Blocked(AckCode::AR),
                vec![issue(
                    Severity::Error,
                    "<script>alert(1)</script>, \"q\"",
                    "PID-5",
                )],
            ),
        );
        let page = r.to_html(10);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("&lt;b&gt;t&lt;/b&gt;"));
        let csv = r.to_csv();
        assert!(
            csv.contains("\"<script>alert(1)</script>, \"\"q\"\"\""),
            "{csv}"
        );
        let mut row = String::new();
        push_csv_row(&mut row, &["=cmd()".to_string()]);
        assert_eq!(row, "'=cmd()\r\n");
    }

    #[test]
    fn quoted_values_are_cut_out() {
        assert_eq!(without_value("A b. Value sent: 'x'. [id]"), "A b. [id]");
        assert_eq!(without_value("A b. Value sent: 'x'"), "A b.");
        assert_eq!(without_value("plain [id]"), "plain [id]");
        assert_eq!(detection_id("t [patient-x]"), Some("patient-x"));
        assert_eq!(detection_id("t [Not An Id]"), None);
        assert_eq!(detection_id("no id"), None);
    }

    #[test]
    fn free_text_issues_cannot_grow_a_report_without_end() {
        let mut r = Report::new("t", false);
        for n in 0..(MAX_DETECTIONS + 50) {
            r.add(
                "f:1",
                &run(
                    DryOutcome::Delivered(vec!["d".into()]),
                    vec![issue(Severity::Warning, &format!("free text {n}"), "")],
                ),
            );
        }
        assert_eq!(r.detections.len(), MAX_DETECTIONS + 1);
        assert_eq!(r.detections["(other issues)"].count, 50);
    }
}
