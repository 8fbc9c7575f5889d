#!/usr/bin/python3
"""mltap's .deb and mltapd.service under a real systemd 252, booted as PID 1 of private PID, mount,
UTS, IPC and cgroup namespaces in a fresh Debian 12 root (REFERENCE.md section 7).

    harness.py --deb BUILD/deb/mltap_*.deb --results FILE [--cache-dir /var/cache/mltap-test]

1. A Debian 12 root (debootstrap --variant=minbase, plus systemd) is cached as
   <cache>/rootfs-<hash of its recipe>.tar; a cold machine builds it once. Downloaded .debs are
   kept in <cache>/apt-archives, so warm runs install offline.
2. boot.sh unpacks it into a tmpfs inside the new mount namespace, gives it private /dev, /dev/shm,
   /run, /tmp and /var/tmp, read-only /sys and /proc/sys, its own cgroup2 subtree, tracefs and
   BTF, masks what must not touch the host, and execs systemd.
3. The steps below run through `nsenter -t <pid> -m -p ...`; each is pass, fail or skip (with
   the reason), with its time. PENDING lists the steps that wait for mltapd features: they are
   reported as skipped, never as passing; remove an entry to enable its step.
4. Whatever happens (failure, exception, SIGTERM), the namespaces are torn down, the test's cgroup
   removed, and the machine compared with what it was before: mounts, /tmp, /var/tmp, /dev/shm,
   processes, cgroups. Leftovers of a run that was SIGKILLed are removed by the next run.

Writes a JSON results file (tests/systemd/pending.py reports the pending steps to ctest).
"""
import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BOOT_UNIT = "mltap-test.target"
CGROUP_PREFIX = "mltap-systemd-test."
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Steps that need mltapd features not there yet (issue 11). Each is skipped with this reason and
# reported as skipped by ctest; delete the entry once mltapd does what the reason says.
PENDING = {
}
for name in filter(None, os.environ.get("MLTAP_SYSTEMD_ENABLE", "").split(",")):
    PENDING.pop(name.strip(), None)

# Units that must not run in the test root: they would touch the host's kernel or devices
# (modules, sysctl, udev, audit, pstore, random seed), run maintenance on disks (fstrim,
# e2scrub) or reach the network on a timer (apt). /sys and /proc/sys are read-only as well.
MASKED_UNITS = [
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-modules-load.service",
    "modprobe@.service", "kmod-static-nodes.service", "systemd-sysctl.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "systemd-journald-audit.socket", "systemd-pstore.service", "systemd-random-seed.service",
    "systemd-hwdb-update.service", "systemd-remount-fs.service", "systemd-firstboot.service",
    "systemd-machine-id-commit.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service", "systemd-tmpfiles-clean.timer",
    "sys-kernel-debug.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    "sys-kernel-tracing.mount", "dev-hugepages.mount", "tmp.mount", "getty.target",
    "console-getty.service", "systemd-logind.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "man-db.timer", "logrotate.timer", "systemd-networkd.service",
    "systemd-timesyncd.service", "systemd-resolved.service", "ldconfig.service",
]
BOOT_TARGET = f"""[Unit]
Description=mltap test: the journal and nothing else until a test step starts a unit
Wants=systemd-journald.service
After=systemd-journald.service
AllowIsolate=yes
"""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StepFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise StepFailed(what)


# ---------------------------------------------------------------- host state

def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    raise RuntimeError("no cgroup2 mount on this machine")


def mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            p = pre.split()
            q = post.split()
            out.append((p[4], q[0], q[1]))
    return out


def listdir(d):
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def processes_in_pidns(ns_inode):
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.stat(f"/proc/{p}/ns/pid").st_ino == ns_inode:
                found.append(int(p))
        except OSError:
            pass
    return found


def host_state():
    root = cgroup2_root()
    return {"mounts": mounts(), "tmp": listdir("/tmp"), "var_tmp": listdir("/var/tmp"),
            "dev_shm": listdir("/dev/shm"),
            "cgroups": sorted(d for d in listdir(root) if os.path.isdir(os.path.join(root, d)))}


def remove_cgroup_tree(path):
    """Kills every process in the subtree (cgroup.kill, Linux >= 5.14) and removes it."""
    if not os.path.isdir(path):
        return
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        for dirpath, _, _ in os.walk(path):
            try:
                for pid in open(os.path.join(dirpath, "cgroup.procs")).read().split():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if "populated 0" in open(os.path.join(path, "cgroup.events")).read():
                break
        except OSError:
            break
        time.sleep(0.05)
    for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def remove_leftovers():
    """Cgroups (and so processes) of earlier runs that could not clean up (SIGKILL)."""
    root = cgroup2_root()
    for d in listdir(root):
        if d.startswith(CGROUP_PREFIX):
            pid = d[len(CGROUP_PREFIX):]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}") and int(pid) != os.getpid():
                try:
                    if "harness.py" in open(f"/proc/{pid}/cmdline").read():
                        continue  # another run, alive (ctest RESOURCE_LOCK should prevent this)
                except OSError:
                    pass
            log(f"removing the cgroup of an earlier run: {d}")
            remove_cgroup_tree(os.path.join(root, d))
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        for n in listdir(d):
            pid = n.rpartition(".")[2]
            if n.startswith(".mltap-systemd-canary.") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                os.unlink(os.path.join(d, n))


# ---------------------------------------------------------------- the cached Debian root

def debian_mirrors():
    """The configured Debian mirror (URIs of the bookworm and bookworm-security entries)."""
    main, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    texts = []
    for d, names in (("/etc/apt", ["sources.list"]),
                     ("/etc/apt/sources.list.d", sorted(listdir("/etc/apt/sources.list.d")))):
        for n in names:
            try:
                texts.append(open(os.path.join(d, n)).read())
            except OSError:
                pass
    for t in texts:
        for m in re.finditer(r"^URIs:\s*(\S+)", t, re.M):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                main = uri
            elif uri.endswith("/debian-security"):
                security = uri
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm(\S*)", t, re.M):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                main = uri
            elif uri.endswith("/debian-security"):
                security = uri
    return main, security


def rootfs_tar(cache, timings):
    main, security = debian_mirrors()
    recipe = {"recipe": 1, "suite": "bookworm", "variant": "minbase", "include": ["systemd"],
              "mirror": main, "security": security}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    tar = os.path.join(cache, f"rootfs-{key}.tar")
    os.makedirs(cache, exist_ok=True)
    # main() holds the cache's lock for the whole run.
    if os.path.exists(tar):
        log(f"rootfs: cached {tar}")
        timings["rootfs"] = 0.0
        return tar
    log(f"rootfs: building {tar} with debootstrap from {main} (once per recipe)")
    t0 = time.time()
    work = os.path.join(cache, f"build.{os.getpid()}")
    os.makedirs(work)
    sources = (f"deb {main} bookworm main\n"
               f"deb {main} bookworm-updates main\n"
               f"deb {security} bookworm-security main\n")
    script = f"""set -eu
mount -t tmpfs -o size=4g tmpfs {work}
mkdir {work}/root
debootstrap --variant=minbase --include=systemd --cache-dir={cache}/debootstrap-debs \\
  bookworm {work}/root {main} > {work}.log 2>&1 || {{ tail -30 {work}.log; exit 1; }}
printf '%s' '{sources}' > {work}/root/etc/apt/sources.list
mount -t proc proc {work}/root/proc
chroot {work}/root apt-get update -q >> {work}.log 2>&1 || {{ tail -30 {work}.log; exit 1; }}
chroot {work}/root apt-get clean
umount {work}/root/proc
tar -C {work}/root -cf {tar}.tmp .
mv {tar}.tmp {tar}
"""
    os.makedirs(os.path.join(cache, "debootstrap-debs"), exist_ok=True)
    try:
        # The tmpfs and debootstrap's own /proc mounts live in a private mount namespace:
        # nothing can be left mounted on the host, even if debootstrap fails.
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       check=True)
    finally:
        for p in (work, f"{work}.log", f"{tar}.tmp"):
            if os.path.isdir(p):
                os.rmdir(p)
            elif os.path.exists(p):
                os.unlink(p)
    for old in listdir(cache):  # earlier recipes
        if old.startswith("rootfs-") and old.endswith(".tar") and old != os.path.basename(tar):
            os.unlink(os.path.join(cache, old))
    timings["rootfs"] = time.time() - t0
    log(f"rootfs: built in {timings['rootfs']:.0f} s ({os.path.getsize(tar) >> 20} MiB)")
    return tar


# ---------------------------------------------------------------- the container

def set_pdeathsig():
    # If the harness dies, unshare gets SIGKILL; unshare --kill-child then kills systemd, which
    # takes the whole PID namespace with it.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Container:
    def __init__(self, tar, cache, inject, logdir):
        self.tar, self.cache, self.inject, self.logdir = tar, cache, inject, logdir
        self.cgroup = os.path.join(cgroup2_root(), f"{CGROUP_PREFIX}{os.getpid()}")
        self.mnt = os.path.join(logdir, "mnt")
        self.proc = None
        self.pid = None
        self.pidns = None

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        archives = os.path.join(self.cache, "apt-archives")
        os.makedirs(os.path.join(archives, "partial"), exist_ok=True)
        os.makedirs(self.cgroup)
        env = {"PATH": CONTAINER_PATH, "MLTAP_ROOTFS_TAR": self.tar, "MLTAP_MNT": self.mnt,
               "MLTAP_APT_ARCHIVES": archives, "MLTAP_INJECT": self.inject,
               "MLTAP_BOOT_UNIT": BOOT_UNIT}
        self.bootlog = open(os.path.join(self.logdir, "boot.log"), "w")
        self.proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec unshare --mount --uts '
             f'--ipc --pid --cgroup --fork --kill-child --propagation private sh {HERE}/boot.sh'],
            env=env, stdout=self.bootlog, stderr=subprocess.STDOUT, preexec_fn=set_pdeathsig)
        deadline = time.time() + 60
        while self.pid is None:
            check(self.proc.poll() is None, f"the container exited early: {self.bootlog_text()}")
            check(time.time() < deadline, "the container's init did not appear")
            try:
                kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
                if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("systemd"):
                    self.pid = int(kids[0])
                    self.pidns = os.stat(f"/proc/{self.pid}/ns/pid").st_ino
            except OSError:
                pass
            time.sleep(0.05)
        while True:
            check(self.proc.poll() is None, f"systemd exited: {self.bootlog_text()}")
            r = self.run(["systemctl", "is-active", BOOT_UNIT], check=False, timeout=10)
            if r.stdout.strip() == "active":
                break
            check(time.time() < deadline, f"{BOOT_UNIT} not reached: {r.stdout}{r.stderr}")
            time.sleep(0.1)

    def bootlog_text(self):
        self.bootlog.flush()
        return open(self.bootlog.name).read()[-2000:]

    def run(self, cmd, check=True, timeout=120, input=None, env=None):
        e = ["PATH=" + CONTAINER_PATH, "HOME=/root", "LANG=C.UTF-8",
             "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]
        e += [f"{k}={v}" for k, v in (env or {}).items()]
        full = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", "--",
                "/usr/bin/env", "-i"] + e + cmd
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise StepFailed(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return r

    def sh(self, script, **kw):
        return self.run(["sh", "-c", script], **kw)

    def stop(self):
        """Poweroff, then SIGKILL; removes the cgroup. Safe to call at any point."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid:
            try:
                os.kill(self.pid, signal.SIGRTMIN + 4)  # systemd: poweroff
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                if self.pid:
                    os.kill(self.pid, signal.SIGKILL)  # PID 1 of the namespace: all of it dies
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.pidns:  # nsenter'd commands left behind are in the namespace too
            for p in processes_in_pidns(self.pidns):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        remove_cgroup_tree(self.cgroup)
        try:
            os.rmdir(self.mnt)
        except OSError:
            pass
        self.bootlog.close()


# ---------------------------------------------------------------- the test

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


CAP_NAMES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
             "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
             "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
             "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
             "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
             "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
             "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
             "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
             "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]


def caps_of(mask_hex):
    m = int(mask_hex, 16)
    return {n for i, n in enumerate(CAP_NAMES) if m >> i & 1}


class Test:
    def __init__(self, c, deb, port):
        self.c, self.deb, self.port = c, os.path.basename(deb), port
        self.steps = []
        self.producer_ring = None

    # -- helpers
    def step(self, name, fn):
        if name in PENDING:
            log(f"SKIP {name}: {PENDING[name]}")
            self.steps.append({"name": name, "status": "skip", "seconds": 0, "detail": PENDING[name]})
            return
        t0 = time.time()
        try:
            detail = fn() or ""
            status = "pass"
        except StepFailed as e:
            detail, status = str(e), "fail"
        except subprocess.TimeoutExpired as e:
            detail, status = f"timed out: {e}", "fail"
        dt = time.time() - t0
        log(f"{status.upper()} {name} ({dt:.1f} s){': ' + detail if detail else ''}")
        self.steps.append({"name": name, "status": status, "seconds": round(dt, 2), "detail": detail})
        if status == "fail" and name in ("install", "enable_now"):
            raise StepFailed(f"{name} failed; later steps depend on it")

    def show(self, *props):
        r = self.c.run(["systemctl", "show", "mltapd", "-p", ",".join(props)])
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def metrics(self, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as r:
            return parse_metrics(r.read().decode())

    def wait(self, what, fn, timeout=20, interval=0.2):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                v = fn()
                if v:
                    return v
                last = v
            except (OSError, StepFailed, ValueError) as e:
                last = e
            time.sleep(interval)
        raise StepFailed(f"{what}: not within {timeout} s (last: {last})")

    def wait_active(self, old_pid=None, timeout=20):
        def ok():
            s = self.show("ActiveState", "SubState", "MainPID")
            return s if (s["ActiveState"] == "active" and s["MainPID"] != "0"
                         and s["MainPID"] != old_pid) else None
        s = self.wait("mltapd active", ok, timeout)
        self.wait("/metrics answers", lambda: "mltap_build_info" in self.metrics(), timeout)
        return s

    def journal(self, since_cursor=None):
        cmd = ["journalctl", "-u", "mltapd", "--no-pager", "-o", "cat"]
        if since_cursor:
            cmd += ["--after-cursor", since_cursor]
        return self.c.run(cmd).stdout

    def journal_findall(self, pattern, timeout=15):
        """re.findall over the unit's journal, waiting up to `timeout` s for a match: journald
        stores a unit's output asynchronously, and under load (CI compiling beside the tests) a
        line logged just before was not there yet when read at once."""
        deadline = time.monotonic() + timeout
        found = re.findall(pattern, self.journal())
        while not found and time.monotonic() < deadline:
            time.sleep(0.5)
            found = re.findall(pattern, self.journal())
        return found

    def cursor(self):
        r = self.c.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"])
        m = re.search(r"cursor: (\S+)", r.stdout)
        return m.group(1) if m else None

    def dropin(self, name, text):
        d = "/etc/systemd/system/mltapd.service.d"
        if text is None:
            self.c.run(["rm", "-f", f"{d}/{name}.conf"])
        else:
            self.c.run(["mkdir", "-p", d])
            self.c.run(["sh", "-c", f"cat > {d}/{name}.conf"], input=text)
        self.c.run(["systemctl", "daemon-reload"])

    def stream_records(self, stream):
        for labels, v in self.metrics().get("mltap_stream_records_total", []):
            if labels.get("stream") == stream:
                return v
        return 0.0

    def ebpf_probes(self):
        m = self.metrics()
        enabled = {l["probe"] for l, v in m.get("mltap_ebpf_probe_enabled", []) if v == 1}
        up = {l["probe"] for l, v in m.get("mltap_ebpf_probe_up", []) if v == 1}
        return enabled, up

    # -- steps
    def install(self):
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", f"/opt/mltap-test/{self.deb}"]
        r = self.c.run(cmd, check=False, timeout=600)
        if r.returncode != 0:  # lists older than the mirror: refresh once
            self.c.run(["apt-get", "update", "-q"], timeout=300)
            r = self.c.run(cmd, timeout=600)
        installed = re.findall(r"^Setting up (\S+)", r.stdout, re.M)
        check("mltap" in installed, r.stdout[-2000:])
        enabled = self.c.run(["systemctl", "is-enabled", "mltapd"], check=False).stdout.strip()
        active = self.c.run(["systemctl", "is-active", "mltapd"], check=False).stdout.strip()
        check(enabled == "disabled" and active == "inactive",
              f"installation must neither enable nor start mltapd: is-enabled {enabled}, is-active {active}")
        self.c.run(["getent", "passwd", "mltap"])
        self.c.run(["test", "-f", "/etc/mltap/mltapd.yaml"])
        return f"{len(installed)} packages set up (apt resolved mltap's Depends in a fresh root); unit disabled and inactive"

    def binaries(self):
        v = self.c.run(["mltapd", "--version"]).stdout.strip()
        check(v.startswith("mltapd "), v)
        h = self.c.run(["mltap", "--help"]).stdout
        check("status" in h and "explain" in h, h)
        p = self.c.run(["python3", "-c", "import mltap, sys; print(mltap.__version__, mltap.__file__)"]).stdout
        check("/usr/lib/python3/dist-packages/mltap/" in p, p)
        return f"{v}; python3: mltap {p.split()[0]}"

    def c_sdk(self):
        # Build tools come after the mltap checks above, so they cannot have supplied a
        # dependency that the package forgot; man-db lets `systemd-analyze verify` check the
        # unit's Documentation=man:mltapd(8).
        self.c.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "gcc", "libc6-dev",
                    "pkg-config", "man-db"], timeout=600)
        flags = self.c.run(["pkg-config", "--cflags", "--libs", "mltap"]).stdout.split()
        self.c.run(["gcc", "-Wall", "-Wextra", "-Werror", "-o", "/opt/mltap-test/sdk_check",
                    "/opt/mltap-test/sdk_check.c"] + flags)
        out = self.c.run(["/opt/mltap-test/sdk_check"]).stdout.strip()
        check(out == "sdk ok 100", out)
        ldd = self.c.run(["ldd", "/opt/mltap-test/sdk_check"]).stdout
        check(re.search(r"libmltap\.so\.1 => (/usr)?/lib/\S+/libmltap\.so\.1", ldd) is not None, ldd)
        return f"gcc {' '.join(flags)}: {out}, linked to the installed libmltap.so.1"

    def verify_unit(self):
        r = self.c.run(["systemd-analyze", "verify", "/lib/systemd/system/mltapd.service"], check=False)
        check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
              f"systemd-analyze verify: exit {r.returncode}: {r.stdout}{r.stderr}")
        return "clean"

    def enable_now(self):
        self.c.run(["sed", "-i", f"s/^  listen: 127.0.0.1:9645 /  listen: 127.0.0.1:{self.port} /",
                    "/etc/mltap/mltapd.yaml"])
        self.c.run(["grep", "-q", f"listen: 127.0.0.1:{self.port}", "/etc/mltap/mltapd.yaml"])
        if "watchdog_on_stalled_main_loop" in PENDING:
            self.dropin("zz-test-no-watchdog", "[Service]\nWatchdogSec=0\n")
        # The test's producers run as `alice`, a member of group mltap (docs/deploy.md).
        self.c.run(["adduser", "--quiet", "--disabled-password", "--gecos", "", "alice"])
        self.c.run(["adduser", "--quiet", "alice", "mltap"])
        t0 = time.time()
        self.c.run(["systemctl", "enable", "--now", "mltapd"], timeout=60)
        s = self.wait_active()
        self.t_start = time.time() - t0
        st = self.show("Type", "ActiveState", "SubState", "NotifyAccess", "Result")
        check(st["Type"] == "notify" and st["SubState"] == "running", st)
        status = self.c.run(["systemctl", "status", "--no-pager", "mltapd"], check=False).stdout
        check("active (running)" in status, status)
        self.main_pid = s["MainPID"]
        return (f"active (running) after READY=1 in {self.t_start:.2f} s (Type=notify: active only "
                f"once mltapd notified), /metrics on 127.0.0.1:{self.port}")

    def metrics_step(self):
        m = self.metrics()
        names = [n for n in m if n.startswith("mltap_")]
        want = {"mltap_build_info", "mltap_segments", "mltap_ebpf_probe_up", "mltap_ebpf_probe_enabled"}
        check(want <= set(names), f"missing {sorted(want - set(names))} in {names}")
        return f"{len(names)} mltap_ metric families before any producer"

    def capabilities(self):
        unit = self.c.run(["cat", "/lib/systemd/system/mltapd.service"]).stdout
        granted = set(re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split())
        ambient = set(re.search(r"^AmbientCapabilities=(.*)$", unit, re.M).group(1).split())
        status = self.c.run(["cat", f"/proc/{self.main_pid}/status"]).stdout
        f = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
        bnd, eff, prm, amb = (caps_of(f[k]) for k in ("CapBnd", "CapEff", "CapPrm", "CapAmb"))
        check(bnd == granted, f"CapBnd {sorted(bnd)} != unit's CapabilityBoundingSet {sorted(granted)}")
        check(eff <= ambient and eff == prm, f"CapEff {sorted(eff)}, CapPrm {sorted(prm)}")
        check(not amb, f"ambient set not cleared by mltapd: {sorted(amb)}")
        kept = self.journal_findall(r"capabilities dropped in \d+ threads; kept: (.*)")
        check(kept, "mltapd did not log which capabilities it kept")
        logged = set() if kept[-1].strip() == "none" else {k.strip() for k in kept[-1].split(",")}
        check(eff == logged, f"CapEff {sorted(eff)} != what mltapd says it kept {sorted(logged)}")
        uid = self.c.run(["id", "-u", "mltap"]).stdout.strip()
        check(f["Uid"].split()[0] == uid, f"runs as uid {f['Uid']}, mltap is {uid}")
        check(f.get("NoNewPrivs") == "1" and f.get("Seccomp") == "2", (f.get("NoNewPrivs"), f.get("Seccomp")))
        return (f"uid mltap, bounding set = the unit's {len(granted)} capabilities, effective after "
                f"start-up: {', '.join(sorted(eff)) or 'none'}; NoNewPrivs, seccomp filter on")

    def ebpf(self):
        enabled, up = self.ebpf_probes()
        default_bpf = {"exec", "fork", "exit", "signal", "oom_kill", "runqueue", "block_io",
                       "tcp_retransmit", "tcp_connect"}
        check(default_bpf <= enabled, f"enabled: {sorted(enabled)}")
        check(enabled <= up, f"enabled but down: {sorted(enabled - up)}")
        return f"up under the unit's sandbox: {', '.join(sorted(up))}"

    def producer(self):
        t0 = time.time()
        self.c.run(["systemd-run", "--unit=mltap-test-producer", "--uid=alice",
                    "-p", "SupplementaryGroups=mltap", "--setenv=MLTAP_SHM_GROUP=mltap",
                    "/usr/bin/python3", "/opt/mltap-test/producer.py", "systemd-test/features"])
        ring = self.wait("the producer's ring in /dev/shm", lambda: self.c.sh(
            "find /dev/shm -maxdepth 1 -type f -user alice -printf '%p %g %m\\n'").stdout.split(), 20)
        check(ring[1] == "mltap" and ring[2] == "660", f"ring {ring}: expected group mltap, mode 660")
        self.producer_ring = ring[0]
        n = self.wait("stream in /metrics", lambda: self.stream_records("systemd-test/features"), 20)
        n2 = self.wait("records increasing", lambda: self.stream_records("systemd-test/features") > n, 10)
        return (f"ring {ring[0]} (alice:mltap 0660) read by mltapd: mltap_stream_records_total "
                f"{n:.0f} -> more, {time.time() - t0:.1f} s after the producer started")

    def kill9(self):
        before = self.show("MainPID", "NRestarts")
        t0 = time.time()
        self.c.run(["kill", "-9", before["MainPID"]])
        s = self.wait_active(old_pid=before["MainPID"], timeout=30)
        dt = time.time() - t0
        after = self.show("NRestarts")
        check(int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after))
        self.wait("stream back in /metrics", lambda: self.stream_records("systemd-test/features"), 20)
        self.main_pid = s["MainPID"]
        return f"pid {before['MainPID']} -> {s['MainPID']}, serving again {dt:.1f} s after kill -9 (RestartSec=2s)"

    def ring_stat(self):
        r = self.c.run(["stat", "-c", "%i", self.producer_ring], check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def stop_keeps_rings(self):
        check(self.producer_ring, "no producer ring")
        inode = self.ring_stat()
        self.c.run(["systemctl", "stop", "mltapd"], timeout=60)
        check(self.c.run(["systemctl", "is-active", "mltapd"], check=False).stdout.strip() == "inactive", "still active")
        time.sleep(0.5)
        check(self.ring_stat() == inode, f"{self.producer_ring} is gone after `systemctl stop`")
        # The trap itself, so that this check can fail: RemoveIPC=yes deletes the same ring.
        self.dropin("zz-test-removeipc", "[Service]\nRemoveIPC=yes\n")
        self.c.run(["systemctl", "start", "mltapd"], timeout=60)
        self.wait_active()
        self.c.run(["systemctl", "stop", "mltapd"], timeout=60)
        gone = self.wait("RemoveIPC=yes deleting the ring", lambda: self.ring_stat() is None, 5)
        self.dropin("zz-test-removeipc", None)
        # A new producer (the old one writes into an unlinked file now) for the next steps.
        self.c.run(["systemctl", "stop", "mltap-test-producer"])
        self.c.run(["systemctl", "start", "mltapd"], timeout=60)
        self.main_pid = self.wait_active()["MainPID"]
        self.producer()
        return (f"ring (group mltap) kept by `systemctl stop`; the same stop with a drop-in "
                f"RemoveIPC=yes deleted it ({gone}): the trap the unit avoids")

    def trap_private_users(self):
        self.dropin("zz-test-trap", "[Service]\nPrivateUsers=yes\n")
        self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
        self.wait_active()
        enabled, up = self.ebpf_probes()
        self.dropin("zz-test-trap", None)
        check(not (up & {"exec", "fork", "exit"}), f"probes up with PrivateUsers=yes: {sorted(up)}")
        return f"PrivateUsers=yes: capabilities only inside a user namespace, BPF probes down ({len(enabled)} enabled, {len(up)} up)"

    def trap_syscall_filter(self):
        self.dropin("zz-test-trap", "[Service]\nSystemCallFilter=\nSystemCallFilter=@system-service\n")
        self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
        self.wait_active()
        enabled, up = self.ebpf_probes()
        self.dropin("zz-test-trap", None)
        check(not (up & {"exec", "fork", "exit"}), f"probes up with @system-service only: {sorted(up)}")
        return f"SystemCallFilter=@system-service alone: bpf() refused, probes down ({len(up)} up)"

    def transient_exit_status(self, name, props, cmd):
        """Runs cmd as a transient service of user mltap and returns its exit status (without
        `systemd-run --wait`, which needs D-Bus; the test root has none)."""
        args = ["systemd-run", f"--unit={name}", "--uid=mltap", "-p", "RemainAfterExit=yes"]
        for p in props:
            args += ["-p", p]
        self.c.run(args + cmd)

        def done():
            r = self.c.run(["systemctl", "show", name, "-p", "ExecMainCode,ExecMainStatus,ExecMainExitTimestampMonotonic"])
            d = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
            return d if d.get("ExecMainExitTimestampMonotonic", "0") != "0" else None
        d = self.wait(f"{name} to finish", done, 10, 0.1)
        self.c.run(["systemctl", "stop", name], check=False)
        self.c.run(["systemctl", "reset-failed", name], check=False)
        return int(d["ExecMainStatus"])

    def trap_protect_proc(self):
        pid = self.c.run(["systemctl", "show", "mltap-test-producer", "-p", "MainPID", "--value"]).stdout.strip()
        check(pid not in ("", "0"), "no producer running")
        probe = ["/usr/bin/test", "-e", f"/proc/{pid}/stat"]
        seen = self.transient_exit_status("mltap-test-proc-default", [], probe)
        hidden = self.transient_exit_status("mltap-test-proc-invisible", ["ProtectProc=invisible"], probe)
        check(seen == 0 and hidden != 0, f"visible without ProtectProc: {seen == 0}, hidden with it: {hidden != 0}")
        return ("ProtectProc=invisible hides a producer's /proc/<pid> from user mltap: mltapd would "
                "take the producer for dead and remove its rings")

    def restart_back(self):
        self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
        self.main_pid = self.wait_active()["MainPID"]
        enabled, up = self.ebpf_probes()
        check(enabled <= up, f"down after the trap drop-ins were removed: {sorted(enabled - up)}")

    def break_config(self):
        # An unknown key inside the existing `agent:` section. (Appending a second `agent:`
        # section is NOT refused today: the reader ignores duplicate keys; see the report.)
        self.c.run(["sed", "-i", "s/^agent:$/agent:\\n  no_such_key: 1/", "/etc/mltap/mltapd.yaml"])
        self.c.run(["grep", "-q", "^  no_such_key: 1", "/etc/mltap/mltapd.yaml"])

    def reload_bad_config_unit(self):
        before = self.show("MainPID", "NRestarts")
        self.c.run(["cp", "/etc/mltap/mltapd.yaml", "/opt/mltap-test/mltapd.yaml.good"])
        self.break_config()
        r = self.c.run(["systemctl", "reload", "mltapd"], check=False, timeout=60)
        self.c.run(["cp", "/opt/mltap-test/mltapd.yaml.good", "/etc/mltap/mltapd.yaml"])
        after = self.show("MainPID", "NRestarts", "ActiveState")
        check(r.returncode != 0, "systemctl reload accepted a configuration with an unknown key")
        check(after["MainPID"] == before["MainPID"] and after["ActiveState"] == "active"
              and after["NRestarts"] == before["NRestarts"], (before, after))
        where = self.journal_findall(r"mltapd\.yaml:\d+:\d+[^\n]*")
        check(where, "no file:line:column in the journal")
        return f"refused by ExecReload's --check-config ({where[-1][:90]}); same pid, still active"

    def ensure_running(self):
        """Each later step starts from a running mltapd, whatever the step before did to it."""
        if self.show("ActiveState")["ActiveState"] != "active":
            self.c.run(["systemctl", "reset-failed", "mltapd"], check=False)
            self.c.run(["systemctl", "start", "mltapd"], timeout=60)
        self.main_pid = self.wait_active()["MainPID"]

    def reload_good_config(self):
        self.ensure_running()
        before = self.show("MainPID", "NRestarts")
        n0 = self.stream_records("systemd-test/features")
        cur = self.cursor()
        self.c.run(["systemctl", "reload", "mltapd"], timeout=60)
        time.sleep(1)
        after = self.show("MainPID", "NRestarts", "ActiveState")
        check(after["ActiveState"] == "active" and after["MainPID"] == before["MainPID"]
              and after["NRestarts"] == before["NRestarts"], (before, after))
        n1 = self.stream_records("systemd-test/features")
        check(n1 >= n0 > 0, f"records counter {n0} -> {n1}: reset or stream lost by the reload")
        check(re.search(r"reload", self.journal(cur), re.I), "mltapd logged nothing about the reload")

    def reload_bad_config_in_mltapd(self):
        self.ensure_running()
        before = self.show("MainPID")
        cur = self.cursor()
        self.break_config()
        self.c.run(["kill", "-HUP", before["MainPID"]])  # past ExecReload's check: mltapd alone
        time.sleep(1)
        self.c.run(["cp", "/opt/mltap-test/mltapd.yaml.good", "/etc/mltap/mltapd.yaml"])
        after = self.show("MainPID", "ActiveState")
        check(after["ActiveState"] == "active" and after["MainPID"] == before["MainPID"], (before, after))
        check(re.search(r"mltapd\.yaml:\d+:\d+", self.journal(cur)), "no file:line:column logged")

    def restart_keeps_findings_and_reference(self):
        self.ensure_running()
        api = f"http://127.0.0.1:{self.port}/api/v1/findings"
        self.c.sh("cat > /etc/mltap/test-small-windows.yaml", input=(
            "agent:\n  listen: 127.0.0.1:%d\n  state_dir: /var/lib/mltap\ndetectors:\n  pin_records: 600\n  window_records: 300\n"
            "  min_window_records: 100\n  window_seconds: 0\n" % self.port))

        def open_findings():
            with urllib.request.urlopen(api, timeout=5) as r:
                doc = json.loads(r.read())
            return sorted((f["id"], f["kind"], f["opened_unix_ns"]) for f in doc["open"]
                          if f["stream"] == "systemd-test/nan")

        def reference_source():
            return [l["source"] for l, v in self.metrics().get("mltap_stream_reference_info", [])
                    if l.get("stream") == "systemd-test/nan" and v == 1]
        try:
            self.dropin("zz-test-config", "[Service]\nEnvironment=MLTAPD_CONFIG=/etc/mltap/test-small-windows.yaml\n")
            self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
            self.wait_active()
            # NaN in every other row of feature a once the reference is pinned: a data-quality finding.
            self.c.run(["systemd-run", "--unit=mltap-test-nan", "--uid=alice", "-p", "SupplementaryGroups=mltap",
                        "/usr/bin/python3", "-c",
                        "import mltap, array, time\n"
                        "s = mltap.Stream('systemd-test/nan', component='systemd-test', features=['a','b'])\n"
                        "i = 0\n"
                        "while True:\n"
                        "    v = float('nan') if i > 1500 and i % 2 else (i % 10) / 10.0\n"
                        "    s.write(array.array('f', [v, 1.0])); i += 1; time.sleep(0.001)\n"])
            before = self.wait("a finding on systemd-test/nan", open_findings, 60, 0.5)
            ref_before = reference_source()
            self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
            self.wait_active()
            time.sleep(1)
            ref_after = reference_source()
            after = open_findings()
            # Several windows (more than pin_records) of the NaN-laden data later: the restored
            # reference is still used (one pinned again from these records would take the NaNs
            # for normal and close the finding).
            time.sleep(4)
            later = open_findings()
        finally:
            self.c.run(["systemctl", "stop", "mltap-test-nan"], check=False)
            self.c.run(["rm", "-f", "/etc/mltap/test-small-windows.yaml"])
            self.dropin("zz-test-config", None)
        self.ensure_running()
        check(before == after, f"open findings (id, kind, onset) before the restart {before}, after {after}")
        check(later == before, f"open findings 4 s after the restart {later}, before it {before}")
        check(ref_after == ref_before, f"reference before the restart {ref_before}, after {ref_after}")
        return f"finding {before} and reference {ref_before} kept across `systemctl restart`"

    def watchdog_on_stalled_main_loop(self):
        self.ensure_running()
        try:
            self.dropin("zz-test-watchdog", "[Service]\nWatchdogSec=3s\n")
            self.c.run(["systemctl", "restart", "mltapd"], timeout=60)
            s = self.wait_active()
            time.sleep(7)  # more than two watchdog periods with a live main loop
            st = self.show("MainPID", "NRestarts", "ActiveState")
            check(st["MainPID"] == s["MainPID"], f"killed although its main loop runs: {st}")
            cur = self.cursor()
            t0 = time.time()
            self.c.run(["kill", "-STOP", s["MainPID"]])
            self.wait_active(old_pid=s["MainPID"], timeout=20)
            dt = time.time() - t0
            check("Watchdog timeout" in self.c.run(["journalctl", "-u", "mltapd", "--no-pager", "-o", "cat",
                                                    "--after-cursor", cur]).stdout,
                  "restarted, but not by the watchdog")
        finally:
            self.dropin("zz-test-watchdog", None)
        self.ensure_running()
        return f"stalled main loop (SIGSTOP) killed by the watchdog and restarted in {dt:.1f} s"

    def upgrade(self):
        """Reinstalling runs the upgrade path of the maintainer scripts (postinst configure with
        the old version): the administrator's config and enablement stay, a running mltapd is
        restarted with the new files."""
        self.ensure_running()
        before = self.show("MainPID")
        self.c.run(["apt-get", "install", "-y", "-q", "--reinstall", f"/opt/mltap-test/{self.deb}"], timeout=300)
        s = self.wait_active(old_pid=before["MainPID"], timeout=30)
        enabled = self.c.run(["systemctl", "is-enabled", "mltapd"], check=False).stdout.strip()
        check(enabled == "enabled", f"is-enabled after the upgrade: {enabled}")
        self.c.run(["grep", "-q", f"listen: 127.0.0.1:{self.port}", "/etc/mltap/mltapd.yaml"])
        self.main_pid = s["MainPID"]
        return (f"conffile edit and enablement kept; running mltapd restarted by postinst "
                f"(pid {before['MainPID']} -> {s['MainPID']})")

    def purge(self):
        self.c.run(["systemctl", "stop", "mltap-test-producer"], check=False)
        self.c.run(["test", "-d", "/var/lib/mltap"])
        self.c.run(["apt-get", "purge", "-y", "-q", "mltap"], timeout=300)
        left = self.c.sh("ls -d /var/lib/mltap /var/log/mltap /etc/mltap /lib/systemd/system/mltapd.service "
                         "/usr/sbin/mltapd 2>/dev/null", check=False).stdout.split()
        check(not left, f"left after purge: {left}")
        check(self.c.run(["systemctl", "is-active", "mltapd"], check=False).stdout.strip() != "active", "still running")
        return "state (/var/lib/mltap), logs, /etc/mltap and the unit removed; mltapd stopped"

    def run_all(self):
        s = self.step
        s("install", self.install)
        s("binaries", self.binaries)
        s("c_sdk_pkg_config", self.c_sdk)
        s("systemd_analyze_verify", self.verify_unit)
        s("enable_now", self.enable_now)
        s("metrics", self.metrics_step)
        s("capabilities", self.capabilities)
        s("ebpf_probes_up", self.ebpf)
        s("producer_stream_in_metrics", self.producer)
        s("kill9_restarts", self.kill9)
        s("stop_keeps_producer_rings", self.stop_keeps_rings)
        s("trap_private_users", self.trap_private_users)
        s("trap_system_service_lacks_bpf", self.trap_syscall_filter)
        s("trap_protect_proc", self.trap_protect_proc)
        s("restart_after_traps", self.restart_back)
        s("reload_bad_config_refused_by_unit", self.reload_bad_config_unit)
        s("reload_good_config", self.reload_good_config)
        s("reload_bad_config_in_mltapd", self.reload_bad_config_in_mltapd)
        s("restart_keeps_findings_and_reference", self.restart_keeps_findings_and_reference)
        s("watchdog_on_stalled_main_loop", self.watchdog_on_stalled_main_loop)
        s("upgrade_keeps_config_restarts_agent", self.upgrade)
        s("purge", self.purge)


def compare_host(before, after, mine):
    """Differences the test could have caused. Other people's work on the machine (their own
    mounts, files in /tmp) is reported, not failed on, unless it involves this run's paths."""
    problems, notes = [], []
    lost = [m for m in before["mounts"] if m not in after["mounts"]]
    added = [m for m in after["mounts"] if m not in before["mounts"]]
    for m in added:
        (problems if any(p in m[0] or p in m[2] for p in mine) or m[2].startswith("mltap-test")
         else notes).append(f"mount added: {m}")
    for m in lost:
        notes.append(f"mount gone (not by this test: it unmounts nothing on the host): {m}")
    for key in ("tmp", "var_tmp", "dev_shm"):
        gone = before[key] - after[key]
        new = after[key] - before[key]
        if gone:
            notes.append(f"{key}: {len(gone)} entries gone (others' files; the canary decides): {sorted(gone)[:5]}")
        for n in new:
            (problems if "mltap-systemd" in n else notes).append(f"{key}: new entry {n}")
    for d in set(after["cgroups"]) - set(before["cgroups"]):
        (problems if d.startswith(CGROUP_PREFIX) else notes).append(f"cgroup added: {d}")
    return problems, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", required=True, help="the .deb, or a directory holding exactly one mltap_*.deb")
    ap.add_argument("--results", required=True)
    ap.add_argument("--cache-dir", default=os.environ.get("MLTAP_TEST_CACHE", "/var/cache/mltap-test"))
    ap.add_argument("--work-dir", help="logs and the mount point (default: next to --results)")
    ap.add_argument("--hold", type=float, default=0,
                    help="keep the container this many seconds after the steps, for a look inside")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("harness.py: needs root (namespaces, mounts, debootstrap)", file=sys.stderr)
        return 2
    deb = os.path.abspath(args.deb)
    if os.path.isdir(deb):
        debs = sorted(f for f in os.listdir(deb) if f.startswith("mltap_") and f.endswith(".deb"))
        if len(debs) != 1:
            print(f"harness.py: expected one mltap_*.deb in {deb}, found {debs}", file=sys.stderr)
            return 2
        deb = os.path.join(deb, debs[0])
    work = os.path.abspath(args.work_dir or os.path.join(os.path.dirname(os.path.abspath(args.results)), "systemd-work"))
    shutil.rmtree(work, ignore_errors=True)
    inject = os.path.join(work, "inject")
    os.makedirs(inject)
    for f in ("producer.py", "sdk_check.c"):
        shutil.copy(os.path.join(HERE, f), inject)
    shutil.copy(deb, inject)
    overlay = os.path.join(inject, "overlay", "etc", "systemd", "system")
    os.makedirs(overlay)
    for u in MASKED_UNITS:
        os.symlink("/dev/null", os.path.join(overlay, u))
    with open(os.path.join(overlay, BOOT_UNIT), "w") as f:
        f.write(BOOT_TARGET)

    timings = {}
    t_all = time.time()
    results = {"steps": [], "timings": timings, "pending": PENDING, "host": {}}
    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)
    # One run at a time per cache (the ctest RESOURCE_LOCK covers one build tree; this covers
    # other worktrees): the root tar and apt's archive directory are shared.
    os.makedirs(args.cache_dir, exist_ok=True)
    lock = open(os.path.join(args.cache_dir, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting for another run using {args.cache_dir}")
        fcntl.flock(lock, fcntl.LOCK_EX)
    remove_leftovers()
    before = host_state()
    canaries = [f"/tmp/.mltap-systemd-canary.{os.getpid()}", f"/var/tmp/.mltap-systemd-canary.{os.getpid()}",
                f"/dev/shm/.mltap-systemd-canary.{os.getpid()}"]
    for p in canaries:
        with open(p, "w") as f:
            f.write("a systemd booted by tests/systemd must not delete this\n")
    container = None
    test = None
    failed = False
    try:
        tar = rootfs_tar(args.cache_dir, timings)
        t0 = time.time()
        container = Container(tar, args.cache_dir, inject, work)
        container.start()
        timings["boot"] = time.time() - t0
        log(f"systemd booted {BOOT_UNIT} in {timings['boot']:.1f} s (pid {container.pid} on the host)")
        test = Test(container, deb, free_port())
        t0 = time.time()
        test.run_all()
        timings["steps"] = time.time() - t0
        if args.hold:
            log(f"holding {args.hold:.0f} s: nsenter -t {container.pid} -m -p -u -i -C -- bash")
            time.sleep(args.hold)
    except (StepFailed, KeyboardInterrupt, Exception) as e:
        failed = True
        log(f"ABORTED: {e}")
        traceback.print_exc()
    finally:
        if container is not None and container.pid:
            try:
                j = container.run(["journalctl", "-b", "--no-pager"], check=False, timeout=30).stdout
                with open(os.path.join(work, "journal.txt"), "w") as f:
                    f.write(j)
            except Exception:
                pass
        t0 = time.time()
        if container is not None:
            container.stop()
        timings["teardown"] = time.time() - t0
        canary_problems = []
        for p in canaries:
            if not os.path.exists(p):
                canary_problems.append(f"canary {p} deleted: the booted systemd reached the host")
            else:
                os.unlink(p)
        after = host_state()
        problems, notes = compare_host(before, after, [work, args.cache_dir])
        problems += canary_problems
        if container is not None and container.pidns and processes_in_pidns(container.pidns):
            problems.append(f"processes left in the test's PID namespace: {processes_in_pidns(container.pidns)}")
        results["host"] = {"problems": problems, "notes": notes}
        for n in notes:
            log(f"host (not caused by this test): {n}")
        for p in problems:
            log(f"HOST NOT AS FOUND: {p}")
        if not problems:
            log("host as found: mounts, /tmp, /var/tmp, /dev/shm, cgroups, no process left")
        timings["total"] = time.time() - t_all
        if test is not None:
            results["steps"] = test.steps
        with open(args.results, "w") as f:
            json.dump(results, f, indent=2)
    steps = results["steps"]
    n = {k: sum(1 for s in steps if s["status"] == k) for k in ("pass", "fail", "skip")}
    log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    log(f"steps: {n['pass']} passed, {n['fail']} failed, {n['skip']} skipped (pending mltapd features)")
    bad = failed or n["fail"] or results["host"]["problems"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
