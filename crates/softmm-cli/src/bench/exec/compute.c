/*
 * A compute-bound loop in the spirit of CoreMark (our own code): each
 * iteration runs linked-list work (find, reverse, merge sort), a small
 * integer matrix multiply with a row/column reduction, a byte-wise CRC-32
 * and a state machine that scans a text of numbers, and folds every
 * result into a CRC.
 *
 *   compute ITERATIONS
 *
 * Prints "checksum N" and "elapsed_ns N".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_bytes(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t crc_u32(uint32_t crc, uint32_t v) { return crc_bytes(crc, &v, sizeof v); }

/* Linked lists. */
struct node {
    struct node *next;
    int32_t key;
    int32_t val;
};

#define NODES 256
static struct node pool[NODES];

static struct node *list_build(uint32_t seed) {
    struct node *head = NULL;
    for (int i = NODES - 1; i >= 0; i--) {
        seed = seed * 1103515245u + 12345u;
        pool[i].key = (int32_t)((seed >> 8) & 0xffff);
        pool[i].val = i;
        pool[i].next = head;
        head = &pool[i];
    }
    return head;
}

static struct node *list_reverse(struct node *l) {
    struct node *r = NULL;
    while (l) {
        struct node *n = l->next;
        l->next = r;
        r = l;
        l = n;
    }
    return r;
}

static struct node *list_find(struct node *l, int32_t key) {
    while (l && l->key != key)
        l = l->next;
    return l;
}

static struct node *list_merge_sort(struct node *l) {
    /* Bottom-up merge sort, as CoreMark's list benchmark does. */
    if (!l)
        return l;
    for (int width = 1;; width *= 2) {
        struct node *p = l, *tail = NULL;
        int merges = 0;
        l = NULL;
        while (p) {
            merges++;
            struct node *q = p;
            int psize = 0;
            for (int i = 0; i < width && q; i++) {
                psize++;
                q = q->next;
            }
            int qsize = width;
            while (psize > 0 || (qsize > 0 && q)) {
                struct node *e;
                if (psize == 0) {
                    e = q; q = q->next; qsize--;
                } else if (qsize == 0 || !q || p->key <= q->key) {
                    e = p; p = p->next; psize--;
                } else {
                    e = q; q = q->next; qsize--;
                }
                if (tail)
                    tail->next = e;
                else
                    l = e;
                tail = e;
            }
            p = q;
        }
        tail->next = NULL;
        if (merges <= 1)
            return l;
    }
}

static uint32_t bench_list(uint32_t seed) {
    struct node *l = list_build(seed);
    uint32_t crc = 0;
    for (int i = 0; i < 16; i++) {
        struct node *f = list_find(l, pool[(i * 37) % NODES].key);
        crc = crc_u32(crc, f ? (uint32_t)f->val : 0xffffffffu);
    }
    l = list_reverse(l);
    l = list_merge_sort(l);
    int32_t prev = -1;
    for (struct node *p = l; p; p = p->next) {
        if (p->key < prev)
            return 0xdeadu;
        prev = p->key;
        crc = crc_u32(crc, (uint32_t)p->val);
    }
    return crc;
}

/* Matrices. */
#define N 24
static int16_t ma[N][N], mb[N][N];
static int32_t mc[N][N];

static uint32_t bench_matrix(uint32_t seed) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            seed = seed * 1664525u + 1013904223u;
            ma[i][j] = (int16_t)(seed >> 20);
            mb[i][j] = (int16_t)((seed >> 8) & 0xfff) - 2048;
        }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0;
            for (int k = 0; k < N; k++)
                s += (int32_t)ma[i][k] * mb[k][j];
            mc[i][j] = s;
        }
    uint32_t crc = 0;
    for (int i = 0; i < N; i++) {
        int32_t row = 0, col = 0;
        for (int j = 0; j < N; j++) {
            row += mc[i][j] >> 2;
            col ^= mc[j][i] + (mc[j][i] > 0 ? 1 : -1);
        }
        crc = crc_u32(crc, (uint32_t)row);
        crc = crc_u32(crc, (uint32_t)col);
    }
    return crc;
}

/* A state machine over a text of numbers. */
enum state { START, INT, FRAC, EXP_SIGN, EXP, INVALID, NSTATES };

static uint32_t bench_state(const char *text, size_t n) {
    uint32_t counts[NSTATES] = {0};
    enum state s = START;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? text[i] : ',';
        if (c == ',') {
            counts[s]++;
            s = START;
            continue;
        }
        switch (s) {
        case START:
            s = (c >= '0' && c <= '9') || c == '-' || c == '+' ? INT : c == '.' ? FRAC : INVALID;
            break;
        case INT:
            s = c >= '0' && c <= '9' ? INT : c == '.' ? FRAC : c == 'e' || c == 'E' ? EXP_SIGN : INVALID;
            break;
        case FRAC:
            s = c >= '0' && c <= '9' ? FRAC : c == 'e' || c == 'E' ? EXP_SIGN : INVALID;
            break;
        case EXP_SIGN:
            s = (c >= '0' && c <= '9') || c == '-' || c == '+' ? EXP : INVALID;
            break;
        case EXP:
            s = c >= '0' && c <= '9' ? EXP : INVALID;
            break;
        default:
            break;
        }
    }
    uint32_t crc = 0;
    for (int i = 0; i < NSTATES; i++)
        crc = crc_u32(crc, counts[i]);
    return crc;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 100;
    crc_init();
    static const char *tokens[] = {"5012", "1234", "-874", "+122", "35.54", "0.0", "1.2e5", "-.7E-3", "1x2",
                                   "..", "6e", "7.", "+", "99999"};
    char text[1024];
    size_t n = 0;
    for (int i = 0; n + 16 < sizeof text; i++) {
        const char *t = tokens[(i * 7) % 14];
        size_t l = strlen(t);
        memcpy(text + n, t, l);
        n += l;
        text[n++] = ',';
    }
    uint64_t start = now_ns();
    uint32_t crc = 0;
    for (long it = 0; it < iterations; it++) {
        uint32_t seed = (uint32_t)it * 2654435761u;
        crc = crc_u32(crc, bench_list(seed));
        crc = crc_u32(crc, bench_matrix(seed));
        crc = crc_u32(crc, bench_state(text, n));
        crc = crc_bytes(crc, text, n);
    }
    uint64_t elapsed = now_ns() - start;
    printf("checksum %u\n", crc);
    printf("elapsed_ns %llu\n", (unsigned long long)elapsed);
    return 0;
}
