//! Versioned records over any store: what `optimistic` (and a lock around the same
//! records) runs on.

use turnstile::optimistic::{VersionStore, Versioned, Versions};
use turnstile::spec::Registry;

use super::{Backend, Tables, WorkloadData};
use crate::check::CheckResult;
use crate::run::{RunError, WorkerSpec, open_error};
use crate::workload::OpError;

/// The records of a [`Versioned`] handle, in the run's `versions` table of `B`'s data.
///
/// Each workload keeps its values in records named as its keys (`c0`, `a1`, `n2`, `k3`),
/// an `i64` little-endian each (a notification's flag is one byte; a deleted `kv` record
/// is an empty value). A write applies at commit, by compare-and-set: lock strategies
/// over these records therefore always run in their transaction.
pub struct VersionedData<B: Backend> {
    inner: B,
    versions: Versions<B::Connect>,
}

impl<B: Backend + std::fmt::Debug> std::fmt::Debug for VersionedData<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedData")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Backend<Connect: VersionStore>> Backend for VersionedData<B> {
    type Connect = Versions<B::Connect>;

    fn open(spec: &WorkerSpec) -> Result<Self, RunError> {
        let inner = B::open(spec)?;
        let versions = Versions::new(inner.connect().clone())
            .table(&inner.tables().versions)
            .map_err(open_error)?;
        Ok(VersionedData { inner, versions })
    }

    /// `Registry::builtin_versioned()`: `optimistic`, and `mutex` over the same records;
    /// and the negative control `racy-optimistic` ([`crate::controls::versioned_registry`]).
    fn registry() -> Registry<Self::Connect> {
        crate::controls::versioned_registry()
    }

    fn connect(&self) -> &Self::Connect {
        &self.versions
    }

    fn tables(&self) -> &Tables {
        self.inner.tables()
    }

    /// No: a write through the handle only applies at commit.
    fn autocommit(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("versioned records in {}", self.inner.describe())
    }

    fn integrity(&self) -> Option<CheckResult> {
        self.inner.integrity()
    }

    fn drop_tables(&self) -> Result<(), OpError> {
        self.inner.drop_tables()
    }
}

impl<S: VersionStore> WorkloadData for Versioned<S> {
    fn probe(&mut self) -> Result<(), OpError> {
        self.read("probe")?;
        Ok(())
    }
}
