/*
 * vmatrace oracle runner: executes VMA operation scripts on the running kernel and prints, after
 * every step, the errno and the VMAs of a private window as /proc/self/smaps shows them.
 *
 * Build: gcc -static -O2 -o runner runner.c   (static, so it also runs in a busybox initramfs)
 * Usage: runner [-b BASE_HEX] [-w PAGES] [-d FD,RECSIZE] [SCRIPT]  (script from stdin when omitted)
 *   -d FD,RECSIZE   FD is a loaded BPF task_vma iterator program (collectors/bpf/deep.bpf.c, passed
 *           in by replay/oracle/execute.py) whose records are RECSIZE bytes: after every step the
 *           runner also iterates its own VMAs and prints their anon_vma identity and chain length
 *
 * The script and output formats are documented in docs/oracle.md. In short:
 *
 *   seq ID               starts a sequence (each sequence runs in a fresh forked child)
 *   mmap P N PROT FLAGS  e.g. "mmap 0 4 rw- private,anon,fixed,noreserve"
 *   mmap P N PROT FLAGS S OFF   a file mapping of fd slot S at page offset OFF (no "anon")
 *   open S F [ro] | memfd S | zero S | dup S T | close S     fd slots 0..7: open file F (a, b, c
 *                        in the working directory, created with FILE_PAGES(F) pages), a memfd,
 *                        /dev/zero, dup of slot S into slot T
 *   brk N                brk(start_brk + N pages), N >= 1 (page 0 holds the TLS block); every
 *                        sequence starts with a heap of HEAP0 pages; after the first brk the
 *                        dump also shows the heap as pages HEAP_PAGE + (addr - start_brk) / PAGE,
 *                        and P >= HEAP_PAGE addresses the heap the same way
 *   munmap P N | mprotect P N PROT | madvise P N ADVICE | mlock P N | mlock2 P N [onfault]
 *   munlock P N | mseal P N | mremap P OLDN NEWN FLAGS [NEWP] | touch P | read P | fork | forkp
 *   guard P N            (= madvise P N guard_install)
 *   end                  ends the sequence
 *
 * P, N are pages relative to the window base. Output:
 *
 *   #seq ID
 *   @ STEP ERRNO RET            (RET: page of the result for mmap/mremap, else "-")
 *   START END PERMS FLAG... [=NAME+PGOFF]   (one line per VMA overlapping the window, pages
 *                        relative to base; a VMA with a file shows the last component of its path
 *                        (spaces as "_") and its page offset)
 *   % START END ANON AVC        (with -d, after those: ANON = 0 without an anon_vma, else a small
 *                                number per anon_vma, stable within a sequence; AVC = chain length)
 *   #end ID STATUS              (STATUS: "ok", "exit:N" or "signal:N")
 *
 * Step 0 is the empty window before the first operation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#define SYS_MSEAL_NR 462
#define SYS_MLOCK2_NR 325
#ifndef MAP_STACK
#define MAP_STACK 0x20000
#endif
#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#define NSLOTS 8
#define HEAP_PAGE 1000L /* the heap's first page in the window's page numbering */
#define HEAP_PAGES 64L
#define HEAP0 4L /* heap pages at the start of every sequence */

static int fds[NSLOTS];
static unsigned long start_brk; /* from /proc/self/stat; 0: not read yet */
static int show_heap; /* the heap is part of the dump once the sequence called brk */

/* every file of a sequence has a fixed size, so accesses beyond EOF are predictable */
static long file_pages(const char *name)
{
	return name[0] == 'a' ? 16 : name[0] == 'b' ? 8 : 3;
}

static unsigned long base = 0x100000001000UL; /* not 2 MiB aligned: no THP can ever fit */
static unsigned long wpages = 64;

/* ---- output: one buffer per process, flushed before fork and at exit ---- */
static char obuf[1 << 16];
static size_t olen;

static void oflush(void)
{
	size_t off = 0;
	while (off < olen) {
		ssize_t n = write(1, obuf + off, olen - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(120);
		}
		off += (size_t)n;
	}
	olen = 0;
}

static void oprintf(const char *fmt, ...)
{
	va_list ap;
	int n;
	if (olen > sizeof(obuf) - 512)
		oflush();
	va_start(ap, fmt);
	n = vsnprintf(obuf + olen, sizeof(obuf) - olen, fmt, ap);
	va_end(ap);
	if (n > 0)
		olen += (size_t)n < sizeof(obuf) - olen ? (size_t)n : sizeof(obuf) - olen - 1;
}

/* ---- /proc/self/smaps reader (static buffer: the check itself creates no mappings) ---- */
static char sbuf[1 << 20];

static void dump_deep(void);
static int deep_prog = -1;

static void read_start_brk(void)
{
	/* field 47 of /proc/self/stat (start_brk), after the parenthesised comm */
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	char b[1024];
	ssize_t n;
	char *p;
	int field = 2;
	if (fd < 0)
		return;
	n = read(fd, b, sizeof(b) - 1);
	close(fd);
	if (n <= 0)
		return;
	b[n] = 0;
	p = strrchr(b, ')');
	while (p && *p && field < 47) {
		p = strchr(p + 1, ' ');
		field++;
	}
	if (p)
		start_brk = strtoul(p + 1, NULL, 10);
}

static long rel_page(unsigned long a)
{
	if (show_heap && a >= start_brk && a <= start_brk + HEAP_PAGES * PAGE)
		return HEAP_PAGE + (long)(a - start_brk) / (long)PAGE;
	return ((long)a - (long)base) / (long)PAGE;
}

static void dump_window(void)
{
	int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	char *p, *line;
	int in = 0;
	unsigned long wend = base + wpages * PAGE;
	unsigned long hlo = start_brk, hhi = start_brk + HEAP_PAGES * PAGE;
	char name[96];
	unsigned long pgoff = 0;

	if (fd < 0) {
		oprintf("!smaps-open %d\n", errno);
		return;
	}
	for (;;) {
		ssize_t n = read(fd, sbuf + len, sizeof(sbuf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len >= sizeof(sbuf) - 1)
			break;
	}
	close(fd);
	sbuf[len] = 0;
	for (line = sbuf; line && *line; line = p) {
		p = strchr(line, '\n');
		if (p)
			*p++ = 0;
		if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
			unsigned long s, e, off, ino;
			char perms[8], dev[16];
			int pos = 0;
			if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &s, &e, perms, &off, dev, &ino,
				   &pos) >= 6) {
				in = (s < wend && e > base) || (show_heap && s < hhi && e > hlo);
				name[0] = 0;
				if (in && ino && pos > 0 && line[pos] == '/') {
					const char *path = line + pos;
					const char *last = strrchr(path, '/');
					size_t k = 0;
					/* "/dev/zero (deleted)": the slash before "(deleted)" does not count */
					if (strstr(path, " (deleted)")) {
						last = path;
						for (const char *q = path; *q && q < strstr(path, " (deleted)"); q++)
							if (*q == '/')
								last = q;
					}
					for (const char *q = last + 1; *q && k < sizeof(name) - 1; q++)
						name[k++] = *q == ' ' ? '_' : *q;
					name[k] = 0;
					pgoff = off / PAGE;
				}
				if (in)
					oprintf("%ld %ld %s", rel_page(s), rel_page(e), perms);
				continue;
			}
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			char *f = line + 8;
			char *tok, *save = NULL;
			for (tok = strtok_r(f, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
				oprintf(" %s", tok);
			if (name[0])
				oprintf(" =%s+%lu", name, pgoff);
			oprintf("\n");
			in = 0;
		}
	}
	if (deep_prog >= 0)
		dump_deep();
}

/* ---- deep state: a BPF task_vma iterator over our own VMAs (raw bpf(2), no library) ---- */
static int deep_link = -1;
static pid_t deep_link_pid;
#define BPF_LINK_CREATE_CMD 28
#define BPF_ITER_CREATE_CMD 33
#define BPF_TRACE_ITER_TYPE 28
#ifndef SYS_bpf
#define SYS_bpf 321
#endif

struct deep_rec { /* the head of struct deep_rec of collectors/bpf/deep.bpf.c (its tail varies) */
	unsigned long start, end, flags, pgoff, file, anon_vma, mm;
	unsigned int tgid, tid, avc, bits;
};
static size_t deep_rec_size;

static unsigned long anon_ptrs[4096]; /* pointer -> index + 1; copied into forked children */
static int nanon;

static int anon_id(unsigned long p)
{
	if (!p)
		return 0;
	for (int i = 0; i < nanon; i++)
		if (anon_ptrs[i] == p)
			return i + 1;
	if (nanon == (int)(sizeof(anon_ptrs) / sizeof(anon_ptrs[0])))
		return -1;
	anon_ptrs[nanon++] = p;
	return nanon;
}

static char drecs[4096 * 160];

static void dump_deep(void)
{
	unsigned long wend = base + wpages * PAGE;
	unsigned int attr[32];
	pid_t me = getpid();
	size_t len = 0;
	int it;

	if (deep_link < 0 || deep_link_pid != me) {
		unsigned int info[4] = {0, (unsigned int)me, 0, 0}; /* bpf_iter_link_info.task.{tid,pid} */
		unsigned long ip = (unsigned long)info;
		if (deep_link >= 0)
			close(deep_link); /* the parent's link, inherited */
		memset(attr, 0, sizeof(attr));
		attr[0] = (unsigned int)deep_prog; /* link_create.prog_fd */
		attr[2] = BPF_TRACE_ITER_TYPE;     /* link_create.attach_type */
		memcpy(&attr[4], &ip, sizeof(ip)); /* link_create.iter_info */
		attr[6] = sizeof(info);            /* link_create.iter_info_len */
		deep_link = (int)syscall(SYS_bpf, BPF_LINK_CREATE_CMD, attr, sizeof(attr));
		deep_link_pid = me;
		if (deep_link < 0) {
			oprintf("!deep-link %d\n", errno);
			return;
		}
	}
	memset(attr, 0, sizeof(attr));
	attr[0] = (unsigned int)deep_link;
	it = (int)syscall(SYS_bpf, BPF_ITER_CREATE_CMD, attr, sizeof(attr));
	if (it < 0) {
		oprintf("!deep-iter %d\n", errno);
		return;
	}
	for (;;) {
		ssize_t n = read(it, drecs + len, sizeof(drecs) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len >= sizeof(drecs))
			break;
	}
	close(it);
	for (size_t off = 0; off + deep_rec_size <= len; off += deep_rec_size) {
		struct deep_rec *r = (struct deep_rec *)(drecs + off);
		int in_heap = show_heap && r->start < start_brk + HEAP_PAGES * PAGE &&
			      r->end > start_brk;
		if (r->tid != ((struct deep_rec *)drecs)->tid ||
		    ((r->start >= wend || r->end <= base) && !in_heap))
			continue;
		oprintf("%% %ld %ld %d %u\n", rel_page(r->start), rel_page(r->end),
			anon_id(r->anon_vma), r->avc);
	}
}

/* ---- parsing helpers ---- */
static int parse_prot(const char *s)
{
	int prot = 0;
	if (!s)
		return -1;
	for (; *s; s++) {
		if (*s == 'r')
			prot |= PROT_READ;
		else if (*s == 'w')
			prot |= PROT_WRITE;
		else if (*s == 'x')
			prot |= PROT_EXEC;
		else if (*s != '-')
			return -1;
	}
	return prot;
}

static int has_tok(const char *list, const char *word)
{
	size_t wl = strlen(word);
	const char *p = list;
	while (p && *p) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		if (l == wl && strncmp(p, word, wl) == 0)
			return 1;
		p = c ? c + 1 : NULL;
	}
	return 0;
}

static int check_toks(const char *list, const char *const *known)
{
	const char *p = list;
	if (!p || strcmp(p, "-") == 0 || strcmp(p, "0") == 0)
		return 0;
	while (p && *p) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		int ok = 0;
		for (const char *const *k = known; *k; k++)
			if (strlen(*k) == l && strncmp(p, *k, l) == 0)
				ok = 1;
		if (!ok)
			return -1;
		p = c ? c + 1 : NULL;
	}
	return 0;
}

struct advice {
	const char *name;
	int value;
};
static const struct advice advices[] = {
	{"normal", 0}, {"random", 1}, {"sequential", 2}, {"willneed", 3}, {"dontneed", 4},
	{"free", 8}, {"dontfork", 10}, {"dofork", 11}, {"mergeable", 12}, {"unmergeable", 13},
	{"hugepage", 14}, {"nohugepage", 15}, {"dontdump", 16}, {"dodump", 17},
	{"wipeonfork", 18}, {"keeponfork", 19}, {"cold", 20}, {"pageout", 21},
	{"populate_read", 22}, {"populate_write", 23}, {"remove", 9},
	{"dontneed_locked", 24}, {"collapse", 25}, {"guard_install", 102},
	{"guard_remove", 103}, {NULL, 0},
};

static int parse_advice(const char *s)
{
	char *end;
	long v;
	if (!s)
		return -1;
	for (const struct advice *a = advices; a->name; a++)
		if (strcmp(a->name, s) == 0)
			return a->value;
	v = strtol(s, &end, 0);
	return (*end == 0 && v >= 0) ? (int)v : -1;
}

static sigjmp_buf fault_env;
static volatile sig_atomic_t in_touch;

static void on_fault(int sig)
{
	(void)sig;
	if (in_touch)
		siglongjmp(fault_env, 1);
	_exit(121);
}

/* One access; returns 0 or EFAULT (SIGSEGV or SIGBUS). */
static __attribute__((noinline)) int do_touch(unsigned long a, int write)
{
	if (sigsetjmp(fault_env, 1) == 0) {
		in_touch = 1;
		if (write)
			*(volatile char *)a = 1;
		else
			(void)*(volatile char *)a;
		in_touch = 0;
		return 0;
	}
	in_touch = 0;
	return EFAULT;
}

static unsigned long addr_of(const char *tok, int *bad)
{
	char *end;
	long v;
	if (!tok) {
		*bad = 1;
		return 0;
	}
	v = strtol(tok, &end, 0);
	if (*end)
		*bad = 1;
	if (v >= HEAP_PAGE)
		return start_brk + (unsigned long)((v - HEAP_PAGE) * (long)PAGE);
	return base + (unsigned long)(v * (long)PAGE);
}

static long pages_of(const char *tok, int *bad)
{
	char *end;
	long v;
	if (!tok) {
		*bad = 1;
		return 0;
	}
	v = strtol(tok, &end, 0);
	if (*end || v < 0)
		*bad = 1;
	return v;
}

static void print_ret(int step, int err, void *ret, int is_addr)
{
	if (!is_addr || err) {
		oprintf("@ %d %d -\n", step, err);
		return;
	}
	unsigned long r = (unsigned long)ret;
	if (r >= base && r < base + wpages * PAGE && (r - base) % PAGE == 0)
		oprintf("@ %d %d %ld\n", step, err, (long)((r - base) / PAGE));
	else if (is_addr == 2 && r >= start_brk && (r - start_brk) % PAGE == 0)
		oprintf("@ %d %d %ld\n", step, err, HEAP_PAGE + (long)((r - start_brk) / PAGE));
	else
		oprintf("@ %d %d x%lx\n", step, err, r);
}

/* Execute one op line. Returns 0, or 1 when this process must stop (fork parent done). */
static int run_op(char *line, int step)
{
	char *tok[8] = {0};
	int nt = 0, bad = 0, err = 0;
	char *save = NULL;
	void *ret = NULL;
	int is_addr = 0;

	for (char *t = strtok_r(line, " \t\r", &save); t && nt < 8; t = strtok_r(NULL, " \t\r", &save))
		tok[nt++] = t;
	if (nt == 0)
		return 0;
	const char *op = tok[0];

	if (strcmp(op, "mmap") == 0) {
		static const char *const known[] = {"private", "shared", "validate", "anon", "fixed",
						    "noreplace", "noreserve", "populate", "locked",
						    "growsdown", "stack", "hugetlb", NULL};
		unsigned long a = addr_of(tok[1], &bad);
		long n = pages_of(tok[2], &bad);
		int prot = parse_prot(tok[3]);
		const char *fl = tok[4] ? tok[4] : "";
		int flags = 0, fd = -1;
		long off = 0;
		if (prot < 0 || check_toks(fl, known) < 0)
			bad = 1;
		if (!has_tok(fl, "anon")) {
			long slot = pages_of(tok[5], &bad);
			off = pages_of(tok[6], &bad);
			if (slot >= NSLOTS)
				bad = 1;
			else
				fd = fds[slot];
		}
		flags |= has_tok(fl, "shared") ? MAP_SHARED : 0;
		flags |= has_tok(fl, "validate") ? MAP_SHARED_VALIDATE : 0;
		flags |= has_tok(fl, "private") ? MAP_PRIVATE : 0;
		flags |= has_tok(fl, "anon") ? MAP_ANONYMOUS : 0;
		flags |= has_tok(fl, "fixed") ? MAP_FIXED : 0;
		flags |= has_tok(fl, "noreplace") ? MAP_FIXED_NOREPLACE : 0;
		flags |= has_tok(fl, "noreserve") ? MAP_NORESERVE : 0;
		flags |= has_tok(fl, "populate") ? MAP_POPULATE : 0;
		flags |= has_tok(fl, "locked") ? MAP_LOCKED : 0;
		flags |= has_tok(fl, "growsdown") ? MAP_GROWSDOWN : 0;
		flags |= has_tok(fl, "stack") ? MAP_STACK : 0;
		flags |= has_tok(fl, "hugetlb") ? MAP_HUGETLB : 0;
		if (!bad) {
			ret = mmap((void *)a, (size_t)n * PAGE, prot, flags, fd, (off_t)off * (off_t)PAGE);
			err = ret == MAP_FAILED ? errno : 0;
			is_addr = 1;
		}
	} else if (strcmp(op, "open") == 0 || strcmp(op, "memfd") == 0 ||
		   strcmp(op, "zero") == 0) {
		long slot = pages_of(tok[1], &bad);
		int fd = -1;
		if (slot >= NSLOTS || (op[0] == 'o' && (!tok[2] || !strchr("abc", tok[2][0]) ||
							 tok[2][1])))
			bad = 1;
		if (!bad && op[0] == 'o') {
			fd = open(tok[2], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
			if (fd >= 0 && ftruncate(fd, file_pages(tok[2]) * (off_t)PAGE))
				err = errno;
			if (fd >= 0 && tok[3] && strcmp(tok[3], "ro") == 0) {
				close(fd);
				fd = open(tok[2], O_RDONLY | O_CLOEXEC);
			}
		} else if (!bad && op[0] == 'm') {
			fd = (int)syscall(SYS_memfd_create, "m", 1U /* MFD_CLOEXEC */);
			if (fd >= 0 && ftruncate(fd, 16 * (off_t)PAGE))
				err = errno;
		} else if (!bad) {
			fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
		}
		if (!bad) {
			if (fd < 0)
				err = errno;
			if (fds[slot] >= 0)
				close(fds[slot]);
			fds[slot] = fd;
		}
	} else if (strcmp(op, "dup") == 0 || strcmp(op, "close") == 0) {
		long s1 = pages_of(tok[1], &bad);
		long s2 = op[0] == 'd' ? pages_of(tok[2], &bad) : 0;
		if (s1 >= NSLOTS || s2 >= NSLOTS)
			bad = 1;
		if (!bad && op[0] == 'd') {
			int fd = fds[s1] >= 0 ? dup(fds[s1]) : -1;
			err = fds[s1] < 0 ? EBADF : fd < 0 ? errno : 0;
			if (fd >= 0) {
				if (fds[s2] >= 0)
					close(fds[s2]);
				fds[s2] = fd;
			}
		} else if (!bad) {
			err = fds[s1] < 0 ? EBADF : close(fds[s1]) ? errno : 0;
			fds[s1] = -1;
		}
	} else if (strcmp(op, "brk") == 0) {
		long n = pages_of(tok[1], &bad);
		if (!bad) {
			ret = (void *)syscall(SYS_brk, start_brk + (unsigned long)n * PAGE);
			is_addr = 2;
			show_heap = 1;
		}
	} else if (strcmp(op, "munmap") == 0 || strcmp(op, "mlock") == 0 ||
		   strcmp(op, "munlock") == 0 || strcmp(op, "mseal") == 0) {
		unsigned long a = addr_of(tok[1], &bad);
		long n = pages_of(tok[2], &bad);
		if (!bad) {
			long r;
			if (strcmp(op, "munmap") == 0)
				r = munmap((void *)a, (size_t)n * PAGE);
			else if (strcmp(op, "mlock") == 0)
				r = mlock((void *)a, (size_t)n * PAGE);
			else if (strcmp(op, "munlock") == 0)
				r = munlock((void *)a, (size_t)n * PAGE);
			else
				r = syscall(SYS_MSEAL_NR, a, (size_t)n * PAGE, 0UL);
			err = r ? errno : 0;
		}
	} else if (strcmp(op, "mlock2") == 0) {
		unsigned long a = addr_of(tok[1], &bad);
		long n = pages_of(tok[2], &bad);
		unsigned long fl = 0;
		if (tok[3]) {
			if (strcmp(tok[3], "onfault") == 0)
				fl = 1;
			else if (strcmp(tok[3], "0") != 0)
				bad = 1;
		}
		if (!bad)
			err = syscall(SYS_MLOCK2_NR, a, (size_t)n * PAGE, fl) ? errno : 0;
	} else if (strcmp(op, "mprotect") == 0) {
		unsigned long a = addr_of(tok[1], &bad);
		long n = pages_of(tok[2], &bad);
		int prot = parse_prot(tok[3]);
		if (prot < 0)
			bad = 1;
		if (!bad)
			err = mprotect((void *)a, (size_t)n * PAGE, prot) ? errno : 0;
	} else if (strcmp(op, "madvise") == 0 || strcmp(op, "guard") == 0) {
		/* "guard P N" is short for "madvise P N guard_install" */
		unsigned long a = addr_of(tok[1], &bad);
		long n = pages_of(tok[2], &bad);
		int adv = op[0] == 'g' ? 102 : parse_advice(tok[3]);
		if (adv < 0)
			bad = 1;
		if (!bad)
			err = madvise((void *)a, (size_t)n * PAGE, adv) ? errno : 0;
	} else if (strcmp(op, "mremap") == 0) {
		static const char *const known[] = {"maymove", "fixed", "dontunmap", NULL};
		unsigned long a = addr_of(tok[1], &bad);
		long on = pages_of(tok[2], &bad);
		long nn = pages_of(tok[3], &bad);
		const char *fl = tok[4] ? tok[4] : "0";
		int flags = 0;
		unsigned long na = 0;
		if (check_toks(fl, known) < 0)
			bad = 1;
		flags |= has_tok(fl, "maymove") ? MREMAP_MAYMOVE : 0;
		flags |= has_tok(fl, "fixed") ? MREMAP_FIXED : 0;
		flags |= has_tok(fl, "dontunmap") ? MREMAP_DONTUNMAP : 0;
		if (tok[5])
			na = addr_of(tok[5], &bad);
		if (!bad) {
			ret = (void *)syscall(SYS_mremap, a, (size_t)on * PAGE, (size_t)nn * PAGE,
					      flags, na);
			err = ret == MAP_FAILED ? errno : 0;
			is_addr = 1;
		}
	} else if (strcmp(op, "touch") == 0 || strcmp(op, "read") == 0) {
		unsigned long a = addr_of(tok[1], &bad);
		if (!bad)
			err = do_touch(a, op[0] == 't');
	} else if (strcmp(op, "fork") == 0 || strcmp(op, "forkp") == 0) {
		pid_t pid;
		int st;
		oflush();
		pid = fork();
		if (pid < 0) {
			err = errno;
		} else if (strcmp(op, "fork") == 0 && pid > 0) {
			/* parent: wait for the child, which continues the script; pass on its status */
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			if (WIFSIGNALED(st)) {
				signal(WTERMSIG(st), SIG_DFL);
				raise(WTERMSIG(st));
			}
			_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 122);
		} else if (strcmp(op, "forkp") == 0 && pid == 0) {
			_exit(0); /* child exits at once: the parent continues */
		} else if (pid > 0) {
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
		}
	} else {
		bad = 1;
	}
	if (bad) {
		oprintf("!bad-op %d %s\n", step, op);
		return 1;
	}
	print_ret(step, err, ret, is_addr);
	dump_window();
	return 0;
}

static int reserve_window(void)
{
	/* one guard page either side: nothing may be adjacent to the window */
	unsigned long lo = base - PAGE, len = (wpages + 2) * PAGE;
	void *r = mmap((void *)lo, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (r == MAP_FAILED)
		return -errno;
	if ((unsigned long)r != lo) {
		munmap(r, len);
		return -EEXIST;
	}
	return munmap(r, len) ? -errno : 0;
}

static char seqbuf[1 << 16];
static char *seqlines[2048];

static void run_sequence(char **lines, int n)
{
	struct sigaction sa;
	int rw;
	size_t used = 0;

	/* the sequence's lines move out of the parent's heap, which is cut down below */
	if (n > (int)(sizeof(seqlines) / sizeof(seqlines[0]))) {
		oprintf("!too-long %d\n", n);
		oflush();
		_exit(126);
	}
	for (int i = 0; i < n; i++) {
		size_t l = strlen(lines[i]) + 1;
		if (used + l > sizeof(seqbuf)) {
			oprintf("!too-long %d\n", n);
			oflush();
			_exit(126);
		}
		memcpy(seqbuf + used, lines[i], l);
		seqlines[i] = seqbuf + used;
		used += l;
	}
	lines = seqlines;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	for (int i = 0; i < NSLOTS; i++)
		fds[i] = -1;
	read_start_brk();
	/* the heap starts every sequence as HEAP0 pages (static glibc keeps its TLS block at
	 * start_brk; the child never calls malloc, so the rest of the parent's heap can go) */
	if (!start_brk || (unsigned long)syscall(SYS_brk, start_brk + HEAP0 * PAGE) !=
				  start_brk + HEAP0 * PAGE) {
		oprintf("!heap %lx\n", start_brk);
		oflush();
		_exit(125);
	}
	rw = reserve_window();
	if (rw) {
		oprintf("!window %d\n", -rw);
		oflush();
		_exit(123);
	}
	oprintf("@ 0 0 -\n");
	dump_window();
	for (int i = 0; i < n; i++) {
		if (run_op(lines[i], i + 1)) {
			oflush();
			_exit(124);
		}
	}
	oflush();
	_exit(0);
}

static char *read_all(FILE *f)
{
	size_t cap = 1 << 16, len = 0;
	char *b = malloc(cap);
	size_t n;
	if (!b)
		return NULL;
	while ((n = fread(b + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 >= cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb)
				return NULL;
			b = nb;
			cap *= 2;
		}
	}
	b[len] = 0;
	return b;
}

int main(int argc, char **argv)
{
	int opt;
	FILE *f = stdin;
	char *text, *p, *line;
	char **lines = NULL;
	int nlines = 0, cap = 0, inseq = 0;
	char seqid[128] = "";

	while ((opt = getopt(argc, argv, "b:w:d:")) != -1) {
		if (opt == 'b')
			base = strtoul(optarg, NULL, 16);
		else if (opt == 'd') {
			char *comma;
			deep_prog = (int)strtol(optarg, &comma, 10);
			deep_rec_size = *comma == ',' ? strtoul(comma + 1, NULL, 10) : 0;
			if (deep_rec_size < sizeof(struct deep_rec) || deep_rec_size > 160) {
				fprintf(stderr, "-d FD,RECSIZE: bad record size\n");
				return 2;
			}
		}
		else if (opt == 'w')
			wpages = strtoul(optarg, NULL, 0);
		else {
			fprintf(stderr, "usage: %s [-b BASE_HEX] [-w PAGES] [-d FD,RECSIZE] [SCRIPT]\n", argv[0]);
			return 2;
		}
	}
	if (base % PAGE || wpages == 0) {
		fprintf(stderr, "bad window\n");
		return 2;
	}
	if (optind < argc && !(f = fopen(argv[optind], "r"))) {
		perror(argv[optind]);
		return 2;
	}
	text = read_all(f);
	if (!text)
		return 3;
	printf("#runner base=%lx pages=%lu\n", base, wpages);
	fflush(stdout);
	for (line = text; line && *line; line = p) {
		p = strchr(line, '\n');
		if (p)
			*p++ = 0;
		while (*line == ' ' || *line == '\t')
			line++;
		size_t l = strlen(line);
		while (l && (line[l - 1] == '\r' || line[l - 1] == ' '))
			line[--l] = 0;
		if (!*line || *line == '#')
			continue;
		if (strncmp(line, "seq ", 4) == 0) {
			snprintf(seqid, sizeof(seqid), "%s", line + 4);
			nlines = 0;
			inseq = 1;
			continue;
		}
		if (strcmp(line, "end") == 0 && inseq) {
			pid_t pid;
			int st = 0;
			inseq = 0;
			printf("#seq %s\n", seqid);
			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				printf("#end %s fork-failed:%d\n", seqid, errno);
				continue;
			}
			if (pid == 0)
				run_sequence(lines, nlines);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				printf("#end %s ok\n", seqid);
			else if (WIFEXITED(st))
				printf("#end %s exit:%d\n", seqid, WEXITSTATUS(st));
			else
				printf("#end %s signal:%d\n", seqid, WTERMSIG(st));
			fflush(stdout);
			continue;
		}
		if (inseq) {
			if (nlines == cap) {
				cap = cap ? cap * 2 : 64;
				lines = realloc(lines, sizeof(*lines) * (size_t)cap);
				if (!lines)
					return 3;
			}
			lines[nlines++] = line;
		}
	}
	printf("#done\n");
	fflush(stdout);
	return 0;
}
