//! The CA's Kubernetes authenticator: a caller's projected service-account token, checked by
//! the API server's TokenReview (`authentication.k8s.io/v1`).

use std::fmt;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;
use meshmeter_ca::{AuthError, AuthFuture, Authenticator, Caller};

/// The audience callers' tokens are projected for when none is configured
/// (`meshmeter ca --token-audience`).
pub const DEFAULT_TOKEN_AUDIENCE: &str = "meshmeter-ca";

/// The username prefix the API server gives service accounts.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Asks the API server whose token a caller sent: `system:serviceaccount:NAMESPACE:NAME`
/// becomes the [`Caller`] the CA signs for; a token the API server does not authenticate is
/// [`AuthError::InvalidToken`], a user that is not a service account
/// [`AuthError::NotServiceAccount`], and an API server that cannot be asked (down, or the CA
/// lacks `create tokenreviews`) [`AuthError::Unavailable`].
///
/// The review names the audiences the token must be for, and the answer must confirm one of
/// them: a token projected for another service (or the API server's own default audience)
/// is refused.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audiences: Vec<String>,
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens with `client`; callers' tokens must be for one of `audiences` (when
    /// empty: [`DEFAULT_TOKEN_AUDIENCE`]).
    pub fn new(client: Client, audiences: Vec<String>) -> Self {
        let audiences = if audiences.is_empty() {
            vec![DEFAULT_TOKEN_AUDIENCE.to_owned()]
        } else {
            audiences
        };
        TokenReviewer {
            api: Api::all(client),
            audiences,
        }
    }

    /// The audiences a token must be for.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let answer = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let Some(status) = answer.status else {
            return Err(AuthError::Unavailable(
                "TokenReview: the API server's answer has no status".to_owned(),
            ));
        };
        if status.authenticated != Some(true) {
            if let Some(error) = status.error.filter(|e| !e.is_empty()) {
                tracing::debug!(%error, "the API server did not authenticate a token");
            }
            return Err(AuthError::InvalidToken);
        }
        // An API server that ignores spec.audiences answers without them: not good enough.
        let confirmed = status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| self.audiences.contains(a));
        if !confirmed {
            return Err(AuthError::InvalidToken);
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account(&username)
    }
}

/// `system:serviceaccount:NAMESPACE:NAME` as a [`Caller`].
fn service_account(username: &str) -> Result<Caller, AuthError> {
    let not_sa = || AuthError::NotServiceAccount(username.to_owned());
    let rest = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .ok_or_else(not_sa)?;
    let (namespace, name) = rest.split_once(':').ok_or_else(not_sa)?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return Err(not_sa());
    }
    Ok(Caller {
        namespace: namespace.to_owned(),
        service_account: name.to_owned(),
    })
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.review(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames_map_to_callers() {
        assert_eq!(
            service_account("system:serviceaccount:default:ratings"),
            Ok(Caller {
                namespace: "default".into(),
                service_account: "ratings".into()
            })
        );
        for user in [
            "",
            "kubernetes-admin",
            "system:node:worker-1",
            "system:serviceaccount:default",
            "system:serviceaccount::ratings",
            "system:serviceaccount:default:",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(
                service_account(user),
                Err(AuthError::NotServiceAccount(user.to_owned())),
                "{user:?}"
            );
        }
    }
}
