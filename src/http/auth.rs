//! Who may call what.
//!
//! Two kinds of credential pass: our own token (`NOODLE_MIGRATE_API_TOKEN`,
//! as `Authorization: Bearer`), and the gallery's own, read as the gallery
//! reads them: an API key in `x-api-key`, or a session token (bearer,
//! `immich_access_token` cookie, or the gallery's token headers). A gallery
//! credential must belong to an admin; an API key must also carry `all`, or
//! `job.read` for reads and `job.create` for the rest, as the gallery asks
//! of its own storage-migration endpoints.
//!
//! - `/healthz` and the admin page (static, it holds no data): open.
//! - `/api/…` (the gallery's contract): credentials always, as the gallery.
//! - everything else: credentials when a token is configured, else open.

use super::error::ApiError;
use crate::db::credentials::{Credential, Principal};
use crate::engine::Engine;
use actix_web::dev::ServiceRequest;
use actix_web::http::Method;

/// The prefix of the routes that serve the gallery's own contract.
pub const GALLERY_PREFIX: &str = "/api/";

const COOKIE: &str = "immich_access_token";

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    /// Credentials when a token is configured.
    TokenIfSet,
    /// Credentials always.
    Always,
}

fn need(path: &str) -> Need {
    match path {
        "/healthz" | "/" => Need::Nothing,
        p if p.starts_with(GALLERY_PREFIX) => Need::Always,
        _ => Need::TokenIfSet,
    }
}

/// The gallery permission an API key needs for this method.
fn permission(method: &Method) -> &'static str {
    if method == Method::GET || method == Method::HEAD {
        "job.read"
    } else {
        "job.create"
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = header(req, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn cookie(req: &ServiceRequest) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| {
            percent_encoding::percent_decode_str(value.trim_matches('"'))
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|v| !v.is_empty())
}

/// Lets the request through, or says why not.
pub async fn authorize(engine: &Engine, req: &ServiceRequest) -> Result<(), ApiError> {
    let need = need(req.path());
    if need == Need::Nothing {
        return Ok(());
    }
    let token = engine.config().api_token.as_ref();
    let bearer = bearer(req);
    if let (Some(token), Some(given)) = (token, bearer) {
        if same_secret(given.as_bytes(), token.expose().as_bytes()) {
            return Ok(());
        }
    }
    if need == Need::TokenIfSet && token.is_none() {
        return Ok(());
    }
    // The gallery's order: a session first, then an API key.
    let cookie = cookie(req);
    let session = header(req, "x-immich-user-token")
        .or_else(|| header(req, "x-immich-session-token"))
        .or(bearer)
        .or(cookie.as_deref());
    let credential = match (session, header(req, "x-api-key")) {
        (Some(token), _) => Credential::Session(token),
        (None, Some(key)) => Credential::ApiKey(key),
        (None, None) => return Err(ApiError::Unauthorized),
    };
    let principal = engine
        .gallery_principal(credential)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    check(&principal, permission(req.method()))
}

/// An admin, and for an API key the permission.
fn check(principal: &Principal, permission: &'static str) -> Result<(), ApiError> {
    if !principal.is_admin {
        return Err(ApiError::Forbidden(
            "only the gallery's admins may use storage migration".into(),
        ));
    }
    match &principal.permissions {
        Some(granted) if !granted.iter().any(|p| p == "all" || p == permission) => Err(
            ApiError::Forbidden(format!("missing required permission: {permission}")),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn routes_and_what_they_need() {
        assert_eq!(need("/healthz"), Need::Nothing);
        assert_eq!(need("/"), Need::Nothing);
        assert_eq!(need("/api/storage-migration/status"), Need::Always);
        assert_eq!(need("/storage-migration/status"), Need::TokenIfSet);
        assert_eq!(permission(&Method::GET), "job.read");
        assert_eq!(permission(&Method::POST), "job.create");
        assert_eq!(permission(&Method::DELETE), "job.create");
    }

    #[test]
    fn admins_with_the_right_permission_pass() {
        let key = |admin: bool, perms: &[&str]| Principal {
            is_admin: admin,
            permissions: Some(perms.iter().map(|p| p.to_string()).collect()),
        };
        assert!(check(&key(true, &["all"]), "job.create").is_ok());
        assert!(check(&key(true, &["job.read"]), "job.read").is_ok());
        assert!(check(&key(true, &["job.read"]), "job.create").is_err());
        assert!(check(&key(false, &["all"]), "job.read").is_err());
        let session = |admin| Principal {
            is_admin: admin,
            permissions: None,
        };
        assert!(check(&session(true), "job.create").is_ok());
        assert!(check(&session(false), "job.read").is_err());
    }
}
