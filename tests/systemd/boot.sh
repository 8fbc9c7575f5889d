#!/bin/sh
# Second stage of tests/systemd/harness.py: runs as PID 1 of a new PID namespace, in new mount,
# UTS, IPC and cgroup namespaces (unshare ... --propagation private), so that every mount below
# disappears with the namespace and none reaches the host. It unpacks the cached Debian root into
# a tmpfs, gives it private /dev, /dev/shm, /run, /tmp, a read-only /sys and /proc/sys, its own
# cgroup2 subtree, tracefs and the kernel's BTF, then pivots into it and execs systemd.
#
# Environment (set by harness.py): MLTAP_ROOTFS_TAR, MLTAP_MNT (an empty host directory to mount
# the tmpfs on), MLTAP_APT_ARCHIVES (host cache of downloaded .debs), MLTAP_INJECT (a directory
# copied to /opt/mltap-test: the .deb and the test's programs), MLTAP_BOOT_UNIT.
set -eu
R="$MLTAP_MNT/root"

mount -t tmpfs -o size=4g,mode=0755 mltap-test-root "$MLTAP_MNT"
mkdir "$R"
tar -xf "$MLTAP_ROOTFS_TAR" -C "$R" --numeric-owner
mount --bind "$R" "$R"   # pivot_root needs the new root to be a mount point
mkdir -p "$R/opt/mltap-test"
cp -a "$MLTAP_INJECT"/. "$R/opt/mltap-test/"
cp -a "$MLTAP_INJECT/overlay/." "$R/"   # masked units and the boot target
# Downloaded packages survive the run (warm runs install from here, offline).
mount --bind "$MLTAP_APT_ARCHIVES" "$R/var/cache/apt/archives"

# /proc of the new PID namespace; kernel tunables read-only: systemd as PID 1 would otherwise
# raise fs.nr_open and fs.file-max, which are not namespaced.
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger; do
  [ -e "$R/proc/$p" ] || continue
  mount --bind "$R/proc/$p" "$R/proc/$p"
  mount -o remount,bind,ro "$R/proc/$p"
done
# /sys read-only (systemd then skips udev, sysctl, binfmt); a cgroup2 mount that shows only this
# test's subtree (cgroup namespace); tracefs for tracefs-based probes; BTF is part of sysfs.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tracefs -o nosuid,nodev,noexec tracefs "$R/sys/kernel/tracing" 2>/dev/null || true

# A private /dev: pseudo devices bound from the host, a new devpts, and a private /dev/shm so that
# the producers and the mltapd inside meet there and nothing of the host's /dev/shm is touched.
mount -t tmpfs -o nosuid,mode=0755,size=16m mltap-test-dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"
  mount --bind "/dev/$d" "$R/dev/$d"
done
touch "$R/dev/console"
mount --bind /dev/null "$R/dev/console"
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,mode=1777 mltap-test-shm "$R/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"

# Private /run, /tmp, /var/tmp: systemd-tmpfiles empties /tmp at boot (tmp.conf: D /tmp).
mount -t tmpfs -o nosuid,nodev,mode=0755 mltap-test-run "$R/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 mltap-test-tmp "$R/tmp"
mount -t tmpfs -o nosuid,nodev,mode=1777 mltap-test-vartmp "$R/var/tmp"

hostname mltap-systemd-test

cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
export container=mltap-test
exec /lib/systemd/systemd --system --unit="$MLTAP_BOOT_UNIT" --show-status=no --log-target=journal
