// A seccomp filter for the bubblewrap sandbox, assembled here as classic BPF (no compiler, no native
// package): bwrap loads it from a file descriptor (`--seccomp FD`) just before it runs the command.
//
// It refuses, with EPERM, the system calls a sandboxed build or test never needs and that are kernel
// attack surface or sandbox-escape tools: tracing and cross-process memory access, mounts and new
// namespaces, keyrings, BPF, perf events, userfaultfd, io_uring, module and kexec loading, handle-based
// opens, raw port I/O, swap, reboot, accounting, quotas. `clone` is refused when it asks for a new
// namespace and `clone3` answers ENOSYS (its flags sit in memory a filter cannot read; libc then falls
// back to `clone`). Any other architecture (a 32-bit `int 0x80` from an x86-64 process) or the x32 ABI
// is refused outright: the syscall numbers below are only true for x86-64.
//
// Only x86-64 is built; elsewhere `sandboxSeccompFilter` returns null and the sandbox runs without it
// (capabilities are dropped and user namespaces disabled either way).

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JGE_K = 0x35;
const BPF_JSET_K = 0x45;
const BPF_RET_K = 0x06;

const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;
/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (CLONE_NEWTIME shares clone's signal byte). */
const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16; // little-endian: the low 32 bits of args[0]

/** x86-64 numbers (asm/unistd_64.h) of the refused system calls. */
export const DENIED_SYSCALLS_X86_64: Readonly<Record<string, number>> = {
  ptrace: 101,
  process_vm_readv: 310,
  process_vm_writev: 311,
  mount: 165,
  umount2: 166,
  pivot_root: 155,
  chroot: 161,
  unshare: 272,
  setns: 308,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
  keyctl: 250,
  add_key: 248,
  request_key: 249,
  bpf: 321,
  perf_event_open: 298,
  userfaultfd: 323,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  kexec_load: 246,
  kexec_file_load: 320,
  init_module: 175,
  finit_module: 313,
  delete_module: 176,
  open_by_handle_at: 304,
  name_to_handle_at: 303,
  iopl: 172,
  ioperm: 173,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  acct: 163,
  quotactl: 179,
  syslog: 103,
  lookup_dcookie: 212,
  uselib: 134,
  _sysctl: 156,
};
const CLONE_X86_64 = 56;
const CLONE3_X86_64 = 435;

interface Insn {
  code: number;
  jt?: string | number;
  jf?: string | number;
  k: number;
  label?: string;
}

/** Lays the program out: jump targets given as labels become forward offsets (each must fit a byte). */
function assemble(program: Insn[]): Buffer {
  const at = new Map<string, number>();
  program.forEach((insn, i) => insn.label && at.set(insn.label, i));
  const offset = (from: number, target: string | number | undefined): number => {
    if (target === undefined) return 0;
    if (typeof target === 'number') return target;
    const to = at.get(target);
    if (to === undefined) throw new Error(`seccomp: no label ${target}`);
    const off = to - from - 1;
    if (off < 0 || off > 255) throw new Error(`seccomp: jump to ${target} out of range`);
    return off;
  };
  const out = Buffer.alloc(program.length * 8);
  program.forEach((insn, i) => {
    out.writeUInt16LE(insn.code, i * 8);
    out.writeUInt8(offset(i, insn.jt), i * 8 + 2);
    out.writeUInt8(offset(i, insn.jf), i * 8 + 3);
    out.writeUInt32LE(insn.k >>> 0, i * 8 + 4);
  });
  return out;
}

function x86_64Filter(): Buffer {
  const denied = Object.values(DENIED_SYSCALLS_X86_64);
  const program: Insn[] = [
    { code: BPF_LD_W_ABS, k: OFFSET_ARCH },
    { code: BPF_JEQ_K, k: AUDIT_ARCH_X86_64, jt: 1, jf: 0 },
    { code: BPF_RET_K, k: SECCOMP_RET_KILL_PROCESS },
    { code: BPF_LD_W_ABS, k: OFFSET_NR },
    { code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: 'deny', jf: 0 },
    ...denied.map((nr): Insn => ({ code: BPF_JEQ_K, k: nr, jt: 'deny', jf: 0 })),
    { code: BPF_JEQ_K, k: CLONE_X86_64, jt: 'clone', jf: 0 },
    { code: BPF_JEQ_K, k: CLONE3_X86_64, jt: 'enosys', jf: 0 },
    { code: BPF_RET_K, k: SECCOMP_RET_ALLOW },
    { code: BPF_LD_W_ABS, k: OFFSET_ARG0_LOW, label: 'clone' },
    { code: BPF_JSET_K, k: CLONE_NAMESPACE_FLAGS, jt: 'deny', jf: 0 },
    { code: BPF_RET_K, k: SECCOMP_RET_ALLOW },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | ENOSYS, label: 'enosys' },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | EPERM, label: 'deny' },
  ];
  return assemble(program);
}

let cached: Buffer | null | undefined;

/** The filter for this machine's architecture (a `struct sock_filter[]`), or null where none is built. */
export function sandboxSeccompFilter(arch: string = process.arch): Buffer | null {
  if (arch !== 'x64') return null;
  cached ??= x86_64Filter();
  return cached;
}
