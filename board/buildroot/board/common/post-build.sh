#!/bin/sh
# Buildroot post-build script: the same root file system the offline image build assembles.
# $1: TARGET_DIR; $2: the board (qemu-x86_64, qemu-aarch64), from BR2_ROOTFS_POST_SCRIPT_ARGS.
set -eu
TARGET_DIR=$1
BOARD=$2
TOP=$(cd "$BR2_EXTERNAL_SEALGATE_PATH/../.." && pwd)

# Shared overlay (init scripts, inittab, box settings). BR2_ROOTFS_OVERLAY is not used so
# that this one script stays the only place that reads rootfs/.
cp -a "$TOP/rootfs/overlay/." "$TARGET_DIR/"
ln -sf /run/resolv.conf "$TARGET_DIR/etc/resolv.conf"
mkdir -p "$TARGET_DIR/data" "$TARGET_DIR/boot"
cat >"$TARGET_DIR/etc/os-release" <<OS
NAME=Sealgate
ID=sealgate
VERSION_ID=$(sed -n 's/^SEALGATE_VERSION = //p' "$BR2_EXTERNAL_SEALGATE_PATH/package/sealgate/sealgate.mk")
VARIANT_ID=$BOARD
OS

# Stage-1 initramfs inside the slot, as the offline build makes it. The kernel is built
# with the board's linux.fragment (drivers built in), so it loads no modules.
STAGE1=$(mktemp -d)
mkdir -p "$STAGE1/bin" "$STAGE1/dev" "$STAGE1/proc" "$STAGE1/sys" "$STAGE1/newroot"
cp "$TARGET_DIR/bin/busybox" "$STAGE1/bin/busybox"
cp "$TOP/rootfs/initramfs/init" "$STAGE1/init"
(cd "$STAGE1" && find . | LC_ALL=C sort | cpio --quiet -o -H newc --owner=0:0 --reproducible) |
	gzip -9 -n >"$TARGET_DIR/boot/initrd.img"
rm -rf "$STAGE1"

# The kernel goes into the slot too (GRUB reads it from the squashfs).
for k in bzImage Image; do
	if [ -f "$BINARIES_DIR/$k" ]; then
		cp "$BINARIES_DIR/$k" "$TARGET_DIR/boot/vmlinuz"
	fi
done
