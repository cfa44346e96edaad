//! SQLite's own consistency check, run after every run.

use rusqlite::Connection;

use super::CheckResult;

/// Runs `PRAGMA integrity_check` on `conn`.
pub fn check(conn: &Connection) -> CheckResult {
    const NAME: &str = "integrity";
    let rows: Result<Vec<String>, _> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) if rows == ["ok"] => CheckResult::pass(NAME, "PRAGMA integrity_check: ok"),
        Ok(rows) => CheckResult::violation(NAME, "PRAGMA integrity_check failed", rows),
        Err(e) => CheckResult::violation(NAME, format!("PRAGMA integrity_check: {e}"), vec![]),
    }
}
