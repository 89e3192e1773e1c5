//! Runs the real `pg_dump` and gzips its output while it streams.
//!
//! pg_dump and the compressor run on a blocking thread; compressed chunks
//! reach the async side through a small bounded channel, so memory stays
//! flat whatever the size of the database, and a slow or failing target
//! stops pg_dump instead of buffering its output.
//!
//! The password is handed over in `PGPASSWORD`, never on the command line,
//! where any user of the machine could read it.

use super::DumpError;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio::sync::mpsc;

/// Size of the compressed chunks sent to the target.
const CHUNK: usize = 1024 * 1024;
/// Chunks waiting for the target at most.
const CHANNEL_DEPTH: usize = 4;
/// pg_dump's error output kept for the error message.
const STDERR_LIMIT: usize = 8 * 1024;

/// Which pg_dump to run: `NOODLE_MIGRATE_PG_DUMP` when set; else the one
/// Debian installs for the server's major version; else the one on PATH.
/// pg_dump refuses servers newer than itself, so the match matters.
pub async fn locate(configured: Option<&Path>, server_major: u32) -> PathBuf {
    if let Some(path) = configured {
        return path.to_path_buf();
    }
    let versioned = PathBuf::from(format!("/usr/lib/postgresql/{server_major}/bin/pg_dump"));
    if tokio::fs::metadata(&versioned)
        .await
        .is_ok_and(|m| m.is_file())
    {
        return versioned;
    }
    PathBuf::from("pg_dump")
}

/// The connection, split so that the password travels in the environment.
pub struct Connection {
    /// The database URL without its password.
    pub url: String,
    pub password: Option<String>,
}

impl Connection {
    pub fn from_url(database_url: &str) -> Result<Connection, DumpError> {
        let mut url = url::Url::parse(database_url)
            .map_err(|e| DumpError::Setup(format!("the database URL cannot be parsed: {e}")))?;
        let password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        url.set_password(None)
            .map_err(|_| DumpError::Setup("the database URL has no host".into()))?;
        Ok(Connection {
            url: url.to_string(),
            password,
        })
    }
}

/// Starts pg_dump; the returned receiver yields gzip chunks, then one
/// final `Ok(None)` once pg_dump has exited cleanly, or an error.
pub fn spawn(
    program: &Path,
    connection: Connection,
) -> mpsc::Receiver<Result<Option<Vec<u8>>, DumpError>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let program = program.to_path_buf();
    std::thread::spawn(move || {
        let result = run(&program, &connection, &tx);
        let last = match result {
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        };
        // The receiver may be gone (the target failed): nothing to tell.
        let _ = tx.blocking_send(last);
    });
    rx
}

fn run(
    program: &Path,
    connection: &Connection,
    tx: &mpsc::Sender<Result<Option<Vec<u8>>, DumpError>>,
) -> Result<(), DumpError> {
    let mut command = Command::new(program);
    command
        .arg("--clean")
        .arg("--if-exists")
        .arg("--no-password")
        .arg(format!("--dbname={}", connection.url))
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = &connection.password {
        command.env("PGPASSWORD", password);
    }
    let mut child = command.spawn().map_err(|e| {
        DumpError::Setup(format!(
            "cannot run {}: {e} (install postgresql-client or set NOODLE_MIGRATE_PG_DUMP)",
            program.display()
        ))
    })?;
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Keep the end: the reason pg_dump stopped comes last.
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_LIMIT {
                    kept.drain(..kept.len() - STDERR_LIMIT);
                }
            }
            String::from_utf8_lossy(&kept).trim().to_string()
        })
    });
    let streamed = match child.stdout.take() {
        Some(stdout) => compress(stdout, tx),
        None => Err(DumpError::Setup("pg_dump has no output pipe".into())),
    };
    if streamed.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| DumpError::Setup(format!("waiting for pg_dump: {e}")))?;
    let message = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    streamed?;
    if !status.success() {
        let message = if message.is_empty() {
            "no error output".to_string()
        } else {
            message
        };
        return Err(DumpError::PgDump(format!("{status}: {message}")));
    }
    Ok(())
}

fn compress(
    mut stdout: impl Read,
    tx: &mpsc::Sender<Result<Option<Vec<u8>>, DumpError>>,
) -> Result<(), DumpError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(CHUNK * 2), Compression::default());
    let mut buf = vec![0u8; 256 * 1024];
    let send = |chunk: Vec<u8>| {
        tx.blocking_send(Ok(Some(chunk)))
            .map_err(|_| DumpError::Cancelled)
    };
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| DumpError::PgDump(format!("reading pg_dump's output: {e}")))?;
        if n == 0 {
            break;
        }
        encoder
            .write_all(&buf[..n])
            .map_err(|e| DumpError::PgDump(format!("compressing: {e}")))?;
        if encoder.get_ref().len() >= CHUNK {
            let chunk = std::mem::replace(encoder.get_mut(), Vec::with_capacity(CHUNK * 2));
            send(chunk)?;
        }
    }
    let rest = encoder
        .finish()
        .map_err(|e| DumpError::PgDump(format!("compressing: {e}")))?;
    if !rest.is_empty() {
        send(rest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        let c = Connection::from_url("postgres://gal:p%40ss@db:5432/immich?sslmode=disable")
            .expect("parses");
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert!(!c.url.contains("p%40ss"));
        assert!(c.url.contains("gal@db:5432/immich"));
        assert!(c.url.contains("sslmode=disable"));
    }

    #[tokio::test]
    async fn a_configured_program_wins() {
        assert_eq!(
            locate(Some(Path::new("/opt/pg/bin/pg_dump")), 15).await,
            PathBuf::from("/opt/pg/bin/pg_dump")
        );
    }
}
