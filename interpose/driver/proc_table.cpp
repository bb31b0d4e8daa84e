// The table behind lookupProc. This file includes no CUDA header: it needs only the exports'
// addresses, and declares each one with the same shape the unsupported stubs use.
#include "proc_table.hpp"

#include "cu_procs.inc"

#define FLYT_DECLARE_EXPORT(name, version, perThread, exported) extern "C" int exported();
FLYT_CU_PROCS(FLYT_DECLARE_EXPORT)
#undef FLYT_DECLARE_EXPORT

namespace flyt::interpose::cu {
namespace {

struct ProcRow {
  std::string_view name;
  int version;
  bool perThread;
  int (*address)();
};

#define FLYT_PROC_ROW(name, version, perThread, exported) ProcRow{name, version, perThread, &exported},
const ProcRow kProcs[] = {FLYT_CU_PROCS(FLYT_PROC_ROW)};
#undef FLYT_PROC_ROW

}  // namespace

ProcLookup lookupProc(std::string_view symbol, int cudaVersion, bool perThread) noexcept {
  const ProcRow* best = nullptr;      // newest fitting row of the wanted stream flavour
  const ProcRow* fallback = nullptr;  // newest fitting legacy row (a name without a _ptds variant)
  ProcLookup found;
  for (const auto& row : kProcs) {
    if (row.name != symbol) continue;
    found.named = true;
    if (row.version > cudaVersion) continue;
    if (row.perThread == perThread && (best == nullptr || row.version > best->version)) best = &row;
    if (!row.perThread && (fallback == nullptr || row.version > fallback->version)) fallback = &row;
  }
  if (best == nullptr) best = fallback;
  if (best != nullptr) found.address = reinterpret_cast<void*>(best->address);
  return found;
}

}  // namespace flyt::interpose::cu
