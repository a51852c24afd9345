/* Workload for tests/test_strace_import.py: issues a known script of memory syscalls from the
 * main thread, a second thread and a forked child, and prints each one as
 *   CALL <tid> <kind> <a0> <a1> <a2> <a3> <a4> <a5> <ret>   (hex, ret signed decimal)
 * plus "THREAD <tid>" and "FORK <pid>". Each run of calls is bracketed by the markers
 * madvise(NULL, 0, 0x4242) / madvise(NULL, 0, 0x4243) so the test can cut it out of the trace.
 * All calls go through syscall(2) so exactly these argument values reach the kernel. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static long call(const char *kind, long nr, unsigned long a0, unsigned long a1, unsigned long a2,
                 unsigned long a3, unsigned long a4, unsigned long a5) {
    long r = syscall(nr, a0, a1, a2, a3, a4, a5);
    long ret = r == -1 ? -errno : r;
    pthread_mutex_lock(&out_lock);
    printf("CALL %ld %s %lx %lx %lx %lx %lx %lx %ld\n", (long)gettid(), kind, a0, a1, a2, a3, a4, a5, ret);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    return ret;
}
#define MARK(n) syscall(SYS_madvise, 0, 0, (n))

static void script(int who) {
    MARK(0x4242);
    unsigned long p = call("mmap", SYS_mmap, 0, 0x10000, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, (unsigned long)-1, 0);
    call("mprotect", SYS_mprotect, p + 0x4000, 0x2000, PROT_READ, 0, 0, 0);
    call("madvise", SYS_madvise, p, 0x4000, MADV_DONTNEED, 0, 0, 0);
    call("munmap", SYS_munmap, p + 1, 0x1000, 0, 0, 0, 0);             /* EINVAL */
    call("mmap", SYS_mmap, 0, 1UL << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
         (unsigned long)-1, 0);                                          /* ENOMEM */
    if (who == 0) {
        unsigned long q = call("mremap", SYS_mremap, p, 0x4000, 0x8000, MREMAP_MAYMOVE, 0, 0);
        call("mmap", SYS_mmap, q, 0x2000, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, (unsigned long)-1, 0);
        call("mlock2", SYS_mlock2, q, 0x1000, MLOCK_ONFAULT, 0, 0, 0);
        long b = call("brk", SYS_brk, 0, 0, 0, 0, 0, 0);
        call("brk", SYS_brk, (unsigned long)b + 0x21000, 0, 0, 0, 0, 0);
        call("brk", SYS_brk, (unsigned long)b, 0, 0, 0, 0, 0);
        call("mprotect", SYS_mprotect, q, 0x1000, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0);
        call("munmap", SYS_munmap, q, 0x8000, 0, 0, 0, 0);
        call("munmap", SYS_munmap, p + 0x4000, 0xc000, 0, 0, 0, 0);
    } else {
        call("munmap", SYS_munmap, p, 0x10000, 0, 0, 0, 0);
    }
    MARK(0x4243);
}

static void *thread_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&out_lock);
    printf("THREAD %ld\n", (long)gettid());
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    script(1);
    return NULL;
}

int main(void) {
    static char obuf[1 << 16]; /* no malloc (brk/mmap) from stdio inside the markers */
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    script(0);
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_join(t, NULL);
    pid_t c = fork();
    if (c == 0) {
        script(2);
        _exit(7);
    }
    printf("FORK %ld\n", (long)c);
    fflush(stdout);
    int st;
    waitpid(c, &st, 0);
    return 0;
}
