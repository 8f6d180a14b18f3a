//! F and D arithmetic with RISC-V's semantics on top of the host's IEEE
//! arithmetic (which rounds to nearest, ties to even).
//!
//! - NaN results are the canonical NaN; single values live NaN-boxed in
//!   64-bit registers (upper half all ones; anything else reads as NaN).
//! - Rounding modes: add, sub, mul, div, sqrt, int->float and
//!   double->single conversions honour all five modes. The host result is
//!   correct for round-to-nearest-even; the sign of its exact error (TwoSum
//!   for sums, an exact integer comparison of products for mul, div and
//!   sqrt) says which side the exact value lies on, and the result moves
//!   one ulp when a directed mode wants the other neighbour. Singles are
//!   computed in double (exact for these operations: 53 >= 2*24+2) and
//!   rounded the same way (a tie of the second rounding is decided by the
//!   first one's error). Fused multiply-add gets its error sign from an
//!   exact multi-limb sum of `a*b + c - result`, so it honours the modes
//!   and flags too. Ties-to-max-magnitude (RMM) is treated as ties-to-even
//!   in double results; single results and conversions to integer honour
//!   it.
//! - Underflow is detected after rounding (as RISC-V does) from the
//!   result's magnitude: a result that rounds up to the smallest normal is
//!   not flagged, where IEEE's "after rounding" with unbounded exponent
//!   would flag it.
//! - fflags: NV, DZ, OF, UF, NX for every operation above.

/// fflags bits.
pub const NV: u32 = 0x10;
pub const DZ: u32 = 0x08;
pub const OF: u32 = 0x04;
pub const UF: u32 = 0x02;
pub const NX: u32 = 0x01;

/// Rounding modes (the `rm` field and `frm`).
pub const RNE: u8 = 0;
pub const RTZ: u8 = 1;
pub const RDN: u8 = 2;
pub const RUP: u8 = 3;
pub const RMM: u8 = 4;

const CANON_F32: u32 = 0x7fc0_0000;
const CANON_F64: u64 = 0x7ff8_0000_0000_0000;
const BOX: u64 = 0xffff_ffff_0000_0000;

/// The single held in a 64-bit register (a non-boxed value is NaN).
pub fn unbox(r: u64) -> f32 {
    if r & BOX == BOX {
        f32::from_bits(r as u32)
    } else {
        f32::from_bits(CANON_F32)
    }
}

/// Box a single into a register value.
pub fn boxed(v: f32) -> u64 {
    BOX | u64::from(v.to_bits())
}

/// Box a single result, canonicalising NaN.
pub fn box_result(v: f32) -> u64 {
    if v.is_nan() {
        BOX | u64::from(CANON_F32)
    } else {
        boxed(v)
    }
}

/// A double result's bits, canonicalising NaN.
pub fn d_result(v: f64) -> u64 {
    if v.is_nan() {
        CANON_F64
    } else {
        v.to_bits()
    }
}

fn snan32(v: f32) -> bool {
    v.is_nan() && v.to_bits() & 0x0040_0000 == 0
}
fn snan64(v: f64) -> bool {
    v.is_nan() && v.to_bits() & 0x0008_0000_0000_0000 == 0
}

/// Binary arithmetic operations with directed rounding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Sqrt,
}

/// The neighbour of `x` one ulp up (toward +inf) or down.
fn step(x: f64, up: bool) -> f64 {
    if x.is_nan() || (x.is_infinite() && (x > 0.0) == up) {
        return x;
    }
    if x == 0.0 {
        let tiny = f64::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let b = x.to_bits();
    let away = (x > 0.0) == up;
    f64::from_bits(if away { b + 1 } else { b - 1 })
}

/// Move the nearest-even result `r` to the neighbour `rm` asks for, given
/// the sign of `exact - r` (`err`: -1, 0, +1).
fn direct(r: f64, err: i8, rm: u8) -> f64 {
    let toward_zero_needed = |r: f64| (r > 0.0 && err < 0) || (r < 0.0 && err > 0);
    match rm {
        RDN if err < 0 => step(r, false),
        RUP if err > 0 => step(r, true),
        RTZ if toward_zero_needed(r) => step(r, r < 0.0),
        _ => r,
    }
}

fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// `|x|` of a finite double as `mantissa * 2^exponent`.
fn decompose(x: f64) -> (u128, i32) {
    let b = x.to_bits();
    let e = ((b >> 52) & 0x7ff) as i32;
    let m = u128::from(b & ((1 << 52) - 1));
    if e == 0 {
        (m, -1074)
    } else {
        (m | (1 << 52), e - 1075)
    }
}

/// An exact real number `(-1)^neg * m * 2^e`.
#[derive(Clone, Copy)]
struct Exact {
    neg: bool,
    m: u128,
    e: i32,
}

impl Exact {
    fn of(x: f64) -> Exact {
        let (m, e) = decompose(x);
        Exact { neg: x.is_sign_negative(), m, e }
    }
    /// The exact product (mantissas of at most 53 bits: fits in 106).
    fn mul(self, o: Exact) -> Exact {
        Exact { neg: self.neg ^ o.neg, m: self.m * o.m, e: self.e + o.e }
    }
    fn signum(self) -> i8 {
        match (self.m == 0, self.neg) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }
    /// The sign of `self - o`.
    fn cmp(self, o: Exact) -> i8 {
        let (s1, s2) = (self.signum(), o.signum());
        if s1 != s2 || s1 == 0 {
            return sign(f64::from(s1) - f64::from(s2));
        }
        let (z1, z2) = (self.m.leading_zeros(), o.m.leading_zeros());
        let (n1, x1) = (self.m << z1, self.e - z1 as i32);
        let (n2, x2) = (o.m << z2, o.e - z2 as i32);
        let mag = match x1.cmp(&x2).then(n1.cmp(&n2)) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        };
        mag * s1
    }
}

/// Nearest-even result and the sign of `exact - result`, for finite
/// inputs and a finite result. Products are compared exactly in integers,
/// so results that underflow (even to zero) still know their error.
fn nearest_with_error(op: Arith, a: f64, b: f64) -> (f64, i8) {
    match op {
        Arith::Add | Arith::Sub => {
            // TwoSum: the rounding error of a sum is itself a double, even
            // among subnormals.
            let b = if op == Arith::Sub { -b } else { b };
            let r = a + b;
            let bb = r - a;
            let err = (a - (r - bb)) + (b - bb);
            (r, sign(err))
        }
        Arith::Mul => {
            let r = a * b;
            (r, Exact::of(a).mul(Exact::of(b)).cmp(Exact::of(r)))
        }
        Arith::Div => {
            // sign(a/b - r) = sign(a - r*b) * sign(b)
            let r = a / b;
            let d = Exact::of(a).cmp(Exact::of(r).mul(Exact::of(b)));
            (r, d * Exact::of(b).signum())
        }
        Arith::Sqrt => {
            let r = a.sqrt();
            (r, Exact::of(a).cmp(Exact::of(r).mul(Exact::of(r))))
        }
    }
}

/// Flags for a result `r` of finite-or-not inputs that produced no NaN.
fn special_flags(op: Arith, a: f64, b: f64, r: f64) -> u32 {
    let finite_in = a.is_finite() && (op == Arith::Sqrt || b.is_finite());
    if op == Arith::Div && b == 0.0 && a.is_finite() && a != 0.0 {
        return DZ;
    }
    if r.is_infinite() && finite_in {
        return OF | NX;
    }
    0
}

/// Largest finite value with the sign of `r`, for overflow in a mode that
/// does not round away from zero.
fn overflow_result(r: f64, rm: u8, max: f64) -> f64 {
    let keep_inf = match rm {
        RTZ => false,
        RDN => r < 0.0,
        RUP => r > 0.0,
        _ => true,
    };
    if keep_inf {
        r
    } else {
        max.copysign(r)
    }
}

/// IEEE's sign of an exact zero sum: +0 in every mode but round-down,
/// where it is -0, unless both addends are +0. The host, rounding to
/// nearest, gives +0 for `x + -x`.
fn zero_sum_sign(r: f64, x: f64, y: f64, rm: u8) -> f64 {
    let plus_zero = |v: f64| v == 0.0 && v.is_sign_positive();
    if r == 0.0 && rm == RDN && !(plus_zero(x) && plus_zero(y)) {
        -0.0
    } else {
        r
    }
}

/// A double operation: result and flags.
pub fn arith64(op: Arith, a: f64, b: f64, rm: u8) -> (f64, u32) {
    let nan_in = a.is_nan() || (op != Arith::Sqrt && b.is_nan());
    let snan = snan64(a) || (op != Arith::Sqrt && snan64(b));
    let (r, err) = nearest_with_error(op, a, b);
    if r.is_nan() {
        let nv = if snan || !nan_in { NV } else { 0 };
        return (f64::from_bits(CANON_F64), nv);
    }
    let r = match op {
        Arith::Add => zero_sum_sign(r, a, b, rm),
        Arith::Sub => zero_sum_sign(r, a, -b, rm),
        _ => r,
    };
    let flags = special_flags(op, a, b, r);
    if flags & OF != 0 {
        return (overflow_result(r, rm, f64::MAX), flags);
    }
    // With an infinite operand (x/inf = 0, inf+x = inf, ...) or result
    // (x/0), the result is exact; `err` is only meaningful otherwise.
    let finite_in = a.is_finite() && (op == Arith::Sqrt || b.is_finite());
    if !finite_in || !r.is_finite() || err == 0 {
        return (r, flags);
    }
    let r = direct(r, err, rm);
    let uf = if r.abs() < f64::MIN_POSITIVE { UF } else { 0 };
    (r, flags | NX | uf)
}

/// A single operation, computed in double and rounded once more.
pub fn arith32(op: Arith, a: f32, b: f32, rm: u8) -> (f32, u32) {
    let snan = snan32(a) || (op != Arith::Sqrt && snan32(b));
    let (r64, f64flags) = arith64(op, f64::from(a), f64::from(b), RNE);
    // An exact zero sum takes its sign from the mode (the double one was
    // rounded to nearest).
    let r64 = match op {
        Arith::Add => zero_sum_sign(r64, a.into(), b.into(), rm),
        Arith::Sub => zero_sum_sign(r64, a.into(), (-b).into(), rm),
        _ => r64,
    };
    if r64.is_nan() {
        let nan_in = a.is_nan() || (op != Arith::Sqrt && b.is_nan());
        let nv = if snan || !nan_in { NV } else { 0 };
        return (f32::from_bits(CANON_F32), nv);
    }
    let finite_in = a.is_finite() && (op == Arith::Sqrt || b.is_finite());
    let err64 = if f64flags & NX != 0 && finite_in { nearest_with_error(op, f64::from(a), f64::from(b)).1 } else { 0 };
    narrow(r64, err64, rm, f64flags & DZ)
}

/// Round a double `r64` (with `exact - r64` of sign `err64`) to single.
fn narrow(r64: f64, err64: i8, rm: u8, dz: u32) -> (f32, u32) {
    let r32 = r64 as f32;
    if r32.is_infinite() && r64.is_finite() {
        let r = overflow_result(f64::from(r32), rm, f64::from(f32::MAX)) as f32;
        return (r, OF | NX);
    }
    if !r64.is_finite() {
        return (r32, dz);
    }
    let diff = r64 - f64::from(r32);
    let err = if diff != 0.0 { sign(diff) } else { err64 };
    if err == 0 {
        return (r32, 0);
    }
    let r = if rm == RNE || rm == RMM { nearest_tie(r32, diff, err64, rm) } else { direct32(r32, err, rm) };
    let uf = if r.abs() < f32::MIN_POSITIVE { UF } else { 0 };
    (r, NX | uf)
}

/// Round to nearest when `r32` is the host's rounding of `r64 = r32 +
/// diff`: if `r64` lies exactly halfway between two singles, the exact
/// value (`r64` plus an error of sign `err64`) may not, and a second
/// rounding would wrongly break the tie; a real tie (no error) goes to
/// even (RNE, as the host did) or away from zero (RMM).
fn nearest_tie(r32: f32, diff: f64, err64: i8, rm: u8) -> f32 {
    if diff == 0.0 {
        return r32;
    }
    let other = step32(r32, diff > 0.0);
    let half = (f64::from(other) - f64::from(r32)) / 2.0;
    if diff != half {
        return r32;
    }
    let take_other = match err64 {
        0 => rm == RMM && other.abs() > r32.abs(),
        e => e == sign(diff),
    };
    if take_other {
        other
    } else {
        r32
    }
}

/// The neighbour of a finite single one ulp up or down.
fn step32(x: f32, up: bool) -> f32 {
    if x == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let away = (x > 0.0) == up;
    let b = x.to_bits();
    f32::from_bits(if away { b + 1 } else { b - 1 })
}

fn direct32(r: f32, err: i8, rm: u8) -> f32 {
    match rm {
        RDN if err < 0 => step32(r, false),
        RUP if err > 0 => step32(r, true),
        RTZ if (r > 0.0 && err < 0) || (r < 0.0 && err > 0) => step32(r, r < 0.0),
        _ => r,
    }
}

/// Limbs wide enough for `a*b + c - r` of any finite doubles aligned to
/// the lowest exponent: products reach 2^2048 and go down to 2^-2148.
const FMA_LIMBS: usize = 72;

/// Add `m * 2^shift` to a little-endian multi-limb number.
fn add_shifted(acc: &mut [u64; FMA_LIMBS], m: u128, shift: usize) {
    let (limb, bit) = (shift / 64, (shift % 64) as u32);
    let (lo, hi) = (m as u64, (m >> 64) as u64);
    let parts = if bit == 0 { [lo, hi, 0] } else { [lo << bit, (hi << bit) | (lo >> (64 - bit)), hi >> (64 - bit)] };
    let mut carry = 0u64;
    for (i, acc_limb) in acc.iter_mut().enumerate().skip(limb) {
        let add = parts.get(i - limb).copied().unwrap_or(0);
        if add == 0 && carry == 0 && i >= limb + 3 {
            break;
        }
        let (s1, c1) = acc_limb.overflowing_add(add);
        let (s2, c2) = s1.overflowing_add(carry);
        *acc_limb = s2;
        carry = u64::from(c1) + u64::from(c2);
    }
}

/// The sign of the exact sum of `terms`.
fn exact_sum_sign(terms: &[Exact]) -> i8 {
    let Some(emin) = terms.iter().filter(|t| t.m != 0).map(|t| t.e).min() else {
        return 0;
    };
    let (mut pos, mut neg) = ([0u64; FMA_LIMBS], [0u64; FMA_LIMBS]);
    for t in terms.iter().filter(|t| t.m != 0) {
        let shift = (t.e - emin) as usize;
        if shift / 64 + 3 > FMA_LIMBS {
            // Outside the range of finite doubles: not reached.
            return 0;
        }
        add_shifted(if t.neg { &mut neg } else { &mut pos }, t.m, shift);
    }
    for i in (0..FMA_LIMBS).rev() {
        if pos[i] != neg[i] {
            return if pos[i] > neg[i] { 1 } else { -1 };
        }
    }
    0
}

/// Nearest-even `a*b + c` and the sign of `exact - result`, or the
/// special result and flags when an operand is not finite or the result
/// is not finite.
fn fma_nearest(a: f64, b: f64, c: f64, snans: [bool; 3]) -> Result<(f64, i8), (f64, u32)> {
    let r = a.mul_add(b, c);
    let ins = [a, b, c];
    let nan_in = ins.iter().any(|x| x.is_nan());
    // inf * 0 is invalid even when the addend is a quiet NaN.
    let inf_zero = (a.is_infinite() && b == 0.0) || (b.is_infinite() && a == 0.0);
    if r.is_nan() {
        let nv = if snans.iter().any(|&s| s) || !nan_in || inf_zero { NV } else { 0 };
        return Err((f64::from_bits(CANON_F64), nv));
    }
    if !ins.iter().all(|x| x.is_finite()) {
        return Err((r, 0));
    }
    if r.is_infinite() {
        return Ok((r, 0));
    }
    if r == 0.0 {
        // The host added a zero product to c, or rounded to a zero: the
        // exact sum decides (an exact zero's sign is the mode's business).
        let exact = exact_sum_sign(&[Exact::of(a).mul(Exact::of(b)), Exact::of(c)]);
        if exact == 0 {
            return Ok((r, 0));
        }
    }
    let minus_r = Exact { neg: !r.is_sign_negative(), ..Exact::of(r) };
    Ok((r, exact_sum_sign(&[Exact::of(a).mul(Exact::of(b)), Exact::of(c), minus_r])))
}

/// Fused multiply-add `a*b + c` in double, rounded once in mode `rm`.
pub fn fma64(a: f64, b: f64, c: f64, rm: u8) -> (f64, u32) {
    let (r, err) = match fma_nearest(a, b, c, [snan64(a), snan64(b), snan64(c)]) {
        Ok(v) => v,
        Err(special) => return special,
    };
    if r.is_infinite() {
        return (overflow_result(r, rm, f64::MAX), OF | NX);
    }
    if err == 0 {
        return (zero_sum_sign(r, a * b, c, rm), 0);
    }
    let r = direct(r, err, rm);
    let uf = if r.abs() < f64::MIN_POSITIVE { UF } else { 0 };
    (r, NX | uf)
}

/// Fused multiply-add of singles: the double result and its exact error
/// sign, then one correct rounding to single.
pub fn fma32(a: f32, b: f32, c: f32, rm: u8) -> (f32, u32) {
    let snans = [snan32(a), snan32(b), snan32(c)];
    match fma_nearest(a.into(), b.into(), c.into(), snans) {
        Ok((r64, 0)) if r64 == 0.0 => (zero_sum_sign(r64, f64::from(a) * f64::from(b), c.into(), rm) as f32, 0),
        Ok((r64, err)) => narrow(r64, err, rm, 0),
        Err((r, flags)) => (r as f32, flags),
    }
}

/// `fmin`/`fmax` (IEEE 754-2019 minimumNumber/maximumNumber: a NaN
/// operand is ignored, -0 < +0).
pub fn minmax64(a: f64, b: f64, max: bool, snan: bool) -> (f64, u32) {
    let nv = if snan { NV } else { 0 };
    let r = match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::from_bits(CANON_F64),
        (true, false) => b,
        (false, true) => a,
        _ if a == b => {
            // Equal values differ only for zeros: pick by sign.
            if (a.is_sign_negative() && !max) || (!a.is_sign_negative() && max) {
                a
            } else {
                b
            }
        }
        _ if (a < b) != max => a,
        _ => b,
    };
    (r, nv)
}

/// `fmin`/`fmax` of singles.
pub fn minmax32(a: f32, b: f32, max: bool) -> (f32, u32) {
    let snan = snan32(a) || snan32(b);
    if a.is_nan() && b.is_nan() {
        return (f32::from_bits(CANON_F32), if snan { NV } else { 0 });
    }
    let (r, f) = minmax64(f64::from(a), f64::from(b), max, snan);
    (r as f32, f)
}

/// `feq`/`flt`/`fle`: quiet equality (NV only for signalling NaN),
/// signalling order (NV for any NaN).
pub fn compare(a: f64, b: f64, op: crate::decode::FpCmp, snan: bool) -> (u64, u32) {
    use crate::decode::FpCmp;
    let nan = a.is_nan() || b.is_nan();
    let nv = match op {
        FpCmp::Eq if snan => NV,
        FpCmp::Lt | FpCmp::Le if nan => NV,
        _ => 0,
    };
    let r = match op {
        FpCmp::Eq => a == b,
        FpCmp::Lt => a < b,
        FpCmp::Le => a <= b,
    };
    (u64::from(r), nv)
}

pub fn is_snan32(v: f32) -> bool {
    snan32(v)
}
pub fn is_snan64(v: f64) -> bool {
    snan64(v)
}

/// `fclass`: one bit set, as the specification numbers the classes.
pub fn classify(v: f64, snan: bool, subnormal: bool) -> u64 {
    let neg = v.is_sign_negative();
    let bit = if v.is_nan() {
        if snan {
            8
        } else {
            9
        }
    } else if v.is_infinite() {
        if neg {
            0
        } else {
            7
        }
    } else if v == 0.0 {
        if neg {
            3
        } else {
            4
        }
    } else if subnormal {
        if neg {
            2
        } else {
            5
        }
    } else if neg {
        1
    } else {
        6
    };
    1 << bit
}

/// Round to an integral value in mode `rm`.
fn round_integral(x: f64, rm: u8) -> f64 {
    match rm {
        RTZ => x.trunc(),
        RDN => x.floor(),
        RUP => x.ceil(),
        RMM => x.round(),
        _ => x.round_ties_even(),
    }
}

/// `fcvt.{w,wu,l,lu}`: the integer register value (32-bit results
/// sign-extended) and flags. Out of range and NaN saturate with NV.
pub fn to_int(x: f64, rm: u8, kind: crate::decode::IntKind) -> (u64, u32) {
    use crate::decode::IntKind;
    let (lo, hi): (f64, f64) = match kind {
        IntKind::W => (-2147483648.0, 2147483647.0),
        IntKind::Wu => (0.0, 4294967295.0),
        IntKind::L => (-9223372036854775808.0, 9223372036854775807.0),
        IntKind::Lu => (0.0, 18446744073709551615.0),
    };
    let sat = |v: i128| -> u64 {
        match kind {
            IntKind::W | IntKind::Wu => i64::from(v as u32 as i32) as u64,
            IntKind::L | IntKind::Lu => v as u64,
        }
    };
    let max = match kind {
        IntKind::W => i128::from(i32::MAX),
        IntKind::Wu => i128::from(u32::MAX),
        IntKind::L => i128::from(i64::MAX),
        IntKind::Lu => i128::from(u64::MAX),
    };
    let min = match kind {
        IntKind::W => i128::from(i32::MIN),
        IntKind::L => i128::from(i64::MIN),
        _ => 0,
    };
    if x.is_nan() {
        return (sat(max), NV);
    }
    let r = round_integral(x, rm);
    // `hi` for L and LU is 2^63 and 2^64 after rounding to double: a value
    // equal to it is out of range.
    let over = match kind {
        IntKind::L => r >= 9223372036854775808.0,
        IntKind::Lu => r >= 18446744073709551616.0,
        _ => r > hi,
    };
    if over {
        return (sat(max), NV);
    }
    if r < lo {
        return (sat(min), NV);
    }
    let nx = if r != x { NX } else { 0 };
    (sat(r as i128), nx)
}

/// `fcvt.d.{w,wu,l,lu}` in rounding mode `rm`, and NX.
pub fn int_to_f64(v: u64, kind: crate::decode::IntKind, rm: u8) -> (f64, u32) {
    let i = int_value(v, kind);
    let r = i as f64;
    // `r` is integral and below 2^65: exact in i128.
    let err = (i - r as i128).signum() as i8;
    if err == 0 {
        return (r, 0);
    }
    (direct(r, err, rm), NX)
}

/// `fcvt.s.{w,wu,l,lu}` in rounding mode `rm`, and NX.
pub fn int_to_f32(v: u64, kind: crate::decode::IntKind, rm: u8) -> (f32, u32) {
    let i = int_value(v, kind);
    let r = i as f32;
    let err = (i - r as i128).signum() as i8;
    if err == 0 {
        return (r, 0);
    }
    (direct32(r, err, rm), NX)
}

fn int_value(v: u64, kind: crate::decode::IntKind) -> i128 {
    use crate::decode::IntKind;
    match kind {
        IntKind::W => i128::from(v as u32 as i32),
        IntKind::Wu => i128::from(v as u32),
        IntKind::L => i128::from(v as i64),
        IntKind::Lu => i128::from(v),
    }
}

/// `fcvt.s.d`.
pub fn f64_to_f32(a: f64, rm: u8) -> (f32, u32) {
    if a.is_nan() {
        return (f32::from_bits(CANON_F32), if snan64(a) { NV } else { 0 });
    }
    narrow(a, 0, rm, 0)
}

/// `fcvt.d.s` (exact).
pub fn f32_to_f64(a: f32) -> (f64, u32) {
    if a.is_nan() {
        return (f64::from_bits(CANON_F64), if snan32(a) { NV } else { 0 });
    }
    (f64::from(a), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::IntKind;

    #[test]
    fn nan_boxing() {
        assert!(unbox(0x0000_0000_3f80_0000).is_nan());
        assert_eq!(unbox(boxed(1.5)), 1.5);
        assert_eq!(box_result(f32::NAN), 0xffff_ffff_7fc0_0000);
    }

    #[test]
    fn directed_rounding() {
        let third_rne = arith64(Arith::Div, 1.0, 3.0, RNE).0;
        let up = arith64(Arith::Div, 1.0, 3.0, RUP).0;
        let down = arith64(Arith::Div, 1.0, 3.0, RDN).0;
        assert!(down < up);
        assert!(third_rne == down || third_rne == up);
        assert_eq!(arith64(Arith::Div, 1.0, 3.0, RTZ).0, down);
        assert_eq!(arith64(Arith::Add, 1.0, 2.0, RUP), (3.0, 0));
        assert_eq!(arith64(Arith::Div, 1.0, 0.0, RNE), (f64::INFINITY, DZ));
        // Infinite operands give exact results (found by tests/programs/fprand.c).
        assert_eq!(arith64(Arith::Div, -3.5, f64::NEG_INFINITY, RDN), (0.0, 0));
        assert_eq!(arith64(Arith::Mul, f64::INFINITY, -2.0, RNE), (f64::NEG_INFINITY, 0));
        assert_eq!(arith32(Arith::Div, 1e30, f32::INFINITY, RUP), (0.0, 0));
        // x - x is -0 rounding down, +0 otherwise; +0 + +0 stays +0.
        assert!(arith64(Arith::Sub, 2.5, 2.5, RDN).0.is_sign_negative());
        assert!(arith64(Arith::Sub, 2.5, 2.5, RTZ).0.is_sign_positive());
        assert!(arith64(Arith::Add, 0.0, 0.0, RDN).0.is_sign_positive());
        assert!(arith64(Arith::Add, 0.0, -0.0, RDN).0.is_sign_negative());
        assert!(arith32(Arith::Add, 1.5, -1.5, RDN).0.is_sign_negative());
        assert!(fma64(2.0, 3.0, -6.0, RDN).0.is_sign_negative());
        assert!(fma64(2.0, 3.0, -6.0, RNE).0.is_sign_positive());
        assert_eq!(arith64(Arith::Mul, f64::MAX, 2.0, RTZ), (f64::MAX, OF | NX));
        let (r, f) = arith64(Arith::Sub, f64::INFINITY, f64::INFINITY, RNE);
        assert_eq!((r.to_bits(), f), (CANON_F64, NV));
        // 1/3 in single: 0x3eaaaaab rounds up, 0x3eaaaaaa down.
        assert_eq!(arith32(Arith::Div, 1.0, 3.0, RUP), (f32::from_bits(0x3eaa_aaab), NX));
        assert_eq!(arith32(Arith::Div, 1.0, 3.0, RNE), (f32::from_bits(0x3eaa_aaab), NX));
        assert_eq!(arith32(Arith::Div, 1.0, 3.0, RDN), (f32::from_bits(0x3eaa_aaaa), NX));
        assert_eq!(arith32(Arith::Div, -1.0, 3.0, RTZ), (f32::from_bits(0xbeaa_aaaa), NX));
        assert_eq!(arith32(Arith::Add, 1.0, 2.0, RDN), (3.0, 0));
        // Results that underflow know their error too.
        assert_eq!(arith64(Arith::Mul, 1e-310, 1e-310, RNE), (0.0, UF | NX));
        assert_eq!(arith64(Arith::Mul, 1e-310, 1e-310, RUP), (f64::from_bits(1), UF | NX));
        assert_eq!(arith64(Arith::Mul, -1e-310, 1e-310, RUP), (-0.0, UF | NX));
        assert_eq!(arith64(Arith::Div, f64::from_bits(3), 2.0, RDN), (f64::from_bits(1), UF | NX));
        assert_eq!(arith64(Arith::Mul, f64::from_bits(4), 0.5, RNE), (f64::from_bits(2), 0));
        // sqrt(2) = 0x1.6a09e667f3bcc908b...: RNE and RUP give ...bcd, RDN ...bcc.
        assert_eq!(arith64(Arith::Sqrt, 2.0, 0.0, RDN), (f64::from_bits(0x3ff6_a09e_667f_3bcc), NX));
        assert_eq!(arith64(Arith::Sqrt, 2.0, 0.0, RUP), (f64::from_bits(0x3ff6_a09e_667f_3bcd), NX));
        // 3 * (1/3 rounded up) = 1 + 2^-53 exactly: up is 1 + 2^-52.
        let third_up = arith64(Arith::Div, 1.0, 3.0, RUP).0;
        assert_eq!(arith64(Arith::Mul, 3.0, third_up, RUP), (1.0 + f64::EPSILON, NX));
        assert_eq!(arith64(Arith::Mul, 3.0, third_up, RNE), (1.0, NX));
    }

    #[test]
    fn fused_multiply_add() {
        // 0.1*10 - 1 is 2^-54 exactly (0.1 is not 1/10): inexact in two
        // steps, exact in one.
        assert_eq!(fma64(0.1, 10.0, -1.0, RNE), (5.551115123125783e-17, 0));
        let (r, f) = fma64(1.0, 1.0, 1e-30, RNE);
        assert_eq!((r, f), (1.0, NX));
        assert_eq!(fma64(1.0, 1.0, 1e-30, RUP), (1.0 + f64::EPSILON, NX));
        assert_eq!(fma64(1.0, 1.0, -1e-30, RDN), (1.0 - f64::EPSILON / 2.0, NX));
        assert_eq!(fma64(1e-200, 1e-200, 0.0, RNE), (0.0, UF | NX));
        assert_eq!(fma64(f64::MAX, 2.0, 0.0, RTZ), (f64::MAX, OF | NX));
        let (r, f) = fma64(f64::INFINITY, 0.0, f64::NAN, RNE);
        assert_eq!((r.to_bits(), f), (CANON_F64, NV));
        assert_eq!(fma32(3.0, 5.0, -1.0, RNE), (14.0, 0));
        assert_eq!(fma32(1.0, 1.0, 1e-20, RUP), (1.0 + f32::EPSILON, NX));
        // A real tie goes to even: (1 + 2^-12)^2 - 2^-11 = 1 + 2^-24.
        let a = 1.0 + 2f32.powi(-12);
        assert_eq!(fma32(a, a, -2f32.powi(-11), RNE), (1.0, NX));
        // a*b + c = 1 + 2^-23 + 2^-24 - 2^-64: rounded to double it is a
        // tie between 1 + 2^-23 and 1 + 2^-22 (even), but the value is
        // below it, so the single is 1 + 2^-23.
        let a = (1.0 + 2f32.powi(-20)) * 2f32.powi(-12);
        let b = (1.0 - 2f32.powi(-20)) * 2f32.powi(-12);
        assert_eq!(fma32(a, b, 1.0 + 2f32.powi(-23), RNE), (f32::from_bits(0x3f80_0001), NX));
    }

    #[test]
    fn conversions() {
        assert_eq!(to_int(2.5, RNE, IntKind::W), (2, NX));
        assert_eq!(to_int(2.5, RMM, IntKind::W), (3, NX));
        assert_eq!(to_int(-2.5, RDN, IntKind::L), (-3i64 as u64, NX));
        assert_eq!(to_int(f64::NAN, RNE, IntKind::W), (i32::MAX as u64, NV));
        assert_eq!(to_int(-1.0, RNE, IntKind::Wu), (0, NV));
        assert_eq!(to_int(4294967295.0, RNE, IntKind::Wu), (u64::MAX, 0)); // sign-extended
        assert_eq!(to_int(1e30, RNE, IntKind::L), (i64::MAX as u64, NV));
        assert_eq!(int_to_f64(u64::MAX, IntKind::Lu, RNE), (18446744073709551616.0, NX));
        assert_eq!(int_to_f64(u64::MAX, IntKind::Lu, RTZ), (18446744073709549568.0, NX));
        assert_eq!(int_to_f64((1 << 53) + 1, IntKind::L, RUP), ((1u64 << 53) as f64 + 2.0, NX));
        assert_eq!(int_to_f32(16777217, IntKind::W, RDN), (16777216.0, NX));
        assert_eq!(int_to_f32(-16777217i64 as u64, IntKind::L, RDN), (-16777218.0, NX));
        assert_eq!(f64_to_f32(1e300, RNE), (f32::INFINITY, OF | NX));
    }
}
