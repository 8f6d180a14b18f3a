#include <stdint.h>
#include <stdio.h>

/* Random integer operations of every width, folded into checksums (one
   line per kind): whatever instructions the compiler picks for them
   (M extension, *W forms, compressed forms, 128-bit products), the sums
   are those of C's semantics. Division by zero and INT_MIN / -1, undefined
   in C, are left out. */
static uint64_t state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static uint64_t pick(void) {
    static const uint64_t special[] = {0, 1, 2, 3, 7, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
                                       0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull,
                                       0xfffffffffffffffeull, 0x8000000000000001ull};
    uint64_t r = rnd();
    switch (r % 4) {
    case 0:
        return special[(r >> 8) % (sizeof special / sizeof special[0])];
    case 1:
        return rnd() >> (rnd() % 64);
    default:
        return rnd();
    }
}

#define MIX(acc, v) ((acc) = ((acc) ^ (uint64_t)(v)) * 0x100000001b3ull)

int main(void) {
    uint64_t add = 0, mul = 0, div = 0, shift = 0, cmp = 0, w32 = 0, wide = 0, bits = 0, narrow = 0;
    for (int i = 0; i < 20000; i++) {
        volatile uint64_t va = pick(), vb = pick();
        uint64_t a = va, b = vb;
        int64_t sa = (int64_t)a, sb = (int64_t)b;
        uint32_t a32 = (uint32_t)a, b32 = (uint32_t)b;
        int32_t sa32 = (int32_t)a32, sb32 = (int32_t)b32;
        MIX(add, a + b);
        MIX(add, a - b);
        MIX(add, a ^ b);
        MIX(add, a | ~b);
        MIX(add, a & b);
        MIX(mul, a * b);
        MIX(mul, (uint64_t)(((unsigned __int128)a * b) >> 64));
        MIX(mul, (uint64_t)(((__int128)sa * sb) >> 64));
        MIX(mul, (uint64_t)(((__int128)sa * (unsigned __int128)b) >> 64));
        if (b) {
            MIX(div, a / b);
            MIX(div, a % b);
        }
        if (sb && !(sa == INT64_MIN && sb == -1)) {
            MIX(div, sa / sb);
            MIX(div, sa % sb);
        }
        if (b32) {
            MIX(div, a32 / b32);
            MIX(div, a32 % b32);
        }
        if (sb32 && !(sa32 == INT32_MIN && sb32 == -1)) {
            MIX(div, sa32 / sb32);
            MIX(div, sa32 % sb32);
        }
        unsigned s = (unsigned)(b % 64), s32 = (unsigned)(b % 32);
        MIX(shift, a << s);
        MIX(shift, a >> s);
        MIX(shift, sa >> s);
        MIX(shift, a32 << s32);
        MIX(shift, a32 >> s32);
        MIX(shift, sa32 >> s32);
        MIX(shift, (a << s) | (a >> ((64 - s) % 64)));
        MIX(cmp, (a < b) | (sa < sb) << 1 | (a32 < b32) << 2 | (sa32 < sb32) << 3 | (a == b) << 4 | (sa >= sb) << 5);
        MIX(cmp, sa < sb ? a : b);
        MIX(w32, (int64_t)(int32_t)(a32 + b32));
        MIX(w32, (int64_t)(int32_t)(a32 * b32));
        MIX(w32, (int64_t)(sa32 - sb32 / 2));
        MIX(wide, (int64_t)(int8_t)a + (int64_t)(int16_t)b + (uint8_t)(a >> 8) + (uint16_t)(b >> 16));
        MIX(wide, (uint64_t)(int64_t)sa32 + (uint64_t)a32);
        MIX(bits, __builtin_popcountll(a));
        MIX(bits, a ? __builtin_clzll(a) : 64);
        MIX(bits, a ? __builtin_ctzll(a) : 64);
        MIX(bits, __builtin_bswap64(a));
        MIX(bits, __builtin_bswap32(a32));
        MIX(narrow, (uint8_t)(a * 3) + (uint16_t)(b * 5));
    }
    printf("add %016llx\nmul %016llx\ndiv %016llx\nshift %016llx\ncmp %016llx\n", (unsigned long long)add,
           (unsigned long long)mul, (unsigned long long)div, (unsigned long long)shift, (unsigned long long)cmp);
    printf("w32 %016llx\nwide %016llx\nbits %016llx\nnarrow %016llx\n", (unsigned long long)w32,
           (unsigned long long)wide, (unsigned long long)bits, (unsigned long long)narrow);
    return 0;
}
