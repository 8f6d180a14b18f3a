//! CPU placement of benchmark threads.

use crate::error::{io_error, CliResult};
use crate::sys;

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    sys::allowed_cpus()
}

/// Pin the calling thread to `cpu`.
pub(crate) fn pin(cpu: usize) -> CliResult<()> {
    sys::pin(cpu).map_err(|e| io_error(&format!("sched_setaffinity(CPU {cpu})"), e))
}
