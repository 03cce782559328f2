//! The CDC WSDL SOAP transport (`urn:cdc:iisb:2011`, SOAP 1.2,
//! document/literal): `submitSingleMessage(username, password, facilityID,
//! hl7Message)` and `connectivityTest(echoBack)`, with the faults the WSDL
//! defines. About three in four IIS take submissions this way.
//!
//! This module reads and writes the envelopes; [`client`] is the destination
//! side and [`server`] the listener side.

pub mod client;
pub mod server;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The WSDL's namespace.
pub const NS: &str = "urn:cdc:iisb:2011";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

/// One call, as read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Submit {
        username: String,
        password: String,
        facility_id: String,
        hl7: String,
    },
    ConnectivityTest {
        echo_back: String,
    },
}

/// The faults the CDC WSDL defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("SecurityFault: {0}")]
    Security(String),
    #[error("MessageTooLargeFault: the message is {size} bytes; at most {max} are accepted")]
    MessageTooLarge { size: usize, max: usize },
    #[error("UnsupportedOperationFault: {0}")]
    UnsupportedOperation(String),
    #[error("UnknownFault: {0}")]
    Unknown(String),
}

impl Fault {
    /// Whether sending the same message again could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Fault::Unknown(_))
    }

    /// The fault as a SOAP 1.2 envelope.
    pub fn to_xml(&self) -> String {
        let (code, name, detail) = match self {
            Fault::Security(why) => (
                "soap:Sender",
                "SecurityFault",
                format!(
                    "<Code>10</Code><Reason>Security</Reason><Detail>{}</Detail>",
                    esc(why)
                ),
            ),
            Fault::MessageTooLarge { size, max } => (
                "soap:Sender",
                "MessageTooLargeFault",
                format!(
                    "<Code>20</Code><Reason>MessageTooLarge</Reason><Detail>message is {size} bytes</Detail><Size>{size}</Size><MaxSize>{max}</MaxSize>"
                ),
            ),
            Fault::UnsupportedOperation(why) => (
                "soap:Sender",
                "UnsupportedOperationFault",
                format!(
                    "<Code>30</Code><Reason>UnsupportedOperation</Reason><Detail>{}</Detail>",
                    esc(why)
                ),
            ),
            Fault::Unknown(why) => (
                "soap:Receiver",
                "UnknownFault",
                format!(
                    "<Code>0</Code><Reason>Unknown</Reason><Detail>{}</Detail>",
                    esc(why)
                ),
            ),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{SOAP12}\"><soap:Body><soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason><soap:Detail><{name} xmlns=\"{NS}\">{detail}</{name}></soap:Detail></soap:Fault></soap:Body></soap:Envelope>",
            esc(&self.to_string())
        )
    }
}

/// Escapes text for XML content.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{SOAP12}\" xmlns:urn=\"{NS}\"><soap:Header/><soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// A `submitSingleMessage` request.
pub fn submit_request(username: &str, password: &str, facility_id: &str, hl7: &str) -> String {
    envelope(&format!(
        "<urn:submitSingleMessage><urn:username>{}</urn:username><urn:password>{}</urn:password><urn:facilityID>{}</urn:facilityID><urn:hl7Message>{}</urn:hl7Message></urn:submitSingleMessage>",
        esc(username),
        esc(password),
        esc(facility_id),
        esc(hl7)
    ))
}

/// A `connectivityTest` request.
pub fn connectivity_request(echo: &str) -> String {
    envelope(&format!(
        "<urn:connectivityTest><urn:echoBack>{}</urn:echoBack></urn:connectivityTest>",
        esc(echo)
    ))
}

/// The response to a submission: the IIS's HL7 answer.
pub fn submit_response(hl7: &str) -> String {
    envelope(&format!(
        "<urn:submitSingleMessageResponse><urn:return>{}</urn:return></urn:submitSingleMessageResponse>",
        esc(hl7)
    ))
}

/// The response to a connectivity test.
pub fn connectivity_response(echo: &str) -> String {
    envelope(&format!(
        "<urn:connectivityTestResponse><urn:return>{}</urn:return></urn:connectivityTestResponse>",
        esc(echo)
    ))
}

/// Element local names and their text, in document order, plus the first
/// element inside `Body` (the operation).
struct Parsed {
    operation: Option<String>,
    elements: Vec<String>,
    texts: Vec<(String, String)>,
}

fn parse(xml: &[u8]) -> Result<Parsed, String> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut parsed = Parsed {
        operation: None,
        elements: Vec::new(),
        texts: Vec::new(),
    };
    let mut saw_envelope = false;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                if stack.is_empty() {
                    if name != "Envelope" {
                        return Err(format!("the document is <{name}>, not a SOAP Envelope"));
                    }
                    saw_envelope = true;
                }
                if stack.last().is_some_and(|p| p == "Body") && parsed.operation.is_none() {
                    parsed.operation = Some(name.clone());
                }
                if stack.len() > 32 || parsed.elements.len() > 10_000 {
                    return Err("the XML is nested too deeply or has too many elements".into());
                }
                parsed.elements.push(name.clone());
                stack.push(name);
            }
            Ok(Event::Empty(e)) => {
                let name = e.local_name().as_ref().to_string();
                if stack.last().is_some_and(|p| p == "Body") && parsed.operation.is_none() {
                    parsed.operation = Some(name.clone());
                }
                parsed.texts.push((name, String::new()));
            }
            Ok(Event::Text(t)) => {
                if let Some(name) = stack.last() {
                    // Entity references arrive as their own events; this is the
                    // raw text between them, carriage returns included.
                    let text: &str = t.as_ref();
                    match parsed.texts.last_mut() {
                        Some((n, v)) if n == name => v.push_str(text),
                        _ => parsed.texts.push((name.clone(), text.to_string())),
                    }
                }
            }
            Ok(Event::GeneralRef(r)) => {
                // Character references such as &#xD; inside text.
                if let (Some(name), Ok(Some(c))) = (stack.last(), r.resolve_char_ref()) {
                    match parsed.texts.last_mut() {
                        Some((n, v)) if n == name => v.push(c),
                        _ => parsed.texts.push((name.clone(), c.to_string())),
                    }
                } else if let Some(name) = stack.last() {
                    let entity: String = r.as_ref().to_string();
                    let c = match entity.as_str() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => return Err(format!("unknown entity &{entity};")),
                    };
                    match parsed.texts.last_mut() {
                        Some((n, v)) if n == name => v.push_str(c),
                        _ => parsed.texts.push((name.clone(), c.to_string())),
                    }
                }
            }
            Ok(Event::CData(t)) => {
                if let Some(name) = stack.last() {
                    parsed
                        .texts
                        .push((name.clone(), AsRef::<str>::as_ref(&t).to_string()));
                }
            }
            Ok(Event::End(_)) => {
                stack.pop();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "not well-formed XML at byte {}: {e}",
                    reader.buffer_position()
                ));
            }
        }
        buf.clear();
    }
    if !saw_envelope {
        return Err("no SOAP Envelope".into());
    }
    Ok(parsed)
}

fn text_of<'a>(p: &'a Parsed, name: &str) -> &'a str {
    p.texts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Reads a request body (already size-checked by the caller).
pub fn parse_request(body: &[u8]) -> Result<Call, Fault> {
    let p = parse(body)
        .map_err(|e| Fault::Unknown(format!("the request is not a SOAP envelope: {e}")))?;
    match p.operation.as_deref() {
        Some("submitSingleMessage") => Ok(Call::Submit {
            username: text_of(&p, "username").to_string(),
            password: text_of(&p, "password").to_string(),
            facility_id: text_of(&p, "facilityID").to_string(),
            hl7: text_of(&p, "hl7Message").to_string(),
        }),
        Some("connectivityTest") => Ok(Call::ConnectivityTest {
            echo_back: text_of(&p, "echoBack").to_string(),
        }),
        Some(other) => Err(Fault::UnsupportedOperation(format!(
            "operation '{other}' is not supported"
        ))),
        None => Err(Fault::UnsupportedOperation(
            "the SOAP Body holds no operation".into(),
        )),
    }
}

/// Reads a response: the `return` text, or the fault it carries.
pub fn parse_response(body: &[u8]) -> Result<String, Fault> {
    let p = parse(body)
        .map_err(|e| Fault::Unknown(format!("the IIS's answer is not a SOAP envelope: {e}")))?;
    if p.operation.as_deref() == Some("Fault") {
        let kind = p
            .elements
            .iter()
            .map(String::as_str)
            .find(|n| n.ends_with("Fault") && *n != "Fault")
            .unwrap_or("");
        let detail = {
            let d = text_of(&p, "Detail");
            if d.is_empty() {
                text_of(&p, "Text").to_string()
            } else {
                d.to_string()
            }
        };
        return Err(match kind {
            "SecurityFault" => Fault::Security(detail),
            "MessageTooLargeFault" => Fault::MessageTooLarge {
                size: text_of(&p, "Size").trim().parse().unwrap_or(0),
                max: text_of(&p, "MaxSize").trim().parse().unwrap_or(0),
            },
            "UnsupportedOperationFault" => Fault::UnsupportedOperation(detail),
            _ => Fault::Unknown(detail),
        });
    }
    match p.texts.iter().find(|(n, _)| n == "return") {
        Some((_, v)) => Ok(v.clone()),
        None => Err(Fault::Unknown(
            "the IIS's answer has no return value".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_hl7_carriage_returns_and_markup() {
        let hl7 = "MSH|^~\\&|A|B<&>|C\rPID|1||x\r";
        let req = submit_request("user", "p&ss<", "FAC", hl7);
        assert_eq!(
            parse_request(req.as_bytes()).unwrap(),
            Call::Submit {
                username: "user".into(),
                password: "p&ss<".into(),
                facility_id: "FAC".into(),
                hl7: hl7.into()
            }
        );
        assert_eq!(
            parse_request(connectivity_request("ping").as_bytes()).unwrap(),
            Call::ConnectivityTest {
                echo_back: "ping".into()
            }
        );
        assert_eq!(
            parse_response(submit_response(hl7).as_bytes()).unwrap(),
            hl7
        );
    }

    #[test]
    fn faults_round_trip() {
        for f in [
            Fault::Security("bad password".into()),
            Fault::MessageTooLarge { size: 10, max: 5 },
            Fault::UnsupportedOperation("x".into()),
            Fault::Unknown("boom".into()),
        ] {
            assert_eq!(parse_response(f.to_xml().as_bytes()).unwrap_err(), f);
        }
    }

    #[test]
    fn hostile_bodies_are_faults_not_panics() {
        for body in [
            &b""[..],
            b"not xml",
            b"<a><b>",
            b"<Envelope><Body><deleteEverything/></Body></Envelope>",
            &[0xff, 0xfe, 0x00],
        ] {
            let _ = parse_request(body);
            let _ = parse_response(body);
        }
        assert!(matches!(parse_request(b"not xml"), Err(Fault::Unknown(_))));
        assert!(matches!(
            parse_request(b"<Envelope><Body><deleteEverything/></Body></Envelope>"),
            Err(Fault::UnsupportedOperation(_))
        ));
        let deep = "<Envelope>".to_string() + &"<a>".repeat(100);
        assert!(parse_request(deep.as_bytes()).is_err());
    }
}
