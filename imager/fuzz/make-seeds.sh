#!/bin/bash
# Makes seeds/ntfs.img.zst: a 4 MiB NTFS volume (mkntfs, 512-byte clusters so that the small
# volume has many of them) filled through ntfs-3g like a Windows system partition: a Windows
# tree with State.ini, an answer file, a fragmented file, scratch files. Root (FUSE mount).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d); trap 'mountpoint -q "$w/m" && umount "$w/m"; rm -rf "$w"' EXIT
truncate -s 4M "$w/v"; mkntfs -F -Q -c 512 -L seed "$w/v" >/dev/null 2>&1
mkdir "$w/m"; ntfs-3g "$w/v" "$w/m"
mkdir -p "$w/m/Windows/System32" "$w/m/Windows/Setup/State" "$w/m/Windows/Panther"
printf '[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n' > "$w/m/Windows/Setup/State/State.ini"
for i in $(seq 1 30); do head -c $((i * 701)) /dev/zero | tr "\\0" x > "$w/m/Windows/System32/f$i.dll"; done
for i in $(seq 1 30 2); do rm "$w/m/Windows/System32/f$i.dll"; done
head -c 300000 /dev/zero | tr "\\0" y > "$w/m/Windows/System32/fragmented.bin"
head -c 400000 /dev/zero | tr "\\0" p > "$w/m/pagefile.sys"
(printf 'wake'; head -c 100000 /dev/zero | tr "\\0" h) > "$w/m/hiberfil.sys"
echo '<unattend xmlns="urn:schemas-microsoft-com:unattend"/>' > "$w/m/Windows/Panther/unattend.xml"
umount "$w/m"
zstd -19 -q -f "$w/v" -o "$here/seeds/ntfs.img.zst"
ls -l "$here/seeds/ntfs.img.zst"
