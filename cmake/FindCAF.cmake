# FindCAF.cmake -- locate the C++ Actor Framework (CAF) 0.17.x.
#
# CAF 0.17 as packaged by Debian (libcaf-dev) ships no CMake package
# configuration, so keel provides this module.  It is used in-tree (through
# CMAKE_MODULE_PATH) and is installed next to keelConfig.cmake, which adds its
# own directory to CMAKE_MODULE_PATH before calling find_dependency(CAF).
#
# Components: core, io, openssl.  Requesting a component implies the ones it
# depends on (openssl -> io -> core); core is always searched.
#
# Imported targets:
#   CAF::core     libcaf_core, links Threads::Threads
#   CAF::io       libcaf_io, links CAF::core
#   CAF::openssl  libcaf_openssl, links CAF::io
#
# Result variables:
#   CAF_FOUND, CAF_VERSION (e.g. 0.17.6), CAF_INCLUDE_DIRS, CAF_LIBRARIES,
#   CAF_<component>_FOUND
#
# Cache variables (hints): CAF_INCLUDE_DIR, CAF_<COMPONENT>_LIBRARY.
# CAF_ROOT (variable or environment) is honoured as a search prefix.

include(FindPackageHandleStandardArgs)

set(_caf_components ${CAF_FIND_COMPONENTS})
if("openssl" IN_LIST _caf_components)
  list(APPEND _caf_components io)
endif()
list(APPEND _caf_components core)
list(REMOVE_DUPLICATES _caf_components)

find_path(CAF_INCLUDE_DIR
  NAMES caf/config.hpp
  DOC "Directory containing caf/config.hpp")
mark_as_advanced(CAF_INCLUDE_DIR)

# CAF_VERSION is encoded as MMmmpp, e.g. 1706 -> 0.17.6.
unset(CAF_VERSION)
if(CAF_INCLUDE_DIR AND EXISTS "${CAF_INCLUDE_DIR}/caf/config.hpp")
  file(STRINGS "${CAF_INCLUDE_DIR}/caf/config.hpp" _caf_version_line
       REGEX "^#[ \t]*define[ \t]+CAF_VERSION[ \t]+[0-9]+")
  if(_caf_version_line MATCHES "CAF_VERSION[ \t]+([0-9]+)")
    math(EXPR _caf_major "${CMAKE_MATCH_1} / 10000")
    math(EXPR _caf_minor "(${CMAKE_MATCH_1} / 100) % 100")
    math(EXPR _caf_patch "${CMAKE_MATCH_1} % 100")
    set(CAF_VERSION "${_caf_major}.${_caf_minor}.${_caf_patch}")
  endif()
  unset(_caf_version_line)
endif()

# A component counts as found only if the one it links to was found as well.
set(_caf_parent_core "")
set(_caf_parent_io core)
set(_caf_parent_openssl io)
foreach(_caf_comp IN ITEMS core io openssl)
  string(TOUPPER "${_caf_comp}" _caf_COMP)
  if(_caf_comp IN_LIST _caf_components)
    find_library(CAF_${_caf_COMP}_LIBRARY
      NAMES caf_${_caf_comp}
      DOC "Path to libcaf_${_caf_comp}")
    mark_as_advanced(CAF_${_caf_COMP}_LIBRARY)
  endif()
  set(CAF_${_caf_comp}_FOUND FALSE)
  if(CAF_INCLUDE_DIR AND CAF_${_caf_COMP}_LIBRARY)
    set(_caf_parent "${_caf_parent_${_caf_comp}}")
    if(NOT _caf_parent OR CAF_${_caf_parent}_FOUND)
      set(CAF_${_caf_comp}_FOUND TRUE)
    endif()
  endif()
endforeach()
unset(_caf_parent)
unset(_caf_parent_core)
unset(_caf_parent_io)
unset(_caf_parent_openssl)

find_package_handle_standard_args(CAF
  REQUIRED_VARS CAF_INCLUDE_DIR CAF_CORE_LIBRARY
  VERSION_VAR CAF_VERSION
  HANDLE_COMPONENTS)

if(CAF_FOUND)
  set(CAF_INCLUDE_DIRS "${CAF_INCLUDE_DIR}")
  set(CAF_LIBRARIES "")

  if(NOT TARGET Threads::Threads)
    find_package(Threads QUIET REQUIRED)
  endif()

  # Targets are created only once, so including this module again (keel's
  # installed config after an in-tree find, or several consumers) is safe.
  set(_caf_deps_core Threads::Threads)
  set(_caf_deps_io CAF::core)
  set(_caf_deps_openssl CAF::io)
  foreach(_caf_comp IN ITEMS core io openssl)
    string(TOUPPER "${_caf_comp}" _caf_COMP)
    if(CAF_${_caf_comp}_FOUND)
      list(APPEND CAF_LIBRARIES "${CAF_${_caf_COMP}_LIBRARY}")
      if(NOT TARGET CAF::${_caf_comp})
        add_library(CAF::${_caf_comp} UNKNOWN IMPORTED)
        set_target_properties(CAF::${_caf_comp} PROPERTIES
          IMPORTED_LOCATION "${CAF_${_caf_COMP}_LIBRARY}"
          IMPORTED_LINK_INTERFACE_LANGUAGES CXX
          INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
          INTERFACE_LINK_LIBRARIES "${_caf_deps_${_caf_comp}}")
      endif()
    endif()
  endforeach()
  unset(_caf_deps_core)
  unset(_caf_deps_io)
  unset(_caf_deps_openssl)
endif()

unset(_caf_comp)
unset(_caf_COMP)
unset(_caf_components)
unset(_caf_major)
unset(_caf_minor)
unset(_caf_patch)
