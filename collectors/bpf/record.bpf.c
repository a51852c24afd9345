// vmatrace record: the in-kernel half of the bcc collector (collectors/record.py loads it).
//
// Parameters come as -D macros (never by text replacement):
//   RINGBUF_PAGES  ring buffer size in pages (power of two)
//   OFF_TASK_PID, OFF_TASK_TGID, OFF_TASK_EXIT_CODE, OFF_TASK_MM
//                  task_struct member offsets read from the running kernel's BTF
//                  (the installed headers may describe another kernel)
//   WITH_FAULTS    trace the first write fault to each page
//   WITH_STACKS    record user stacks (STACK_ENTRIES entries)
//   WITH_LOCKSEQ   order VMA-changing syscalls by their mmap write-lock acquisition
//                  (MMLOCK_OFF_MM/_WRITE/_SUCCESS: field offsets from the tracepoint's format file)
//   FAULT_DEDUP_ENTRIES  size of the LRU map that deduplicates write faults
//   K_MMAP ... K_EXIT    event kind codes, from the one table in vmatrace/base/events.py
//   K_TEXT         the code of a string chunk record (recorder-internal)
//   K_FILE, K_PATH the codes of the file identity record and its path chunks (recorder-internal)
//   OFF_<STRUCT>_<MEMBER>  the other struct member offsets (mm_struct, maple tree nodes,
//                  vm_area_struct, file, path, dentry, qstr, inode, super_block, mount,
//                  dentry_operations), all from the running kernel's BTF
//   FILE_SEEN_ENTRIES  size of the LRU map that remembers which open files had their path sent
//
// x86-64 only: syscall arguments are read from the saved user registers (struct pt_regs).
//
// Every record is one fixed-size struct event (88 bytes, 96 in the ring with its header) so the
// user-space reader can decode whole batches with numpy. Strings (exec filename, prctl VMA names)
// follow their event as K_TEXT records carrying 56 bytes each. A file-backed mmap (or shmat) is
// followed by a K_FILE record naming the open file of the new VMA, and the first time an open file
// is seen, by K_PATH records with its path.
//
// Filtering: `procs` holds the tgids of the traced tree. A fork of a traced process adds the child
// (sched_process_fork); the last thread's exit removes it. Programs of other tasks stop at that one
// hash lookup.

#include <uapi/linux/ptrace.h>


#define CLONE_THREAD 0x00010000
#define TEXT_CHUNK 56
#define TEXT_MAX 280   // 5 chunks
#define USER_ADDR_END 0x0100000000000000ULL  // above every x86-64 user address (5-level paging too), below the kernel half

struct event {
    u64 seq;
    u64 ts;
    u32 pid;
    u32 tid;
    u16 kind;
    u16 flags;
    s32 stack_id;
    u64 a[6];
    s64 ret;
};

struct proc {
    u64 gen;    // bumped by every address-space change; the fault dedup key is valid for one gen
    u64 start_brk;  // mm->start_brk and mm->brk, refreshed by every call that can change them
    u64 brk;        // (read by record.py for each snapshot); 0: not known yet
};

struct stash {   // per task: the order a traced call took at its first mmap write-lock acquisition
    u64 nr;     // syscall number (orig_ax) of that call
    u64 seq;
    u64 ts;     // 0: nothing pending
};

struct fault_key {
    u32 tgid;
    u32 pad;
    u64 page;
};

struct text_buf {
    char s[TEXT_MAX + TEXT_CHUNK];
};

// A path as the dentry walk finds it: the names from the file up to the root, each NUL-terminated
// (leaf first; user space reverses them). PATH_LIMIT bytes at most (else: F_TRUNCATED).
#define PATH_LIMIT 1024
#define NAME_READ 256
#define PATH_DEPTH 48
struct path_buf {
    char s[PATH_LIMIT + NAME_READ + TEXT_CHUNK];
    u32 off;  // kept here, not in a register: the verifier does not track it per iteration
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(procs, u32, struct proc, 65536);
#ifdef WITH_LOCKSEQ
BPF_TASK_STORAGE(stash, struct stash);
BPF_ARRAY(lockseq_nrs, u8, 1024);  // syscall numbers of the traced calls (filled by record.py)
#endif
// 0 = next sequence number, 1 = failed ring reserves (lost events), 2 = faults suppressed by dedup,
// 3 = stack ids that failed, 4 = text records lost, 5 = file mappings whose VMA was not found at
// sys_exit (changed by another thread in between), 6 = file records lost
BPF_ARRAY(counters, u64, 8);
BPF_PERCPU_ARRAY(textbuf, struct text_buf, 1);
BPF_PERCPU_ARRAY(pathbuf, struct path_buf, 1);
BPF_TABLE("lru_hash", u64, u64, fileseen, FILE_SEEN_ENTRIES);  // struct file * -> its inode *
#ifdef WITH_FAULTS
BPF_TABLE("lru_hash", struct fault_key, u64, faultseen, FAULT_DEDUP_ENTRIES);
#endif
#ifdef WITH_STACKS
BPF_STACK_TRACE(stacks, STACK_ENTRIES);
#endif

static __always_inline u64 next_seq(void) {
    int k = 0;
    u64 *v = counters.lookup(&k);
    if (!v)
        return 0;
    return __sync_fetch_and_add(v, 1);
}

static __always_inline void count(int k) {
    u64 *v = counters.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline s32 user_stack(void *ctx) {
#ifdef WITH_STACKS
    int id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    if (id < 0)
        count(3);
    return id;
#else
    return -1;
#endif
}

static __always_inline int emit(void *ctx, u64 seq, u64 ts, u32 tgid, u32 tid, u16 kind, u16 flags,
                                u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5, s64 ret, int stack) {
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(1);
        return 0;
    }
    e->seq = seq;
    e->ts = ts;
    e->pid = tgid;
    e->tid = tid;
    e->kind = kind;
    e->flags = flags;
    e->stack_id = stack ? user_stack(ctx) : -1;
    e->a[0] = a0;
    e->a[1] = a1;
    e->a[2] = a2;
    e->a[3] = a3;
    e->a[4] = a4;
    e->a[5] = a5;
    e->ret = ret;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}

// K_TEXT records for the string in the per-CPU text buffer (len bytes including the NUL).
static __always_inline void emit_text(u64 seq, u32 tgid, u32 tid, struct text_buf *tb, int len) {
#pragma unroll
    for (int i = 0; i < TEXT_MAX / TEXT_CHUNK; i++) {
        if (i * TEXT_CHUNK >= len)
            break;
        struct event *e = events.ringbuf_reserve(sizeof(struct event));
        if (!e) {
            count(4);
            return;
        }
        e->seq = seq;
        e->ts = 0;
        e->pid = tgid;
        e->tid = tid;
        e->kind = K_TEXT;
        e->flags = i;
        e->stack_id = len;
        __builtin_memcpy(e->a, &tb->s[i * TEXT_CHUNK], TEXT_CHUNK);
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    }
}

static __always_inline void bump_gen(u32 tgid) {
#ifdef WITH_FAULTS  // the generation only serves the fault dedup
    struct proc *p = procs.lookup(&tgid);
    if (p)
        __sync_fetch_and_add(&p->gen, 1);
#endif
}

// -- brk ------------------------------------------------------------------------------------------
// mm->start_brk and mm->brk of `mm` into the process's filter entry (record.py reads them for the
// snapshots; /proc shows start_brk only).
static __always_inline void note_brk(struct proc *p, void *mm) {
    u64 b[2] = {};
    if (!mm)
        return;
    bpf_probe_read_kernel(&b[0], 8, (char *)mm + OFF_MM_START_BRK);
    bpf_probe_read_kernel(&b[1], 8, (char *)mm + OFF_MM_BRK);
    p->start_brk = b[0];
    p->brk = b[1];
}

static __always_inline void *task_mm(void *task) {
    void *mm = 0;
    bpf_probe_read_kernel(&mm, sizeof(mm), (char *)task + OFF_TASK_MM);
    return mm;
}

// -- the open file of a new VMA ----------------------------------------------------------------
// bpf_find_vma() cannot be called from bcc (no BPF_PSEUDO_FUNC relocation for its callback), so the
// VMA that contains an address is looked up by walking mm->mm_mt, the maple tree, as mtree_lookup()
// does: from the root, in each node take the first slot up to the node's data end whose pivot (its
// range's last index) is >= the address, else the end slot (it runs to the node's limit); a leaf's
// slot is the VMA. The data end is ma_data_end()'s: from the node's metadata in an arange node, or
// in a range/leaf node whose last pivot is 0; else the last pivot is set and every slot is used.
// The tree is read without its lock: the VMA found is checked to contain the address and to belong
// to this mm.
#define MAPLE_DEPTH 8
#define MAPLE_LEAF_64 1
#define MAPLE_RANGE_64 2
#define MAPLE_ARANGE_64 3
#define MR64_PIVOTS ((OFF_MR64_SLOT - OFF_MR64_PIVOT) / 8)
#define MA64_PIVOTS ((OFF_MA64_SLOT - OFF_MA64_PIVOT) / 8)
_Static_assert(MR64_PIVOTS <= 15 && MA64_PIVOTS <= 15, "maple node larger than expected");

static __always_inline void *vma_at(void *mm, u64 addr) {
    u64 entry = 0;
    bpf_probe_read_kernel(&entry, 8, (char *)mm + OFF_MM_MM_MT + OFF_MAPLE_TREE_MA_ROOT);
    if ((entry & 3) != 2 || entry < 4096)  // xa_is_node(): a root that is not a node (empty tree)
        return 0;
    for (int level = 0; level < MAPLE_DEPTH; level++) {
        if (entry < 4096)
            return 0;
        char *node = (char *)(entry & ~0xffULL);  // mte_to_node()
        u32 type = (entry >> 3) & 0xf;            // mte_node_type()
        u64 piv[15] = {};
        u32 slots, end;
        u8 meta_end = 0;
        if (type == MAPLE_LEAF_64 || type == MAPLE_RANGE_64) {
            slots = OFF_MR64_SLOT;
            bpf_probe_read_kernel(piv, MR64_PIVOTS * 8, node + OFF_MR64_PIVOT);
            end = MR64_PIVOTS;
            if (!piv[MR64_PIVOTS - 1]) {
                bpf_probe_read_kernel(&meta_end, 1, node + OFF_MR64_META + OFF_MAPLE_METADATA_END);
                end = meta_end;
            }
        } else if (type == MAPLE_ARANGE_64) {
            slots = OFF_MA64_SLOT;
            bpf_probe_read_kernel(piv, MA64_PIVOTS * 8, node + OFF_MA64_PIVOT);
            bpf_probe_read_kernel(&meta_end, 1, node + OFF_MA64_META + OFF_MAPLE_METADATA_END);
            end = meta_end < MA64_PIVOTS ? meta_end : MA64_PIVOTS;
        } else {
            return 0;
        }
        u32 k = end;
        for (int j = 0; j < 15; j++) {
            if (j >= end)
                break;
            if (piv[j] >= addr) {
                k = j;
                break;
            }
        }
        u64 slot = 0;
        bpf_probe_read_kernel(&slot, 8, node + slots + 8 * (k & 15));
        if (type == MAPLE_LEAF_64) {
            u64 start = 0, end = 0;
            void *vm_mm = 0;
            if (!slot)
                return 0;
            bpf_probe_read_kernel(&start, 8, (char *)slot + OFF_VMA_VM_START);
            bpf_probe_read_kernel(&end, 8, (char *)slot + OFF_VMA_VM_END);
            bpf_probe_read_kernel(&vm_mm, 8, (char *)slot + OFF_VMA_VM_MM);
            if (start <= addr && addr < end && vm_mm == mm)
                return (void *)slot;
            return 0;
        }
        entry = slot;
    }
    return 0;
}

// K_FILE flags
#define F_PATH 1       // K_PATH records follow (the first time this open file is seen)
#define F_DNAME 2      // a pseudo file named by its dentry's d_dname(): the path holds its name only
#define F_DELETED 4    // d_unlinked(): /proc appends " (deleted)"
#define F_TRUNCATED 8  // the path is longer than PATH_LIMIT or deeper than PATH_DEPTH

// The names from `dentry` up to the root of the mount namespace, leaf first, as prepend_path()
// walks them (crossing mount points through mount->mnt_mountpoint). Returns the bytes written.
static __always_inline u32 walk_path(struct path_buf *pb, void *dentry, void *vfsmnt, u16 *fl) {
    // The write offset lives in the map value: a register would be tracked exactly, and the two
    // ways through an iteration (name or mount point) would double the verifier's states each time.
    pb->off = 0;
    char *mnt = (char *)vfsmnt - OFF_MOUNT_MNT;  // container_of(vfsmnt, struct mount, mnt)
    for (int i = 0; i < PATH_DEPTH; i++) {
        void *root = 0, *parent = 0;
        bpf_probe_read_kernel(&root, 8, (char *)vfsmnt + OFF_VFSMOUNT_MNT_ROOT);
        if (dentry == root) {
            char *up = 0;
            bpf_probe_read_kernel(&up, 8, mnt + OFF_MOUNT_MNT_PARENT);
            if (!up || up == mnt)
                return pb->off;  // the root of the mount tree
            bpf_probe_read_kernel(&dentry, 8, mnt + OFF_MOUNT_MNT_MOUNTPOINT);
            mnt = up;
            vfsmnt = up + OFF_MOUNT_MNT;
            continue;
        }
        bpf_probe_read_kernel(&parent, 8, (char *)dentry + OFF_DENTRY_D_PARENT);
        if (!parent || parent == dentry)
            return pb->off;  // the root of a file system that is not mounted here
        u32 off = pb->off;
        if (off >= PATH_LIMIT) {
            *fl |= F_TRUNCATED;
            return off;
        }
        const char *name = 0;
        bpf_probe_read_kernel(&name, 8, (char *)dentry + OFF_DENTRY_D_NAME + OFF_QSTR_NAME);
        int n = bpf_probe_read_kernel_str(&pb->s[off & (PATH_LIMIT - 1)], NAME_READ, name);
        if (n <= 0) {
            *fl |= F_TRUNCATED;
            return off;
        }
        pb->off = off + n;
        dentry = parent;
    }
    *fl |= F_TRUNCATED;
    return pb->off;
}

// After a successful file-backed mmap or a shmat: a K_FILE record with the open file of the VMA
// at `addr` (the struct file the kernel's merge check compares), its inode number and device,
// and on first sight of that open file its path in K_PATH records.
static __always_inline void emit_file(u64 seq, u32 tgid, u32 tid, void *mm, u64 addr) {
    void *vma = vma_at(mm, addr);
    if (!vma) {
        count(5);
        return;
    }
    void *file = 0;
    bpf_probe_read_kernel(&file, 8, (char *)vma + OFF_VMA_VM_FILE);
    if (!file)
        return;  // the driver made it anonymous (a private mapping of /dev/zero)
    void *inode = 0, *sb = 0, *dentry = 0, *vfsmnt = 0;
    u64 ino = 0, magic = 0;
    u32 dev = 0;
    bpf_probe_read_kernel(&inode, 8, (char *)file + OFF_FILE_F_INODE);
    bpf_probe_read_kernel(&ino, 8, (char *)inode + OFF_INODE_I_INO);
    bpf_probe_read_kernel(&sb, 8, (char *)inode + OFF_INODE_I_SB);
    bpf_probe_read_kernel(&dev, 4, (char *)sb + OFF_SUPER_BLOCK_S_DEV);
    bpf_probe_read_kernel(&magic, 8, (char *)sb + OFF_SUPER_BLOCK_S_MAGIC);
    u64 key = (u64)file;
    u64 *seen = fileseen.lookup(&key);
    u16 fl = 0;
    u32 len = 0;
    int z = 0;
    struct path_buf *pb = 0;
    if (!seen || *seen != (u64)inode) {
        pb = pathbuf.lookup(&z);
        if (pb) {
            fl |= F_PATH;
            bpf_probe_read_kernel(&dentry, 8, (char *)file + OFF_FILE_F_PATH + OFF_PATH_DENTRY);
            bpf_probe_read_kernel(&vfsmnt, 8, (char *)file + OFF_FILE_F_PATH + OFF_PATH_MNT);
            void *dop = 0, *dname = 0, *parent = 0, *root = 0, *pprev = 0;
            bpf_probe_read_kernel(&dop, 8, (char *)dentry + OFF_DENTRY_D_OP);
            if (dop)
                bpf_probe_read_kernel(&dname, 8, (char *)dop + OFF_DENTRY_OPERATIONS_D_DNAME);
            bpf_probe_read_kernel(&parent, 8, (char *)dentry + OFF_DENTRY_D_PARENT);
            bpf_probe_read_kernel(&root, 8, (char *)vfsmnt + OFF_VFSMOUNT_MNT_ROOT);
            if (dname && (parent != dentry || dentry != root)) {  // d_path(): d_dname() names it
                const char *name = 0;
                fl |= F_DNAME;
                bpf_probe_read_kernel(&name, 8, (char *)dentry + OFF_DENTRY_D_NAME + OFF_QSTR_NAME);
                int n = bpf_probe_read_kernel_str(pb->s, NAME_READ, name);
                len = n > 0 ? n : 0;
            } else {
                bpf_probe_read_kernel(&pprev, 8, (char *)dentry + OFF_DENTRY_D_HASH + 8);
                if (!pprev && parent != dentry)  // d_unlinked(): unhashed and not a root
                    fl |= F_DELETED;
                len = walk_path(pb, dentry, vfsmnt, &fl);
            }
        }
    }
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(6);
        return;
    }
    e->seq = seq;
    e->ts = 0;
    e->pid = tgid;
    e->tid = tid;
    e->kind = K_FILE;
    e->flags = fl;
    e->stack_id = len;
    e->a[0] = key;
    e->a[1] = ino;
    e->a[2] = dev;
    e->a[3] = magic;
    e->a[4] = (u64)inode;
    e->a[5] = 0;
    e->ret = 0;
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    if (!pb)
        return;
#pragma unroll
    for (int i = 0; i < (PATH_LIMIT + NAME_READ) / TEXT_CHUNK + 1; i++) {
        if (i * TEXT_CHUNK >= len)
            break;
        struct event *c = events.ringbuf_reserve(sizeof(struct event));
        if (!c) {
            count(6);
            return;  // not remembered as seen: the next mapping of this file sends the path again
        }
        c->seq = seq;
        c->ts = 0;
        c->pid = tgid;
        c->tid = tid;
        c->kind = K_PATH;
        c->flags = i;
        c->stack_id = len;
        __builtin_memcpy(c->a, &pb->s[i * TEXT_CHUNK], TEXT_CHUNK);
        events.ringbuf_submit(c, BPF_RB_NO_WAKEUP);
    }
    u64 ip = (u64)inode;
    fileseen.update(&key, &ip);  // after the records: a later mapping's records follow them
}

// The syscall arguments, read at sys_exit from the registers saved at entry (x86-64 pt_regs, a
// stable ABI: r10 at byte 56 ... orig_ax at 120). The kernel does not change them during the call, so
// one program per call suffices: no sys_enter program, no per-task stash of arguments.
struct regblk {
    u64 r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};

// sys_exit: one event with the arguments and the return value.
static __always_inline int on_exit(void *ctx, u32 kind) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct proc *p = procs.lookup(&tgid);
    if (!p)
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct regblk r = {};
    bpf_probe_read_kernel(&r, sizeof(r), (char *)bpf_task_pt_regs(task) + 56);
    s64 ret = *(s64 *)((char *)ctx + 16);
    if (kind == K_PRCTL && r.di != 0x53564d41 /* PR_SET_VMA */ && r.di != 35 /* PR_SET_MM */ &&
        r.di != 41 /* PR_SET_THP_DISABLE */ && r.di != 65 /* PR_SET_MDWE */ &&
        r.di != 67 /* PR_SET_MEMORY_MERGE */)
        return 0;  // prctl: only the options that change VMAs or their flags
    u64 seq = 0, ts = 0;
#ifdef WITH_LOCKSEQ
    struct stash *s = stash.task_storage_get(task, 0, 0);
    if (s && s->ts && s->nr == r.orig_ax) {
        seq = s->seq;
        ts = s->ts;
        s->ts = 0;
    }
#endif
    if (!ts) {
        seq = next_seq();
        ts = bpf_ktime_get_ns();
    }
#ifdef WITH_FAULTS
    // Calls that can replace or discard pages: the next write to any page counts as a first one
    // again. (kind is a constant in each program, so this test costs nothing.)
    if (kind == K_MMAP || kind == K_MUNMAP || kind == K_MREMAP || kind == K_BRK || kind == K_MADVISE ||
        kind == K_SHMAT || kind == K_SHMDT || kind == K_EXECVE)
        __sync_fetch_and_add(&p->gen, 1);
#endif
    emit(ctx, seq, ts, tgid, (u32)id, kind, 0, r.di, r.si, r.dx, r.r10, r.r8, r.r9, ret, 1);
    // A mapping that has an open file: file-backed, MAP_SHARED|MAP_ANONYMOUS (a shmem file), shmat.
    if (((kind == K_MMAP && (!(r.r10 & 0x20 /* MAP_ANONYMOUS */) || (r.r10 & 0x01 /* MAP_SHARED */))) ||
         kind == K_SHMAT) && !(ret & 0xfff))  // (success: a page address, errors are -4095..-1)
        emit_file(seq, tgid, (u32)id, task_mm(task), (u64)ret);
    if (kind == K_BRK || (kind == K_PRCTL && r.di == 35 /* PR_SET_MM */) || !p->start_brk)
        note_brk(p, task_mm(task));  // (a process attached with -p: at its first event)
    if (kind == K_PRCTL && ret == 0 && r.di == 0x53564d41 && r.r8) {
        int z = 0;
        struct text_buf *tb = textbuf.lookup(&z);
        if (tb) {
            int n = bpf_probe_read_user_str(tb->s, 81, (void *)r.r8);
            if (n > 0)
                emit_text(seq, tgid, (u32)id, tb, n);
        }
    }
    return 0;
}

#define SYSCALL(name, kind) \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return on_exit(args, kind); }

SYSCALL(mmap, K_MMAP)
SYSCALL(munmap, K_MUNMAP)
SYSCALL(mprotect, K_MPROTECT)
SYSCALL(pkey_mprotect, K_PKEY_MPROTECT)
SYSCALL(mremap, K_MREMAP)
SYSCALL(brk, K_BRK)
SYSCALL(madvise, K_MADVISE)
SYSCALL(process_madvise, K_PROCESS_MADVISE)
SYSCALL(mlock, K_MLOCK)
SYSCALL(mlock2, K_MLOCK2)
SYSCALL(munlock, K_MUNLOCK)
SYSCALL(mlockall, K_MLOCKALL)
SYSCALL(munlockall, K_MUNLOCKALL)
SYSCALL(mseal, K_MSEAL)
SYSCALL(shmat, K_SHMAT)
SYSCALL(shmdt, K_SHMDT)
SYSCALL(execve, K_EXECVE)  // after a successful exec the registers are cleared: a0..a2 read 0
SYSCALL(prctl, K_PRCTL)

// exit_group never returns: one event at entry.
TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!procs.lookup(&tgid))
        return 0;
    return emit(args, next_seq(), bpf_ktime_get_ns(), tgid, (u32)id, K_EXIT_GROUP, 0,
                args->error_code, 0, 0, 0, 0, 0, 0, 1);
}

#ifdef WITH_LOCKSEQ
// The kernel applies the VMA changes of one mm under its mmap write lock, one call at a time. The
// order in which traced calls acquire that lock is the order their changes were applied, so a call
// takes its sequence number and timestamp here (its first write acquisition of its own mm), not at
// sys_exit, where threads can overtake each other.
//
// Not a TRACEPOINT_PROBE: collectors/record.py attaches it only once a traced process has a second
// thread (single-threaded processes cannot race with themselves and should not pay for it). The
// tracepoint's field offsets come from its tracefs format file (-DMMLOCK_OFF_*).
int vmat_mmap_lock_acquired(void *ctx) {
    if (!*(u8 *)((char *)ctx + MMLOCK_OFF_WRITE) || !*(u8 *)((char *)ctx + MMLOCK_OFF_SUCCESS))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!procs.lookup(&tgid))
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    void *mm = 0;
    bpf_probe_read_kernel(&mm, sizeof(mm), (char *)task + OFF_TASK_MM);
    if (mm != *(void **)((char *)ctx + MMLOCK_OFF_MM))
        return 0;  // another process's mm (process_madvise, /proc readers)
    u64 nr = 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), (char *)bpf_task_pt_regs(task) + 120);  // orig_ax
    u32 k = nr;
    u8 *traced = lockseq_nrs.lookup(&k);
    if (nr >= 1024 || !traced || !*traced)
        return 0;  // not inside a traced call (a page fault, an untraced syscall)
    struct stash *s = stash.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    // Only the call's first acquisition counts. A fork (value 2: clone, clone3, fork) takes the
    // lock once, in dup_mmap(), to copy the address space: its number is taken there, always (a
    // fork that failed after the copy left its stash behind; the next fork's copy replaces it).
    if (!s || (s->ts && s->nr == nr && *traced != 2))
        return 0;
    s->nr = nr;
    s->seq = next_seq();
    s->ts = bpf_ktime_get_ns();
    return 0;
}
#endif

RAW_TRACEPOINT_PROBE(sched_process_fork) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!procs.lookup(&tgid))
        return 0;
    void *child = (void *)ctx->args[1];
    u32 cpid = 0, ctgid = 0;
    bpf_probe_read_kernel(&cpid, 4, (char *)child + OFF_TASK_PID);
    bpf_probe_read_kernel(&ctgid, 4, (char *)child + OFF_TASK_TGID);
    u32 thread = ctgid == tgid;
    u64 seq = 0, ts = 0;
#ifdef WITH_LOCKSEQ
    // A child with an mm of its own got a copy of the parent's, made in dup_mmap() under the
    // parent's mmap write lock: the fork is ordered where that lock was taken (the stash of
    // vmat_mmap_lock_acquired), so a change another thread makes after the copy follows it.
    void *task = (void *)bpf_get_current_task_btf();
    void *cmm = task_mm(child);
    if (cmm && cmm != task_mm(task)) {
        struct stash *s = stash.task_storage_get(task, 0, 0);
        u64 nr = 0;
        bpf_probe_read_kernel(&nr, sizeof(nr), (char *)bpf_task_pt_regs(task) + 120);  // orig_ax
        if (s && s->ts && s->nr == nr) {
            seq = s->seq;
            ts = s->ts;
            s->ts = 0;
        }
    }
#endif
    if (!ts) {
        seq = next_seq();
        ts = bpf_ktime_get_ns();
    }
    if (!thread) {
        struct proc p = {};
        procs.update(&ctgid, &p);
        struct proc *cp = procs.lookup(&ctgid);
        if (cp)
            note_brk(cp, task_mm(child));  // the copy dup_mmap() made
        bump_gen(tgid);  // copy-on-write: the parent's pages fault again
    }
    return emit(ctx, seq, ts, tgid, (u32)id, K_FORK, 0, cpid, ctgid, thread, 0, 0, 0, 0, 1);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct proc *p = procs.lookup(&tgid);
    if (!p)
        return 0;
    bump_gen(tgid);
    note_brk(p, task_mm((void *)bpf_get_current_task()));  // the new image's, set by its loader
    u64 seq = next_seq();
    emit(args, seq, bpf_ktime_get_ns(), tgid, (u32)id, K_EXEC, 0, args->old_pid, 0, 0, 0, 0, 0, 0, 0);
    int z = 0;
    struct text_buf *tb = textbuf.lookup(&z);
    if (!tb)
        return 0;
    int n = bpf_probe_read_kernel_str(tb->s, TEXT_MAX, (char *)args + (args->data_loc_filename & 0xFFFF));
    if (n > 0)
        emit_text(seq, tgid, (u32)id, tb, n);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!procs.lookup(&tgid))
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    int code = 0;
    bpf_probe_read_kernel(&code, 4, (char *)task + OFF_TASK_EXIT_CODE);
    u64 dead = args->group_dead;
    emit(args, next_seq(), bpf_ktime_get_ns(), tgid, (u32)id, K_EXIT, 0, (u64)(u32)code, dead, 0, 0,
         0, 0, 0, 0);
    if (dead)
        procs.delete(&tgid);
    return 0;
}

#ifdef WITH_FAULTS
// A write fault at a user address of a traced process, from user mode or from the kernel writing
// to user memory on the process's behalf (copy_to_user() of a read() into a buffer never touched:
// it gives the VMA its anon_vma just as a user-mode write does).
static __always_inline int on_write_fault(void *args, u64 address, u64 ip, u64 error_code) {
    if (!(error_code & 2))  // write faults only
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct proc *p = procs.lookup(&tgid);
    if (!p)
        return 0;
    struct fault_key k = {.tgid = tgid, .page = address >> 12};
    u64 gen = p->gen + 1;  // stored +1 so that 0 means "never seen"
    // Threads of one process can fault on the same page at the same time: only the one that
    // atomically claims the (page, generation) entry reports it.
    u64 *seen = faultseen.lookup(&k);
    if (seen) {
        u64 old = *seen;
        if (old == gen || __sync_val_compare_and_swap(seen, old, gen) != old) {
            count(2);
            return 0;
        }
    } else if (faultseen.insert(&k, &gen) != 0) {
        count(2);
        return 0;
    }
    return emit(args, next_seq(), bpf_ktime_get_ns(), tgid, (u32)id, K_FAULT, 0, address,
                ip, error_code, 0, 0, 0, 0, 1);
}

TRACEPOINT_PROBE(exceptions, page_fault_user) {
    return on_write_fault(args, args->address, args->ip, args->error_code);
}

TRACEPOINT_PROBE(exceptions, page_fault_kernel) {
    if (args->address >= USER_ADDR_END)  // a fault on kernel memory (vmalloc, ...): no VMA of ours
        return 0;
    return on_write_fault(args, args->address, args->ip, args->error_code);
}
#endif
