# Installation rules and the Debian package (CPack DEB). Included last by the top CMakeLists.txt.
# packaging/README.md says why CPack and what each installed file is for.
#
# Targets are named once, below: when a target is renamed, change its name here. A missing target
# is skipped with a warning, and packaging/build-deb.sh then refuses the package (it checks the
# file list), so a rename cannot silently ship a package without, say, libmltap.so.
set(MLTAP_INSTALL_DAEMON mltapd)                      # -> /usr/sbin/mltapd
set(MLTAP_INSTALL_CLI mltap)                          # -> /usr/bin/mltap
set(MLTAP_INSTALL_SHARED_LIB mltap_shared)            # libmltap.so.1 (OUTPUT_NAME mltap, SOVERSION 1)

# The supported installation is the Debian package, whose prefix is /usr; a plain `cmake --install`
# lays files out the same way unless a prefix is given (-DCMAKE_INSTALL_PREFIX=/usr/local). This
# also lets CI package the tree it has already built instead of compiling everything again.
if(CMAKE_INSTALL_PREFIX_INITIALIZED_TO_DEFAULT)
  set(CMAKE_INSTALL_PREFIX /usr CACHE PATH "Install prefix (the Debian package uses /usr)" FORCE)
endif()
include(GNUInstallDirs)  # with prefix /usr: lib/<multiarch>, sysconfdir /etc, localstatedir /var

set(MLTAP_PYTHON_INSTALL_DIR lib/python3/dist-packages CACHE STRING
    "Where the `mltap` Python package goes, relative to the prefix (Debian's python3 path)")
# systemd looks for units in /lib/systemd/system (Debian 12, not merged-/usr packaging) and in
# <prefix>/lib/systemd/system; the package uses the first, as Debian's own packages do.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(MLTAP_SYSTEMD_UNIT_DIR /lib/systemd/system)
else()
  set(MLTAP_SYSTEMD_UNIT_DIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
endif()
set(pkg ${PROJECT_SOURCE_DIR}/packaging)
set(gen ${PROJECT_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${gen})

function(mltap_install_target target)
  if(TARGET ${target})
    install(TARGETS ${target} ${ARGN})
  else()
    message(WARNING "packaging/install.cmake: no target '${target}'; it is not installed "
                    "(a renamed target? update the names at the top of packaging/install.cmake)")
  endif()
endfunction()

# Programs. mltapd is a daemon that users do not run by hand: sbin (Debian policy 9.1.1).
mltap_install_target(${MLTAP_INSTALL_DAEMON} RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
mltap_install_target(${MLTAP_INSTALL_CLI} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The C/C++ SDK: libmltap.so.1 + the public headers + pkg-config.
mltap_install_target(${MLTAP_INSTALL_SHARED_LIB}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_SKIP)
mltap_install_target(${MLTAP_INSTALL_SHARED_LIB}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_ONLY)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/shm/include/mltap DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
configure_file(${pkg}/mltap.pc.in ${gen}/mltap.pc @ONLY)
install(FILES ${gen}/mltap.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The Python package: every extension module the build puts into <build>/python/mltap, found by
# its output directory rather than by name (install(TARGETS) strips them), and the pure-Python
# files assembled there.
set(MLTAP_PY_PACKAGE_BUILD_DIR ${PROJECT_BINARY_DIR}/python/mltap)
function(mltap_collect_targets dir out)
  get_property(t DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(d ${subdirs})
    mltap_collect_targets(${d} sub)
    list(APPEND t ${sub})
  endforeach()
  set(${out} ${t} PARENT_SCOPE)
endfunction()
mltap_collect_targets(${PROJECT_SOURCE_DIR} all_targets)
set(MLTAP_PY_EXTENSIONS)
foreach(t ${all_targets})
  get_target_property(type ${t} TYPE)
  get_target_property(outdir ${t} LIBRARY_OUTPUT_DIRECTORY)
  if(type STREQUAL "MODULE_LIBRARY" AND outdir STREQUAL MLTAP_PY_PACKAGE_BUILD_DIR)
    list(APPEND MLTAP_PY_EXTENSIONS ${t})
  endif()
endforeach()
if(MLTAP_PY_EXTENSIONS)
  install(TARGETS ${MLTAP_PY_EXTENSIONS} LIBRARY DESTINATION ${MLTAP_PYTHON_INSTALL_DIR}/mltap)
  install(DIRECTORY ${MLTAP_PY_PACKAGE_BUILD_DIR}/ DESTINATION ${MLTAP_PYTHON_INSTALL_DIR}/mltap
          FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
endif()

# Configuration (a conffile in the package), the unit, what Prometheus/Alertmanager/Grafana use.
install(FILES ${pkg}/mltapd.yaml DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/mltap)
install(FILES ${pkg}/systemd/mltapd.service DESTINATION ${MLTAP_SYSTEMD_UNIT_DIR})
install(FILES ${pkg}/prometheus/mltap.rules.yml ${pkg}/prometheus/mltap.rules.test.yml
              ${pkg}/prometheus/mltap.fleet.rules.yml ${pkg}/prometheus/mltap.fleet.rules.test.yml
              ${pkg}/prometheus/mltap.performance.rules.yml ${pkg}/prometheus/mltap.performance.rules.test.yml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/mltap/prometheus)
install(FILES ${pkg}/grafana/mltap.json DESTINATION ${CMAKE_INSTALL_DATADIR}/mltap/grafana)

# Documentation: /usr/share/doc/mltap (copyright and changelog as Debian wants them).
set(docdir ${CMAKE_INSTALL_DATADIR}/doc/mltap)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${pkg}/debian/copyright DESTINATION ${docdir})
install(FILES ${PROJECT_SOURCE_DIR}/docs/deploy.md ${PROJECT_SOURCE_DIR}/docs/metrics.md
              ${PROJECT_SOURCE_DIR}/docs/alerting.md ${PROJECT_SOURCE_DIR}/docs/detectors.md
              ${PROJECT_SOURCE_DIR}/docs/ebpf.md ${PROJECT_SOURCE_DIR}/docs/profile-format.md
              ${PROJECT_SOURCE_DIR}/shm/FORMAT.md
        DESTINATION ${docdir}/docs)
install(FILES ${pkg}/prometheus/prometheus.example.yml ${pkg}/alertmanager/alertmanager.example.yml
        DESTINATION ${docdir}/examples)

# Compressed as Debian policy asks (gzip -9n: no name or time stamp, so the package is reproducible).
set(gz_files)
foreach(pair "debian/changelog|changelog.gz" "man/mltapd.8|mltapd.8.gz" "man/mltap.1|mltap.1.gz")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 src)
  list(GET pair 1 out)
  add_custom_command(OUTPUT ${gen}/${out}
    COMMAND gzip -9n -c ${pkg}/${src} > ${gen}/${out}
    DEPENDS ${pkg}/${src} VERBATIM)
  list(APPEND gz_files ${gen}/${out})
endforeach()
add_custom_target(mltap_package_files ALL DEPENDS ${gz_files})
install(FILES ${gen}/changelog.gz DESTINATION ${docdir})
install(FILES ${gen}/mltapd.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${gen}/mltap.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# ---- CPack DEB: one package, mltap_<version>_<arch>.deb ----
execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE MLTAP_DEB_ARCH
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT MLTAP_DEB_ARCH)
  set(MLTAP_DEB_ARCH amd64)
endif()
# The extension module is built for this interpreter's ABI only (cpython-3XY): depend on that
# minor version, as dh_python3 would.
execute_process(COMMAND ${MLTAP_PYTHON} -c "import sys; print('%d.%d' % sys.version_info[:2])"
                OUTPUT_VARIABLE MLTAP_PY_MINOR OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
# adduser: postinst creates the user; procps: /bin/kill of the unit's ExecReload (not in a
# minimal Debian root, as tests/systemd found).
set(MLTAP_DEB_DEPENDS "adduser, procps")
if(MLTAP_PY_EXTENSIONS AND MLTAP_PY_MINOR MATCHES "^3\\.([0-9]+)$")
  math(EXPR next_minor "${CMAKE_MATCH_1} + 1")
  string(APPEND MLTAP_DEB_DEPENDS ", python3 (>= ${MLTAP_PY_MINOR}~), python3 (<< 3.${next_minor})")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mltap)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Stage with DESTDIR: /etc/mltap and /lib/systemd/system are absolute destinations, which without
# it would be written to the build machine itself.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "observability agent for machine-learning pipelines")
# CPack puts the summary first and indents these lines; an empty line separates paragraphs.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"mltap watches production ML pipelines. Instrumented processes write tensors
(features, embeddings, predictions) into shared-memory rings at a cost of
nanoseconds; the mltapd daemon reads them without locks, runs data-quality,
schema and drift detectors, traces the producers' system events with eBPF
and exports metrics to Prometheus, whose Alertmanager calls mltapd back to
run allow-listed reactions.

This package contains mltapd with its hardened systemd unit (not enabled on
installation), the mltap command, the producer SDK (libmltap.so.1, C and
C++ headers, pkg-config file), the Python module, Prometheus alert rules,
an Alertmanager example and a Grafana dashboard.")
set(MLTAP_DEB_MAINTAINER "mltap developers <mltap@example.org>" CACHE STRING "Maintainer field of the .deb")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${MLTAP_DEB_MAINTAINER}")
set(CPACK_PACKAGE_CONTACT "${MLTAP_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${MLTAP_DEB_ARCH})
set(CPACK_DEBIAN_FILE_NAME "mltap_${PROJECT_VERSION}_${MLTAP_DEB_ARCH}.deb")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)         # Depends from the binaries' NEEDED (dpkg-shlibdeps)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${MLTAP_DEB_DEPENDS}")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3-numpy")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "prometheus, prometheus-alertmanager")
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)   # DEBIAN/shlibs for libmltap.so.1
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${pkg}/debian/conffiles ${pkg}/debian/triggers
    ${pkg}/debian/postinst ${pkg}/debian/prerm ${pkg}/debian/postrm)
set(CPACK_STRIP_FILES ON)
set(CPACK_SOURCE_IGNORE_FILES "/build.*/;/\\\\.git/")
include(CPack)

# Full RELRO for what the package ships (lintian: hardening-no-bindnow): the GOT of a program
# that starts with CAP_SYS_ADMIN is made read-only before main().
foreach(t ${MLTAP_INSTALL_DAEMON} ${MLTAP_INSTALL_CLI} ${MLTAP_INSTALL_SHARED_LIB} ${MLTAP_PY_EXTENSIONS})
  if(TARGET ${t})
    target_link_options(${t} PRIVATE -Wl,-z,relro,-z,now)
  endif()
endforeach()

# What the package needs built: `cmake --build B --target mltap_package` (packaging/build-deb.sh).
add_custom_target(mltap_package)
add_dependencies(mltap_package mltap_package_files)
foreach(t ${MLTAP_INSTALL_DAEMON} ${MLTAP_INSTALL_CLI} ${MLTAP_INSTALL_SHARED_LIB} ${MLTAP_PY_EXTENSIONS})
  if(TARGET ${t})
    add_dependencies(mltap_package ${t})
  endif()
endforeach()
