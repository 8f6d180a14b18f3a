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
pub const SIGFPE: i32 = 8;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGPIPE: i32 = 13;
pub const SIGALRM: i32 = 14;
pub const SIGTERM: i32 = 15;
pub const SIGCHLD: i32 = 17;
pub const SIGCONT: i32 = 18;
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
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        SIGFPE => "Floating point exception",
        SIGUSR1 => "User defined signal 1",
        SIGUSR2 => "User defined signal 2",
        SIGPIPE => "Broken pipe",
        SIGALRM => "Alarm clock",
        SIGTERM => "Terminated",
        _ => "Terminated by a signal",
    }
}

/// What a signal does when no handler catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    /// Terminate with a core dump (no core is written here, as with a
    /// core size limit of 0).
    Core,
    Ignore,
    /// Stop the process (job control is not emulated: treated as ignored).
    Stop,
}

/// Linux's default action for `sig`.
pub fn default_action(sig: i32) -> DefaultAction {
    match sig {
        SIGCHLD | SIGCONT | 23 | 28 => DefaultAction::Ignore,
        SIGSTOP | 20 | 21 | 22 => DefaultAction::Stop,
        3 | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | 24 | 25 | 31 => DefaultAction::Core,
        _ => DefaultAction::Terminate,
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
