//! The JSON bodies of the API that are not engine types themselves: what
//! the handlers send, and what the CLI reads back (the same types).

use crate::db::batches::{BatchRow, FailureRow};
use crate::dumps::DumpInfo;
use crate::model::{Backend, Direction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error: a stable code and a sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable (`invalid_direction`, `migration_running`, …).
    pub error: String,
    pub message: String,
}

/// An error on the gallery's contract (`/api/…`), shaped as the gallery
/// shapes its own.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GalleryErrorBody {
    pub message: String,
    /// The status's reason phrase (`Bad Request`).
    pub error: String,
    pub status_code: u16,
    /// Our stable code, as in the native API's `error`.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Files per kind (the `fileTypes` keys) plus `total`.
pub type PerKindCounts = BTreeMap<String, i64>;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EstimateBody {
    pub direction: Direction,
    /// Files that would move, per kind and in total.
    pub file_counts: PerKindCounts,
    pub estimated_size_bytes: i64,
    pub estimated_size_bytes_by_kind: PerKindCounts,
    /// Per kind, where the size comes from: `exact` (recorded sizes),
    /// `sampled` (a sample of files statted and scaled up) or `mixed`.
    pub size_source: BTreeMap<String, String>,
    pub counts_are_exact: bool,
    /// Rows that cannot be moved (outside the media location, other bucket,
    /// an external library's files …).
    pub unmovable: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub batch_id: Uuid,
    /// True when an interrupted batch was continued under its own id.
    pub resumed: bool,
    /// The dump taken first, with `dumpDatabase`.
    pub dump_name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cancelling {
    /// Null when the start was still choosing its batch.
    pub batch_id: Option<Uuid>,
    pub cancelling: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchPage {
    pub batches: Vec<BatchRow>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePage {
    pub batch_id: Uuid,
    pub items: Vec<FailureRow>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DumpList {
    pub backend: Backend,
    /// Newest first.
    pub dumps: Vec<DumpInfo>,
}

/// A body with nothing in it: `{}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DumpDeleted {
    pub deleted: String,
}

impl From<&crate::engine::estimate::Estimate> for EstimateBody {
    fn from(e: &crate::engine::estimate::Estimate) -> EstimateBody {
        EstimateBody {
            direction: e.direction,
            file_counts: e.counts.to_map(),
            estimated_size_bytes: e.sizes.total(),
            estimated_size_bytes_by_kind: e.sizes.to_map(),
            size_source: e
                .size_sources
                .iter()
                .map(|(k, s)| (k.api_key().to_string(), s.to_string()))
                .collect(),
            counts_are_exact: true,
            unmovable: e.unmovable,
        }
    }
}

/// The dry run's JSON (`GET /storage-migration/plan`): written as it goes,
/// one file per line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanBody {
    pub direction: crate::model::Direction,
    pub files: Vec<crate::engine::plan::PlanRow>,
    pub totals: crate::engine::plan::PlanTotals,
    /// Why the plan stopped short; null when it is whole.
    pub error: Option<String>,
}

/// What `GET /storage-migration/plan` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanFormat {
    Json,
    Csv,
}
