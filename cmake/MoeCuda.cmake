# MOE_WITH_CUDA: AUTO builds the CUDA backend when nvcc is found, ON requires it, OFF
# never builds it. Sets MOE_HAVE_CUDA, and MOE_HAVE_NCCL when NCCL is found next to
# the toolkit. Architectures default to 80 and 90 (A100, H100/H200); override with
# -DCMAKE_CUDA_ARCHITECTURES=...
include(CheckLanguage)
option(MOE_WITH_NCCL "Build the NCCL communicator when NCCL is found (needs CUDA and MPI)" ON)
set(MOE_HAVE_CUDA OFF)
set(MOE_HAVE_NCCL OFF)
if(MOE_WITH_CUDA STREQUAL "ON" OR MOE_WITH_CUDA STREQUAL "AUTO")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(MOE_HAVE_CUDA ON)
  elseif(MOE_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOE_WITH_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER or put nvcc on PATH)")
  endif()
elseif(NOT MOE_WITH_CUDA STREQUAL "OFF")
  message(FATAL_ERROR "MOE_WITH_CUDA = '${MOE_WITH_CUDA}'; expected AUTO, ON or OFF")
endif()

if(MOE_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  find_path(MOE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
  find_library(MOE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
               ${CUDAToolkit_LIBRARY_ROOT}/lib64 ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  if(MOE_WITH_NCCL AND MOE_NCCL_INCLUDE_DIR AND MOE_NCCL_LIBRARY AND MOE_WITH_MPI)
    set(MOE_HAVE_NCCL ON)
  endif()
endif()
message(STATUS "moe: CUDA backend ${MOE_HAVE_CUDA} (MOE_WITH_CUDA=${MOE_WITH_CUDA}, architectures "
               "${CMAKE_CUDA_ARCHITECTURES}), NCCL ${MOE_HAVE_NCCL}")
