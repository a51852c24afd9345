/* churn.c: N mixed address-space calls in a 1024-page window, for bench/bench_replay_trace.py.
 *
 *   gcc -O2 -o churn bench/workloads/churn.c && ./churn N [SEED]
 *
 * Per 100 calls: 30 writes to a page (a first write fault each time the page is new), 20 mprotect,
 * 15 mmap MAP_FIXED, 10 munmap, 10 madvise (DONTDUMP/DODUMP/DONTNEED), 5 mlock/munlock,
 * 5 mremap (MAYMOVE|FIXED within the window), 5 mprotect of a whole 64-page block. Every call goes
 * through the libc wrapper; failures (ENOMEM, EFAULT...) are part of the workload. Writes touch
 * only pages the program knows to be mapped read-write, so it never faults fatally.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 1024
#define PG 4096UL

static uint64_t s = 88172645463325252ULL;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

static unsigned char prot_of[PAGES]; /* 0 unmapped, else PROT_* + 8 */

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (argc > 2) s ^= (uint64_t)atol(argv[2]) * 0x9E3779B97F4A7C15ULL;
    char *win = mmap(NULL, (PAGES + 64) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (win == MAP_FAILED) { perror("mmap"); return 1; }
    win = (char *)(((uintptr_t)win + 64 * PG - 1) & ~(64 * PG - 1)); /* 64-page aligned inside the reservation */
    munmap(win, PAGES * PG);
    for (long i = 0; i < n; i++) {
        unsigned r = rnd() % 100;
        unsigned p = rnd() % PAGES;
        unsigned len = 1 + rnd() % 8;
        if (p + len > PAGES) len = PAGES - p;
        char *a = win + p * PG;
        if (r < 30) {
            if (prot_of[p] == (PROT_READ | PROT_WRITE) + 8) a[rnd() % PG] = 1;
            else mprotect(a, PG, PROT_READ | PROT_WRITE) == 0 && (prot_of[p] = (PROT_READ | PROT_WRITE) + 8);
        } else if (r < 50) {
            int prot = (rnd() & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
            /* a failed mprotect may have changed the VMAs before a hole: forget the range */
            int ok = mprotect(a, len * PG, prot) == 0;
            for (unsigned k = 0; k < len; k++) prot_of[p + k] = ok ? prot + 8 : 0;
        } else if (r < 65) {
            if (mmap(a, len * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED)
                for (unsigned k = 0; k < len; k++) prot_of[p + k] = (PROT_READ | PROT_WRITE) + 8;
        } else if (r < 75) {
            if (munmap(a, len * PG) == 0) memset(prot_of + p, 0, len);
        } else if (r < 85) {
            static const int adv[] = {MADV_DONTDUMP, MADV_DODUMP, MADV_DONTNEED};
            madvise(a, len * PG, adv[rnd() % 3]);
        } else if (r < 90) {
            if (rnd() & 1) mlock(a, len * PG); else munlock(a, len * PG);
        } else if (r < 95) {
            unsigned q = rnd() % PAGES;
            if (q + len <= PAGES && (q + len <= p || q >= p + len)) {
                if (mremap(a, len * PG, len * PG, MREMAP_MAYMOVE | MREMAP_FIXED, win + q * PG) != MAP_FAILED) {
                    memmove(prot_of + q, prot_of + p, len);
                    memset(prot_of + p, 0, len);
                }
            }
        } else {
            unsigned b = (p / 64) * 64;
            int prot = (rnd() & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
            int ok = mprotect(win + b * PG, 64 * PG, prot) == 0;
            memset(prot_of + b, ok ? prot + 8 : 0, 64);
        }
    }
    return 0;
}
