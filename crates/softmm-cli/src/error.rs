//! The CLI's error: a message for the user. Library errors, host errors and
//! failed checks all end up here, with context saying what was being done.

use std::fmt;

/// An error to print before exiting with a non-zero status.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError(s)
    }
}

/// Result of CLI operations.
pub type CliResult<T> = Result<T, CliError>;

/// Attach "while doing X" to any displayable error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T> {
        self.map_err(|e| CliError(format!("{}: {e}", what())))
    }
}

/// A failed verification.
pub fn check(ok: bool, msg: impl FnOnce() -> String) -> CliResult<()> {
    if ok {
        Ok(())
    } else {
        Err(CliError(format!("verification failed: {}", msg())))
    }
}

/// The last OS error, as "what: message (errno N)".
pub fn os_error(what: &str) -> CliError {
    let e = std::io::Error::last_os_error();
    CliError(format!("{what}: {e}"))
}
