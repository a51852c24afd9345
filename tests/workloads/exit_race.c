/* exit_race.c: a process whose last exit stop is not the one a tracer would wait for.
 *
 *   gcc -O1 -g -pthread -o exit_race tests/workloads/exit_race.c
 *   ./exit_race MODE [VMAS]
 *
 * Under ptrace with PTRACE_O_TRACEEXIT, a thread already inside do_exit() when its thread group is
 * killed (exit_group, a fatal signal) does not stop at exit: it skips the stop, or is woken from it
 * before the tracer has waited for it. Both modes make that happen every time: a forker thread forks
 * a child with VMAS (default 20000) separate mappings, so the tracer spends a while on the child's
 * start snapshot; while it does, a thread exits on its own and sits in its unattended exit stop,
 * and another thread, seeing it there (state 't' in /proc), kills the group:
 *
 *   thread  a thread exits (SYS_exit); the main thread maps a LATE marker, waits until that
 *           thread is in its exit stop and calls exit_group(7)
 *   leader  the group leader exits (SYS_exit: it becomes a zombie whose /proc/PID/maps is empty);
 *           a worker thread maps a LATE marker, waits until the leader is in its exit stop and
 *           calls exit_group(6): the process's last thread is not its leader
 *
 * Output: MARKER <pid> <hex address> (7 written pages, mapped first), LATE <pid> <hex address>
 * (3 written pages, mapped last, after the child's start), CHILD <pid>, and HELD when the exiting
 * thread was seen in its exit stop right before exit_group (the case this program is for; on a
 * machine too busy for it, the stop may have been waited for first: no HELD).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static char *big;
static long nbig = 20000;
static volatile pid_t child_pid, exiting_tid;
static pid_t pid;

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

static char *region(int pages, const char *tag) {
    char *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    for (int i = 0; i < pages; i++)
        m[i * PAGE] = 1;
    printf("%s %d %lx\n", tag, pid, (unsigned long)m);
    fflush(stdout);
    return m;
}

/* The state letter of /proc/PID/task/TID/stat ('t': stopped by the tracer), 0 when it is gone. */
static char state_of(pid_t tgid, pid_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", tgid, tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] && p[2] ? p[2] : 0;
}

/* Wait until the task is stopped by the tracer (true), or has gone past it (false; 5 s at most). */
static int wait_traced(pid_t tgid, pid_t tid) {
    for (int i = 0; i < 50000; i++) {
        char s = state_of(tgid, tid);
        if (s == 't')
            return 1;
        if (s == 0 || s == 'Z' || s == 'X')
            return 0;
        sleep_us(100);
    }
    return 0;
}

static void *forker(void *arg) {
    (void)arg;
    pid_t c = fork();
    if (c == 0) { /* the child: its start snapshot (all those VMAs) keeps the tracer busy */
        munmap(big, 2 * nbig * PAGE);
        _exit(0);
    }
    printf("CHILD %d\n", c);
    fflush(stdout);
    child_pid = c;
    waitpid(c, NULL, 0);
    for (;;)
        pause();
    return NULL;
}

static void *exiter(void *arg) {
    (void)arg;
    exiting_tid = (pid_t)syscall(SYS_gettid);
    while (!child_pid)
        sleep_us(100);
    wait_traced(child_pid, child_pid); /* the tracer is now reading the child */
    syscall(SYS_exit, 0);
    return NULL;
}

static void *killer(void *arg) {
    (void)arg;
    while (!child_pid)
        sleep_us(100);
    wait_traced(child_pid, child_pid); /* (the leader's own stops before this are not its exit) */
    region(3, "LATE");
    if (wait_traced(pid, pid)) /* the leader sits in its exit stop */
        write(1, "HELD\n", 5);
    syscall(SYS_exit_group, 6);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "thread") && strcmp(argv[1], "leader"))) {
        fprintf(stderr, "usage: %s thread|leader [VMAS]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        nbig = atol(argv[2]);
    pid = getpid();
    region(7, "MARKER");
    /* nbig separate VMAs: every other page of one mapping made inaccessible */
    big = mmap(NULL, 2 * nbig * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < nbig; i++)
        mprotect(big + 2 * i * PAGE, PAGE, PROT_NONE);
    pthread_t f, t;
    if (!strcmp(argv[1], "thread")) {
        pthread_create(&t, NULL, exiter, NULL);
        while (!exiting_tid)
            sleep_us(100);
        pthread_create(&f, NULL, forker, NULL);
        while (!child_pid)
            sleep_us(100);
        munmap(big, 2 * nbig * PAGE);
        region(3, "LATE");
        if (wait_traced(pid, exiting_tid)) /* the thread sits in its exit stop */
            write(1, "HELD\n", 5);
        syscall(SYS_exit_group, 7);
    }
    pthread_create(&t, NULL, killer, NULL);
    pthread_create(&f, NULL, forker, NULL);
    while (!child_pid)
        sleep_us(100);
    munmap(big, 2 * nbig * PAGE);
    wait_traced(child_pid, child_pid);
    syscall(SYS_exit, 0); /* the leader leaves first */
    return 0;
}
