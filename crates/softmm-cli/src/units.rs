//! Parsing and printing of sizes, percentages and durations, and the
//! host's free memory and disk space.

/// Bytes in a page.
pub const PAGE: u64 = 4096;

/// The largest size accepted on the command line (1 TiB): far beyond what
/// this tool can touch, small enough that page arithmetic cannot overflow.
const MAX_SIZE: u64 = 1 << 40;

/// Parse a size such as `4096`, `512K`, `64M`, `1G`, `1GiB`, `2mb` (binary
/// units, case-insensitive). The result is rounded up to whole pages and must
/// be at least one page and at most 1 TiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("'{s}' is not a size (expected e.g. 4096, 64M, 1G)"));
    }
    let shift = match suffix.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size suffix '{other}' in '{s}' (use K, M, G or T)")),
    };
    let n: u64 = num.parse().map_err(|_| format!("'{num}' is too large"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .filter(|&b| b <= MAX_SIZE)
        .ok_or_else(|| format!("'{s}' is larger than the maximum of 1T"))?;
    if bytes == 0 {
        return Err("the size must be at least one byte".into());
    }
    Ok(bytes.div_ceil(PAGE) * PAGE)
}

/// Parse a percentage in [0, 100].
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not a percentage between 0 and 100"));
    }
    Ok(v)
}

/// "1.00 GiB", "64.0 MiB", "12 KiB".
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A duration given in nanoseconds: "812 ns", "3.41 µs", "12.3 ms", "1.234 s".
pub fn ns(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.2} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.1} ms", v / 1e6)
    } else {
        format!("{:.3} s", v / 1e9)
    }
}

/// An integer with thousands separators: 1,048,576.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Memory the host can still give us, from `/proc/meminfo` (`MemAvailable`).
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Free bytes for an unprivileged user in the file system holding `dir`.
pub fn free_space(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    st.f_bavail.checked_mul(st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 kb"), Ok(512 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("2T").is_err());
        assert!(parse_size("99999999999999999999999").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("2"), Ok(2.0));
        assert_eq!(parse_percent("2.5%"), Ok(2.5));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("NaN").is_err());
    }

    #[test]
    fn printing() {
        assert_eq!(bytes(1 << 30), "1.00 GiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(100), "100 B");
        assert_eq!(count(1048576), "1,048,576");
        assert_eq!(count(12), "12");
        assert_eq!(ns(812.0), "812 ns");
        assert_eq!(ns(1.5e9), "1.500 s");
    }
}
