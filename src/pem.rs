//! An endpoint's TLS files (`ca_file`, `cert_file`, `key_file`), read the same way by
//! the client set-up and by `natshook check`, so that check refuses exactly the files
//! the set-up would.

use std::path::{Path, PathBuf};

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

/// A TLS file's bytes as read once: the client parses the bytes it compared with the
/// last ones it loaded, so a write between the comparison and the parse cannot slip by.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl PemFile {
    pub fn read(path: &Path) -> Result<PemFile, PemError> {
        let bytes = std::fs::read(path).map_err(|e| load_error(path, e))?;
        Ok(PemFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// The certificates in the file. A file without any is an error: a key file given
    /// as `ca_file` would otherwise trust nothing, and as `cert_file` fail every
    /// handshake.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| load_error(&self.path, e))?;
        if certs.is_empty() {
            return Err(PemError::NoCertificate(self.path.display().to_string()));
        }
        Ok(certs)
    }

    /// The file as trust roots: at least one certificate rustls can use.
    pub fn roots(&self) -> Result<rustls::RootCertStore, PemError> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(self.certificates()?);
        if added == 0 {
            return Err(load_error(
                &self.path,
                "no certificate usable as a trust root",
            ));
        }
        Ok(roots)
    }

    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PemError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                PemError::NoPrivateKey(self.path.display().to_string())
            }
            e => load_error(&self.path, e),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Loads one endpoint TLS file (`ca_file`, `cert_file` or `key_file`) as the client
/// set-up will, so that `natshook check` and a reload refuse a file without what its
/// key names instead of the endpoint failing to start. Whether a key belongs to its
/// certificate is left to the set-up itself.
pub fn check_tls_file(key: &str, path: &Path) -> Result<(), PemError> {
    let file = PemFile::read(path)?;
    match key {
        "ca_file" => file.roots().map(drop),
        "key_file" => file.private_key().map(drop),
        _ => file.certificates().map(drop),
    }
}
