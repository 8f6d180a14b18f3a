//! `softmm exec PROGRAM [ARGS...]`: run a static riscv64 Linux program on
//! the RISC-V machine of `softmm-rv`, with the host's streams and
//! environment; the command's status is the program's (128 + signal when
//! a fault ended it).

use crate::error::CliResult;
use std::ffi::OsString;
use std::path::PathBuf;

/// Options of `softmm exec`.
pub struct ExecOpts {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Print the system calls answered ENOSYS at exit (also on with
    /// `SOFTMM_SYSCALL_REPORT=1`).
    pub syscall_report: bool,
}

/// Run the program; its exit status.
pub fn exec(o: &ExecOpts) -> CliResult<u8> {
    let mut opts = softmm_rv::ExecOptions::new(&o.program);
    opts.argv.extend(o.args.iter().map(|a| a.as_encoded_bytes().to_vec()));
    opts.envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_encoded_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            kv
        })
        .collect();
    opts.report_syscalls = o.syscall_report || std::env::var_os("SOFTMM_SYSCALL_REPORT").is_some_and(|v| v != "0");
    let exit = softmm_rv::exec(&o.program, opts).map_err(|e| crate::error::CliError(e.to_string()))?;
    Ok((exit.status & 0xff) as u8)
}
