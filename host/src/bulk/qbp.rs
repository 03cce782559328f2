//! Builds the CDC IG 1.5 QBP^Q11 query for one cohort patient: Z34
//! (immunization history) or Z44 (evaluated history and forecast).
//!
//! Every value that came from the cohort is HL7-escaped, so a hostile value
//! stays inside its field. MSH-3..6 come from configuration and are
//! hierarchic designators (`APP^2.16.840^ISO`): their components are kept and
//! each component is escaped.

use super::cohort::Patient;
use crate::hl7::escape;

/// What a query needs beside the patient.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    /// QPD-2, the query tag: how the answer is matched to the patient.
    pub tag: String,
    /// Z44 (evaluated history and forecast) when true, else Z34 (history).
    pub forecast: bool,
    /// MSH-10.
    pub control_id: String,
    pub sending_app: String,
    pub sending_facility: String,
    pub receiving_app: String,
    pub receiving_facility: String,
    /// RCP-2, the most records the IIS should return.
    pub limit: u32,
    /// MSH-7, an HL7 DTM.
    pub timestamp: String,
}

/// Escapes each `^`-separated component of a configured HD value.
fn escape_hd(value: &str) -> String {
    value.split('^').map(escape).collect::<Vec<_>>().join("^")
}

/// QPD-3: the MRN (type MR, with its assigning authority) first, then the
/// member id (type MB) as a second repetition.
fn identifiers(p: &Patient) -> String {
    let mut reps = Vec::new();
    if !p.mrn.is_empty() {
        reps.push(format!(
            "{}^^^{}^MR",
            escape(&p.mrn),
            escape(&p.mrn_authority)
        ));
    }
    if !p.member_id.is_empty() {
        reps.push(format!("{}^^^^MB", escape(&p.member_id)));
    }
    reps.join("~")
}

/// QPD-9: `^PRN^PH^^^area^local` for 10 digits, `^PRN^PH^^^^local` for 7.
fn phone(digits: &str) -> String {
    match digits.len() {
        0 => String::new(),
        10 => format!(
            "^PRN^PH^^^{}^{}",
            escape(digits.get(..3).unwrap_or("")),
            escape(digits.get(3..).unwrap_or(""))
        ),
        _ => format!("^PRN^PH^^^^{}", escape(digits)),
    }
}

/// The QBP^Q11 message for `p`, segments separated by CR (no trailing CR).
pub fn build_qbp(p: &Patient, q: &QueryParams) -> String {
    let (profile, query) = if q.forecast {
        (
            "Z44",
            "Z44^Request Evaluated History and Forecast^CDCPHINVS",
        )
    } else {
        ("Z34", "Z34^Request Immunization History^CDCPHINVS")
    };
    let msh = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||QBP^Q11^QBP_Q11|{}|P|2.5.1|||ER|AL|||||{profile}^CDCPHINVS",
        escape_hd(&q.sending_app),
        escape_hd(&q.sending_facility),
        escape_hd(&q.receiving_app),
        escape_hd(&q.receiving_facility),
        escape(&q.timestamp),
        escape(&q.control_id),
    );
    let name = format!(
        "{}^{}^{}^^^^L",
        escape(&p.family),
        escape(&p.given),
        escape(&p.middle)
    );
    let mother = if p.mother_maiden.is_empty() {
        String::new()
    } else {
        format!("{}^^^^^^M", escape(&p.mother_maiden))
    };
    let address = if [&p.address, &p.city, &p.state, &p.zip]
        .iter()
        .all(|v| v.is_empty())
    {
        String::new()
    } else {
        format!(
            "{}^^{}^{}^{}^^L",
            escape(&p.address),
            escape(&p.city),
            escape(&p.state),
            escape(&p.zip)
        )
    };
    let qpd = format!(
        "QPD|{query}|{}|{}|{name}|{mother}|{}|{}|{address}|{}",
        escape(&q.tag),
        identifiers(p),
        escape(&p.birth_date),
        escape(&p.sex),
        phone(&p.phone),
    );
    let rcp = format!("RCP|I|{}^RD&Records&HL70126|R^real-time^HL70394", q.limit);
    format!("{msh}\r{qpd}\r{rcp}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::rsp::{parse, segments};

    fn patient() -> Patient {
        Patient {
            row: 2,
            member_id: "M-77".into(),
            mrn: "123456".into(),
            mrn_authority: "MYEHR".into(),
            family: "Child".into(),
            given: "Bobbie".into(),
            middle: "Q".into(),
            birth_date: "20050512".into(),
            sex: "M".into(),
            mother_maiden: "Que".into(),
            address: "10 East Main St".into(),
            city: "Myfaircity".into(),
            state: "GA".into(),
            zip: "30301".into(),
            phone: "4045551212".into(),
        }
    }

    fn params(forecast: bool) -> QueryParams {
        QueryParams {
            tag: "job1-000002".into(),
            forecast,
            control_id: "C1".into(),
            sending_app: "IZHUB".into(),
            sending_facility: "HIE^2.16.840.1.1^ISO".into(),
            receiving_app: "IIS".into(),
            receiving_facility: "GA0000".into(),
            limit: 10,
            timestamp: "20240101120000+0000".into(),
        }
    }

    #[test]
    fn every_field_reads_back() {
        let text = build_qbp(&patient(), &params(false));
        assert_eq!(text.split('\r').count(), 3);
        let msg = parse(&text).unwrap();
        let segs: Vec<_> = segments(&msg).collect();
        let (msh, qpd, rcp) = (segs[0], segs[1], segs[2]);
        assert_eq!(msh.text(4, 2), "2.16.840.1.1");
        assert_eq!(msh.raw(9), "QBP^Q11^QBP_Q11");
        assert_eq!(msh.raw(10), "C1");
        assert_eq!(msh.raw(21), "Z34^CDCPHINVS");
        assert_eq!(qpd.raw(1), "Z34^Request Immunization History^CDCPHINVS");
        assert_eq!(qpd.raw(2), "job1-000002");
        let ids = qpd.reps(3);
        assert_eq!(
            (ids[0].c(1), ids[0].c(4), ids[0].c(5)),
            ("123456".into(), "MYEHR".into(), "MR".into())
        );
        assert_eq!((ids[1].c(1), ids[1].c(5)), ("M-77".into(), "MB".into()));
        assert_eq!(qpd.raw(4), "Child^Bobbie^Q^^^^L");
        assert_eq!(qpd.raw(5), "Que^^^^^^M");
        assert_eq!(qpd.raw(6), "20050512");
        assert_eq!(qpd.raw(7), "M");
        assert_eq!(qpd.raw(8), "10 East Main St^^Myfaircity^GA^30301^^L");
        assert_eq!(qpd.raw(9), "^PRN^PH^^^404^5551212");
        assert_eq!(rcp.raw(1), "I");
        assert_eq!(rcp.raw(2), "10^RD&Records&HL70126");
        assert_eq!(rcp.raw(3), "R^real-time^HL70394");
        let z44 = build_qbp(&patient(), &params(true));
        assert!(z44.contains("|Z44^CDCPHINVS\r"));
        assert!(z44.contains("QPD|Z44^Request Evaluated History and Forecast^CDCPHINVS|"));
    }

    #[test]
    fn hostile_values_stay_in_their_field() {
        let mut p = patient();
        p.family = "A|B^C\rMSH|x".into();
        p.given = "~&\\".into();
        p.mrn = "1\n2".into();
        p.phone.clear();
        p.mother_maiden.clear();
        let text = build_qbp(&p, &params(false));
        assert_eq!(text.split('\r').count(), 3, "{text:?}");
        let msg = parse(&text).unwrap();
        let qpd = segments(&msg).nth(1).unwrap();
        assert_eq!(qpd.text(4, 1), "A|B^C MSH|x");
        assert_eq!(qpd.text(4, 2), "~&\\");
        assert_eq!(qpd.text(3, 1), "1 2");
        assert_eq!(qpd.raw(5), "");
        assert_eq!(qpd.raw(9), "");
        assert_eq!(qpd.raw(6), "20050512");
    }
}
