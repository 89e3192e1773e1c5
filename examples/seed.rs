//! Seeds a demo gallery for `make demo`: a fresh database with the gallery's
//! schema, a small library of real files under a media folder, and an empty
//! bucket on the S3 server.
//!
//! Usage: seed <database-url> <media-dir> <outside-dir> <s3-endpoint> <bucket>
//! (S3 keys from TEST_S3_ACCESS_KEY / TEST_S3_SECRET_KEY).

#[path = "../tests/it/seed.rs"]
#[allow(dead_code)]
mod seed;

use aws_sdk_s3::config::{Credentials, Region};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db_url, media, outside, endpoint, bucket] = args.as_slice() else {
        return Err(
            "usage: seed <database-url> <media-dir> <outside-dir> <s3-endpoint> <bucket>".into(),
        );
    };
    let (client, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    seed::create_schema(&client, true).await;
    let spec = seed::SeedSpec {
        users: 3,
        assets_per_user: 40,
        max_size: 200_000,
    };
    let seeded = seed::seed(
        &client,
        &PathBuf::from(media),
        &PathBuf::from(outside),
        &spec,
    )
    .await;

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                std::env::var("TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "nmtest".into()),
                std::env::var("TEST_S3_SECRET_KEY").unwrap_or_else(|_| "nmtestsecret".into()),
                None,
                None,
                "demo",
            ))
            .build(),
    );
    if s3.head_bucket().bucket(bucket).send().await.is_err() {
        s3.create_bucket().bucket(bucket).send().await?;
    }
    let bytes: usize = seeded.files.iter().map(|f| f.content.len()).sum();
    println!(
        "Seeded {} files ({:.1} MB) for {} users, plus {} external-library files and {} file outside the media location.",
        seeded.files.len(),
        bytes as f64 / 1e6,
        seeded.users.len(),
        seeded.external.len(),
        seeded.outside.len()
    );
    Ok(())
}
