//! TLS for MLLP (rustls): listeners with optional client certificates
//! (mutual TLS, the certificate's subject bound to the sender), and
//! destinations that verify the IIS against a configured CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::Peer;
use crate::identity::certificate::{self, CertIdentities, IdentityError};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(store)
}

/// A listener's TLS settings: its certificate, and with `client_ca` a
/// requirement that clients present a certificate from that CA.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// A destination's TLS settings: the CA the IIS's certificate must chain
/// to, and optionally a client certificate for mutual TLS.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    let config = match client {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client that trusts `ca`, or the system's roots without one (a
/// PostgreSQL server, an OpenID provider).
pub fn client_config_or_system(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    if let Some(ca) = ca {
        return client_config(ca, None);
    }
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name a destination's certificate must carry.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("'{name}' is not a server name: {e}"))
}

/// The paths of TLS files and a digest of what they held when loaded, so
/// that a certificate or key rotated in place counts as a change.
#[derive(Clone, PartialEq, Eq)]
struct Files {
    paths: Vec<std::path::PathBuf>,
    digest: [u8; 32],
}

impl Files {
    fn read(paths: Vec<std::path::PathBuf>) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for p in &paths {
            // A file that cannot be read fails the load itself with a clear error.
            hash.update(std::fs::read(p).unwrap_or_default());
            hash.update([0u8]);
        }
        Files {
            paths,
            digest: hash.finalize().into(),
        }
    }
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.paths)
    }
}

/// A listener's TLS, as configured (compared by its files' paths and
/// contents, and its identities).
#[derive(Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    /// Whether clients must present a certificate (mutual TLS).
    pub mutual: bool,
    /// Certificates that may send for other facilities than their CN.
    pub identities: CertIdentities,
    files: Files,
}

impl ListenerTls {
    /// Loads a listener's certificate, key and optional client CA.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        identities: CertIdentities,
    ) -> Result<ListenerTls, String> {
        let mut files = vec![cert.to_path_buf(), key.to_path_buf()];
        files.extend(client_ca.map(Path::to_path_buf));
        Ok(ListenerTls {
            config: server_config(cert, key, client_ca)?,
            mutual: client_ca.is_some(),
            identities,
            files: Files::read(files),
        })
    }

    /// The sender a verified client certificate (DER) proves, and the
    /// facilities it may send for: those mapped to its fingerprint, else
    /// those mapped to its subject CN, else its subject CN alone.
    pub fn identify(&self, der: &[u8]) -> Result<Peer, IdentityError> {
        certificate::identify(&self.identities, der)
    }
}

impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.identities == other.identities
    }
}
impl Eq for ListenerTls {}
impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ListenerTls({:?}, mutual: {}, identities: {})",
            self.files,
            self.mutual,
            self.identities.len()
        )
    }
}

/// A destination's TLS, as configured (compared by its files' paths and
/// contents, and the server name).
#[derive(Clone)]
pub struct DestinationTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    files: Files,
}

impl DestinationTls {
    /// Loads a destination's CA, the name its certificate must carry, and an
    /// optional client certificate.
    pub fn load(
        ca: &Path,
        name: &str,
        client: Option<(&Path, &Path)>,
    ) -> Result<DestinationTls, String> {
        let mut files = vec![ca.to_path_buf()];
        if let Some((c, k)) = client {
            files.push(c.to_path_buf());
            files.push(k.to_path_buf());
        }
        Ok(DestinationTls {
            config: client_config(ca, client)?,
            server_name: server_name(name)?,
            files: Files::read(files),
        })
    }
}

impl PartialEq for DestinationTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.server_name == other.server_name
    }
}
impl Eq for DestinationTls {}
impl std::fmt::Debug for DestinationTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DestinationTls({:?}, {:?})",
            self.files, self.server_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_self_signed(dir: &Path, name: &str) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("c.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), cert.signing_key.serialize_pem()).unwrap();
    }

    /// A certificate rotated in place is a change: the listener is swapped
    /// at the next reload; the same files loaded again are not.
    #[test]
    fn tls_compares_by_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_self_signed(d, "a.test");
        let load = || {
            ListenerTls::load(&d.join("c.pem"), &d.join("k.pem"), None, Default::default()).unwrap()
        };
        let first = load();
        assert!(first == load());
        write_self_signed(d, "b.test");
        assert!(first != load());
    }
}
