#!/usr/bin/env bash
# Download VQAv2 and OK-VQA questions + annotations (and the COCO images they use).
#
#   scripts/download_vqav2.sh [DEST] [PART ...]   # DEST default data/raw; PARTs: vqav2 okvqa coco2014 test2015
#                                                 # (default: vqav2 okvqa coco2014)
# Layout (each zip is extracted on its own):
#   DEST/vqav2/v2_OpenEnded_mscoco_{train2014,val2014,test2015,test-dev2015}_questions.json
#   DEST/vqav2/v2_mscoco_{train2014,val2014}_annotations.json
#   DEST/okvqa/OpenEnded_mscoco_{train2014,val2014}_questions.json, mscoco_{train2014,val2014}_annotations.json
#   DEST/coco/train2014/ val2014/     (part coco2014: runs scripts/download_coco.sh DEST 2014)
#   DEST/coco/test2015/               (part test2015: 12 GB, only for test-dev submissions)
#   DEST/{vqav2,okvqa}/zips/          the archives (delete them once extracted)
#
# Resumable like download_coco.sh (whose functions this script uses): partial downloads continue,
# finished archives are not fetched again, extracted ones are skipped.
# Checksums: visualqa.org and okvqa.allenai.org publish none; archives are CRC-tested with `unzip -tq`
# and their SHA-256 is recorded in DEST/{vqav2,okvqa}/SHA256SUMS on first download, verified later.
#
# Then, e.g.: python scripts/make_shards.py vqav2 --questions DEST/vqav2/v2_OpenEnded_mscoco_val2014_questions.json \
#                 --annotations DEST/vqav2/v2_mscoco_val2014_annotations.json --images DEST/coco/val2014 --out data/vqav2
#             python scripts/make_shards.py vqav2 --questions DEST/okvqa/OpenEnded_mscoco_val2014_questions.json \
#                 --annotations DEST/okvqa/mscoco_val2014_annotations.json --images DEST/coco/val2014 --out data/okvqa
# Override the hosts with VQA_BASE_URL / OKVQA_BASE_URL / COCO_BASE_URL if they move.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/download_coco.sh
source "$HERE/download_coco.sh"

VQA_BASE_URL="${VQA_BASE_URL:-https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa}"
OKVQA_BASE_URL="${OKVQA_BASE_URL:-https://okvqa.allenai.org/static/data}"

vqa_main() {
    local dest="${1:-data/raw}"
    shift $(( $# > 0 ? 1 : 0 ))
    local parts=("$@")
    [[ ${#parts[@]} -gt 0 ]] || parts=(vqav2 okvqa coco2014)
    for part in "${parts[@]}"; do
        case "$part" in
            vqav2)
                for name in Questions_Train Questions_Val Questions_Test Annotations_Train Annotations_Val; do
                    get_zip "$VQA_BASE_URL/v2_${name}_mscoco.zip" "$dest/vqav2" .
                done
                ;;
            okvqa)
                for name in OpenEnded_mscoco_train2014_questions OpenEnded_mscoco_val2014_questions \
                    mscoco_train2014_annotations mscoco_val2014_annotations; do
                    get_zip "$OKVQA_BASE_URL/$name.json.zip" "$dest/okvqa" .
                done
                ;;
            coco2014)
                "$HERE/download_coco.sh" "$dest" 2014
                ;;
            test2015)
                get_zip "$COCO_BASE_URL/zips/test2015.zip" "$dest/coco" .
                ;;
            *)
                echo "error: unknown part '$part' (vqav2, okvqa, coco2014, test2015)" >&2
                exit 2
                ;;
        esac
    done
    echo "done: $dest"
}

vqa_main "$@"
