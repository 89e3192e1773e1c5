//! Named crash points, for the crash tests: built with the `failpoints`
//! feature, `FAILPOINTS="after-commit=3*off->return"` makes the process
//! abort (as abruptly as a SIGKILL or a power cut) the fourth time it
//! passes `after-commit`. Without the feature they compile to nothing.
//!
//! - `after-copy`: the copy is made and verified, the row not yet updated;
//! - `after-commit`: the row is updated, the source not yet deleted;
//! - `mid-multipart`: one part of a multipart upload is sent;
//! - `mid-download`: a download to disk has received a chunk.

/// Aborts the process here when `FAILPOINTS` says so.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub fn crash_point(name: &str) {
    fail::fail_point!(name, |_| {
        tracing::warn!(point = name, "Crash point reached: aborting");
        std::process::abort()
    });
}

/// Reads `FAILPOINTS`; keep the guard for the life of the process.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
