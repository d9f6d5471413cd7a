// LD_PRELOAD library: hide AVX-512, AVX-VNNI and AMX from the CPUID instruction in this process, so that a
// native run picks the same (AVX2/FMA) kernels that qemu-x86_64 7.2 can emulate. Used by bench/arm/validate.py
// to time exactly the code paths it counts under qemu.
//
// How: Linux CPUID faulting (arch_prctl ARCH_SET_CPUID 0, needs the cpuid_fault CPU flag) makes every CPUID
// raise SIGSEGV; the handler executes the real CPUID with faulting briefly off, clears the feature bits and
// resumes after the 2-byte instruction. glibc's own dispatch runs before this constructor: mask it with
// GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,... (validate.py sets both).
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

// CPUID.(EAX=7,ECX=0): EBX AVX512F/DQ/IFMA/PF/ER/CD/BW/VL, ECX AVX512_VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ,
// EDX AVX512_4VNNIW/4FMAPS/VP2INTERSECT/AMX-BF16/AVX512_FP16/AMX-TILE/AMX-INT8.
static const uint32_t kLeaf7Ebx = (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                                  (1u << 30) | (1u << 31);
static const uint32_t kLeaf7Ecx = (1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14);
static const uint32_t kLeaf7Edx = (1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                                  (1u << 25);
// CPUID.(EAX=7,ECX=1): EAX AVX-VNNI, AVX512_BF16, AMX-FP16; EDX AVX10.
static const uint32_t kLeaf71Eax = (1u << 4) | (1u << 5) | (1u << 21);
static const uint32_t kLeaf71Edx = (1u << 19);

static int set_cpuid_faulting(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_segv(int sig, siginfo_t* info, void* raw) {
  ucontext_t* uc = (ucontext_t*)raw;
  greg_t* r = uc->uc_mcontext.gregs;
  const unsigned char* ip = (const unsigned char*)r[REG_RIP];
  if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {  // not a faulting CPUID: crash as usual
    signal(sig, SIG_DFL);
    return;
  }
  uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
  set_cpuid_faulting(0);
  __cpuid_count(leaf, sub, a, b, c, d);
  set_cpuid_faulting(1);
  if (leaf == 7 && sub == 0) {
    b &= ~kLeaf7Ebx;
    c &= ~kLeaf7Ecx;
    d &= ~kLeaf7Edx;
  } else if (leaf == 7 && sub == 1) {
    a &= ~kLeaf71Eax;
    d &= ~kLeaf71Edx;
  } else if (leaf == 0xd && sub == 0) {
    a &= ~0xe0u;  // XSAVE components 5-7 (AVX-512 state) not supported
  }
  r[REG_RAX] = a;
  r[REG_RBX] = b;
  r[REG_RCX] = c;
  r[REG_RDX] = d;
  r[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid_faulting(1) != 0) {
    fprintf(stderr, "cpuid_mask: CPUID faulting is not available on this CPU/kernel (needs the cpuid_fault flag)\n");
    _exit(97);
  }
}
