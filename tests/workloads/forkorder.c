/* forkorder.c: a fork while another thread changes the address space.
 *
 *   gcc -O1 -pthread -o forkorder tests/workloads/forkorder.c
 *   ./forkorder N
 *
 * One thread maps and unmaps one page at a fixed address (0x200000000000) without pause while the
 * main thread forks N children that exit at once. Each child's address space is the parent's at
 * the copy (dup_mmap()): it holds the page iff the toggling thread's last call before the copy
 * was the mmap. Prints TOGGLE <hex address>.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#define PAGE 4096UL
static char *addr;
static atomic_int stop;
static void *toggler(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        if (mmap(addr, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED)
            abort();
        munmap(addr, PAGE);
    }
    return NULL;
}
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    addr = (char *)0x200000000000UL;
    printf("TOGGLE %lx\n", (unsigned long)addr);
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, toggler, NULL);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0)
            _exit(0);
        waitpid(p, NULL, 0);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
