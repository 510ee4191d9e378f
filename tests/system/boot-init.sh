#!/bin/bash
# PID 1 of the test machine until it execs systemd.  Started by machine.py through
#   unshare --pid --fork --mount --net --uts --ipc --cgroup --propagation private
# so every mount below exists only in this new mount namespace and disappears with it.
#
#   boot-init.sh SCRATCH CONSOLE_LOG FILES_DIR
#
# SCRATCH      an empty host directory; a tmpfs is mounted on it (in this namespace
#              only) to hold the overlay's upper layer: every write the machine makes
#              to its / lands there, never on the host.
# CONSOLE_LOG  a host file that becomes the machine's /dev/console (systemd's output).
# FILES_DIR    copied into the machine as /srv/systest (packages and helpers).
#
# The root is an overlayfs with the host's / as its read-only lower layer; /tmp, /run
# and /dev/shm are fresh tmpfs, /dev holds only harmless device nodes, /sys and the
# kernel's global knobs in /proc are read-only, and the capabilities that reach
# outside the namespaces (modules, clock, raw I/O) are dropped before systemd starts.
# systemd-tmpfiles and everything else in the machine therefore see and change only
# the machine's own files.
set -euo pipefail

scratch=$1
console_log=$2
files=$3
[ "$$" -eq 1 ] || { echo "boot-init: must run as PID 1 of a new pid namespace" >&2; exit 1; }
[ -d "$scratch" ] && [ -z "$(ls -A "$scratch")" ] || {
    echo "boot-init: $scratch must be an empty directory" >&2; exit 1; }

mount -t tmpfs -o mode=0700,size=4g lanchat-systest "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
root=$scratch/root

mount -t proc proc "$root/proc"
# Kernel-wide settings are not namespaced: the machine may read them, not change them.
for p in sys sysrq-trigger irq bus fs; do
    if [ -e "$root/proc/$p" ]; then
        mount --bind "$root/proc/$p" "$root/proc/$p"
        mount -o remount,bind,ro "$root/proc/$p"
    fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
# The cgroup namespace was created with the test's own cgroup as its root.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"

mount -t tmpfs -o mode=0755,nosuid,size=16m dev "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
touch "$root/dev/console"
mount --bind "$console_log" "$root/dev/console"
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

mount -t tmpfs -o mode=1777,nosuid,nodev,size=1g tmp "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev,size=256m run "$root/run"

# The machine's own configuration, written into the overlay only.
echo lanchat-systest > "$root/etc/hostname"
hostname lanchat-systest
# No host file systems to mount, no devices to wait for.
echo "# lanchat system test machine: nothing to mount" > "$root/etc/fstab"
# Boot only to basic.target plus what the test starts: nothing else the host has
# enabled (databases, timers, gettys) runs in the machine.
cat > "$root/etc/systemd/system/lanchat-systest.target" <<'EOF'
[Unit]
Description=lanchat system test
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
ln -sf /dev/null "$root/etc/systemd/system/systemd-sysctl.service"
# Timers (apt, man-db, dpkg backups...) could fire during the test and take the dpkg
# lock; none belongs to what is tested.
for timer in "$root"/lib/systemd/system/*.timer "$root"/etc/systemd/system/*.timer; do
    [ -e "$timer" ] && ln -sf /dev/null "$root/etc/systemd/system/$(basename "$timer")"
done
# Container images often forbid starting services from maintainer scripts; a real
# machine does not, and the package's own start on installation is under test.
rm -f "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/srv"
cp -a "$files" "$root/srv/systest"

cd "$root"
mkdir .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot

exec setpriv \
    --bounding-set -sys_module,-sys_time,-sys_rawio,-wake_alarm,-syslog,-mac_admin,-mac_override \
    env -i container=lanchat-systest PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /lib/systemd/systemd --unit=lanchat-systest.target
