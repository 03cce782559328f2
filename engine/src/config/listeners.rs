//! `[listeners.NAME]`: MLLP and SOAP listeners, their limits, TLS files and
//! certificate identities, and SOAP users bound to facilities.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::compile::{Errors, check_port, parse_addr};
use super::file::{FileConfig, ListenerTlsFile, SoapUserFile};
use super::spec::{ListenerSpec, ListenerTlsSpec, SoapListener};
use crate::mllp::DEFAULT_MAX_FRAME;

/// Checks every listener of `file`; `bound` collects the addresses taken so
/// far, so two listeners (or the admin endpoint) never share a port.
pub(super) fn compile(
    errs: &mut Errors<'_>,
    base: &Path,
    file: &FileConfig,
    bound: &mut Vec<(SocketAddr, String)>,
) -> Vec<ListenerSpec> {
    let mut listeners = Vec::new();
    for (name, l) in &file.listeners {
        let key = format!("listeners.{name}.listen");
        let Some(addr) = parse_addr(errs, &l.get_ref().listen, &key) else {
            continue;
        };
        check_port(errs, bound, addr, l.get_ref().listen.span(), &key);
        let l = l.get_ref();
        let tls = l.tls.as_ref().map(|t| {
            let span = t.span();
            let t = t.get_ref();
            let identities = compile_identities(errs, name, t, span.clone());
            ListenerTlsSpec {
                cert: base.join(&t.cert),
                key: base.join(&t.key),
                client_ca: t.client_ca.as_ref().map(|c| base.join(c)),
                identities,
                at: errs.origin(span, format!("listeners.{name}.tls")),
            }
        });
        let max_frame = l.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME);
        if max_frame < 64 {
            errs.push(
                Some(l.listen.span()),
                format!("listeners.{name}.max_frame_bytes"),
                "must be at least 64",
            );
        }
        let soap = match l
            .protocol
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("mllp", _)) => None,
            Some(("soap", _)) => Some(SoapListener {
                path: l.soap_path.clone().unwrap_or_else(|| "/".into()),
                users: soap_users(errs, name, &l.soap_users),
            }),
            Some((other, span)) => {
                errs.push(
                    Some(span),
                    format!("listeners.{name}.protocol"),
                    format!("unknown protocol '{other}' (mllp, soap)"),
                );
                None
            }
        };
        let request_timeout = match &l.request_timeout_secs {
            None => Duration::from_secs(60),
            Some(secs) => {
                let key = format!("listeners.{name}.request_timeout_secs");
                if soap.is_none() {
                    errs.push(
                        Some(secs.span()),
                        key,
                        "applies to SOAP listeners only (protocol = \"soap\")",
                    );
                } else if *secs.get_ref() == 0 {
                    errs.push(Some(secs.span()), key, "must be at least 1");
                }
                Duration::from_secs((*secs.get_ref()).max(1))
            }
        };
        listeners.push(ListenerSpec {
            name: name.clone(),
            addr,
            allowed_senders: l.allowed_senders.iter().cloned().collect(),
            max_frame,
            lenient_framing: l.lenient_framing,
            max_connections: l.max_connections.unwrap_or(1024).max(1),
            max_per_peer: l.max_connections_per_peer.unwrap_or(64).max(1),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs.unwrap_or(600).max(1)),
            request_timeout,
            tls,
            soap,
        });
    }
    listeners
}

/// A SOAP listener's users: a password alone allows any facility; a table
/// binds the user to a non-empty list of facilities.
fn soap_users(
    errs: &mut Errors<'_>,
    listener: &str,
    users: &BTreeMap<String, toml::Spanned<SoapUserFile>>,
) -> BTreeMap<String, crate::soap::server::SoapUser> {
    let mut out = BTreeMap::new();
    for (user, entry) in users {
        let key = format!("listeners.{listener}.soap_users.{user}");
        let facilities = match entry.get_ref() {
            SoapUserFile::Password(_) => None,
            SoapUserFile::Bound(t) => {
                if t.facilities.is_empty() {
                    errs.push(
                        Some(entry.span()),
                        format!("{key}.facilities"),
                        "is empty: list the sending facilities (MSH-4.1) this user may send for",
                    );
                }
                if t.facilities.iter().any(|f| f.trim().is_empty()) {
                    errs.push(
                        Some(entry.span()),
                        format!("{key}.facilities"),
                        "holds a blank facility name",
                    );
                }
                Some(t.facilities.iter().cloned().collect())
            }
        };
        let password = match entry.get_ref() {
            SoapUserFile::Password(p) => p.clone(),
            SoapUserFile::Bound(t) => t.password.clone(),
        };
        out.insert(
            user.clone(),
            crate::soap::server::SoapUser {
                password,
                facilities,
            },
        );
    }
    out
}

/// Checks `[listeners.NAME.tls.identities]`: every key names a certificate
/// once, every list holds facilities, and client certificates are required.
fn compile_identities(
    errs: &mut Errors<'_>,
    listener: &str,
    tls: &ListenerTlsFile,
    span: Range<usize>,
) -> crate::identity::certificate::CertIdentities {
    let key = format!("listeners.{listener}.tls.identities");
    if !tls.identities.is_empty() && tls.client_ca.is_none() {
        errs.push(
            Some(span),
            key.clone(),
            "identities need client_ca: without mutual TLS no client certificate is presented",
        );
    }
    let mut out = crate::identity::certificate::CertIdentities::new();
    let mut written: BTreeMap<crate::identity::certificate::CertKey, &str> = BTreeMap::new();
    for (cert, facilities) in &tls.identities {
        let entry_key = format!("{key}.\"{}\"", cert.get_ref());
        let parsed = match crate::identity::certificate::CertKey::parse(cert.get_ref()) {
            Ok(parsed) => Some(parsed),
            Err(why) => {
                errs.push(Some(cert.span()), entry_key.clone(), why);
                None
            }
        };
        let list = facilities.get_ref();
        if list.is_empty() {
            errs.push(
                Some(facilities.span()),
                entry_key.clone(),
                "the list of facilities is empty: name the sending facilities (MSH-4.1) this certificate may send for, or remove the entry",
            );
        }
        if let Some(blank) = list
            .iter()
            .find(|f| f.trim().is_empty() || f.trim() != f.as_str())
        {
            errs.push(
                Some(facilities.span()),
                entry_key.clone(),
                format!("'{blank}' is not a sending facility (MSH-4.1): no empty values or surrounding spaces"),
            );
        }
        if let Some(parsed) = parsed {
            if let Some(other) = written.get(&parsed) {
                errs.push(
                    Some(cert.span()),
                    entry_key,
                    format!("names the same certificate as \"{other}\"; keep one entry"),
                );
            } else {
                written.insert(parsed.clone(), cert.get_ref());
                out.insert(parsed, list.iter().cloned().collect());
            }
        }
    }
    out
}
