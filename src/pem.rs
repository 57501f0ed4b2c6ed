//! An endpoint's TLS files (`ca_file`, `cert_file`, `key_file`), read the same way by
//! the client set-up and by `natshook check`, so that check refuses exactly the files
//! the set-up would.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS file cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
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

/// The largest TLS file read: a CA bundle is a few hundred KiB, and a path that names
/// a device or a huge file by mistake should fail, not fill memory.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// A TLS file's bytes as read once, and their digest: the client parses the bytes
/// whose digest it compared with the last ones it loaded, so a write between the
/// comparison and the parse cannot slip by, and keeps only the digest.
pub struct PemFile {
    path: PathBuf,
    bytes: Vec<u8>,
    digest: [u8; 32],
}

impl PemFile {
    pub fn read(path: &Path) -> Result<PemFile, PemError> {
        use sha2::Digest;
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| load_error(path, e))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(load_error(path, "larger than 16 MiB"));
        }
        Ok(PemFile {
            path: path.to_path_buf(),
            digest: sha2::Sha256::digest(&bytes).into(),
            bytes,
        })
    }

    /// The SHA-256 of the bytes read.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that names a device, or a file far larger than any PEM bundle, is an
    /// error naming the file instead of a read without end.
    #[test]
    fn a_file_past_the_size_limit_is_refused() {
        let error = PemFile::read(Path::new("/dev/zero")).err().unwrap();
        assert_eq!(
            error.to_string(),
            "cannot load /dev/zero: larger than 16 MiB"
        );
    }
}
