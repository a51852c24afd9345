/* open_files_attach.c: mappings of one file through two open files, before and after a recorder
 * attaches, so that a trace must name each open file the same way in its first (deep) snapshot
 * and in its later mmap events.
 *
 *   gcc -O1 -g -o open_files_attach tests/workloads/open_files_attach.c
 *   ./open_files_attach FILE
 *
 * Opens FILE (made 32 pages long) twice, fds A and B, and maps pages 0-7 of A at the start of a
 * reserved 32-page window; prints `window <hex address>` and waits for a line on stdin (the
 * recorder attaches meanwhile). Then maps pages 8-15 of A right after (the same open file,
 * contiguous offsets: the kernel merges the two into one VMA), and pages 16-23 of B after that
 * (another open file: a VMA of its own); prints `done` and waits for end of input.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096L

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int a = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    int b = open(argv[1], O_RDWR);
    if (a < 0 || b < 0 || ftruncate(a, 32 * PG) != 0)
        return 1;
    char *w = mmap(NULL, 32 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED || mmap(w, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a, 0) == MAP_FAILED)
        return 1;
    printf("window %lx\n", (unsigned long)w);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    if (mmap(w + 8 * PG, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a, 8 * PG) == MAP_FAILED ||
        mmap(w + 16 * PG, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, b, 16 * PG) == MAP_FAILED)
        return 1;
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
