//! What the simulated IIS does with queries beyond looking a patient up:
//! an evaluated history and forecast (Z44 → Z42) from a small schedule,
//! candidate lists (Z31) for configured patients, "not found" at a
//! configured rate, made-up histories for load tests, and the limits a real
//! IIS puts on its query partners (queries at once, queries a second).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::hl7::{civil_from_days, days_from_civil};

/// How the simulator answers queries.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Patients it has no VXU for are found anyway, with a history made up
    /// from their name and birth date (load tests).
    pub synthetic: bool,
    /// Share of queries answered "not found" (0–100), chosen by a hash of
    /// the patient, so a patient always gets the same answer.
    pub not_found_percent: u8,
    /// Family names (QPD-4.1, any case) answered with a candidate list (Z31).
    pub ambiguous: Vec<String>,
    /// Family names (QPD-4.1, any case) whose query is refused AE with a
    /// data error (ERR-3 102), as an IIS answers a query it will not run:
    /// asking again gets the same answer.
    pub invalid: Vec<String>,
    /// Answer forecasts as some state registries do: the vaccine group in
    /// OBX 30979-9 (forecast) and 38890-0 (evaluation) rather than 30956-7,
    /// and a status-only row for each series already complete.
    pub registry_codes: bool,
    /// Messages handled at once at most; more are answered AE (0: no limit).
    pub max_in_flight: usize,
    /// Messages a second at most; more are answered AE (0: no limit).
    pub max_per_second: u32,
}

/// What the simulator measured of its load.
#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicUsize,
    /// The most messages it ever handled at once.
    peak: AtomicUsize,
    /// Messages answered AE for going over a limit.
    over_limit: AtomicU64,
    /// (start of the current second, messages in it).
    second: Mutex<Option<(Instant, u32)>>,
}

/// One message being handled; counted until dropped.
pub struct InFlight<'a> {
    load: &'a Load,
    /// Why it is over a limit, if it is.
    pub over: Option<String>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Load {
    /// Counts a message in and says whether it goes over a limit.
    pub fn enter(&self, opts: &QueryOptions) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        let mut over = None;
        if opts.max_in_flight > 0 && now > opts.max_in_flight {
            over = Some(format!(
                "The IIS is busy: at most {} queries at once are accepted from this partner",
                opts.max_in_flight
            ));
        }
        if opts.max_per_second > 0
            && let Ok(mut second) = self.second.lock()
        {
            let t = Instant::now();
            let count = match &mut *second {
                Some((start, n)) if t.duration_since(*start).as_secs() < 1 => {
                    *n += 1;
                    *n
                }
                slot => {
                    *slot = Some((t, 1));
                    1
                }
            };
            if count > opts.max_per_second && over.is_none() {
                over = Some(format!(
                    "The IIS is busy: at most {} queries a second are accepted from this partner",
                    opts.max_per_second
                ));
            }
        }
        if over.is_some() {
            self.over_limit.fetch_add(1, Ordering::Relaxed);
        }
        InFlight { load: self, over }
    }

    /// The most messages handled at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Messages answered AE for going over a limit.
    pub fn over_limit(&self) -> u64 {
        self.over_limit.load(Ordering::Relaxed)
    }
}

/// FNV-1a: a stable hash of the patient, so made-up answers repeat.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One series of the simulator's schedule: the vaccine group, the CVX code
/// given, and the age in months of each dose.
struct Series {
    group: &'static str,
    group_name: &'static str,
    cvx: &'static str,
    cvx_name: &'static str,
    months: &'static [u32],
}

/// A small childhood schedule, enough to forecast from (not clinical advice).
const SCHEDULE: &[Series] = &[
    Series {
        group: "45",
        group_name: "HepB",
        cvx: "08",
        cvx_name: "Hep B, adolescent or pediatric",
        months: &[0, 1, 6],
    },
    Series {
        group: "107",
        group_name: "DTAP",
        cvx: "20",
        cvx_name: "DTaP",
        months: &[2, 4, 6, 15, 48],
    },
    Series {
        group: "89",
        group_name: "Polio",
        cvx: "10",
        cvx_name: "IPV",
        months: &[2, 4, 6, 48],
    },
    Series {
        group: "17",
        group_name: "HIB",
        cvx: "49",
        cvx_name: "Hib (PRP-OMP)",
        months: &[2, 4, 12],
    },
    Series {
        group: "03",
        group_name: "MMR",
        cvx: "03",
        cvx_name: "MMR",
        months: &[12, 48],
    },
    Series {
        group: "21",
        group_name: "Varicella",
        cvx: "21",
        cvx_name: "varicella",
        months: &[12, 48],
    },
];

/// The schedule's series a CVX code counts toward.
fn series_of(cvx: &str) -> Option<&'static Series> {
    let cvx = cvx.trim_start_matches('0');
    SCHEDULE
        .iter()
        .find(|s| s.cvx.trim_start_matches('0') == cvx)
}

/// `YYYYMMDD` → days since the epoch.
fn days(date: &str) -> Option<i64> {
    let d = date.get(..8)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = d.get(..4)?.parse().ok()?;
    let m: i64 = d.get(4..6)?.parse().ok()?;
    let day: i64 = d.get(6..8)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(y, m, day))
}

fn date_of(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

/// `YYYYMMDD` plus whole months (the day kept where the month has it).
fn plus_months(date: &str, months: u32) -> Option<String> {
    let start = days(date)?;
    let (y, m, d) = civil_from_days(start);
    let total = y * 12 + i64::from(m) - 1 + i64::from(months);
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let last = days_from_civil(ny + i64::from(nm == 12), nm % 12 + 1, 1) - 1;
    let first = days_from_civil(ny, nm, 1);
    Some(date_of((first + i64::from(d) - 1).min(last)))
}

fn today() -> String {
    crate::hl7::hl7_timestamp()
        .get(..8)
        .unwrap_or("")
        .to_string()
}

/// A made-up history for a patient the simulator does not know: the
/// schedule's doses due by today, with a few left out (by the patient's
/// hash) so that some are overdue.
pub fn synthetic_history(key: &str, birth: &str) -> Vec<Vec<String>> {
    let (Some(born), Some(now)) = (days(birth), days(&today())) else {
        return Vec::new();
    };
    let hash = stable_hash(key);
    let mut doses = Vec::new();
    for (i, series) in SCHEDULE.iter().enumerate() {
        for (n, months) in series.months.iter().enumerate() {
            let Some(due) = plus_months(birth, *months) else {
                continue;
            };
            let Some(at) = days(&due) else { continue };
            // The last dose due is missing for about one patient in four.
            let skipped = n + 1 == series.months.len() && (hash >> (i * 2)) & 3 == 0;
            if at > now || at < born || skipped {
                continue;
            }
            doses.push(vec![
                format!("ORC|RE||{}.{i}.{n}^SIMIIS", hash % 1_000_000),
                format!(
                    "RXA|0|1|{due}|{due}|{}^{}^CVX|0.5|mL^mL^UCUM||01^Historical information - source unspecified^NIP001||||||||||CP|A",
                    series.cvx, series.cvx_name
                ),
            ]);
        }
    }
    doses
}

/// The evaluation and forecast segments of a Z42 answer, after the
/// patient's history: each dose's evaluation (OBX after its RXA), then one
/// forecast group (RXA 998) per series not complete.
pub fn evaluated(history: &[Vec<String>], birth: &str, registry_codes: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut given: Vec<(usize, String)> = Vec::new();
    let mut obx = 0;
    for dose in history {
        let rxa = dose.iter().find(|s| s.starts_with("RXA"));
        for seg in dose {
            out.push(seg.clone());
        }
        let Some(rxa) = rxa else { continue };
        let fields: Vec<&str> = rxa.split('|').collect();
        let date = fields.get(3).copied().unwrap_or("");
        let cvx = fields
            .get(5)
            .and_then(|f| f.split('^').next())
            .unwrap_or("");
        let Some(series) = series_of(cvx) else {
            continue;
        };
        let index = SCHEDULE
            .iter()
            .position(|s| std::ptr::eq(s, series))
            .unwrap_or(0);
        given.push((index, date.get(..8).unwrap_or(date).to_string()));
        let number = given.iter().filter(|(i, _)| *i == index).count();
        let code = if registry_codes { "38890-0" } else { "30956-7" };
        let [vaccine, schedule] = series_rows(series, code);
        let rows = [
            vaccine,
            schedule,
            ("59781-5", "Dose validity", "ID", "Y".into()),
            ("30973-2", "dose number in series", "NM", number.to_string()),
        ];
        push_obx(&mut out, &mut obx, given.len(), rows);
    }
    forecast(&mut out, &given, birth, obx, registry_codes);
    out
}

/// One OBX of an evaluation or forecast: LOINC code, its name, value
/// type, value.
type Obx = (&'static str, &'static str, &'static str, String);

/// The OBX rows every evaluation and forecast group starts with: the
/// vaccine group (under LOINC `code`) and the schedule used.
fn series_rows(series: &Series, code: &'static str) -> [Obx; 2] {
    [
        (
            code,
            "vaccine type",
            "CE",
            format!("{}^{}^CVX", series.group, series.group_name),
        ),
        (
            "59779-9",
            "Immunization Schedule used",
            "CE",
            "VXC16^ACIP^CDCPHINVS".into(),
        ),
    ]
}

/// Appends the rows with a value as OBX segments of observation sub-id
/// `sub`, numbered on from `obx`.
fn push_obx<const N: usize>(out: &mut Vec<String>, obx: &mut usize, sub: usize, rows: [Obx; N]) {
    for (code, name, kind, value) in rows {
        if value.is_empty() {
            continue;
        }
        *obx += 1;
        out.push(format!(
            "OBX|{obx}|{kind}|{code}^{name}^LN|{sub}|{value}||||||F"
        ));
    }
}

/// The forecast after the evaluated history: for each series, the next
/// dose with its dates, as Z42 carries them (OBX numbering goes on from
/// `obx`).
fn forecast(
    out: &mut Vec<String>,
    given: &[(usize, String)],
    birth: &str,
    mut obx: usize,
    registry_codes: bool,
) {
    let now = today();
    let code = if registry_codes { "30979-9" } else { "30956-7" };
    for (index, series) in SCHEDULE.iter().enumerate() {
        let done = given.iter().filter(|(i, _)| *i == index).count();
        let sub = given.len() + 1 + index;
        let Some(months) = series.months.get(done) else {
            if registry_codes && done > 0 {
                // A series complete: a row with its status and nothing else.
                out.push(format!("ORC|RE||9999.{index}^SIMIIS"));
                out.push(format!(
                    "RXA|0|1|{now}|{now}|998^No vaccine administered^CVX|999||||||||||||||NA"
                ));
                let [vaccine, _] = series_rows(series, code);
                let status = (
                    "59783-1",
                    "Status in immunization series",
                    "CE",
                    "C^Complete^L".to_string(),
                );
                push_obx(out, &mut obx, sub, [vaccine, status]);
            }
            continue;
        };
        let Some(due) = plus_months(birth, *months) else {
            continue;
        };
        let earliest = days(&due)
            .map(|d| date_of(d - 28).max(birth.get(..8).unwrap_or(birth).to_string()))
            .unwrap_or_default();
        let overdue = plus_months(&due, 1).unwrap_or_default();
        let latest = plus_months(&due, 24).unwrap_or_default();
        let status = if overdue.as_str() < now.as_str() {
            "Overdue"
        } else {
            "Due"
        };
        out.push(format!("ORC|RE||9999.{index}^SIMIIS"));
        out.push(format!(
            "RXA|0|1|{now}|{now}|998^No vaccine administered^CVX|999||||||||||||||NA"
        ));
        let [vaccine, schedule] = series_rows(series, code);
        let rows = [
            vaccine,
            schedule,
            (
                "59783-1",
                "Status in immunization series",
                "CE",
                format!("{status}^{status}^L"),
            ),
            (
                "30973-2",
                "dose number in series",
                "NM",
                (done + 1).to_string(),
            ),
            ("30981-5", "Earliest date to give", "DT", earliest),
            ("30980-7", "Date vaccine due", "DT", due),
            ("59778-1", "Date dose is overdue", "DT", overdue),
            ("59777-3", "Latest date to give", "DT", latest),
        ];
        push_obx(out, &mut obx, sub, rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_added_as_on_a_calendar() {
        assert_eq!(plus_months("20200131", 1).as_deref(), Some("20200229"));
        assert_eq!(plus_months("20201115", 2).as_deref(), Some("20210115"));
        assert_eq!(plus_months("20200101", 0).as_deref(), Some("20200101"));
        assert_eq!(plus_months("2020", 1), None);
    }

    #[test]
    fn a_forecast_follows_what_was_given() {
        let birth = "20250101";
        let history = synthetic_history("DOE|JANE|20250101", birth);
        assert!(!history.is_empty());
        let segs = evaluated(&history, birth, false);
        let forecast: Vec<&String> = segs.iter().filter(|s| s.contains("|998^")).collect();
        assert!(!forecast.is_empty(), "{segs:#?}");
        assert!(segs.iter().any(|s| s.contains("|30980-7^")), "{segs:#?}");
        assert!(segs.iter().any(|s| s.contains("|59781-5^")), "{segs:#?}");
        // The same patient gets the same history.
        assert_eq!(history, synthetic_history("DOE|JANE|20250101", birth));
    }

    #[test]
    fn limits_count_what_is_in_flight() {
        let load = Load::default();
        let opts = QueryOptions {
            max_in_flight: 2,
            ..QueryOptions::default()
        };
        let a = load.enter(&opts);
        let b = load.enter(&opts);
        let c = load.enter(&opts);
        assert!(a.over.is_none() && b.over.is_none());
        assert!(c.over.is_some());
        drop((a, b, c));
        assert!(load.enter(&opts).over.is_none());
        assert_eq!(load.peak(), 3);
        assert_eq!(load.over_limit(), 1);
    }
}
