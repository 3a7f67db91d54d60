//! Who is calling: a bearer token mapped to a namespace and service account.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// An authenticated caller: the service account its certificate will name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
}

/// A token that does not authenticate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer TOKEN` metadata.
    #[error("no bearer token: send 'authorization: Bearer TOKEN'")]
    MissingToken,
    /// The token is not known (or was rejected by the token reviewer).
    #[error("the token is not valid")]
    InvalidToken,
    /// The token is valid but its user is not a service account (a person, a node, ...): it
    /// has no workload identity to certify.
    #[error("'{0}' is not a service account")]
    NotServiceAccount(String),
    /// The authenticating backend (e.g. the Kubernetes API server) could not be asked.
    #[error("cannot check the token: {0}")]
    Unavailable(String),
}

/// The boxed future [`Authenticator::authenticate`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>>;

/// Checks a caller's bearer token. Off Kubernetes: [`BootstrapTokens`], a file. On Kubernetes:
/// `meshmeter_kube::TokenReviewer` (the API server says which service account a projected
/// token belongs to).
pub trait Authenticator: Send + Sync + 'static {
    /// The caller `token` proves, or why not.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// The shortest token accepted in a bootstrap token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// A bootstrap token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{file}:{line}: {problem}")]
    Line {
        /// The file.
        file: String,
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// No token at all.
    #[error("{file}: no token (expected lines 'TOKEN NAMESPACE/SERVICE_ACCOUNT')")]
    Empty {
        /// The file.
        file: String,
    },
}

/// Bootstrap tokens from a file: one `TOKEN NAMESPACE/SERVICE_ACCOUNT` per line, blank lines
/// and `#` comments ignored. Tokens are at least [`MIN_TOKEN_LEN`] characters, unique, and
/// contain no whitespace.
#[derive(Clone, Debug, Default)]
pub struct BootstrapTokens {
    tokens: HashMap<String, Caller>,
}

impl BootstrapTokens {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses the file's `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        let mut first_line = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |problem: String| TokenFileError::Line {
                file: file.to_owned(),
                line,
                problem,
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let (Some(token), Some(who), None) = (words.next(), words.next(), words.next()) else {
                return Err(err("expected 'TOKEN NAMESPACE/SERVICE_ACCOUNT'".to_owned()));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(err(format!(
                    "the token is {} characters long; at least {MIN_TOKEN_LEN} are required",
                    token.len()
                )));
            }
            let Some((namespace, service_account)) = who.split_once('/') else {
                return Err(err(format!("'{who}' is not NAMESPACE/SERVICE_ACCOUNT")));
            };
            if let Err(e) = meshmeter_certs::SpiffeId::new("x", namespace, service_account) {
                return Err(err(format!("'{who}': {e}")));
            }
            if let Some(previous) = first_line.insert(token.to_owned(), line) {
                return Err(err(format!("the token of line {previous} appears again")));
            }
            tokens.insert(
                token.to_owned(),
                Caller {
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                },
            );
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                file: file.to_owned(),
            });
        }
        Ok(BootstrapTokens { tokens })
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl Authenticator for BootstrapTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result = self
            .tokens
            .get(token)
            .cloned()
            .ok_or(AuthError::InvalidToken);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_maps_tokens_to_service_accounts() {
        let tokens = BootstrapTokens::parse(
            "# bootstrap tokens\n\n0123456789abcdef default/ratings  # ratings-v2\nfedcba9876543210 default/mongodb\n",
            "tokens",
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.tokens["0123456789abcdef"],
            Caller {
                namespace: "default".into(),
                service_account: "ratings".into()
            }
        );
    }

    #[test]
    fn token_file_errors_name_file_and_line() {
        let cases = [
            (
                "short default/a\n",
                "tokens:1: the token is 5 characters long; at least 16 are required",
            ),
            (
                "0123456789abcdef default\n",
                "tokens:1: 'default' is not NAMESPACE/SERVICE_ACCOUNT",
            ),
            (
                "0123456789abcdef\n",
                "tokens:1: expected 'TOKEN NAMESPACE/SERVICE_ACCOUNT'",
            ),
            (
                "\n0123456789abcdef a/b\n0123456789abcdef a/c\n",
                "tokens:3: the token of line 2 appears again",
            ),
            (
                "# nothing\n",
                "tokens: no token (expected lines 'TOKEN NAMESPACE/SERVICE_ACCOUNT')",
            ),
        ];
        for (text, want) in cases {
            let e = BootstrapTokens::parse(text, "tokens").unwrap_err();
            assert_eq!(e.to_string(), want, "{text:?}");
        }
    }
}
