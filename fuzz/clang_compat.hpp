// Force-included into every C++ file of the fuzz build (FLYT_FUZZ=ON, clang >= 16), never into the
// normal g++ build. It bridges two gaps between clang and Debian 12's headers:
//
// - Cap'n Proto 0.9's blob.h compares `const char*` with kj::StringPtr, relying (in C++20) on the
//   reversed form of StringPtr's member operator==. Clang 16 implements P2468R2, which drops that
//   reversed candidate because StringPtr also declares operator!=; g++ 12 does not. Declaring the
//   mixed comparisons kj itself declares before C++20 restores them. (They compare through
//   StringPtr(a), so they never pick themselves again.)
//
// libstdc++ 12's <expected> is gated on __cpp_concepts >= 202002L (P0848, conditionally trivial
// special members). Clang 16 implements P0848 but still reports 201907L; the fuzz build raises the
// macro on the command line (fuzz/CMakeLists.txt's caller, the top-level CMakeLists.txt).
#pragma once

#ifdef __cplusplus
#include <kj/string.h>

namespace kj {
inline bool operator==(const char* a, const StringPtr& b) { return b == StringPtr(a); }
inline bool operator!=(const char* a, const StringPtr& b) { return !(b == StringPtr(a)); }
}  // namespace kj
#endif
