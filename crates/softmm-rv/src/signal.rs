//! Signal numbers, actions, default actions and `siginfo_t` as riscv64
//! Linux defines them (delivery is in [`crate::deliver`], the frame in
//! [`crate::sigframe`]).

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

/// `SIG_DFL` as a handler value.
pub const SIG_DFL: u64 = 0;
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

pub const SA_SIGINFO: u64 = 4;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `si_code` values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRALN: i32 = 1;
pub const BUS_ADRERR: i32 = 2;
pub const ILL_ILLOPC: i32 = 1;
pub const TRAP_BRKPT: i32 = 1;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const CLD_DUMPED: i32 = 3;

/// The bit of `sig` in a signal mask.
pub fn bit(sig: i32) -> u64 {
    1u64 << ((sig - 1) & 63)
}

/// What cannot be blocked.
pub const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

/// The union part of a `siginfo_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// kill/tgkill: the sender.
    Kill { pid: u32, uid: u32 },
    /// A fault: the address.
    Fault { addr: u64 },
    /// A child's change: pid, uid, status.
    Child { pid: u32, uid: u32, status: i32 },
}

/// One signal with its `siginfo_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub code: i32,
    pub payload: Payload,
}

impl SigInfo {
    /// riscv64's 128-byte `siginfo_t` (the union at offset 16).
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        match self.payload {
            Payload::Kill { pid, uid } => {
                b[16..20].copy_from_slice(&pid.to_le_bytes());
                b[20..24].copy_from_slice(&uid.to_le_bytes());
            }
            Payload::Fault { addr } => b[16..24].copy_from_slice(&addr.to_le_bytes()),
            Payload::Child { pid, uid, status } => {
                b[16..20].copy_from_slice(&pid.to_le_bytes());
                b[20..24].copy_from_slice(&uid.to_le_bytes());
                b[24..28].copy_from_slice(&status.to_le_bytes());
            }
        }
        b
    }
}
