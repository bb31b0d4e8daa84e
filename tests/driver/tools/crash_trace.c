/* crash_trace: a developer's probe, not part of Flyt. Preloaded into a program (LD_PRELOAD), it
 * prints, when the program dies of SIGSEGV, SIGBUS, SIGILL or SIGFPE, the faulting address, the
 * instruction pointer and a backtrace with each frame's library and offset, then dies of the same
 * signal. A jump through a null table slot shows as ip 0 with the caller in "return address".
 *
 *   gcc -shared -fPIC -O1 -o crash_trace.so crash_trace.c -ldl; LD_PRELOAD=./crash_trace.so PROGRAM */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static void describe(const char* what, uintptr_t address) {
  Dl_info info;
  memset(&info, 0, sizeof info);
  if (address != 0 && dladdr((void*)address, &info) != 0 && info.dli_fname != NULL) {
    fprintf(stderr, "[crash_trace]   %s %#lx %s+%#lx (%s+%#lx)\n", what, (unsigned long)address, info.dli_fname,
            (unsigned long)(address - (uintptr_t)info.dli_fbase), info.dli_sname ? info.dli_sname : "?",
            (unsigned long)(info.dli_saddr ? address - (uintptr_t)info.dli_saddr : 0));
  } else {
    fprintf(stderr, "[crash_trace]   %s %#lx (no object)\n", what, (unsigned long)address);
  }
}

static void onCrash(int signal, siginfo_t* info, void* context) {
  const ucontext_t* uc = (const ucontext_t*)context;
  const uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
  const uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
  fprintf(stderr, "[crash_trace] signal %d (%s) at address %p, pid %d\n", signal, strsignal(signal), info->si_addr,
          (int)getpid());
  describe("ip", ip);
  describe("return address", *(const uintptr_t*)sp);
  void* frames[48];
  const int count = backtrace(frames, 48);
  for (int i = 0; i < count; ++i) describe("frame", (uintptr_t)frames[i]);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(signal, &dfl, NULL);
  raise(signal);
}

__attribute__((constructor)) static void install(void) {
  static char stack[1 << 16];
  stack_t alt = {.ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0};
  sigaltstack(&alt, NULL);
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = onCrash;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  const int signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
  for (unsigned i = 0; i < sizeof signals / sizeof signals[0]; ++i) sigaction(signals[i], &action, NULL);
}
