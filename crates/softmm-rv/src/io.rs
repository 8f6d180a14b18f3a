//! The standard streams a guest process starts with: the host's own, or
//! in-memory ones (what tests and embedders capture), and how `fstat`
//! describes each in riscv64's `struct stat`.

use std::io::{IsTerminal, Read, Write};
use std::sync::{Arc, Mutex};

/// Where a guest's fd 1 or 2 goes.
#[derive(Clone, Debug)]
pub enum Output {
    /// The host's stdout.
    HostStdout,
    /// The host's stderr.
    HostStderr,
    /// An in-memory buffer (shown to `fstat` as a pipe).
    Capture(Arc<Mutex<Vec<u8>>>),
}

/// Where a guest's fd 0 reads from.
#[derive(Clone, Debug)]
pub enum Input {
    /// The host's stdin.
    Host,
    /// These bytes, then end of file (shown to `fstat` as a pipe).
    Bytes(Arc<Vec<u8>>, usize),
}

const S_IFIFO: u32 = 0o010000;

impl Output {
    /// A fresh capture buffer and the output writing to it.
    pub fn capture() -> (Output, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (Output::Capture(buf.clone()), buf)
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Output::HostStdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(data)?;
                o.flush()
            }
            Output::HostStderr => std::io::stderr().lock().write_all(data),
            Output::Capture(b) => {
                b.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
                Ok(())
            }
        }
    }

    pub fn is_terminal(&self) -> bool {
        match self {
            Output::HostStdout => std::io::stdout().is_terminal(),
            Output::HostStderr => std::io::stderr().is_terminal(),
            Output::Capture(_) => false,
        }
    }

    /// The riscv64 `struct stat` of this stream.
    pub fn stat(&self) -> [u8; 128] {
        match self {
            Output::HostStdout => host_stat(std::io::stdout()),
            Output::HostStderr => host_stat(std::io::stderr()),
            Output::Capture(_) => pipe_stat(),
        }
    }
}

impl Input {
    pub fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Host => std::io::stdin().lock().read(out),
            Input::Bytes(b, pos) => {
                let rest = b.get(*pos..).unwrap_or(&[]);
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                Ok(n)
            }
        }
    }

    /// Give back the last `n` bytes read (an in-memory input only).
    pub fn unread(&mut self, n: usize) {
        if let Input::Bytes(_, pos) = self {
            *pos = pos.saturating_sub(n);
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Input::Host) && std::io::stdin().is_terminal()
    }

    pub fn stat(&self) -> [u8; 128] {
        match self {
            Input::Host => host_stat(std::io::stdin()),
            Input::Bytes(..) => pipe_stat(),
        }
    }
}

/// Fields of riscv64's (asm-generic) `struct stat`, 128 bytes.
struct Stat {
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: i64,
    blksize: i32,
    blocks: i64,
    times: [(i64, u64); 3],
}

impl Stat {
    fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..20].copy_from_slice(&self.mode.to_le_bytes());
        b[20..24].copy_from_slice(&self.nlink.to_le_bytes());
        b[24..28].copy_from_slice(&self.uid.to_le_bytes());
        b[28..32].copy_from_slice(&self.gid.to_le_bytes());
        b[32..40].copy_from_slice(&self.rdev.to_le_bytes());
        b[48..56].copy_from_slice(&self.size.to_le_bytes());
        b[56..60].copy_from_slice(&self.blksize.to_le_bytes());
        b[64..72].copy_from_slice(&self.blocks.to_le_bytes());
        for (i, (s, ns)) in self.times.iter().enumerate() {
            b[72 + 16 * i..80 + 16 * i].copy_from_slice(&s.to_le_bytes());
            b[80 + 16 * i..88 + 16 * i].copy_from_slice(&ns.to_le_bytes());
        }
        b
    }
}

fn pipe_stat() -> [u8; 128] {
    Stat {
        dev: 0xc,
        ino: 1,
        mode: S_IFIFO | 0o600,
        nlink: 1,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        size: 0,
        blksize: 4096,
        blocks: 0,
        times: [(0, 0); 3],
    }
    .encode()
}

/// What fstat says of a generated `/proc` file: a regular file of mode
/// 0444 and size 0 on the proc file system (Linux's device 0:0x16 here).
pub fn proc_stat() -> [u8; 128] {
    Stat {
        dev: 0x16,
        ino: 1,
        mode: 0o100000 | 0o444,
        nlink: 1,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        size: 0,
        blksize: 1024,
        blocks: 0,
        times: [(0, 0); 3],
    }
    .encode()
}

fn host_stat(fd: impl std::os::fd::AsFd) -> [u8; 128] {
    stat_of(fd).unwrap_or_else(pipe_stat)
}

/// The riscv64 `struct stat` of a host descriptor.
pub fn stat_of(fd: impl std::os::fd::AsFd) -> Option<[u8; 128]> {
    rustix::fs::fstat(fd).ok().map(|s| encode_stat(&s))
}

/// A host `struct stat` in riscv64's layout.
// The field types of the host's `struct stat` differ between platforms:
// the casts are not all no-ops everywhere.
#[allow(clippy::unnecessary_cast)]
pub fn encode_stat(s: &rustix::fs::Stat) -> [u8; 128] {
    Stat {
        dev: s.st_dev as u64,
        ino: s.st_ino as u64,
        mode: s.st_mode as u32,
        nlink: s.st_nlink as u32,
        uid: s.st_uid as u32,
        gid: s.st_gid as u32,
        rdev: s.st_rdev as u64,
        size: s.st_size as i64,
        blksize: s.st_blksize as i32,
        blocks: s.st_blocks as i64,
        times: [
            (s.st_atime as i64, s.st_atime_nsec as u64),
            (s.st_mtime as i64, s.st_mtime_nsec as u64),
            (s.st_ctime as i64, s.st_ctime_nsec as u64),
        ],
    }
    .encode()
}

/// Fill `out` with random bytes from the host.
pub fn random_bytes(out: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        let n = rustix::rand::getrandom(&mut out[done..], rustix::rand::GetRandomFlags::empty())?;
        done += n;
    }
    Ok(())
}
