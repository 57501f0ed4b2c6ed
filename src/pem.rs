//! An endpoint's TLS files (`ca_file`, `cert_file`, `key_file`), read the same way by
//! the client set-up and by `natshook check`, so that check refuses exactly the files
//! the set-up would.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot load {0}: {1}")]
    Load(String, String),
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("no private key in {0}")]
    NoPrivateKey(String),
}

fn load_error(path: &Path, e: impl std::fmt::Display) -> PemError {
    PemError::Load(path.display().to_string(), e.to_string())
}

/// The certificates of a PEM file. A file without any is an error: a key file given
/// as `ca_file` would otherwise trust nothing, and as `cert_file` fail every handshake.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(path, e))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// A `ca_file` as trust roots: at least one certificate rustls can use.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certificates(path)?);
    if added == 0 {
        return Err(load_error(path, "no certificate usable as a trust root"));
    }
    Ok(roots)
}

pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            PemError::NoPrivateKey(path.display().to_string())
        }
        e => load_error(path, e),
    })
}

/// Loads one endpoint TLS file (`ca_file`, `cert_file` or `key_file`) as the client
/// set-up will, so that `natshook check` and a reload refuse a file without what its
/// key names instead of the endpoint failing to start. Whether a key belongs to its
/// certificate is left to the set-up itself.
pub fn check_tls_file(key: &str, path: &Path) -> Result<(), PemError> {
    match key {
        "ca_file" => load_roots(path).map(drop),
        "key_file" => load_private_key(path).map(drop),
        _ => load_certificates(path).map(drop),
    }
}
