# Every dependency through find_package; scripts/install-deps.sh installs them on Debian.
include(CheckSymbolExists)
include(GNUInstallDirs)

find_package(OpenMP REQUIRED COMPONENTS CXX)

if(NOT DEFINED BLA_VENDOR)
  set(BLA_VENDOR OpenBLAS)
endif()
find_package(BLAS REQUIRED)
find_path(MOE_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas openblas-pthread
          DOC "Directory holding the CBLAS header of the BLAS in use")
if(NOT MOE_CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "cblas.h not found: install libopenblas-dev (scripts/install-deps.sh)")
endif()
# OpenBLAS lets the library keep GEMMs single-threaded while OpenMP owns the cores.
set(CMAKE_REQUIRED_INCLUDES ${MOE_CBLAS_INCLUDE_DIR})
set(CMAKE_REQUIRED_LIBRARIES ${BLAS_LIBRARIES})
check_symbol_exists(openblas_set_num_threads cblas.h MOE_HAVE_OPENBLAS_THREADS)
unset(CMAKE_REQUIRED_INCLUDES)
unset(CMAKE_REQUIRED_LIBRARIES)

# MPI is needed to build in any case (parallel HDF5's headers include mpi.h);
# MOE_WITH_MPI=OFF leaves out only the MPI communicator backend.
option(MOE_WITH_MPI "Build the MPI backend (multi-rank jobs); without it only the local backend exists" ON)
find_package(MPI REQUIRED COMPONENTS C)
set(MOE_HAVE_MPI ${MOE_WITH_MPI})
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "HDF5 without MPI-IO found (${HDF5_C_INCLUDE_DIRS}); install libhdf5-openmpi-dev")
endif()

find_package(CLI11 CONFIG REQUIRED)
# JSON (safetensors headers, config.json of imported models): header-only.
find_package(nlohmann_json 3 CONFIG REQUIRED)
if(MOE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
