//! The layer order of `docs/ARCHITECTURE.md`, checked over the source tree.
//!
//! Every `.rs` file under `src/` belongs to one layer (by its module path,
//! longest prefix first). Every path the file names — `crate::a::b`,
//! `super::x`, the items of `use crate::{..}` groups, and names the crate
//! root re-exports (`crate::Mm` is `mm`'s) — is resolved to the module that
//! defines it, and so to a layer. A path into a higher layer is an arrow
//! pointing up: the test fails listing every one that is not a known
//! exception below, and every exception that no longer occurs (so the list
//! stays true as arrows are removed).
//!
//! Unit-test modules (`#[cfg(test)]`, `#[cfg(all(test, ..))]`) are left out:
//! tests drive a layer from outside, they are no part of it. Comments and
//! string literals are left out too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use its own layer and those below it. Keep
/// this table and the one at the top of `docs/ARCHITECTURE.md` the same.
const LAYERS: &[(&str, &[&str])] = &[
    ("primitives", &["sync", "error", "few", "stats", "snaplog"]),
    ("frames", &["phys"]),
    ("swap space", &["reclaim::swap", "reclaim::device"]),
    ("tables", &["pte", "pgtable", "tlb"]),
    ("areas and observers", &["vma", "rmap", "notifier", "vcache"]),
    ("objects", &["shm"]),
    ("address spaces", &["mm"]),
    ("reclaim", &["reclaim"]),
    ("clients", &["access", "futex"]),
    ("machine", &["machine", "file"]),
];

/// Arrows that point up today, each with why it is still there:
/// (from module prefix, to module prefix, reason). A prefix covers the
/// module and every module under it.
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "mm",
        "machine",
        "an address space reaches the arena, counters, config and registries through MachineInner, \
         which also owns the layers above (reclaim, futexes): the context wants splitting off the machine",
    ),
    ("reclaim", "machine", "as mm: the reclaimer works on MachineInner"),
    ("mm", "reclaim", "faults call reclaim (direct reclaim, swap_in, out_of_memory); Mm::migrate calls migration"),
    ("mm", "access", "Mm::accessor builds an Accessor (public API convenience)"),
    ("rmap", "mm", "an anon_vma's members are address spaces (MmRef holds Weak<MmInner>); walks hand them out"),
    ("vma", "shm", "a shared VMA's backing names its shared object (Backing::Shm(ShmLink))"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path of a source file: `phys/mod.rs` and `phys.rs` are `phys`,
/// `phys/alloc.rs` is `phys::alloc`, `lib.rs` is the root (empty).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `prefix` is `module` or one of its ancestors.
fn covers(prefix: &str, module: &str) -> bool {
    module == prefix || module.starts_with(&format!("{prefix}::"))
}

/// The layer of a module (index into `LAYERS`), by longest prefix.
fn layer_of(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, mods)) in LAYERS.iter().enumerate() {
        for m in mods.iter() {
            if covers(m, module) && best.is_none_or(|(len, _)| m.len() > len) {
                best = Some((m.len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// The source with comments, string and char literals blanked (newlines
/// kept, so positions still mean lines).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            // Nested block comments.
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(rest, i == 0 || !is_ident(b[i - 1])) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let j = (j + 1).min(rest.len());
            blank(&mut out, &rest[..j]);
            i += j;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\'', '\u{..}'), else a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = src[i + 1..].chars().next();
                ch.and_then(|c| (rest.get(1 + c.len_utf8()) == Some(&b'\'')).then_some(2 + c.len_utf8()))
            };
            let len = len.unwrap_or(1);
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            // Whole UTF-8 characters, so `out` stays a valid string.
            let c = src[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Length of a raw string literal (`r"..."`, `r#"..."#`, `br".."`) at the
/// start of `s`, if one starts there.
fn raw_string_len(s: &[u8], at_token_start: bool) -> Option<usize> {
    if !at_token_start {
        return None;
    }
    let mut j = usize::from(s.first() == Some(&b'b'));
    if s.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = s[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if s.get(j) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
    let body = &s[j + 1..];
    let end = body.windows(close.len()).position(|w| w == close.as_slice())?;
    Some(j + 1 + end + close.len())
}

/// The source without unit-test modules: an item after `#[cfg(test)]` or
/// `#[cfg(all(test, ..))]` is blanked up to its closing brace (or `;`).
fn drop_test_modules(src: &str) -> String {
    drop_test_items(src).0
}

/// As `drop_test_modules`, and the names of test modules kept in files of
/// their own (`#[cfg(test)] mod tests;`).
fn drop_test_items(src: &str) -> (String, Vec<String>) {
    let mut test_files = Vec::new();
    let mut s = src.to_string();
    let mut from = 0;
    while let Some(p) = find_test_cfg(&s, from) {
        let b = s.as_bytes();
        let mut j = p;
        let mut depth = 0usize;
        let mut end = b.len();
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item = s[p..end].split_once(")]").map_or("", |(_, rest)| rest).trim();
        if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            test_files.push(name.trim().to_string());
        }
        let blanked: String = s[p..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        s.replace_range(p..end, &blanked);
        from = end;
    }
    (s, test_files)
}

/// The next `#[cfg(test)]`/`#[cfg(all(test, ..))]` attribute at or after `from`.
fn find_test_cfg(s: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(off) = s[at..].find("#[cfg(") {
        let p = at + off;
        let args = &s[p + "#[cfg(".len()..];
        let args = args.split(")]").next().unwrap_or("");
        let compact: String = args.chars().filter(|c| !c.is_whitespace()).collect();
        if compact == "test" || compact.starts_with("all(test,") {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

/// Every path starting at a `crate::` or `super::` in `code`, as segments
/// after the keyword(s), with `use` groups expanded (`crate::{a::X, b}`
/// gives `a::X` and `b`). Returns (line, is_super_count, segments).
fn paths(code: &str) -> Vec<(usize, usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let (mut i, mut line, mut counted) = (0, 1, 0);
    while i < b.len() {
        line += b[counted..i].iter().filter(|&&c| c == b'\n').count();
        counted = i;
        let start_ok = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b'$');
        if start_ok && code[i..].starts_with("crate::") {
            let mut out = Vec::new();
            let end = parse_tail(code, i + "crate::".len(), Vec::new(), &mut out);
            found.extend(out.into_iter().map(|p| (line, 0, p)));
            i = end.max(i + 1);
        } else if start_ok && code[i..].starts_with("super::") {
            let mut j = i;
            let mut ups = 0;
            while code[j..].starts_with("super::") {
                ups += 1;
                j += "super::".len();
            }
            let mut out = Vec::new();
            let end = parse_tail(code, j, Vec::new(), &mut out);
            found.extend(out.into_iter().map(|p| (line, ups, p)));
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

fn skip_ws(code: &str, mut i: usize) -> usize {
    while i < code.len() && code.as_bytes()[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parse the rest of a path at `i` (after a `::`): identifiers joined by
/// `::`, or a `{..}` group of such. Pushes complete paths to `out`; returns
/// where parsing stopped.
fn parse_tail(code: &str, i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let b = code.as_bytes();
    let mut i = skip_ws(code, i);
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            i = skip_ws(code, i);
            if i >= b.len() {
                return i;
            }
            match b[i] {
                b'}' => return i + 1,
                b',' => i += 1,
                _ => {
                    let before = i;
                    i = parse_tail(code, i, prefix.clone(), out);
                    // Skip `as name` and anything else up to `,` or `}`.
                    while i < b.len() && b[i] != b',' && b[i] != b'}' && b[i] != b'{' {
                        i += 1;
                    }
                    if i == before {
                        i += 1;
                    }
                }
            }
        }
    }
    let start = i;
    while i < b.len() && (is_ident(b[i]) || b[i] == b'*') {
        i += 1;
    }
    if i == start {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return i;
    }
    let mut path = prefix;
    path.push(code[start..i].to_string());
    if code[i..].starts_with("::") && !code[i + 2..].starts_with('<') {
        return parse_tail(code, i + 2, path, out);
    }
    out.push(path);
    i
}

/// What the crate root re-exports: name -> the path it names (`lib.rs`'s
/// `pub use` items and its modules).
fn root_exports(lib: &str) -> HashMap<String, Vec<String>> {
    let code = strip(lib);
    let mut map = HashMap::new();
    for stmt in code.split(';') {
        let t = stmt.trim();
        if let Some(rest) = t.strip_prefix("pub use ") {
            let mut out = Vec::new();
            parse_tail(rest, 0, Vec::new(), &mut out);
            for p in out {
                if let Some(last) = p.last() {
                    map.insert(last.clone(), p.clone());
                }
            }
        }
    }
    map
}

/// The module a path names: its longest prefix that is a module.
fn resolve(segs: &[String], modules: &BTreeSet<String>) -> String {
    let mut best = String::new();
    for n in 1..=segs.len() {
        let m = segs[..n].join("::");
        if modules.contains(&m) {
            best = m;
        }
    }
    best
}

struct Arrow {
    from: String,
    to: String,
    file: String,
    line: usize,
    path: String,
}

fn arrows() -> Vec<Arrow> {
    let src = src_dir();
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f.strip_prefix(&src).expect("under src"))).collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let exports = root_exports(&lib);
    let mut code_of = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for f in &files {
        let from = module_of(f.strip_prefix(&src).expect("under src"));
        let (code, tests) = drop_test_items(&strip(&std::fs::read_to_string(f).expect("read source")));
        for t in tests {
            test_only.insert(if from.is_empty() { t } else { format!("{from}::{t}") });
        }
        code_of.insert(f.clone(), code);
    }
    let mut unmapped = Vec::new();
    let mut up = Vec::new();
    for (f, code) in &code_of {
        let rel = f.strip_prefix(&src).expect("under src");
        let from = module_of(rel);
        if from.is_empty() || test_only.iter().any(|t| covers(t, &from)) {
            continue; // lib.rs re-exports every layer; test files are no layer
        }
        let Some(from_layer) = layer_of(&from) else {
            unmapped.push(from);
            continue;
        };
        for (line, ups, segs) in paths(code) {
            let mut full: Vec<String> = if ups == 0 {
                Vec::new()
            } else {
                let mut m: Vec<String> = from.split("::").map(String::from).collect();
                // `super` is the file's module's parent (`phys/mod.rs` is
                // `phys`, so its `super` is the root). Inline modules are
                // not tracked: a `super` inside one lands one level too
                // high, on an ancestor, never on a higher layer's module.
                m.truncate(m.len().saturating_sub(ups));
                m
            };
            full.extend(segs.iter().cloned());
            // A name the crate root re-exports stands for its definition.
            if let Some(first) = full.first() {
                if !modules.contains(first) {
                    if let Some(def) = exports.get(first) {
                        let mut d = def.clone();
                        d.extend(full[1..].iter().cloned());
                        full = d;
                    }
                }
            }
            let to = resolve(&full, &modules);
            if to.is_empty() {
                continue; // the root itself, or an item defined in lib.rs
            }
            let Some(to_layer) = layer_of(&to) else {
                unmapped.push(to);
                continue;
            };
            if to_layer > from_layer {
                up.push(Arrow { from: from.clone(), to, file: rel.display().to_string(), line, path: full.join("::") });
            }
        }
    }
    unmapped.sort();
    unmapped.dedup();
    assert!(unmapped.is_empty(), "modules with no layer in LAYERS (add them to the table): {unmapped:?}");
    up
}

#[test]
fn no_layer_imports_a_higher_one() {
    let up = arrows();
    let mut used = vec![false; KNOWN.len()];
    let mut bad = BTreeMap::<(String, String), Vec<String>>::new();
    for a in &up {
        match KNOWN.iter().position(|(f, t, _)| covers(f, &a.from) && covers(t, &a.to)) {
            Some(k) => used[k] = true,
            None => {
                bad.entry((a.from.clone(), a.to.clone())).or_default().push(format!("{}:{} {}", a.file, a.line, a.path))
            }
        }
    }
    let name = |m: &str| LAYERS[layer_of(m).expect("mapped")].0;
    let mut report = String::new();
    for ((from, to), sites) in &bad {
        report += &format!("\n  {from} ({}) -> {to} ({}):", name(from), name(to));
        for s in sites {
            report += &format!("\n      {s}");
        }
    }
    let stale: Vec<_> =
        KNOWN.iter().zip(&used).filter(|(_, &u)| !u).map(|(k, _)| format!("{} -> {}", k.0, k.1)).collect();
    assert!(bad.is_empty(), "arrows pointing up the layer table (docs/ARCHITECTURE.md):{report}");
    assert!(stale.is_empty(), "known exceptions that no longer occur (remove them from KNOWN): {stale:?}");
}

/// The three arrows the layer table was written against stay gone, whatever
/// `KNOWN` says.
#[test]
fn frames_and_notifiers_point_down() {
    let up = arrows();
    let forbidden = [("phys", "mm"), ("phys", "pgtable"), ("notifier", "mm")];
    let hits: Vec<_> = up
        .iter()
        .filter(|a| forbidden.iter().any(|(f, t)| covers(f, &a.from) && covers(t, &a.to)))
        .map(|a| format!("{}:{} {}", a.file, a.line, a.path))
        .collect();
    assert!(hits.is_empty(), "{hits:?}");
}

/// The checker itself: it sees `use` groups, `super::`, root re-exports,
/// and not comments, strings or test modules.
#[test]
fn the_checker_sees_what_it_must() {
    let code = strip(
        "use crate::{error::Error, phys::{meta::FrameMeta, FrameId as F}};\n\
         // crate::mm::MmInner\n\
         let s = \"crate::futex::x\"; let c = '\"'; fn f<'a>(x: &'a u8) {}\n\
         use super::super::pte::Pte;\n\
         #[cfg(test)]\nmod tests { use crate::machine::Machine; }\n\
         crate::notifier::Event::Cow\n",
    );
    let code = drop_test_modules(&code);
    let got: Vec<(usize, String)> = paths(&code).into_iter().map(|(_, ups, p)| (ups, p.join("::"))).collect();
    assert_eq!(
        got,
        vec![
            (0, "error::Error".to_string()),
            (0, "phys::meta::FrameMeta".to_string()),
            (0, "phys::FrameId".to_string()),
            (2, "pte::Pte".to_string()),
            (0, "notifier::Event::Cow".to_string()),
        ]
    );
    let ex = root_exports("pub use mm::{Mm, PinnedPages};\npub use phys::{FrameId, PAGE_SIZE};\n");
    assert_eq!(ex.get("Mm"), Some(&vec!["mm".to_string(), "Mm".to_string()]));
    assert_eq!(layer_of("reclaim::swap"), layer_of("reclaim::device"));
    assert!(layer_of("reclaim::swap") < layer_of("pgtable"));
    assert!(layer_of("reclaim::scan") > layer_of("mm"));
    assert_eq!(module_of(Path::new("phys/mod.rs")), "phys");
    assert_eq!(module_of(Path::new("phys/alloc.rs")), "phys::alloc");
}
