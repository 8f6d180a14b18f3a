//! Files: a per-process descriptor table (shared by the threads of a
//! process, copied at fork, its close-on-exec entries closed at execve,
//! emptied when the process ends) whose entries are open file
//! descriptions shared by `dup` and fork, as in Linux. The standard
//! streams are the run's ([`Input`], [`Output`]); everything else is a
//! host descriptor (files and directories opened by host path relative to
//! the host's working directory, pipes, memfds). Reads and writes that
//! may block (pipes, terminals) wait in slices, so a signal or the end of
//! the process interrupts them (EINTR). A file mapped shared has a page
//! cache the calls here keep in step with the host file ([`crate::mapped`]).

use crate::errno::{EBADF, EFAULT, EINTR, EINVAL, EIO, EMFILE, ENOTTY};
use crate::hart::Hart;
use crate::io::{stat_of, Input, Output};
use crate::syscall::{Kernel, SysResult};
use crate::task::{lock, ThreadCtl};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

/// One open file description.
pub enum OpenFile {
    Input(Mutex<Input>),
    Output(Mutex<Output>),
    Host(OwnedFd),
    /// A file the machine generates (`/proc/PID/maps`, ...).
    Proc(crate::proc::ProcFile),
}

/// A descriptor: the description and the close-on-exec flag.
#[derive(Clone)]
pub struct FdEntry {
    pub file: Arc<OpenFile>,
    pub cloexec: bool,
}

/// Linux's default RLIMIT_NOFILE soft limit.
pub const NOFILE: i32 = 1024;

/// A descriptor table.
#[derive(Clone, Default)]
pub struct FdTable {
    fds: BTreeMap<i32, FdEntry>,
}

impl FdTable {
    /// 0, 1 and 2 on the run's streams.
    pub fn standard(stdin: Input, stdout: Output, stderr: Output) -> FdTable {
        let mut t = FdTable::default();
        let e = |f: OpenFile| FdEntry { file: Arc::new(f), cloexec: false };
        t.fds.insert(0, e(OpenFile::Input(Mutex::new(stdin))));
        t.fds.insert(1, e(OpenFile::Output(Mutex::new(stdout))));
        t.fds.insert(2, e(OpenFile::Output(Mutex::new(stderr))));
        t
    }

    /// This table with each descriptor on the first description of a
    /// pair moved to the pair's second (dups follow: they share the
    /// description), the others kept as they are.
    pub fn replace_files(&self, pairs: &[(Arc<OpenFile>, Arc<OpenFile>)]) -> FdTable {
        let mut t = self.clone();
        for e in t.fds.values_mut() {
            if let Some((_, new)) = pairs.iter().find(|(old, _)| Arc::ptr_eq(old, &e.file)) {
                e.file = new.clone();
            }
        }
        t
    }

    pub fn get(&self, fd: u64) -> Result<Arc<OpenFile>, i32> {
        let fd = i32::try_from(fd).map_err(|_| EBADF)?;
        self.fds.get(&fd).map(|e| e.file.clone()).ok_or(EBADF)
    }

    /// The lowest free descriptor at or above `min`.
    pub fn install(&mut self, min: i32, entry: FdEntry) -> Result<i32, i32> {
        let mut fd = min.max(0);
        while self.fds.contains_key(&fd) {
            fd += 1;
        }
        if fd >= NOFILE {
            return Err(EMFILE);
        }
        self.fds.insert(fd, entry);
        Ok(fd)
    }

    pub fn close(&mut self, fd: u64) -> Result<(), i32> {
        let fd = i32::try_from(fd).map_err(|_| EBADF)?;
        self.fds.remove(&fd).map(|_| ()).ok_or(EBADF)
    }

    /// execve: close-on-exec descriptors go.
    pub fn close_on_exec(&mut self) {
        self.fds.retain(|_, e| !e.cloexec);
    }

    /// The process has ended: every descriptor goes.
    pub fn clear(&mut self) {
        self.fds.clear();
    }
}

const O_CLOEXEC: u64 = 0o2000000;
const AT_FDCWD: i64 = -100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;
const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const FD_CLOEXEC: u64 = 1;
const MFD_CLOEXEC: u64 = 1;

/// riscv64's (asm-generic) open flags, bit by bit, to the host's.
fn oflags(guest: u64) -> OFlags {
    let table: [(u64, OFlags); 13] = [
        (0o100, OFlags::CREATE),
        (0o200, OFlags::EXCL),
        (0o400, OFlags::NOCTTY),
        (0o1000, OFlags::TRUNC),
        (0o2000, OFlags::APPEND),
        (0o4000, OFlags::NONBLOCK),
        (0o10000, OFlags::DSYNC),
        (0o200000, OFlags::DIRECTORY),
        (0o400000, OFlags::NOFOLLOW),
        (0o1000000, OFlags::NOATIME),
        (0o10000000, OFlags::PATH),
        (0o4010000, OFlags::SYNC),
        (0o20200000, OFlags::TMPFILE),
    ];
    let mut f = match guest & 3 {
        0 => OFlags::RDONLY,
        1 => OFlags::WRONLY,
        _ => OFlags::RDWR,
    };
    for (bit, host) in table {
        if guest & bit == bit {
            f |= host;
        }
    }
    // The host descriptor never leaks into host children; the guest's
    // flag is kept in the table.
    f | OFlags::CLOEXEC
}

/// The host's open flags back in riscv64's numbering (F_GETFL).
fn guest_oflags(host: OFlags) -> u64 {
    let mut g = if host.contains(OFlags::RDWR) {
        2
    } else if host.contains(OFlags::WRONLY) {
        1
    } else {
        0
    };
    for (bit, h) in [(0o2000u64, OFlags::APPEND), (0o4000, OFlags::NONBLOCK)] {
        if host.contains(h) {
            g |= bit;
        }
    }
    // LARGEFILE: always on for 64-bit Linux.
    g | 0o100000
}

fn os(e: rustix::io::Errno) -> i32 {
    e.raw_os_error()
}

/// Whether reads and writes of `fd` may block (pipes, terminals, sockets).
fn may_block(fd: BorrowedFd<'_>) -> bool {
    match rustix::fs::fstat(fd) {
        Ok(st) => {
            let kind = st.st_mode & 0o170000;
            kind != 0o100000 && kind != 0o040000
        }
        Err(_) => false,
    }
}

/// Wait until `fd` is ready for `events`, in slices: EINTR when the
/// thread's attention flag goes up.
fn wait_ready(fd: BorrowedFd<'_>, events: rustix::event::PollFlags, ctl: &ThreadCtl) -> Result<(), i32> {
    use rustix::event::{poll, PollFd};
    let slice = rustix::time::Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
    loop {
        if ctl.attention() {
            return Err(EINTR);
        }
        let mut fds = [PollFd::new(&fd, events)];
        match poll(&mut fds, Some(&slice)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(os(e)),
        }
    }
}

impl Kernel {
    fn file(&self, fd: u64) -> Result<Arc<OpenFile>, i32> {
        lock(&self.p.files).get(fd)
    }

    /// A descriptor to resolve a path against (`AT_FDCWD`: the host's
    /// working directory).
    fn dir(&self, dirfd: u64) -> Result<Option<Arc<OpenFile>>, i32> {
        // The kernel takes the descriptor as an int.
        if i64::from(dirfd as i32) == AT_FDCWD {
            return Ok(None);
        }
        self.file(dirfd).map(Some)
    }

    fn path(&self, hart: &mut Hart, at: u64) -> Result<Vec<u8>, i32> {
        hart.mem.read_cstr(at, 4096).map_err(|_| EFAULT)
    }

    /// Run `f` with the directory descriptor for `dirfd`.
    fn at<T>(&self, dirfd: u64, f: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<T>) -> Result<T, i32> {
        match self.dir(dirfd)? {
            None => {
                let cwd = lock(&self.p.cwd).dir.clone();
                match &cwd {
                    Some(d) => f(d.as_fd()).map_err(os),
                    None => f(rustix::fs::CWD).map_err(os),
                }
            }
            Some(file) => match &*file {
                OpenFile::Host(h) => f(h.as_fd()).map_err(os),
                _ => Err(crate::errno::ENOTDIR),
            },
        }
    }

    pub(crate) fn openat(&mut self, hart: &mut Hart, dirfd: u64, path: u64, flags: u64, mode: u64) -> SysResult {
        let p = self.path(hart, path)?;
        if let Some((who, kind)) = crate::proc::parse_path(&p) {
            return self.open_proc(who, kind, flags);
        }
        let mode = Mode::from_bits_truncate(mode as u32 & 0o7777);
        let fd = self.at(dirfd, |d| rustix::fs::openat(d, p.as_slice(), oflags(flags), mode))?;
        let entry = FdEntry { file: Arc::new(OpenFile::Host(fd)), cloexec: flags & O_CLOEXEC != 0 };
        lock(&self.p.files).install(0, entry).map(|fd| fd as u64)
    }

    /// A `/proc/PID` file of a process of the machine (ENOENT for a pid
    /// that is none); read-only: write access is EACCES, as its mode 0444
    /// answers an unprivileged opener (root opens it, and a write is
    /// EINVAL, as Linux's for a file without a write operation).
    fn open_proc(&mut self, who: crate::proc::Who, kind: crate::proc::ProcKind, flags: u64) -> SysResult {
        let p = match who {
            crate::proc::Who::Caller => self.p.clone(),
            crate::proc::Who::Pid(pid) => self.p.sys.get(pid).ok_or(crate::errno::ENOENT)?,
        };
        if flags & 3 != 0 && !rustix::process::geteuid().is_root() {
            return Err(crate::errno::EACCES);
        }
        let file = Arc::new(OpenFile::Proc(crate::proc::ProcFile::new(kind, &p)));
        lock(&self.p.files).install(0, FdEntry { file, cloexec: flags & O_CLOEXEC != 0 }).map(|fd| fd as u64)
    }

    pub(crate) fn close(&mut self, fd: u64) -> SysResult {
        lock(&self.p.files).close(fd).map(|()| 0)
    }

    /// write: at most 1 MiB per call (a short write, as a pipe may make).
    pub(crate) fn write(&mut self, hart: &mut Hart, fd: u64, buf: u64, len: u64) -> SysResult {
        let file = self.file(fd)?;
        let mut data = vec![0u8; len.min(1 << 20) as usize];
        hart.mem.read_bytes(buf, &mut data).map_err(|_| EFAULT)?;
        match &*file {
            OpenFile::Output(o) => {
                lock(o).write_all(&data).map_err(|e| e.raw_os_error().unwrap_or(EIO))?;
                Ok(data.len() as u64)
            }
            OpenFile::Input(_) => Err(EBADF),
            OpenFile::Proc(_) => Err(EINVAL),
            OpenFile::Host(h) => {
                if may_block(h.as_fd()) && !nonblocking(h.as_fd()) {
                    wait_ready(h.as_fd(), rustix::event::PollFlags::OUT, &self.ctl)?;
                }
                let n = rustix::io::write(h, &data).map_err(os)?;
                if let Some(f) = self.p.sys.page_cache.get(h) {
                    // Where it went: append mode writes at the end.
                    let end = rustix::fs::seek(h, rustix::fs::SeekFrom::Current(0)).map_err(os)?;
                    cache_written(&f, end - n as u64, &data[..n])?;
                }
                Ok(n as u64)
            }
        }
    }

    /// read. At end of file the buffer is not touched (0, as Linux
    /// answers even for a bad pointer); bytes that cannot be copied to a
    /// bad buffer go back to an in-memory input (a pipe's keep them too),
    /// and are lost from other descriptors.
    pub(crate) fn read(&mut self, hart: &mut Hart, fd: u64, buf: u64, len: u64) -> SysResult {
        let file = self.file(fd)?;
        let mut data = vec![0u8; len.min(1 << 20) as usize];
        let n = match &*file {
            OpenFile::Input(i) => {
                if matches!(*lock(i), Input::Host) {
                    // The host's stdin: wait outside the lock, interruptibly.
                    let stdin = std::io::stdin();
                    wait_ready(stdin.as_fd(), rustix::event::PollFlags::IN, &self.ctl)?;
                }
                let mut i = lock(i);
                let n = i.read(&mut data).map_err(|e| e.raw_os_error().unwrap_or(EIO))?;
                if hart.mem.write_bytes(buf, &data[..n]).is_err() {
                    i.unread(n);
                    return Err(EFAULT);
                }
                return Ok(n as u64);
            }
            OpenFile::Output(_) => return Err(EBADF),
            OpenFile::Proc(f) => f.read(&mut data)?,
            OpenFile::Host(h) => {
                if may_block(h.as_fd()) && !nonblocking(h.as_fd()) {
                    wait_ready(h.as_fd(), rustix::event::PollFlags::IN, &self.ctl)?;
                }
                self.sync_cache(h)?;
                rustix::io::read(h, &mut data).map_err(os)?
            }
        };
        hart.mem.write_bytes(buf, &data[..n]).map_err(|_| EFAULT)?;
        Ok(n as u64)
    }

    pub(crate) fn pread(&mut self, hart: &mut Hart, fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
        if let OpenFile::Proc(f) = &*self.file(fd)? {
            if (off as i64) < 0 {
                return Err(EINVAL);
            }
            let mut data = vec![0u8; len.min(1 << 20) as usize];
            let n = f.read_at(off, &mut data)?;
            hart.mem.write_bytes(buf, &data[..n]).map_err(|_| EFAULT)?;
            return Ok(n as u64);
        }
        let cache = &self.p.sys.page_cache;
        self.positioned(fd, off, |h| {
            if let Some(f) = cache.get(h) {
                f.sync().map_err(|e| e.errno())?;
            }
            let mut data = vec![0u8; len.min(1 << 20) as usize];
            let n = rustix::io::pread(h, &mut data, off).map_err(os)?;
            hart.mem.write_bytes(buf, &data[..n]).map_err(|_| EFAULT)?;
            Ok(n as u64)
        })
    }

    pub(crate) fn pwrite(&mut self, hart: &mut Hart, fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
        let cache = &self.p.sys.page_cache;
        self.positioned(fd, off, |h| {
            let mut data = vec![0u8; len.min(1 << 20) as usize];
            hart.mem.read_bytes(buf, &mut data).map_err(|_| EFAULT)?;
            let n = rustix::io::pwrite(h, &data, off).map_err(os)?;
            if let Some(f) = cache.get(h) {
                cache_written(&f, off, &data[..n])?;
            }
            Ok(n as u64)
        })
    }

    /// pread/pwrite's checks: a host file (ESPIPE for a pipe or terminal)
    /// and an offset that is not negative (EINVAL); then `io` on it.
    fn positioned(&self, fd: u64, off: u64, io: impl FnOnce(&OwnedFd) -> SysResult) -> SysResult {
        let file = self.file(fd)?;
        let OpenFile::Host(h) = &*file else {
            return Err(crate::errno::ESPIPE);
        };
        if (off as i64) < 0 {
            return Err(EINVAL);
        }
        io(h)
    }

    pub(crate) fn lseek(&mut self, fd: u64, off: u64, whence: u64) -> SysResult {
        use rustix::fs::SeekFrom;
        let file = self.file(fd)?;
        if let OpenFile::Proc(f) = &*file {
            return f.seek(off as i64, whence);
        }
        let OpenFile::Host(h) = &*file else {
            return Err(crate::errno::ESPIPE);
        };
        let pos = match whence {
            0 => SeekFrom::Start(off),
            1 => SeekFrom::Current(off as i64),
            2 => SeekFrom::End(off as i64),
            3 => SeekFrom::Data(off),
            4 => SeekFrom::Hole(off),
            _ => return Err(EINVAL),
        };
        rustix::fs::seek(h, pos).map_err(os)
    }

    /// The riscv64 `struct stat` of a descriptor.
    fn stat_fd(&self, fd: u64) -> Result<[u8; 128], i32> {
        Ok(match &*self.file(fd)? {
            OpenFile::Input(i) => lock(i).stat(),
            OpenFile::Output(o) => lock(o).stat(),
            OpenFile::Host(h) => stat_of(h.as_fd()).ok_or(EIO)?,
            OpenFile::Proc(_) => crate::io::proc_stat(),
        })
    }

    pub(crate) fn fstat(&mut self, hart: &mut Hart, fd: u64, buf: u64) -> SysResult {
        let st = self.stat_fd(fd)?;
        hart.mem.write_bytes(buf, &st).map_err(|_| EFAULT)?;
        Ok(0)
    }

    pub(crate) fn newfstatat(&mut self, hart: &mut Hart, dirfd: u64, path: u64, buf: u64, flags: u64) -> SysResult {
        let p = self.path(hart, path)?;
        if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
            return self.fstat(hart, dirfd, buf);
        }
        let at = if flags & AT_SYMLINK_NOFOLLOW != 0 { AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::empty() };
        let st = self.at(dirfd, |d| rustix::fs::statat(d, p.as_slice(), at))?;
        hart.mem.write_bytes(buf, &crate::io::encode_stat(&st)).map_err(|_| EFAULT)?;
        Ok(0)
    }

    pub(crate) fn statx(&mut self, hart: &mut Hart, a: [u64; 6]) -> SysResult {
        let [dirfd, path, flags, mask, buf, _] = a;
        let p = self.path(hart, path)?;
        let at = AtFlags::from_bits_truncate(flags as u32);
        let mask = rustix::fs::StatxFlags::from_bits_truncate(mask as u32);
        let st = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
            match &*self.file(dirfd)? {
                OpenFile::Host(h) => rustix::fs::statx(h, c"", at, mask).map_err(os)?,
                // The run's streams: what fstat says, in statx's words.
                _ => return self.statx_stream(hart, dirfd, buf),
            }
        } else {
            self.at(dirfd, |d| rustix::fs::statx(d, p.as_slice(), at, mask))?
        };
        hart.mem.write_bytes(buf, &encode_statx(&st)).map_err(|_| EFAULT)?;
        Ok(0)
    }

    fn statx_stream(&mut self, hart: &mut Hart, fd: u64, buf: u64) -> SysResult {
        let st = self.stat_fd(fd)?;
        let w32 = |at: usize| u32::from_le_bytes(st[at..at + 4].try_into().unwrap_or([0; 4]));
        let w64 = |at: usize| u64::from_le_bytes(st[at..at + 8].try_into().unwrap_or([0; 8]));
        let mut b = [0u8; 256];
        b[0..4].copy_from_slice(&0x7ffu32.to_le_bytes());
        b[4..8].copy_from_slice(&w32(56).to_le_bytes());
        b[16..20].copy_from_slice(&w32(20).to_le_bytes());
        b[20..24].copy_from_slice(&w32(24).to_le_bytes());
        b[24..28].copy_from_slice(&w32(28).to_le_bytes());
        b[28..30].copy_from_slice(&(w32(16) as u16).to_le_bytes());
        b[32..40].copy_from_slice(&w64(8).to_le_bytes());
        b[40..48].copy_from_slice(&w64(48).to_le_bytes());
        b[48..56].copy_from_slice(&w64(64).to_le_bytes());
        hart.mem.write_bytes(buf, &b).map_err(|_| EFAULT)?;
        Ok(0)
    }

    pub(crate) fn dup(&mut self, fd: u64) -> SysResult {
        let mut t = lock(&self.p.files);
        let file = t.get(fd)?;
        t.install(0, FdEntry { file, cloexec: false }).map(|fd| fd as u64)
    }

    pub(crate) fn dup3(&mut self, old: u64, new: u64, flags: u64) -> SysResult {
        if flags & !O_CLOEXEC != 0 || old == new {
            return Err(EINVAL);
        }
        let newfd = i32::try_from(new).ok().filter(|&n| (0..NOFILE).contains(&n)).ok_or(EBADF)?;
        let mut t = lock(&self.p.files);
        let file = t.get(old)?;
        let _ = t.close(new);
        t.install(newfd, FdEntry { file, cloexec: flags & O_CLOEXEC != 0 }).map(|fd| fd as u64)
    }

    pub(crate) fn fcntl(&mut self, fd: u64, cmd: u64, arg: u64) -> SysResult {
        let mut t = lock(&self.p.files);
        let file = t.get(fd)?;
        let key = fd as i32;
        match cmd {
            F_DUPFD | F_DUPFD_CLOEXEC => {
                let min = i32::try_from(arg).ok().filter(|&n| (0..NOFILE).contains(&n)).ok_or(EINVAL)?;
                t.install(min, FdEntry { file, cloexec: cmd == F_DUPFD_CLOEXEC }).map(|fd| fd as u64)
            }
            F_GETFD => Ok(u64::from(t.fds.get(&key).is_some_and(|e| e.cloexec))),
            F_SETFD => {
                if let Some(e) = t.fds.get_mut(&key) {
                    e.cloexec = arg & FD_CLOEXEC != 0;
                }
                Ok(0)
            }
            F_GETFL => match &*file {
                OpenFile::Host(h) => rustix::fs::fcntl_getfl(h).map(guest_oflags).map_err(os),
                OpenFile::Input(_) | OpenFile::Proc(_) => Ok(0o100000),
                OpenFile::Output(_) => Ok(0o100001),
            },
            F_SETFL => match &*file {
                OpenFile::Host(h) => {
                    let mut f = OFlags::empty();
                    if arg & 0o2000 != 0 {
                        f |= OFlags::APPEND;
                    }
                    if arg & 0o4000 != 0 {
                        f |= OFlags::NONBLOCK;
                    }
                    rustix::fs::fcntl_setfl(h, f).map(|()| 0).map_err(os)
                }
                _ => Ok(0),
            },
            _ => Err(EINVAL),
        }
    }

    pub(crate) fn pipe2(&mut self, hart: &mut Hart, fds: u64, flags: u64) -> SysResult {
        use rustix::pipe::PipeFlags;
        if flags & !(O_CLOEXEC | 0o4000 | 0o40000) != 0 {
            return Err(EINVAL);
        }
        let mut pf = PipeFlags::CLOEXEC;
        if flags & 0o4000 != 0 {
            pf |= PipeFlags::NONBLOCK;
        }
        if flags & 0o40000 != 0 {
            pf |= PipeFlags::DIRECT;
        }
        let (r, w) = rustix::pipe::pipe_with(pf).map_err(os)?;
        let cloexec = flags & O_CLOEXEC != 0;
        let mut t = lock(&self.p.files);
        let rfd = t.install(0, FdEntry { file: Arc::new(OpenFile::Host(r)), cloexec })?;
        let wfd = match t.install(0, FdEntry { file: Arc::new(OpenFile::Host(w)), cloexec }) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = t.close(rfd as u64);
                return Err(e);
            }
        };
        let mut b = (rfd as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&(wfd as u32).to_le_bytes());
        if hart.mem.write_bytes(fds, &b).is_err() {
            let _ = t.close(rfd as u64);
            let _ = t.close(wfd as u64);
            return Err(EFAULT);
        }
        Ok(0)
    }

    /// chdir(path): the process's own working directory.
    pub(crate) fn chdir(&mut self, hart: &mut Hart, path: u64) -> SysResult {
        let p = self.path(hart, path)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = self.at(AT_FDCWD as u64, |d| rustix::fs::openat(d, p.as_slice(), flags, Mode::empty()))?;
        let mut cwd = lock(&self.p.cwd);
        let joined = cwd.path.join(std::ffi::OsStr::from_bytes(&p));
        cwd.path = std::fs::canonicalize(&joined).unwrap_or(joined);
        cwd.dir = Some(Arc::new(fd));
        Ok(0)
    }

    /// A guest path as the host path it names (relative ones against the
    /// process's working directory).
    pub(crate) fn host_path(&self, p: &[u8]) -> std::path::PathBuf {
        lock(&self.p.cwd).path.join(std::ffi::OsStr::from_bytes(p))
    }

    pub(crate) fn getcwd(&mut self, hart: &mut Hart, buf: u64, size: u64) -> SysResult {
        let mut bytes = lock(&self.p.cwd).path.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        if (size as usize) < bytes.len() {
            return Err(crate::errno::ERANGE);
        }
        hart.mem.write_bytes(buf, &bytes).map_err(|_| EFAULT)?;
        Ok(bytes.len() as u64)
    }

    pub(crate) fn unlinkat(&mut self, hart: &mut Hart, dirfd: u64, path: u64, flags: u64) -> SysResult {
        if flags & !AT_REMOVEDIR != 0 {
            return Err(EINVAL);
        }
        let p = self.path(hart, path)?;
        let at = if flags & AT_REMOVEDIR != 0 { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        self.at(dirfd, |d| rustix::fs::unlinkat(d, p.as_slice(), at)).map(|()| 0)
    }

    pub(crate) fn mkdirat(&mut self, hart: &mut Hart, dirfd: u64, path: u64, mode: u64) -> SysResult {
        let p = self.path(hart, path)?;
        let mode = Mode::from_bits_truncate(mode as u32 & 0o7777);
        self.at(dirfd, |d| rustix::fs::mkdirat(d, p.as_slice(), mode)).map(|()| 0)
    }

    pub(crate) fn ftruncate(&mut self, fd: u64, len: u64) -> SysResult {
        let file = self.file(fd)?;
        let OpenFile::Host(h) = &*file else {
            return Err(EINVAL);
        };
        if (len as i64) < 0 {
            return Err(EINVAL);
        }
        rustix::fs::ftruncate(h, len).map_err(os)?;
        if let Some(f) = self.p.sys.page_cache.get(h) {
            f.truncate(len).map_err(|e| e.errno())?;
        }
        Ok(0)
    }

    /// Before a read of host file `h`: stores through its shared mappings
    /// reach the host file.
    fn sync_cache(&self, h: &OwnedFd) -> Result<(), i32> {
        match self.p.sys.page_cache.get(h) {
            Some(f) => f.sync().map_err(|e| e.errno()),
            None => Ok(()),
        }
    }

    pub(crate) fn memfd_create(&mut self, hart: &mut Hart, name: u64, flags: u64) -> SysResult {
        use rustix::fs::MemfdFlags;
        let n = hart.mem.read_cstr(name, 250).map_err(|_| EFAULT)?;
        // MFD_CLOEXEC, MFD_ALLOW_SEALING; hugetlb and exec flags are not.
        if flags & !3 != 0 {
            return Err(EINVAL);
        }
        let mut f = MemfdFlags::CLOEXEC;
        if flags & 2 != 0 {
            f |= MemfdFlags::ALLOW_SEALING;
        }
        let fd = rustix::fs::memfd_create(n.as_slice(), f).map_err(os)?;
        let entry = FdEntry { file: Arc::new(OpenFile::Host(fd)), cloexec: flags & MFD_CLOEXEC != 0 };
        lock(&self.p.files).install(0, entry).map(|fd| fd as u64)
    }

    pub(crate) fn ioctl(&mut self, hart: &mut Hart, fd: u64, req: u64, arg: u64) -> SysResult {
        const TCGETS: u64 = 0x5401;
        const TIOCGWINSZ: u64 = 0x5413;
        let tty = match &*self.file(fd)? {
            OpenFile::Input(i) => lock(i).is_terminal(),
            OpenFile::Output(o) => lock(o).is_terminal(),
            OpenFile::Host(h) => rustix::termios::isatty(h),
            OpenFile::Proc(_) => false,
        };
        if req == TCGETS && tty {
            // Enough for isatty(): a zeroed riscv64 struct termios (36 bytes).
            hart.mem.write_bytes(arg, &[0u8; 36]).map_err(|_| EFAULT)?;
            return Ok(0);
        }
        if req == TIOCGWINSZ && tty {
            // musl's isatty(): success is what it asks; the size is unknown.
            hart.mem.write_bytes(arg, &[0u8; 8]).map_err(|_| EFAULT)?;
            return Ok(0);
        }
        Err(ENOTTY)
    }
}

/// After `data` was written to a host file at `pos`: the same bytes in its
/// page cache, so its mappings see them (written back later, unchanged).
fn cache_written(f: &softmm::File, pos: u64, data: &[u8]) -> Result<(), i32> {
    f.pwrite(pos, data).map(|_| ()).map_err(|e| e.errno())
}

fn nonblocking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(OFlags::NONBLOCK))
}

/// The kernel's `struct statx` (the same on every architecture).
fn encode_statx(s: &rustix::fs::Statx) -> [u8; 256] {
    let mut b = [0u8; 256];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(0, &s.stx_mask.to_le_bytes());
    put(4, &s.stx_blksize.to_le_bytes());
    put(8, &s.stx_attributes.bits().to_le_bytes());
    put(16, &s.stx_nlink.to_le_bytes());
    put(20, &s.stx_uid.to_le_bytes());
    put(24, &s.stx_gid.to_le_bytes());
    put(28, &s.stx_mode.to_le_bytes());
    put(32, &s.stx_ino.to_le_bytes());
    put(40, &s.stx_size.to_le_bytes());
    put(48, &s.stx_blocks.to_le_bytes());
    put(56, &s.stx_attributes_mask.bits().to_le_bytes());
    for (i, t) in [s.stx_atime, s.stx_btime, s.stx_ctime, s.stx_mtime].iter().enumerate() {
        put(64 + 16 * i, &t.tv_sec.to_le_bytes());
        put(72 + 16 * i, &t.tv_nsec.to_le_bytes());
    }
    put(128, &s.stx_rdev_major.to_le_bytes());
    put(132, &s.stx_rdev_minor.to_le_bytes());
    put(136, &s.stx_dev_major.to_le_bytes());
    put(140, &s.stx_dev_minor.to_le_bytes());
    put(144, &s.stx_mnt_id.to_le_bytes());
    b
}
