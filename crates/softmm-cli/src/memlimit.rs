//! `--mem-limit` and `--swap-file` of `run` and `replay`: a frame limit for
//! the machine and where the pages beyond it go.

use crate::error::{CliError, CliResult, Context};
use crate::units::bytes;
use softmm::reclaim::device::FileSwap;
use softmm::reclaim::AUTO_SWAP_BYTES;
use softmm::SwapConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// The memory options as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct MemLimit {
    /// `Config::mem_limit`, in bytes.
    pub mem_limit: Option<u64>,
    /// A swap file to create instead of the default one.
    pub swap_file: Option<PathBuf>,
}

impl MemLimit {
    /// The swap configuration for a workload that may swap out up to
    /// `need` bytes, and a line saying what it is. Without a limit there is
    /// nothing to swap to (the library makes no file then either).
    ///
    /// The swap file is sparse, so sizing it generously costs no disk until
    /// pages are written; it is made at least as large as the default file
    /// so a workload larger than the estimate still has room.
    pub fn swap(&self, need: u64) -> CliResult<(SwapConfig, String)> {
        let Some(limit) = self.mem_limit else {
            return Ok((SwapConfig::Auto, "none (no memory limit)".into()));
        };
        // What does not fit under the limit is written to the file: refuse
        // up front rather than fill the disk and fail half-way.
        if let Some(p) = self.swap_file.as_ref().filter(|p| p.symlink_metadata().is_ok()) {
            // Never reused (it may be someone's data): say so before any work.
            return Err(CliError(format!("swap file {} exists; remove it or choose another", p.display())));
        }
        let dir = match &self.swap_file {
            Some(p) => {
                p.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from)
            }
            None => std::env::temp_dir(),
        };
        let spill = need.saturating_sub(limit);
        if let Some(free) = crate::units::free_space(&dir) {
            if spill > free {
                return Err(CliError(format!(
                    "about {} would be swapped out but only {} is free in {}; use a smaller workload, a higher \
                     --mem-limit or a --swap-file elsewhere",
                    bytes(spill),
                    bytes(free),
                    dir.display()
                )));
            }
        }
        let bytes_needed = need.max(AUTO_SWAP_BYTES);
        match &self.swap_file {
            Some(path) => Ok((
                SwapConfig::File { path: path.clone(), bytes: bytes_needed },
                format!("file {} ({}, sparse)", path.display(), bytes(bytes_needed)),
            )),
            None if need <= AUTO_SWAP_BYTES => Ok((
                SwapConfig::Auto,
                format!("{} sparse file in {}", bytes(AUTO_SWAP_BYTES), std::env::temp_dir().display()),
            )),
            // The default file would fill up before this workload is
            // paged out; a bigger one of the same kind avoids a spurious ENOMEM.
            None => {
                let dev = FileSwap::create(None, bytes_needed)
                    .context(|| format!("creating a {} swap file in the temp directory", bytes(bytes_needed)))?;
                let what = format!("{}, sparse", softmm::reclaim::device::SwapDevice::describe(&dev));
                Ok((SwapConfig::Device(Arc::new(dev)), what))
            }
        }
    }
}
