//! The plan's response body, written as its rows arrive: JSON with one
//! file per line (then the totals), or CSV. A plan that stops short ends
//! JSON with its `error` and cuts CSV off (the client sees an incomplete
//! response, never a shorter list that looks whole).

use crate::engine::plan::{self, PlanRow, PlanTotals};
use crate::engine::EngineError;
use crate::model::Direction;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use tokio::sync::mpsc::Receiver;

/// Rows written per chunk of the body at most.
const ROWS_PER_CHUNK: usize = 256;

struct Writer {
    rows: Receiver<Result<PlanRow, EngineError>>,
    csv: bool,
    totals: PlanTotals,
    started: bool,
    first: bool,
    done: bool,
}

pub fn stream(
    rows: Receiver<Result<PlanRow, EngineError>>,
    direction: Direction,
    csv: bool,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let writer = Writer {
        rows,
        csv,
        totals: PlanTotals::default(),
        started: false,
        first: true,
        done: false,
    };
    stream::unfold(writer, move |mut w| async move {
        if w.done {
            return None;
        }
        if !w.started {
            w.started = true;
            let head = if w.csv {
                plan::CSV_HEADER.to_string()
            } else {
                format!("{{\"direction\":\"{}\",\"files\":[", direction.as_str())
            };
            return Some((Ok(Bytes::from(head)), w));
        }
        let mut chunk = String::new();
        let mut end: Option<Option<EngineError>> = None;
        // Wait for one row, then take what else is ready.
        match w.rows.recv().await {
            None => end = Some(None),
            Some(first) => {
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(item) = next.take() {
                    match item {
                        Ok(row) => {
                            w.totals.add(&row);
                            w.write(&mut chunk, &row);
                        }
                        Err(e) => {
                            end = Some(Some(e));
                            break;
                        }
                    }
                    taken += 1;
                    if taken < ROWS_PER_CHUNK {
                        next = w.rows.try_recv().ok();
                    }
                }
            }
        }
        if let Some(error) = end {
            w.done = true;
            if w.csv {
                if let Some(e) = error {
                    tracing::warn!(error = %e, "The plan stopped short");
                    return Some((
                        Err(actix_web::error::ErrorInternalServerError(e.to_string())),
                        w,
                    ));
                }
            } else {
                let error = error.map(|e| {
                    tracing::warn!(error = %e, "The plan stopped short");
                    e.to_string()
                });
                chunk.push_str(&format!(
                    "\n],\n\"totals\":{},\"error\":{}}}\n",
                    serde_json::to_string(&w.totals).unwrap_or_else(|_| "null".into()),
                    serde_json::to_string(&error).unwrap_or_else(|_| "null".into())
                ));
            }
        }
        Some((Ok(Bytes::from(chunk)), w))
    })
}

impl Writer {
    fn write(&mut self, out: &mut String, row: &PlanRow) {
        if self.csv {
            out.push_str(&plan::csv_line(row));
            return;
        }
        out.push_str(if self.first { "\n" } else { ",\n" });
        self.first = false;
        out.push_str(&serde_json::to_string(row).unwrap_or_else(|_| "null".into()));
    }
}
