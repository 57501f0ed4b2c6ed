//! TLS files, to NATS (`[nats] tls`) and to a receiver (an endpoint's `ca_file`,
//! `cert_file`, `key_file`): the same keys, checked by one function.

use std::path::Path;

use super::super::model::TlsFiles;
use super::super::raw::RawTls;
use super::super::Problems;

/// Where a problem with each file, and with the pair, is named.
pub(super) struct TlsPaths {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
    /// cert_file and key_file set apart.
    pub pair: String,
}

/// How one file is checked: `key` is the file's key (`ca_file`, …).
pub(super) type FileCheck = fn(key: &str, path: &Path) -> Result<(), String>;

/// Where a file that an endpoint inherits from `[defaults]` is named. Such a file is
/// checked once with the section (`endpoint::defaults_tls`), not again for each
/// endpoint: every runtime endpoint of a platform can inherit one CA bundle, and
/// loading it for each would cost seconds at start and at every reload.
pub(super) const INHERITED: &str = "defaults.";

/// Each file set is checked by `check`, but those named under [`INHERITED`]; a client
/// certificate needs its key.
pub(super) fn tls_files(
    raw: RawTls,
    at: &TlsPaths,
    check: FileCheck,
    p: &mut Problems,
) -> TlsFiles {
    for (key, file, path) in [
        ("ca_file", &raw.ca_file, &at.ca_file),
        ("cert_file", &raw.cert_file, &at.cert_file),
        ("key_file", &raw.key_file, &at.key_file),
    ] {
        if let Some(f) = file.as_ref().filter(|_| !path.starts_with(INHERITED)) {
            if let Err(e) = check(key, f) {
                p.add(path.clone(), e);
            }
        }
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        p.add(
            at.pair.clone(),
            "cert_file and key_file must be set together",
        );
    }
    TlsFiles {
        ca_file: raw.ca_file,
        cert_file: raw.cert_file,
        key_file: raw.key_file,
    }
}
