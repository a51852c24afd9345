/* deep_states.c: a process built to have known hidden VMA state, for the deep snapshot tests.
 *
 *   gcc -O1 -o deep_states tests/workloads/deep_states.c
 *   ./deep_states          prints one line "parent PID child PID base HEX sysv HEX", then reads
 *                          commands from standard input until it is closed (the child exits then
 *                          too): "m PAGE NPAGES PROT" = mprotect of window pages (PROT as a number),
 *                          answered "ok ERRNO" 
 *
 * All regions are at fixed pages of a private window at BASE (page numbers below), each made with
 * MAP_FIXED_NOREPLACE so nothing else is next to them. Every region is followed by a free page.
 *
 *   0..3    shared:    4 pages rw, page 0 written (one anon_vma), then pages 2..3 mprotect'ed r--:
 *                      two VMAs [0,2) rw and [2,4) r-- that share one anon_vma
 *   8..9    distinct:  page 9 mapped rw and written (anon_vma A, pgoff 9), moved away to page 100;
 *                      page 8 mapped rw and written (anon_vma B, pgoff 8, no neighbour to share with);
 *                      page 100 moved back to 9: contiguous pgoff, equal flags, distinct anon_vmas
 *   16..17  unfaulted: 2 pages rw never touched: no anon_vma
 *   32..33  moved:     2 unfaulted pages mapped at 24, moved with mremap(MAYMOVE|FIXED) to 32:
 *                      pgoff becomes 32's page (the unfaulted-move reset)
 *   48..49  movedf:    2 pages mapped at 40, written, moved to 48: pgoff stays 40's page
 *   56..57  memfd1:    memfd F (4 pages) mapped shared rw through fd A at offset 0
 *   60      memfd2:    the same fd A at offset 3 pages: the same open file as memfd1
 *   64      memfd3:    a second open of F (/proc/self/fd/A) at offset 1 page: another open file
 *   68..69  twoopen:   [68] fd A offset 0, [69] fd B offset 1 page: same file, contiguous offsets,
 *                      two open files: two VMAs that look identical
 *   72..73  pgoff:     page 72 rw never touched; page 73 was written at page 80 and moved next to
 *                      it (mremap FIXED): it keeps page 80's pgoff, so the two do not merge although
 *                      an unfaulted VMA may merge with a faulted one here (anon pgoff discontinuity)
 *   121     forkprev:  1 page rw written before the fork; in the child, page 122 is mapped rw after
 *                      the fork: contiguous pgoff, equal flags, one side unfaulted, but the other is
 *                      a fork child, so they stay apart
 *   130,131 sysv:      one SysV shared memory segment attached twice, side by side: two open files
 *                      (shm_file per attach), both with vm_ops->close
 *
 * After all that the process forks: the child's written regions are fork children (their
 * anon_vma_chain has the parent's entry and their own); in the child, pages 88..89 are mapped and
 * written after the fork (avc 1, not a fork child).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define BASE 0x200000000000UL
#define PG 4096UL
#define AT(p) ((void *)(BASE + (p) * PG))
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void *map(unsigned long page, unsigned long n, int prot, int flags, int fd, off_t off) {
    void *p = mmap(AT(page), n * PG, prot, flags | MAP_FIXED_NOREPLACE, fd, off);
    if (p != AT(page)) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static void *anon(unsigned long page, unsigned long n) {
    return map(page, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void check(int ok, const char *what) {
    if (!ok) {
        perror(what);
        exit(2);
    }
}

int main(void) {
    char *p;
    p = anon(0, 4);
    p[0] = 1;
    check(mprotect(AT(2), 2 * PG, PROT_READ) == 0, "mprotect");

    p = anon(9, 1);
    p[0] = 1;
    check(mremap(AT(9), PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, AT(100)) == AT(100), "mremap");
    p = anon(8, 1);
    p[0] = 1;
    check(mremap(AT(100), PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, AT(9)) == AT(9), "mremap");

    anon(16, 2);

    anon(24, 2);
    check(mremap(AT(24), 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, AT(32)) == AT(32), "mremap");

    p = anon(40, 2);
    p[0] = 1;
    p[PG] = 1;
    check(mremap(AT(40), 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, AT(48)) == AT(48), "mremap");

    int a = memfd_create("deepstates", 0);
    check(a >= 0, "memfd_create");
    check(ftruncate(a, 4 * PG) == 0, "ftruncate");
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", a);
    int b = open(path, O_RDWR);
    check(b >= 0, "open");
    map(56, 2, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
    map(60, 1, PROT_READ | PROT_WRITE, MAP_SHARED, a, 3 * PG);
    map(64, 1, PROT_READ | PROT_WRITE, MAP_SHARED, b, 1 * PG);
    map(68, 1, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
    map(69, 1, PROT_READ | PROT_WRITE, MAP_SHARED, b, 1 * PG);

    anon(72, 1);
    p = anon(80, 1);
    p[0] = 1;
    check(mremap(AT(80), PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, AT(73)) == AT(73), "mremap");

    p = anon(121, 1);
    p[0] = 1;

    int shm = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
    check(shm >= 0, "shmget");
    void *s = shmat(shm, AT(130), 0);
    check(s == AT(130), "shmat");
    check(shmat(shm, AT(131), 0) == AT(131), "shmat");
    shmctl(shm, IPC_RMID, NULL);

    int pipefd[2], hold[2];
    check(pipe(pipefd) == 0 && pipe(hold) == 0, "pipe");
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        close(pipefd[0]);
        close(hold[1]);
        p = anon(88, 2);
        p[0] = 1;
        anon(122, 1);
        char c = 'x';
        check(write(pipefd[1], &c, 1) == 1, "write");
        while (read(hold[0], &c, 1) > 0) {  /* until the parent is gone */
        }
        _exit(0);
    }
    close(pipefd[1]);
    close(hold[0]);
    char c;
    check(read(pipefd[0], &c, 1) == 1, "read");
    printf("parent %d child %d base %lx sysv %lx\n", (int)getpid(), (int)child, BASE, (unsigned long)s);
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long pg, n;
        int prot;
        if (sscanf(line, "m %lu %lu %d", &pg, &n, &prot) == 3) {
            int rc = mprotect(AT(pg), n * PG, prot);
            printf("ok %d\n", rc == 0 ? 0 : errno);
            fflush(stdout);
        }
    }
    close(hold[1]);
    waitpid(child, NULL, 0);
    return 0;
}
