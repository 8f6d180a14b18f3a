//! Signal numbers and the recorded signal state of a process. Handlers
//! are recorded, not yet delivered: a synchronous fault or a signal sent to
//! oneself ends the process as the default action would (riscv64 signal
//! frames come later).

pub const SIGILL: i32 = 4;
pub const SIGTRAP: i32 = 5;
pub const SIGABRT: i32 = 6;
pub const SIGBUS: i32 = 7;
pub const SIGKILL: i32 = 9;
pub const SIGSEGV: i32 = 11;
pub const SIGSTOP: i32 = 19;

/// Number of signals (1..=64).
pub const NSIG: usize = 64;

/// `SIG_IGN` as a handler value.
pub const SIG_IGN: u64 = 1;

/// What a shell prints for a process killed by `sig` (bash's words).
pub fn describe(sig: i32) -> &'static str {
    match sig {
        SIGILL => "Illegal instruction",
        SIGTRAP => "Trace/breakpoint trap",
        SIGABRT => "Aborted",
        SIGBUS => "Bus error",
        SIGKILL => "Killed",
        SIGSEGV => "Segmentation fault",
        _ => "Terminated by a signal",
    }
}

/// One `struct sigaction` as the riscv64 kernel sees it (no restorer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub mask: u64,
}

/// The recorded actions and blocked mask.
#[derive(Clone, Debug)]
pub struct SigState {
    pub actions: [SigAction; NSIG],
    pub blocked: u64,
}

impl Default for SigState {
    fn default() -> Self {
        SigState { actions: [SigAction::default(); NSIG], blocked: 0 }
    }
}

impl SigState {
    /// The action for `sig` (1..=64).
    pub fn action(&self, sig: i32) -> Option<&SigAction> {
        usize::try_from(sig).ok().and_then(|s| s.checked_sub(1)).and_then(|i| self.actions.get(i))
    }
}
