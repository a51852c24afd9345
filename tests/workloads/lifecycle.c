/* lifecycle.c: small programs that end in every way a process can, and fault on purpose.
 *
 *   gcc -O1 -g -pthread -o lifecycle tests/workloads/lifecycle.c
 *   ./lifecycle MODE [ARG]
 *
 * Every mode first maps a "marker" region of 7 pages (written, so it is resident) and prints
 *   MARKER <pid> <hex address>
 * so a test can look for it in the final snapshot. Modes:
 *   exit        return 0 from main
 *   segv        write to address 16: SIGSEGV
 *   threadexit  4 threads; the 3rd calls exit_group(5) while the others sleep
 *   pause       print READY and sleep until killed (the test sends SIGKILL)
 *   forkexit    fork; the parent exits 0 at once, the child (CHILD <pid>) sleeps 300 ms, maps a
 *               second marker and exits 4
 *   loop SECS   mmap+munmap one page every 2 ms for SECS seconds (READY printed first), exit 0
 *   faults      regions REGION <name> <hex addr> <pages>: "threads" (256 pages written by 4 threads at
 *               once), "readfirst" (read then write), "populate" (MAP_POPULATE), "mlock", "popwrite"
 *               (MADV_POPULATE_WRITE), all then written once per page; and "forked": a child writes
 *               16 pages that the parent wrote before fork (copy-on-write faults of the child)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PAGE 4096UL

static pthread_barrier_t bar;
static char *threads_region;

static char *marker(void) {
    char *m = mmap(NULL, 7 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned long i = 0; i < 7; i++)
        m[i * PAGE] = 1;
    printf("MARKER %d %lx\n", getpid(), (unsigned long)m);
    fflush(stdout);
    return m;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *exit_thread(void *arg) {
    long k = (long)arg;
    if (k == 3) {
        sleep_ms(50);
        syscall(SYS_exit_group, 5);
    }
    for (;;)
        pause();
    return NULL;
}

static void *fault_thread(void *arg) {
    (void)arg;
    pthread_barrier_wait(&bar);
    for (unsigned long i = 0; i < 256; i++)
        ((volatile char *)threads_region)[i * PAGE] = 1;
    pthread_barrier_wait(&bar); /* nobody exits (madvise of its stack) while others still write */
    return NULL;
}

static char *region(const char *name, unsigned long pages, int extra_flags) {
    char *r = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    madvise(r, pages * PAGE, MADV_NOHUGEPAGE);
    printf("REGION %s %lx %lu\n", name, (unsigned long)r, pages);
    return r;
}

static void write_pages(char *r, unsigned long pages) {
    for (unsigned long i = 0; i < pages; i++)
        ((volatile char *)r)[i * PAGE] = 2;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "exit";
    if (!strcmp(mode, "faults")) {
        threads_region = region("threads", 256, 0);
        pthread_t th[4];
        pthread_barrier_init(&bar, NULL, 4);
        for (long k = 0; k < 4; k++)
            pthread_create(&th[k], NULL, fault_thread, (void *)k);
        for (int k = 0; k < 4; k++)
            pthread_join(th[k], NULL);
        char *rf = region("readfirst", 32, 0);
        volatile char sink = 0;
        for (unsigned long i = 0; i < 32; i++)
            sink += ((volatile char *)rf)[i * PAGE];
        write_pages(rf, 32);
        write_pages(region("populate", 32, MAP_POPULATE), 32);
        char *ml = region("mlock", 32, 0);
        mlock(ml, 32 * PAGE);
        write_pages(ml, 32);
        char *pw = region("popwrite", 32, 0);
        madvise(pw, 32 * PAGE, MADV_POPULATE_WRITE);
        write_pages(pw, 32);
        char *fk = region("forked", 16, 0);
        write_pages(fk, 16);
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            write_pages(fk, 16);
            _exit(0);
        }
        waitpid(c, NULL, 0);
        printf("CHILD %d\n", c);
        return 0;
    }
    marker();
    if (!strcmp(mode, "exit"))
        return 0;
    if (!strcmp(mode, "segv")) {
        *(volatile int *)16 = 1;
        return 0;
    }
    if (!strcmp(mode, "threadexit")) {
        pthread_t th[4];
        for (long k = 0; k < 4; k++)
            pthread_create(&th[k], NULL, exit_thread, (void *)k);
        for (;;)
            pause();
    }
    if (!strcmp(mode, "pause")) {
        printf("READY %d\n", getpid());
        fflush(stdout);
        for (;;)
            pause();
    }
    if (!strcmp(mode, "forkexit")) {
        pid_t c = fork();
        if (c == 0) {
            sleep_ms(300);
            marker();
            _exit(4);
        }
        printf("CHILD %d\n", c);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(mode, "loop")) {
        double secs = argc > 2 ? atof(argv[2]) : 5;
        printf("READY %d\n", getpid());
        fflush(stdout);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            munmap(p, PAGE);
            sleep_ms(2);
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
