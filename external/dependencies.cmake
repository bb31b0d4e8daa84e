# Third-party packages, all from Debian (scripts/setup.sh installs them). Nothing is downloaded here.
# Each find_package names the Debian package to install when it is missing.

macro(flyt_require pkg debian)
  find_package(${pkg} ${ARGN} QUIET)
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR "Flyt needs ${pkg}: install the Debian package '${debian}' (scripts/setup.sh does).")
  endif()
endmacro()

flyt_require(CapnProto libcapnp-dev CONFIG)
flyt_require(iceoryx_posh libiceoryx-posh-dev CONFIG)
flyt_require(iceoryx_hoofs libiceoryx-hoofs-dev CONFIG)
flyt_require(spdlog libspdlog-dev CONFIG)
flyt_require(tomlplusplus libtomlplusplus-dev CONFIG)
flyt_require(CLI11 libcli11-dev CONFIG)
flyt_require(SQLite3 libsqlite3-dev)
flyt_require(OpenSSL libssl-dev)  # libcrypto: Ed25519 grant signatures
find_package(Threads REQUIRED)
# The CUDA 13 toolkit is not a Debian package (scripts/setup.sh finds it). Flyt uses its headers and
# nvcc; no Flyt library links NVIDIA's runtime or driver.
find_package(CUDAToolkit 13 QUIET)
if(NOT CUDAToolkit_FOUND)
  message(FATAL_ERROR "Flyt needs the CUDA 13 toolkit (headers, nvcc): install NVIDIA's, or point "
                      "CUDAToolkit_ROOT at it (scripts/setup.sh reports where it looked).")
endif()
if(FLYT_BUILD_TESTS)
  flyt_require(GTest libgtest-dev CONFIG)
endif()
if(FLYT_BUILD_BENCHMARKS)
  flyt_require(benchmark libbenchmark-dev CONFIG)
endif()
