//! The Redis lock over TLS (`rediss://`, feature `redis-tls`) through the harness, against a
//! private TLS-only `redis-server` per test whose certificates are made at run time: the
//! conformance workloads in threads for `rediss://…` and `queue+rediss://…`, and
//! `turnstile compare --redis rediss://…` with its round-trip floor. The plain-TCP suite
//! (processes, kills) is `conformance_redis.rs`; TLS changes the transport only.
#![cfg(feature = "redis-tls")]

use std::ops::Deref;
use std::process::Command;

#[path = "../../strategies/tests/support/redis_server.rs"]
mod redis_server;
#[path = "../../strategies/tests/support/test_pki.rs"]
mod test_pki;

use redis_server::RedisServer;
use test_pki::TestPki;
use turnstile_harness::conformance::{threads, with_query};
use turnstile_harness::{DataSpec, Workload};

/// A TLS server, its certificates and the `rediss://…?tls_ca=…&ttl_ms=500` URL; derefs to
/// the URL, and stops the server and removes the files when dropped.
struct TlsRedis {
    server: RedisServer,
    _pki: TestPki,
    url: String,
}

impl Deref for TlsRedis {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

fn tls_redis() -> TlsRedis {
    let pki = TestPki::new();
    let server = RedisServer::start_tls(pki.server(false), None);
    TlsRedis {
        url: with_query(&server.url(), "ttl_ms=500"),
        server,
        _pki: pki,
    }
}

#[test]
fn rediss_passes_every_workload_in_threads() {
    let redis = tls_redis();
    assert!(redis.starts_with("rediss://"), "{}", &*redis);
    for workload in [
        Workload::Counter,
        Workload::Bank,
        Workload::NotifyOnce,
        Workload::Kv,
        Workload::FileStore,
    ] {
        threads(&redis, &DataSpec::Sqlite, workload);
    }
}

#[test]
fn queue_rediss_passes_in_threads() {
    let redis = tls_redis();
    for workload in [Workload::Counter, Workload::Bank] {
        threads(&format!("queue+{}", &*redis), &DataSpec::Sqlite, workload);
    }
}

#[test]
fn compare_measures_rediss_and_its_round_trip_floor() {
    let redis = tls_redis();
    let url = redis.server.url();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["compare", "--quick", "--ops", "200", "--threads", "1,4"])
        .arg("--strategies")
        .arg(format!("{url},queue+{url}"))
        .arg("--redis")
        .arg(&url)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 strategies × 2 thread counts: {report}");
    for r in results {
        assert_eq!(r["safe"], true, "{r}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    let floors = report["floors"].as_array().unwrap();
    let redis_floor = floors
        .iter()
        .find(|f| f["kind"] == "redis_two_round_trips")
        .unwrap_or_else(|| panic!("no Redis floor in {floors:?}; stderr: {stderr}"));
    assert!(
        redis_floor["p50_us"].as_f64().unwrap() > 0.0,
        "{redis_floor}"
    );
}
