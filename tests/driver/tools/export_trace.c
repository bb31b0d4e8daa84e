/* export_trace: a developer's probe, not part of Flyt. Built as a libcuda.so.1 in front of NVIDIA's
 * driver (make_trace_driver.sh), it logs (to stderr) every private export table the program's libraries ask for
 * with cuGetExportTable, and every call into an entry of one: table, slot, the first six integer
 * arguments and the result. It is how docs/dev/driver-export-tables.md learns which entries
 * NVIDIA's runtime and libraries use and what the driver answers.
 *
 *   tests/driver/tools/make_trace_driver.sh DIR; LD_LIBRARY_PATH=DIR python3 -c 'import torch; ...'
 *
 * Every other function of the driver is forwarded to NVIDIA's (trampolines generated from its
 * exports), so a library that dlsym()s the driver by name gets NVIDIA's functions.
 * Entries are wrapped only when they point into executable memory and the table's first word is a
 * plausible size; arguments beyond six integer registers are passed through (two stack words). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef uintptr_t (*Entry)(uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t);

#define TABLES 16
#define SLOTS 64
static struct {
  unsigned char uuid[16];
  const uintptr_t* real;
  uintptr_t copy[SLOTS];
  int slots;
} g_tables[TABLES];
static int g_count;
static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;

static uintptr_t call(int t, int s, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t e, uintptr_t f,
                      uintptr_t g, uintptr_t h) {
  Entry real = (Entry)g_tables[t].real[s];
  uintptr_t r = real(a, b, c, d, e, f, g, h);
  fprintf(stderr, "[export_trace] %02x%02x%02x%02x slot %d (%#lx, %#lx, %#lx, %#lx, %#lx, %#lx) -> %#lx\n",
          g_tables[t].uuid[0], g_tables[t].uuid[1], g_tables[t].uuid[2], g_tables[t].uuid[3], s, (unsigned long)a,
          (unsigned long)b, (unsigned long)c, (unsigned long)d, (unsigned long)e, (unsigned long)f,
          (unsigned long)(r & 0xffffffffu));
  return r;
}

#define T(t, s)                                                                                                   \
  static uintptr_t tr_##t##_##s(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t e, uintptr_t f,   \
                                uintptr_t g, uintptr_t h) {                                                     \
    return call(t, s, a, b, c, d, e, f, g, h);                                                                  \
  }
#define ROW(t)                                                                                                    \
  T(t, 0) T(t, 1) T(t, 2) T(t, 3) T(t, 4) T(t, 5) T(t, 6) T(t, 7) T(t, 8) T(t, 9) T(t, 10) T(t, 11) T(t, 12)     \
  T(t, 13) T(t, 14) T(t, 15) T(t, 16) T(t, 17) T(t, 18) T(t, 19) T(t, 20) T(t, 21) T(t, 22) T(t, 23) T(t, 24)    \
  T(t, 25) T(t, 26) T(t, 27) T(t, 28) T(t, 29) T(t, 30) T(t, 31) T(t, 32) T(t, 33) T(t, 34) T(t, 35) T(t, 36)    \
  T(t, 37) T(t, 38) T(t, 39) T(t, 40) T(t, 41) T(t, 42) T(t, 43) T(t, 44) T(t, 45) T(t, 46) T(t, 47) T(t, 48)    \
  T(t, 49) T(t, 50) T(t, 51) T(t, 52) T(t, 53) T(t, 54) T(t, 55) T(t, 56) T(t, 57) T(t, 58) T(t, 59) T(t, 60)    \
  T(t, 61) T(t, 62) T(t, 63)
ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11) ROW(12) ROW(13) ROW(14) ROW(15)
#define P(t, s) tr_##t##_##s
#define PROW(t)                                                                                                   \
  {P(t, 0),  P(t, 1),  P(t, 2),  P(t, 3),  P(t, 4),  P(t, 5),  P(t, 6),  P(t, 7),  P(t, 8),  P(t, 9),  P(t, 10),  \
   P(t, 11), P(t, 12), P(t, 13), P(t, 14), P(t, 15), P(t, 16), P(t, 17), P(t, 18), P(t, 19), P(t, 20), P(t, 21), \
   P(t, 22), P(t, 23), P(t, 24), P(t, 25), P(t, 26), P(t, 27), P(t, 28), P(t, 29), P(t, 30), P(t, 31), P(t, 32), \
   P(t, 33), P(t, 34), P(t, 35), P(t, 36), P(t, 37), P(t, 38), P(t, 39), P(t, 40), P(t, 41), P(t, 42), P(t, 43), \
   P(t, 44), P(t, 45), P(t, 46), P(t, 47), P(t, 48), P(t, 49), P(t, 50), P(t, 51), P(t, 52), P(t, 53), P(t, 54), \
   P(t, 55), P(t, 56), P(t, 57), P(t, 58), P(t, 59), P(t, 60), P(t, 61), P(t, 62), P(t, 63)}
static const Entry g_trampolines[TABLES][SLOTS] = {PROW(0),  PROW(1),  PROW(2),  PROW(3), PROW(4),  PROW(5),
                                                   PROW(6),  PROW(7),  PROW(8),  PROW(9), PROW(10), PROW(11),
                                                   PROW(12), PROW(13), PROW(14), PROW(15)};

static int executable(uintptr_t address) {
  FILE* maps = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {0};
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && address >= lo && address < hi) {
      found = perms[2] == 'x';
      break;
    }
  }
  if (maps != NULL) fclose(maps);
  return found;
}

static CUresult (*g_realGetExportTable)(const void**, const unsigned char*);

static CUresult tracedGetExportTable(const void** table, const unsigned char* uuid) {
  CUresult r = g_realGetExportTable(table, uuid);
  fprintf(stderr, "[export_trace] cuGetExportTable %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x -> %d",
          uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9], uuid[10],
          uuid[11], uuid[12], uuid[13], uuid[14], uuid[15], r);
  if (r != 0 || table == NULL || *table == NULL) {
    fprintf(stderr, "\n");
    return r;
  }
  const uintptr_t* real = (const uintptr_t*)*table;
  pthread_mutex_lock(&g_mutex);
  int t = -1;
  for (int i = 0; i < g_count; ++i) {
    if (g_tables[i].real == real) t = i;
  }
  if (t < 0 && g_count < TABLES && real[0] >= 16 && real[0] <= SLOTS * 8 && real[0] % 8 == 0) {
    t = g_count++;
    memcpy(g_tables[t].uuid, uuid, 16);
    g_tables[t].real = real;
    g_tables[t].slots = (int)(real[0] / 8);
    g_tables[t].copy[0] = real[0];
    for (int s = 1; s < g_tables[t].slots; ++s) {
      g_tables[t].copy[s] = executable(real[s]) ? (uintptr_t)g_trampolines[t][s] : real[s];
    }
  }
  pthread_mutex_unlock(&g_mutex);
  if (t >= 0) {
    fprintf(stderr, " (size %lu, entries traced)\n", (unsigned long)real[0]);
    *table = g_tables[t].copy;
  } else {
    fprintf(stderr, " (first word %#lx: not traced)\n", (unsigned long)real[0]);
  }
  return r;
}

/* NVIDIA's driver, by its path (FLYT_TRACE_REAL_DRIVER): a second object beside this one. */
void* flytTraceRealDriver(const char* name) {
  static void* library;
  if (library == NULL) library = dlopen(getenv("FLYT_TRACE_REAL_DRIVER"), RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    fprintf(stderr, "[export_trace] NVIDIA's driver did not load: %s\n", dlerror());
    abort();
  }
  return dlsym(library, name);
}
#define realDriver flytTraceRealDriver

CUresult cuGetExportTable(const void** table, const unsigned char* uuid) {
  if (g_realGetExportTable == NULL) g_realGetExportTable = realDriver("cuGetExportTable");
  return tracedGetExportTable(table, uuid);
}

CUresult cuGetProcAddress_v2(const char* symbol, void** fn, int version, uint64_t flags, int* status) {
  static CUresult (*real)(const char*, void**, int, uint64_t, int*);
  if (real == NULL) real = (CUresult(*)(const char*, void**, int, uint64_t, int*))realDriver("cuGetProcAddress_v2");
  CUresult r = real(symbol, fn, version, flags, status);
  if (r == 0 && strcmp(symbol, "cuGetExportTable") == 0) {
    g_realGetExportTable = (CUresult(*)(const void**, const unsigned char*))*fn;
    *fn = (void*)tracedGetExportTable;
  }
  return r;
}

CUresult cuGetProcAddress(const char* symbol, void** fn, int version, uint64_t flags) {
  static CUresult (*real)(const char*, void**, int, uint64_t);
  if (real == NULL) real = (CUresult(*)(const char*, void**, int, uint64_t))realDriver("cuGetProcAddress");
  CUresult r = real(symbol, fn, version, flags);
  if (r == 0 && strcmp(symbol, "cuGetExportTable") == 0) {
    g_realGetExportTable = (CUresult(*)(const void**, const unsigned char*))*fn;
    *fn = (void*)tracedGetExportTable;
  }
  return r;
}
