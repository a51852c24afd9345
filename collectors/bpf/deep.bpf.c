// vmatrace deep snapshots: a BPF task_vma iterator that writes one fixed-size binary record per
// VMA of the task(s) the iterator link was created for (collectors/deep.py loads it with bcc).
//
// The installed kernel headers may describe another kernel than the running one, so no kernel
// struct is dereferenced through them: every member is read with bpf_probe_read_kernel() at an
// offset the tool read from the running kernel's BTF, passed in as a -D macro:
//   OFF_VMA_START, OFF_VMA_END, OFF_VMA_FLAGS, OFF_VMA_PGOFF, OFF_VMA_FILE, OFF_VMA_ANON_VMA,
//   OFF_VMA_AVC (the anon_vma_chain list_head), OFF_VMA_OPS, OFF_VMA_MM
//   OFF_VMA_POLICY      (only with HAVE_POLICY: CONFIG_NUMA)
//   OFF_VMA_UFFD        (only with HAVE_UFFD: CONFIG_USERFAULTFD; vm_userfaultfd_ctx.ctx)
//   OFF_VMA_ANON_NAME   (only with HAVE_ANON_NAME: CONFIG_ANON_VMA_NAME)
//   OFF_ANON_NAME_NAME  anon_vma_name.name
//   OFF_OPS_CLOSE       vm_operations_struct.close
//   OFF_TASK_PID, OFF_TASK_TGID
//   OFF_FILE_INODE, OFF_INODE_INO, OFF_INODE_SB, OFF_SB_DEV   file->f_inode->i_ino, ->i_sb->s_dev
//   OFF_MM_START_BRK, OFF_MM_BRK, OFF_MM_START_STACK          where /proc names [heap] and [stack]
//   OFF_MM_LOCK_SEQ     (only with HAVE_MM_SEQ: CONFIG_PER_VMA_LOCK) mm->mm_lock_seq, which every
//                       mmap write lock changes: equal in every record = one consistent walk
//   AVC_MAX             the chain is counted up to this many entries
//
// The iterator's context is struct bpf_iter__task_vma {meta, task, vma}; bpf_iter_meta starts with
// the seq_file pointer. Those two are read directly (the verifier checks them against the kernel's
// own BTF, whatever the headers say); everything else goes through bpf_probe_read_kernel().
// Raw kernel pointers leave the kernel only here, as identities: user space maps them to small
// integers before anything is stored or printed.

#define ANON_NAME_LEN 80   // ANON_VMA_NAME_MAX_LEN

struct vt_iter_meta {
    void *seq;
    u64 session_id;
    u64 seq_num;
};

struct bpf_iter__task_vma {
    struct vt_iter_meta *meta;
    void *task;
    void *vma;
};

struct deep_rec {
    u64 start;
    u64 end;
    u64 flags;
    u64 pgoff;
    u64 file;        // struct file * (identity)
    u64 anon_vma;    // struct anon_vma * (identity)
    u64 mm;          // struct mm_struct * (identity: which address space)
    u32 tgid;
    u32 tid;
    u32 avc;         // entries in the anon_vma_chain, up to AVC_MAX (AVC_MAX + 1: more)
    u32 bits;        // 1: vm_ops->close set, 2: vm_policy set, 4: userfaultfd ctx set,
                     // 8: vm_ops set (not plain anonymous memory), 16: mm_seq is read
    // (the fields above are the head other readers rely on; the tail may grow)
    u64 ino;         // file->f_inode->i_ino (0: no file)
    u64 start_brk;   // mm->start_brk, mm->brk, mm->start_stack
    u64 brk;
    u64 start_stack;
    u64 mm_seq;      // mm->mm_lock_seq (HAVE_MM_SEQ)
    u32 dev;         // file->f_inode->i_sb->s_dev (kernel dev_t: major << 20 | minor)
    u32 pad;
    u64 inode;       // file->f_inode (identity: with `file`, the key the recorder names open files by)
#ifdef HAVE_ANON_NAME
    char anon_name[ANON_NAME_LEN];   // only where the kernel can name anonymous VMAs
#endif
};

static __always_inline u64 rd64(u64 addr) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

int bpf_iter__task_vma(struct bpf_iter__task_vma *ctx) {
    void *seq = ctx->meta->seq;
    void *vma_p = ctx->vma;
    void *task_p = ctx->task;
    if (vma_p == 0 || task_p == 0)
        return 0;
    u64 vma = (u64)vma_p;
    u64 task = (u64)task_p;
    struct deep_rec r = {};
    r.start = rd64(vma + OFF_VMA_START);
    r.end = rd64(vma + OFF_VMA_END);
    r.flags = rd64(vma + OFF_VMA_FLAGS);
    r.pgoff = rd64(vma + OFF_VMA_PGOFF);
    r.file = rd64(vma + OFF_VMA_FILE);
    r.anon_vma = rd64(vma + OFF_VMA_ANON_VMA);
    r.mm = rd64(vma + OFF_VMA_MM);
    bpf_probe_read_kernel(&r.tgid, 4, (void *)(task + OFF_TASK_TGID));
    bpf_probe_read_kernel(&r.tid, 4, (void *)(task + OFF_TASK_PID));
    // anon_vma_chain: count the entries of the list headed at vma + OFF_VMA_AVC
    u64 head = vma + OFF_VMA_AVC;
    u64 p = rd64(head);
    u32 n = 0;
    for (int i = 0; i <= AVC_MAX; i++) {
        if (p == head || p == 0)
            break;
        n++;
        p = rd64(p);
    }
    r.avc = n;
    u64 ops = rd64(vma + OFF_VMA_OPS);
    if (ops != 0) {
        r.bits |= 8;
        if (rd64(ops + OFF_OPS_CLOSE) != 0)
            r.bits |= 1;
    }
    if (r.file != 0) {
        u64 inode = rd64(r.file + OFF_FILE_INODE);
        r.inode = inode;
        if (inode != 0) {
            r.ino = rd64(inode + OFF_INODE_INO);
            u64 sb = rd64(inode + OFF_INODE_SB);
            if (sb != 0)
                bpf_probe_read_kernel(&r.dev, 4, (void *)(sb + OFF_SB_DEV));
        }
    }
    if (r.mm != 0) {
        r.start_brk = rd64(r.mm + OFF_MM_START_BRK);
        r.brk = rd64(r.mm + OFF_MM_BRK);
        r.start_stack = rd64(r.mm + OFF_MM_START_STACK);
#ifdef HAVE_MM_SEQ
        u32 seq = 0;
        bpf_probe_read_kernel(&seq, 4, (void *)(r.mm + OFF_MM_LOCK_SEQ));
        r.mm_seq = seq;
        r.bits |= 16;
#endif
    }
#ifdef HAVE_POLICY
    if (rd64(vma + OFF_VMA_POLICY) != 0)
        r.bits |= 2;
#endif
#ifdef HAVE_UFFD
    if (rd64(vma + OFF_VMA_UFFD) != 0)
        r.bits |= 4;
#endif
#ifdef HAVE_ANON_NAME
    u64 an = rd64(vma + OFF_VMA_ANON_NAME);
    if (an != 0)
        bpf_probe_read_kernel_str(r.anon_name, ANON_NAME_LEN, (void *)(an + OFF_ANON_NAME_NAME));
#endif
    bpf_seq_write(seq, &r, sizeof(r));
    return 0;
}
