# Driven by the CTest test `keel_install_consumer` (see tests/CMakeLists.txt):
#   cmake -DKEEL_BINARY_DIR=... -DINSTALL_PREFIX=... -DCONSUMER_SOURCE_DIR=...
#         -DCONSUMER_BINARY_DIR=... -DGENERATOR=... [-DKEEL_CONFIG=...]
#         [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DCXX_FLAGS=...]
#         [-DEXE_LINKER_FLAGS=...] -P run.cmake
#
# 1. cmake --install <keel build dir> --prefix <INSTALL_PREFIX>
# 2. configure tests/install with CMAKE_PREFIX_PATH=<INSTALL_PREFIX>, using the
#    same generator, compiler and CMAKE_CXX_FLAGS (so sanitizer builds link)
# 3. build it, 4. run the consumer binary.
# Any failing step ends the script with FATAL_ERROR and the step's output.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS KEEL_BINARY_DIR INSTALL_PREFIX CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

# Multi-config generators pass the tested configuration; single-config ones
# pass an empty $<CONFIG> when CMAKE_BUILD_TYPE is empty.
set(config_args "")
if(KEEL_CONFIG)
  set(config_args --config "${KEEL_CONFIG}")
endif()

function(run_step name)
  execute_process(
    COMMAND ${ARGN}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    string(REPLACE ";" " " cmdline "${ARGN}")
    message(FATAL_ERROR
      "keel install test: step '${name}' failed (${result})\n"
      "command: ${cmdline}\n"
      "---- output ----\n${output}")
  endif()
  message(STATUS "keel install test: ${name}: ok")
endfunction()

file(REMOVE_RECURSE "${INSTALL_PREFIX}" "${CONSUMER_BINARY_DIR}")

run_step(install
  "${CMAKE_COMMAND}" --install "${KEEL_BINARY_DIR}" --prefix "${INSTALL_PREFIX}" ${config_args})

set(configure_args
  -S "${CONSUMER_SOURCE_DIR}"
  -B "${CONSUMER_BINARY_DIR}"
  -G "${GENERATOR}"
  "-DCMAKE_PREFIX_PATH=${INSTALL_PREFIX}"
  # Only the freshly installed keel may be found, never a system-wide one.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}")
if(KEEL_CONFIG)
  list(APPEND configure_args "-DCMAKE_BUILD_TYPE=${KEEL_CONFIG}")
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()

run_step(configure "${CMAKE_COMMAND}" ${configure_args})
run_step(build "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY_DIR}" ${config_args})

# Single- and multi-config generators place the binary differently.
find_program(consumer_exe
  NAMES keel_install_consumer
  PATHS "${CONSUMER_BINARY_DIR}" "${CONSUMER_BINARY_DIR}/${KEEL_CONFIG}"
  NO_DEFAULT_PATH NO_CACHE)
if(NOT consumer_exe)
  message(FATAL_ERROR "keel install test: consumer binary not found in ${CONSUMER_BINARY_DIR}")
endif()
run_step(run "${consumer_exe}")
