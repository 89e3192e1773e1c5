//! The gallery's own credentials: API keys (`api_key.key`) and login
//! sessions (`session.token`), both stored as the SHA-256 of what the
//! client sends. Looked up the way the gallery does it: a deleted user
//! has no credentials, an expired session is no session.
//!
//! Only digests are compared here, in SQL; the secret itself never leaves
//! the request that carried it.

use super::gallery::readable;
use super::{timed, DbConn, DbError};
use diesel::sql_types::{Array, Bool, Bytea, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

/// What the gallery sent to identify a caller.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// `x-api-key`.
    ApiKey(&'a str),
    /// A session token (`Authorization: Bearer`, the `immich_access_token`
    /// cookie, or the gallery's token headers).
    Session(&'a str),
}

/// Who the credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub is_admin: bool,
    /// An API key's permissions; `None` for a session, which carries all
    /// of its user's rights.
    pub permissions: Option<Vec<String>>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Bool)]
    is_admin: bool,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    permissions: Option<Vec<String>>,
}

fn sha256(secret: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).to_vec()
}

/// The gallery's tables for this kind of credential are there to ask.
pub async fn available(conn: &mut DbConn, credential: Credential<'_>) -> Result<bool, DbError> {
    let table = match credential {
        Credential::ApiKey(_) => "api_key",
        Credential::Session(_) => "session",
    };
    Ok(readable(conn, table).await? && readable(conn, "\"user\"").await?)
}

/// The credential's owner, when the credential is valid now.
pub async fn lookup(
    conn: &mut DbConn,
    credential: Credential<'_>,
) -> Result<Option<Principal>, DbError> {
    let (sql, secret) = match credential {
        Credential::ApiKey(key) => (
            r#"SELECT u."isAdmin" AS is_admin, k."permissions"::text[] AS permissions
               FROM api_key k JOIN "user" u ON u.id = k."userId" AND u."deletedAt" IS NULL
               WHERE k."key" = $1 LIMIT 1"#,
            key,
        ),
        Credential::Session(token) => (
            r#"SELECT u."isAdmin" AS is_admin, NULL::text[] AS permissions
               FROM session s JOIN "user" u ON u.id = s."userId" AND u."deletedAt" IS NULL
               WHERE s."token" = $1 AND (s."expiresAt" IS NULL OR s."expiresAt" > now())
               LIMIT 1"#,
            token,
        ),
    };
    let rows: Vec<Row> = timed(
        diesel::sql_query(sql)
            .bind::<Bytea, _>(sha256(secret))
            .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next().map(|r| Principal {
        is_admin: r.is_admin,
        permissions: match credential {
            Credential::ApiKey(_) => Some(r.permissions.unwrap_or_default()),
            Credential::Session(_) => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_the_gallerys() {
        // echo -n secret | sha256sum
        assert_eq!(
            hex::encode(super::sha256("secret")),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
