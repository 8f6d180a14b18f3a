//! Every change of page-table entries of a live address space goes through
//! `mm::Change` (`src/mm/change.rs`), which runs the side effects in one
//! order. This scans the source tree:
//! - the raw slot writers (the zap core, stores into a table slot) are
//!   named only inside `src/pgtable/`;
//! - outside it, a table is locked for writing only with a `pgtable::Edit`,
//!   and only the change type mints one.

use std::path::{Path, PathBuf};

/// Names of the raw writers.
const RAW: &[&str] = &["zap_entries(", "drop_shared(", "set_bits_lockless("];

/// Atomic writes, which must not be applied to a table slot (`slot(`).
const WRITES: &[&str] = &[".store(", ".swap(", "compare_exchange", ".fetch_"];

/// Whether a line of code writes page-table entries without the change type.
fn raw(code: &str) -> bool {
    RAW.iter().any(|r| code.contains(r)) || (code.contains("slot(") && WRITES.iter().any(|w| code.contains(w)))
}

/// The leave to write entries is minted only by the change type.
const MINT: &str = "Edit::for_change(";
const MINTER: &str = "src/mm/change.rs";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The offending `(file, line number, line)` of the tree under `root`.
fn offenders(root: &Path) -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let in_pgtable = rel.starts_with("src/pgtable/");
        for (n, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if (!in_pgtable && raw(code)) || (code.contains(MINT) && rel != MINTER) {
                bad.push((rel.clone(), n + 1, line.trim().to_string()));
            }
        }
    }
    bad
}

#[test]
fn raw_slot_writers_stay_in_pgtable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bad = offenders(root);
    assert!(bad.is_empty(), "page-table writes outside src/pgtable/ or without mm::Change: {bad:#?}");
}

#[test]
fn the_check_finds_a_raw_store() {
    // A tree with one offending file: the scan must report it (so the test
    // above cannot pass by scanning nothing).
    let dir = std::env::temp_dir().join(format!("softmm-raw-stores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/mm")).unwrap();
    std::fs::create_dir_all(dir.join("src/pgtable")).unwrap();
    std::fs::write(dir.join("src/mm/bad.rs"), "fn f() { crate::pgtable::zap_entries(a, t, b, l, h, z); }\n").unwrap();
    std::fs::write(
        dir.join("src/mm/fine.rs"),
        "// zap_entries( in a comment is fine\nfn l() { slot(a, t, i).load(o); }\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/reclaim.rs"), "fn s() { pgtable::slot(a, t, i).store(0, o); }\n").unwrap();
    std::fs::write(dir.join("src/pgtable/mod.rs"), "pub fn zap_entries() {}\nfn g() { zap_entries(); }\n").unwrap();
    // The leave to write, minted outside the change type (even in pgtable).
    std::fs::write(dir.join("src/pgtable/share.rs"), "fn m() { let e = Edit::for_change(); }\n").unwrap();
    std::fs::write(dir.join("src/mm/change.rs"), "fn open() { let e = Edit::for_change(); }\n").unwrap();
    std::fs::write(dir.join("src/mm/fault.rs"), "fn f() { pt.lock(a, t, b, Edit::for_change()); }\n").unwrap();
    let bad = offenders(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let mut files: Vec<&str> = bad.iter().map(|b| b.0.as_str()).collect();
    files.sort_unstable();
    assert_eq!(files, ["src/mm/bad.rs", "src/mm/fault.rs", "src/pgtable/share.rs", "src/reclaim.rs"], "{bad:?}");
}
