//! The trace format: parsing, running on softmm and on Linux, diffing, and
//! generating random traces.
pub mod diff;
pub mod exec_softmm;
pub mod gen;
pub mod guarded;
pub mod linux;
pub mod linux_worker;
pub mod maps;
pub mod parse;
pub mod scratch;
pub mod snapcheck;
