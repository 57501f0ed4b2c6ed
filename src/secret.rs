//! Secret references (`{ env }`, `{ file }`, `{ value }`) and the resolved secret bytes.
//!
//! Secrets are resolved at start-up so that a missing variable or unreadable file stops
//! start-up (and `natshook check`) instead of producing unsigned or wrongly signed
//! requests later. The resolved bytes never appear in `Debug` output or errors.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret comes from, as written in the config.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "must be a string, { env = \"…\" }, { file = \"…\" } or { value = \"…\" } (a number must be quoted)"
)]
pub enum SecretRef {
    /// A plain string in the config: the value itself.
    Plain(String),
    Ref(SecretRefTable),
}

/// The `{ env = … }` / `{ file = … }` / `{ value = … }` table.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretRefTable {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    pub value: Option<String>,
}

/// A table only: serde's derive would also read a struct from a sequence (its fields
/// in order), so a list of three secrets would pass for `{ env, file, value }` and
/// never be read as the list it is.
impl<'de> Deserialize<'de> for SecretRefTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            env: Option<String>,
            file: Option<PathBuf>,
            value: Option<String>,
        }
        struct TableOnly;
        impl<'de> serde::de::Visitor<'de> for TableOnly {
            type Value = SecretRefTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table { env = … }, { file = … } or { value = … }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let t = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRefTable {
                    env: t.env,
                    file: t.file,
                    value: t.value,
                })
            }
        }
        d.deserialize_struct("SecretRefTable", &["env", "file", "value"], TableOnly)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Plain(_) => f.write_str("SecretRef::Plain(<redacted>)"),
            SecretRef::Ref(t) => match (&t.env, &t.file, &t.value) {
                (Some(env), _, _) => write!(f, "SecretRef::Env({env})"),
                (_, Some(file), _) => write!(f, "SecretRef::File({})", file.display()),
                _ => f.write_str("SecretRef::Value(<redacted>)"),
            },
        }
    }
}

/// Why a secret reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set exactly one of env, file or value")]
    Ambiguous,
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("env must name an environment variable")]
    EnvUnnamed,
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret is empty")]
    Empty,
}

/// Resolved secret bytes. Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads every one of `refs` now (a rotation list), in order; the first that cannot
/// be read fails them all, so a half-read list never replaces the keys in use.
pub fn resolve_all(refs: &[SecretRef]) -> Result<Vec<Secret>, SecretError> {
    refs.iter().map(SecretRef::resolve).collect()
}

/// Reads `refs` again, as a running process re-reads its `{ file }` secrets: a file
/// that no longer exists is a secret taken away (a key removed from a Kubernetes
/// Secret, an old secret deleted after a rotation), so it is left out rather than
/// kept. Any other failure fails them all, as in [`resolve_all`], and so does a list
/// whose files are all gone: that is more likely a mount gone wrong than every file
/// secret revoked at once.
pub fn resolve_present(refs: &[SecretRef]) -> Result<Vec<Secret>, SecretError> {
    let mut present = Vec::with_capacity(refs.len());
    let (mut files, mut gone) = (0, Vec::new());
    for r in refs {
        files += usize::from(r.is_file());
        match r.resolve() {
            Ok(secret) => present.push(secret),
            Err(e @ SecretError::File { .. }) if e.is_not_found() => gone.push(e),
            Err(e) => return Err(e),
        }
    }
    match gone.pop() {
        Some(e) if gone.len() + 1 == files => Err(e),
        _ => Ok(present),
    }
}

impl SecretError {
    /// Whether this is a `{ file }` secret whose file does not exist.
    fn is_not_found(&self) -> bool {
        matches!(self, SecretError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl SecretRef {
    pub fn is_file(&self) -> bool {
        matches!(self, SecretRef::Ref(t) if t.file.is_some())
    }

    /// Reads the secret now. File contents lose one trailing newline, since
    /// Kubernetes Secrets and `echo > file` commonly add one.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let bytes = match self {
            SecretRef::Plain(v) => v.as_bytes().to_vec(),
            SecretRef::Ref(t) => match (&t.env, &t.file, &t.value) {
                (Some(name), None, None) if name.is_empty() => return Err(SecretError::EnvUnnamed),
                (Some(name), None, None) => std::env::var(name)
                    .map_err(|_| SecretError::EnvMissing(name.clone()))?
                    .into_bytes(),
                (None, Some(path), None) => {
                    let mut b = std::fs::read(path).map_err(|source| SecretError::File {
                        path: path.clone(),
                        source,
                    })?;
                    if b.last() == Some(&b'\n') {
                        b.pop();
                        if b.last() == Some(&b'\r') {
                            b.pop();
                        }
                    }
                    b
                }
                (None, None, Some(v)) => v.as_bytes().to_vec(),
                _ => return Err(SecretError::Ambiguous),
            },
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(bytes))
    }
}

/// `secret = …` may be one reference or a list (newest first, for rotation).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "must be a string, { env = \"…\" }, { file = \"…\" }, { value = \"…\" }, or a list of them (a number must be quoted)"
)]
pub enum SecretList {
    One(SecretRef),
    Many(Vec<SecretRef>),
}

impl SecretList {
    pub fn refs(&self) -> Vec<&SecretRef> {
        match self {
            SecretList::One(r) => vec![r],
            SecretList::Many(v) => v.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_secret_file_is_left_out_of_a_re_read_unless_it_was_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            SecretRef::Ref(SecretRefTable {
                env: None,
                file: Some(dir.path().join(name)),
                value: None,
            })
        };
        std::fs::write(dir.path().join("current"), "new\n").unwrap();
        std::fs::write(dir.path().join("previous"), "old\n").unwrap();
        let refs = [file("current"), file("previous")];
        let both = resolve_present(&refs).unwrap();
        assert_eq!(both, [Secret::new("new"), Secret::new("old")]);
        std::fs::remove_file(dir.path().join("previous")).unwrap();
        assert_eq!(resolve_present(&refs).unwrap(), [Secret::new("new")]);
        assert!(
            resolve_all(&refs).is_err(),
            "at start every secret must be there"
        );
        std::fs::remove_file(dir.path().join("current")).unwrap();
        assert!(
            resolve_present(&refs).is_err(),
            "none left: the current keys stay"
        );
        let mixed = [file("current"), SecretRef::Plain("inline".into())];
        assert!(
            resolve_present(&mixed).is_err(),
            "every file gone, even beside an inline secret: the current keys stay"
        );
        // Anything but a missing file fails the whole read, as at start.
        std::fs::write(dir.path().join("current"), "").unwrap();
        assert!(matches!(resolve_present(&refs), Err(SecretError::Empty)));
    }

    #[test]
    fn a_list_of_three_secrets_is_a_list_not_a_table() {
        let list: SecretList = serde_json::from_str(r#"["a", "b", "c"]"#).unwrap();
        let plain = |v: &str| SecretRef::Plain(v.into());
        assert_eq!(
            list,
            SecretList::Many(vec![plain("a"), plain("b"), plain("c")])
        );
        let table: SecretList = serde_json::from_str(r#"{"env": "X"}"#).unwrap();
        assert!(
            matches!(table, SecretList::One(SecretRef::Ref(t)) if t.env.as_deref() == Some("X"))
        );
    }

    #[test]
    fn debug_never_shows_secret_bytes() {
        let s = SecretRef::Plain("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = SecretRef::Ref(SecretRefTable {
            value: Some("hunter2".into()),
            ..Default::default()
        });
        assert!(!format!("{r:?}").contains("hunter2"));
        let resolved = r.resolve().unwrap();
        assert!(!format!("{resolved:?}").contains("hunter2"));
        assert_eq!(resolved.expose(), b"hunter2");
    }

    #[test]
    fn file_secret_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\n").unwrap();
        let r = SecretRef::Ref(SecretRefTable {
            file: Some(path),
            ..Default::default()
        });
        assert_eq!(r.resolve().unwrap().expose(), b"abc");
    }

    #[test]
    fn unresolvable_refs_say_why() {
        let r = SecretRef::Ref(SecretRefTable {
            env: Some("NATSHOOK_TEST_SURELY_UNSET_VAR".into()),
            ..Default::default()
        });
        assert!(matches!(r.resolve(), Err(SecretError::EnvMissing(_))));
        let unnamed = SecretRef::Ref(SecretRefTable {
            env: Some(String::new()),
            file: None,
            value: None,
        });
        assert!(matches!(unnamed.resolve(), Err(SecretError::EnvUnnamed)));
        let both = SecretRef::Ref(SecretRefTable {
            env: Some("A".into()),
            value: Some("b".into()),
            ..Default::default()
        });
        assert!(matches!(both.resolve(), Err(SecretError::Ambiguous)));
        assert!(matches!(
            SecretRef::Plain(String::new()).resolve(),
            Err(SecretError::Empty)
        ));
    }
}
