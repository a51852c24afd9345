/* fileid.c: mappings whose open files must be told apart (or not) by a trace.
 *
 *   gcc -O1 -g -o fileid tests/workloads/fileid.c
 *   ./fileid DIR        (DIR: a writable directory for its files; it also uses /dev/shm)
 *
 * Prints one line per case, `MAP <tag> <pid> <hex address>`, for the mapping it made:
 *   twice    DATA opened twice (fds A and B): 2 pages of A, then page 2 replaced by B's page 2
 *            (MAP_FIXED): two open files side by side, contiguous offsets: two VMAs
 *   dup      the same with A and dup(A): one open file: the kernel merges them back into one VMA
 *   dup2     one page of dup2(A, 50); fcntl: one page of fcntl(A, F_DUPFD_CLOEXEC, 60): A's file
 *   shanon   MAP_SHARED|MAP_ANONYMOUS: a shmem file of its own ("/dev/zero (deleted)")
 *   memfd    memfd_create("vmat-fileid"): "/memfd:vmat-fileid (deleted)"
 *   deleted  a file unlinked before it is mapped: "PATH (deleted)"
 *   devshm   a file on the tmpfs mounted at /dev/shm (the path crosses a mount point)
 *   sysv     shmat of a SysV segment: "/SYSV00000000 (deleted)"
 *   child-a  (in a forked child) one page of the inherited fd A: A's file
 *   child-open (in the child) one page of a new open of DATA: a file of its own
 * The child exits first; the parent waits for it, unlinks its /dev/shm file (so it leaves nothing
 * behind; its exit snapshot shows that file "(deleted)") and exits 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL

static void say(const char *tag, void *p) {
    if (p == MAP_FAILED) {
        perror(tag);
        exit(1);
    }
    printf("MAP %s %d %lx\n", tag, getpid(), (unsigned long)p);
    fflush(stdout);
}

static int make_file(const char *path) {
    char buf[2 * PAGE];
    memset(buf, 'x', sizeof buf);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
        perror(path);
        exit(1);
    }
    return fd;
}

/* Two pages of fd `a`, then the second page replaced by page 2 of fd `b`. */
static void *side_by_side(int a, int b) {
    char *p = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE, a, 0);
    if (p != MAP_FAILED && mmap(p + PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, b, PAGE) == MAP_FAILED)
        return MAP_FAILED;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fileid DIR\n");
        return 2;
    }
    char data[4096], gone[4096], shm[256];
    snprintf(data, sizeof data, "%s/data.bin", argv[1]);
    snprintf(gone, sizeof gone, "%s/gone.bin", argv[1]);
    snprintf(shm, sizeof shm, "/dev/shm/vmat-fileid-%d", getpid());
    close(make_file(data));

    int a = open(data, O_RDONLY), b = open(data, O_RDONLY);
    say("twice", side_by_side(a, b));
    int c = dup(a);
    say("dup", side_by_side(a, c));
    say("dup2", mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, dup2(a, 50), 0));
    say("fcntl", mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fcntl(a, F_DUPFD_CLOEXEC, 60), 0));
    say("shanon", mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    int m = memfd_create("vmat-fileid", 0);
    if (m < 0 || ftruncate(m, PAGE) != 0)
        return 1;
    say("memfd", mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0));
    int g = make_file(gone);
    unlink(gone);
    say("deleted", mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, g, 0));
    int s = make_file(shm);
    say("devshm", mmap(NULL, PAGE, PROT_READ, MAP_SHARED, s, 0));
    int id = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
    void *sv = id < 0 ? MAP_FAILED : shmat(id, NULL, 0);
    say("sysv", sv == (void *)-1 ? MAP_FAILED : sv);
    shmctl(id, IPC_RMID, NULL);

    pid_t pid = fork();
    if (pid == 0) {
        say("child-a", mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, a, 0));
        int e = open(data, O_RDONLY);
        say("child-open", mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, e, 0));
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    unlink(shm);
    close(a);
    close(b);
    close(c);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
