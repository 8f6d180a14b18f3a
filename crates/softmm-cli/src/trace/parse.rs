//! Parsing of the trace format (`../shared/TRACE.md`: version 1, and of
//! version 2 the `x` protections, `maps`, `mlock`, `munlock`, `locked`,
//! `mremap`, the file operations: `file`, `pwrite`, `pread`, `truncate`,
//! `mmap ... file F OFF` and `msync`, and the softmm-only `snapshot`,
//! `restore` and `dirty`).
//!
//! One operation per line; `#` starts a comment; blank lines are skipped.
//! Names are `[A-Za-z][A-Za-z0-9_]*`; numbers are decimal digits or `0x`
//! and hex digits (no sign, no `_`), and a length may end in `K`, `M` or `G`
//! (binary); a fill byte is one or two hex digits, optionally after `0x`.
//! A line is at most [`MAX_LINE`] bytes of UTF-8. Parsing is strict:
//! anything else is a [`ParseError`] naming the line, which stops a replay
//! with exit status 2. Messages echo at most the first 40 characters of a
//! token, with control characters escaped.

use crate::error::shown;
use std::fmt;
use std::io::BufRead;

/// The longest trace line, in bytes without its line end: far beyond any
/// trace written by hand or by `softmm gen`, and a bound on what one line
/// may allocate (an endless line, `/dev/zero`, is an error, not an abort).
pub const MAX_LINE: usize = 64 * 1024;

/// The flags of `mremap` as written (`maymove`, `fixed NEW`, `dontunmap`,
/// in that order, each optional; `fixed` without `maymove` is written as
/// given and answered EINVAL, as Linux answers it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemapArgs {
    pub maymove: bool,
    pub fixed: Option<u64>,
    pub dontunmap: bool,
}

impl fmt::Display for RemapArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.maymove {
            f.write_str(" maymove")?;
        }
        if let Some(n) = self.fixed {
            write!(f, " fixed {n:#x}")?;
        }
        if self.dontunmap {
            f.write_str(" dontunmap")?;
        }
        Ok(())
    }
}

/// Protection as written in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TProt {
    R,
    W,
    Rw,
    None,
    /// Version 2: PROT_EXEC, alone or with the others.
    X,
    Rx,
    Wx,
    Rwx,
}

/// Mapping kind as written in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TKind {
    Private,
    Shared,
}

/// One trace operation. Version 2 adds `Maps` (the VMAs over the ranges
/// the trace named), `Mlock`, `Munlock` and `Locked` (smaps' `Locked:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    New {
        a: String,
    },
    Mmap {
        a: String,
        addr: u64,
        len: u64,
        prot: TProt,
        kind: TKind,
    },
    Munmap {
        a: String,
        addr: u64,
        len: u64,
    },
    Mprotect {
        a: String,
        addr: u64,
        len: u64,
        prot: TProt,
    },
    Madvise {
        a: String,
        addr: u64,
        len: u64,
        advice: softmm::Advice,
    },
    Mremap {
        a: String,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapArgs,
    },
    Fork {
        a: String,
        b: String,
    },
    Exit {
        a: String,
    },
    Write {
        a: String,
        addr: u64,
        bytes: Vec<u8>,
    },
    Fill {
        a: String,
        addr: u64,
        len: u64,
        byte: u8,
    },
    Read {
        a: String,
        addr: u64,
        len: u64,
    },
    Phys {
        a: String,
        addr: u64,
    },
    Smaps {
        a: String,
        addr: u64,
    },
    FutexWait {
        a: String,
        addr: u64,
        val: u32,
        w: String,
    },
    FutexWake {
        a: String,
        addr: u64,
        n: u32,
    },
    Waiter {
        w: String,
    },
    Pin {
        a: String,
        addr: u64,
        len: u64,
        p: String,
    },
    Pinned {
        p: String,
        addr: u64,
        len: u64,
    },
    Unpin {
        p: String,
    },
    Maps {
        a: String,
    },
    Mlock {
        a: String,
        addr: u64,
        len: u64,
    },
    Munlock {
        a: String,
        addr: u64,
        len: u64,
    },
    Locked {
        a: String,
        addr: u64,
    },
    /// Version 2: a scratch file F of `len` bytes of `byte`.
    File {
        f: String,
        len: u64,
        byte: u8,
    },
    Pwrite {
        f: String,
        off: u64,
        bytes: Vec<u8>,
    },
    Pread {
        f: String,
        off: u64,
        len: u64,
    },
    Truncate {
        f: String,
        len: u64,
    },
    /// `mmap A ADDR LEN PROT KIND file F OFF`.
    MmapFile {
        a: String,
        addr: u64,
        len: u64,
        prot: TProt,
        kind: TKind,
        f: String,
        off: u64,
    },
    /// MS_SYNC.
    Msync {
        a: String,
        addr: u64,
        len: u64,
    },
    /// softmm-only: take snapshot S of A (`Mm::snapshot`).
    Snapshot {
        a: String,
        s: String,
    },
    /// softmm-only: bring A back to snapshot S (`Mm::restore`).
    Restore {
        a: String,
        s: String,
    },
    /// softmm-only: the pages of the range changed since A's latest
    /// snapshot was taken or restored (`Mm::dirty_pages`).
    Dirty {
        a: String,
        addr: u64,
        len: u64,
    },
}

impl Op {
    /// The address space an operation acts in, for those that name one
    /// first (`new`, `fork` and `exit` name it too; `waiter`, `pinned` and
    /// `unpin` name a waiter or a pin instead).
    pub fn space(&self) -> Option<&str> {
        match self {
            Op::New { a }
            | Op::Fork { a, .. }
            | Op::Exit { a }
            | Op::Mmap { a, .. }
            | Op::Munmap { a, .. }
            | Op::Mprotect { a, .. }
            | Op::Madvise { a, .. }
            | Op::Mremap { a, .. }
            | Op::Write { a, .. }
            | Op::Fill { a, .. }
            | Op::Read { a, .. }
            | Op::Phys { a, .. }
            | Op::Smaps { a, .. }
            | Op::FutexWait { a, .. }
            | Op::FutexWake { a, .. }
            | Op::Pin { a, .. }
            | Op::Maps { a }
            | Op::Mlock { a, .. }
            | Op::Munlock { a, .. }
            | Op::Locked { a, .. }
            | Op::MmapFile { a, .. }
            | Op::Msync { a, .. }
            | Op::Snapshot { a, .. }
            | Op::Restore { a, .. }
            | Op::Dirty { a, .. } => Some(a),
            Op::Waiter { .. }
            | Op::Pinned { .. }
            | Op::Unpin { .. }
            | Op::File { .. }
            | Op::Pwrite { .. }
            | Op::Pread { .. }
            | Op::Truncate { .. } => None,
        }
    }

    /// Whether real Linux can run this operation (pins and snapshots are
    /// softmm-only).
    pub fn linux_can_run(&self) -> bool {
        !matches!(
            self,
            Op::Pin { .. }
                | Op::Pinned { .. }
                | Op::Unpin { .. }
                | Op::Snapshot { .. }
                | Op::Restore { .. }
                | Op::Dirty { .. }
        )
    }
}

impl fmt::Display for TProt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TProt::R => "r",
            TProt::W => "w",
            TProt::Rw => "rw",
            TProt::None => "-",
            TProt::X => "x",
            TProt::Rx => "rx",
            TProt::Wx => "wx",
            TProt::Rwx => "rwx",
        })
    }
}

impl fmt::Display for TKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TKind::Private => "private",
            TKind::Shared => "shared",
        })
    }
}

impl fmt::Display for Op {
    /// The operation as a trace line (parses back to the same operation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::New { a } => write!(f, "new {a}"),
            Op::Mmap { a, addr, len, prot, kind } => write!(f, "mmap {a} {addr:#x} {len:#x} {prot} {kind}"),
            Op::Munmap { a, addr, len } => write!(f, "munmap {a} {addr:#x} {len:#x}"),
            Op::Mprotect { a, addr, len, prot } => write!(f, "mprotect {a} {addr:#x} {len:#x} {prot}"),
            Op::Madvise { a, addr, len, advice } => write!(f, "madvise {a} {addr:#x} {len:#x} {}", advice.word()),
            Op::Mremap { a, old, old_len, new_len, flags } => {
                write!(f, "mremap {a} {old:#x} {old_len:#x} {new_len:#x}{flags}")
            }
            Op::Fork { a, b } => write!(f, "fork {a} {b}"),
            Op::Exit { a } => write!(f, "exit {a}"),
            Op::Write { a, addr, bytes } => write!(f, "write {a} {addr:#x} hex:{}", hex(bytes)),
            Op::Fill { a, addr, len, byte } => write!(f, "fill {a} {addr:#x} {len:#x} {byte:02x}"),
            Op::Read { a, addr, len } => write!(f, "read {a} {addr:#x} {len:#x}"),
            Op::Phys { a, addr } => write!(f, "phys {a} {addr:#x}"),
            Op::Smaps { a, addr } => write!(f, "smaps {a} {addr:#x}"),
            Op::FutexWait { a, addr, val, w } => write!(f, "futex_wait {a} {addr:#x} {val} as {w}"),
            Op::FutexWake { a, addr, n } => write!(f, "futex_wake {a} {addr:#x} {n}"),
            Op::Waiter { w } => write!(f, "waiter {w}"),
            Op::Pin { a, addr, len, p } => write!(f, "pin {a} {addr:#x} {len:#x} as {p}"),
            Op::Pinned { p, addr, len } => write!(f, "pinned {p} {addr:#x} {len:#x}"),
            Op::Unpin { p } => write!(f, "unpin {p}"),
            Op::Maps { a } => write!(f, "maps {a}"),
            Op::Mlock { a, addr, len } => write!(f, "mlock {a} {addr:#x} {len:#x}"),
            Op::Munlock { a, addr, len } => write!(f, "munlock {a} {addr:#x} {len:#x}"),
            Op::Locked { a, addr } => write!(f, "locked {a} {addr:#x}"),
            Op::File { f: name, len, byte } => write!(f, "file {name} {len:#x} {byte:02x}"),
            Op::Pwrite { f: name, off, bytes } => write!(f, "pwrite {name} {off:#x} hex:{}", hex(bytes)),
            Op::Pread { f: name, off, len } => write!(f, "pread {name} {off:#x} {len:#x}"),
            Op::Truncate { f: name, len } => write!(f, "truncate {name} {len:#x}"),
            Op::MmapFile { a, addr, len, prot, kind, f: name, off } => {
                write!(f, "mmap {a} {addr:#x} {len:#x} {prot} {kind} file {name} {off:#x}")
            }
            Op::Msync { a, addr, len } => write!(f, "msync {a} {addr:#x} {len:#x}"),
            Op::Snapshot { a, s } => write!(f, "snapshot {a} as {s}"),
            Op::Restore { a, s } => write!(f, "restore {a} {s}"),
            Op::Dirty { a, addr, len } => write!(f, "dirty {a} {addr:#x} {len:#x}"),
        }
    }
}

/// A line of a trace that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parsed trace line: its number (1-based) and operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub op: Op,
}

/// Parse a whole trace. Stops at the first malformed line.
#[cfg(test)]
pub fn parse_trace(text: &str) -> Result<Vec<Line>, ParseError> {
    read_trace(text.as_bytes())
}

/// Read and parse a whole trace. Stops at the first malformed line.
pub fn read_trace(input: impl BufRead) -> Result<Vec<Line>, ParseError> {
    let mut out = Vec::new();
    for line in TraceLines::new(input) {
        let (number, raw) = line?;
        if let Some(op) = parse_line(&raw).map_err(|message| ParseError { line: number, message })? {
            out.push(Line { number, op });
        }
    }
    Ok(out)
}

/// The lines of a trace, numbered from 1, without their line ends (`\n`
/// or `\r\n`). A line longer than [`MAX_LINE`], one that is not UTF-8, or
/// a read error is an error naming the line, and ends the lines.
pub struct TraceLines<R> {
    input: R,
    number: usize,
    done: bool,
}

impl<R: BufRead> TraceLines<R> {
    pub fn new(input: R) -> TraceLines<R> {
        TraceLines { input, number: 0, done: false }
    }

    fn read_line(&mut self) -> Result<Option<String>, String> {
        let mut buf = Vec::new();
        // Room for the longest line and `\r\n`: a longer read has no
        // newline at its end and is too long whatever follows.
        let limit = MAX_LINE as u64 + 2;
        let n =
            std::io::Read::take(self.input.by_ref(), limit).read_until(b'\n', &mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if buf.len() > MAX_LINE {
            return Err(format!("line longer than {} KiB, the longest a trace may have", MAX_LINE >> 10));
        }
        String::from_utf8(buf)
            .map(Some)
            .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to() + 1))
    }
}

impl<R: BufRead> Iterator for TraceLines<R> {
    type Item = Result<(usize, String), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.number += 1;
        match self.read_line() {
            Ok(Some(text)) => Some(Ok((self.number, text))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(message) => {
                self.done = true;
                Some(Err(ParseError { line: self.number, message }))
            }
        }
    }
}

/// Parse one line; `Ok(None)` for blank and comment-only lines.
pub fn parse_line(raw: &str) -> Result<Option<Op>, String> {
    let toks = tokenize(raw)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut t = Toks { toks: &toks, at: 0 };
    let verb = t.word("operation")?;
    let op = match verb {
        "new" => Op::New { a: t.name()? },
        "mmap" => {
            let (a, addr, len, prot, kind) = (t.name()?, t.num("address")?, t.len()?, t.prot()?, t.kind()?);
            if t.optional("file") {
                Op::MmapFile { a, addr, len, prot, kind, f: t.name()?, off: t.num("file offset")? }
            } else {
                Op::Mmap { a, addr, len, prot, kind }
            }
        }
        "munmap" => Op::Munmap { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        "mprotect" => Op::Mprotect { a: t.name()?, addr: t.num("address")?, len: t.len()?, prot: t.prot()? },
        "madvise" => {
            let (a, addr, len) = (t.name()?, t.num("address")?, t.len()?);
            Op::Madvise { a, addr, len, advice: t.advice()? }
        }
        "mremap" => {
            let (a, old, old_len) = (t.name()?, t.num("address")?, t.len()?);
            Op::Mremap { a, old, old_len, new_len: t.len()?, flags: t.remap_args()? }
        }
        "fork" => Op::Fork { a: t.name()?, b: t.name()? },
        "exit" => Op::Exit { a: t.name()? },
        "write" => Op::Write { a: t.name()?, addr: t.num("address")?, bytes: t.bytes()? },
        "fill" => Op::Fill { a: t.name()?, addr: t.num("address")?, len: t.len()?, byte: t.hex_byte()? },
        "read" => Op::Read { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        "phys" => Op::Phys { a: t.name()?, addr: t.num("address")? },
        "smaps" => Op::Smaps { a: t.name()?, addr: t.num("address")? },
        "futex_wait" => {
            let (a, addr) = (t.name()?, t.num("address")?);
            let val = t.num("value")?;
            let val = u32::try_from(val).map_err(|_| format!("futex value {val} does not fit in 32 bits"))?;
            t.keyword("as")?;
            Op::FutexWait { a, addr, val, w: t.name()? }
        }
        "futex_wake" => {
            let (a, addr) = (t.name()?, t.num("address")?);
            let n = t.num("count")?;
            let n = u32::try_from(n).map_err(|_| format!("wake count {n} does not fit in 32 bits"))?;
            Op::FutexWake { a, addr, n }
        }
        "waiter" => Op::Waiter { w: t.name()? },
        "pin" => {
            let (a, addr, len) = (t.name()?, t.num("address")?, t.len()?);
            t.keyword("as")?;
            Op::Pin { a, addr, len, p: t.name()? }
        }
        "pinned" => Op::Pinned { p: t.name()?, addr: t.num("address")?, len: t.len()? },
        "unpin" => Op::Unpin { p: t.name()? },
        "maps" => Op::Maps { a: t.name()? },
        "mlock" => Op::Mlock { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        "munlock" => Op::Munlock { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        "locked" => Op::Locked { a: t.name()?, addr: t.num("address")? },
        "file" => Op::File { f: t.name()?, len: t.len()?, byte: t.hex_byte()? },
        "pwrite" => Op::Pwrite { f: t.name()?, off: t.num("file offset")?, bytes: t.bytes()? },
        "pread" => Op::Pread { f: t.name()?, off: t.num("file offset")?, len: t.len()? },
        "truncate" => Op::Truncate { f: t.name()?, len: t.len()? },
        "msync" => Op::Msync { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        "snapshot" => {
            let a = t.name()?;
            t.keyword("as")?;
            Op::Snapshot { a, s: t.name()? }
        }
        "restore" => Op::Restore { a: t.name()?, s: t.name()? },
        "dirty" => Op::Dirty { a: t.name()?, addr: t.num("address")?, len: t.len()? },
        other => return Err(format!("unknown operation `{}`", shown(other))),
    };
    if let Some(extra) = t.toks.get(t.at) {
        return Err(format!("unexpected `{}` after the operation", extra.text()));
    }
    Ok(Some(op))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(Vec<u8>),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => shown(w),
            Tok::Quoted(_) => "\"...\"".to_string(),
        }
    }
}

/// Split a line into words and quoted strings, dropping a `#` comment.
fn tokenize(raw: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            out.push(Tok::Quoted(unescape(&mut chars)?));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '#' {
                    break;
                }
                if c == '"' {
                    return Err("a quote inside a word".into());
                }
                w.push(c);
                chars.next();
            }
            out.push(Tok::Word(w));
        }
    }
    Ok(out)
}

/// Read a C-escaped string up to its closing quote.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let c = chars.next().ok_or("unterminated string")?;
        match c {
            '"' => return Ok(out),
            '\\' => {
                let e = chars.next().ok_or("unterminated escape")?;
                match e {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(d) => {
                                    v = v * 8 + d;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        out.push(u8::try_from(v).map_err(|_| format!("octal escape \\{v:o} above 255"))?);
                    }
                    'x' => {
                        let mut v = 0u32;
                        let mut n = 0;
                        while let Some(d) = chars.peek().and_then(|c| c.to_digit(16)) {
                            v = v * 16 + d;
                            n += 1;
                            chars.next();
                            if n == 2 {
                                break;
                            }
                        }
                        if n == 0 {
                            return Err("\\x without hex digits".into());
                        }
                        out.push(v as u8);
                    }
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'v' => out.push(11),
                    '\\' | '"' | '\'' | '?' => out.push(e as u8),
                    other => return Err(format!("unknown escape \\{}", shown(other.encode_utf8(&mut [0; 4])))),
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

struct Toks<'a> {
    toks: &'a [Tok],
    at: usize,
}

impl Toks<'_> {
    fn next(&mut self, what: &str) -> Result<&Tok, String> {
        let t = self.toks.get(self.at).ok_or_else(|| format!("missing {what}"))?;
        self.at += 1;
        Ok(t)
    }

    fn word(&mut self, what: &str) -> Result<&str, String> {
        match self.next(what)? {
            Tok::Word(w) => Ok(w),
            Tok::Quoted(_) => Err(format!("expected {what}, found a string")),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), String> {
        let w = self.word(&format!("`{kw}`"))?;
        if w == kw {
            Ok(())
        } else {
            Err(format!("expected `{kw}`, found `{}`", shown(w)))
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let w = self.word("name")?;
        let mut cs = w.chars();
        let ok =
            cs.next().is_some_and(|c| c.is_ascii_alphabetic()) && cs.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(w.to_string())
        } else {
            Err(format!("bad name `{}` (names are [A-Za-z][A-Za-z0-9_]*)", shown(w)))
        }
    }

    fn num(&mut self, what: &str) -> Result<u64, String> {
        let w = self.word(what)?;
        parse_num(w).ok_or_else(|| format!("bad {what} `{}` (decimal or 0x hex)", shown(w)))
    }

    /// The next token if it is the word `w` (taken), else nothing taken.
    fn optional(&mut self, w: &str) -> bool {
        let hit = matches!(self.toks.get(self.at), Some(Tok::Word(x)) if x == w);
        self.at += hit as usize;
        hit
    }

    fn remap_args(&mut self) -> Result<RemapArgs, String> {
        let maymove = self.optional("maymove");
        let fixed = if self.optional("fixed") { Some(self.num("new address")?) } else { None };
        let dontunmap = self.optional("dontunmap");
        Ok(RemapArgs { maymove, fixed, dontunmap })
    }

    fn len(&mut self) -> Result<u64, String> {
        let w = self.word("length")?;
        let (digits, shift) = [('K', 10), ('M', 20), ('G', 30)]
            .into_iter()
            .find_map(|(suffix, shift)| Some((w.strip_suffix(suffix)?, shift)))
            .unwrap_or((w, 0));
        let v = parse_num(digits)
            .ok_or_else(|| format!("bad length `{}` (decimal or 0x hex, then K, M or G)", shown(w)))?;
        v.checked_mul(1u64 << shift).ok_or_else(|| format!("length `{}` overflows 64 bits", shown(w)))
    }

    fn prot(&mut self) -> Result<TProt, String> {
        match self.word("protection")? {
            "r" => Ok(TProt::R),
            "w" => Ok(TProt::W),
            "rw" => Ok(TProt::Rw),
            "-" => Ok(TProt::None),
            "x" => Ok(TProt::X),
            "rx" => Ok(TProt::Rx),
            "wx" => Ok(TProt::Wx),
            "rwx" => Ok(TProt::Rwx),
            o => Err(format!("bad protection `{}` (-, or the letters r, w, x in that order)", shown(o))),
        }
    }

    /// A madvise advice word (TRACE.md version 2).
    fn advice(&mut self) -> Result<softmm::Advice, String> {
        let w = self.word("advice")?;
        softmm::Advice::from_word(w).ok_or_else(|| {
            let words: Vec<&str> = softmm::Advice::ALL.iter().map(|a| a.word()).collect();
            format!("unknown advice `{}` (expected one of {})", shown(w), words.join(", "))
        })
    }

    fn kind(&mut self) -> Result<TKind, String> {
        match self.word("kind")? {
            "private" => Ok(TKind::Private),
            "shared" => Ok(TKind::Shared),
            o => Err(format!("bad kind `{}` (private or shared)", shown(o))),
        }
    }

    fn hex_byte(&mut self) -> Result<u8, String> {
        let w = self.word("byte")?;
        let h = w.strip_prefix("0x").unwrap_or(w);
        digits(h, 16)
            .filter(|_| h.len() <= 2)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| format!("bad byte `{}` (one hex byte, e.g. ab)", shown(w)))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        match self.next("bytes")? {
            Tok::Quoted(b) => Ok(b.clone()),
            Tok::Word(w) => {
                let h = w
                    .strip_prefix("hex:")
                    .ok_or_else(|| format!("bad bytes `{}` (\"text\" or hex:0011ff)", shown(w)))?;
                if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("bad hex in `{}` (hex digits only)", shown(w)));
                }
                if h.len() % 2 != 0 {
                    return Err(format!("odd number of hex digits in `{}`", shown(w)));
                }
                // All ASCII digits: every pair is two whole characters.
                h.as_bytes()
                    .chunks(2)
                    .map(|pair| {
                        let pair = std::str::from_utf8(pair).ok();
                        pair.and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| format!("bad hex in `{}`", shown(w)))
                    })
                    .collect()
            }
        }
    }
}

/// A number as TRACE.md writes it: decimal digits, or `0x` and hex digits.
fn parse_num(w: &str) -> Option<u64> {
    match w.strip_prefix("0x") {
        Some(h) => digits(h, 16),
        None => digits(w, 10),
    }
}

/// `s` as a number of `radix` if it is one or more of its digits and
/// nothing else (`from_str_radix` alone also takes a leading `+`).
fn digits(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(s, radix).ok()
}

/// Lower-case hex of `bytes`, as `data` lines print it.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trace_md_example() {
        let t = "new P\nmmap P 0x10000000 64K rw private\nwrite P 0x10000000 \"hello\"\nfork P C\n\
                 phys P 0x10000000        # frame 7\nread C 0x10000000 5 # data\nsmaps P 0x10000000\n";
        let lines = parse_trace(t).unwrap();
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[1].op,
            Op::Mmap { a: "P".into(), addr: 0x1000_0000, len: 65536, prot: TProt::Rw, kind: TKind::Private }
        );
        assert_eq!(lines[2].op, Op::Write { a: "P".into(), addr: 0x1000_0000, bytes: b"hello".to_vec() });
        assert_eq!(lines[4].number, 5);
    }

    #[test]
    fn version_2_exec_letters_and_maps() {
        for (text, prot) in
            [("x", TProt::X), ("rx", TProt::Rx), ("wx", TProt::Wx), ("rwx", TProt::Rwx), ("rw", TProt::Rw)]
        {
            let op = parse_line(&format!("mprotect P 0x1000 4K {text}")).unwrap().unwrap();
            assert_eq!(op, Op::Mprotect { a: "P".into(), addr: 0x1000, len: 4096, prot });
            assert_eq!(op.to_string(), format!("mprotect P 0x1000 0x1000 {text}"));
        }
        assert_eq!(parse_line("maps P").unwrap().unwrap(), Op::Maps { a: "P".into() });
        for line in ["mlock P 0x1000 0x2000", "munlock P 0x1000 0x1", "locked P 0x1000"] {
            assert_eq!(parse_line(line).unwrap().unwrap().to_string(), line);
        }
    }

    #[test]
    fn escapes_and_hex() {
        let op = parse_line(r#"write A 4096 "a\n\x41\101\"\\""#).unwrap().unwrap();
        assert_eq!(op, Op::Write { a: "A".into(), addr: 4096, bytes: b"a\nAA\"\\".to_vec() });
        let op = parse_line("write A 4096 hex:00ff10").unwrap().unwrap();
        assert_eq!(op, Op::Write { a: "A".into(), addr: 4096, bytes: vec![0, 0xff, 0x10] });
        assert_eq!(
            parse_line("fill A 0x1000 2M ab").unwrap().unwrap(),
            Op::Fill { a: "A".into(), addr: 4096, len: 2 << 20, byte: 0xab }
        );
    }

    #[test]
    fn malformed_lines_say_why() {
        for bad in [
            "mmap P 0x1000 4K rw",
            "mmap P 0x1000 4K xr private",
            "mmap P 0x1000 4K rrw private",
            "mprotect P 0x1000 4K -x",
            "maps",
            "maps P P",
            "frob P",
            "new 1P",
            "write P 0x1000 \"open",
            "read P 0x1000 5 extra",
            "fill P 0x1000 10 abc",
            "futex_wait P 0x1000 1 W",
            "snapshot P S",
            "restore P",
            "dirty P 0x1000",
            "mmap P 0x1000 99999999999999999999G rw private",
        ] {
            let e = parse_trace(&format!("new P\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn display_round_trips() {
        let t = "new P\nmmap P 0x10000000 64K rw private\nwrite P 0x10000000 \"hi\"\nfork P C\nfill C 4096 3 ab\n\
                 munmap P 4096 4096\nmprotect P 4096 4096 -\nmadvise P 0 4096 dontneed\nread P 1 2\nphys P 3\n\
                 smaps P 4\nfutex_wait P 8 1 as W\nfutex_wake P 8 1\nwaiter W\npin P 0 4096 as Q\n\
                 pinned Q 0 8\nunpin Q\nsnapshot P as S\nrestore P S\ndirty P 0 8K\n\
                 mremap P 0 4K 8K\nmremap P 0 4K 4K maymove fixed 0x2000 dontunmap\n\
                 mremap P 0 4K 4K fixed 8192\nmremap P 0 0 4K dontunmap\nexit C\n";
        for l in parse_trace(t).unwrap() {
            let again = parse_line(&l.op.to_string()).unwrap().unwrap();
            assert_eq!(again, l.op);
        }
    }

    #[test]
    fn file_operations_parse_and_round_trip() {
        let op = parse_line("mmap P 0x10000 8K rw shared file F 0x1000").unwrap().unwrap();
        let want = Op::MmapFile {
            a: "P".into(),
            addr: 0x10000,
            len: 8192,
            prot: TProt::Rw,
            kind: TKind::Shared,
            f: "F".into(),
            off: 0x1000,
        };
        assert_eq!(op, want);
        assert_eq!(parse_line("file F 12K ab").unwrap().unwrap(), Op::File { f: "F".into(), len: 12288, byte: 0xab });
        for line in [
            "file F 0x3000 ab",
            "pwrite F 0x10 hex:0102",
            "pread F 0x0 0x10",
            "truncate F 0x1",
            "msync P 0x1000 0x2000",
            "mmap P 0x1000 0x1000 r private file G 0x0",
        ] {
            let op = parse_line(line).unwrap().unwrap();
            assert_eq!(op.to_string(), line);
            assert_eq!(parse_line(&op.to_string()).unwrap().unwrap(), op);
        }
        for bad in [
            "file F 4K",
            "file 1F 4K 00",
            "pwrite F 0",
            "pread F 0",
            "truncate F",
            "mmap P 0x1000 4K rw shared file F",
            "mmap P 0x1000 4K rw shared file",
            "mmap P 0x1000 4K rw shared F 0",
            "msync P 0x1000",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn mremap_flags_parse_in_their_order_only() {
        let op = parse_line("mremap P 0x1000 4K 8K maymove fixed 0x9000 dontunmap").unwrap().unwrap();
        let flags = RemapArgs { maymove: true, fixed: Some(0x9000), dontunmap: true };
        assert_eq!(op, Op::Mremap { a: "P".into(), old: 0x1000, old_len: 4096, new_len: 8192, flags });
        for bad in ["mremap P 0 4K 4K dontunmap maymove", "mremap P 0 4K 4K fixed", "mremap P 0 4K 4K moved"] {
            assert!(parse_line(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn only_the_documented_number_forms_parse() {
        // TRACE.md: decimal, or `0x` and hex digits; a length may end in K, M or G.
        for bad in [
            "munmap P 0x+10000000 4096",
            "munmap P 0x+1_000 4096",
            "munmap P 0x1_000 4096",
            "munmap P 0X1000 4096",
            "munmap P +4096 4096",
            "munmap P 0x1000 +4K",
            "munmap P 0x1000 0x-1",
            "munmap P 0x 4096",
            "munmap P 0x1000 K",
            "write P 0x1000 hex:+1+2",
            "write P 0x1000 hex:-1",
            "write P 0x1000 hex:0x11",
            "fill P 0x1000 1 +f",
            "fill P 0x1000 1 0x+f",
            "fill P 0x1000 1 -1",
        ] {
            assert!(parse_line(bad).is_err(), "{bad} parsed");
        }
        let ok = |l: &str| parse_line(l).unwrap().unwrap();
        assert_eq!(ok("munmap P 0xAbC000 4K"), Op::Munmap { a: "P".into(), addr: 0xabc000, len: 4096 });
        assert_eq!(ok("munmap P 4096 0x1000"), Op::Munmap { a: "P".into(), addr: 4096, len: 4096 });
        assert_eq!(ok("write P 0 hex:aBcD"), Op::Write { a: "P".into(), addr: 0, bytes: vec![0xab, 0xcd] });
        assert_eq!(ok("fill P 0 1 f"), Op::Fill { a: "P".into(), addr: 0, len: 1, byte: 0xf });
        assert_eq!(ok("fill P 0 1 0xfe"), Op::Fill { a: "P".into(), addr: 0, len: 1, byte: 0xfe });
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        for bad in [
            "write P 0x10000000 hex:a\u{e9}1",
            "write P 0x10000000 hex:\u{e9}\u{e9}",
            "write P 0x10000000 hex:\u{1f600}",
            "fill P 0x1000 1 \u{e9}",
            "fill P 0x1000 1 0x\u{e9}",
            "munmap P 0x\u{e9}1 4K",
            "munmap P 0x1000 \u{e9}K",
            "mmap P 0x1000 4K \u{e9} private",
            "new \u{e9}",
            "\u{e9}",
            "write P 0 \"\\\u{e9}\"",
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn echoed_input_is_bounded_and_escaped() {
        let long = "x".repeat(100_000);
        for line in [long.clone(), format!("new 1{long}"), format!("munmap P {long} 4K"), format!("read P 0 1 {long}")]
        {
            let e = parse_line(&line).unwrap_err();
            assert!(e.len() < 200, "{} bytes: {}", e.len(), e.chars().take(200).collect::<String>());
            assert!(e.contains("..."), "{e}");
        }
        for line in ["fr\0ob P", "new P\x1b[2J", "write P 0 \"\\\x07\"", "munmap P 0x1000 4K\x01"] {
            let e = parse_line(line).unwrap_err();
            assert!(!e.chars().any(|c| c.is_control()), "{line:?}: {e:?}");
        }
    }

    fn read_all(input: impl std::io::BufRead) -> Vec<Result<(usize, String), ParseError>> {
        TraceLines::new(input).collect()
    }

    #[test]
    fn lines_longer_than_the_limit_stop_reading() {
        let at_limit = format!("#{}", "x".repeat(MAX_LINE - 1));
        let text = format!("new P\n{at_limit}\r\n{at_limit}x\nnew Q\n");
        let got = read_all(text.as_bytes());
        assert_eq!(got.len(), 3, "reading stops at the first error");
        assert_eq!(got[0], Ok((1, "new P".to_string())));
        assert_eq!(got[1], Ok((2, at_limit.clone())));
        let e = got[2].clone().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("64 KiB"), "{e}");
        // The same limit holds for a trace parsed from memory.
        assert_eq!(parse_trace(&text).unwrap_err().line, 3);
        // An endless line (`/dev/zero`) ends in the same error, without
        // reading more than the limit.
        let got = read_all(std::io::BufReader::new(std::io::repeat(0)));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].clone().unwrap_err().line, 1);
    }

    #[test]
    fn non_utf8_lines_are_errors_naming_the_line() {
        let got = read_all(&b"new P\nnew \xff\xfe\nnew Q\n"[..]);
        assert_eq!(got.len(), 2);
        let e = got[1].clone().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("UTF-8"), "{e}");
        // The last line needs no newline.
        let got = read_all(&b"new P\nnew Q"[..]);
        assert_eq!(got, vec![Ok((1, "new P".to_string())), Ok((2, "new Q".to_string()))]);
    }

    #[test]
    fn comments_and_blank_lines() {
        assert_eq!(parse_line("   # nothing").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
