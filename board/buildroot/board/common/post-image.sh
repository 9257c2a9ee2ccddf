#!/bin/sh
# Buildroot post-image script: the box's GPT disk from the board's genimage.cfg, the same
# file `cargo xtask image` uses, with the same inputs (esp.vfat, root.img, data.ext4).
# $1: BINARIES_DIR; $2: the board.
set -eu
BINARIES_DIR=$1
BOARD=$2
TOP=$(cd "$BR2_EXTERNAL_SEALGATE_PATH/../.." && pwd)
BOARD_DIR=$TOP/board/$BOARD
case "$BOARD" in
qemu-x86_64) EFI=BOOTX64.EFI GRUB_EFI=bootx64.efi ;;
qemu-aarch64) EFI=BOOTAA64.EFI GRUB_EFI=bootaa64.efi ;;
*) echo "unknown board $BOARD" >&2; exit 1 ;;
esac

# genimage.cfg names the slot image root.img. NOT YET the signed chain of `cargo xtask
# image` (board/README.md, "Buildroot"): that appends the dm-verity hash tree here and makes
# and signs each slot's UKI with the root hash; this image has neither, so it does not boot
# the chainloading grub.cfg.
ln -sf rootfs.squashfs "$BINARIES_DIR/root.img"

# ESP: GRUB (BR2_TARGET_GRUB2's EFI image), the board's grub.cfg, a fresh grubenv.
ESP=$BINARIES_DIR/esp.vfat
rm -f "$ESP"
mkfs.vfat --invariant -F 16 -n ESP -i 5EA1E5B0 -C "$ESP" 65536 >/dev/null
# A GRUB environment block is exactly 1024 bytes, '#'-padded.
{
	printf '# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n'
	yes '#' | tr -d '\n' | head -c 1024
} | head -c 1024 >"$BINARIES_DIR/grubenv"
MTOOLS_SKIP_CHECK=1 mmd -i "$ESP" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -i "$ESP" "$BINARIES_DIR/efi-part/EFI/BOOT/$GRUB_EFI" "::/EFI/BOOT/$EFI"
MTOOLS_SKIP_CHECK=1 mcopy -i "$ESP" "$BOARD_DIR/grub.cfg" ::/EFI/BOOT/grub.cfg
MTOOLS_SKIP_CHECK=1 mcopy -i "$ESP" "$BINARIES_DIR/grubenv" ::/EFI/BOOT/grubenv

# The data partition: empty ext4, labelled data.
EMPTY=$(mktemp -d)
mke2fs -q -F -t ext4 -L data -d "$EMPTY" "$BINARIES_DIR/data.ext4" 256M
rmdir "$EMPTY"

GENIMAGE_TMP=$BUILD_DIR/genimage.tmp
rm -rf "$GENIMAGE_TMP"
genimage --rootpath "$TARGET_DIR" --tmppath "$GENIMAGE_TMP" --inputpath "$BINARIES_DIR" \
	--outputpath "$BINARIES_DIR" --config "$BOARD_DIR/genimage.cfg"
mv "$BINARIES_DIR/sealgate.img" "$BINARIES_DIR/sealgate-$BOARD.img"
