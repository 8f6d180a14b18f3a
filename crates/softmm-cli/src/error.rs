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

/// An OS error, as "what: message (errno N)".
pub fn io_error(what: &str, e: std::io::Error) -> CliError {
    CliError(format!("{what}: {e}"))
}

/// Input as error messages echo it: its first 40 characters (then `...`),
/// control characters escaped (`\0`, `\x1b`), so that a message stays one
/// short line and writes nothing raw to the terminal, whatever was read.
pub fn shown(input: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out = String::new();
    for (i, c) in input.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && u32::from(c) < 0x100 => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn shown_bounds_and_escapes() {
        assert_eq!(shown("abc"), "abc");
        assert_eq!(shown(&"x".repeat(40)), "x".repeat(40));
        assert_eq!(shown(&"x".repeat(41)), format!("{}...", "x".repeat(40)));
        assert_eq!(shown(&"\u{e9}".repeat(50)), format!("{}...", "\u{e9}".repeat(40)));
        assert_eq!(shown("a\0b\x1b[\t\u{7f}\u{85}"), "a\\0b\\x1b[\\t\\x7f\\x85");
    }
}
