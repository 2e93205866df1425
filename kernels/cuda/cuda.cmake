# CUDA backend: library wd_cuda (kernels/cuda), the GPU benchmark binary and,
# through the root CMakeLists.txt, tests/gpu. Included when nvcc is found.
#
# Architectures: sm_80 and sm_90 machine code plus compute_90 PTX so newer GPUs
# JIT-compile it. Override with -DCMAKE_CUDA_ARCHITECTURES=90-real (faster builds).
# libcuda is never linked directly: driver entry points (green contexts) are
# fetched at run time through cudaGetDriverEntryPointByVersion, so every binary
# still starts (and the GPU tests skip) on a machine without a driver.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_FLAGS_RELEASE "-O3")

file(GLOB WD_CUDA_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu
                                        ${CMAKE_SOURCE_DIR}/kernels/cuda/*.c)
add_library(wd_cuda STATIC ${WD_CUDA_SRC})
target_include_directories(wd_cuda PUBLIC ${CMAKE_SOURCE_DIR})
# nvtx3 is header-only: CUDAToolkit's CUDA::nvtx3 target where CMake has it
# (3.25+), else the toolkit's include folder.
if(TARGET CUDA::nvtx3)
  target_link_libraries(wd_cuda PRIVATE CUDA::nvtx3)
endif()
target_include_directories(wd_cuda PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
target_compile_options(wd_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall,-Wno-unused-parameter>)
set_target_properties(wd_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                                         POSITION_INDEPENDENT_CODE ON)
# kernels only: the model runner that drives them is host logic (host/cuda_runner.cu,
# compiled into wd_host by the root CMakeLists.txt)
target_link_libraries(wd_cuda PUBLIC wd_kernels CUDA::cudart CUDA::cublas ${CMAKE_DL_LIBS})

# NCCL (optional): several GPUs in one process (ncclCommInitAll, grouped send/recv).
# CUDAToolkit has no NCCL target: looked for beside the toolkit, then in the
# usual places (NCCL_ROOT / CMAKE_PREFIX_PATH point elsewhere).
find_path(WD_NCCL_INCLUDE nccl.h HINTS ${NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS}
          /usr/local/include /usr/include)
find_library(WD_NCCL_LIB nccl HINTS ${NCCL_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR} /usr/local/lib
             /usr/lib/x86_64-linux-gnu)
if(WD_NCCL_INCLUDE AND WD_NCCL_LIB)
  message(STATUS "wdmoe: NCCL found: ${WD_NCCL_LIB}")
  target_include_directories(wd_cuda PUBLIC ${WD_NCCL_INCLUDE})
  target_link_libraries(wd_cuda PUBLIC ${WD_NCCL_LIB})
  target_compile_definitions(wd_cuda PUBLIC WD_HAVE_NCCL=1)
else()
  message(STATUS "wdmoe: NCCL not found, --gpus N > 1 unavailable")
endif()
message(STATUS "wdmoe: CUDA backend on (${CMAKE_CUDA_COMPILER_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES})")

# GPU benchmark binary (bench/*.c are CPU benchmarks globbed by the root).
if(EXISTS ${CMAKE_SOURCE_DIR}/bench/gpu_bench.cu)
  add_executable(gpu_bench ${CMAKE_SOURCE_DIR}/bench/gpu_bench.cu)
  target_link_libraries(gpu_bench PRIVATE wd_host)
  target_include_directories(gpu_bench PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
endif()
