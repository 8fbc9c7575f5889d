"""`import mltap` in an ML process loads the producer SDK and nothing of the agent: the extension
mltap._mltap is linked to the SDK only, and mltap.Profile (the detectors' profile builder, in
mltap._profile) is loaded only when first used."""

import os
import subprocess
import sys

# Libraries of the agent side (configuration, logging) that a producer must not carry.
AGENT_LIBRARIES = ("libyaml-cpp", "libspdlog", "libfmt", "libprometheus", "libnlohmann")
# What a C++ extension linked to the SDK alone may need.
SYSTEM_LIBRARIES = ("linux-vdso", "libstdc++", "libm.", "libgcc_s", "libc.", "ld-linux", "libpthread")


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _mapped_libraries(maps_text):
    return {os.path.basename(line.split()[-1]) for line in maps_text.splitlines()
            if len(line.split()) >= 6 and ".so" in line.split()[-1]}


def test_import_mltap_maps_no_agent_library():
    out = _run("import sys, mltap\n"
               "assert 'mltap._profile' not in sys.modules, 'mltap._profile loaded by import mltap'\n"
               "print(open('/proc/self/maps').read())")
    libs = _mapped_libraries(out)
    assert any(lib.startswith("_mltap") for lib in libs), sorted(libs)
    loaded = sorted(lib for lib in libs if lib.startswith(AGENT_LIBRARIES))
    assert loaded == [], f"import mltap mapped {loaded}"


def test_producer_extension_links_the_sdk_only():
    import mltap._mltap
    # The profile builder (and the detectors it is part of) is not compiled into it either.
    assert not hasattr(mltap._mltap, "Profile")
    ldd = subprocess.run(["ldd", mltap._mltap.__file__], capture_output=True, text=True, check=True)
    needed = [os.path.basename(line.split()[0]) for line in ldd.stdout.splitlines() if line.strip()]
    assert needed, ldd.stdout
    others = [lib for lib in needed if not lib.startswith(SYSTEM_LIBRARIES)]
    assert others == [], f"mltap._mltap links {others}:\n{ldd.stdout}"


def test_profile_is_loaded_on_first_use():
    out = _run("import sys, mltap\n"
               "before = 'mltap._profile' in sys.modules\n"
               "p = getattr(mltap, 'Profile', None)\n"
               "print(before, p is not None, 'mltap._profile' in sys.modules)")
    before, available, after = out.split()
    assert before == "False"
    if available == "True":  # built with agent/detectors
        assert after == "True"
