# libwdmoe: the emulation as a shared library with a small, stable C API
# (emulation/wdmoe.h; only the wdmoe_* functions are exported), and the install
# rules: `cmake --install build [--prefix DIR]` puts the wdmoe CLI in bin/,
# libwdmoe in lib/, wdmoe.h in include/, the CMake package in lib/cmake/wdmoe
# (find_package(wdmoe) -> target wdmoe::wdmoe), the benchmark binaries in
# libexec/wdmoe/ and the shipped scenarios and traces in share/wdmoe/.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

target_compile_definitions(wd_emulation PRIVATE WDMOE_VERSION_STRING="${PROJECT_VERSION}")

file(GLOB wd_libwdmoe_src CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/emulation/*.c)
add_library(libwdmoe SHARED ${wd_libwdmoe_src})
target_include_directories(libwdmoe PRIVATE ${CMAKE_SOURCE_DIR})
target_compile_definitions(libwdmoe PRIVATE WDMOE_VERSION_STRING="${PROJECT_VERSION}")
target_link_libraries(libwdmoe PRIVATE PkgConfig::JSONC m)
target_compile_options(libwdmoe PRIVATE $<$<COMPILE_LANGUAGE:C>:-ffp-contract=off>) # as wd_emulation
set_target_properties(libwdmoe PROPERTIES
  OUTPUT_NAME wdmoe EXPORT_NAME wdmoe
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
  C_VISIBILITY_PRESET hidden
  PUBLIC_HEADER ${CMAKE_SOURCE_DIR}/emulation/wdmoe.h)
if(TARGET wd_cuda)
  set_target_properties(libwdmoe PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
endif()
target_include_directories(libwdmoe INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

install(TARGETS wdmoe RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS libwdmoe EXPORT wdmoeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(b bench_decode bench_kernels bench_policy synth_model gpu_bench)
  if(TARGET ${b})
    install(TARGETS ${b} RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/wdmoe)
  endif()
endforeach()
install(DIRECTORY ${CMAKE_SOURCE_DIR}/bench/scenarios ${CMAKE_SOURCE_DIR}/bench/traces
  DESTINATION ${CMAKE_INSTALL_DATADIR}/wdmoe)
install(FILES ${CMAKE_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

install(EXPORT wdmoeTargets NAMESPACE wdmoe::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/wdmoe)
configure_package_config_file(${CMAKE_SOURCE_DIR}/emulation/wdmoeConfig.cmake.in
  ${CMAKE_BINARY_DIR}/wdmoeConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/wdmoe)
# before 1.0 a minor release may change the API (see CHANGELOG.md)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/wdmoeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/wdmoeConfig.cmake ${CMAKE_BINARY_DIR}/wdmoeConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/wdmoe)
