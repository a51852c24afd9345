/* vma_script.c: a known script of every address-space syscall vmatrace records, for tests.
 *
 * Used by tests/test_record_script.py (bcc recorder) and reusable by the strace importer's tests:
 *   gcc -O1 -g -pthread -o vma_script tests/workloads/vma_script.c
 *   ./vma_script [OUTFILE]      (output goes to OUTFILE, else stdout)
 *
 * Every call is made through syscall(2) with the exact raw register values printed, so a tracer's
 * record can be compared field by field. Output format, one record per line (written with a single
 * write(2), so lines of several threads/processes never interleave):
 *
 *   CALL <pid> <tid> <S|C> <name> <nargs> <a0> .. <a{nargs-1}> = <ret>
 *        S = made in a serialized section: the order of S lines in the file is the order in which
 *            the calls happened, across threads; C = concurrent with other threads: only the order
 *            of the lines of one tid is meaningful. Args are hex (0x...), 64-bit as passed; ret is
 *            the raw syscall return value in decimal (-errno on error, address for mmap/shmat).
 *   FORK <parent pid> <child pid>
 *   BEGIN <pid> / END <pid>        the first and last scripted call of each process follow/precede these
 *   MAPS <pid> <n>                 followed by n lines: /proc/self/maps just before exit_group
 *   EXIT <pid> <code>              printed just before exit_group(code) (no CALL line: it does not return)
 *
 * Script (pid P, 3 threads T1..T3 created before BEGIN; the child C forks from the main thread):
 *   main:   markers madvise(0,0,9999) (EINVAL) at BEGIN and madvise(0,0,9998) at END;
 *           mmap/munmap/mprotect/pkey_mprotect/mremap/brk/madvise/process_madvise/mlock/mlock2/
 *           munlock/mlockall/munlockall/mseal/prctl(PR_SET_VMA)/shmat/shmdt/execve with successes
 *           and errors; prctl(PR_GET_DUMPABLE) which a VMA tracer must NOT record (printed as IGNORED)
 *   T1..T3: concurrently mmap/mprotect/munmap their own regions (C), then in turn (S) mprotect
 *           one page each of a shared region, handing over with a barrier; then they sleep until
 *           the main thread's exit_group (so the maps dump still shows their stacks)
 *   child:  a few calls, a failed execve, then exit_group(3)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

#define PAGE 4096UL
static int out_fd = 1;
static char maps_buf[1 << 20];
static pthread_barrier_t bar;
static unsigned long shared_region;

static void emit(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) {
        ssize_t w = write(out_fd, line, (size_t)n);
        (void)w;
    }
}

/* Make syscall `nr` with n args, print it, return the raw result (-errno on error). */
static long call(char mode, const char *name, long nr, int n, ...) {
    unsigned long a[6] = {0};
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        a[i] = va_arg(ap, unsigned long);
    va_end(ap);
    long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (r == -1 && errno)
        r = -errno;
    char line[512];
    int len = snprintf(line, sizeof line, "CALL %d %ld %c %s %d", getpid(), (long)syscall(SYS_gettid), mode, name, n);
    for (int i = 0; i < n; i++)
        len += snprintf(line + len, sizeof line - len, " 0x%lx", a[i]);
    len += snprintf(line + len, sizeof line - len, " = %ld\n", r);
    ssize_t w = write(out_fd, line, (size_t)len);
    (void)w;
    return r;
}

#define U(x) ((unsigned long)(x))

static void dump_maps_and_exit(int code) {
    int fd = open("/proc/self/maps", O_RDONLY);
    size_t len = 0;
    ssize_t r;
    while (fd >= 0 && (r = read(fd, maps_buf + len, sizeof maps_buf - 1 - len)) > 0)
        len += (size_t)r;
    if (fd >= 0)
        close(fd);
    maps_buf[len] = 0;
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += maps_buf[i] == '\n';
    emit("END %d\n", getpid());
    emit("MAPS %d %d\n", getpid(), lines);
    ssize_t w = write(out_fd, maps_buf, len);
    (void)w;
    emit("EXIT %d %d\n", getpid(), code);
    syscall(SYS_exit_group, code);
    _exit(code); /* not reached */
}

static void *thread_main(void *arg) {
    long k = (long)arg;
    pthread_barrier_wait(&bar); /* start together with main's concurrent part */
    /* concurrent part: each thread on its own region */
    long r = call('C', "mmap", SYS_mmap, 6, U(0), U(4 * PAGE), U(PROT_READ | PROT_WRITE),
                  U(MAP_PRIVATE | MAP_ANONYMOUS), U(-1L), U(0));
    call('C', "mprotect", SYS_mprotect, 3, U(r + PAGE), U(PAGE), U(PROT_READ));
    call('C', "munmap", SYS_munmap, 2, U(r + 2 * PAGE), U(PAGE));
    call('C', "munmap", SYS_munmap, 2, U(r), U(4 * PAGE));
    pthread_barrier_wait(&bar);
    /* serialized part: thread k goes in turn k, one page of the shared region each */
    for (long turn = 1; turn <= 3; turn++) {
        if (turn == k)
            call('S', "mprotect", SYS_mprotect, 3, U(shared_region + (k - 1) * PAGE), U(PAGE), U(PROT_READ));
        pthread_barrier_wait(&bar);
    }
    for (;;) /* stay alive (no glibc thread-exit calls in the script window); exit_group ends us */
        pause();
    return NULL;
}

static void child_script(void) {
    emit("BEGIN %d\n", getpid());
    long r = call('S', "mmap", SYS_mmap, 6, U(0), U(3 * PAGE), U(PROT_READ | PROT_WRITE),
                  U(MAP_PRIVATE | MAP_ANONYMOUS), U(-1L), U(0));
    ((volatile char *)r)[0] = 1;
    call('S', "mprotect", SYS_mprotect, 3, U(r), U(PAGE), U(PROT_NONE));
    call('S', "munmap", SYS_munmap, 2, U(r + 2 * PAGE), U(PAGE));
    call('S', "execve", SYS_execve, 3, U("/nonexistent/vmatrace"), U(0), U(0));
    dump_maps_and_exit(3);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        out_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        if (out_fd < 0) {
            perror(argv[1]);
            return 1;
        }
    }
    pthread_t th[3];
    pthread_barrier_init(&bar, NULL, 4);
    shared_region = (unsigned long)mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long k = 1; k <= 3; k++)
        pthread_create(&th[k - 1], NULL, thread_main, (void *)k);
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int shmid = shmget(IPC_PRIVATE, 2 * PAGE, IPC_CREAT | 0600);

    emit("BEGIN %d\n", getpid());
    call('S', "madvise", SYS_madvise, 3, U(0), U(0), U(9999)); /* begin marker: EINVAL */
    pthread_barrier_wait(&bar); /* threads start their concurrent part */

    /* mmap: anonymous, populated, file-backed, and errors */
    long a = call('C', "mmap", SYS_mmap, 6, U(0), U(16 * PAGE), U(PROT_READ | PROT_WRITE),
                  U(MAP_PRIVATE | MAP_ANONYMOUS), U(-1L), U(0));
    call('C', "mmap", SYS_mmap, 6, U(0), U(4 * PAGE), U(PROT_READ | PROT_WRITE),
         U(MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE), U(-1L), U(0));
    int exe = open("/proc/self/exe", O_RDONLY);
    call('C', "mmap", SYS_mmap, 6, U(0), U(PAGE), U(PROT_READ), U(MAP_PRIVATE), U(exe), U(0));
    close(exe);
    call('C', "mmap", SYS_mmap, 6, U(0), U(0), U(PROT_READ), U(MAP_PRIVATE | MAP_ANONYMOUS), U(-1L), U(0));
    call('C', "mmap", SYS_mmap, 6, U(0), U(PAGE), U(PROT_READ), U(MAP_PRIVATE), U(-1L), U(0)); /* EBADF */
    /* write the first 4 pages: first write faults */
    for (int i = 0; i < 4; i++)
        ((volatile char *)a)[i * PAGE] = 1;
    /* mprotect / pkey_mprotect split the region */
    call('C', "mprotect", SYS_mprotect, 3, U(a + 2 * PAGE), U(2 * PAGE), U(PROT_READ));
    call('C', "mprotect", SYS_mprotect, 3, U(a + 1), U(PAGE), U(PROT_READ)); /* EINVAL */
    call('C', "pkey_mprotect", SYS_pkey_mprotect, 4, U(a + 4 * PAGE), U(PAGE), U(PROT_READ), U(-1L));
    call('C', "pkey_mprotect", SYS_pkey_mprotect, 4, U(a + 4 * PAGE), U(PAGE), U(PROT_READ), U(77)); /* EINVAL */
    /* munmap a hole */
    call('C', "munmap", SYS_munmap, 2, U(a + 6 * PAGE), U(PAGE));
    call('C', "munmap", SYS_munmap, 2, U(a + 1), U(PAGE)); /* EINVAL */
    /* mremap: grow (may move), shrink, error */
    long b = call('C', "mmap", SYS_mmap, 6, U(0), U(2 * PAGE), U(PROT_READ | PROT_WRITE),
                  U(MAP_PRIVATE | MAP_ANONYMOUS), U(-1L), U(0));
    long b2 = call('C', "mremap", SYS_mremap, 5, U(b), U(2 * PAGE), U(8 * PAGE), U(MREMAP_MAYMOVE), U(0));
    call('C', "mremap", SYS_mremap, 5, U(b2), U(8 * PAGE), U(4 * PAGE), U(0), U(0));
    call('C', "mremap", SYS_mremap, 5, U(b2 + 1), U(PAGE), U(2 * PAGE), U(0), U(0)); /* EINVAL */
    /* brk: query, grow, shrink back */
    long brk0 = call('C', "brk", SYS_brk, 1, U(0));
    call('C', "brk", SYS_brk, 1, U(brk0 + 8 * PAGE));
    call('C', "brk", SYS_brk, 1, U(brk0));
    /* madvise: DONTNEED, POPULATE_WRITE (populating), an invalid advice */
    call('C', "madvise", SYS_madvise, 3, U(a + 8 * PAGE), U(2 * PAGE), U(MADV_POPULATE_WRITE));
    call('C', "madvise", SYS_madvise, 3, U(a), U(2 * PAGE), U(MADV_DONTNEED));
    call('C', "madvise", SYS_madvise, 3, U(a), U(PAGE), U(12345)); /* EINVAL */
    /* process_madvise on ourselves */
    struct iovec iov = {.iov_base = (void *)(a + 10 * PAGE), .iov_len = 2 * PAGE};
    call('C', "process_madvise", SYS_process_madvise, 5, U(pidfd), U(&iov), U(1), U(MADV_COLD), U(0));
    call('C', "process_madvise", SYS_process_madvise, 5, U(pidfd), U(&iov), U(1), U(MADV_COLD), U(1)); /* EINVAL */
    /* mlock family */
    call('C', "mlock", SYS_mlock, 2, U(a + 12 * PAGE), U(PAGE));
    call('C', "mlock2", SYS_mlock2, 3, U(a + 13 * PAGE), U(PAGE), U(MLOCK_ONFAULT));
    call('C', "mlock2", SYS_mlock2, 3, U(a + 13 * PAGE), U(PAGE), U(8)); /* EINVAL */
    call('C', "munlock", SYS_munlock, 2, U(a + 12 * PAGE), U(2 * PAGE));
    call('C', "mlockall", SYS_mlockall, 1, U(MCL_CURRENT | MCL_ONFAULT));
    call('C', "munlockall", SYS_munlockall, 0);
    call('C', "mlockall", SYS_mlockall, 1, U(0)); /* EINVAL */
    /* mseal a separate region; sealed VMAs stay to the end */
    long s = call('C', "mmap", SYS_mmap, 6, U(0), U(2 * PAGE), U(PROT_READ), U(MAP_PRIVATE | MAP_ANONYMOUS),
                  U(-1L), U(0));
    call('C', "mseal", SYS_mseal, 3, U(s), U(2 * PAGE), U(0));
    call('C', "mseal", SYS_mseal, 3, U(s), U(2 * PAGE), U(1)); /* EINVAL */
    call('C', "munmap", SYS_munmap, 2, U(s), U(2 * PAGE)); /* EPERM: sealed */
    /* prctl: naming an anonymous VMA (EINVAL without CONFIG_ANON_VMA_NAME); PR_GET_DUMPABLE is not a VMA option */
    call('C', "prctl", SYS_prctl, 5, U(PR_SET_VMA), U(PR_SET_VMA_ANON_NAME), U(a + 14 * PAGE), U(PAGE),
         U("vmatrace_test"));
    long d = syscall(SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0);
    emit("IGNORED %d prctl PR_GET_DUMPABLE = %ld\n", getpid(), d);
    /* System V shared memory */
    long sh = call('C', "shmat", SYS_shmat, 3, U(shmid), U(0), U(0));
    shmctl(shmid, IPC_RMID, NULL);
    call('C', "shmdt", SYS_shmdt, 1, U(sh));
    call('C', "shmdt", SYS_shmdt, 1, U(sh + 1)); /* EINVAL */
    call('C', "shmat", SYS_shmat, 3, U(-1L), U(0), U(0)); /* EINVAL */
    /* execve that fails */
    call('C', "execve", SYS_execve, 3, U("/nonexistent/vmatrace"), U(0), U(0));

    /* the serialized part of the threads, then join */
    for (int turn = 0; turn < 4; turn++)
        pthread_barrier_wait(&bar);

    /* a child process */
    pid_t c = fork();
    if (c == 0)
        child_script();
    emit("FORK %d %d\n", getpid(), c);
    int st;
    waitpid(c, &st, 0);
    call('S', "madvise", SYS_madvise, 3, U(0), U(0), U(9998)); /* end marker: EINVAL */
    dump_maps_and_exit(0);
}
