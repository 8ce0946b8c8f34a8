# Installs libmoe, its public headers and a CMake package, so that a downstream
# project does find_package(moe) and links moe::moe.
include(CMakePackageConfigHelpers)

install(TARGETS moe EXPORT moeTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/moe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(MOE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/moe)
install(EXPORT moeTargets NAMESPACE moe:: DESTINATION ${MOE_CMAKE_DIR})
configure_package_config_file(cmake/moeConfig.cmake.in ${PROJECT_BINARY_DIR}/moeConfig.cmake
                              INSTALL_DESTINATION ${MOE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/moeConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/moeConfig.cmake ${PROJECT_BINARY_DIR}/moeConfigVersion.cmake
        DESTINATION ${MOE_CMAKE_DIR})
