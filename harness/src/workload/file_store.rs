//! File store (seed 002's real failure): a small record file that every op reads, parses,
//! extends by one record and rewrites in place, with no locking of its own. Without
//! exclusion a reader sees a half-written file, or a writer overwrites another's record.
//! The op ignores the database connection: only the strategy's exclusion protects it.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{OpEnv, OpError, Paths};
use crate::history::OpOutput;

const HEADER: &str = "turnstile-store v1 count=";
const END: &str = "end";

pub(crate) fn init(paths: &Paths) -> Result<(), OpError> {
    write(&paths.store, &[], None)?;
    Ok(())
}

/// Parses the store: a header with the record count, one record per line, an end line.
pub fn parse(text: &str) -> Result<Vec<i64>, String> {
    let mut lines = text.lines();
    let count: usize = lines
        .next()
        .and_then(|l| l.strip_prefix(HEADER))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad header in {} bytes", text.len()))?;
    // The count comes from the file, which a torn write can garble into any number: room
    // for no more records than the text can hold (each takes two bytes at least).
    let mut records = Vec::with_capacity(count.min(text.len() / 2));
    for _ in 0..count {
        let line = lines
            .next()
            .ok_or_else(|| format!("truncated after {} of {count} records", records.len()))?;
        records.push(
            line.parse()
                .map_err(|_| format!("garbled record {line:?} after {}", records.len()))?,
        );
    }
    match (lines.next(), lines.next()) {
        (Some(END), None) => Ok(records),
        (Some(END), Some(extra)) => Err(format!("trailing data after end: {extra:?}")),
        (other, _) => Err(format!("missing end line (found {other:?})")),
    }
}

/// Reads and parses the store.
pub fn read(path: &Path) -> Result<Vec<i64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("unreadable: {e}"))?;
    parse(&text)
}

fn write(path: &Path, records: &[i64], env: Option<&OpEnv>) -> std::io::Result<()> {
    let mut body = String::new();
    for r in records {
        body.push_str(&r.to_string());
        body.push('\n');
    }
    body.push_str(END);
    body.push('\n');
    // Truncate, then write header and body separately: the in-place rewrite whose torn
    // states a concurrent reader can see.
    let mut file = File::create(path)?;
    file.write_all(format!("{HEADER}{}\n", records.len()).as_bytes())?;
    if let Some(env) = env {
        env.pause();
    }
    file.write_all(body.as_bytes())
}

pub(crate) fn append(env: &OpEnv, record: i64) -> Result<OpOutput, OpError> {
    let text = std::fs::read_to_string(&env.paths.store)?;
    let mut records = parse(&text).map_err(OpError::Corrupt)?;
    records.push(record);
    write(&env.paths.store, &records, Some(env))?;
    Ok(OpOutput::Appended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_torn_files() {
        assert_eq!(
            parse("turnstile-store v1 count=2\n5\n7\nend\n"),
            Ok(vec![5, 7])
        );
        assert!(parse("").is_err());
        assert!(parse("turnstile-store v1 count=2\n5\n").is_err());
        assert!(parse("turnstile-store v1 count=1\n5\nend\n9\nend\n").is_err());
    }

    #[test]
    fn a_garbled_count_is_an_error_not_an_allocation() {
        // Two writers' headers run together: a count of trillions for a file of bytes.
        let torn = "turnstile-store v1 count=8309237645312\n5\nend\n";
        assert!(parse(torn).is_err());
        assert!(parse(&format!("{HEADER}{}\nend\n", usize::MAX)).is_err());
    }
}
