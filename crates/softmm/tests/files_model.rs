//! Files against a model: random pwrite, pread, ftruncate, stores and
//! loads through a shared mapping and through a private one, fsync and
//! reclaim, on an in-memory or a host file, compared with a byte vector
//! (and, after each sync, the host file's bytes), with the invariant audit
//! after every step. A private mapping's page reads the file until the
//! mapping writes it; from then on it is the mapping's own copy, which no
//! later write to the file reaches (and which `MADV_DONTNEED` drops, and a
//! truncation below the page).
//!
//! `PROPTEST_CASES` overrides the number of cases (256).

use proptest::prelude::*;
use softmm::reclaim::device::MemSwap;
use softmm::{Config, Error, Machine, MapKind, Placement, Prot, SwapConfig};
use std::sync::Arc;

const PAGE: u64 = 4096;
const BASE: u64 = 0x1000_0000;
/// Where the private mapping of the same file starts.
const PRIVATE: u64 = 0x3000_0000;
/// Pages the mapping covers; the file may grow past them.
const MAP_PAGES: u64 = 8;
const MAX_SIZE: u64 = 10 * PAGE;

#[derive(Debug, Clone)]
enum Op {
    Pwrite { off: u64, len: usize, byte: u8 },
    Pread { off: u64, len: usize },
    Truncate { len: u64 },
    Store { page: u64, off: u64, len: u64, byte: u8 },
    Load { page: u64, off: u64, len: u64 },
    Sync,
    Reclaim { n: usize },
    PrivateStore { page: u64, off: u64, len: u64, byte: u8 },
    PrivateLoad { page: u64, off: u64, len: u64 },
    PrivateDrop { page: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let in_page = (0u64..PAGE).prop_flat_map(|o| (Just(o), 1u64..=(PAGE - o)));
    prop_oneof![
        4 => (0..MAX_SIZE, 1usize..6000, any::<u8>()).prop_map(|(off, len, byte)| Op::Pwrite { off, len, byte }),
        3 => (0..MAX_SIZE + PAGE, 0usize..9000).prop_map(|(off, len)| Op::Pread { off, len }),
        2 => (0..MAX_SIZE).prop_map(|len| Op::Truncate { len }),
        4 => (0..MAP_PAGES, in_page.clone(), any::<u8>())
            .prop_map(|(page, (off, len), byte)| Op::Store { page, off, len, byte }),
        3 => (0..MAP_PAGES, in_page.clone()).prop_map(|(page, (off, len))| Op::Load { page, off, len }),
        1 => Just(Op::Sync),
        1 => (1usize..32).prop_map(|n| Op::Reclaim { n }),
        3 => (0..MAP_PAGES, in_page.clone(), any::<u8>())
            .prop_map(|(page, (off, len), byte)| Op::PrivateStore { page, off, len, byte }),
        3 => (0..MAP_PAGES, in_page).prop_map(|(page, (off, len))| Op::PrivateLoad { page, off, len }),
        1 => (0..MAP_PAGES).prop_map(|page| Op::PrivateDrop { page }),
    ]
}

struct World {
    m: Machine,
    mm: softmm::Mm,
    f: softmm::File,
    path: Option<std::path::PathBuf>,
    model: Vec<u8>,
    /// The private mapping's own copy of each page it wrote; a byte the
    /// copy took from past the end of the file is unknown (`None`: the
    /// shared mapping may have stored there).
    copies: Vec<Option<Vec<Option<u8>>>>,
}

impl World {
    fn new(host: bool, case: u64) -> World {
        let dev = Arc::new(MemSwap::new(4 << 20).unwrap());
        let m = Machine::new(Config {
            arena_bytes: 64 << 20,
            mem_limit: Some(24 * PAGE),
            swap: SwapConfig::Device(dev),
            cpu_caches: 1,
            prezero: false,
            ..Config::default()
        })
        .unwrap();
        let init = vec![0x5au8; 3 * PAGE as usize + 100];
        let (f, path, model) = if host {
            let p = std::env::temp_dir().join(format!("softmm-files-model-{}-{case}", std::process::id()));
            std::fs::write(&p, &init).unwrap();
            (m.open_file(&p).unwrap(), Some(p), init)
        } else {
            (m.memfd("model", 0).unwrap(), None, Vec::new())
        };
        let mm = m.new_mm().unwrap();
        mm.mmap_file(BASE, MAP_PAGES * PAGE, Prot::RW, MapKind::Shared, Placement::Fixed, &f, 0).unwrap();
        mm.mmap_file(PRIVATE, MAP_PAGES * PAGE, Prot::RW, MapKind::Private, Placement::Fixed, &f, 0).unwrap();
        World { m, mm, f, path, model, copies: vec![None; MAP_PAGES as usize] }
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Pwrite { off, len, byte } => {
                prop_assert_eq!(self.f.pwrite(off, &vec![byte; len]).unwrap(), len);
                let end = off as usize + len;
                if end > self.model.len() {
                    self.model.resize(end, 0);
                }
                self.model[off as usize..end].fill(byte);
            }
            Op::Pread { off, len } => {
                let mut buf = vec![0u8; len];
                let n = self.f.pread(off, &mut buf).unwrap();
                let want = self.model.get(off as usize..).map_or(&[][..], |t| &t[..t.len().min(len)]);
                same(&buf[..n], want, "pread")?;
            }
            Op::Truncate { len } => {
                self.f.truncate(len).unwrap();
                if len < self.size() {
                    // The private mapping's copies of pages wholly past the
                    // new end go too (Linux's truncate_pagecache).
                    for (page, copy) in self.copies.iter_mut().enumerate() {
                        if page as u64 * PAGE >= len {
                            *copy = None;
                        }
                    }
                }
                self.model.resize(len as usize, 0);
            }
            Op::Store { page, off, len, byte } => {
                let at = page * PAGE + off;
                let r = self.mm.write(BASE + at, &vec![byte; len as usize]);
                if page * PAGE >= self.size() {
                    prop_assert_eq!(r, Err(Error::Bus { addr: BASE + page * PAGE }));
                } else {
                    r.unwrap();
                    // Bytes past the end in the last page are the mapping's
                    // only; the model keeps those before it.
                    let end = (at + len).min(self.size());
                    if at < end {
                        self.model[at as usize..end as usize].fill(byte);
                    }
                }
            }
            Op::Load { page, off, len } => {
                let at = page * PAGE + off;
                let mut buf = vec![0u8; len as usize];
                let r = self.mm.read(BASE + at, &mut buf);
                if page * PAGE >= self.size() {
                    prop_assert_eq!(r, Err(Error::Bus { addr: BASE + page * PAGE }));
                } else {
                    r.unwrap();
                    let end = (at + len).min(self.size());
                    if at < end {
                        same(&buf[..(end - at) as usize], &self.model[at as usize..end as usize], "load")?;
                    }
                }
            }
            Op::Sync => {
                self.f.sync().unwrap();
                if let Some(p) = &self.path {
                    same(&std::fs::read(p).unwrap(), &self.model, "host file after sync")?;
                }
            }
            Op::Reclaim { n } => {
                self.m.reclaim(n);
            }
            Op::PrivateStore { page, off, len, byte } => self.private_store(page, off, len, byte)?,
            Op::PrivateLoad { page, off, len } => self.private_load(page, off, len)?,
            Op::PrivateDrop { page } => {
                self.mm.madvise(PRIVATE + page * PAGE, PAGE, softmm::Advice::DontNeed).unwrap();
                self.copies[page as usize] = None;
            }
        }
        self.f.len().eq(&self.size()).then_some(()).ok_or_else(|| TestCaseError::fail("length differs"))?;
        if let Err(e) = self.m.check_invariants() {
            return Err(TestCaseError::fail(format!("{e}")));
        }
        Ok(())
    }
}

impl World {
    /// The file's page `page` as a private mapping reads it: the model's
    /// bytes before the end of the file, unknown ones past it.
    fn file_page(&self, page: u64) -> Vec<Option<u8>> {
        (page * PAGE..(page + 1) * PAGE).map(|i| self.model.get(i as usize).copied()).collect()
    }

    /// A store through the private mapping: the first one to a page copies
    /// it from the file (SIGBUS wholly past the end), later ones go to the
    /// copy (a truncation below the page drops it).
    fn private_store(&mut self, page: u64, off: u64, len: u64, byte: u8) -> Result<(), TestCaseError> {
        let r = self.mm.write(PRIVATE + page * PAGE + off, &vec![byte; len as usize]);
        if self.copies[page as usize].is_none() {
            if page * PAGE >= self.size() {
                prop_assert_eq!(r, Err(Error::Bus { addr: PRIVATE + page * PAGE }));
                return Ok(());
            }
            self.copies[page as usize] = Some(self.file_page(page));
        }
        r.unwrap();
        if let Some(copy) = self.copies[page as usize].as_mut() {
            copy[off as usize..(off + len) as usize].fill(Some(byte));
        }
        Ok(())
    }

    /// A load through the private mapping: its copy, else the file's page.
    fn private_load(&mut self, page: u64, off: u64, len: u64) -> Result<(), TestCaseError> {
        let mut buf = vec![0u8; len as usize];
        let r = self.mm.read(PRIVATE + page * PAGE + off, &mut buf);
        let want = match &self.copies[page as usize] {
            Some(copy) => copy.clone(),
            None if page * PAGE >= self.size() => {
                prop_assert_eq!(r, Err(Error::Bus { addr: PRIVATE + page * PAGE }));
                return Ok(());
            }
            None => self.file_page(page),
        };
        r.unwrap();
        let want = &want[off as usize..(off + len) as usize];
        let known: Vec<(u8, u8)> = buf.iter().zip(want).filter_map(|(&g, w)| w.map(|w| (g, w))).collect();
        let (got, want): (Vec<u8>, Vec<u8>) = known.into_iter().unzip();
        same(&got, &want, "private load")
    }
}

/// Equal bytes, or a failure naming the first difference (not the bytes).
fn same(got: &[u8], want: &[u8], what: &str) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Err(TestCaseError::fail(format!(
        "{what}: {} bytes, want {}; first difference at {at}: {:?} vs {:?}",
        got.len(),
        want.len(),
        got.get(at),
        want.get(at)
    )))
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn files_match_the_model(host in any::<bool>(), case in any::<u64>(), ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World::new(host, case);
        for op in &ops {
            w.step(op)?;
        }
    }
}
