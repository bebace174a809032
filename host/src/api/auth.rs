//! Who may call what. Every `/api/v1` route but ingest needs a bearer
//! token; a token has a name and a scope: `read` may call every GET,
//! `admin` every route. The host keeps only each token's SHA-256, so a
//! token is never held in memory after start nor written anywhere.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::config::{NamedToken, TokenScope};

/// The caller a request's token names, put in the request's extensions
/// for handlers that record who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (`admin` for the main admin token).
    pub name: String,
    /// What it may do.
    pub scope: TokenScope,
}

/// The name of the token from `admin.token` / `admin.token_file`.
pub const MAIN_TOKEN: &str = "admin";

/// The tokens this host accepts, by hash.
pub struct Tokens {
    known: Vec<(Principal, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.known.iter().map(|(p, _)| p.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

/// The SHA-256 of `token`, hex: what `[[admin.tokens]] sha256` holds.
pub fn hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// The main admin token plus the configured named ones. The error
    /// names the token at fault, never a value.
    pub fn new(main: &SecretString, named: &[NamedToken]) -> Result<Tokens, String> {
        let mut known = vec![(
            Principal {
                name: MAIN_TOKEN.to_owned(),
                scope: TokenScope::Admin,
            },
            Sha256::digest(main.expose_secret().as_bytes()).into(),
        )];
        for t in named {
            let at = |what: &str| format!("admin.tokens `{}`: {what}", t.name);
            if t.name.trim().is_empty() {
                return Err("admin.tokens: a token has an empty name".into());
            }
            if known.iter().any(|(p, _)| p.name == t.name) {
                return Err(at(&format!(
                    "the name is taken (`{MAIN_TOKEN}` is the main admin token's)"
                )));
            }
            let hash: [u8; 32] = match (&t.sha256, &t.secret) {
                (Some(h), None) => hex::decode(h.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| at("sha256 must be 64 hex digits"))?,
                (None, Some(secret)) => {
                    let value = secret.read().map_err(|e| at(&e))?;
                    if value.expose_secret().is_empty() {
                        return Err(at("the secret is empty"));
                    }
                    Sha256::digest(value.expose_secret().as_bytes()).into()
                }
                _ => return Err(at("give exactly one of `sha256` and `secret`")),
            };
            if known.iter().any(|(_, h)| *h == hash) {
                return Err(at("the same token as another one"));
            }
            known.push((
                Principal {
                    name: t.name.clone(),
                    scope: t.scope,
                },
                hash,
            ));
        }
        Ok(Tokens { known })
    }

    /// Whose token `presented` is. Every known hash is compared, in
    /// constant time, so timing says nothing about which one came close.
    pub fn verify(&self, presented: &str) -> Option<&Principal> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (principal, known) in &self.known {
            if constant_time_eq::constant_time_eq_32(&hash, known) {
                found = Some(principal);
            }
        }
        found
    }
}

/// The scope a request needs: a GET or HEAD reads; anything else changes
/// something, or runs a plugin, and needs `admin`.
pub fn needed_scope(method: &Method) -> TokenScope {
    if method == Method::GET || method == Method::HEAD {
        TokenScope::Read
    } else {
        TokenScope::Admin
    }
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// 401 without a known token, 403 with one whose scope is too small;
/// otherwise the request goes on carrying its [`Principal`]. Every
/// request made with the admin scope is logged with the token's name.
pub(super) async fn require_scope(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(principal) = bearer(&request).and_then(|t| state.tokens.verify(t)) else {
        return ApiError::Unauthorized.into_response();
    };
    let needed = needed_scope(request.method());
    if principal.scope < needed {
        return ApiError::Forbidden(format!(
            "token `{}` has the `{}` scope; {} needs `{}`",
            principal.name,
            principal.scope.as_str(),
            request.method(),
            needed.as_str()
        ))
        .into_response();
    }
    if needed == TokenScope::Admin {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        tracing::info!(token = %principal.name, method = %request.method(), route, "admin request");
    }
    request.extensions_mut().insert(principal.clone());
    next.run(request).await
}

/// `/metrics`: any API token, or `telemetry.metrics_token`.
pub(super) async fn require_metrics_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = bearer(&request).is_some_and(|t| {
        state.tokens.verify(t).is_some()
            || state.metrics_token.as_ref().is_some_and(|m| matches(t, m))
    });
    if allowed {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

fn matches(presented: &str, token: &SecretString) -> bool {
    constant_time_eq::constant_time_eq(presented.as_bytes(), token.expose_secret().as_bytes())
}

/// The ingest token, when one is configured.
pub(super) fn check_ingest_token(
    s: &ApiState,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    let Some(token) = &s.ingest.token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if matches(t, token) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::manifest::SecretRef;

    fn named(name: &str, scope: TokenScope, sha256: Option<String>) -> NamedToken {
        NamedToken {
            name: name.into(),
            scope,
            sha256,
            secret: None,
        }
    }

    #[test]
    fn tokens_are_known_by_hash_and_scoped() {
        let main = SecretString::from("main-secret");
        let tokens = Tokens::new(
            &main,
            &[named(
                "grafana",
                TokenScope::Read,
                Some(hash_hex("ro-secret")),
            )],
        )
        .unwrap();
        assert_eq!(
            tokens.verify("main-secret").unwrap().scope,
            TokenScope::Admin
        );
        let ro = tokens.verify("ro-secret").unwrap();
        assert_eq!((ro.name.as_str(), ro.scope), ("grafana", TokenScope::Read));
        assert!(tokens.verify("ro-secre").is_none());
        assert!(tokens.verify("").is_none());
        assert!(!format!("{tokens:?}").contains("secret"), "{tokens:?}");
    }

    #[test]
    fn bad_token_settings_are_refused_by_name() {
        let main = SecretString::from("m");
        let err = |t: NamedToken| Tokens::new(&main, &[t]).unwrap_err();
        assert!(err(named("admin", TokenScope::Read, Some(hash_hex("x")))).contains("taken"));
        assert!(err(named("a", TokenScope::Read, Some("abc".into()))).contains("64 hex"));
        assert!(err(named("a", TokenScope::Read, None)).contains("exactly one"));
        assert!(err(named("a", TokenScope::Read, Some(hash_hex("m")))).contains("same token"));
        let mut env = named("ci", TokenScope::Admin, None);
        env.secret = Some(SecretRef::Env("EVENTPULSE_TEST_NO_SUCH_VAR".into()));
        let e = err(env);
        assert!(
            e.contains("`ci`") && e.contains("EVENTPULSE_TEST_NO_SUCH_VAR"),
            "{e}"
        );
    }

    #[test]
    fn only_reads_are_read_scope() {
        assert_eq!(needed_scope(&Method::GET), TokenScope::Read);
        assert_eq!(needed_scope(&Method::HEAD), TokenScope::Read);
        for m in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            assert_eq!(needed_scope(&m), TokenScope::Admin);
        }
    }
}
