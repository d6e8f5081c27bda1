#!/bin/sh
# Training photos for the U-Net (deblurd.training): Debian's desktop-background packages.
#
#   tools/prepare_training_photos.sh [OUT_DIR]      (default /work/train-photos)
#
# Downloads mate-backgrounds and plasma-workspace-wallpapers with `apt-get download`
# (no install, no root needed beyond a readable apt cache: run `apt-get update` once),
# unpacks them with `dpkg -x` into a scratch folder, and copies into OUT_DIR the photos:
# MATE's nature/*.jpg and, per Plasma wallpaper, its largest landscape image.
# Never scikit-image's photos: those are the evaluation set (tools/evaluate.py).
set -eu
OUT=${1:-/work/train-photos}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
cd "$WORK"
apt-get download mate-backgrounds plasma-workspace-wallpapers
for deb in ./*.deb; do dpkg -x "$deb" x; done
cp x/usr/share/backgrounds/mate/nature/*.jpg "$OUT"/
for d in x/usr/share/wallpapers/*/contents/images; do
    name=$(basename "$(dirname "$(dirname "$d")")")
    # largest landscape file by pixel count encoded in its name (WxH.ext)
    best=$(ls "$d" | awk -F'[x.]' '$1 >= $2 {print $1*$2, $0}' | sort -n | tail -1 | cut -d' ' -f2)
    [ -n "$best" ] && cp "$d/$best" "$OUT/plasma-$name-$best"
done
echo "$(ls "$OUT" | wc -l) photos in $OUT"
