#!/usr/bin/env bash
# Download MS-COCO images + caption annotations (2014 and 2017) and Karpathy's caption splits.
#
#   scripts/download_coco.sh [DEST] [PART ...]    # DEST default data/raw; PARTs: 2014 2017 karpathy (default all)
#
# Layout (each zip is extracted on its own, into its own folder):
#   DEST/coco/train2014/  val2014/            2014 images (13 GB + 6 GB; VQAv2, OK-VQA, Karpathy splits)
#   DEST/coco/train2017/  val2017/            2017 images (18 GB + 1 GB)
#   DEST/coco/annotations/                    captions_{train,val}{2014,2017}.json (+ instances, keypoints)
#   DEST/coco/karpathy/dataset_coco.json      Karpathy train/restval/val/test split (+ flickr8k/30k files)
#   DEST/coco/zips/                           the downloaded archives (delete them once extracted)
#
# Resumable: an interrupted download (zips/NAME.part) is continued with `curl -C -` / `wget -c`, a
# finished archive is not fetched again, and an archive whose .extracted-NAME stamp exists is skipped.
#
# Checksums: cocodataset.org and Karpathy's page publish none. Instead every archive is tested with
# `unzip -tq` (the CRC-32 of every member) before extraction, and its SHA-256 is recorded in
# DEST/coco/SHA256SUMS on first download; later runs that find the archive verify it against that record.
#
# Then: python scripts/make_shards.py coco --annotations DEST/coco/karpathy/dataset_coco.json \
#           --images DEST/coco --out data/coco --per-image
# Override the hosts with COCO_BASE_URL / KARPATHY_URL if they move.
set -euo pipefail

COCO_BASE_URL="${COCO_BASE_URL:-http://images.cocodataset.org}"
KARPATHY_URL="${KARPATHY_URL:-https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip}"

fetch() {  # fetch URL OUT: resumable download to OUT.part, renamed to OUT when complete
    local url=$1 out=$2
    if [[ -f "$out" ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$out")"
    echo "downloading $url"
    if command -v curl >/dev/null; then
        curl -fL --retry 5 -C - -o "$out.part" "$url"
    elif command -v wget >/dev/null; then
        wget -c --tries=5 -O "$out.part" "$url"
    else
        echo "error: neither curl nor wget is installed" >&2
        return 1
    fi
    mv "$out.part" "$out"
}

verify_zip() {  # verify_zip ZIP SUMS: CRC test, then record (first time) or check its SHA-256
    local zip=$1 sums=$2 name
    name=$(basename "$zip")
    unzip -tq "$zip" >/dev/null || { echo "error: $zip is corrupt; delete it and re-run" >&2; return 1; }
    if grep -q "  $name\$" "$sums" 2>/dev/null; then
        (cd "$(dirname "$zip")" && grep "  $name\$" "$sums" | sha256sum -c --quiet -) \
            || { echo "error: $zip does not match its recorded SHA-256 in $sums" >&2; return 1; }
    else
        (cd "$(dirname "$zip")" && sha256sum "$name") >>"$sums"
    fi
}

get_zip() {  # get_zip URL ROOT DIR: download ROOT/zips/NAME, verify, extract into ROOT/DIR
    local url=$1 root=$2 dir=$3 zip stamp
    zip="$root/zips/$(basename "$url")"
    stamp="$root/zips/.extracted-$(basename "$url")"
    if [[ -f "$stamp" ]]; then
        echo "$(basename "$url"): already extracted, skipped"
        return 0
    fi
    fetch "$url" "$zip"
    verify_zip "$zip" "$root/SHA256SUMS"
    mkdir -p "$root/$dir"
    echo "extracting $(basename "$zip") -> $root/$dir"
    unzip -q -o "$zip" -d "$root/$dir"
    touch "$stamp"
}

main() {
    local dest="${1:-data/raw}"
    shift $(( $# > 0 ? 1 : 0 ))
    local parts=("$@")
    [[ ${#parts[@]} -gt 0 ]] || parts=(2014 2017 karpathy)
    local root="$dest/coco"
    mkdir -p "$root"
    for part in "${parts[@]}"; do
        case "$part" in
            2014 | 2017)
                # The image zips contain a top folder (train2014/...), so they extract into ROOT.
                get_zip "$COCO_BASE_URL/zips/train$part.zip" "$root" .
                get_zip "$COCO_BASE_URL/zips/val$part.zip" "$root" .
                get_zip "$COCO_BASE_URL/annotations/annotations_trainval$part.zip" "$root" .
                ;;
            karpathy)
                get_zip "$KARPATHY_URL" "$root" karpathy
                ;;
            *)
                echo "error: unknown part '$part' (2014, 2017, karpathy)" >&2
                exit 2
                ;;
        esac
    done
    echo "done: $root"
}

# Run only when executed, so that download_vqav2.sh can source the functions above.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
